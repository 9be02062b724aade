using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Metrics;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Tests.Host;

namespace Potluck.Protocol.Tests.Kademlia;

public class KademliaHostTests
{
    private sealed record DhtNode(TestHosts.TestNode Node, KademliaService Dht)
    {
        public Libp2pHost Host => Node.Host;
    }

    private static async Task<List<DhtNode>> StartNetworkAsync(TestHosts hosts, int count, CancellationToken ct, KademliaOptions? options = null,
        Func<HostOptions, HostOptions>? host = null)
    {
        var nodes = new List<DhtNode>();
        for (var i = 0; i < count; i++)
        {
            var node = await hosts.StartAsync(host);
            nodes.Add(new DhtNode(node, new KademliaService(node.Host, options ?? new KademliaOptions(), node.Runtime, NullLoggerFactory.Instance)));
        }
        for (var i = 1; i < count; i++)
        {
            await nodes[i].Dht.BootstrapAsync([nodes[0].Node.Address], ct);
        }
        return nodes;
    }

    private static async Task DisposeAllAsync(IEnumerable<DhtNode> nodes)
    {
        foreach (var n in nodes)
        {
            await n.Dht.DisposeAsync();
        }
    }

    [Test]
    public void Dials_AreCountedByReason_DhtJoinAsDht_AndAPurposeOfTheCallersOwn() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d, seed: 22);
        var nodes = await StartNetworkAsync(hosts, 12, ct);
        try
        {
            long Of(DhtNode n, string reason) => n.Host.Instruments.DialTotals()[DialReason.IndexOf(reason)];
            var dht = nodes.Sum(n => Of(n, DialReason.DhtBootstrap) + Of(n, DialReason.DhtRefresh) + Of(n, DialReason.DhtProbe));
            Assert.That(nodes.Sum(n => n.Host.Instruments.DialTotals().Sum()), Is.EqualTo(dht), "the DHT's join made every dial");
            Assert.That(nodes.Skip(1).Select(n => Of(n, DialReason.DhtBootstrap)), Has.All.GreaterThan(0), "each joiner's self-lookup dialled");
            Assert.That(nodes.Sum(n => Of(n, DialReason.Other)), Is.Zero);

            var a = nodes[3];
            var stranger = await hosts.StartAsync(); // outside the DHT: a has no connection to it
            var leaseBefore = Of(a, DialReason.Lease);
            using (DialReason.Use(DialReason.Lease))
            {
                await a.Host.ConnectAsync(stranger.Address, ct);
                await a.Host.ConnectAsync(stranger.Address, ct); // already connected: no dial
            }
            Assert.That(Of(a, DialReason.Lease), Is.EqualTo(leaseBefore + 1));
            Assert.That(DialReason.Current, Is.EqualTo(DialReason.Other), "the scope put the reason back");
        }
        finally
        {
            await DisposeAllAsync(nodes);
        }
    });

    [Test]
    public void Bootstrap_25Nodes_FillsRoutingTables_AndFindPeerFindsAPeerById() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d, seed: 21);
        var nodes = await StartNetworkAsync(hosts, 25, ct);
        try
        {
            Assert.That(nodes.Select(n => n.Dht.RoutingTableSize), Has.All.GreaterThanOrEqualTo(10));
            Assert.That(nodes.SelectMany(n => n.Dht.RoutingTablePeers()), Has.None.EqualTo(default(PeerId)));
            foreach (var n in nodes)
            {
                Assert.That(n.Dht.RoutingTablePeers(), Does.Not.Contain(n.Host.PeerId));
            }

            var seeker = nodes[7];
            var target = nodes.Where(n => n != seeker).First(n => !seeker.Host.Connections.Any(c => c.RemotePeer == n.Host.PeerId) || n == nodes[^1]);
            var found = await seeker.Dht.FindPeerAsync(target.Host.PeerId, ct);
            Assert.That(found, Does.Contain(target.Host.ListenAddresses[0]));

            var closest = await nodes[3].Dht.GetClosestPeersAsync("some key"u8.ToArray(), ct);
            var key = KadKey.FromKey("some key"u8);
            var truth = nodes.Where(n => n != nodes[3]).Select(n => n.Host.PeerId).OrderBy(p => KadKey.FromPeer(p).DistanceTo(key)).Take(20);
            Assert.That(closest, Is.EqualTo(truth));
        }
        finally
        {
            await DisposeAllAsync(nodes);
        }
    });

    /// <summary>
    /// A node's lookups stay within the k closest (<see cref="LookupOptions.StayWithinK"/>): 40 nodes join one after
    /// another through the first; each joiner's self-lookup dials at most k + 2α peers (without the rule, a stalled lookup
    /// widened over candidates beyond the k closest: up to 29 here), none of their requests is cancelled, and a lookup
    /// still finds the true k closest.
    /// </summary>
    [Test]
    public void Join_40Nodes_SelfLookupsCancelNothing_DialAtMostKPlusTwoAlpha_AndStillFindTheKClosest() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d, seed: 24);
        var options = new KademliaOptions();
        var nodes = await StartNetworkAsync(hosts, 40, ct, options);
        try
        {
            var dials = nodes.Skip(1).Select(n => n.Host.Instruments.DialTotals()[DialReason.IndexOf(DialReason.DhtBootstrap)]).ToArray();
            var cancelled = nodes.Sum(n => n.Host.Instruments.DhtQueryTotals()[3]);
            TestContext.Out.WriteLine($"self-lookup dials per joiner: max {dials.Max()}, sum {dials.Sum()}; requests cancelled {cancelled}");
            Assert.That(cancelled, Is.Zero, "no request left in flight when a lookup ended");
            Assert.That(dials, Has.All.LessThanOrEqualTo(options.K + 2 * options.Alpha));

            var closest = await nodes[5].Dht.GetClosestPeersAsync("another key"u8.ToArray(), ct);
            var key = KadKey.FromKey("another key"u8);
            var truth = nodes.Where(n => n != nodes[5]).Select(n => n.Host.PeerId).OrderBy(p => KadKey.FromPeer(p).DistanceTo(key)).Take(20);
            Assert.That(closest, Is.EqualTo(truth));
        }
        finally
        {
            await DisposeAllAsync(nodes);
        }
    });

    /// <summary>
    /// <see cref="HostOptions.TrimFinishedYoung"/>: 40 nodes join one after another within a few virtual seconds, each host
    /// capped at a high watermark of 16 (hard limit 32, grace period 20 s, so every connection is young throughout).
    /// With the rule every host ends the joins at or under its high watermark (a join's connections whose requests were
    /// answered are trimmed as newer ones pass it); without it the hosts keep young ones up to the hard limit.
    /// Either way a lookup still finds the true k closest.
    /// </summary>
    [TestCase(true)]
    [TestCase(false)]
    public void Join_40NodesCappedAt16_EveryHostEndsAtOrUnderItsHighWatermark_AndLookupsStillFindTheKClosest(bool rule) => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d, seed: 26);
        var nodes = await StartNetworkAsync(hosts, 40, ct, host: o => o with
        {
            HighWater = 16, LowWater = 12, MaxConnections = 32, TrimGracePeriod = TimeSpan.FromSeconds(20), TrimFinishedYoung = rule,
        });
        try
        {
            await d.IdleAsync();
            var counts = nodes.Select(n => n.Host.Connections.Count(c => !c.IsClosed)).ToArray();
            TestContext.Out.WriteLine($"rule {rule}: connections per host max {counts.Max()}, mean {counts.Average():F1}, virtual {d.Clock.Elapsed.TotalSeconds:F1} s");
            Assert.That(d.Clock.Elapsed, Is.LessThan(TimeSpan.FromSeconds(20)), "every connection is still in its grace period");
            if (rule)
            {
                Assert.That(counts, Has.All.LessThanOrEqualTo(16));
            }
            else
            {
                Assert.That(counts.Max(), Is.GreaterThan(16), "without the rule, young connections stay past the high watermark");
            }

            var closest = await nodes[7].Dht.GetClosestPeersAsync("a key after the joins"u8.ToArray(), ct);
            var key = KadKey.FromKey("a key after the joins"u8);
            var truth = nodes.Where(n => n != nodes[7]).Select(n => n.Host.PeerId).OrderBy(p => KadKey.FromPeer(p).DistanceTo(key)).Take(20);
            Assert.That(closest, Is.EqualTo(truth));
        }
        finally
        {
            await DisposeAllAsync(nodes);
        }
    });

    /// <summary>
    /// <see cref="KademliaOptions.JoinRefreshSpread"/>: with zero, a joiner's refreshes dial before
    /// <see cref="KademliaService.BootstrapAsync"/> returns (as before); with a spread, none dials then, nor at a
    /// maintenance pass before the first slot (spread / due ≥ spread / 16), and by the end of the spread maintenance
    /// has refreshed the idle joiner's buckets, but not those of a joiner whose own lookups used every bucket meanwhile.
    /// </summary>
    [Test]
    public void JoinRefresh_SpreadOverTheInterval_DialsNothingAtTheJoin_AndSkipsBucketsALookupUsedMeanwhile() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d, seed: 25);
        var atOnceOptions = new KademliaOptions { JoinRefreshSpread = TimeSpan.Zero };
        var nodes = await StartNetworkAsync(hosts, 40, ct, atOnceOptions);
        var spreadOptions = new KademliaOptions();
        Assert.That(spreadOptions.JoinRefreshSpread, Is.EqualTo(spreadOptions.BucketRefreshInterval), "the default: over the refresh interval");
        var joiners = new List<(TestHosts.TestNode Node, KademliaService Dht)>();
        async Task<(TestHosts.TestNode Node, KademliaService Dht)> JoinerAsync(KademliaOptions options)
        {
            var node = await hosts.StartAsync();
            var joiner = (node, new KademliaService(node.Host, options, node.Runtime, NullLoggerFactory.Instance));
            joiners.Add(joiner);
            return joiner;
        }
        long Of(TestHosts.TestNode n, string reason) => n.Host.Instruments.DialTotals()[DialReason.IndexOf(reason)];
        try
        {
            var atOnce = await JoinerAsync(atOnceOptions);
            await atOnce.Dht.BootstrapAsync([nodes[2].Node.Address], ct);
            Assert.That(Of(atOnce.Node, DialReason.DhtRefresh), Is.GreaterThan(0), "zero spread: the refreshes dialled during the join");

            var busy = await JoinerAsync(spreadOptions);
            var busyStarted = d.Clock.Elapsed;
            await busy.Dht.BootstrapAsync([nodes[1].Node.Address], ct);
            // The busy joiner's own lookups, 10 s later (before its first slot), one for a key in each bucket it could refresh.
            await Task.Delay(TimeSpan.FromSeconds(10), d.Clock);
            var self = KadKey.FromPeer(busy.Node.Host.PeerId);
            var random = new Random(5);
            var keys = new List<byte[]>();
            for (var bucket = 0; bucket <= spreadOptions.MaxRefreshBucket; bucket++)
            {
                var key = new byte[KadKey.Length];
                do
                {
                    random.NextBytes(key);
                }
                while (self.CommonPrefixLength(KadKey.FromKey(key)) != bucket);
                keys.Add(key);
            }
            await Task.WhenAll(keys.Select(k => busy.Dht.GetClosestPeersAsync(k, ct)));
            Assert.That(Of(busy.Node, DialReason.DhtLookup), Is.GreaterThan(0), "its lookups dialled");

            var idle = await JoinerAsync(spreadOptions);
            var idleStarted = d.Clock.Elapsed;
            await idle.Dht.BootstrapAsync([nodes[0].Node.Address], ct);
            Assert.That(Of(idle.Node, DialReason.DhtBootstrap), Is.GreaterThan(0), "the self-lookup dialled at once");
            await idle.Dht.RunMaintenanceAsync(ct);
            var firstSlot = idleStarted + (spreadOptions.JoinRefreshSpread / (spreadOptions.MaxRefreshBucket + 1));
            await Task.Delay(firstSlot - d.Clock.Elapsed - TimeSpan.FromMilliseconds(1), d.Clock);
            await idle.Dht.RunMaintenanceAsync(ct);
            Assert.That(Of(idle.Node, DialReason.DhtRefresh) + Of(busy.Node, DialReason.DhtRefresh), Is.Zero,
                "nothing dialled for a refresh at the join, nor by maintenance before the first slot");

            await Task.Delay(busyStarted + spreadOptions.JoinRefreshSpread - d.Clock.Elapsed, d.Clock);
            await busy.Dht.RunMaintenanceAsync(ct);
            Assert.That(Of(busy.Node, DialReason.DhtRefresh), Is.Zero, "every bucket of the busy joiner was used since its join: no refresh dialled");
            await Task.Delay(idleStarted + spreadOptions.JoinRefreshSpread - d.Clock.Elapsed, d.Clock);
            await idle.Dht.RunMaintenanceAsync(ct);
            Assert.That(Of(idle.Node, DialReason.DhtRefresh), Is.GreaterThan(0), "by the end of the spread the idle joiner's buckets were refreshed");
            Assert.That(idle.Dht.RoutingTableSize, Is.GreaterThanOrEqualTo(spreadOptions.K));
        }
        finally
        {
            foreach (var (_, dht) in joiners)
            {
                await dht.DisposeAsync();
            }
            await DisposeAllAsync(nodes);
        }
    });

    [Test]
    public void Lookup_SkipsAPeerThatJustHungUpOnUs_KeepsItInTheTable_AndAsksItAgainAfterTheBackoff() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d, seed: 22);
        var options = new KademliaOptions { K = 3, RedialBackoff = TimeSpan.FromSeconds(30) };
        var nodes = await StartNetworkAsync(hosts, 16, ct, options);
        try
        {
            var seeker = nodes[5];
            Assert.That(seeker.Dht.RoutingTableSize, Is.GreaterThanOrEqualTo(2 * options.K), "a table big enough for the backoff to apply");
            var trimmer = nodes.First(n => n != seeker && seeker.Dht.RoutingTablePeers().Contains(n.Host.PeerId));
            await seeker.Host.ConnectAsync(trimmer.Node.Address, ct);
            await trimmer.Host.DisconnectAsync(seeker.Host.PeerId);   // full: it trims us
            await d.IdleAsync();

            // Its own id: the trimmer is the closest peer there is, so only the backoff keeps the lookup from asking it.
            var during = await seeker.Dht.GetClosestPeersAsync(trimmer.Host.PeerId.ToBytes(), ct);
            Assert.That(seeker.Host.ConnectionManager.IsConnected(trimmer.Host.PeerId), Is.False, "not dialled again");
            Assert.That(during, Does.Not.Contain(trimmer.Host.PeerId));
            Assert.That(during, Has.Count.EqualTo(options.K), "the lookup asked others instead");
            Assert.That(seeker.Dht.RoutingTablePeers(), Does.Contain(trimmer.Host.PeerId), "busy is not gone: it stays in the table");

            await Task.Delay(options.RedialBackoff, d.Clock);
            var after = await seeker.Dht.GetClosestPeersAsync(trimmer.Host.PeerId.ToBytes(), ct);
            Assert.That(after[0], Is.EqualTo(trimmer.Host.PeerId), "past the backoff it is asked again");
        }
        finally
        {
            await DisposeAllAsync(nodes);
        }
    });

    /// <summary>
    /// With <see cref="KademliaOptions.CloseAfterLookup"/> on, under a connection cap (fewer free than k), the join's lookups close the connections they dialled once each is
    /// over (reason <c>unused</c>), keeping the peers in the table; with room to spare they stay open. The bootstrap
    /// peer, connected before the lookups, is never closed as unused (the cap may still make room with it).
    /// </summary>
    [Test]
    public void JoinLookups_UnderACap_CloseTheConnectionsTheyDialled_KeepThePeersInTheTable_AndWithRoomKeepThem() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d, seed: 24);
        var nodes = await StartNetworkAsync(hosts, 16, ct);
        var unused = Array.IndexOf(ProtocolInstruments.CloseReasons.ToArray(), "unused");
        var scarceNode = await hosts.StartAsync(o => o with { MaxConnections = 12, HighWater = 0 });
        var roomyNode = await hosts.StartAsync();
        var options = new KademliaOptions { CloseAfterLookup = true };
        var scarce = new KademliaService(scarceNode.Host, options, scarceNode.Runtime, NullLoggerFactory.Instance);
        var roomy = new KademliaService(roomyNode.Host, options, roomyNode.Runtime, NullLoggerFactory.Instance);
        try
        {
            Assert.That(scarceNode.Host.ConnectionManager.FreeSlots, Is.LessThan(new KademliaOptions().K), "scarce: fewer free than k");
            await scarce.BootstrapAsync([nodes[0].Node.Address], ct);
            await roomy.BootstrapAsync([nodes[0].Node.Address], ct);
            await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);

            long Dialled(TestHosts.TestNode n) => n.Host.Instruments.DialTotals()[DialReason.IndexOf(DialReason.DhtBootstrap)]
                + n.Host.Instruments.DialTotals()[DialReason.IndexOf(DialReason.DhtRefresh)];
            Assert.That(Dialled(scarceNode), Is.GreaterThan(3), "the join dialled");
            Assert.That(scarceNode.Host.Instruments.ClosedTotals()[unused], Is.GreaterThan(0), "and closed what it dialled");
            Assert.That(scarceNode.Host.Connections.Where(c => c.Direction == Direction.Outbound).Select(c => c.RemotePeer),
                Has.All.EqualTo(nodes[0].Host.PeerId), "of its own dials only the bootstrap peer's may be open (it was dialled before the lookups)");
            Assert.That(scarce.RoutingTableSize, Is.GreaterThanOrEqualTo(10), "the peers stay in the table");

            Assert.That(roomyNode.Host.Instruments.ClosedTotals()[unused], Is.Zero, "room to spare: nothing closed");
            Assert.That(roomyNode.Host.Connections.Count(c => c.Direction == Direction.Outbound), Is.GreaterThan(3));
            Assert.That(roomy.RoutingTableSize, Is.GreaterThanOrEqualTo(10));
        }
        finally
        {
            await scarce.DisposeAsync();
            await roomy.DisposeAsync();
            await DisposeAllAsync(nodes);
        }
    });

    [Test]
    public void Lookup_APeerOurOwnLimitKeepsUsFrom_StaysInTheTable_UntilThreeFailuresInARow() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d, seed: 23);
        var nodes = await StartNetworkAsync(hosts, 12, ct);
        var seekerNode = await hosts.StartAsync(o => o with { MaxConnections = 3, HighWater = 0 });
        var seeker = new KademliaService(seekerNode.Host, new KademliaOptions(), seekerNode.Runtime, NullLoggerFactory.Instance);
        try
        {
            await seeker.BootstrapAsync([nodes[0].Node.Address], ct);
            await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);   // the join's closes have crossed the links
            // Full of connections it must keep: every further dial of its own fails for its own limit.
            foreach (var n in nodes.Where(n => !seekerNode.Host.ConnectionManager.IsConnected(n.Host.PeerId)))
            {
                if (seekerNode.Host.ConnectionManager.ConnectionCount >= 3)
                {
                    break;
                }
                await seekerNode.Host.ConnectAsync(n.Node.Address, ct);
            }
            foreach (var c in seekerNode.Host.Connections)
            {
                seekerNode.Host.ConnectionManager.Protect(c.RemotePeer, "test");
            }
            var target = seeker.RoutingTablePeers().First(p => !seekerNode.Host.ConnectionManager.IsConnected(p));

            await seeker.GetClosestPeersAsync(target.ToBytes(), ct);
            Assert.That(seekerNode.Host.ConnectionManager.IsConnected(target), Is.False);
            Assert.That(seeker.RoutingTablePeers(), Does.Contain(target), "busy is not gone: a failure for a connection limit keeps it");
            var lookups = 1;
            while (seeker.RoutingTablePeers().Contains(target) && lookups < 10)
            {
                await seeker.GetClosestPeersAsync(target.ToBytes(), ct);
                lookups++;
            }
            Assert.That(seeker.RoutingTablePeers(), Does.Not.Contain(target), "a peer that fails every time leaves");
            Assert.That(lookups, Is.LessThanOrEqualTo(KademliaService.MaxBusyStrikes), "after at most three failures in a row");
        }
        finally
        {
            await seeker.DisposeAsync();
            await DisposeAllAsync(nodes);
        }
    });

    [Test, Category("Adversarial")]
    public void APeerOnlyALookupNamed_IsKeptTwoMinutes_ThenForgotten_ThePeersWeMetStay() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d, seed: 27);
        var nodes = await StartNetworkAsync(hosts, 8, ct);
        try
        {
            var (server, asker) = (nodes[0], nodes[1]);
            // The server's table names a peer nobody can reach (an id it was told of; the address listens nowhere).
            var ghost = PrivateKey.FromRandom(new Random(99_027)).PeerId; // not a seed TestHosts derives its keys from
            var nowhere = Multiaddr.Parse("/memory/999999");
            server.Host.Peers.AddAddresses(ghost, [nowhere], AddressSource.Manual);
            server.Host.Peers.SetProtocols(ghost, [KademliaService.DefaultProtocolId]);
            await asker.Dht.FindPeerAsync(ghost, ct);
            Assert.That(asker.Host.Peers.GetAddresses(ghost), Is.EqualTo(new[] { nowhere }), "learned from the server's answer");
            server.Host.Peers.Remove(ghost); // no later answer names it with an address again

            await Task.Delay(TimeSpan.FromMinutes(2), d.Clock);
            Assert.That(asker.Host.Peers.GetAddresses(ghost), Is.Empty, "a lookup's answer is kept 2 min (go's TempAddrTTL), not 10");
            ((PeerStore)asker.Host.Peers).Sweep();
            Assert.That(asker.Host.Peers.Get(ghost), Is.Null, "and the peer is forgotten");
            Assert.That(asker.Host.Peers.GetAddresses(server.Host.PeerId), Is.Not.Empty, "the connected server keeps its addresses");
        }
        finally
        {
            await DisposeAllAsync(nodes);
        }
    });

    [Test]
    public void PutValue_PublicKeyRecord_IsReadableFromAnotherNode_InvalidRecordIsRefused() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d, seed: 22);
        var nodes = await StartNetworkAsync(hosts, 20, ct);
        try
        {
            var owner = nodes[4];
            var key = PublicKeyRecordValidator.KeyFor(owner.Host.PeerId);
            var stored = await owner.Dht.PutValueAsync(key, owner.Host.PublicKey.ToProtobuf(), ct);
            Assert.That(stored, Is.GreaterThanOrEqualTo(15));

            var value = await nodes[15].Dht.GetValueAsync(key, ct);
            Assert.That(value, Is.EqualTo(owner.Host.PublicKey.ToProtobuf()));

            await AsyncAssert.ThrowsAsync<RecordValidationException>(async () =>
                await owner.Dht.PutValueAsync(key, nodes[5].Host.PublicKey.ToProtobuf(), ct));
            await AsyncAssert.ThrowsAsync<RecordValidationException>(async () => await owner.Dht.PutValueAsync("/unknown/x"u8.ToArray(), [1], ct));
            Assert.That(await nodes[9].Dht.GetValueAsync(PublicKeyRecordValidator.KeyFor(nodes[6].Host.PeerId), ct), Is.Null);
        }
        finally
        {
            await DisposeAllAsync(nodes);
        }
    });

    [Test]
    public void Provide_ThenFindProviders_FromAnotherNode_ReturnsTheProviderWithAddresses() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d, seed: 23);
        var nodes = await StartNetworkAsync(hosts, 20, ct);
        try
        {
            var content = "potluck-task-wasm-hash"u8.ToArray();
            var announced = await nodes[2].Dht.ProvideAsync(content, ct);
            Assert.That(announced, Is.GreaterThanOrEqualTo(15));

            var providers = await nodes[18].Dht.FindProvidersAsync(content, 5, ct);
            Assert.That(providers.Select(p => p.Id), Is.EqualTo(new[] { nodes[2].Host.PeerId }));
            Assert.That(providers[0].Addresses, Does.Contain(nodes[2].Host.ListenAddresses[0]));
            Assert.That(await nodes[18].Dht.FindProvidersAsync("nothing"u8.ToArray(), 5, ct), Is.Empty);
        }
        finally
        {
            await DisposeAllAsync(nodes);
        }
    });

    [Test]
    public void Maintenance_ExpiresForeignRecords_AndTheOwnerRepublishesThem() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d, seed: 26);
        var nodes = await StartNetworkAsync(hosts, 8, ct);
        try
        {
            var owner = nodes[1];
            var key = PublicKeyRecordValidator.KeyFor(owner.Host.PeerId);
            await owner.Dht.PutValueAsync(key, owner.Host.PublicKey.ToProtobuf(), ct);
            var others = nodes.Where(n => n != owner).ToList();
            Assert.That(others.Select(n => n.Dht.StoredRecordCount), Has.All.EqualTo(1));

            await Task.Delay(new KademliaOptions().RecordTtl, d.Clock);
            foreach (var n in others)
            {
                await n.Dht.RunMaintenanceAsync(ct);
            }
            Assert.That(others.Select(n => n.Dht.StoredRecordCount), Has.All.EqualTo(0), "expired after the TTL");
            Assert.That(owner.Dht.StoredRecordCount, Is.EqualTo(1), "our own record never expires");

            await owner.Dht.RunMaintenanceAsync(ct);
            Assert.That(others.Select(n => n.Dht.StoredRecordCount), Has.All.EqualTo(1), "republished");
        }
        finally
        {
            await DisposeAllAsync(nodes);
        }
    });

    [Test]
    public void ClientModeNode_CanQuery_ButIsNeverAddedToRoutingTables() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d, seed: 24);
        var nodes = await StartNetworkAsync(hosts, 12, ct);
        var clientNode = await hosts.StartAsync();
        var client = new KademliaService(clientNode.Host, new KademliaOptions { Mode = KademliaMode.Client }, clientNode.Runtime, NullLoggerFactory.Instance);
        try
        {
            Assert.That(clientNode.Host.Protocols, Does.Not.Contain(KademliaService.DefaultProtocolId));
            Assert.That(await client.BootstrapAsync([nodes[0].Node.Address], ct), Is.GreaterThanOrEqualTo(10));
            var found = await client.FindPeerAsync(nodes[11].Host.PeerId, ct);
            Assert.That(found, Is.Not.Empty);
            var contacted = nodes.Where(n => n.Host.Connections.Any(c => c.RemotePeer == clientNode.Host.PeerId)).ToList();
            Assert.That(contacted, Is.Not.Empty);
            foreach (var n in contacted)
            {
                // Identify has told them what the client speaks: no DHT protocol, so no routing table entry.
                await n.Node.Identify.WhenIdentifiedAsync(clientNode.Host.PeerId, ct);
            }
            Assert.That(nodes.SelectMany(n => n.Dht.RoutingTablePeers()), Does.Not.Contain(clientNode.Host.PeerId));
        }
        finally
        {
            await client.DisposeAsync();
            await DisposeAllAsync(nodes);
        }
    });

    [Test]
    public void MalformedRequest_ResetsTheStream_AndTheServerKeepsAnswering() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d, seed: 25);
        var nodes = await StartNetworkAsync(hosts, 3, ct);
        try
        {
            var attacker = nodes[1].Host;
            var server = nodes[0].Host.PeerId;
            await using (var stream = await attacker.NewStreamAsync(server, [KademliaService.DefaultProtocolId], ct))
            {
                await LengthPrefixed.WriteAsync(stream.Output, new byte[] { 0xFF, 0xFF, 0xFF, 0x01, 0x02 }, ct);
                await AsyncAssert.ThrowsAsync<StreamResetException>(async () => await LengthPrefixed.ReadAsync(stream.Input, 1 << 20, "test", ct));
            }
            await using (var stream = await attacker.NewStreamAsync(server, [KademliaService.DefaultProtocolId], ct))
            {
                // A length prefix far over the limit: refused before any allocation.
                await stream.Output.WriteAsync(new byte[] { 0xFF, 0xFF, 0xFF, 0x7F }, ct);
                await AsyncAssert.ThrowsAsync<StreamResetException>(async () => await LengthPrefixed.ReadAsync(stream.Input, 1 << 20, "test", ct));
            }
            var found = await nodes[2].Dht.GetClosestPeersAsync("after"u8.ToArray(), ct);
            Assert.That(found, Does.Contain(server));
        }
        finally
        {
            await DisposeAllAsync(nodes);
        }
    });
}
