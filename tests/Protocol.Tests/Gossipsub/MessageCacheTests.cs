using Google.Protobuf;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;
using GPb = Potluck.Protocol.Gossipsub.Pb;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// The message cache's representation (an entry inline in the table, windows of ids, fetches in a small array) against
/// the cache it replaced (<see cref="ReferenceMessageCache"/>, the earlier code): the same answers for a seeded run.
/// </summary>
public class MessageCacheTests
{
    [TestCase(1, 5, 3, 3)]
    [TestCase(2, 3, 3, 1)]
    [TestCase(3, 8, 2, 0)]
    public void SeededPutsIWantsAndShifts_AnswerAsTheEarlierCache(int seed, int length, int gossip, int limit)
    {
        var random = new Random(seed);
        var cache = new MessageCache(length, gossip);
        var reference = new ReferenceMessageCache(length, gossip);
        string[] topics = ["a", "b", "c"];
        var peers = Enumerable.Range(0, 6).Select(i => PrivateKey.FromRandom(new Random(100 + i)).PeerId).ToArray();
        var ids = Enumerable.Range(0, 400).Select(i => new MessageId([(byte)(i >> 8), (byte)i, (byte)seed])).ToArray();
        var messages = ids.Select((id, i) => new GPb.Message { Topic = topics[i % 3], Data = ByteString.CopyFrom([(byte)i, (byte)(i >> 8)]) }).ToArray();
        bool Reaches(PeerId p, string? audience) => audience is null || p.Bytes[^1] % 2 == 0; // a deterministic half of the peers speak "x"
        int puts = 0, served = 0, shifts = 0;
        for (var step = 0; step < 20_000; step++)
        {
            var op = random.Next(100);
            var i = random.Next(ids.Length);
            if (op < 35)
            {
                // A repeated id with other content: the cache keeps the first (a later message under a cached id is never kept).
                var message = random.Next(4) == 0 ? new GPb.Message { Topic = topics[random.Next(3)], Data = ByteString.CopyFrom([9]) } : messages[i];
                var audience = random.Next(3) == 0 ? "x" : null;
                var put = cache.Put(ids[i], message, audience);
                Assert.That(put, Is.EqualTo(reference.Put(ids[i], message, audience)), $"put {step}");
                puts += put ? 1 : 0;
            }
            else if (op < 80)
            {
                var peer = peers[random.Next(peers.Length)];
                var useReaches = random.Next(2) == 0;
                var got = cache.GetForPeer(ids[i], peer, limit, useReaches ? Reaches : null);
                Assert.That(got, Is.SameAs(reference.GetForPeer(ids[i], peer, limit, useReaches ? Reaches : null)), $"iwant {step}");
                Assert.That(cache.Fetches(ids[i], peer), Is.EqualTo(reference.Fetches(ids[i], peer)), $"fetches {step}");
                served += got is null ? 0 : 1;
            }
            else if (op < 88)
            {
                cache.Shift();
                reference.Shift();
                shifts++;
            }
            else
            {
                var topic = topics[random.Next(3)];
                Assert.That(cache.GossipIds(topic), Is.EqualTo(reference.GossipIds(topic)), $"gossip ids {step}");
                Assert.That(cache.AudienceOf(ids[i]), Is.EqualTo(reference.AudienceOf(ids[i])), $"audience {step}");
                Assert.That(cache.TryGet(ids[i], out var m), Is.EqualTo(reference.TryGet(ids[i], out var rm)), $"get {step}");
                Assert.That(m, Is.SameAs(rm));
            }
            Assert.That(cache.Count, Is.EqualTo(reference.Count), $"count {step}");
        }
        // The run did exercise each path (a run of only refusals or an always-empty cache would prove nothing).
        Assert.That(puts, Is.GreaterThan(1000));
        Assert.That(shifts, Is.GreaterThan(1000));
        Assert.That(served, limit == 0 ? Is.EqualTo(0) : Is.GreaterThan(200));
    }

    [Test]
    public void Put_IntoAWarmedCache_AllocatesNothingPerMessage()
    {
        // The earlier cache allocated an entry object (40 bytes) per message; now the entry is inline in the table and a
        // window holds the id alone, so once the table and the window have room a put allocates nothing.
        const int n = 5_000;
        var cache = new MessageCache(2, 1);
        var ids = Enumerable.Range(0, 3 * n).Select(i => new MessageId(BitConverter.GetBytes(i))).ToArray();
        var message = new GPb.Message { Topic = "t", Data = ByteString.CopyFrom([1]) };
        for (var i = 0; i < n; i++)
        {
            cache.Put(ids[i], message);
        }
        cache.Shift();
        for (var i = n; i < 2 * n; i++)
        {
            cache.Put(ids[i], message);
        }
        cache.Shift(); // the first n leave: their slots are free, and their window (now the newest) keeps its n

        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 2 * n; i < 3 * n; i++)
        {
            cache.Put(ids[i], message);
        }
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.That(cache.Count, Is.EqualTo(2 * n));
        Assert.That(allocated, Is.EqualTo(0), "bytes allocated by 5,000 puts into a warmed cache");
    }

    [Test]
    public void AfterABurst_TheTableAndWindowsGiveTheirSlotsBack()
    {
        // 5,000 messages in one heartbeat, then 10 a heartbeat: the earlier cache kept the burst's slots for good.
        var cache = new MessageCache(5, 3);
        var next = 0;
        var message = new GPb.Message { Topic = "t" };
        for (; next < 5_000; next++)
        {
            cache.Put(new MessageId(BitConverter.GetBytes(next)), message);
        }
        Assert.That(cache.Capacity.Table, Is.GreaterThanOrEqualTo(5_000));
        for (var heartbeat = 0; heartbeat < 12; heartbeat++)
        {
            cache.Shift();
            for (var i = 0; i < 10; i++, next++)
            {
                cache.Put(new MessageId(BitConverter.GetBytes(next)), message);
            }
        }

        Assert.That(cache.Count, Is.EqualTo(50));
        Assert.That(cache.Capacity.Table, Is.LessThanOrEqualTo(4 * 50));
        Assert.That(cache.Capacity.Windows, Is.LessThanOrEqualTo(5 * 64));
    }

    [Test]
    public void FirstIWant_AllocatesOneSmallArray_NotADictionary()
    {
        // The earlier cache made a Dictionary<PeerId, int> (~200 bytes) on a message's first IWANT; now a one-slot array
        // of (peer, count): 24 bytes of header and 16 of slot.
        var cache = new MessageCache(3, 2);
        var peer = PrivateKey.FromRandom(new Random(1)).PeerId;
        var id = new MessageId([1, 2, 3]);
        var warm = new MessageId([4, 5, 6]);
        cache.Put(id, new GPb.Message { Topic = "t" });
        cache.Put(warm, new GPb.Message { Topic = "t" });
        cache.GetForPeer(warm, peer, 3); // the first call's one-time costs (JIT, statics) are not the entry's

        var before = GC.GetAllocatedBytesForCurrentThread();
        var served = cache.GetForPeer(id, peer, 3);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.That(served, Is.Not.Null);
        Assert.That(cache.Fetches(id, peer), Is.EqualTo(1));
        Assert.That(allocated, Is.LessThanOrEqualTo(40));
    }
}

/// <summary>The message cache as it was before stop 39 (a class per entry, a dictionary of transmissions, windows of (id, topic)): the reference its replacement must answer as.</summary>
internal sealed class ReferenceMessageCache
{
    private readonly int _gossip;
    private readonly Dictionary<MessageId, Entry> _messages = [];
    private readonly List<List<(MessageId Id, string Topic)>> _history;

    public ReferenceMessageCache(int historyLength, int historyGossip)
    {
        _gossip = historyGossip;
        _history = new List<List<(MessageId, string)>>(historyLength);
        for (var i = 0; i < historyLength; i++)
        {
            _history.Add([]);
        }
    }

    public int Count => _messages.Count;

    public bool Put(MessageId id, GPb.Message message, string? audience = null)
    {
        if (!_messages.TryAdd(id, new Entry(message) { Audience = audience }))
        {
            return false;
        }
        _history[0].Add((id, message.Topic));
        return true;
    }

    public bool TryGet(MessageId id, out GPb.Message message)
    {
        if (_messages.TryGetValue(id, out var e))
        {
            message = e.Message;
            return true;
        }
        message = null!;
        return false;
    }

    public GPb.Message? GetForPeer(MessageId id, PeerId peer, int limit, Func<PeerId, string?, bool>? reaches = null)
    {
        if (!_messages.TryGetValue(id, out var e) || (e.Audience is not null && reaches is not null && !reaches(peer, e.Audience)))
        {
            return null;
        }
        e.Transmissions ??= [];
        var count = e.Transmissions.GetValueOrDefault(peer) + 1;
        if (count > limit)
        {
            return null;
        }
        e.Transmissions[peer] = count;
        return e.Message;
    }

    public int Fetches(MessageId id, PeerId peer) =>
        _messages.TryGetValue(id, out var e) && e.Transmissions is { } t ? t.GetValueOrDefault(peer) : 0;

    public string? AudienceOf(MessageId id) => _messages.TryGetValue(id, out var e) ? e.Audience : null;

    public List<MessageId> GossipIds(string topic)
    {
        var ids = new List<MessageId>();
        for (var i = 0; i < _gossip; i++)
        {
            foreach (var (id, t) in _history[i])
            {
                if (t == topic)
                {
                    ids.Add(id);
                }
            }
        }
        return ids;
    }

    public void Shift()
    {
        var last = _history[^1];
        foreach (var (id, _) in last)
        {
            _messages.Remove(id);
        }
        _history.RemoveAt(_history.Count - 1);
        last.Clear();
        _history.Insert(0, last);
    }

    private sealed class Entry(GPb.Message message)
    {
        public GPb.Message Message { get; } = message;
        public Dictionary<PeerId, int>? Transmissions { get; set; }
        public string? Audience { get; init; }
    }
}
