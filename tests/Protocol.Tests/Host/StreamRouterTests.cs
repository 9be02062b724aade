using Microsoft.Extensions.Logging;
using Potluck.Protocol.Host;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Host;

/// <summary>The one catch site of inbound stream handlers: what each kind of failure tears down, and how loudly it is logged.</summary>
public class StreamRouterTests
{
    private const string Protocol = "/test/failing/1.0.0";

    [Test]
    public void HandlerViolation_WithConnectionRadius_ClosesTheConnection_AtDebug() => VirtualTimeDriver.Run(async d =>
    {
        var loggers = new CapturingLoggers();
        await using var hosts = new TestHosts(d, loggers: loggers);
        var (a, b) = await ConnectedPairAsync(hosts);
        var closed = new TaskCompletionSource();
        a.Host.Disconnected += _ => closed.TrySetResult();
        b.Host.SetStreamHandler(Protocol, (_, _) =>
            throw new ProtocolViolationException("test", "bad framing", ViolationCode.Malformed, BlastRadius.Connection));

        // The router resets the stream, then closes the connection: the reset may reach the reader first (the write path sends it
        // with no thread hop between the muxer and Noise), so the read ends with either; the connection's end is what counts.
        await AsyncAssert.ThrowsAsync<PeerGoneException>(() => OpenWriteAndReadAsync(a));
        await closed.Task;

        Assert.That(a.Host.Connections, Is.Empty, "the whole connection closed, not just the stream");
        Assert.That(b.Host.Connections, Is.Empty);
        Assert.That(loggers.AtOrAbove(LogLevel.Warning), Is.Empty, "a remote's violation is never logged above Debug");
        Assert.That(loggers.Entries.Select(e => e.Message), Has.Some.Contains("Closing the connection: test violation (Malformed): test: bad framing"));
    });

    [Test]
    public void HandlerViolation_WithStreamRadius_ResetsOnlyTheStream_AtDebug() => VirtualTimeDriver.Run(async d =>
    {
        var loggers = new CapturingLoggers();
        await using var hosts = new TestHosts(d, loggers: loggers);
        var (a, b) = await ConnectedPairAsync(hosts);
        b.Host.SetStreamHandler(Protocol, (_, _) => throw new ProtocolViolationException("test", "bad message", ViolationCode.Malformed));

        await AsyncAssert.ThrowsAsync<StreamResetException>(() => OpenWriteAndReadAsync(a));

        Assert.That(a.Host.Connections, Has.Count.EqualTo(1));
        Assert.That(await a.Ping.PingAsync(b.Host.PeerId, 1, CancellationToken.None), Has.Count.EqualTo(1), "the connection keeps serving");
        Assert.That(loggers.AtOrAbove(LogLevel.Warning), Is.Empty);
        Assert.That(loggers.Entries.Where(e => e.Level == LogLevel.Debug).Select(e => e.Message),
            Has.Some.EqualTo($"Stream {Protocol} reset: ProtocolViolation: test: bad message"));
    });

    [Test]
    public void HandlerBug_IsLoggedAtError_AndResetsOnlyTheStream() => VirtualTimeDriver.Run(async d =>
    {
        var loggers = new CapturingLoggers();
        await using var hosts = new TestHosts(d, loggers: loggers);
        var (a, b) = await ConnectedPairAsync(hosts);
        var bug = new InvalidOperationException("a bug in the handler");
        b.Host.SetStreamHandler(Protocol, (_, _) => throw bug);

        await AsyncAssert.ThrowsAsync<StreamResetException>(() => OpenWriteAndReadAsync(a));

        var errors = loggers.AtOrAbove(LogLevel.Error).ToList();
        Assert.That(errors, Has.Count.EqualTo(1));
        Assert.That(errors[0].Message, Is.EqualTo($"Handler for {Protocol} failed"));
        Assert.That(errors[0].Exception, Is.SameAs(bug));
        // Written inside the connection's scopes: which connection, and which peer (b accepted a's dial).
        var connection = b.Host.Connections.Single();
        Assert.That(errors[0].Scopes, Is.EqualTo(new[] { $"connection {connection.Id}", $"peer {a.Host.PeerId}" }));
        Assert.That(await a.Ping.PingAsync(b.Host.PeerId, 1, CancellationToken.None), Has.Count.EqualTo(1), "the connection keeps serving");
    });

    [Test]
    public void HandlerCancelledByShutdown_IsQuiet() => VirtualTimeDriver.Run(async d =>
    {
        var loggers = new CapturingLoggers();
        var hosts = new TestHosts(d, loggers: loggers);
        var (a, b) = await ConnectedPairAsync(hosts);
        var entered = new TaskCompletionSource();
        b.Host.SetStreamHandler(Protocol, async (_, ct) =>
        {
            entered.TrySetResult();
            await Task.Delay(Timeout.InfiniteTimeSpan, ct);
        });
        await using var stream = await a.Host.NewStreamAsync(b.Host.PeerId, [Protocol], CancellationToken.None);
        await entered.Task;

        await hosts.DisposeAsync();

        Assert.That(loggers.Entries.Where(e => e.Message.Contains(Protocol, StringComparison.Ordinal)), Is.Empty);
        Assert.That(loggers.AtOrAbove(LogLevel.Warning), Is.Empty);
    });

    [Test]
    public void HandlerViolationLater_WithConnectionRadius_ClosesTheConnection_AtDebug() => VirtualTimeDriver.Run(async d =>
    {
        // The handler is parked when the router gets its task (a long-lived handler's path): its later failure is still
        // classified and torn down at the one catch site.
        var loggers = new CapturingLoggers();
        await using var hosts = new TestHosts(d, loggers: loggers);
        var (a, b) = await ConnectedPairAsync(hosts);
        var closed = new TaskCompletionSource();
        a.Host.Disconnected += _ => closed.TrySetResult();
        b.Host.SetStreamHandler(Protocol, async (s, _) =>
        {
            await s.Input.ReadAsync();
            throw new ProtocolViolationException("test", "bad framing later", ViolationCode.Malformed, BlastRadius.Connection);
        });

        await AsyncAssert.ThrowsAsync<PeerGoneException>(() => OpenWriteAndReadAsync(a));
        await closed.Task;

        Assert.That(b.Host.Connections, Is.Empty, "the whole connection closed");
        Assert.That(loggers.AtOrAbove(LogLevel.Warning), Is.Empty);
        Assert.That(loggers.Entries.Select(e => e.Message), Has.Some.Contains("Closing the connection: test violation (Malformed): test: bad framing later"));
    });

    [Test]
    public void HandlerBugLater_IsLoggedAtError_AndResetsOnlyTheStream() => VirtualTimeDriver.Run(async d =>
    {
        var loggers = new CapturingLoggers();
        await using var hosts = new TestHosts(d, loggers: loggers);
        var (a, b) = await ConnectedPairAsync(hosts);
        var bug = new InvalidOperationException("a bug in the handler, later");
        b.Host.SetStreamHandler(Protocol, async (s, _) =>
        {
            await s.Input.ReadAsync();
            throw bug;
        });

        await AsyncAssert.ThrowsAsync<StreamResetException>(() => OpenWriteAndReadAsync(a));

        var errors = loggers.AtOrAbove(LogLevel.Error).ToList();
        Assert.That(errors, Has.Count.EqualTo(1));
        Assert.That(errors[0].Message, Is.EqualTo($"Handler for {Protocol} failed"));
        Assert.That(errors[0].Exception, Is.SameAs(bug));
        var connection = b.Host.Connections.Single();
        Assert.That(errors[0].Scopes, Is.EqualTo(new[] { $"connection {connection.Id}", $"peer {a.Host.PeerId}" }),
            "written inside the connection's scopes, as a handler that failed at once");
        Assert.That(await a.Ping.PingAsync(b.Host.PeerId, 1, CancellationToken.None), Has.Count.EqualTo(1), "the connection keeps serving");
    });

    [Test]
    public void ParkedHandlers_AreCountedUntilTheyEnd_ThenTheirStreamsAndReservationsAreReleased() => VirtualTimeDriver.Run(async d =>
    {
        // A peer may hold at most 3 inbound streams: a peer that opens streams and never lets them end is capped, and the
        // places come back only once each handler has ended and what follows it (disposal, the reservation) has run.
        const int Cap = 3;
        await using var hosts = new TestHosts(d);
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync(o => o with { Resources = o.Resources with { MaxInboundStreamsPerPeer = Cap } });
        await a.Host.ConnectAsync(b.Address, CancellationToken.None);
        await a.Identify.WhenIdentifiedAsync(b.Host.PeerId, CancellationToken.None);
        await Task.Delay(TimeSpan.FromMinutes(1), d.Clock); // identify and the start-up pings are done: idle
        var release = new TaskCompletionSource();
        var entered = 0;
        b.Host.SetStreamHandler(Protocol, async (_, _) =>
        {
            entered++;
            await release.Task;
        });
        var before = b.Host.BackgroundPieces;
        var streams = new List<IStream>();
        for (var i = 0; i < Cap; i++)
        {
            streams.Add(await a.Host.NewStreamAsync(b.Host.PeerId, [Protocol], CancellationToken.None));
        }
        await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
        Assert.That(entered, Is.EqualTo(Cap));
        Assert.That(b.Host.BackgroundPieces - before, Is.EqualTo(Cap), "each parked handler still counts as one piece of the router's work");

        var refused = false;
        try
        {
            await using var over = await a.Host.NewStreamAsync(b.Host.PeerId, [Protocol], CancellationToken.None);
            await over.Input.ReadAsync();
        }
        catch (Exception e) when (e is StreamResetException or PeerGoneException)
        {
            refused = true;
        }
        Assert.That(refused, Is.True, "a stream over the cap is reset");
        Assert.That(entered, Is.EqualTo(Cap), "the peer is at its cap while the handlers are parked");

        release.SetResult();
        await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
        Assert.That(b.Host.BackgroundPieces, Is.EqualTo(before), "nothing left parked once the handlers ended");
        foreach (var s in streams)
        {
            await s.DisposeAsync();
        }

        release = new TaskCompletionSource();
        for (var i = 0; i < Cap; i++)
        {
            streams[i] = await a.Host.NewStreamAsync(b.Host.PeerId, [Protocol], CancellationToken.None);
        }
        await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
        Assert.That(entered, Is.EqualTo(2 * Cap), "the reservations came back: the peer gets its places again");
        release.SetResult();
        foreach (var s in streams)
        {
            await s.DisposeAsync();
        }
    });

    [Test]
    public void NegotiatedStreams_KeepTheProtocolStringsTheirSidesGave_NotCopiesReadOffTheWire() => VirtualTimeDriver.Run(async d =>
    {
        // Equal to the constant but distinct objects, so that what each side keeps can be told apart from a copy.
        var registered = new string(Protocol.AsSpan());
        var proposed = new string(Protocol.AsSpan());
        await using var hosts = new TestHosts(d);
        var (a, b) = await ConnectedPairAsync(hosts);
        var accepted = new TaskCompletionSource<IStream>();
        var release = new TaskCompletionSource();
        b.Host.SetStreamHandler(registered, (s, _) =>
        {
            accepted.TrySetResult(s);
            return release.Task;
        });

        await using var opened = await a.Host.NewStreamAsync(b.Host.PeerId, ["/test/absent/1.0.0", proposed], CancellationToken.None);
        var inbound = await accepted.Task;

        // On main each side kept the string read off the wire: one copy per stream, per connection's protocol table and
        // per stream reservation, for their lives (~170 B per connection end at 200 nodes).
        Assert.That(opened.Protocol, Is.SameAs(proposed), "the dialer keeps the string it proposed");
        Assert.That(inbound.Protocol, Is.SameAs(registered), "the listener keeps the string its handler was registered with");
        var dialerTable = ((Connection)a.Host.Connections.Single()).ProtocolsCarried;
        var listenerTable = ((Connection)b.Host.Connections.Single()).ProtocolsCarried;
        Assert.That(dialerTable.Single(p => p == Protocol), Is.SameAs(proposed));
        Assert.That(listenerTable.Single(p => p == Protocol), Is.SameAs(registered));
        release.TrySetResult();
    });

    [Test]
    public void AConnectionsProtocolTable_CountsOpenStreamsPerProtocol_PastItsFirstFourPlaces() => VirtualTimeDriver.Run(async d =>
    {
        await using var hosts = new TestHosts(d);
        var (a, b) = await ConnectedPairAsync(hosts);
        var release = new TaskCompletionSource();
        var protocols = Enumerable.Range(1, 6).Select(i => $"/test/table/{i}").ToArray();
        foreach (var protocol in protocols)
        {
            b.Host.SetStreamHandler(protocol, (_, _) => release.Task);
        }
        var connection = (Connection)a.Host.Connections.Single();
        var streams = new List<IStream>();
        foreach (var protocol in protocols.Concat(protocols.Take(2)))
        {
            streams.Add(await a.Host.NewStreamAsync(b.Host.PeerId, [protocol], CancellationToken.None));
        }
        bool IsTable(string p) => p.StartsWith("/test/table/", StringComparison.Ordinal);

        Assert.That(connection.ProtocolsCarried.Where(IsTable), Is.EqualTo(protocols), "one place per protocol, in the order first used");
        Assert.That(connection.ProtocolsCarried, Has.Length.GreaterThan(6), "identify's too: past the table's first four places");
        Assert.That(connection.OpenStreams(IsTable), Is.EqualTo(8));
        Assert.That(connection.OpenStreams(p => p == protocols[0]), Is.EqualTo(2));
        var opened = d.Clock.GetUtcNow();
        await Task.Delay(TimeSpan.FromSeconds(3), d.Clock);
        var ended = d.Clock.GetUtcNow();
        await streams[5].DisposeAsync();
        await streams[6].DisposeAsync();

        Assert.That(connection.OpenStreams(IsTable), Is.EqualTo(6));
        Assert.That(connection.OpenStreams(p => p == protocols[0]), Is.EqualTo(1));
        Assert.That(connection.OpenStreams(p => p == protocols[5]), Is.Zero, "ended, and kept with none open");
        Assert.That(connection.Carried(p => p == protocols[5]), Is.True);
        Assert.That(connection.Carried(p => p == "/test/never"), Is.False);
        Assert.That(connection.LastUsed(p => p == protocols[5]), Is.EqualTo(ended));
        Assert.That(ended, Is.GreaterThan(opened));
        Assert.That(connection.LastUsed(p => p == protocols[3]), Is.LessThanOrEqualTo(opened).And.GreaterThanOrEqualTo(connection.Opened));
        Assert.That(connection.LastUsed(p => p == "/test/never"), Is.EqualTo(connection.Opened));
        release.TrySetResult();
        foreach (var stream in streams)
        {
            await stream.DisposeAsync();
        }
    });

    private static async Task<(TestHosts.TestNode A, TestHosts.TestNode B)> ConnectedPairAsync(TestHosts hosts)
    {
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        await a.Host.ConnectAsync(b.Address, CancellationToken.None);
        await a.Identify.WhenIdentifiedAsync(b.Host.PeerId, CancellationToken.None);
        await b.Identify.WhenIdentifiedAsync(a.Host.PeerId, CancellationToken.None);
        return (a, b);
    }

    private static async Task OpenWriteAndReadAsync(TestHosts.TestNode from)
    {
        var peer = from.Host.Connections.Single().RemotePeer;
        await using var stream = await from.Host.NewStreamAsync(peer, [Protocol], CancellationToken.None);
        await stream.Output.WriteAsync(new byte[] { 1 });
        while (true)
        {
            var result = await stream.Input.ReadAsync();
            stream.Input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                Assert.Fail("the stream ended cleanly instead of failing");
            }
        }
    }
}
