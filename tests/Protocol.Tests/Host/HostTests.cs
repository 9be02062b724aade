using System.IO.Pipelines;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Perf;
using Potluck.Protocol.Ping;
using Potluck.Protocol.Pnet;

namespace Potluck.Protocol.Tests.Host;

[CancelAfter(60_000)]
public class HostTests
{
    [Test]
    public async Task Connect_OverMemory_IdentifyExchangesProtocolsAgentAndAddresses(CancellationToken ct)
    {
        await using var hosts = new TestHosts();
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();

        var connection = await a.Host.ConnectAsync(b.Address, ct);
        Assert.That(connection.RemotePeer, Is.EqualTo(b.Host.PeerId));

        var seenByA = await a.Identify.WhenIdentifiedAsync(b.Host.PeerId, ct);
        var seenByB = await b.Identify.WhenIdentifiedAsync(a.Host.PeerId, ct);
        Assert.That(seenByA.Protocols, Does.Contain(PingService.ProtocolId).And.Contain(PerfService.ProtocolId).And.Contain(IdentifyService.PushProtocolId));
        Assert.That(seenByA.AgentVersion, Does.StartWith("potluck/"));
        Assert.That(seenByA.ListenAddresses, Does.Contain(b.Host.ListenAddresses[0]));
        Assert.That(seenByB.ListenAddresses, Does.Contain(a.Host.ListenAddresses[0]));
        Assert.That(a.Host.Peers.SupportsProtocol(b.Host.PeerId, PingService.ProtocolId), Is.True);
        Assert.That(a.Host.Peers.GetPublicKey(b.Host.PeerId), Is.EqualTo(b.Host.PublicKey));
    }

    [Test]
    public async Task Ping_ReturnsRoundTrips_AndRecordsLatency(CancellationToken ct)
    {
        await using var hosts = new TestHosts();
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        await a.Host.ConnectAsync(b.Address, ct);

        var rtts = await a.Ping.PingAsync(b.Host.PeerId, 3, ct);

        Assert.That(rtts, Has.Count.EqualTo(3));
        Assert.That(a.Host.Peers.Get(b.Host.PeerId)!.Latency, Is.Not.Null);
    }

    [Test]
    public async Task Perf_TransfersExactByteCountsBothWays(CancellationToken ct)
    {
        await using var hosts = new TestHosts();
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        await a.Host.ConnectAsync(b.Address, ct);

        var result = await a.Perf.RunAsync(b.Host.PeerId, 3 << 20, 5 << 20, ct);

        Assert.That(result.UploadBytes, Is.EqualTo(3 << 20));
        Assert.That(result.DownloadBytes, Is.EqualTo(5 << 20));
    }

    [Test]
    public async Task Connect_ToOwnPeerIdOrOwnAddress_IsRefused(CancellationToken ct)
    {
        await using var hosts = new TestHosts();
        var a = await hosts.StartAsync();

        var byId = Assert.ThrowsAsync<DialException>(async () => await a.Host.ConnectAsync(a.Address, ct));
        var byAddress = Assert.ThrowsAsync<DialException>(async () => await a.Host.ConnectAsync(a.Host.ListenAddresses[0], ct));
        var byPeer = Assert.ThrowsAsync<DialException>(async () => await a.Host.ConnectAsync(a.Host.PeerId, ct));

        Assert.That(new[] { byId!.Failure, byAddress!.Failure, byPeer!.Failure }, Is.All.EqualTo(DialFailure.Self));
        Assert.That(a.Host.Connections, Is.Empty);
    }

    [Test]
    public async Task Connect_ToAddressThatTurnsOutToBeSelf_IsRefusedAfterHandshake(CancellationToken ct)
    {
        await using var hosts = new TestHosts();
        var a = await hosts.StartAsync();
        // An address without /p2p that is not literally ours (the peer learns it from others) but reaches us.
        var alias = a.Host.ListenAddresses[0];
        hosts.Network.AddAlias(Multiaddr.Parse("/memory/999999"), alias);

        var e = Assert.ThrowsAsync<DialException>(async () => await a.Host.ConnectAsync(Multiaddr.Parse("/memory/999999"), ct));

        Assert.That(e!.Failure, Is.EqualTo(DialFailure.Self));
        Assert.That(a.Host.Connections, Is.Empty);
    }

    [Test]
    public async Task ConcurrentDials_ToOnePeer_ShareOneConnection(CancellationToken ct)
    {
        await using var hosts = new TestHosts();
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();

        var dials = Enumerable.Range(0, 8).Select(_ => a.Host.ConnectAsync(b.Address, ct).AsTask()).ToArray();
        var connections = await Task.WhenAll(dials);

        Assert.That(connections.Distinct().Count(), Is.EqualTo(1));
        Assert.That(a.Host.Connections, Has.Count.EqualTo(1));
    }

    [Test]
    public async Task Dial_WithWrongExpectedPeer_FailsAsWrongPeer(CancellationToken ct)
    {
        await using var hosts = new TestHosts();
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        var c = await hosts.StartAsync();
        var lying = b.Host.ListenAddresses[0].WithPeer(c.Host.PeerId);

        var e = Assert.ThrowsAsync<DialException>(async () => await a.Host.ConnectAsync(lying, ct));

        Assert.That(e!.Failure, Is.EqualTo(DialFailure.WrongPeer).Or.EqualTo(DialFailure.HandshakeFailed));
        Assert.That(a.Host.Connections, Is.Empty);
    }

    [Test]
    public async Task Dial_NobodyListening_FailsAsUnreachable(CancellationToken ct)
    {
        await using var hosts = new TestHosts();
        var a = await hosts.StartAsync();

        var e = Assert.ThrowsAsync<DialException>(async () => await a.Host.ConnectAsync(Multiaddr.Parse("/memory/424242"), ct));

        Assert.That(e!.Failure, Is.EqualTo(DialFailure.Unreachable));
    }

    [Test]
    public async Task InboundPastMaxConnections_IsRefused_ExistingOnesKeepWorking(CancellationToken ct)
    {
        await using var hosts = new TestHosts();
        var server = await hosts.StartAsync(o => o with { MaxConnections = 1 });
        var first = await hosts.StartAsync();
        var second = await hosts.StartAsync();

        await first.Host.ConnectAsync(server.Address, ct);
        await server.Identify.WhenIdentifiedAsync(first.Host.PeerId, ct); // the server has registered it too
        var e = Assert.ThrowsAsync<DialException>(async () => await second.Host.ConnectAsync(server.Address, ct));

        Assert.That(e!.Failure, Is.EqualTo(DialFailure.HandshakeFailed).Or.EqualTo(DialFailure.Unreachable));
        Assert.That(server.Host.Connections, Has.Count.EqualTo(1));
        Assert.That(await first.Ping.PingAsync(server.Host.PeerId, 1, ct), Has.Count.EqualTo(1));
    }

    [Test]
    public async Task StalledHandshake_IsClosedWhenTheHandshakeTimeoutPasses(CancellationToken ct)
    {
        await using var hosts = new TestHosts();
        var server = await hosts.StartAsync(o => o with { HandshakeTimeout = TimeSpan.FromSeconds(10) });
        var raw = await hosts.Network.CreateTransport().DialAsync(server.Host.ListenAddresses[0], ct);

        // Say nothing. The server answers with its multistream header, which shows its handshake (and its
        // timer) has started; before the timeout the connection stays open, after it the server closes it.
        var first = await raw.Input.ReadAsync(ct);
        Assert.That(first.IsCompleted, Is.False);
        raw.Input.AdvanceTo(first.Buffer.End);
        hosts.Time.Advance(TimeSpan.FromSeconds(9));
        Assert.That(server.Host.Connections, Is.Empty);
        if (raw.Input.TryRead(out var early))
        {
            Assert.That(early.IsCompleted, Is.False, "closed before the handshake timeout");
            raw.Input.AdvanceTo(early.Buffer.End);
        }
        hosts.Time.Advance(TimeSpan.FromSeconds(2));
        while (true)
        {
            var result = await raw.Input.ReadAsync(ct);
            raw.Input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                break;
            }
        }
        await raw.DisposeAsync();
    }

    [Test]
    public async Task IdleConnection_IsClosedAfterIdleTimeout_UnlessProtected(CancellationToken ct)
    {
        await using var hosts = new TestHosts();
        var a = await hosts.StartAsync(o => o with { IdleTimeout = TimeSpan.FromMinutes(1) });
        var b = await hosts.StartAsync(o => o with { IdleTimeout = TimeSpan.Zero });
        var c = await hosts.StartAsync(o => o with { IdleTimeout = TimeSpan.Zero });
        var toB = await a.Host.ConnectAsync(b.Address, ct);
        var toC = await a.Host.ConnectAsync(c.Address, ct);
        await a.Identify.WhenIdentifiedAsync(b.Host.PeerId, ct);
        await a.Identify.WhenIdentifiedAsync(c.Host.PeerId, ct);
        await b.Identify.WhenIdentifiedAsync(a.Host.PeerId, ct);
        await c.Identify.WhenIdentifiedAsync(a.Host.PeerId, ct);
        a.Host.ConnectionManager.Protect(c.Host.PeerId, "test");
        // Idle means no open stream: let both ends' identify streams finish before the clock moves (on a loaded
        // machine they can outlast every tick below). A bounded wait on a condition, not on the clock.
        Assert.That(SpinWait.SpinUntil(() => toB.StreamCount == 0 && toC.StreamCount == 0, TimeSpan.FromSeconds(30)), Is.True,
            "the identify streams close");

        var closed = new TaskCompletionSource();
        a.Host.Disconnected += conn =>
        {
            if (conn.RemotePeer == b.Host.PeerId)
            {
                closed.TrySetResult();
            }
        };
        for (var i = 0; i < 12 && !closed.Task.IsCompleted; i++)
        {
            hosts.Time.Advance(TimeSpan.FromSeconds(15));
            await Task.Yield();
        }
        await closed.Task.WaitAsync(ct);

        Assert.That(toB.IsClosed, Is.True);
        Assert.That(a.Host.Connections.Select(x => x.RemotePeer), Is.EquivalentTo(new[] { c.Host.PeerId }));
    }

    [Test]
    public async Task PrivateNetwork_SameKeyConnects_OtherKeyOrNoKeyIsRefusedWithoutCrashing(CancellationToken ct)
    {
        await using var hosts = new TestHosts();
        var key = SwarmKey.Generate();
        var a = await hosts.StartAsync(swarmKey: key);
        var b = await hosts.StartAsync(swarmKey: key);
        var stranger = await hosts.StartAsync(swarmKey: SwarmKey.Generate());
        var open = await hosts.StartAsync();

        await a.Host.ConnectAsync(b.Address, ct);
        // Both sides done with the pair's handshake and identify before virtual time jumps ahead.
        await a.Identify.WhenIdentifiedAsync(b.Host.PeerId, ct);
        await b.Identify.WhenIdentifiedAsync(a.Host.PeerId, ct);
        // With the wrong key each side reads noise; whichever notices first hangs up, and the dial timeout
        // (its timer starts when the dial does) bounds the case where neither can tell.
        var dial1 = stranger.Host.ConnectAsync(a.Address, ct).AsTask();
        var dial2 = open.Host.ConnectAsync(a.Address, ct).AsTask();
        hosts.Time.Advance(TimeSpan.FromSeconds(16));
        var e1 = Assert.ThrowsAsync<DialException>(async () => await dial1);
        var e2 = Assert.ThrowsAsync<DialException>(async () => await dial2);

        Assert.That(e1!.Failure, Is.EqualTo(DialFailure.HandshakeFailed).Or.EqualTo(DialFailure.Timeout));
        Assert.That(e2!.Failure, Is.EqualTo(DialFailure.HandshakeFailed).Or.EqualTo(DialFailure.Timeout));
        Assert.That(stranger.Host.Connections, Is.Empty);
        Assert.That(open.Host.Connections, Is.Empty);
        Assert.That(await a.Ping.PingAsync(b.Host.PeerId, 1, ct), Has.Count.EqualTo(1), "the private pair keeps working");
    }

    [Test]
    public async Task HandlerThatThrows_ResetsOnlyItsStream(CancellationToken ct)
    {
        await using var hosts = new TestHosts();
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        b.Host.SetStreamHandler("/test/boom/1.0.0", (_, _) => throw new InvalidDataException("bug in handler"));
        await a.Host.ConnectAsync(b.Address, ct);

        // The reset may overtake the protocol confirmation (a reset discards unread data), so it can surface
        // while opening the stream or while reading from it: either way as an IOException, never a hang.
        Assert.ThrowsAsync(Is.InstanceOf<IOException>(), async () =>
        {
            await using var stream = await a.Host.NewStreamAsync(b.Host.PeerId, ["/test/boom/1.0.0"], ct);
            await stream.Output.WriteAsync(new byte[] { 1 }, ct);
            while (true)
            {
                var r = await stream.Input.ReadAsync(ct);
                stream.Input.AdvanceTo(r.Buffer.End);
                if (r.IsCompleted)
                {
                    throw new InvalidOperationException("ended without reset");
                }
            }
        });

        Assert.That(await a.Ping.PingAsync(b.Host.PeerId, 1, ct), Has.Count.EqualTo(1));
    }

    [Test]
    public async Task NewStream_ForUnsupportedProtocol_ThrowsProtocolNotSupported(CancellationToken ct)
    {
        await using var hosts = new TestHosts();
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        await a.Host.ConnectAsync(b.Address, ct);

        Assert.ThrowsAsync<ProtocolNotSupportedException>(async () => await a.Host.NewStreamAsync(b.Host.PeerId, ["/nope/1.0.0"], ct));
    }

    [Test]
    public async Task IdentifyPush_TellsConnectedPeersAboutNewProtocols(CancellationToken ct)
    {
        await using var hosts = new TestHosts();
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        await a.Host.ConnectAsync(b.Address, ct);
        await a.Identify.WhenIdentifiedAsync(b.Host.PeerId, ct);
        await b.Identify.WhenIdentifiedAsync(a.Host.PeerId, ct);

        var pushed = new TaskCompletionSource<IdentifyResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        a.Identify.Identified += r =>
        {
            if (r.Protocols.Contains("/test/new/1.0.0"))
            {
                pushed.TrySetResult(r);
            }
        };
        b.Host.SetStreamHandler("/test/new/1.0.0", (s, _) => Task.CompletedTask);

        var result = await pushed.Task.WaitAsync(ct);
        Assert.That(result.Peer, Is.EqualTo(b.Host.PeerId));
        Assert.That(a.Host.Peers.SupportsProtocol(b.Host.PeerId, "/test/new/1.0.0"), Is.True);
    }

    [TestCase(true, true)]
    [TestCase(true, false)]
    [TestCase(false, true)]
    [TestCase(false, false)]
    public async Task Connect_WithOrWithoutInlinedMuxerNegotiation_Works(bool dialerOffers, bool listenerOffers)
    {
        await using var hosts = new TestHosts();
        var a = await hosts.StartAsync(configureStack: s => s with { Noise = s.Noise with { EarlyMuxers = dialerOffers ? s.Noise.EarlyMuxers : [] } });
        var b = await hosts.StartAsync(configureStack: s => s with { Noise = s.Noise with { EarlyMuxers = listenerOffers ? s.Noise.EarlyMuxers : [] } });

        await a.Host.ConnectAsync(b.Address, CancellationToken.None);

        Assert.That(await a.Ping.PingAsync(b.Host.PeerId, 1, CancellationToken.None), Has.Count.EqualTo(1));
    }
}
