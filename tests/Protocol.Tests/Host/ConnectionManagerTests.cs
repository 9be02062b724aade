using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Metrics;
using Potluck.Protocol.Ping;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Host;

/// <summary>Protection, tags and trimming (go-libp2p's connmgr semantics).</summary>
public class ConnectionManagerTests
{
    private static readonly PeerId Peer = PrivateKey.FromRandom(new Random(1)).PeerId;

    private static ConnectionManager Create(HostOptions? options = null) =>
        new(options ?? new HostOptions(), NodeRuntime.WithTime(new VirtualClock()), NullLogger.Instance);

    [Test]
    public void Protect_PerTag_UnprotectSaysWhetherAnotherTagStillProtects()
    {
        var manager = Create();

        manager.Protect(Peer, "gossipsub");
        manager.Protect(Peer, "lease");

        Assert.That(manager.IsProtected(Peer), Is.True);
        Assert.That(manager.IsProtected(Peer, "lease"), Is.True);
        Assert.That(manager.IsProtected(Peer, "other"), Is.False);
        Assert.That(manager.Unprotect(Peer, "lease"), Is.True, "gossipsub still protects it");
        Assert.That(manager.Unprotect(Peer, "unknown"), Is.True, "removing a tag it never had changes nothing");
        Assert.That(manager.Unprotect(Peer, "gossipsub"), Is.False);
        Assert.That(manager.IsProtected(Peer), Is.False);
        Assert.That(manager.GetTagInfo(Peer), Is.Null, "nothing is kept about a peer with no tags and no protection");
    }

    [Test]
    public void Protect_TheSameTagTwice_OneUnprotectEndsIt_AndTheTagsReadSorted()
    {
        var manager = Create();
        manager.Protect(Peer, "lease");
        manager.Protect(Peer, "gossipsub");
        manager.Protect(Peer, "lease");
        Assert.That(manager.GetTagInfo(Peer)!.ProtectedBy, Is.EqualTo(new[] { "gossipsub", "lease" }));
        Assert.That(manager.Unprotect(Peer, "gossipsub"), Is.True);
        Assert.That(manager.Unprotect(Peer, "lease"), Is.False, "a tag given twice is one tag");
        Assert.That(manager.IsProtected(Peer), Is.False);
    }

    /// <summary>A protected peer's tags are an array of their references (~32 bytes for one), not a set (~180).</summary>
    [Test]
    public void ProtectedPeers_EachHoldAnArrayOfTags_NotASet()
    {
        var manager = Create();
        var random = new Random(3);
        var peers = Enumerable.Range(0, 10_000).Select(_ => PrivateKey.FromRandom(random).PeerId).ToArray();
        var before = GC.GetTotalMemory(forceFullCollection: true);
        foreach (var peer in peers)
        {
            manager.Protect(peer, "gossipsub");
        }
        var after = GC.GetTotalMemory(forceFullCollection: true);
        var perPeer = (after - before) / (double)peers.Length;
        GC.KeepAlive(manager);
        TestContext.Out.WriteLine($"{perPeer:F1} bytes per protected peer");
        Assert.That(perPeer, Is.LessThan(120), $"{perPeer:F1} bytes per protected peer (the dictionary's entry included)");
    }

    [Test]
    public void Tags_SumToThePeersValue_UpsertIsAtomicOnTheCurrentValue()
    {
        var manager = Create();

        manager.TagPeer(Peer, "mesh", 10);
        manager.UpsertTag(Peer, "leases", v => v + 3);
        manager.UpsertTag(Peer, "leases", v => v + 3);
        manager.Protect(Peer, "gossipsub");

        var info = manager.GetTagInfo(Peer)!;
        Assert.That(info.Value, Is.EqualTo(16));
        Assert.That(info.Tags, Is.EquivalentTo(new Dictionary<string, int> { ["mesh"] = 10, ["leases"] = 6 }));
        Assert.That(info.ProtectedBy, Is.EqualTo(new[] { "gossipsub" }));

        manager.UntagPeer(Peer, "mesh");
        Assert.That(manager.GetTagInfo(Peer)!.Value, Is.EqualTo(6));
    }

    [Test]
    public void PastTheHighWatermark_TheLeastValuableUnprotectedConnectionsAreClosed() => VirtualTimeDriver.Run(async d =>
    {
        await using var hosts = new TestHosts(d);
        var hub = await hosts.StartAsync(o => o with { HighWater = 3, LowWater = 2, TrimGracePeriod = TimeSpan.Zero });
        var favourite = await hosts.StartAsync();
        var valued = await hosts.StartAsync();
        var plain = await hosts.StartAsync();
        var latecomer = await hosts.StartAsync();
        var manager = hub.Host.ConnectionManager;
        manager.Protect(favourite.Host.PeerId, "test");
        manager.TagPeer(valued.Host.PeerId, "test", 10);
        manager.TagPeer(latecomer.Host.PeerId, "test", 5);
        var closed = new List<PeerId>();
        hub.Host.Disconnected += c => closed.Add(c.RemotePeer);

        await hub.Host.ConnectAsync(favourite.Address, CancellationToken.None);
        await hub.Host.ConnectAsync(valued.Address, CancellationToken.None);
        await hub.Host.ConnectAsync(plain.Address, CancellationToken.None);
        Assert.That(manager.ConnectionCount, Is.EqualTo(3), "at the high watermark, nothing is trimmed");
        await hub.Host.ConnectAsync(latecomer.Address, CancellationToken.None);
        await d.IdleAsync();

        // Four connections, two over the low watermark: the protected peer stays whatever its value, and of the rest
        // the two lowest tag values (plain: 0, latecomer: 5) go.
        Assert.That(closed, Is.EquivalentTo(new[] { plain.Host.PeerId, latecomer.Host.PeerId }));
        Assert.That(hub.Host.Connections.Select(c => c.RemotePeer), Is.EquivalentTo(new[] { favourite.Host.PeerId, valued.Host.PeerId }));
        // potluck.connections.closed{reason}: the hub counts two trims, the trimmed peers see the remote hang up.
        var trimmed = Array.IndexOf(ProtocolInstruments.CloseReasons.ToArray(), "trimmed");
        var remote = Array.IndexOf(ProtocolInstruments.CloseReasons.ToArray(), "remote");
        Assert.That(hub.Host.Instruments.ClosedTotals()[trimmed], Is.EqualTo(2));
        Assert.That(hub.Host.Instruments.ClosedTotals().Sum(), Is.EqualTo(2));
        Assert.That(plain.Host.Instruments.ClosedTotals()[remote], Is.EqualTo(1));
        Assert.That(hub.Host.Instruments.DialTotals()[DialReason.IndexOf(DialReason.Other)], Is.EqualTo(4), "four dials with no reason given");
    });

    [Test]
    public void Trimming_SparesConnectionsYoungerThanTheGracePeriod() => VirtualTimeDriver.Run(async d =>
    {
        await using var hosts = new TestHosts(d);
        var hub = await hosts.StartAsync(o => o with { HighWater = 1, LowWater = 1, TrimGracePeriod = TimeSpan.FromSeconds(20) });
        var first = await hosts.StartAsync();
        var second = await hosts.StartAsync();

        await hub.Host.ConnectAsync(first.Address, CancellationToken.None);
        await hub.Host.ConnectAsync(second.Address, CancellationToken.None);
        await d.IdleAsync();
        Assert.That(hub.Host.Connections, Has.Count.EqualTo(2), "both are in their grace period");

        Assert.That(await hub.Host.ConnectionManager.TrimOpenConnectionsAsync(CancellationToken.None), Is.Zero);
        await Task.Delay(TimeSpan.FromSeconds(20), d.Clock);
        Assert.That(await hub.Host.ConnectionManager.TrimOpenConnectionsAsync(CancellationToken.None), Is.EqualTo(1));
        await d.IdleAsync();
        Assert.That(hub.Host.Connections, Has.Count.EqualTo(1));
    });

    /// <summary>
    /// The trim tick runs every <see cref="HostOptions.TrimInterval"/> (go connmgr's silence period, 10 s), not every quarter
    /// of the idle timeout (30 s): a node pushed over its high watermark by young connections is back at its low watermark
    /// within the interval once their grace runs out. Opened at 15 s, their grace ends at 35 s; the tick at 40 s trims (the idle tick's are at 30 and 60 s).
    /// </summary>
    [Test]
    public void OverTheHighWatermark_WhenTheGraceRunsOut_BackAtTheLowWatermarkWithinTheSilencePeriod() => VirtualTimeDriver.Run(async d =>
    {
        await using var hosts = new TestHosts(d);
        var started = d.Clock.GetUtcNow();
        var hub = await hosts.StartAsync(o => o with
        {
            MaxConnections = 16, HighWater = 3, LowWater = 2, TrimGracePeriod = TimeSpan.FromSeconds(20),
            TrimInterval = TimeSpan.FromSeconds(10), IdleTimeout = TimeSpan.FromMinutes(2),
        });
        var peers = new[] { await hosts.StartAsync(), await hosts.StartAsync(), await hosts.StartAsync(), await hosts.StartAsync() };
        await Task.Delay(TimeSpan.FromSeconds(15), d.Clock);
        foreach (var peer in peers)
        {
            await hub.Host.ConnectAsync(peer.Address, CancellationToken.None);
        }
        await d.IdleAsync();
        var opened = d.Clock.GetUtcNow();
        Assert.That(hub.Host.Connections, Has.Count.EqualTo(4), "over the high watermark, but every connection is young");

        await Task.Delay(opened + TimeSpan.FromSeconds(19) - d.Clock.GetUtcNow(), d.Clock);
        await d.IdleAsync();
        Assert.That(hub.Host.Connections, Has.Count.EqualTo(4), "still in their grace period");

        await Task.Delay(opened + TimeSpan.FromSeconds(20) + TimeSpan.FromSeconds(10) - d.Clock.GetUtcNow(), d.Clock);
        await d.IdleAsync();
        Assert.That(d.Clock.GetUtcNow() - started, Is.LessThan(TimeSpan.FromSeconds(60)));
        Assert.That(hub.Host.Connections, Has.Count.EqualTo(2), "trimmed to the low watermark within the interval");
    });

    /// <summary>
    /// A connection that takes the count over the high watermark trims at once, every time, not once per interval (go's
    /// connmgr once rate-limited these; a join's finished young connections go one opening at a time, see
    /// <see cref="HostOptions.TrimInterval"/>): two openings over it a second apart each trim, without waiting for the tick.
    /// </summary>
    [Test]
    public void EveryOpeningOverTheHighWatermark_TrimsAtOnce_NotOncePerInterval() => VirtualTimeDriver.Run(async d =>
    {
        await using var hosts = new TestHosts(d);
        var hub = await hosts.StartAsync(o => o with
        {
            MaxConnections = 16, HighWater = 1, LowWater = 1, TrimGracePeriod = TimeSpan.Zero, TrimInterval = TimeSpan.FromSeconds(10),
        });
        var peers = new List<TestHosts.TestNode>();
        for (var i = 0; i < 3; i++)
        {
            peers.Add(await hosts.StartAsync());
        }
        var trimmed = Array.IndexOf(ProtocolInstruments.CloseReasons.ToArray(), "trimmed");

        await hub.Host.ConnectAsync(peers[0].Address, CancellationToken.None);
        await hub.Host.ConnectAsync(peers[1].Address, CancellationToken.None);   // over the high watermark
        await d.IdleAsync();
        Assert.That(hub.Host.Connections, Has.Count.EqualTo(1));
        Assert.That(hub.Host.Instruments.ClosedTotals()[trimmed], Is.EqualTo(1));

        await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
        await hub.Host.ConnectAsync(peers[2].Address, CancellationToken.None);   // over it again, well within the interval
        await d.IdleAsync();
        Assert.That(hub.Host.Connections, Has.Count.EqualTo(1), "trimmed at once, not at the tick");
        Assert.That(hub.Host.Instruments.ClosedTotals()[trimmed], Is.EqualTo(2));
    });

    [Test]
    public void AtTheHardLimit_YoungConnectionsGiveWayDownToTheHighWatermark_SoANewcomerIsServed() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d);
        var hub = await hosts.StartAsync(o => o with { MaxConnections = 4, HighWater = 2, LowWater = 1, TrimGracePeriod = TimeSpan.FromSeconds(20) });
        var closed = new List<PeerId>();
        hub.Host.Disconnected += c => closed.Add(c.RemotePeer);
        var first = new List<TestHosts.TestNode>();
        for (var i = 0; i < 4; i++)
        {
            var peer = await hosts.StartAsync();
            await peer.Host.ConnectAsync(hub.Address, ct);
            first.Add(peer);
        }
        await d.IdleAsync();

        // All four are young (well inside the 20 s grace period), and four is the hard limit: without giving way the hub
        // would refuse everyone for 20 s (the 10-second leases of a simulated mesh capped at 32 connections).
        Assert.That(hub.Host.Connections, Has.Count.EqualTo(2), "trimmed back to the high watermark");
        Assert.That(closed, Has.Count.EqualTo(2));
        var newcomer = await hosts.StartAsync();
        await newcomer.Host.ConnectAsync(hub.Address, ct);
        var rtts = await newcomer.Ping.PingAsync(hub.Host.PeerId, 1, ct);
        Assert.That(rtts, Has.Count.EqualTo(1), "the newcomer is served at once, not after the grace period");
        Assert.That(hub.Host.Connections, Has.Count.LessThanOrEqualTo(4), "never more than the hard limit");
        Assert.That(hub.Host.Resources.RefusedIn(ResourceManager.Scopes.SystemConnections), Is.Zero);
    });

    /// <summary>
    /// At the hard limit the grace period gives way, but not to the newcomer whose arrival made the trim: it has not
    /// identified yet (it is mid-handshake), so the oldest idle young connection goes instead. Closing the newest first
    /// killed a requester's lease connection the instant a full provider accepted it (the lease then waited out its
    /// 5 s retry: one lease of 40 at 100 simulated nodes capped at 32).
    /// </summary>
    [Test]
    public void AtTheHardLimit_TheNewcomerThatMadeTheTrimIsServed_TheOldestIdleYoungConnectionGoes() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d);
        var hub = await hosts.StartAsync(o => o with { MaxConnections = 3, HighWater = 2, LowWater = 2, TrimGracePeriod = TimeSpan.FromSeconds(20) });
        var closed = new List<PeerId>();
        hub.Host.Disconnected += c => closed.Add(c.RemotePeer);
        var oldest = await hosts.StartAsync();
        var middle = await hosts.StartAsync();
        await oldest.Host.ConnectAsync(hub.Address, ct);
        await d.IdleAsync();
        await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
        await middle.Host.ConnectAsync(hub.Address, ct);
        await d.IdleAsync();
        await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
        Assert.That(hub.Host.Connections, Has.Count.EqualTo(2), "at the high watermark: nothing trimmed");

        // The third fills the hub to its hard limit, every connection inside the 20 s grace period: one must go.
        var newcomer = await hosts.StartAsync();
        await newcomer.Host.ConnectAsync(hub.Address, ct);
        var rtts = await newcomer.Ping.PingAsync(hub.Host.PeerId, 1, ct);
        await d.IdleAsync();

        Assert.That(rtts, Has.Count.EqualTo(1), "the newcomer is served, not closed the instant it was accepted");
        Assert.That(closed, Is.EqualTo(new[] { oldest.Host.PeerId }), "the oldest idle young connection gave way");
        Assert.That(hub.Host.Connections.Select(c => c.RemotePeer), Is.EquivalentTo(new[] { middle.Host.PeerId, newcomer.Host.PeerId }));
    });

    [Test]
    public void FullOfYoungConnections_TheNodesOwnDialClosesTheLeastValuable_WhileAnInboundNewcomerIsStillRefused() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d);
        // Trimming off: only the hard limit of 2 applies.
        var hub = await hosts.StartAsync(o => o with { MaxConnections = 2, HighWater = 0, TrimGracePeriod = TimeSpan.FromSeconds(20) });
        var valued = await hosts.StartAsync();
        var plain = await hosts.StartAsync();
        var target = await hosts.StartAsync();
        hub.Host.ConnectionManager.TagPeer(valued.Host.PeerId, "test", 10);
        await valued.Host.ConnectAsync(hub.Address, ct);
        await plain.Host.ConnectAsync(hub.Address, ct);
        await d.IdleAsync();
        Assert.That(hub.Host.Connections, Has.Count.EqualTo(2));

        // A stranger knocking is refused before its handshake (it could be one of a flood): young connections stay.
        var stranger = await hosts.StartAsync();
        await AsyncAssert.ThrowsAsync<DialException>(async () => await stranger.Host.ConnectAsync(hub.Address, ct));
        await d.IdleAsync();
        Assert.That(hub.Host.Connections, Has.Count.EqualTo(2));

        // The hub's own dial (a lease it wants to run) is not refused for 20 s: the least valuable young connection goes.
        await hub.Host.ConnectAsync(target.Address, ct);
        var rtts = await hub.Ping.PingAsync(target.Host.PeerId, 1, ct);
        await d.IdleAsync();
        Assert.That(rtts, Has.Count.EqualTo(1));
        Assert.That(hub.Host.Connections.Select(c => c.RemotePeer), Is.EquivalentTo(new[] { valued.Host.PeerId, target.Host.PeerId }));
    });

    [Test]
    public void HungUpRecently_OnlyWhenTheRemoteClosed_ForTheWindow_AndNotWhileConnected() => VirtualTimeDriver.Run(async d =>
    {
        await using var hosts = new TestHosts(d);
        var hub = await hosts.StartAsync();
        var dialer = await hosts.StartAsync();
        var window = TimeSpan.FromSeconds(30);

        await dialer.Host.ConnectAsync(hub.Address, CancellationToken.None);
        await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);   // the hub has registered it too
        await hub.Host.DisconnectAsync(dialer.Host.PeerId);   // the hub trims the dialer
        await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);   // the close crosses the link

        Assert.That(dialer.Host.ConnectionManager.HungUpRecently(hub.Host.PeerId, window), Is.True, "the hub closed it");
        Assert.That(hub.Host.ConnectionManager.HungUpRecently(dialer.Host.PeerId, window), Is.False, "the hub closed it itself");

        await Task.Delay(TimeSpan.FromSeconds(27), d.Clock);
        Assert.That(dialer.Host.ConnectionManager.HungUpRecently(hub.Host.PeerId, window), Is.True);
        await Task.Delay(TimeSpan.FromSeconds(3), d.Clock);
        Assert.That(dialer.Host.ConnectionManager.HungUpRecently(hub.Host.PeerId, window), Is.False, "the window has passed");

        await dialer.Host.ConnectAsync(hub.Address, CancellationToken.None);
        await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);   // the hub has registered it too
        await hub.Host.DisconnectAsync(dialer.Host.PeerId);
        await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
        Assert.That(dialer.Host.ConnectionManager.HungUpRecently(hub.Host.PeerId, window), Is.True);
        await hub.Host.ConnectAsync(dialer.Address, CancellationToken.None);
        await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
        Assert.That(dialer.Host.ConnectionManager.HungUpRecently(hub.Host.PeerId, window), Is.False, "connected again");
    });
    [Test]
    public void HungUpRecently_EntriesOlderThanTheLongestWindowAsked_AreSweptAsNewOnesCome() => VirtualTimeDriver.Run(async d =>
    {
        await using var hosts = new TestHosts(d);
        var dialer = await hosts.StartAsync();
        var window = TimeSpan.FromSeconds(30);
        var hubs = new List<TestHosts.TestNode>();
        for (var i = 0; i < 17; i++)
        {
            hubs.Add(await hosts.StartAsync());
        }

        async Task HangUpOn(TestHosts.TestNode hub)
        {
            await dialer.Host.ConnectAsync(hub.Address, CancellationToken.None);
            await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
            await hub.Host.DisconnectAsync(dialer.Host.PeerId);
            await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
        }

        foreach (var hub in hubs.Take(16))
        {
            await HangUpOn(hub);
        }
        Assert.That(dialer.Host.ConnectionManager.HungUpRecently(hubs[15].Host.PeerId, window), Is.True);
        Assert.That(((ConnectionManager)dialer.Host.ConnectionManager).HungUpCount, Is.EqualTo(16));

        await Task.Delay(window, d.Clock);
        await HangUpOn(hubs[16]);   // the 17th: the table (16) is due a sweep, and the 16 are past every window asked

        Assert.That(((ConnectionManager)dialer.Host.ConnectionManager).HungUpCount, Is.EqualTo(1), "only the peer that just hung up");
        Assert.That(dialer.Host.ConnectionManager.HungUpRecently(hubs[16].Host.PeerId, window), Is.True);
        Assert.That(hubs.Take(16).Where(h => dialer.Host.ConnectionManager.HungUpRecently(h.Host.PeerId, window)), Is.Empty);
    });

    /// <summary>
    /// A lookup's connections closed once it is over: only a peer's connections all opened since the lookup began,
    /// unprotected, untagged and carrying no stream but background ones; anything else stays open.
    /// </summary>
    [Test]
    public void CloseUnused_ClosesOnlyConnectionsOpenedSince_WithBackgroundStreamsOnly_OfAnUnprotectedUntaggedPeer() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d);
        var hub = await hosts.StartAsync();
        var older = await hosts.StartAsync();
        var plain = await hosts.StartAsync();
        var pinging = await hosts.StartAsync();
        var busy = await hosts.StartAsync();
        var guarded = await hosts.StartAsync();
        var valued = await hosts.StartAsync();
        await hub.Host.ConnectAsync(older.Address, ct);
        await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
        var since = d.Clock.GetUtcNow();
        foreach (var n in new[] { plain, pinging, busy, guarded, valued })
        {
            await hub.Host.ConnectAsync(n.Address, ct);
        }
        await d.IdleAsync();
        // A ping stream held open on two: background for one call, a stream in use for the other.
        var held = await hub.Host.NewStreamAsync(pinging.Host.PeerId, [PingService.ProtocolId], ct);
        var inUse = await hub.Host.NewStreamAsync(busy.Host.PeerId, [PingService.ProtocolId], ct);
        hub.Host.ConnectionManager.Protect(guarded.Host.PeerId, "gossipsub");
        hub.Host.ConnectionManager.TagPeer(valued.Host.PeerId, "lease", 5);
        static bool Background(string p) => p.StartsWith("/ipfs/ping/", StringComparison.Ordinal) || p.StartsWith("/ipfs/id/", StringComparison.Ordinal);
        static bool IdentifyOnly(string p) => p.StartsWith("/ipfs/id/", StringComparison.Ordinal);

        var manager = hub.Host.ConnectionManager;
        Assert.That(manager.CloseUnused(older.Host.PeerId, since, Background), Is.EqualTo(0), "opened before the lookup began");
        Assert.That(manager.CloseUnused(plain.Host.PeerId, since, Background), Is.EqualTo(1));
        Assert.That(manager.CloseUnused(pinging.Host.PeerId, since, Background), Is.EqualTo(1), "only a background stream on it");
        Assert.That(manager.CloseUnused(busy.Host.PeerId, since, IdentifyOnly), Is.EqualTo(0), "a stream in use");
        Assert.That(manager.CloseUnused(guarded.Host.PeerId, since, Background), Is.EqualTo(0), "protected");
        Assert.That(manager.CloseUnused(valued.Host.PeerId, since, Background), Is.EqualTo(0), "tagged");
        await d.IdleAsync();

        Assert.That(hub.Host.Connections.Select(c => c.RemotePeer),
            Is.EquivalentTo(new[] { older.Host.PeerId, busy.Host.PeerId, guarded.Host.PeerId, valued.Host.PeerId }));
        await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);   // the close crosses the link
        var unused = Array.IndexOf(ProtocolInstruments.CloseReasons.ToArray(), "unused");
        Assert.That(hub.Host.Instruments.ClosedTotals()[unused], Is.EqualTo(2), "counted as closed for being unused");
        Assert.That(plain.Host.ConnectionManager.HungUpRecently(hub.Host.PeerId, TimeSpan.FromSeconds(30)), Is.True,
            "the other end sees the hub hang up");
        await inUse.DisposeAsync();
        await held.DisposeAsync();
    });

    private const string Exchange = "/test/exchange/1";

    /// <summary>
    /// A young connection's grace period ends once the exchange it was opened for is over (a lookup's request answered):
    /// it carried a stream that is not background and carries none now. A trim over the high watermark then closes it as
    /// one past its grace period (down to the low watermark); not one still in use, one that only ever carried background
    /// streams (ping here; gossip to a mesh peer is protected instead), a protected or a tagged peer's. With the rule off
    /// every young connection stays.
    /// </summary>
    [TestCase(true)]
    [TestCase(false)]
    public void OverTheHighWatermark_YoungConnectionsWhoseExchangeIsOver_AreTrimmed_DownToTheLowWatermark(bool rule) => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d);
        var hub = await hosts.StartAsync(o => o with
        {
            MaxConnections = 16, HighWater = 7, LowWater = 5, TrimGracePeriod = TimeSpan.FromSeconds(20), TrimFinishedYoung = rule,
        });
        var closed = new List<PeerId>();
        hub.Host.Disconnected += c => closed.Add(c.RemotePeer);
        async Task<TestHosts.TestNode> Peer()
        {
            var peer = await hosts.StartAsync();
            peer.Host.SetStreamHandler(Exchange, async (stream, token) =>
            {
                await stream.Input.ReadAsync(token);   // one request (here: its end), then the answer: the end
                await stream.Output.CompleteAsync();
            });
            await hub.Host.ConnectAsync(peer.Address, ct);
            await d.IdleAsync();
            await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
            return peer;
        }
        async Task ExchangeWith(TestHosts.TestNode peer)
        {
            await using var stream = await hub.Host.NewStreamAsync(peer.Host.PeerId, [Exchange], ct);
            await stream.Output.CompleteAsync();
            await stream.Input.ReadAsync(ct);
        }
        var done = new[] { await Peer(), await Peer(), await Peer() };
        var busy = await Peer();
        var pinged = await Peer();
        var guarded = await Peer();
        var valued = await Peer();
        foreach (var peer in done.Append(guarded).Append(valued))
        {
            await ExchangeWith(peer);
        }
        var open = await hub.Host.NewStreamAsync(busy.Host.PeerId, [Exchange], ct);
        await hub.Ping.PingAsync(pinged.Host.PeerId, 1, ct);
        hub.Host.ConnectionManager.Protect(guarded.Host.PeerId, "gossipsub");
        hub.Host.ConnectionManager.TagPeer(valued.Host.PeerId, "lease", 5);
        await d.IdleAsync();
        Assert.That(closed, Is.Empty, "at the high watermark nothing is trimmed");

        var newcomer = await Peer();   // the eighth: over the high watermark of 7, three over the low watermark of 5
        await d.IdleAsync();

        Assert.That(hub.Host.Connections.Any(c => c.RemotePeer == newcomer.Host.PeerId), Is.True, "the newcomer stays");
        if (rule)
        {
            Assert.That(closed, Is.EquivalentTo(done.Select(p => p.Host.PeerId)), "the three whose exchange is over");
            Assert.That(hub.Host.Connections, Has.Count.EqualTo(5), "down to the low watermark");
            await Peer();
            await Peer();
            await Peer();   // over the high watermark again: no young connection whose exchange is over is left
            Assert.That(hub.Host.Connections, Has.Count.EqualTo(8));
        }
        else
        {
            Assert.That(closed, Is.Empty, "every connection is in its grace period");
            Assert.That(hub.Host.Connections, Has.Count.EqualTo(8));
        }
        Assert.That(closed, Does.Not.Contain(busy.Host.PeerId).And.Not.Contain(pinged.Host.PeerId)
            .And.Not.Contain(guarded.Host.PeerId).And.Not.Contain(valued.Host.PeerId));
        await open.DisposeAsync();
    });

    private static HostOptions IdleTrimHub(HostOptions o, bool rule, int floor) => o with
    {
        MaxConnections = 64, HighWater = 32, LowWater = 24, TrimGracePeriod = TimeSpan.FromSeconds(20),
        TrimInterval = TimeSpan.FromSeconds(10), IdleConnectionTimeout = TimeSpan.FromSeconds(10), IdleTrimFloor = floor,
        TrimIdle = rule,
    };

    /// <summary>
    /// <see cref="HostOptions.TrimIdle"/>, far below the high watermark (8 of 32): on the trim tick a connection past its
    /// grace period that carries no stream but background ones and has carried no other for the idle timeout is closed:
    /// one holding only a long-lived background stream (as gossip to a peer in none of the node's meshes), one whose
    /// exchange is long over, and a Sybil's that keeps its connection busy with pings every 3 s (background traffic buys
    /// nothing). Kept: a connection with a stream in use, a protected peer's, a tagged peer's, one used within the timeout
    /// (until the timeout passes) and a young one (until its grace runs out). With the rule off nothing is closed.
    /// </summary>
    [TestCase(true)]
    [TestCase(false)]
    [Category("Adversarial")]
    public void BelowTheHighWatermark_IdleConnectionsPastTheirGrace_AreClosed_NotTheUsedProtectedTaggedOrYoung(bool rule) => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d);
        var hub = await hosts.StartAsync(o => IdleTrimHub(o, rule, floor: 0));
        var t0 = d.Clock.GetUtcNow();
        var closed = new List<PeerId>();
        hub.Host.Disconnected += c => closed.Add(c.RemotePeer);
        async Task<TestHosts.TestNode> Peer(bool inbound = false)
        {
            var peer = await hosts.StartAsync();
            peer.Host.SetStreamHandler(Exchange, async (stream, token) =>
            {
                await stream.Input.ReadAsync(token);
                await stream.Output.CompleteAsync();
            });
            if (inbound)
            {
                await peer.Host.ConnectAsync(hub.Address, ct);
            }
            else
            {
                await hub.Host.ConnectAsync(peer.Address, ct);
            }
            await d.IdleAsync();
            await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
            return peer;
        }
        async Task ExchangeWith(TestHosts.TestNode peer)
        {
            await using var stream = await hub.Host.NewStreamAsync(peer.Host.PeerId, [Exchange], ct);
            await stream.Output.CompleteAsync();
            await stream.Input.ReadAsync(ct);
        }
        async Task At(double seconds)
        {
            await Task.Delay(t0 + TimeSpan.FromSeconds(seconds) - d.Clock.GetUtcNow(), d.Clock);
            await d.IdleAsync();
        }

        var gossiper = await Peer();
        var background = await hub.Host.NewStreamAsync(gossiper.Host.PeerId, [PingService.ProtocolId], ct);   // held open
        var sybil = await Peer(inbound: true);
        var stopChatter = false;
        async Task Chatter()
        {
            while (!stopChatter && sybil.Host.ConnectionManager.IsConnected(hub.Host.PeerId))
            {
                try
                {
                    await sybil.Ping.PingAsync(hub.Host.PeerId, 1, ct);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    break;   // the hub hung up mid-ping
                }
                await Task.Delay(TimeSpan.FromSeconds(3), d.Clock);
            }
        }
        var chatter = Chatter();
        var done = await Peer();
        await ExchangeWith(done);
        var busy = await Peer();
        var inUse = await hub.Host.NewStreamAsync(busy.Host.PeerId, [Exchange], ct);
        var guarded = await Peer();
        hub.Host.ConnectionManager.Protect(guarded.Host.PeerId, "gossipsub");
        var valued = await Peer();
        hub.Host.ConnectionManager.TagPeer(valued.Host.PeerId, "lease", 5);
        var late = await Peer();
        await At(15);
        var young = await Peer();
        await At(25);
        await ExchangeWith(late);

        await At(31);
        Assert.That(hub.Host.Connections, Has.Count.LessThanOrEqualTo(8), "far below the high watermark of 32 throughout");
        if (!rule)
        {
            await At(41);
            Assert.That(closed, Is.Empty, "with the rule off nothing below the high watermark is closed");
            Assert.That(hub.Host.Connections, Has.Count.EqualTo(8));
        }
        else
        {
            Assert.That(closed, Is.EquivalentTo(new[] { gossiper.Host.PeerId, sybil.Host.PeerId, done.Host.PeerId }),
                "background streams only, pings every 3 s, an exchange long over");
            await At(41);
            Assert.That(closed, Is.EquivalentTo(new[]
            {
                gossiper.Host.PeerId, sybil.Host.PeerId, done.Host.PeerId, late.Host.PeerId, young.Host.PeerId,
            }), "the late exchange's timeout and the young one's grace have run out");
            Assert.That(hub.Host.Connections.Select(c => c.RemotePeer),
                Is.EquivalentTo(new[] { busy.Host.PeerId, guarded.Host.PeerId, valued.Host.PeerId }), "in use, protected, tagged");
            var idleTrim = Array.IndexOf(ProtocolInstruments.CloseReasons.ToArray(), "idle-trim");
            Assert.That(hub.Host.Instruments.ClosedTotals()[idleTrim], Is.EqualTo(5), "counted as closed idle");
            Assert.That(sybil.Host.ConnectionManager.IsConnected(hub.Host.PeerId), Is.False, "the Sybil was hung up on");
        }
        stopChatter = true;
        await At(45);
        await chatter;
        await inUse.DisposeAsync();
        await background.DisposeAsync();
    });

    /// <summary>
    /// <see cref="HostOptions.TrimFinishedYoung"/> below the high watermark (8 of 32; the peak of a joining mesh): a young
    /// connection whose exchange is over is closed by the idle trim once it has carried no other stream for the idle
    /// timeout, before its grace period ends; a Sybil that made one request and then pings every 3 s to hold its young
    /// connection goes with it (background traffic buys nothing). Kept: a young connection used within the timeout, one
    /// that never carried an exchange (until its grace runs out), a protected, a tagged peer's and one in use. The honest
    /// side can dial a closed peer again and exchange. With the rule off every young connection stays its full grace.
    /// </summary>
    [TestCase(true)]
    [TestCase(false)]
    [Category("Adversarial")]
    public void BelowTheHighWatermark_FinishedYoungConnections_CloseAfterTheIdleTimeout_NotTheirGrace(bool rule) => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d);
        var hub = await hosts.StartAsync(o => IdleTrimHub(o, rule: true, floor: 0) with { TrimFinishedYoung = rule });
        hub.Host.SetStreamHandler(Exchange, async (stream, token) =>   // the Sybil's one request
        {
            await stream.Input.ReadAsync(token);
            await stream.Output.CompleteAsync();
        });
        var t0 = d.Clock.GetUtcNow();
        var closed = new List<PeerId>();
        hub.Host.Disconnected += c => closed.Add(c.RemotePeer);
        async Task<TestHosts.TestNode> Peer(bool inbound = false)
        {
            var peer = await hosts.StartAsync();
            peer.Host.SetStreamHandler(Exchange, async (stream, token) =>
            {
                await stream.Input.ReadAsync(token);
                await stream.Output.CompleteAsync();
            });
            if (inbound)
            {
                await peer.Host.ConnectAsync(hub.Address, ct);
            }
            else
            {
                await hub.Host.ConnectAsync(peer.Address, ct);
            }
            await d.IdleAsync();
            return peer;
        }
        async Task ExchangeWith(TestHosts.TestNode peer)
        {
            await using var stream = await hub.Host.NewStreamAsync(peer.Host.PeerId, [Exchange], ct);
            await stream.Output.CompleteAsync();
            await stream.Input.ReadAsync(ct);
        }
        async Task At(double seconds)
        {
            await Task.Delay(t0 + TimeSpan.FromSeconds(seconds) - d.Clock.GetUtcNow(), d.Clock);
            await d.IdleAsync();
        }

        await At(5);
        var lookup = await Peer();
        var sybil = await Peer(inbound: true);
        var fresh = await Peer();
        var quiet = await Peer();
        var guarded = await Peer();
        var valued = await Peer();
        var busy = await Peer();
        await At(6);
        await ExchangeWith(lookup);
        await ExchangeWith(guarded);
        await ExchangeWith(valued);
        await using (var request = await sybil.Host.NewStreamAsync(hub.Host.PeerId, [Exchange], ct))
        {
            await request.Output.CompleteAsync();
            await request.Input.ReadAsync(ct);
        }
        hub.Host.ConnectionManager.Protect(guarded.Host.PeerId, "gossipsub");
        hub.Host.ConnectionManager.TagPeer(valued.Host.PeerId, "lease", 5);
        var inUse = await hub.Host.NewStreamAsync(busy.Host.PeerId, [Exchange], ct);
        var stopChatter = false;
        async Task Chatter()
        {
            while (!stopChatter && sybil.Host.ConnectionManager.IsConnected(hub.Host.PeerId))
            {
                try
                {
                    await sybil.Ping.PingAsync(hub.Host.PeerId, 1, ct);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    break;   // the hub hung up mid-ping
                }
                await Task.Delay(TimeSpan.FromSeconds(3), d.Clock);
            }
        }
        var chatter = Chatter();
        await At(12);
        await ExchangeWith(fresh);

        await At(21);   // the tick at 20: every connection 15-16 s old, in its grace period of 20 s
        if (rule)
        {
            Assert.That(hub.Host.Connections, Has.Count.EqualTo(5));
            Assert.That(closed, Is.EquivalentTo(new[] { lookup.Host.PeerId, sybil.Host.PeerId }),
                "young, exchange over 14 s ago: closed (the Sybil's pings do not count as use)");
            Assert.That(sybil.Host.ConnectionManager.IsConnected(hub.Host.PeerId), Is.False, "the Sybil was hung up on");
            var idleTrim = Array.IndexOf(ProtocolInstruments.CloseReasons.ToArray(), "idle-trim");
            Assert.That(hub.Host.Instruments.ClosedTotals()[idleTrim], Is.EqualTo(2), "counted as closed idle");
            await ExchangeWith(lookup);   // the honest side dials again when it needs the peer
            Assert.That(hub.Host.ConnectionManager.IsConnected(lookup.Host.PeerId), Is.True, "dialled again on demand");
        }
        else
        {
            Assert.That(closed, Is.Empty, "with the rule off every young connection stays its grace period");
            Assert.That(hub.Host.Connections, Has.Count.EqualTo(7));
        }
        Assert.That(closed, Does.Not.Contain(fresh.Host.PeerId).And.Not.Contain(quiet.Host.PeerId)
            .And.Not.Contain(guarded.Host.PeerId).And.Not.Contain(valued.Host.PeerId).And.Not.Contain(busy.Host.PeerId),
            "used 9 s ago, never used (young), protected, tagged, in use");

        await At(31);   // the tick at 30: past their grace, the young rule no longer matters
        Assert.That(closed, Does.Contain(fresh.Host.PeerId).And.Contain(quiet.Host.PeerId).And.Contain(sybil.Host.PeerId),
            "past the grace and the idle timeout: closed either way");
        Assert.That(hub.Host.Connections.Select(c => c.RemotePeer), Is.SupersetOf(new[] { guarded.Host.PeerId, valued.Host.PeerId, busy.Host.PeerId }));
        stopChatter = true;
        await At(35);
        await chatter;
        await inUse.DisposeAsync();
    });

    /// <summary>
    /// <see cref="HostOptions.IdleTrimFloor"/>: six idle connections past their grace and timeout, a floor of 4: the two
    /// unused longest go, and the four left stay however long they idle.
    /// </summary>
    [Test]
    public void BelowTheHighWatermark_IdleTrim_KeepsTheFloor_TheLongestUnusedGoFirst() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d);
        var hub = await hosts.StartAsync(o => IdleTrimHub(o, rule: true, floor: 4));
        var t0 = d.Clock.GetUtcNow();
        var closed = new List<PeerId>();
        hub.Host.Disconnected += c => closed.Add(c.RemotePeer);
        var peers = new List<TestHosts.TestNode>();
        for (var i = 0; i < 6; i++)
        {
            var peer = await hosts.StartAsync();
            peer.Host.SetStreamHandler(Exchange, async (stream, token) =>
            {
                await stream.Input.ReadAsync(token);
                await stream.Output.CompleteAsync();
            });
            await hub.Host.ConnectAsync(peer.Address, ct);
            peers.Add(peer);
        }
        await d.IdleAsync();
        foreach (var peer in peers.AsEnumerable().Reverse())   // the last connected used first: use, not age, orders them
        {
            await using var stream = await hub.Host.NewStreamAsync(peer.Host.PeerId, [Exchange], ct);
            await stream.Output.CompleteAsync();
            await stream.Input.ReadAsync(ct);
            await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
        }
        await Task.Delay(t0 + TimeSpan.FromSeconds(31) - d.Clock.GetUtcNow(), d.Clock);
        await d.IdleAsync();
        Assert.That(closed, Is.EquivalentTo(new[] { peers[5].Host.PeerId, peers[4].Host.PeerId }), "the two unused longest");
        Assert.That(hub.Host.Connections, Has.Count.EqualTo(4), "down to the floor");

        await Task.Delay(TimeSpan.FromSeconds(60), d.Clock);
        await d.IdleAsync();
        Assert.That(hub.Host.Connections, Has.Count.EqualTo(4), "the floor holds");
    });
}
