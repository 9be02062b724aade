using Potluck.Protocol.Kademlia;

namespace Potluck.Protocol.Tests.Kademlia;

public class RoutingTableTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    [Test]
    public void AddOrRefresh_PlacesEachPeerInTheBucketOfItsCommonPrefixLength()
    {
        var peers = KadTestSupport.RandomPeers(300, 1);
        var table = new RoutingTable(peers[0], bucketSize: 1000);
        foreach (var p in peers.Skip(1))
        {
            Assert.That(table.AddOrRefresh(p).Kind, Is.EqualTo(RoutingUpdateKind.Added));
        }
        foreach (var p in peers.Skip(1))
        {
            var cpl = table.LocalKey.CommonPrefixLength(KadKey.FromPeer(p));
            Assert.That(table.PeersInBucket(cpl), Does.Contain(p));
        }
        Assert.That(table.Count, Is.EqualTo(299));
        Assert.That(table.PeersInBucket(0).Count, Is.InRange(110, 190), "about half of random peers differ in the first bit");
    }

    [Test]
    public void Buckets_AreMadeOnUse_EveryIndexReadsTheSame_AndOutOfRangeIsRefused()
    {
        var peers = KadTestSupport.RandomPeers(300, 1);
        var table = new RoutingTable(peers[0], bucketSize: 1000);
        Assert.That(table.BucketPlaces, Is.Zero, "an empty table holds no bucket array");
        Assert.That(table.CountInBucket(255), Is.Zero);
        Assert.That(table.PeersInBucket(200), Is.Empty);
        Assert.That(table.ReplacementsInBucket(100), Is.Empty);
        Assert.That(table.LastRefreshed(255), Is.EqualTo(DateTimeOffset.MinValue));
        Assert.That(table.HighestOccupiedBucket(), Is.EqualTo(-1));
        // Refresh marks before any peer (a self-lookup marks bucket 255): kept, without growing the array.
        var t1 = T0.AddMinutes(1);
        table.MarkRefreshed(2, T0);
        table.MarkRefreshed(255, t1);
        Assert.That(table.BucketPlaces, Is.Zero, "a refresh mark alone grows nothing");
        Assert.That(table.LastRefreshed(2), Is.EqualTo(T0));
        Assert.That(table.LastRefreshed(255), Is.EqualTo(t1));
        foreach (var p in peers.Skip(1))
        {
            table.AddOrRefresh(p);
        }
        var deepest = table.HighestOccupiedBucket();
        Assert.That(deepest, Is.InRange(4, 16), "299 random peers: the deepest common prefix is about log2(299)");
        Assert.That(table.BucketPlaces, Is.InRange(deepest + 1, 2 * (deepest + 1)), "grown to the deepest bucket, not 256");
        Assert.That(Enumerable.Range(0, RoutingTable.BucketCount).Sum(table.CountInBucket), Is.EqualTo(299));
        Assert.That(table.LastRefreshed(2), Is.EqualTo(T0), "the mark moved into the bucket when the array reached it");
        Assert.That(table.LastRefreshed(255), Is.EqualTo(t1));
        Assert.That(table.LastRefreshed(254), Is.EqualTo(DateTimeOffset.MinValue));
        Assert.That(table.LastRefreshed(1), Is.EqualTo(DateTimeOffset.MinValue));
        Assert.That(table.HighestOccupiedBucket(), Is.EqualTo(deepest), "a refreshed empty bucket holds no peer");
        Assert.That(table.BucketsDueForRefresh(t1, TimeSpan.FromMinutes(10), maxIndex: 15), Does.Not.Contain(2).And.Contain(0),
            "bucket 2 counts as refreshed at T0, bucket 0 never was");
        Assert.Throws<ArgumentOutOfRangeException>(() => table.CountInBucket(RoutingTable.BucketCount));
        Assert.Throws<ArgumentOutOfRangeException>(() => table.MarkRefreshed(-1, T0));
    }

    [Test]
    public void AddOrRefresh_LocalPeer_IsRejected()
    {
        var me = KadTestSupport.RandomPeers(1, 2)[0];
        var table = new RoutingTable(me);
        Assert.That(table.AddOrRefresh(me).Kind, Is.EqualTo(RoutingUpdateKind.Rejected));
        Assert.That(table.Count, Is.Zero);
    }

    [Test]
    public void FullBucket_NewPeerIsPending_OldestIsProbeCandidate_RemovePromotesNewestReplacement()
    {
        var peers = KadTestSupport.RandomPeers(400, 3);
        var table = new RoutingTable(peers[0], bucketSize: 20, replacementCacheSize: 2);
        var bucket0 = peers.Skip(1).Where(p => table.BucketIndexOf(KadKey.FromPeer(p)) == 0).ToList();
        Assume.That(bucket0.Count, Is.GreaterThan(24));
        for (var i = 0; i < 20; i++)
        {
            table.AddOrRefresh(bucket0[i]);
        }
        Assert.That(table.PeersInBucket(0), Has.Count.EqualTo(20));

        var pending = table.AddOrRefresh(bucket0[20]);
        Assert.That(pending, Is.EqualTo(new RoutingUpdate(RoutingUpdateKind.Pending, bucket0[0])));
        table.AddOrRefresh(bucket0[21]);
        table.AddOrRefresh(bucket0[22]);
        Assert.That(table.ReplacementsInBucket(0), Is.EqualTo(new[] { bucket0[21], bucket0[22] }), "the cache keeps the two most recent");
        Assert.That(table.PeersInBucket(0), Has.Count.EqualTo(20));

        Assert.That(table.Remove(bucket0[0], out var promoted), Is.True);
        Assert.That(promoted, Is.EqualTo(bucket0[22]));
        Assert.That(table.Contains(bucket0[22]), Is.True);
        Assert.That(table.Contains(bucket0[0]), Is.False);
        Assert.That(table.PeersInBucket(0), Has.Count.EqualTo(20));
    }

    [Test]
    public void AddOrRefresh_KnownPeer_MovesItToMostRecentlySeen()
    {
        var peers = KadTestSupport.RandomPeers(400, 4);
        var table = new RoutingTable(peers[0], bucketSize: 20);
        var bucket0 = peers.Skip(1).Where(p => table.BucketIndexOf(KadKey.FromPeer(p)) == 0).Take(21).ToList();
        for (var i = 0; i < 20; i++)
        {
            table.AddOrRefresh(bucket0[i]);
        }
        Assert.That(table.AddOrRefresh(bucket0[0]).Kind, Is.EqualTo(RoutingUpdateKind.Refreshed));
        Assert.That(table.PeersInBucket(0)[^1], Is.EqualTo(bucket0[0]));
        Assert.That(table.AddOrRefresh(bucket0[20]).ProbeCandidate, Is.EqualTo(bucket0[1]));
    }

    [Test]
    public void Closest_ReturnsTheTrueClosestInDistanceOrder_WithoutTheExcludedPeer()
    {
        var peers = KadTestSupport.RandomPeers(200, 5);
        var table = new RoutingTable(peers[0], bucketSize: 1000);
        foreach (var p in peers.Skip(1))
        {
            table.AddOrRefresh(p);
        }
        var target = KadKey.FromKey("target"u8);
        var expected = peers.Skip(1).OrderBy(p => KadKey.FromPeer(p).DistanceTo(target)).ToList();

        Assert.That(table.Closest(target, 20), Is.EqualTo(expected.Take(20)));
        Assert.That(table.Closest(target, 20, exclude: expected[0]), Is.EqualTo(expected.Skip(1).Take(20)));
        Assert.That(table.Closest(target, 0), Is.Empty);
    }

    [Test]
    public void BucketsDueForRefresh_CoversUpToOnePastTheHighestOccupied_AndForgetsRefreshedOnes()
    {
        var peers = KadTestSupport.RandomPeers(50, 6);
        var table = new RoutingTable(peers[0]);
        foreach (var p in peers.Skip(1))
        {
            table.AddOrRefresh(p);
        }
        var highest = table.HighestOccupiedBucket();
        var due = table.BucketsDueForRefresh(T0, TimeSpan.FromMinutes(10), maxIndex: 15);
        Assert.That(due, Is.EqualTo(Enumerable.Range(0, Math.Min(highest + 1, 15) + 1)));

        table.MarkRefreshed(0, T0);
        Assert.That(table.BucketsDueForRefresh(T0.AddMinutes(5), TimeSpan.FromMinutes(10), 15), Does.Not.Contain(0));
        Assert.That(table.BucketsDueForRefresh(T0.AddMinutes(10), TimeSpan.FromMinutes(10), 15), Does.Contain(0));
    }

    [Test]
    public void MarkCoveredBySelfLookup_KClosest_MarksOnlyBucketsNearerThanTheKth()
    {
        var peers = KadTestSupport.RandomPeers(1000, 9);
        var table = new RoutingTable(peers[0], bucketSize: 20);
        foreach (var p in peers.Skip(1))
        {
            table.AddOrRefresh(p);
        }
        // What a perfect self-lookup returns: the 20 peers closest to us, closest first.
        var closest = peers.Skip(1).OrderBy(p => KadKey.FromPeer(p).DistanceTo(table.LocalKey)).Take(20).ToList();
        var kth = table.BucketIndexOf(KadKey.FromPeer(closest[^1]));
        var before = table.BucketsDueForRefresh(T0, TimeSpan.FromMinutes(10), 15);

        var from = table.MarkCoveredBySelfLookup(closest, T0);

        Assert.That(from, Is.EqualTo(kth + 1));
        // Every peer in a bucket above the k-th's is among the 20 closest: the lookup met them all.
        var nearer = peers.Skip(1).Where(p => table.BucketIndexOf(KadKey.FromPeer(p)) > kth).ToList();
        Assert.That(closest, Is.SupersetOf(nearer));
        var after = table.BucketsDueForRefresh(T0.AddMinutes(1), TimeSpan.FromMinutes(10), 15);
        Assert.That(after, Is.EqualTo(before.Where(b => b <= kth)), "only buckets up to the k-th's stay due");
        Assert.That(after, Is.Not.Empty);
        Assert.That(table.BucketsDueForRefresh(T0.AddMinutes(10), TimeSpan.FromMinutes(10), 15), Is.EqualTo(before), "covered buckets fall due again after the interval");
    }

    [Test]
    public void MarkCoveredBySelfLookup_FewerThanK_MarksNothing()
    {
        var peers = KadTestSupport.RandomPeers(30, 10);
        var table = new RoutingTable(peers[0], bucketSize: 20);
        foreach (var p in peers.Skip(1))
        {
            table.AddOrRefresh(p);
        }
        var before = table.BucketsDueForRefresh(T0, TimeSpan.FromMinutes(10), 15);

        Assert.That(table.MarkCoveredBySelfLookup(peers.Skip(1).Take(19).ToList(), T0), Is.EqualTo(RoutingTable.BucketCount));
        Assert.That(table.BucketsDueForRefresh(T0, TimeSpan.FromMinutes(10), 15), Is.EqualTo(before));
    }

    [Test]
    public void BucketsDueForRefresh_SkipFull_LeavesOutBucketsHoldingK()
    {
        var peers = KadTestSupport.RandomPeers(2000, 11);
        var table = new RoutingTable(peers[0], bucketSize: 20);
        foreach (var p in peers.Skip(1))
        {
            table.AddOrRefresh(p);
        }
        var all = table.BucketsDueForRefresh(T0, TimeSpan.FromMinutes(10), 15);
        var notFull = table.BucketsDueForRefresh(T0, TimeSpan.FromMinutes(10), 15, skipFull: true);

        Assert.That(table.CountInBucket(0), Is.EqualTo(20), "2,000 peers fill bucket 0");
        Assert.That(notFull, Is.EqualTo(all.Where(b => table.CountInBucket(b) < 20)));
        Assert.That(notFull, Does.Not.Contain(0));
        Assert.That(notFull, Is.Not.Empty);
    }

    [Test]
    public void Table_NeverHoldsMoreThanKPerBucket()
    {
        var peers = KadTestSupport.RandomPeers(2000, 8);
        var table = new RoutingTable(peers[0], bucketSize: 20);
        foreach (var p in peers.Skip(1))
        {
            table.AddOrRefresh(p);
        }
        for (var i = 0; i < RoutingTable.BucketCount; i++)
        {
            Assert.That(table.PeersInBucket(i).Count, Is.LessThanOrEqualTo(20));
        }
        Assert.That(table.Count, Is.EqualTo(Enumerable.Range(0, RoutingTable.BucketCount).Sum(i => table.PeersInBucket(i).Count)));
    }
}
