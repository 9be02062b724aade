using System.IO.Pipelines;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Perf;
using Potluck.Protocol.Ping;
using Potluck.Protocol.Pnet;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Host;

public class HostTests
{
    [Test]
    public void Connect_OverMemory_IdentifyExchangesProtocolsAgentAndAddresses() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
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
    });

    [Test]
    public void Ping_ReturnsRoundTrips_AndRecordsLatency() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        await a.Host.ConnectAsync(b.Address, ct);

        var rtts = await a.Ping.PingAsync(b.Host.PeerId, 3, ct);

        Assert.That(rtts, Has.Count.EqualTo(3));
        Assert.That(a.Host.Peers.Get(b.Host.PeerId)!.Latency, Is.Not.Null);
    });

    [Test]
    public void Perf_TransfersExactByteCountsBothWays() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        await a.Host.ConnectAsync(b.Address, ct);

        var result = await a.Perf.RunAsync(b.Host.PeerId, 3 << 20, 5 << 20, ct);

        Assert.That(result.UploadBytes, Is.EqualTo(3 << 20));
        Assert.That(result.DownloadBytes, Is.EqualTo(5 << 20));
    });

    [Test]
    public void Connect_ToOwnPeerIdOrOwnAddress_IsRefused() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
        var a = await hosts.StartAsync();

        var byId = await AsyncAssert.ThrowsAsync<DialException>(async () => await a.Host.ConnectAsync(a.Address, ct));
        var byAddress = await AsyncAssert.ThrowsAsync<DialException>(async () => await a.Host.ConnectAsync(a.Host.ListenAddresses[0], ct));
        var byPeer = await AsyncAssert.ThrowsAsync<DialException>(async () => await a.Host.ConnectAsync(a.Host.PeerId, ct));

        Assert.That(new[] { byId!.Failure, byAddress!.Failure, byPeer!.Failure }, Is.All.EqualTo(DialFailure.Self));
        Assert.That(a.Host.Connections, Is.Empty);
    });

    [Test]
    public void Connect_ToAddressThatTurnsOutToBeSelf_IsRefusedAfterHandshake() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
        var a = await hosts.StartAsync();
        // An address without /p2p that is not literally ours (the peer learns it from others) but reaches us.
        var alias = a.Host.ListenAddresses[0];
        hosts.Network.AddAlias(Multiaddr.Parse("/memory/999999"), alias);

        var e = await AsyncAssert.ThrowsAsync<DialException>(async () => await a.Host.ConnectAsync(Multiaddr.Parse("/memory/999999"), ct));

        Assert.That(e!.Failure, Is.EqualTo(DialFailure.Self));
        Assert.That(a.Host.Connections, Is.Empty);
    });

    [Test]
    public void ConcurrentDials_ToOnePeer_ShareOneConnection() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();

        var dials = Enumerable.Range(0, 8).Select(_ => a.Host.ConnectAsync(b.Address, ct).AsTask()).ToArray();
        var connections = await Task.WhenAll(dials);

        Assert.That(connections.Distinct().Count(), Is.EqualTo(1));
        Assert.That(a.Host.Connections, Has.Count.EqualTo(1));
    });

    [Test]
    public void Dial_WithWrongExpectedPeer_FailsAsWrongPeer() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        var c = await hosts.StartAsync();
        var lying = b.Host.ListenAddresses[0].WithPeer(c.Host.PeerId);

        var e = await AsyncAssert.ThrowsAsync<DialException>(async () => await a.Host.ConnectAsync(lying, ct));

        Assert.That(e!.Failure, Is.EqualTo(DialFailure.WrongPeer));
        Assert.That(a.Host.Connections, Is.Empty);
    });

    [Test]
    public void Dial_NobodyListening_FailsAsUnreachable() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
        var a = await hosts.StartAsync();

        var e = await AsyncAssert.ThrowsAsync<DialException>(async () => await a.Host.ConnectAsync(Multiaddr.Parse("/memory/424242"), ct));

        Assert.That(e!.Failure, Is.EqualTo(DialFailure.Unreachable));
    });

    [Test]
    public void InboundPastMaxConnections_IsRefused_ExistingOnesKeepWorking() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
        var server = await hosts.StartAsync(o => o with { MaxConnections = 1 });
        var first = await hosts.StartAsync();
        var second = await hosts.StartAsync();

        await first.Host.ConnectAsync(server.Address, ct);
        await server.Identify.WhenIdentifiedAsync(first.Host.PeerId, ct); // the server has registered it too
        var e = await AsyncAssert.ThrowsAsync<DialException>(async () => await second.Host.ConnectAsync(server.Address, ct));

        Assert.That(e!.Failure, Is.EqualTo(DialFailure.HandshakeFailed), "the server hangs up before any handshake");
        Assert.That(e.InnerException, Is.InstanceOf<PeerGoneException>());
        Assert.That(server.Host.Connections, Has.Count.EqualTo(1));
        Assert.That(await first.Ping.PingAsync(server.Host.PeerId, 1, ct), Has.Count.EqualTo(1));
    });

    [Test]
    public void StalledHandshake_IsClosedWhenTheHandshakeTimeoutPasses() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
        var server = await hosts.StartAsync(o => o with { HandshakeTimeout = TimeSpan.FromSeconds(10) });
        var raw = await hosts.Network.CreateTransport().DialAsync(server.Host.ListenAddresses[0], ct);

        // Say nothing. The server answers with its multistream header, which shows its handshake (and its timer) has
        // started; the connection then stays open until the timeout passes, and the server closes it at that instant.
        var first = await raw.Input.ReadAsync(ct);
        Assert.That(first.IsCompleted, Is.False);
        raw.Input.AdvanceTo(first.Buffer.End);
        var opened = hosts.Time.GetUtcNow();
        while (true)
        {
            var result = await raw.Input.ReadAsync(ct);
            raw.Input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                break;
            }
        }

        Assert.That(hosts.Time.GetUtcNow() - opened, Is.EqualTo(TimeSpan.FromSeconds(10)));
        Assert.That(server.Host.Connections, Is.Empty);
        await raw.DisposeAsync();
    });

    [Test]
    public void IdleConnection_IsClosedAfterIdleTimeout_UnlessProtected() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
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
        // Idle means no open stream: everything already set in motion (the identify streams' ends) finishes before
        // any time passes.
        await d.IdleAsync();
        Assert.That(toB.StreamCount + toC.StreamCount, Is.Zero, "the identify streams have closed");
        var idleSince = hosts.Time.Elapsed;

        var closed = new TaskCompletionSource<TimeSpan>();
        a.Host.Disconnected += conn =>
        {
            if (conn.RemotePeer == b.Host.PeerId)
            {
                closed.TrySetResult(hosts.Time.Elapsed);
            }
        };

        // The idle check ticks every 15 s (a quarter of the timeout) from the start: the first tick more than a minute
        // after the last stream closes is the one at 75 s.
        Assert.That(idleSince, Is.EqualTo(TimeSpan.Zero));
        Assert.That(await closed.Task, Is.EqualTo(TimeSpan.FromSeconds(75)));
        Assert.That(toB.IsClosed, Is.True);
        Assert.That(a.Host.Connections.Select(x => x.RemotePeer), Is.EquivalentTo(new[] { c.Host.PeerId }));
    });

    [Test]
    public void PrivateNetwork_SameKeyConnects_OtherKeyOrNoKeyIsRefusedWithoutCrashing() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
        // Keys from the seed (as the pnet nonces are): the noise each side reads, and so the outcome, replays exactly.
        var keys = new Random(5);
        SwarmKey NextKey()
        {
            var bytes = new byte[32];
            keys.NextBytes(bytes);
            return SwarmKey.FromBytes(bytes);
        }
        var key = NextKey();
        var a = await hosts.StartAsync(swarmKey: key);
        var b = await hosts.StartAsync(swarmKey: key);
        var stranger = await hosts.StartAsync(swarmKey: NextKey());
        var open = await hosts.StartAsync();

        await a.Host.ConnectAsync(b.Address, ct);
        // Both sides done with the pair's handshake and identify before virtual time jumps ahead.
        await a.Identify.WhenIdentifiedAsync(b.Host.PeerId, ct);
        await b.Identify.WhenIdentifiedAsync(a.Host.PeerId, ct);
        // With the wrong key each side reads noise; whichever notices first hangs up (the dial timeout would bound the
        // case where neither can tell).
        var dial1 = stranger.Host.ConnectAsync(a.Address, ct).AsTask();
        var dial2 = open.Host.ConnectAsync(a.Address, ct).AsTask();
        var e1 = await AsyncAssert.ThrowsAsync<DialException>(async () => await dial1);
        var e2 = await AsyncAssert.ThrowsAsync<DialException>(async () => await dial2);

        // Both read noise where the multistream header should be, and give up at once (no timeout needed).
        Assert.That(new[] { e1.Failure, e2.Failure }, Is.All.EqualTo(DialFailure.HandshakeFailed));
        Assert.That(new[] { e1.InnerException, e2.InnerException }, Is.All.InstanceOf<ProtocolViolationException>());
        Assert.That(hosts.Time.Elapsed, Is.EqualTo(TimeSpan.Zero));
        Assert.That(stranger.Host.Connections, Is.Empty);
        Assert.That(open.Host.Connections, Is.Empty);
        Assert.That(await a.Ping.PingAsync(b.Host.PeerId, 1, ct), Has.Count.EqualTo(1), "the private pair keeps working");
    });

    [Test]
    public void HandlerThatThrows_ResetsOnlyItsStream() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        b.Host.SetStreamHandler("/test/boom/1.0.0", (_, _) => throw new InvalidDataException("bug in handler"));
        await a.Host.ConnectAsync(b.Address, ct);

        // The reset may overtake the protocol confirmation (a reset discards unread data), so it can surface
        // while opening the stream or while reading from it: either way as an IOException, never a hang.
        await AsyncAssert.ThrowsAsync<IOException>(async () =>
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
    });

    [Test]
    public void NewStream_ForUnsupportedProtocol_ThrowsProtocolNotSupported() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        await a.Host.ConnectAsync(b.Address, ct);

        await AsyncAssert.ThrowsAsync<ProtocolNotSupportedException>(async () => await a.Host.NewStreamAsync(b.Host.PeerId, ["/nope/1.0.0"], ct));
    });

    [Test]
    public void TryNewStream_ForUnsupportedProtocol_ReturnsUnsupported_AndTheConnectionStillServes() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        await a.Host.ConnectAsync(b.Address, ct);

        var opening = await a.Host.TryNewStreamAsync(b.Host.PeerId, ["/nope/1.0.0", "/nope/2.0.0"], ct);

        Assert.That(opening.Stream, Is.Null);
        Assert.That(opening.Failure?.Kind, Is.EqualTo(FailureKind.Unsupported));
        Assert.That(opening.ToException(), Is.InstanceOf<ProtocolNotSupportedException>());
        Assert.That(await a.Ping.PingAsync(b.Host.PeerId, 1, ct), Has.Count.EqualTo(1), "the connection still serves streams");
        Assert.That(a.Host.Connections, Has.Count.EqualTo(1));
        var supported = await a.Host.TryNewStreamAsync(b.Host.PeerId, ["/nope/1.0.0", PingService.ProtocolId], ct);
        Assert.That(supported.Stream?.Protocol, Is.EqualTo(PingService.ProtocolId));
        Assert.That(supported.Failure, Is.Null);
        await supported.Stream!.DisposeAsync();
    });

    [Test]
    public void TryOpenStream_OnAClosedConnection_ReturnsPeerGone_AndOpenStreamThrowsIt() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        var connection = await a.Host.ConnectAsync(b.Address, ct);
        await connection.CloseAsync();

        var opening = await connection.TryOpenStreamAsync([PingService.ProtocolId], ct);

        Assert.That(opening.Stream, Is.Null);
        Assert.That(opening.Failure?.Kind, Is.EqualTo(FailureKind.PeerGone));
        await AsyncAssert.ThrowsAsync<PeerGoneException>(async () => await connection.OpenStreamAsync([PingService.ProtocolId], ct));
    });

    [Test]
    public void IdentifyPush_TellsConnectedPeersAboutNewProtocols() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
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
    });

    [TestCase(true, true)]
    [TestCase(true, false)]
    [TestCase(false, true)]
    [TestCase(false, false)]
    public void Connect_WithOrWithoutInlinedMuxerNegotiation_Works(bool dialerOffers, bool listenerOffers) => VirtualTimeDriver.Run(async d =>
    {
        await using var hosts = new TestHosts(d);
        var a = await hosts.StartAsync(configureStack: s => s with { Noise = s.Noise with { EarlyMuxers = dialerOffers ? s.Noise.EarlyMuxers : [] } });
        var b = await hosts.StartAsync(configureStack: s => s with { Noise = s.Noise with { EarlyMuxers = listenerOffers ? s.Noise.EarlyMuxers : [] } });

        await a.Host.ConnectAsync(b.Address, CancellationToken.None);

        Assert.That(await a.Ping.PingAsync(b.Host.PeerId, 1, CancellationToken.None), Has.Count.EqualTo(1));
    });
}
