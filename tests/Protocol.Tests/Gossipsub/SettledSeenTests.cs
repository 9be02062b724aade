using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// The seen table's settled entries: a valid message past every topic's mesh delivery window keeps only its digest and
/// expiry; it answers "seen?" and expires exactly as its full record did, and a flood of distinct messages stays bounded.
/// </summary>
public class SettledSeenTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private static readonly TimeSpan Ttl = TimeSpan.FromSeconds(120);

    /// <summary>"a": the default 10 ms window; "b": a 200 ms window; P₃ active after 1 s.</summary>
    private static PeerScoreParams Params() => new()
    {
        Topics = new Dictionary<string, TopicScoreParams>(StringComparer.Ordinal)
        {
            ["a"] = new() { MeshMessageDeliveriesActivation = TimeSpan.FromSeconds(1), MeshMessageDeliveriesThreshold = 3 },
            ["b"] = new()
            {
                MeshMessageDeliveriesWindow = TimeSpan.FromMilliseconds(200), MeshMessageDeliveriesActivation = TimeSpan.FromSeconds(1),
                MeshMessageDeliveriesThreshold = 3,
            },
        },
        DefaultTopic = new() { MeshMessageDeliveriesWeight = 0, MeshFailurePenaltyWeight = 0 },
    };

    private static MessageId Id(int n) => new(BitConverter.GetBytes(n).Concat(new byte[] { 0x5E, 0x77 }).ToArray());

    private static PeerId[] NewPeers(int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => PrivateKey.FromRandom(random).PeerId).ToArray();
    }

    [Test]
    public void ValidMessages_PastEveryWindow_KeepOnlyDigestAndExpiry_AndAnswerSeenUntilTheSameExpiry()
    {
        var peers = NewPeers(3, 21);
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
            Assert.That(cache.Add(key, now), Is.True);
            score.DeliverMessage(key, peers[i % 3], i % 2 == 0 ? "a" : "b", now);
            score.DuplicateMessage(key, peers[(i + 1) % 3], "a", now + TimeSpan.FromMilliseconds(1));
        }
        var ignored = cache.KeyOf(Id(-1));
        cache.Add(ignored, now);
        score.IgnoreMessage(ignored, peers[0], now);
        var invalid = cache.KeyOf(Id(-2));
        cache.Add(invalid, now);
        score.RejectMessage(invalid, peers[0], "a", now);
        Assert.That(cache.Entries, Is.EqualTo((n + 2, 0)), "inside the windows every message has its full record");

        score.Refresh(now + TimeSpan.FromMilliseconds(200));
        Assert.That(cache.Entries, Is.EqualTo((n + 2, 0)), "kept while topic b's 200 ms window could still count a copy");
        score.Refresh(now + TimeSpan.FromMilliseconds(201));
        Assert.That(cache.Entries, Is.EqualTo((2, n)), "valid messages settle; the ignored and the invalid one keep their records");
        Assert.That(score.DeliveryRecords, Is.EqualTo((n + 2, 0)));

        var mesh = peers.Select(p => score.Counters(p, "a")!.Value.MeshDeliveries).ToArray();
        for (var i = 0; i < n; i++)
        {
            var key = cache.KeyOf(Id(i));
            Assert.That(cache.Contains(key), Is.True);
            Assert.That(cache.Add(key, now + TimeSpan.FromSeconds(1)), Is.False, "a settled message is still seen");
            score.DuplicateMessage(key, peers[2], "a", now + TimeSpan.FromSeconds(1)); // late copies count for nothing
        }
        Assert.That(peers.Select(p => score.Counters(p, "a")!.Value.MeshDeliveries), Is.EqualTo(mesh));
        score.DuplicateMessage(invalid, peers[1], "a", now + TimeSpan.FromSeconds(1)); // still penalised (P₄)
        Assert.That(score.Counters(peers[1], "a")!.Value.InvalidDeliveries, Is.EqualTo(1));

        var expiry = now + Ttl;
        score.Refresh(expiry - TimeSpan.FromTicks(1));
        Assert.That(cache.Entries, Is.EqualTo((2, n)), "nothing forgotten one tick before the expiry");
        score.Refresh(expiry);
        Assert.That(cache.Entries, Is.EqualTo((0, 0)), "forgotten at the same expiry as a full record");
        Assert.That(cache.Add(cache.KeyOf(Id(0)), expiry), Is.True, "seen again after the expiry: new again");
    }

    [Test, Category("Adversarial")]
    public void FloodOfDistinctValidMessages_StaysBoundedByTheTtl_AndSettles()
    {
        var peers = NewPeers(2, 22);
        var cache = new SeenCache(Ttl, SeenKeys.Random());
        var score = new PeerScore(Params(), cache, T0);
        foreach (var p in peers)
        {
            score.AddPeer(p, null);
        }
        const int perSecond = 2000;
        var now = T0;
        var id = 0;
        var most = 0;
        for (var second = 0; second < 300; second++)
        {
            for (var i = 0; i < perSecond; i++)
            {
                var key = cache.KeyOf(Id(id++));
                cache.Add(key, now);
                score.DeliverMessage(key, peers[i % 2], "a", now);
            }
            now += TimeSpan.FromSeconds(1);
            score.Refresh(now);
            most = Math.Max(most, cache.Count);
            Assert.That(cache.Entries.Full, Is.EqualTo(0), $"second {second}: every message past its window settled");
        }
        // At each heartbeat the messages of the last 119 seconds are held (those 120 s old expire at it).
        Assert.That(most, Is.EqualTo(perSecond * ((int)Ttl.TotalSeconds - 1)), "never more than one TTL's messages");
        now += Ttl;
        score.Refresh(now);
        Assert.That(cache.Entries, Is.EqualTo((0, 0)));
    }
}
