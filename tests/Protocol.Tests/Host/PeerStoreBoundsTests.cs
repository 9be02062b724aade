using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Host;

/// <summary>
/// The peer store forgets as go-libp2p's does: addresses by TTL (connected: kept; recently connected 10 min; discovered
/// 10 min; manual kept), a peer with nothing left to dial is forgotten, and beyond the cap the least recently seen
/// peer that is neither connected nor retained goes first. All on a virtual clock.
/// </summary>
public class PeerStoreBoundsTests
{
    private static readonly Random Keys = new(11);
    private static readonly PeerId Honest = PrivateKey.FromRandom(new Random(1)).PeerId;
    private static readonly PeerId Other = PrivateKey.FromRandom(new Random(2)).PeerId;

    private static Multiaddr Tcp(int i) => Multiaddr.Parse($"/ip4/10.0.{i / 250}.{i % 250 + 1}/tcp/4100");

    [Test]
    public void PeersSendingTheSameProtocolList_ShareOneArray_AnotherListGetsItsOwn()
    {
        // On main every peer's entry kept its own array of the same strings (~0.2 KiB a peer at 20 protocols).
        var store = new PeerStore(new PeerStoreOptions(), new VirtualClock());
        string[] List(params string[] protocols) => protocols.Select(p => new string(p.AsSpan())).ToArray();
        store.SetProtocols(Honest, List("/ipfs/id/1.0.0", "/meshsub/1.2.0", "/ipfs/kad/1.0.0"));
        store.SetProtocols(Other, List("/ipfs/id/1.0.0", "/meshsub/1.2.0", "/ipfs/kad/1.0.0"));
        var third = PrivateKey.FromRandom(new Random(3)).PeerId;
        store.SetProtocols(third, List("/ipfs/id/1.0.0", "/meshsub/1.2.0"));

        var honest = store.Get(Honest)!.Protocols;
        Assert.That(store.Get(Other)!.Protocols, Is.SameAs(honest));
        Assert.That(store.Get(third)!.Protocols, Is.EqualTo(new[] { "/ipfs/id/1.0.0", "/meshsub/1.2.0" }).And.Not.SameAs(honest));

        // A peer that changes its list gets the new one; the others keep theirs.
        store.SetProtocols(Other, List("/ipfs/id/1.0.0", "/meshsub/1.2.0"));
        Assert.That(store.Get(Other)!.Protocols, Is.SameAs(store.Get(third)!.Protocols));
        Assert.That(store.Get(Honest)!.Protocols, Is.EqualTo(new[] { "/ipfs/id/1.0.0", "/meshsub/1.2.0", "/ipfs/kad/1.0.0" }));
    }

    [Test]
    public void ConnectedPeer_AddressesDoNotExpire_AfterItsLastConnectionClosesTheyLastTenMinutes_ThenThePeerIsForgotten()
    {
        var clock = new VirtualClock();
        var store = new PeerStore(new PeerStoreOptions(), clock);
        store.Connected(Honest);
        store.Connected(Honest); // two connections
        store.AddAddresses(Honest, [Tcp(1)], AddressSource.Identify);
        store.SetProtocols(Honest, ["/ipfs/id/1.0.0"]);

        clock.Advance(TimeSpan.FromHours(2));
        store.Sweep();
        Assert.That(store.GetAddresses(Honest), Is.EqualTo(new[] { Tcp(1) }), "connected: kept however long");

        store.Disconnected(Honest);
        clock.Advance(TimeSpan.FromHours(1));
        store.Sweep();
        Assert.That(store.GetAddresses(Honest), Has.Count.EqualTo(1), "one connection is still open");

        store.Disconnected(Honest);
        clock.Advance(TimeSpan.FromMinutes(10) - TimeSpan.FromTicks(1));
        store.Sweep();
        Assert.That(store.GetAddresses(Honest), Has.Count.EqualTo(1), "recently connected: kept for 10 min");
        clock.Advance(TimeSpan.FromTicks(1));
        Assert.That(store.GetAddresses(Honest), Is.Empty, "expired at 10 min, never returned after");
        Assert.That(store.Get(Honest), Is.Not.Null, "forgotten only at the next sweep");
        store.Sweep();
        Assert.That(store.Get(Honest), Is.Null, "nothing left to dial it by: keys, protocols and agent go too");
        Assert.That(store.Forgotten.Expired, Is.EqualTo(1));
    }

    [Test]
    public void DiscoveredAddress_ExpiresAfterItsTtl_ManualOnesAreKept_AndAConnectionRefreshesThem()
    {
        var clock = new VirtualClock();
        var store = new PeerStore(new PeerStoreOptions { DiscoveredAddressTtl = TimeSpan.FromMinutes(2) }, clock);
        store.AddAddresses(Honest, [Tcp(1)], AddressSource.Manual);
        store.AddAddresses(Honest, [Tcp(2)], AddressSource.Discovery);
        store.AddAddresses(Other, [Tcp(3)], AddressSource.Discovery);

        clock.Advance(TimeSpan.FromMinutes(1));
        store.AddAddresses(Other, [Tcp(3)], AddressSource.Discovery); // heard again: the TTL starts again
        clock.Advance(TimeSpan.FromMinutes(1.5));
        store.Sweep();
        Assert.That(store.GetAddresses(Honest), Is.EqualTo(new[] { Tcp(1) }), "the manual address stays, the DHT's went at 2 min");
        Assert.That(store.GetAddresses(Other), Is.EqualTo(new[] { Tcp(3) }), "refreshed at 1 min, so live until 3 min");

        store.Connected(Other);
        clock.Advance(TimeSpan.FromHours(1));
        store.Sweep();
        Assert.That(store.GetAddresses(Other), Is.EqualTo(new[] { Tcp(3) }), "a connection keeps what it was dialled by");
        Assert.That(store.Get(Honest), Is.Not.Null, "a manual address is never forgotten");
    }

    [Test]
    public void RetainedPeer_KeepsItsAddressesPastTheTtl_WhileTheRetainerSaysSo()
    {
        var clock = new VirtualClock();
        var store = new PeerStore(new PeerStoreOptions(), clock);
        var inTable = new HashSet<PeerId> { Honest };
        store.Retain(inTable.Contains);
        store.AddAddresses(Honest, [Tcp(1)], AddressSource.Discovery);
        store.AddAddresses(Other, [Tcp(2)], AddressSource.Discovery);

        clock.Advance(TimeSpan.FromHours(1));
        store.Sweep();
        Assert.That(store.Get(Honest), Is.Not.Null, "in the routing table: kept");
        Assert.That(store.Get(Other), Is.Null);

        inTable.Clear();
        clock.Advance(PeerStore.SweepInterval);
        store.Sweep();
        Assert.That(store.Get(Honest), Is.Null, "out of the table and nothing live: forgotten");
    }

    [Test]
    public void LookupAndPeerExchangeAddresses_GoAfterTwoMinutes_OthersAfterTen_ConnectedAndRetainedPeersStay()
    {
        var clock = new VirtualClock();
        var store = new PeerStore(new PeerStoreOptions(), clock); // the defaults: 2, 2 and 10 min
        var fromLookup = PrivateKey.FromRandom(new Random(3)).PeerId;
        var fromExchange = PrivateKey.FromRandom(new Random(4)).PeerId;
        var fromMdns = PrivateKey.FromRandom(new Random(5)).PeerId;
        var retained = PrivateKey.FromRandom(new Random(6)).PeerId;
        store.Retain(p => p == retained);
        store.Connected(Honest);
        store.AddDiscoveredAddresses(Honest, [Tcp(1)], DiscoveryChannel.DhtLookup);
        store.AddDiscoveredAddresses(fromLookup, [Tcp(2)], DiscoveryChannel.DhtLookup);
        store.AddDiscoveredAddresses(fromExchange, [Tcp(3)], DiscoveryChannel.PeerExchange);
        store.AddDiscoveredAddresses(fromMdns, [Tcp(4)], DiscoveryChannel.Other);
        store.AddDiscoveredAddresses(retained, [Tcp(5)], DiscoveryChannel.DhtLookup);
        store.AddAddresses(Other, [Tcp(6)], AddressSource.Manual);

        clock.Advance(TimeSpan.FromMinutes(2) - TimeSpan.FromTicks(1));
        Assert.That(store.GetAddresses(fromLookup), Is.EqualTo(new[] { Tcp(2) }), "live until 2 min");
        Assert.That(store.GetAddresses(fromExchange), Is.EqualTo(new[] { Tcp(3) }));
        clock.Advance(TimeSpan.FromTicks(1));
        Assert.That(store.GetAddresses(fromLookup), Is.Empty, "a lookup's answer: go-libp2p-kad-dht's TempAddrTTL, 2 min");
        Assert.That(store.GetAddresses(fromExchange), Is.Empty, "a PX record: go-libp2p-pubsub's TempAddrTTL, 2 min");
        Assert.That(store.GetAddresses(fromMdns), Is.EqualTo(new[] { Tcp(4) }), "mDNS and the rest: still 10 min");

        // No explicit sweep: adding a peer sweeps (at most every 30 s, and 2 min have passed).
        store.AddDiscoveredAddresses(PrivateKey.FromRandom(new Random(7)).PeerId, [Tcp(7)], DiscoveryChannel.DhtLookup);
        Assert.That(store.Get(fromLookup), Is.Null, "forgotten by the sweep that adding a peer runs");
        Assert.That(store.Get(fromExchange), Is.Null);
        Assert.That(store.Get(retained), Is.Not.Null, "in the routing table: its entry stays");
        Assert.That(store.GetAddresses(Honest), Is.EqualTo(new[] { Tcp(1) }), "connected: a lookup's address does not expire");
        Assert.That(store.Forgotten.Expired, Is.EqualTo(2));

        clock.Advance(TimeSpan.FromMinutes(8));
        store.Sweep();
        Assert.That(store.Get(fromMdns), Is.Null, "10 min");
        Assert.That(store.GetAddresses(Other), Is.EqualTo(new[] { Tcp(6) }), "manual: kept");
        Assert.That(store.GetAddresses(Honest), Is.EqualTo(new[] { Tcp(1) }));
        Assert.That(store.Get(retained), Is.Not.Null);
    }

    [Test]
    public void ALookupAddress_NeverShortensALongerOne_AndDisconnectingStartsTheRecentlyConnectedTtl()
    {
        var clock = new VirtualClock();
        var store = new PeerStore(new PeerStoreOptions(), clock);
        store.Connected(Honest);
        store.AddAddresses(Honest, [Tcp(1)], AddressSource.Identify);
        store.Disconnected(Honest); // Tcp(1) until 10 min
        store.AddDiscoveredAddresses(Honest, [Tcp(1), Tcp(2)], DiscoveryChannel.DhtLookup);

        clock.Advance(TimeSpan.FromMinutes(5));
        Assert.That(store.GetAddresses(Honest), Is.EqualTo(new[] { Tcp(1) }), "the lookup's copy of Tcp(1) kept its 10 min; Tcp(2) went at 2");
        clock.Advance(TimeSpan.FromMinutes(5));
        store.Sweep();
        Assert.That(store.Get(Honest), Is.Null);
    }

    [Test]
    public void PerChannelTtls_AreOptions_ValidatedAndHonoured()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new PeerStore(new PeerStoreOptions { LookupAddressTtl = TimeSpan.FromSeconds(-1) }, new VirtualClock()));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PeerStore(new PeerStoreOptions { PeerExchangeAddressTtl = TimeSpan.FromSeconds(-1) }, new VirtualClock()));
        var clock = new VirtualClock();
        var store = new PeerStore(new PeerStoreOptions { LookupAddressTtl = TimeSpan.FromSeconds(30), PeerExchangeAddressTtl = TimeSpan.FromMinutes(5) }, clock);
        store.AddDiscoveredAddresses(Honest, [Tcp(1)], DiscoveryChannel.DhtLookup);
        store.AddDiscoveredAddresses(Other, [Tcp(2)], DiscoveryChannel.PeerExchange);
        clock.Advance(TimeSpan.FromSeconds(30));
        Assert.That(store.GetAddresses(Honest), Is.Empty);
        clock.Advance(TimeSpan.FromMinutes(4.5) - TimeSpan.FromTicks(1));
        Assert.That(store.GetAddresses(Other), Is.EqualTo(new[] { Tcp(2) }));
        clock.Advance(TimeSpan.FromTicks(1));
        Assert.That(store.GetAddresses(Other), Is.Empty);
    }

    [Test, Category("Adversarial")]
    public void AFloodOfLookupAnswersNamingFreshIds_LeavesTheStoreAtRateTimesTtl_AndTheHonestPeersIntact()
    {
        // Lookup answers name 10 fresh ids a second for 30 virtual minutes (18,000 peers, e.g. a Sybil DHT server's
        // closer peers). Each lives 2 min, and the sweep that adding them runs forgets the expired at most 30 s late:
        // at most 10/s × (120 + 30) s = 1,500 at once, far under the 10,000 cap, so nothing is evicted, only expired.
        const int PerSecond = 10;
        var sybils = new Random(12);
        var clock = new VirtualClock();
        var store = new PeerStore(new PeerStoreOptions(), clock);
        var retained = PrivateKey.FromRandom(new Random(8)).PeerId;
        store.Retain(p => p == retained);
        store.Connected(Honest);
        store.AddAddresses(Honest, [Tcp(1)], AddressSource.Identify);
        store.AddDiscoveredAddresses(retained, [Tcp(2)], DiscoveryChannel.DhtLookup);

        var maxSeen = 0;
        for (var s = 0; s < 30 * 60; s++)
        {
            for (var i = 0; i < PerSecond; i++)
            {
                store.AddDiscoveredAddresses(Sybils.Mint(sybils), [Tcp(i)], DiscoveryChannel.DhtLookup);
                maxSeen = Math.Max(maxSeen, store.Count);
            }
            clock.Advance(TimeSpan.FromSeconds(1));
        }

        var bound = PerSecond * (120 + (int)PeerStore.SweepInterval.TotalSeconds) + 2; // the default TTL, 2 min (10 before: ~6,300)
        Assert.That(maxSeen, Is.LessThanOrEqualTo(bound), "rate × (TTL + sweep interval), plus the two honest peers");
        Assert.That(maxSeen, Is.GreaterThan(PerSecond * 120), "the TTL, not something else, is what bounds it");
        Assert.That(store.Forgotten.Evicted, Is.Zero, "bounded by the TTL, never by the cap");
        Assert.That(store.Forgotten.Expired, Is.GreaterThan(30 * 60 * PerSecond - bound));
        Assert.That(store.GetAddresses(Honest), Is.EqualTo(new[] { Tcp(1) }), "the connected peer is untouched");
        Assert.That(store.Get(retained), Is.Not.Null, "the routing table's peer is kept");
    }

    [Test, Category("Adversarial")]
    public void TenThousandMintedIdentities_LeaveTheStoreAtItsCap_AndConnectedAndRetainedPeersIntact()
    {
        var clock = new VirtualClock();
        var store = new PeerStore(new PeerStoreOptions { MaxPeers = 500 }, clock);
        var connected = Enumerable.Range(0, 20).Select(_ => PrivateKey.FromRandom(Keys)).ToArray();
        var inTable = Enumerable.Range(0, 20).Select(_ => Sybils.Mint(Keys)).ToHashSet();
        store.Retain(inTable.Contains);
        foreach (var k in connected)
        {
            store.Connected(k.PeerId);
            store.SetPublicKey(k.PeerId, k.PublicKey);
            store.AddAddresses(k.PeerId, [Tcp(1)], AddressSource.Identify);
            store.SetProtocols(k.PeerId, ["/meshsub/1.2.0", "/potluck/kad/1.0.0"]);
        }
        foreach (var p in inTable)
        {
            store.AddAddresses(p, [Tcp(2)], AddressSource.Discovery);
        }

        // A stranger mints 10,000 identities: each connects, identifies with a long list of odd protocols and agent
        // strings, advertises addresses, and goes.
        var maxSeen = 0;
        for (var i = 0; i < 10_000; i++)
        {
            var key = Sybils.Key(Keys);
            var id = PeerId.FromPublicKey(key);
            store.Connected(id);
            store.SetPublicKey(id, key);
            store.AddAddresses(id, Enumerable.Range(0, 40).Select(Tcp), AddressSource.Identify);
            store.SetProtocols(id, Enumerable.Range(0, 200).Select(j => $"/sybil/{i}/{j}"));
            store.SetAgent(id, new string('a', 10_000), $"v{i}");
            store.Disconnected(id);
            maxSeen = Math.Max(maxSeen, store.Count);
            clock.Advance(TimeSpan.FromMilliseconds(10));
        }

        Assert.That(maxSeen, Is.LessThanOrEqualTo(500 + 20 + 1), "the cap (plus connected peers, which are never evicted)");
        Assert.That(store.Forgotten.Evicted, Is.GreaterThan(9_000));
        foreach (var k in connected)
        {
            var info = store.Get(k.PeerId)!;
            Assert.That(info, Is.Not.Null);
            Assert.That(info.PublicKey, Is.EqualTo(k.PublicKey));
            Assert.That(info.Addresses, Is.EqualTo(new[] { Tcp(1) }));
            Assert.That(info.Protocols, Is.EqualTo(new[] { "/meshsub/1.2.0", "/potluck/kad/1.0.0" }));
        }
        Assert.That(inTable.All(p => store.GetAddresses(p).SequenceEqual([Tcp(2)])), "the routing table's peers keep their addresses");
        var sample = store.Snapshot().First(p => p.AgentVersion is not null);
        Assert.That(sample.Addresses, Has.Count.LessThanOrEqualTo(32));
        Assert.That(sample.Protocols, Has.Count.LessThanOrEqualTo(128));
        Assert.That(sample.AgentVersion!.Length, Is.LessThanOrEqualTo(256));
    }

    [Test, Category("Adversarial")]
    public void Host_StrangersThatConnectAndGo_AreForgottenTenMinutesAfter_TheConnectedPeerIsKept() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d);
        var server = await hosts.StartAsync(o => o with { IdleTimeout = TimeSpan.FromHours(1) });
        var honest = await hosts.StartAsync(o => o with { IdleTimeout = TimeSpan.FromHours(1) });
        await honest.Host.ConnectAsync(server.Address, ct);
        await server.Identify.WhenIdentifiedAsync(honest.Host.PeerId, ct);
        var strangers = new List<PeerId>();
        for (var i = 0; i < 12; i++)
        {
            var stranger = await hosts.StartAsync();
            await stranger.Host.ConnectAsync(server.Address, ct);
            await server.Identify.WhenIdentifiedAsync(stranger.Host.PeerId, ct);
            await stranger.Host.DisconnectAsync(server.Host.PeerId);
            strangers.Add(stranger.Host.PeerId);
        }
        await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
        var store = (PeerStore)server.Host.Peers;
        Assert.That(store.Count, Is.EqualTo(13), "all met");
        Assert.That(strangers.All(p => store.GetAddresses(p).Count > 0), "recently connected: addresses kept");

        await Task.Delay(TimeSpan.FromMinutes(10), d.Clock);
        store.Sweep();

        Assert.That(server.Host.ConnectionManager.IsConnected(honest.Host.PeerId), Is.True);
        Assert.That(strangers.All(p => store.Get(p) is null), "ten minutes after they went: forgotten");
        Assert.That(store.Get(honest.Host.PeerId)?.Protocols, Is.Not.Empty, "the connected peer is kept whole");
        Assert.That(store.GetPublicKey(honest.Host.PeerId), Is.EqualTo(honest.Host.PublicKey));
        Assert.That(store.Forgotten.Expired, Is.EqualTo(12));
    });
}
