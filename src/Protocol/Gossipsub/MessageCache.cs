namespace Potluck.Protocol.Gossipsub;

/// <summary>
/// The windowed message cache of gossipsub-v1.0.md ("Message Cache"): <c>mcache_len</c> history windows, of
/// which the newest <c>mcache_gossip</c> are advertised in IHAVE; <see cref="Shift"/> at every heartbeat.
/// Also counts per-peer IWANT retransmissions of each cached message.
/// </summary>
internal sealed class MessageCache
{
    private readonly int _gossip;
    private readonly Dictionary<MessageId, Entry> _messages = [];
    private readonly List<List<(MessageId Id, string Topic)>> _history;

    public MessageCache(int historyLength, int historyGossip)
    {
        _gossip = historyGossip;
        _history = new List<List<(MessageId, string)>>(historyLength);
        for (var i = 0; i < historyLength; i++)
        {
            _history.Add([]);
        }
    }

    public int Count => _messages.Count;

    public bool Put(MessageId id, Pb.Message message)
    {
        if (!_messages.TryAdd(id, new Entry(message)))
        {
            return false;
        }
        _history[0].Add((id, message.Topic));
        return true;
    }

    public bool TryGet(MessageId id, out Pb.Message message)
    {
        if (_messages.TryGetValue(id, out var e))
        {
            message = e.Message;
            return true;
        }
        message = null!;
        return false;
    }

    /// <summary>Returns the message for an IWANT unless the peer already fetched it <paramref name="limit"/> times.</summary>
    public Pb.Message? GetForPeer(MessageId id, Identity.PeerId peer, int limit)
    {
        if (!_messages.TryGetValue(id, out var e))
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

    /// <summary>Ids of the topic's messages in the gossip windows.</summary>
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

    private sealed class Entry(Pb.Message message)
    {
        public Pb.Message Message { get; } = message;
        public Dictionary<Identity.PeerId, int>? Transmissions { get; set; }
    }
}

/// <summary>Message ids seen recently, each forgotten <c>ttl</c> after it was first seen.</summary>
internal sealed class SeenCache(TimeSpan ttl)
{
    private readonly Dictionary<MessageId, DateTimeOffset> _seen = [];
    private readonly Queue<(MessageId Id, DateTimeOffset Expiry)> _order = new();

    public int Count => _seen.Count;

    public bool Contains(MessageId id) => _seen.ContainsKey(id);

    /// <summary>Adds the id; false when it was already there.</summary>
    public bool Add(MessageId id, DateTimeOffset now)
    {
        var expiry = now + ttl;
        if (!_seen.TryAdd(id, expiry))
        {
            return false;
        }
        _order.Enqueue((id, expiry));
        return true;
    }

    public void Prune(DateTimeOffset now)
    {
        while (_order.TryPeek(out var head) && head.Expiry <= now)
        {
            _order.Dequeue();
            _seen.Remove(head.Id);
        }
    }
}
