using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;
using static Potluck.Protocol.Tests.Gossipsub.RouterFixture;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// Peer scoring's per-message delivery records, made compact (one seen-cache entry per message, the first peer inline,
/// the rest in a small array let go of once no later copy can count): the counters and scores come out as they did with
/// a <c>HashSet&lt;PeerId&gt;</c> per message kept for the whole TTL (<see cref="ReferencePeerScore"/>, the code before),
/// and the records stay bounded under a flood while an attacker's copies are still penalised.
/// </summary>
public class CompactDeliveryRecordTests
{
    internal static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    internal static readonly string[] Topics = ["a", "b", "c"];

    /// <summary>"a": the default 10 ms window; "b": a 200 ms window; "c": the default topic (P₃ off). P₃ active after 1 s.</summary>
    internal static PeerScoreParams Params(double invalidDecay = 0.3) => new()
    {
        Topics = new Dictionary<string, TopicScoreParams>(StringComparer.Ordinal)
        {
            ["a"] = new() { MeshMessageDeliveriesActivation = TimeSpan.FromSeconds(1), MeshMessageDeliveriesThreshold = 3, InvalidMessageDeliveriesDecay = invalidDecay },
            ["b"] = new()
            {
                MeshMessageDeliveriesWindow = TimeSpan.FromMilliseconds(200), MeshMessageDeliveriesActivation = TimeSpan.FromSeconds(1),
                MeshMessageDeliveriesThreshold = 3, InvalidMessageDeliveriesDecay = invalidDecay,
            },
        },
        DefaultTopic = new() { MeshMessageDeliveriesWeight = 0, MeshFailurePenaltyWeight = 0, InvalidMessageDeliveriesDecay = invalidDecay },
    };

    /// <summary>The product's score and the oracle, driven by the same calls.</summary>
    internal sealed class Both(PeerScoreParams parameters, TimeSpan ttl)
    {
        public PeerScore Now { get; } = new(parameters, ttl, T0);
        public ReferencePeerScore Before { get; } = new(parameters, ttl, T0);

        public void AddPeer(PeerId p) { Now.AddPeer(p, null); Before.AddPeer(p, null); }
        public void RemovePeer(PeerId p, DateTimeOffset t) { Now.RemovePeer(p, t); Before.RemovePeer(p, t); }
        public void Graft(PeerId p, string topic, DateTimeOffset t) { Now.Graft(p, topic, t); Before.Graft(p, topic, t); }
        public void Prune(PeerId p, string topic) { Now.Prune(p, topic); Before.Prune(p, topic); }
        public void Deliver(MessageId id, PeerId p, string topic, DateTimeOffset t) { Now.DeliverMessage(Now.KeyOf(id), p, topic, t); Before.DeliverMessage(id, p, topic, t); }
        public void Reject(MessageId id, PeerId p, string topic, DateTimeOffset t) { Now.RejectMessage(Now.KeyOf(id), p, topic, t); Before.RejectMessage(id, p, topic, t); }
        public void Ignore(MessageId id, PeerId p, DateTimeOffset t) { Now.IgnoreMessage(Now.KeyOf(id), p, t); Before.IgnoreMessage(id, p, t); }
        public void Duplicate(MessageId id, PeerId p, string topic, DateTimeOffset t) { Now.DuplicateMessage(Now.KeyOf(id), p, topic, t); Before.DuplicateMessage(id, p, topic, t); }
        public void Refresh(DateTimeOffset t) { Now.Refresh(t); Before.Refresh(t); }

        /// <summary>Asserts the same counters in every topic and the same score, bit for bit, for every peer.</summary>
        public void AssertSame(IEnumerable<PeerId> peers, DateTimeOffset t, string when)
        {
            foreach (var p in peers)
            {
                foreach (var topic in Topics)
                {
                    // No counters and zero counters are the same to the score (a record the old code created on a late copy).
                    Assert.That(Now.Counters(p, topic) ?? default, Is.EqualTo(Before.Counters(p, topic) ?? default), $"{when}: counters of {p} in {topic}");
                }
                // The score sums a peer's topics in the order they were first met. The old code also met a topic on a
                // late copy from a peer it had already recorded for the message (one forgotten and reconnected since):
                // the same terms summed in another order can differ in the last bit, nothing more.
                Assert.That(Now.Score(p, t), Is.EqualTo(Before.Score(p, t)).Within(1e-9), $"{when}: score of {p}");
            }
        }

        public (double First, double Mesh, double Invalid, double Failure) Counters(PeerId p, string topic) => Now.Counters(p, topic) ?? default;
    }

    internal static MessageId Id(int n) => new(BitConverter.GetBytes(n).Concat(new byte[] { 0xAB, 0xCD, 0xEF }).ToArray());

    internal static PeerId[] NewPeers(int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => PrivateKey.FromRandom(random).PeerId).ToArray();
    }

    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    [TestCase(4)]
    public void SeededRandomDeliveries_SameCountersAndScoresAsBefore(int seed)
    {
        var random = new Random(seed);
        var peers = NewPeers(10, seed);
        var both = new Both(Params(), TimeSpan.FromSeconds(5));
        var connected = new HashSet<PeerId>();
        foreach (var p in peers)
        {
            both.AddPeer(p);
            connected.Add(p);
        }
        var now = T0;
        var messages = new List<(MessageId Id, string Topic)>();
        var (valid, invalid, ignored, duplicates) = (0, 0, 0, 0);
        for (var step = 0; step < 6000; step++)
        {
            var r = random.NextDouble();
            var peer = peers[random.Next(peers.Length)];
            if (r < 0.25)
            {
                var topic = Topics[random.Next(Topics.Length)];
                var id = Id(messages.Count);
                messages.Add((id, topic));
                switch (random.Next(10))
                {
                    case < 7: both.Deliver(id, peer, topic, now); valid++; break;
                    case < 9: both.Reject(id, peer, topic, now); invalid++; break;
                    default: both.Ignore(id, peer, now); ignored++; break;
                }
            }
            else if (r < 0.75 && messages.Count > 0)
            {
                // Mostly recent messages, sometimes one from long ago (expired, or still remembered past its window).
                var (id, topic) = messages[random.NextDouble() < 0.8 ? Math.Max(0, messages.Count - 1 - random.Next(20)) : random.Next(messages.Count)];
                both.Duplicate(id, peer, topic, now);
                duplicates++;
            }
            else if (r < 0.80)
            {
                both.Graft(peer, Topics[random.Next(Topics.Length)], now);
            }
            else if (r < 0.83)
            {
                both.Prune(peer, Topics[random.Next(Topics.Length)]);
            }
            else if (r < 0.85)
            {
                if (connected.Remove(peer))
                {
                    both.RemovePeer(peer, now);
                }
                else
                {
                    both.AddPeer(peer);
                    connected.Add(peer);
                }
            }
            else
            {
                // Time moves: mostly by milliseconds (inside and just past the windows), sometimes by seconds (past the TTL).
                now += random.NextDouble() < 0.9 ? TimeSpan.FromMilliseconds(random.Next(0, 30)) : TimeSpan.FromMilliseconds(random.Next(500, 7000));
                if (random.NextDouble() < 0.5)
                {
                    both.Refresh(now);
                }
            }
            both.AssertSame(peers, now, $"step {step}");
        }
        Assert.That((valid, invalid, ignored), Is.Not.EqualTo((0, 0, 0)));
        Assert.That(duplicates, Is.GreaterThan(2000), "the run exercised duplicates");
        Assert.That(peers.Sum(p => Topics.Sum(t => both.Counters(p, t).Mesh)), Is.GreaterThan(0), "some duplicates counted toward P₃");
        Assert.That(peers.Sum(p => Topics.Sum(t => both.Counters(p, t).Invalid)), Is.GreaterThan(0), "some copies counted toward P₄");
    }

    [Test]
    public void Duplicates_InsideAndAfterTheWindow_CountOncePerMeshPeer_AsBefore_AndThePeersAreLetGo()
    {
        var peers = NewPeers(5, 11);
        var both = new Both(Params(), TimeSpan.FromSeconds(120));
        foreach (var p in peers)
        {
            both.AddPeer(p);
            both.Graft(p, "a", T0);
        }
        var now = T0 + TimeSpan.FromSeconds(2);
        both.Refresh(now); // P₃ active: every mesh delivery counts (before decay)
        var meshBefore = peers.Select(p => both.Counters(p, "a").Mesh).ToArray();

        both.Deliver(Id(1), peers[0], "a", now);
        both.Duplicate(Id(1), peers[1], "a", now + TimeSpan.FromMilliseconds(4));  // inside the 10 ms window
        both.Duplicate(Id(1), peers[1], "a", now + TimeSpan.FromMilliseconds(5));  // the same peer again: once only
        both.Duplicate(Id(1), peers[2], "a", now + TimeSpan.FromMilliseconds(10)); // on the window's edge: counts
        both.Duplicate(Id(1), peers[3], "a", now + TimeSpan.FromMilliseconds(11)); // just after it: does not
        var t = now + TimeSpan.FromMilliseconds(11);
        both.AssertSame(peers, t, "after the copies");
        Assert.That(peers.Select((p, i) => both.Counters(p, "a").Mesh - meshBefore[i]).ToArray(), Is.EqualTo(new double[] { 1, 1, 1, 0, 0 }));
        Assert.That(both.Now.DeliveryRecords, Is.EqualTo((1, 1)), "three peers: one inline, two in an array");

        both.Refresh(now + TimeSpan.FromMilliseconds(200));
        Assert.That(both.Now.DeliveryRecords, Is.EqualTo((1, 1)), "kept while a topic's window (b: 200 ms) could still count a copy");
        t = now + TimeSpan.FromMilliseconds(201);
        both.Refresh(t); // past every window: no later copy can count, the peers are let go
        Assert.That(both.Now.DeliveryRecords, Is.EqualTo((1, 0)));
        both.Duplicate(Id(1), peers[1], "a", t + TimeSpan.FromSeconds(1));
        both.Duplicate(Id(1), peers[4], "a", t + TimeSpan.FromSeconds(1));
        both.AssertSame(peers, t + TimeSpan.FromSeconds(1), "late copies");
        Assert.That(both.Now.DeliveryRecords, Is.EqualTo((1, 0)), "late copies are not recorded");
    }

    [Test, Category("Adversarial")]
    public void InvalidMessage_DeliveredBySeveralPeers_EachPenalisedOnce_ForAsLongAsItIsRemembered()
    {
        var peers = NewPeers(6, 12);
        var ttl = TimeSpan.FromSeconds(120);
        var both = new Both(Params(invalidDecay: 1), ttl);
        foreach (var p in peers)
        {
            both.AddPeer(p);
        }
        var now = T0;
        both.Reject(Id(7), peers[0], "b", now);
        for (var i = 1; i < 5; i++)
        {
            now += TimeSpan.FromSeconds(20); // long past every window: an invalid message's copies still count
            both.Duplicate(Id(7), peers[i], "b", now);
            both.Duplicate(Id(7), peers[i], "b", now); // twice from one peer: once
            both.Duplicate(Id(7), peers[0], "b", now);
            both.Refresh(now);
        }
        both.AssertSame(peers, now, "after the copies");
        Assert.That(peers.Select(p => both.Counters(p, "b").Invalid).ToArray(), Is.EqualTo(new double[] { 1, 1, 1, 1, 1, 0 }));
        Assert.That(peers.Take(5).Select(p => both.Now.Score(p, now)), Is.All.LessThan(0));

        now = T0 + ttl; // forgotten with the seen cache: a copy after that is a stranger's first (the router validates it anew)
        both.Refresh(now);
        Assert.That(both.Now.DeliveryRecords, Is.EqualTo((0, 0)));
        both.Duplicate(Id(7), peers[5], "b", now);
        both.AssertSame(peers, now, "after the TTL");
        Assert.That(both.Counters(peers[5], "b").Invalid, Is.EqualTo(0));
    }

    [Test]
    public void IgnoredMessage_KeepsNoPeers_AndItsCopiesCountForNothing_AsBefore()
    {
        var peers = NewPeers(4, 13);
        var both = new Both(Params(), TimeSpan.FromSeconds(120));
        foreach (var p in peers)
        {
            both.AddPeer(p);
            both.Graft(p, "a", T0);
        }
        var now = T0 + TimeSpan.FromSeconds(2);
        both.Refresh(now);
        both.Ignore(Id(3), peers[0], now);
        foreach (var p in peers.Skip(1))
        {
            both.Duplicate(Id(3), p, "a", now);
        }
        both.AssertSame(peers, now, "after the copies");
        Assert.That(both.Now.DeliveryRecords, Is.EqualTo((1, 0)));
    }

    /// <summary>
    /// Through the router: a flood of distinct messages, each also repeated by other peers, keeps at most SeenTtl of
    /// messages (one entry each) and arrays of peers only for the invalid ones and the last heartbeat's valid ones; every
    /// peer that delivered an invalid message, first or as a copy, is penalised once for it.
    /// </summary>
    [Test, Category("Adversarial")]
    public void Flood_OfDistinctMessages_RecordsBoundedBySeenTtl_AndEveryCopyOfAnInvalidOneIsPenalised()
    {
        var ttl = TimeSpan.FromSeconds(10);
        var f = new RouterFixture(6, o => o with
        {
            SeenTtl = ttl,
            // P₄ kept whole (no decay) and no graylisting, so the counters can be read exactly after the flood.
            Score = o.Score with { DefaultTopic = o.Score.DefaultTopic! with { InvalidMessageDeliveriesDecay = 1 } },
            Thresholds = new PeerScoreThresholds { GossipThreshold = -1e10, PublishThreshold = -1e11, GraylistThreshold = -1e12 },
        });
        f.Router.Subscribe(Topic, f.Now);
        f.Router.SetValidator(Topic, m => m.Data.Span[0] == 0 ? ValidationResult.Reject : ValidationResult.Accept);
        f.Drain();
        var author = PrivateKey.FromRandom(new Random(5));
        const int PerHeartbeat = 30, InvalidPerHeartbeat = 3, Heartbeats = 40;
        var ttlBeats = (int)(ttl / f.Options.HeartbeatInterval);
        ulong seqno = 0;
        var maxRecords = 0;
        var maxArrays = 0;
        for (var beat = 0; beat < Heartbeats; beat++)
        {
            for (var i = 0; i < PerHeartbeat; i++)
            {
                // Every tenth is invalid; each goes first to peer 0 or 1, then is repeated by peers 2..4.
                var message = Signed(author, Topic, [(byte)(i % 10 == 0 ? 0 : 1), (byte)i], ++seqno);
                f.Receive(i % 2, message);
                for (var p = 2; p < 5; p++)
                {
                    f.Receive(p, message);
                }
            }
            f.Drain();
            maxRecords = Math.Max(maxRecords, f.Router.SeenRecords.Records);
            maxArrays = Math.Max(maxArrays, f.Router.SeenRecords.WithPeerArrays);
            f.Heartbeat();
            Assert.That(f.Router.SeenRecords.WithPeerArrays, Is.LessThanOrEqualTo(InvalidPerHeartbeat * (ttlBeats + 1)),
                $"after heartbeat {beat}: past the window only invalid messages keep their peers");
        }
        Assert.That(f.Router.Counters.Delivered, Is.EqualTo(Heartbeats * (PerHeartbeat - InvalidPerHeartbeat)));
        Assert.That(maxRecords, Is.LessThanOrEqualTo((ttlBeats + 1) * PerHeartbeat), "at most SeenTtl of messages");
        Assert.That(maxRecords, Is.GreaterThanOrEqualTo(ttlBeats * PerHeartbeat), "and no fewer: the seen cache still dedups for SeenTtl");
        Assert.That(maxArrays, Is.GreaterThanOrEqualTo(PerHeartbeat), "before the heartbeat this beat's valid messages had their peers");
        var invalid = Enumerable.Range(0, 6).Select(p => f.Router.ScoreCounters(f.Id(p), Topic)?.InvalidDeliveries ?? 0).ToArray();
        var total = Heartbeats * InvalidPerHeartbeat;
        // Invalid ones have an even index i (0, 10, 20), so peer 0 is always their first deliverer.
        Assert.That(invalid, Is.EqualTo(new double[] { total, 0, total, total, total, 0 }));
        Assert.That(f.Score(2), Is.LessThan(0));
    }
}
