using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Potluck.Protocol.Identity;

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

/// <summary>
/// Message ids seen recently, each forgotten <c>ttl</c> after it was first seen, and with each the record that peer
/// scoring keeps of its delivery (<see cref="PeerScore"/>): one table for both, since both are keyed by the message id
/// and live as long (go-libp2p and js keep them apart: a time cache of ids and a map of delivery records, each with its
/// own expiry queue). One entry is the id, a 40-byte <see cref="SeenRecord"/> inline in the dictionary and a place in
/// the expiry queue; the id's bytes are the router's array, shared with the message cache.
/// </summary>
internal sealed class SeenCache(TimeSpan ttl)
{
    private readonly Dictionary<MessageId, SeenRecord> _seen = [];
    private readonly Queue<MessageId> _order = new();

    public TimeSpan Ttl => ttl;

    public int Count => _seen.Count;

    public bool Contains(MessageId id) => _seen.ContainsKey(id);

    /// <summary>Adds the id; false when it was already there.</summary>
    public bool Add(MessageId id, DateTimeOffset now)
    {
        ref var record = ref CollectionsMarshal.GetValueRefOrAddDefault(_seen, id, out var exists);
        if (exists)
        {
            return false;
        }
        record.Expiry = (now + ttl).UtcTicks;
        _order.Enqueue(id);
        return true;
    }

    /// <summary>The id's record, added (as seen now) when it is not there. Valid until the table next changes.</summary>
    public ref SeenRecord GetOrAdd(MessageId id, DateTimeOffset now)
    {
        ref var record = ref CollectionsMarshal.GetValueRefOrAddDefault(_seen, id, out var exists);
        if (!exists)
        {
            record.Expiry = (now + ttl).UtcTicks;
            _order.Enqueue(id);
        }
        return ref record;
    }

    /// <summary>The id's record, or a null reference (<see cref="Unsafe.IsNullRef{T}(ref readonly T)"/>) when it is not there.</summary>
    public ref SeenRecord Find(MessageId id) => ref CollectionsMarshal.GetValueRefOrNullRef(_seen, id);

    /// <summary>Forgets the ids whose time is up (in the order they were added, which is the order they expire in).</summary>
    public void Prune(DateTimeOffset now)
    {
        var ticks = now.UtcTicks;
        while (_order.TryPeek(out var head))
        {
            ref var record = ref Find(head);
            if (!Unsafe.IsNullRef(ref record) && record.Expiry > ticks)
            {
                break;
            }
            _order.Dequeue();
            _seen.Remove(head);
        }
    }

    /// <summary>For tests and diagnostics: how many records hold an array of further peers.</summary>
    internal int RecordsWithPeerArrays()
    {
        var n = 0;
        foreach (var record in _seen.Values)
        {
            if (record.More is not null)
            {
                n++;
            }
        }
        return n;
    }
}

/// <summary>How a message's first delivery was judged (<see cref="PeerScore"/>); Unknown: seen, never scored (our own).</summary>
internal enum DeliveryStatus : byte { Unknown, Valid, Invalid, Ignored }

/// <summary>
/// What a seen message's entry keeps for peer scoring: its status, when it was validated, and the peers that delivered
/// it, the first inline and the rest in a small array (most messages come from a handful of peers; a
/// <c>HashSet&lt;PeerId&gt;</c> cost 176–256 bytes for them). <see cref="PeerScore"/> lets go of the peers once no
/// later copy can count for or against one (a valid message past every topic's mesh delivery window; an ignored one).
/// </summary>
internal struct SeenRecord
{
    /// <summary>When the entry is forgotten (UTC ticks).</summary>
    public long Expiry;

    /// <summary>When the message was validated (UTC ticks; Valid only).</summary>
    public long Validated;

    /// <summary>The first peer that delivered it; default when none is kept.</summary>
    public PeerId First;

    /// <summary>Further peers that delivered it, unused slots default; null when there are none or they were let go.</summary>
    public PeerId[]? More;

    public DeliveryStatus Status;

    /// <summary>Adds the peer; false when it is already there.</summary>
    public bool AddPeer(PeerId peer)
    {
        if (First.IsEmpty)
        {
            First = peer;
            return true;
        }
        if (First.Equals(peer))
        {
            return false;
        }
        if (More is null)
        {
            More = new PeerId[2];
            More[0] = peer;
            return true;
        }
        for (var i = 0; i < More.Length; i++)
        {
            if (More[i].IsEmpty)
            {
                More[i] = peer;
                return true;
            }
            if (More[i].Equals(peer))
            {
                return false;
            }
        }
        var grown = new PeerId[More.Length * 2];
        More.CopyTo(grown, 0);
        grown[More.Length] = peer;
        More = grown;
        return true;
    }

    /// <summary>Lets go of the peers (no later copy can count for or against one).</summary>
    public void ReleasePeers()
    {
        First = default;
        More = null;
    }
}
