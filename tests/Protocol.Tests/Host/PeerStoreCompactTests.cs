using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Host;

/// <summary>
/// The peer store's compact form (one object per peer, addresses as their binary multiaddrs inline, protocol lists shared
/// between peers that report the same one) reads back exactly what the store said before: the same addresses in the
/// same order, the same cap victim, the same protocols. All on a virtual clock.
/// </summary>
public class PeerStoreCompactTests
{
    private static readonly PeerId Peer = PrivateKey.FromRandom(new Random(21)).PeerId;

    private static Multiaddr Tcp(int i) => Multiaddr.Parse($"/ip4/10.1.0.{i}/tcp/4001");

    [Test]
    public void Addresses_ReadBackTheirOwnWordFirst_ThenTheMostRecentlySeen_WithoutAPeerSuffix_AndEqualButNotTheSameObjects()
    {
        var clock = new VirtualClock();
        var store = new PeerStore(new PeerStoreOptions(), clock);
        store.AddDiscoveredAddresses(Peer, [Tcp(1)], DiscoveryChannel.DhtLookup);
        clock.Advance(TimeSpan.FromSeconds(1));
        store.AddAddresses(Peer, [Tcp(2)], AddressSource.Identify);
        clock.Advance(TimeSpan.FromSeconds(1));
        store.AddDiscoveredAddresses(Peer, [Tcp(3)], DiscoveryChannel.Other);
        clock.Advance(TimeSpan.FromSeconds(1));
        store.AddAddresses(Peer, [Tcp(4).WithPeer(Peer)], AddressSource.Identify); // stored bare
        clock.Advance(TimeSpan.FromSeconds(1));
        store.AddDiscoveredAddresses(Peer, [Tcp(1)], DiscoveryChannel.Other);      // seen again: most recent discovery

        var read = store.GetAddresses(Peer);
        Assert.That(read, Is.EqualTo(new[] { Tcp(4), Tcp(2), Tcp(1), Tcp(3) }));
        Assert.That(store.Get(Peer)!.Addresses, Is.EqualTo(read));
        Assert.That(store.GetAddresses(Peer)[0], Is.Not.SameAs(read[0]), "each read makes its own multiaddrs from the bytes");

        store.RemoveAddress(Peer, Tcp(2).WithPeer(Peer));
        store.ReplaceSelfReportedAddresses(Peer, [Tcp(5)]);
        Assert.That(store.GetAddresses(Peer), Is.EqualTo(new[] { Tcp(5), Tcp(1), Tcp(3) }), "identify's own list replaced, third parties' kept");
    }

    [Test]
    public void APeerWithOneAddress_HoldsItInline_AndGoingToSeveralAndBackKeepsEveryAddressItsOrderAndItsTimes()
    {
        var clock = new VirtualClock();
        var store = new PeerStore(new PeerStoreOptions(), clock);
        var others = Enumerable.Range(0, 100).Select(i => PrivateKey.FromRandom(new Random(1_000 + i)).PeerId).ToArray();
        for (var i = 0; i < others.Length; i++)
        {
            store.AddAddresses(others[i], [Tcp(100 + i)], AddressSource.Identify);
        }
        Assert.That(store.PeersWithAddressArrays, Is.Zero, "a hundred one-address peers, no array among them");

        store.AddDiscoveredAddresses(Peer, [Tcp(1)], DiscoveryChannel.DhtLookup);   // expires at 2 min
        clock.Advance(TimeSpan.FromSeconds(1));
        store.AddAddresses(Peer, [Tcp(2)], AddressSource.Identify);                 // 10 min
        clock.Advance(TimeSpan.FromSeconds(1));
        store.AddDiscoveredAddresses(Peer, [Tcp(3)], DiscoveryChannel.Other);       // 10 min
        Assert.That(store.PeersWithAddressArrays, Is.EqualTo(1));
        Assert.That(store.GetAddresses(Peer), Is.EqualTo(new[] { Tcp(2), Tcp(3), Tcp(1) }));

        store.RemoveAddress(Peer, Tcp(2));
        store.RemoveAddress(Peer, Tcp(3));
        Assert.That(store.PeersWithAddressArrays, Is.Zero, "back to one: inline again");
        Assert.That(store.GetAddresses(Peer), Is.EqualTo(new[] { Tcp(1) }));
        clock.Advance(TimeSpan.FromMinutes(2));
        Assert.That(store.GetAddresses(Peer), Is.Empty, "the inline address kept its expiry through the moves");

        store.Connected(Peer);                                                      // addresses stop expiring while connected
        store.AddAddresses(Peer, [Tcp(4)], AddressSource.Identify);
        store.RemoveAddress(Peer, Tcp(1));
        store.RemoveAddress(Peer, Tcp(4));
        Assert.That(store.GetAddresses(Peer), Is.Empty);
        store.AddAddresses(Peer, [Tcp(5)], AddressSource.Identify);
        Assert.That(store.GetAddresses(Peer), Is.EqualTo(new[] { Tcp(5) }), "none, then one again");
        Assert.That(others.Select((p, i) => store.GetAddresses(p).Single().Equals(Tcp(100 + i))), Is.All.True);
    }

    [Test]
    public void AtTheAddressCap_AnExpiredAddressGoesFirst_ThenTheWeakestSource_ThenTheLeastRecentlySeen()
    {
        var clock = new VirtualClock();
        var store = new PeerStore(new PeerStoreOptions { MaxAddressesPerPeer = 3 }, clock);
        store.AddAddresses(Peer, [Tcp(1)], AddressSource.Manual);                 // kept
        store.AddDiscoveredAddresses(Peer, [Tcp(2)], DiscoveryChannel.DhtLookup); // 2 min
        store.AddAddresses(Peer, [Tcp(3)], AddressSource.Identify);               // 10 min
        clock.Advance(TimeSpan.FromMinutes(3));                                   // Tcp(2) expired
        store.AddAddresses(Peer, [Tcp(4)], AddressSource.Identify);
        Assert.That(store.GetAddresses(Peer), Is.EquivalentTo(new[] { Tcp(1), Tcp(3), Tcp(4) }), "the expired one made way");

        clock.Advance(TimeSpan.FromSeconds(1));
        store.AddDiscoveredAddresses(Peer, [Tcp(5)], DiscoveryChannel.Other);
        Assert.That(store.GetAddresses(Peer), Is.EquivalentTo(new[] { Tcp(1), Tcp(3), Tcp(4) }),
            "nothing expired: the weakest source (the newcomer, a third party's) goes");

        clock.Advance(TimeSpan.FromSeconds(1));
        store.AddAddresses(Peer, [Tcp(6)], AddressSource.Identify);
        Assert.That(store.GetAddresses(Peer), Is.EquivalentTo(new[] { Tcp(1), Tcp(4), Tcp(6) }),
            "among identify's, the least recently seen (Tcp(3)) goes; the manual one outranks them");
    }

    [Test]
    public void PeersReportingTheSameProtocols_ShareOneList_AndLatencyAndLastSeenReadBack()
    {
        var clock = new VirtualClock();
        var store = new PeerStore(new PeerStoreOptions(), clock);
        string[] protocols = ["/meshsub/1.2.0", "/ipfs/id/1.0.0", "/ipfs/kad/1.0.0"];
        var peers = Enumerable.Range(0, 50).Select(i => PrivateKey.FromRandom(new Random(100 + i)).PeerId).ToArray();
        foreach (var p in peers)
        {
            store.SetProtocols(p, protocols.Select(x => new string(x)).Append("/ipfs/id/1.0.0")); // own strings, a duplicate
        }
        var first = store.Get(peers[0])!.Protocols;
        Assert.That(first, Is.EqualTo(protocols));
        Assert.That(peers.Select(p => store.Get(p)!.Protocols), Has.All.SameAs(first), "one list for all fifty");
        Assert.That(store.InternedProtocolLists, Is.EqualTo(1));
        Assert.That(store.SupportsProtocol(peers[7], "/ipfs/kad/1.0.0"), Is.True);
        Assert.That(store.SupportsProtocol(peers[7], "/other/1"), Is.False);

        store.RecordLatency(peers[0], TimeSpan.FromMilliseconds(100));
        store.RecordLatency(peers[0], TimeSpan.FromMilliseconds(200));
        clock.Advance(TimeSpan.FromSeconds(5));
        store.MarkSeen(peers[0]);
        var info = store.Get(peers[0])!;
        Assert.That(info.Latency, Is.EqualTo(TimeSpan.FromMilliseconds(120)));
        Assert.That(info.LastSeen, Is.EqualTo(clock.GetUtcNow()));
        Assert.That(store.Get(peers[1])!.Latency, Is.Null);
    }

    [Test]
    [Category("Adversarial")]
    public void AFloodOfPeersEachWithItsOwnProtocolList_HoldsTheSharedListsAtTheirCap_AndEveryPeerReadsItsOwn()
    {
        var clock = new VirtualClock();
        var store = new PeerStore(new PeerStoreOptions(), clock);
        var honest = PrivateKey.FromRandom(new Random(7)).PeerId;
        var honestTwin = PrivateKey.FromRandom(new Random(8)).PeerId;
        store.SetProtocols(honest, ["/meshsub/1.2.0", "/ipfs/id/1.0.0"]);
        var rng = new Random(3);
        var sybils = new List<PeerId>();
        for (var i = 0; i < 2_000; i++)
        {
            var id = PrivateKey.FromRandom(rng).PeerId;
            sybils.Add(id);
            store.SetProtocols(id, [$"/junk/{i}", "/meshsub/1.2.0"]);
        }
        store.SetProtocols(honestTwin, ["/meshsub/1.2.0", "/ipfs/id/1.0.0"]);

        Assert.That(store.InternedProtocolLists, Is.EqualTo(PeerStore.MaxInternedProtocolLists), "the shared lists stop at the cap");
        Assert.That(store.Get(honestTwin)!.Protocols, Is.SameAs(store.Get(honest)!.Protocols), "a list met before the flood is still shared");
        Assert.That(store.SupportsProtocol(honest, "/ipfs/id/1.0.0"), Is.True);
        Assert.That(store.SupportsProtocol(sybils[1_999], "/junk/1999"), Is.True, "a list past the cap is the peer's own, and right");
        Assert.That(store.SupportsProtocol(sybils[1_999], "/junk/1998"), Is.False);
    }

    /// <summary>
    /// An Ed25519 peer's key is read back from its identity-hashed id: the store keeps a mark, not the key (each key
    /// decoded from a handshake or identify is its own object of ~116 bytes, ~226 before the key's own cut).
    /// </summary>
    [Test]
    public void Ed25519Keys_AreReadBackFromThePeerIds_NotHeld()
    {
        const int count = 5_000;
        var random = new Random(7);
        var ids = new PeerId[count];
        var encoded = new byte[count][];
        var store = new PeerStore(new PeerStoreOptions(), new VirtualClock());
        for (var i = 0; i < count; i++)
        {
            var key = PrivateKey.FromRandom(random);
            (ids[i], encoded[i]) = (key.PeerId, key.PublicKey.ToProtobuf());
            store.MarkSeen(ids[i]);
        }
        var before = GC.GetTotalMemory(forceFullCollection: true);
        for (var i = 0; i < count; i++)
        {
            Assert.That(store.SetPublicKey(ids[i], PublicKey.FromProtobuf(encoded[i])), Is.True);
        }
        var after = GC.GetTotalMemory(forceFullCollection: true);
        var perPeer = (after - before) / (double)count;
        GC.KeepAlive(store);
        TestContext.Out.WriteLine($"{perPeer:F1} bytes per peer's key");
        Assert.That(perPeer, Is.LessThan(64), $"{perPeer:F1} bytes held per peer's key");
        Assert.Multiple(() =>
        {
            Assert.That(store.GetPublicKey(ids[17]), Is.EqualTo(PublicKey.FromProtobuf(encoded[17])));
            Assert.That(store.Get(ids[17])!.PublicKey, Is.EqualTo(PublicKey.FromProtobuf(encoded[17])));
            Assert.That(store.GetPublicKey(ids[17])!.ToPeerId(), Is.EqualTo(ids[17]));
        });
    }

    [TestCase(KeyType.Ed25519)]
    [TestCase(KeyType.Secp256k1)]
    [TestCase(KeyType.Rsa)]
    public void APeersKey_ReadsBackAsSet_AndAMismatchIsRefused(KeyType type)
    {
        var store = new PeerStore(new PeerStoreOptions(), new VirtualClock());
        var key = PrivateKey.Generate(type);
        var other = PrivateKey.Generate(type);
        var peer = key.PeerId;
        Assert.Multiple(() =>
        {
            Assert.That(store.GetPublicKey(peer), Is.Null, "unknown before it is set");
            Assert.That(store.SetPublicKey(peer, other.PublicKey), Is.False, "another peer's key");
            Assert.That(store.GetPublicKey(peer), Is.Null, "a refused key is not kept");
            Assert.That(store.SetPublicKey(peer, key.PublicKey), Is.True);
            Assert.That(store.GetPublicKey(peer), Is.EqualTo(key.PublicKey));
            Assert.That(store.Get(peer)!.PublicKey, Is.EqualTo(key.PublicKey));
            Assert.That(store.GetPublicKey(peer)!.Verify("m"u8, key.Sign("m"u8)), Is.True);
        });
    }

    [Test]
    public void APeerOnlyALookupNamed_IsKeptAsAddressesOnly_UntilWeLearnMore_InItsPlace_AndReadsBackTheSame()
    {
        var clock = new VirtualClock();
        var store = new PeerStore(new PeerStoreOptions(), clock);
        var keys = Enumerable.Range(0, 100).Select(i => PrivateKey.FromRandom(new Random(2_000 + i))).ToArray();
        var peers = keys.Select(k => k.PeerId).ToArray();
        for (var i = 0; i < peers.Length; i++)
        {
            store.AddDiscoveredAddresses(peers[i], [Tcp(100 + i)], DiscoveryChannel.DhtLookup);   // 2 min unless connected
        }
        Assert.That(store.EntryKinds, Is.EqualTo((100, 0)), "a hundred peers lookups named: addresses and a time each");

        for (var i = 0; i < 10; i++)
        {
            store.Connected(peers[i]);
        }
        for (var i = 10; i < 15; i++)
        {
            Assert.That(store.SetPublicKey(peers[i], keys[i].PublicKey), Is.True);
        }
        for (var i = 15; i < 20; i++)
        {
            store.SetProtocols(peers[i], ["/ipfs/kad/1.0.0", "/meshsub/1.2.0"]);
        }
        store.SetAgent(peers[20], "potluck/1", "ipfs/0.1.0");
        store.RecordLatency(peers[21], TimeSpan.FromMilliseconds(40));
        store.MarkSeen(peers[22]);                                             // a time: still addresses only
        store.ReplaceSelfReportedAddresses(peers[23], [Tcp(250)]);             // addresses: still addresses only
        Assert.Multiple(() =>
        {
            Assert.That(store.EntryKinds, Is.EqualTo((78, 22)), "a connection, a key, protocols, an agent or a latency make a full entry");
            Assert.That(store.Snapshot().Select(p => p.Id), Is.EqualTo(peers), "each peer keeps its place in the table");
            Assert.That(store.GetPublicKey(peers[12]), Is.EqualTo(keys[12].PublicKey));
            Assert.That(store.GetPublicKey(peers[30]), Is.Null);
            Assert.That(store.SupportsProtocol(peers[16], "/meshsub/1.2.0"), Is.True);
            Assert.That(store.SupportsProtocol(peers[30], "/meshsub/1.2.0"), Is.False);
            Assert.That(store.Get(peers[20])!.AgentVersion, Is.EqualTo("potluck/1"));
            Assert.That(store.Get(peers[21])!.Latency, Is.EqualTo(TimeSpan.FromMilliseconds(40)));
            var slim = store.Get(peers[30])!;
            Assert.That((slim.Addresses, slim.Protocols, slim.PublicKey, slim.AgentVersion, slim.ProtocolVersion, slim.Latency, slim.LastSeen),
                Is.EqualTo((new[] { Tcp(130) }, Array.Empty<string>(), (PublicKey?)null, (string?)null, (string?)null, (TimeSpan?)null, clock.GetUtcNow())),
                "an addresses-only peer reads back as a new entry with its address");
            Assert.That(store.GetAddresses(peers[23]), Is.EqualTo(new[] { Tcp(250), Tcp(123) }));
            Assert.That(peers.Select((p, i) => store.GetAddresses(p).Contains(Tcp(100 + i))), Is.All.True, "every address kept through the change");
        });

        store.Disconnected(peers[0]);
        clock.Advance(TimeSpan.FromMinutes(2) + TimeSpan.FromSeconds(1));
        store.Sweep();
        // The lookups' 2 minutes are over: those known by their addresses alone are forgotten, as are the ones whose key,
        // protocols, agent or latency we learned without connecting (nothing kept them), but not the one that reported an
        // address itself (10 minutes). Connected peers stay, and the one that disconnected keeps its addresses 10 minutes.
        Assert.Multiple(() =>
        {
            Assert.That(store.EntryKinds, Is.EqualTo((1, 10)));
            Assert.That(store.Forgotten, Is.EqualTo((89L, 0L)));
            Assert.That(store.GetAddresses(peers[0]), Is.EqualTo(new[] { Tcp(100) }));
        });
    }
}
