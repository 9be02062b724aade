using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;
using static Potluck.Protocol.Tests.Gossipsub.CompactDeliveryRecordTests;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// The seen table's full records and the queue of messages waiting to settle give back a burst's slots at the heartbeat
/// after it (once its valid messages have settled), where they kept them until the first expiry (120 s after a node's
/// first message): the same answers, counters and scores as before (<see cref="ReferencePeerScore"/>), fewer slots.
/// </summary>
public class SeenSlackTests
{
    private static readonly TimeSpan Ttl = TimeSpan.FromSeconds(120);

    /// <summary>
    /// 1,000 valid messages inside one heartbeat, two copies of each: at the next heartbeat they settle and the full
    /// records' table and the settle queue are back to their floor (main keeps ~1,100 slots of 64 bytes and a 1,024-slot
    /// queue for 120 s); every message is still seen, late copies still count for nothing, and they expire on time.
    /// </summary>
    [Test]
    public void ABurstOfValidMessages_GivesBackItsSlots_AtTheNextHeartbeat_AndAnswersAsBefore()
    {
        var peers = NewPeers(3, 31);
        var cache = new SeenCache(Ttl, SeenKeys.Random());
        var score = new PeerScore(Params(), cache, T0);
        foreach (var p in peers)
        {
            score.AddPeer(p, null);
            score.Graft(p, "a", T0);
        }
        var now = T0 + TimeSpan.FromSeconds(2);
        score.Refresh(now);
        const int n = 1000;
        for (var i = 0; i < n; i++)
        {
            var key = cache.KeyOf(Id(i));
            cache.Add(key, now);
            score.DeliverMessage(key, peers[i % 3], "a", now);
            score.DuplicateMessage(key, peers[(i + 1) % 3], "a", now + TimeSpan.FromMilliseconds(1));
        }
        Assert.That(cache.Capacity.Full, Is.GreaterThanOrEqualTo(n), "the burst's records");
        Assert.That(score.SettleQueueCapacity, Is.GreaterThanOrEqualTo(n));
        var heartbeat = now + TimeSpan.FromSeconds(1);
        score.Refresh(heartbeat);
        var mesh = peers.Select(p => score.Counters(p, "a")!.Value.MeshDeliveries).ToArray();
        Assert.That(cache.Entries, Is.EqualTo((0, n)), "every message settled");
        Assert.That(cache.Capacity.Full, Is.LessThanOrEqualTo(2 * SeenCache.MinFullCapacity), "the full records' slots given back");
        Assert.That(score.SettleQueueCapacity, Is.EqualTo(SeenCache.MinFullCapacity), "the queue's slots given back");
        for (var i = 0; i < n; i++)
        {
            var key = cache.KeyOf(Id(i));
            Assert.That(cache.Contains(key), Is.True);
            score.DuplicateMessage(key, peers[2], "a", heartbeat);
        }
        Assert.That(peers.Select(p => score.Counters(p, "a")!.Value.MeshDeliveries), Is.EqualTo(mesh), "late copies count for nothing");
        score.Refresh(now + Ttl - TimeSpan.FromTicks(1));
        Assert.That(cache.Entries, Is.EqualTo((0, n)), "nothing forgotten one tick before the expiry");
        score.Refresh(now + Ttl);
        Assert.That(cache.Entries, Is.EqualTo((0, 0)), "forgotten at the expiry");
    }

    /// <summary>
    /// Bursts of 0 to 600 messages a heartbeat (valid, invalid, ignored; copies inside and after the windows; peers
    /// grafted, pruned, leaving and coming back) against the code before (<see cref="ReferencePeerScore"/>): the same
    /// counters and scores after every heartbeat, and after each the full records' table at most four times its records
    /// (or its floor), the queue likewise.
    /// </summary>
    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    public void SeededBursts_SameCountersAndScoresAsBefore_AndTheSlotsFollowTheRecords(int seed)
    {
        var random = new Random(seed);
        var peers = NewPeers(8, 40 + seed);
        var both = new Both(Params(), TimeSpan.FromSeconds(30));
        foreach (var p in peers)
        {
            both.AddPeer(p);
            both.Graft(p, Topics[random.Next(Topics.Length)], T0);
        }
        var connected = new HashSet<PeerId>(peers);
        var now = T0;
        var sent = new List<(MessageId Id, string Topic)>();
        var (trimmed, grown) = (0, 0);
        for (var beat = 0; beat < 300; beat++)
        {
            var atStart = both.Now.SettleQueueCapacity;
            var burst = random.NextDouble() < 0.2 ? random.Next(100, 600) : random.Next(0, 8);
            for (var i = 0; i < burst; i++)
            {
                var id = Id(sent.Count);
                var topic = Topics[random.Next(Topics.Length)];
                sent.Add((id, topic));
                now += TimeSpan.FromMilliseconds(random.Next(0, 3)); // inside a heartbeat time moves too: copies inside and past the windows
                var peer = peers[random.Next(peers.Length)];
                switch (random.Next(20))
                {
                    case < 17: both.Deliver(id, peer, topic, now); break;
                    case < 19: both.Reject(id, peer, topic, now); break;
                    default: both.Ignore(id, peer, now); break;
                }
                if (random.NextDouble() < 0.5)
                {
                    both.Duplicate(id, peers[random.Next(peers.Length)], topic, now);
                }
                if (sent.Count > 50 && random.NextDouble() < 0.6)
                {
                    var (older, itsTopic) = sent[Math.Max(0, sent.Count - 1 - random.Next(300))]; // a recent one, or older
                    both.Duplicate(older, peers[random.Next(peers.Length)], itsTopic, now);
                }
            }
            var peerToFlip = peers[random.Next(peers.Length)];
            if (random.NextDouble() < 0.1)
            {
                if (connected.Remove(peerToFlip))
                {
                    both.RemovePeer(peerToFlip, now);
                }
                else
                {
                    both.AddPeer(peerToFlip);
                    connected.Add(peerToFlip);
                }
            }
            else if (random.NextDouble() < 0.1)
            {
                both.Graft(peerToFlip, Topics[random.Next(Topics.Length)], now);
            }
            else if (random.NextDouble() < 0.1)
            {
                both.Prune(peerToFlip, Topics[random.Next(Topics.Length)]);
            }
            var afterBurst = both.Now.SettleQueueCapacity;
            now += TimeSpan.FromMilliseconds(random.Next(300, 1500));
            both.Refresh(now);
            both.AssertSame(peers, now, $"heartbeat {beat}");
            var queue = both.Now.SettleQueueCapacity;
            grown += afterBurst > atStart ? 1 : 0;
            trimmed += queue < afterBurst ? 1 : 0;
            Assert.That(queue, Is.LessThanOrEqualTo(Math.Max(SeenCache.MinFullCapacity, 4 * burst + 4)), $"heartbeat {beat}: the queue");
            var (full, _) = both.Now.RecordEntries;
            Assert.That(both.Now.RecordSlots.Full, Is.LessThanOrEqualTo(Math.Max(2 * SeenCache.MinFullCapacity, 4 * full + 4)), $"heartbeat {beat}: the full records' table");
        }
        Assert.That(trimmed, Is.GreaterThan(10), "bursts came and their slots went");
        Assert.That(grown, Is.GreaterThan(10));
    }
}
