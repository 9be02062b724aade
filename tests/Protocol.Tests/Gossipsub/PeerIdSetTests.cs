using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// The router's sets of peers (<see cref="PeerIdSet"/>: topics' subscribers, meshes, fanouts) against the
/// <see cref="HashSet{T}"/> they replace: the same answers and the same enumeration order after every add, remove,
/// removal by predicate and clear (the router shuffles candidates from that order), with one array of the members where
/// the hash set kept buckets and entries, and an index only above <see cref="PeerIdSet.IndexedAbove"/> members.
/// </summary>
public class PeerIdSetTests
{
    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    public void RandomAddsRemovesAndClears_MatchAHashSetInAnswersAndOrder(int seed)
    {
        var random = new Random(seed);
        var peers = NewPeers(150, seed);
        var expected = new HashSet<PeerId>();
        var set = new PeerIdSet();
        var indexedSeen = false;
        for (var step = 0; step < 6_000; step++)
        {
            // A copy of the id's bytes: the set compares by value, not by the array's reference.
            var peer = PeerId.FromSharedArray(peers[random.Next(peers.Length)].ToBytes());
            var roll = random.NextDouble();
            string what;
            if (roll < 0.002)
            {
                expected.Clear();
                set.Clear();
                what = "clear";
            }
            else if (roll < 0.01)
            {
                var mod = random.Next(2, 5);
                Predicate<PeerId> match = p => p.Bytes[^1] % mod == 0;
                Assert.That(set.RemoveWhere(match), Is.EqualTo(expected.RemoveWhere(match)), $"seed {seed}, step {step}: remove where");
                what = "remove where";
            }
            else
            {
                // Grow toward the whole pool and shrink back, so the set crosses its index threshold both ways.
                var add = random.NextDouble() < (step / 1_000 % 2 == 0 ? 0.7 : 0.3);
                var (want, got) = add ? (expected.Add(peer), set.Add(peer)) : (expected.Remove(peer), set.Remove(peer));
                Assert.That(got, Is.EqualTo(want), $"seed {seed}, step {step}: {(add ? "add" : "remove")}");
                what = add ? "add" : "remove";
            }
            indexedSeen |= set.IsIndexed;
            Assert.That(set.Count, Is.EqualTo(expected.Count), $"seed {seed}, step {step}: {what}");
            Assert.That(set.ToList(), Is.EqualTo(expected.ToList()), $"seed {seed}, step {step}: {what}, order");
            Assert.That(set.Contains(peer), Is.EqualTo(expected.Contains(peer)), $"seed {seed}, step {step}: contains");
            Assert.That(!set.IsIndexed || set.Count > PeerIdSet.IndexedAbove / 2, Is.True, $"seed {seed}, step {step}: an index kept for a small set");
        }
        Assert.That(indexedSeen, Is.True, "the run never crossed the index threshold");
    }

    [Test]
    public void FreedSlots_AreReusedLastFreedFirst_AsAHashSetDoes()
    {
        var p = NewPeers(8, 7);
        var set = new PeerIdSet();
        var hash = new HashSet<PeerId>();
        foreach (var x in p[..5])
        {
            set.Add(x);
            hash.Add(x);
        }
        hash.Remove(p[1]);
        hash.Remove(p[3]);
        set.Remove(p[1]);
        set.Remove(p[3]);
        foreach (var x in p[5..])
        {
            set.Add(x);
            hash.Add(x);
        }
        // p5 takes p3's slot, p6 p1's, p7 a new one at the end.
        Assert.That(set.ToList(), Is.EqualTo(new[] { p[0], p[6], p[2], p[5], p[4], p[7] }));
        Assert.That(set.ToList(), Is.EqualTo(hash.ToList()));
    }

    [Test]
    public void ATopicOfThirtySubscribers_KeepsOneArrayOf32Slots_AndNoIndex_UntilItPassesIndexedAbove()
    {
        var peers = NewPeers(70, 11);
        var set = new PeerIdSet();
        foreach (var p in peers[..30])
        {
            set.Add(p);
        }
        Assert.Multiple(() =>
        {
            Assert.That(set.Capacity, Is.EqualTo(32)); // 8 bytes a member: 280 bytes, where a HashSet kept ~850
            Assert.That(set.IsIndexed, Is.False);
        });
        foreach (var p in peers[30..])
        {
            set.Add(p);
        }
        Assert.That(set.IsIndexed, Is.True, "70 members: looked up through the index");
        foreach (var p in peers[..38])
        {
            set.Remove(p);
        }
        Assert.Multiple(() =>
        {
            Assert.That(set.Count, Is.EqualTo(32));
            Assert.That(set.IsIndexed, Is.False, "back at half the threshold: scanned again");
            Assert.That(set.Contains(peers[40]), Is.True);
            Assert.That(set.Contains(peers[0]), Is.False);
        });
    }

    [Test]
    public void AddingWhileEnumerating_Throws_RemovingDoesNot_AsWithAHashSet()
    {
        var peers = NewPeers(4, 5);
        var set = new PeerIdSet { peers[0], peers[1], peers[2] };
        Assert.That(() => { foreach (var p in set) { set.Add(peers[3]); } }, Throws.InvalidOperationException);
        var seen = new List<PeerId>();
        foreach (var p in set)
        {
            seen.Add(p);
            set.Remove(p);
        }
        Assert.Multiple(() =>
        {
            Assert.That(seen, Has.Count.EqualTo(4));
            Assert.That(set.Count, Is.Zero);
            Assert.That(() => set.Add(default), Throws.ArgumentException);
        });
    }

    private static PeerId[] NewPeers(int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => PrivateKey.FromRandom(random).PeerId).ToArray();
    }
}
