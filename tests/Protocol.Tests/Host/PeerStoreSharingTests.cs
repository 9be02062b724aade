using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Host;

/// <summary>
/// Peer stores of the nodes of one process that share immutable values (a simulated mesh's): the same peer's id and
/// address, decoded by two nodes apart, are kept once; a flood of fresh ids and addresses leaves the shared table bounded
/// by what the stores hold (their own caps and TTLs).
/// </summary>
public class PeerStoreSharingTests
{
    [Test]
    public void TwoStores_LearningTheSamePeerAndAddressApart_KeepOneIdAndOneAddress()
    {
        var shared = SharedValues.Create();
        var clock = new VirtualClock();
        var a = new PeerStore(new PeerStoreOptions(), clock, shared);
        var b = new PeerStore(new PeerStoreOptions(), clock, shared);
        var key = PrivateKey.FromRandom(new Random(7));
        var idBytes = key.PeerId.ToBytes();
        Assert.That(PeerId.TryFromBytes(idBytes, out var inA));
        Assert.That(PeerId.TryFromBytes(idBytes, out var inB));

        a.AddAddresses(inA, [Multiaddr.Parse("/ip4/10.0.0.9/tcp/4001")], AddressSource.Identify);
        b.AddAddresses(inB, [Multiaddr.Parse("/ip4/10.0.0.9/tcp/4001/p2p/" + key.PeerId)], AddressSource.Discovery);

        Assert.That(shared.PeerIdCount, Is.EqualTo(1), "one id for both stores");
        Assert.That(shared.AddressBytesCount, Is.EqualTo(1), "one binary address for both stores");
        Assert.That(b.GetAddresses(key.PeerId), Is.EqualTo(new[] { Multiaddr.Parse("/ip4/10.0.0.9/tcp/4001") }));
        Assert.That(a.GetAddresses(key.PeerId), Is.EqualTo(b.GetAddresses(key.PeerId)));
    }

    [Test]
    public void AStoreWithoutSharing_KeepsNothingInATable()
    {
        var shared = SharedValues.Create();
        var store = new PeerStore(new PeerStoreOptions(), new VirtualClock());
        store.AddAddresses(PrivateKey.FromRandom(new Random(7)).PeerId, [Multiaddr.Parse("/ip4/10.0.0.9/tcp/4001")], AddressSource.Identify);
        Assert.That(shared.PeerIdCount + shared.AddressBytesCount, Is.Zero);
    }

    /// <summary>
    /// A remote names 10 fresh ids with a fresh address each every virtual second for 30 minutes (18,000 ids) to two nodes;
    /// their stores forget lookup answers after 2 minutes. The shared table never passes its first sweep's size and, once
    /// collected, holds exactly the ids and addresses the stores still hold.
    /// </summary>
    [Test]
    [Category("Adversarial")]
    public void AFloodOfFreshIdsAndAddresses_LeavesTheTableBoundedByWhatTheStoresHold()
    {
        var shared = SharedValues.Create();
        var clock = new VirtualClock();
        var stores = new[] { new PeerStore(new PeerStoreOptions(), clock, shared), new PeerStore(new PeerStoreOptions(), clock, shared) };
        var random = new Random(5);
        var most = 0;
        const int rate = 10;
        for (var second = 0; second < 30 * 60; second++)
        {
            for (var i = 0; i < rate; i++)
            {
                var peer = PrivateKey.FromRandom(random).PeerId;
                var address = Multiaddr.Parse($"/ip4/10.{random.Next(256)}.{random.Next(256)}.{random.Next(256)}/tcp/{random.Next(1, 65536)}");
                foreach (var store in stores)
                {
                    store.AddDiscoveredAddresses(peer, [address], DiscoveryChannel.DhtLookup);
                }
            }
            clock.Advance(TimeSpan.FromSeconds(1));
            if (second % 10 == 9)
            {
                GC.Collect();
            }
            most = Math.Max(most, Math.Max(shared.PeerIdCount, shared.AddressBytesCount));
        }
        foreach (var store in stores)
        {
            store.Sweep();
        }
        var held = stores[0].Count;
        Assert.That(held, Is.InRange(2 * 60 * rate - rate, 2 * 60 * rate + rate), "two minutes of lookup answers");
        Assert.That(stores[1].Count, Is.EqualTo(held));
        // A store forgets on its 30 s sweep: at most 150 s of answers held, and 10 s of them not yet collected at a table sweep.
        Assert.That(most, Is.LessThanOrEqualTo(Math.Max(WeakShareTable<byte[]>.MinSweepAt, 2 * (150 + 10) * rate)), "bounded by what the stores hold");

        GC.Collect();
        shared.Sweep();
        Assert.That(shared.PeerIdCount, Is.EqualTo(held), "exactly the ids the stores hold");
        Assert.That(shared.AddressBytesCount, Is.EqualTo(held), "exactly the addresses the stores hold");
        GC.KeepAlive(stores);
    }
}
