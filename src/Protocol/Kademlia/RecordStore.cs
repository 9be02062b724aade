using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Kademlia;

/// <summary>A stored value record. <see cref="IsLocal"/>: published by this node, so republished rather than expired.</summary>
public sealed record KadRecord(byte[] Key, byte[] Value, DateTimeOffset Received, bool IsLocal, DateTimeOffset LastPublished);

public enum StoreResult
{
    Stored,
    /// <summary>The store holds its maximum of keys.</summary>
    Full,
    TooLarge,
}

/// <summary>Value records by key, bounded in count and size; expiry by age. Not thread-safe (the owner locks).</summary>
public sealed class RecordStore
{
    private readonly Dictionary<string, KadRecord> _records = new(StringComparer.Ordinal);
    private readonly int _maxRecords;
    private readonly int _maxValueSize;

    public RecordStore(int maxRecords, int maxValueSize)
    {
        _maxRecords = maxRecords;
        _maxValueSize = maxValueSize;
    }

    public int Count => _records.Count;

    public StoreResult Put(byte[] key, byte[] value, DateTimeOffset now, bool isLocal)
    {
        if (value.Length > _maxValueSize)
        {
            return StoreResult.TooLarge;
        }
        var id = Convert.ToBase64String(key);
        var existing = _records.GetValueOrDefault(id);
        if (existing is null && _records.Count >= _maxRecords)
        {
            return StoreResult.Full;
        }
        var local = isLocal || existing?.IsLocal == true;
        _records[id] = new KadRecord(key, value, now, local, isLocal ? now : existing?.LastPublished ?? now);
        return StoreResult.Stored;
    }

    public KadRecord? Get(ReadOnlySpan<byte> key) => _records.GetValueOrDefault(Convert.ToBase64String(key));

    public void MarkPublished(ReadOnlySpan<byte> key, DateTimeOffset now)
    {
        var id = Convert.ToBase64String(key);
        if (_records.TryGetValue(id, out var r))
        {
            _records[id] = r with { LastPublished = now };
        }
    }

    /// <summary>Drops records received from others more than <paramref name="ttl"/> ago; returns how many.</summary>
    public int RemoveExpired(DateTimeOffset now, TimeSpan ttl)
    {
        var expired = _records.Where(kv => !kv.Value.IsLocal && now - kv.Value.Received >= ttl).Select(kv => kv.Key).ToList();
        foreach (var id in expired)
        {
            _records.Remove(id);
        }
        return expired.Count;
    }

    /// <summary>Local records whose last publication is at least <paramref name="interval"/> old.</summary>
    public IReadOnlyList<KadRecord> DueForRepublish(DateTimeOffset now, TimeSpan interval) =>
        _records.Values.Where(r => r.IsLocal && now - r.LastPublished >= interval).ToArray();
}

/// <summary>
/// Provider records: key → peers that said they can provide it, each with an expiry. Bounded; not thread-safe.
/// A key's providers are one exactly sized array of (peer, expiry ticks), oldest first, not a dictionary of its own: 16
/// bytes a provider instead of ~70 (a dictionary's entries, buckets and headroom, then its object), since a key holds at
/// most <c>maxProvidersPerKey</c> (20 by default) and a linear scan of them is cheaper than hashing. A new provider
/// copies the key's array (at most that many entries).
/// </summary>
public sealed class ProviderStore
{
    private readonly Dictionary<string, Provider[]> _providers = new(StringComparer.Ordinal);
    private readonly int _maxKeys;
    private readonly int _maxProvidersPerKey;

    private readonly record struct Provider(PeerId Peer, long ExpiresTicks);

    public ProviderStore(int maxKeys, int maxProvidersPerKey)
    {
        _maxKeys = maxKeys;
        _maxProvidersPerKey = maxProvidersPerKey;
    }

    public int KeyCount => _providers.Count;

    /// <summary>Slots the key's providers take (each a provider held, expired ones included until <see cref="RemoveExpired"/>).</summary>
    internal int ProviderSlots(ReadOnlySpan<byte> key) =>
        _providers.TryGetValue(Convert.ToBase64String(key), out var set) ? set.Length : 0;

    /// <summary>Adds or renews a provider; false when the store or that key is full (existing providers are kept).</summary>
    public bool Add(ReadOnlySpan<byte> key, PeerId provider, DateTimeOffset expires)
    {
        var id = Convert.ToBase64String(key);
        if (!_providers.TryGetValue(id, out var set))
        {
            if (_providers.Count >= _maxKeys || _maxProvidersPerKey < 1)
            {
                return false;
            }
            _providers[id] = [new Provider(provider, expires.UtcTicks)];
            return true;
        }
        for (var i = 0; i < set.Length; i++)
        {
            if (set[i].Peer.Equals(provider))
            {
                set[i] = new Provider(provider, expires.UtcTicks);
                return true;
            }
        }
        if (set.Length >= _maxProvidersPerKey)
        {
            return false;
        }
        var grown = new Provider[set.Length + 1];
        set.CopyTo(grown, 0);
        grown[^1] = new Provider(provider, expires.UtcTicks);
        _providers[id] = grown;
        return true;
    }

    public IReadOnlyList<PeerId> Get(ReadOnlySpan<byte> key, DateTimeOffset now)
    {
        if (!_providers.TryGetValue(Convert.ToBase64String(key), out var set))
        {
            return [];
        }
        var ticks = now.UtcTicks;
        var live = 0;
        foreach (var p in set)
        {
            live += p.ExpiresTicks > ticks ? 1 : 0;
        }
        var result = new PeerId[live];
        var n = 0;
        foreach (var p in set)
        {
            if (p.ExpiresTicks > ticks)
            {
                result[n++] = p.Peer;
            }
        }
        return result;
    }

    public int RemoveExpired(DateTimeOffset now)
    {
        var ticks = now.UtcTicks;
        var removed = 0;
        List<string>? emptied = null;
        List<(string Id, Provider[] Kept)>? shrunk = null;
        foreach (var (id, set) in _providers)
        {
            var live = 0;
            foreach (var p in set)
            {
                live += p.ExpiresTicks > ticks ? 1 : 0;
            }
            if (live == set.Length)
            {
                continue;
            }
            removed += set.Length - live;
            if (live == 0)
            {
                (emptied ??= []).Add(id);
                continue;
            }
            var kept = new Provider[live];
            var n = 0;
            foreach (var p in set)
            {
                if (p.ExpiresTicks > ticks)
                {
                    kept[n++] = p;
                }
            }
            (shrunk ??= []).Add((id, kept));
        }
        foreach (var (id, kept) in shrunk ?? [])
        {
            _providers[id] = kept;
        }
        foreach (var id in emptied ?? [])
        {
            _providers.Remove(id);
        }
        return removed;
    }
}
