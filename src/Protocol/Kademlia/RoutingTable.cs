using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Kademlia;

/// <summary>What <see cref="RoutingTable.AddOrRefresh"/> did.</summary>
public enum RoutingUpdateKind
{
    /// <summary>The peer is new and took a free slot.</summary>
    Added,
    /// <summary>The peer was already in the table and is now its bucket's most recently seen.</summary>
    Refreshed,
    /// <summary>
    /// The bucket is full: the peer waits in the bucket's replacement cache. The caller should probe
    /// <see cref="RoutingUpdate.ProbeCandidate"/> (the least recently seen entry) and call
    /// <see cref="RoutingTable.Remove"/> if it does not answer, or <see cref="RoutingTable.AddOrRefresh"/> if it does.
    /// </summary>
    Pending,
    /// <summary>The peer is the local peer, never stored.</summary>
    Rejected,
}

public readonly record struct RoutingUpdate(RoutingUpdateKind Kind, PeerId? ProbeCandidate = null);

/// <summary>
/// The Kademlia routing table: 256 k-buckets indexed by the common prefix length of SHA-256(peer id) with the
/// local key, each ordered least recently seen first, each with a small replacement cache that refills it when
/// an unresponsive peer is removed (the Kademlia paper's policy). Pure data structure: time comes in as
/// arguments; not thread-safe (the owner locks).
/// </summary>
public sealed class RoutingTable
{
    public const int BucketCount = 256;

    // Grown to the deepest bucket holding a peer so far, not 256 places from the start (2 KiB a node): with N peers in
    // the network the buckets past about log2(N) + 3 stay empty (8–24 places in a mesh of 100–10,000). A refresh mark
    // on a bucket past the array (a lookup for our own key marks bucket 255) is kept aside until the array reaches it.
    private Bucket?[] _buckets = [];
    private Dictionary<int, DateTimeOffset>? _refreshedPast;
    private readonly Dictionary<PeerId, Entry> _index = [];
    private readonly int _replacementCacheSize;
    private int _selfCoveredFrom = BucketCount;
    private DateTimeOffset _selfCoveredAt = DateTimeOffset.MinValue;

    public RoutingTable(PeerId local, int bucketSize = 20, int replacementCacheSize = 5)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bucketSize, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(replacementCacheSize);
        Local = local;
        LocalKey = KadKey.FromPeer(local);
        BucketSize = bucketSize;
        _replacementCacheSize = replacementCacheSize;
    }

    public PeerId Local { get; }

    public KadKey LocalKey { get; }

    /// <summary>k: the most peers one bucket holds.</summary>
    public int BucketSize { get; }

    public int Count => _index.Count;

    public bool Contains(PeerId peer) => _index.ContainsKey(peer);

    /// <summary>The bucket a key falls in: its common prefix length with the local key (0…255).</summary>
    public int BucketIndexOf(KadKey key) => Math.Min(LocalKey.CommonPrefixLength(key), BucketCount - 1);

    public RoutingUpdate AddOrRefresh(PeerId peer)
    {
        if (peer == Local || peer.IsEmpty)
        {
            return new RoutingUpdate(RoutingUpdateKind.Rejected);
        }
        if (_index.TryGetValue(peer, out var existing))
        {
            var home = BucketAt(existing.BucketIndex)!;
            home.Entries.Remove(existing);
            home.Entries.Add(existing);
            return new RoutingUpdate(RoutingUpdateKind.Refreshed);
        }
        var key = KadKey.FromPeer(peer);
        var index = BucketIndexOf(key);
        var bucket = OpenBucket(index);
        if (bucket.Entries.Count < BucketSize)
        {
            var entry = new Entry(peer, key, index);
            bucket.Entries.Add(entry);
            _index[peer] = entry;
            bucket.Replacements.RemoveAll(r => r.Peer == peer);
            return new RoutingUpdate(RoutingUpdateKind.Added);
        }
        bucket.Replacements.RemoveAll(r => r.Peer == peer);
        if (_replacementCacheSize > 0)
        {
            if (bucket.Replacements.Count >= _replacementCacheSize)
            {
                bucket.Replacements.RemoveAt(0);
            }
            bucket.Replacements.Add(new Entry(peer, key, index));
        }
        return new RoutingUpdate(RoutingUpdateKind.Pending, bucket.Entries[0].Peer);
    }

    /// <summary>Removes the peer; its bucket takes the most recently seen peer from its replacement cache.</summary>
    public bool Remove(PeerId peer) => Remove(peer, out _);

    public bool Remove(PeerId peer, out PeerId? promoted)
    {
        promoted = null;
        if (!_index.Remove(peer, out var entry))
        {
            return false;
        }
        var bucket = BucketAt(entry.BucketIndex)!;
        bucket.Entries.Remove(entry);
        if (bucket.Replacements.Count > 0)
        {
            var replacement = bucket.Replacements[^1];
            bucket.Replacements.RemoveAt(bucket.Replacements.Count - 1);
            bucket.Entries.Add(replacement);
            _index[replacement.Peer] = replacement;
            promoted = replacement.Peer;
        }
        return true;
    }

    /// <summary>Up to <paramref name="count"/> peers closest to <paramref name="target"/>, closest first.</summary>
    public IReadOnlyList<PeerId> Closest(KadKey target, int count, PeerId? exclude = null)
    {
        if (count <= 0 || _index.Count == 0)
        {
            return [];
        }
        var all = new List<(KadDistance Distance, PeerId Peer)>(_index.Count);
        foreach (var entry in _index.Values)
        {
            if (exclude is { } x && entry.Peer == x)
            {
                continue;
            }
            all.Add((entry.Key.DistanceTo(target), entry.Peer));
        }
        all.Sort((a, b) => a.Distance.CompareTo(b.Distance));
        var n = Math.Min(count, all.Count);
        var result = new PeerId[n];
        for (var i = 0; i < n; i++)
        {
            result[i] = all[i].Peer;
        }
        return result;
    }

    /// <summary>The peers of one bucket, least recently seen first.</summary>
    public IReadOnlyList<PeerId> PeersInBucket(int index) =>
        BucketAt(index) is { } b ? b.Entries.Select(e => e.Peer).ToArray() : [];

    public IReadOnlyList<PeerId> ReplacementsInBucket(int index) =>
        BucketAt(index) is { } b ? b.Replacements.Select(e => e.Peer).ToArray() : [];

    public IReadOnlyList<PeerId> AllPeers() => _index.Keys.ToArray();

    /// <summary>The highest bucket index holding a peer, or -1 when empty.</summary>
    public int HighestOccupiedBucket()
    {
        for (var i = _buckets.Length - 1; i >= 0; i--)
        {
            if (_buckets[i] is { Entries.Count: > 0 })
            {
                return i;
            }
        }
        return -1;
    }

    /// <summary>
    /// Buckets 0…min(highest occupied + 1, <paramref name="maxIndex"/>) not refreshed within <paramref name="interval"/>,
    /// as go-libp2p-kad-dht refreshes up to a maximum common prefix length. A bucket counts as refreshed when a lookup
    /// for a key in it finished (<see cref="MarkRefreshed"/>) or when a lookup for our own key covered it
    /// (<see cref="MarkCoveredBySelfLookup"/>). With <paramref name="skipFull"/>, buckets already holding k peers are
    /// left out too (a bootstrap need not look for peers where it has all it can keep).
    /// </summary>
    public IReadOnlyList<int> BucketsDueForRefresh(DateTimeOffset now, TimeSpan interval, int maxIndex, bool skipFull = false)
    {
        var top = Math.Min(HighestOccupiedBucket() + 1, Math.Min(maxIndex, BucketCount - 1));
        var due = new List<int>();
        for (var i = 0; i <= top; i++)
        {
            if (now - LastRefreshed(i) >= interval && !(skipFull && CountInBucket(i) >= BucketSize))
            {
                due.Add(i);
            }
        }
        return due;
    }

    /// <summary>
    /// When bucket <paramref name="index"/> was last refreshed: a lookup for a key in it finished (<see cref="MarkRefreshed"/>)
    /// or a lookup for our own key covered it (<see cref="MarkCoveredBySelfLookup"/>); <see cref="DateTimeOffset.MinValue"/> if never.
    /// </summary>
    public DateTimeOffset LastRefreshed(int index)
    {
        var last = BucketAt(index)?.LastRefreshed
            ?? (_refreshedPast is { } past && past.TryGetValue(index, out var marked) ? marked : DateTimeOffset.MinValue);
        return index >= _selfCoveredFrom && _selfCoveredAt > last ? _selfCoveredAt : last;
    }

    /// <summary>Peers in bucket <paramref name="index"/> (at most k).</summary>
    public int CountInBucket(int index) => BucketAt(index)?.Entries.Count ?? 0;

    /// <summary>
    /// Records what a finished lookup for the local key proved: <paramref name="closest"/> are the peers closest to us
    /// that answered, closest first. With k of them, every peer whose common prefix with us is longer than the k-th's
    /// is closer to us than the k-th, so the lookup met them all: the buckets above the k-th's count as refreshed now
    /// (the Kademlia paper refreshes only the buckets farther than the closest neighbour after joining). Fewer than k
    /// results prove nothing and mark nothing. Returns the lowest bucket marked (<see cref="BucketCount"/> when none).
    /// </summary>
    public int MarkCoveredBySelfLookup(IReadOnlyList<PeerId> closest, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(closest);
        if (closest.Count < BucketSize)
        {
            return BucketCount;
        }
        var kth = BucketIndexOf(KadKey.FromPeer(closest[BucketSize - 1]));
        _selfCoveredFrom = Math.Min(kth + 1, BucketCount);
        _selfCoveredAt = now;
        return _selfCoveredFrom;
    }

    /// <summary>Records that a lookup for a key in the bucket finished.</summary>
    public void MarkRefreshed(int index, DateTimeOffset now)
    {
        if (BucketAt(index) is null && index >= _buckets.Length)
        {
            (_refreshedPast ??= [])[index] = now; // no peer that deep yet: the array is not grown for a mark
            return;
        }
        OpenBucket(index).LastRefreshed = now;
    }

    /// <summary>Places of the bucket array so far: at least the deepest bucket that held a peer + 1 (tests: sized on use).</summary>
    internal int BucketPlaces => _buckets.Length;

    /// <summary>Bucket <paramref name="index"/> (0…255), or null while nothing has used it.</summary>
    private Bucket? BucketAt(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, BucketCount);
        return index < _buckets.Length ? _buckets[index] : null;
    }

    /// <summary>Bucket <paramref name="index"/> (0…255), made (and the array grown to hold it) on first use.</summary>
    private Bucket OpenBucket(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, BucketCount);
        if (index >= _buckets.Length)
        {
            Array.Resize(ref _buckets, Math.Min(BucketCount, Math.Max(index + 1, _buckets.Length * 2)));
            if (_refreshedPast is { } past)
            {
                foreach (var (i, at) in past.Where(m => m.Key < _buckets.Length).ToArray())
                {
                    (_buckets[i] ??= new Bucket()).LastRefreshed = at;
                    past.Remove(i);
                }
            }
        }
        return _buckets[index] ??= new Bucket();
    }

    /// <summary>
    /// A peer in a bucket. When it was last seen is its place in the bucket's list (least recently seen first), not a
    /// field: a time kept beside it was written on every refresh and read by nothing (64 bytes an entry, not 80).
    /// </summary>
    private sealed class Entry(PeerId peer, KadKey key, int bucketIndex)
    {
        public PeerId Peer { get; } = peer;
        public KadKey Key { get; } = key;
        public int BucketIndex { get; } = bucketIndex;
    }

    private sealed class Bucket
    {
        public List<Entry> Entries { get; } = [];
        public List<Entry> Replacements { get; } = [];
        public DateTimeOffset LastRefreshed { get; set; } = DateTimeOffset.MinValue;
    }
}
