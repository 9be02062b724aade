using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Gossipsub;

/// <summary>
/// When a collection a burst grew gives its slots back (collections never shrink by themselves): once a quarter or less
/// of them are in use, to twice what it holds, never below a floor. One rule for the message cache's table and windows,
/// the seen table and the score's settle queue.
/// </summary>
internal static class Slack
{
    /// <summary>The slots to trim to, or 0 to leave <paramref name="capacity"/> as it is.</summary>
    public static int TrimTo(int count, int capacity, int floor) =>
        capacity > floor && count <= capacity / 4 ? Math.Max(2 * count, floor) : 0;
}

/// <summary>
/// The windowed message cache of gossipsub-v1.0.md ("Message Cache"): <c>mcache_len</c> history windows, of
/// which the newest <c>mcache_gossip</c> are advertised in IHAVE; <see cref="Shift"/> at every heartbeat.
/// Also counts per-peer IWANT retransmissions of each cached message.
/// <para>
/// Representation (issue 11: the cache was gossip's largest term that grows with a simulated mesh): an entry is a struct
/// inline in the table (the message, its audience, and the peers that fetched it as a small array of (peer, count) pairs,
/// null until the first IWANT), not an object with a dictionary of transmissions; a window is a list of ids only (a
/// message's topic is its own, read when gossiping), and the windows are a ring, turned by <see cref="Shift"/>. The message
/// itself is the instance the router gives (one a simulated mesh's nodes share, <see cref="MessageContent"/>). The table
/// and each window are trimmed at a shift once a quarter or less of their slots are in use (a burst's slots were kept for
/// good: at 1,000 nodes the table had ~5 slots a cached message). Answers are exactly the earlier cache's, in the same order.
/// </para>
/// </summary>
internal sealed class MessageCache
{
    private readonly int _gossip;
    private readonly Dictionary<MessageId, Entry> _messages = [];
    /// <summary>The windows as a ring: window i (0 the newest) is <c>_history[(_newest + i) % _history.Length]</c>.</summary>
    private readonly List<MessageId>[] _history;
    private int _newest;

    public MessageCache(int historyLength, int historyGossip)
    {
        _gossip = historyGossip;
        _history = new List<MessageId>[historyLength];
        for (var i = 0; i < historyLength; i++)
        {
            _history[i] = [];
        }
    }

    public int Count => _messages.Count;

    /// <summary>For tests: the id as the table keeps it (its array), for the id equal to <paramref name="id"/>; null when not cached.</summary>
    internal MessageId? StoredId(MessageId id)
    {
        foreach (var key in _messages.Keys)
        {
            if (key == id)
            {
                return key;
            }
        }
        return null;
    }

    /// <summary>Bytes one cached message costs the cache beyond the message itself, its id and the table's growth slack (tests, reports): its table entry and bucket, and its window slot.</summary>
    internal static int BytesPerEntry => (2 * sizeof(int)) + Unsafe.SizeOf<MessageId>() + Unsafe.SizeOf<Entry>() + sizeof(int) + Unsafe.SizeOf<MessageId>();

    /// <param name="audience">The protocol a peer must speak to be told of or sent the message (<see cref="GossipMessage.Audience"/>); null: any.</param>
    public bool Put(MessageId id, Pb.Message message, string? audience = null)
    {
        ref var entry = ref CollectionsMarshal.GetValueRefOrAddDefault(_messages, id, out var exists);
        if (exists)
        {
            return false;
        }
        entry = new Entry(message, audience);
        Window(0).Add(id);
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

    /// <summary>
    /// Returns the message for an IWANT unless the peer already fetched it <paramref name="limit"/> times, or the message
    /// has an audience that <paramref name="reaches"/> says the peer is not in (then it is not counted as fetched).
    /// </summary>
    public Pb.Message? GetForPeer(MessageId id, Identity.PeerId peer, int limit, Func<Identity.PeerId, string?, bool>? reaches = null)
    {
        ref var e = ref CollectionsMarshal.GetValueRefOrNullRef(_messages, id);
        if (Unsafe.IsNullRef(ref e) || (e.Audience is not null && reaches is not null && !reaches(peer, e.Audience)))
        {
            return null;
        }
        return e.Fetch(peer, limit) ? e.Message : null;
    }

    /// <summary>How many times <paramref name="peer"/> fetched the cached message (tests); 0 when it did not or the message is not cached.</summary>
    internal int Fetches(MessageId id, Identity.PeerId peer)
    {
        ref var e = ref CollectionsMarshal.GetValueRefOrNullRef(_messages, id);
        return Unsafe.IsNullRef(ref e) ? 0 : e.FetchesBy(peer);
    }

    /// <summary>The audience a cached message was put with; null for one without (or not cached).</summary>
    public string? AudienceOf(MessageId id) => _messages.TryGetValue(id, out var e) ? e.Audience : null;

    /// <summary>Ids of the topic's messages in the gossip windows.</summary>
    public List<MessageId> GossipIds(string topic)
    {
        var ids = new List<MessageId>();
        for (var i = 0; i < _gossip; i++)
        {
            foreach (var id in Window(i))
            {
                if (_messages[id].Message.Topic == topic)
                {
                    ids.Add(id);
                }
            }
        }
        return ids;
    }

    public void Shift()
    {
        var last = Window(_history.Length - 1);
        foreach (var id in last)
        {
            _messages.Remove(id);
        }
        var held = last.Count;
        last.Clear();
        if (Slack.TrimTo(held, last.Capacity, MinTrimmedCapacity) is > 0 and var slots)
        {
            last.Capacity = slots; // a window a burst grew gives its slots back once it holds a quarter of them
        }
        _newest = (_newest + _history.Length - 1) % _history.Length; // the emptied oldest window is the newest now
        if (Slack.TrimTo(_messages.Count, _messages.EnsureCapacity(0), MinTrimmedCapacity) is > 0 and var table)
        {
            _messages.TrimExcess(table); // as the seen table: a table never shrinks by itself
        }
    }

    /// <summary>A table or window of at most this many slots is never trimmed.</summary>
    private const int MinTrimmedCapacity = 64;

    /// <summary>For tests: the slots the table and the windows hold.</summary>
    internal (int Table, int Windows) Capacity => (_messages.EnsureCapacity(0), _history.Sum(w => w.Capacity));

    private List<MessageId> Window(int age) => _history[(_newest + age) % _history.Length];

    /// <summary>A cached message: inline in the table.</summary>
    private struct Entry(Pb.Message message, string? audience)
    {
        public readonly Pb.Message Message = message;
        public readonly string? Audience = audience;
        /// <summary>The peers that fetched the message (IWANT) and how often, unused slots default; null until the first.</summary>
        private Fetched[]? _fetched;

        /// <summary>Counts one more fetch by <paramref name="peer"/>; false (nothing counted) when it would be over <paramref name="limit"/>.</summary>
        public bool Fetch(Identity.PeerId peer, int limit)
        {
            var slots = _fetched ??= new Fetched[1];
            var free = -1;
            for (var i = 0; i < slots.Length; i++)
            {
                if (slots[i].Peer.IsEmpty)
                {
                    free = free < 0 ? i : free;
                    continue;
                }
                if (slots[i].Peer.Equals(peer))
                {
                    if (slots[i].Count + 1 > limit)
                    {
                        return false;
                    }
                    slots[i].Count++;
                    return true;
                }
            }
            if (limit < 1)
            {
                return false;
            }
            if (free < 0)
            {
                free = slots.Length;
                Array.Resize(ref _fetched, slots.Length * 2);
                slots = _fetched;
            }
            slots[free] = new Fetched(peer, 1);
            return true;
        }

        public readonly int FetchesBy(Identity.PeerId peer)
        {
            foreach (var f in _fetched ?? [])
            {
                if (!f.Peer.IsEmpty && f.Peer.Equals(peer))
                {
                    return f.Count;
                }
            }
            return 0;
        }
    }

    private struct Fetched(Identity.PeerId peer, int count)
    {
        public readonly Identity.PeerId Peer = peer;
        public int Count = count;
    }
}

/// <summary>
/// A message id as the seen table keeps it: the first 16 bytes of SHA-256 over a secret key of the node's and the id
/// (<see cref="SeenKeys"/>), 16 bytes inline instead of a reference to the id's array (72 bytes of id and 24 of array
/// header for the default id), so a seen message no longer keeps its id alive for the seen TTL.
/// </summary>
internal readonly struct SeenKey(ulong high, ulong low) : IEquatable<SeenKey>
{
    private readonly ulong _high = high;
    private readonly ulong _low = low;

    /// <summary>The digest's first 64 bits: a settled entry's key (<see cref="SettledTable"/>).</summary>
    internal ulong High => _high;

    public bool Equals(SeenKey other) => _high == other._high && _low == other._low;

    public override bool Equals(object? obj) => obj is SeenKey k && Equals(k);

    /// <summary>Bits of a keyed digest: an attacker who does not know the key cannot aim ids at one bucket.</summary>
    public override int GetHashCode() => (int)_low ^ (int)(_low >> 32);

    public override string ToString() => $"{_high:x16}{_low:x16}";

    public static bool operator ==(SeenKey a, SeenKey b) => a.Equals(b);

    public static bool operator !=(SeenKey a, SeenKey b) => !a.Equals(b);
}

/// <summary>
/// Turns message ids into <see cref="SeenKey"/>s: SHA-256(key ‖ id) truncated to 128 bits, with a 16-byte secret key
/// per router. Why keyed: two ids with one digest are one message to the seen table, so whoever can make an id collide
/// with an honest message's can have that message dropped as a duplicate. With the key secret (the node's security
/// randomness, never sent) nobody can compute a digest, let alone search for a collision offline; chance collisions
/// are at 2^-128 per pair (a node holding a million ids: ~10^-27). Without a key, SHA-256 truncated to 128 bits would
/// still need a second preimage (2^128 work) against a fixed honest id, but a precomputed collision would hold on
/// every node at once; keyed, each node collides (if ever) on different pairs. The key is never revealed, so the
/// secret-prefix construction's length extension gives nothing (and the output is truncated besides).
/// </summary>
internal sealed class SeenKeys
{
    private const int KeyLength = 16;
    private readonly byte[] _key;

    /// <param name="key">At least 16 secret bytes (the first 16 are used); null: 16 from the OS's generator.</param>
    public SeenKeys(ReadOnlySpan<byte> key)
    {
        if (key.Length < KeyLength)
        {
            throw new ArgumentException($"a seen-table key has {KeyLength} bytes", nameof(key));
        }
        _key = key[..KeyLength].ToArray();
    }

    /// <summary>A key from the OS's generator (routers built without one: tests, router-only simulations). Nothing observable depends on which key.</summary>
    public static SeenKeys Random() => new(System.Security.Cryptography.RandomNumberGenerator.GetBytes(KeyLength));

    public SeenKey Of(MessageId id) => Of(id.Span);

    public SeenKey Of(ReadOnlySpan<byte> id)
    {
        var length = KeyLength + id.Length;
        byte[]? rented = null;
        Span<byte> input = length <= 512 ? stackalloc byte[length] : (rented = System.Buffers.ArrayPool<byte>.Shared.Rent(length)).AsSpan(0, length);
        _key.CopyTo(input);
        id.CopyTo(input[KeyLength..]);
        Span<byte> digest = stackalloc byte[32];
        System.Security.Cryptography.SHA256.HashData(input, digest);
        if (rented is not null)
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(rented);
        }
        return new SeenKey(System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(digest),
            System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(digest[8..]));
    }
}

/// <summary>
/// Message ids seen recently, each forgotten <c>ttl</c> after it was first seen, and with each the record that peer
/// scoring keeps of its delivery (<see cref="PeerScore"/>): one table for both, since both are keyed by the message id
/// and live as long (go-libp2p and js keep them apart: a time cache of ids and a map of delivery records, each with its
/// own expiry queue). One entry is the id's 16-byte keyed digest (<see cref="SeenKey"/>) and a 40-byte
/// <see cref="SeenRecord"/> inline in the dictionary, the id's own array not kept (it was, for the TTL: 96 more bytes
/// for the default 72-byte id). A valid message past every topic's mesh delivery window only has to answer "seen?"
/// (<see cref="PeerScore"/> records no later copy of it): it is <see cref="Settle"/>d into a table of 64 bits of the
/// digest and the expiry (<see cref="SettledTable"/>: a 12-byte slot); it answers and expires exactly as before.
/// <para>
/// No expiry queue: <see cref="Prune"/> sweeps both tables when the earliest expiry they hold has come (at most once
/// per call, i.e. per heartbeat), which forgets exactly what a queue in order of arrival would have (every entry's
/// expiry is its arrival plus the one TTL) without its 16 bytes per entry; and a table that a burst grew is trimmed
/// once a quarter of it is in use (a dictionary never shrinks by itself, so the table's size was its busiest minute's).
/// The full records' table is also trimmed so at each heartbeat, once its valid messages have settled
/// (<see cref="GiveBackSlack"/>): it holds little more than the last heartbeat's messages, and a burst's slots (64 bytes
/// each) were otherwise kept until the first expiry came, 120 s after the node's first message.
/// </para>
/// </summary>
internal sealed class SeenCache(TimeSpan ttl, SeenKeys keys)
{
    /// <summary>Tables of at most this many slots are never trimmed.</summary>
    private const int MinTrimmedCapacity = 64;

    /// <summary>The full records' table is never trimmed below this many slots at a heartbeat (<see cref="GiveBackSlack"/>).</summary>
    internal const int MinFullCapacity = 16;

    private readonly Dictionary<SeenKey, SeenRecord> _seen = [];
    /// <summary>Settled valid messages: 64 bits of the digest and the expiry (UTC ticks) are kept.</summary>
    private readonly SettledTable _settled = new();
    /// <summary>No entry expires before this (UTC ticks); <see cref="long.MaxValue"/> when there is none.</summary>
    private long _earliestExpiry = long.MaxValue;

    public TimeSpan Ttl => ttl;

    public int Count => _seen.Count + _settled.Count;

    /// <summary>For tests and diagnostics: entries with a full record, and settled ones (digest and expiry only).</summary>
    internal (int Full, int Settled) Entries => (_seen.Count, _settled.Count);

    /// <summary>For tests and diagnostics: the slots the two tables hold (full records, settled entries).</summary>
    internal (int Full, int Settled) Capacity => (_seen.EnsureCapacity(0), _settled.Capacity);

    /// <summary>The id's key in this table (hash it once per id and pass the key around).</summary>
    public SeenKey KeyOf(MessageId id) => keys.Of(id);

    /// <summary>The id's key in this table.</summary>
    public SeenKey KeyOf(ReadOnlySpan<byte> id) => keys.Of(id);

    public bool Contains(SeenKey id) => _seen.ContainsKey(id) || _settled.Contains(id.High);

    /// <summary>Whether the id is there as a settled valid message (past every window; no peers kept).</summary>
    public bool IsSettled(SeenKey id) => _settled.Contains(id.High);

    /// <summary>Adds the id; false when it was already there.</summary>
    public bool Add(SeenKey id, DateTimeOffset now)
    {
        if (_settled.Contains(id.High))
        {
            return false;
        }
        ref var record = ref CollectionsMarshal.GetValueRefOrAddDefault(_seen, id, out var exists);
        if (exists)
        {
            return false;
        }
        record.Expiry = Expiry(now);
        return true;
    }

    /// <summary>The id's record, added (as seen now) when it is not there. Valid until the table next changes.</summary>
    public ref SeenRecord GetOrAdd(SeenKey id, DateTimeOffset now)
    {
        ref var record = ref CollectionsMarshal.GetValueRefOrAddDefault(_seen, id, out var exists);
        if (!exists)
        {
            if (_settled.Remove(id.High, out var expiry))
            {
                // A settled message's record again (the router never scores a message twice): valid, validated before
                // any window, no peers (what its record held when it was settled); its expiry is kept.
                record.Expiry = expiry;
                record.Status = DeliveryStatus.Valid;
                record.Validated = 0;
            }
            else
            {
                record.Expiry = Expiry(now);
            }
        }
        return ref record;
    }

    /// <summary>
    /// Keeps only the id's expiry (a valid message past every window: no later copy records anything); the record's
    /// peers are let go of. Nothing when the id has no full record.
    /// </summary>
    public void Settle(SeenKey id)
    {
        if (_seen.Remove(id, out var record))
        {
            _settled.Add(id.High, record.Expiry);
        }
    }

    /// <summary>
    /// Gives back the full records' slots a burst left (a quarter or less in use: trimmed to twice the records, at least
    /// <see cref="MinFullCapacity"/>): called at each heartbeat once valid messages have settled, when the table holds
    /// what is still inside a window, invalid messages and those not scored. Nothing is forgotten; only slots go.
    /// </summary>
    public void GiveBackSlack()
    {
        if (Slack.TrimTo(_seen.Count, _seen.EnsureCapacity(0), MinFullCapacity) is > 0 and var slots)
        {
            _seen.TrimExcess(slots);
        }
    }

    /// <summary>The id's record, or a null reference (<see cref="Unsafe.IsNullRef{T}(ref readonly T)"/>) when it is not there.</summary>
    public ref SeenRecord Find(SeenKey id) => ref CollectionsMarshal.GetValueRefOrNullRef(_seen, id);

    /// <summary>
    /// Forgets the ids whose time is up (expiry at or before <paramref name="now"/>): nothing to do until the earliest
    /// expiry held, then one sweep of both tables (removing while enumerating is allowed for <see cref="Dictionary{TKey, TValue}"/>).
    /// </summary>
    public void Prune(DateTimeOffset now)
    {
        var ticks = now.UtcTicks;
        if (ticks < _earliestExpiry)
        {
            return;
        }
        var earliest = long.MaxValue;
        foreach (var (key, record) in _seen)
        {
            if (record.Expiry <= ticks)
            {
                _seen.Remove(key);
            }
            else if (record.Expiry < earliest)
            {
                earliest = record.Expiry;
            }
        }
        earliest = Math.Min(earliest, _settled.RemoveExpired(ticks));
        _earliestExpiry = earliest;
        TrimWhenSparse(_seen);
    }

    private long Expiry(DateTimeOffset now)
    {
        var expiry = (now + ttl).UtcTicks;
        if (expiry < _earliestExpiry)
        {
            _earliestExpiry = expiry;
        }
        return expiry;
    }

    /// <summary>Halves a table's slots (to twice its entries) once a quarter or less of them are in use.</summary>
    private static void TrimWhenSparse(Dictionary<SeenKey, SeenRecord> table)
    {
        if (Slack.TrimTo(table.Count, table.EnsureCapacity(0), MinTrimmedCapacity) is > 0 and var slots)
        {
            table.TrimExcess(slots);
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
