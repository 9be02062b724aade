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

/// <summary>Provider records: key → peers that said they can provide it, each with an expiry. Bounded; not thread-safe.</summary>
public sealed class ProviderStore
{
    private readonly Dictionary<string, Dictionary<PeerId, DateTimeOffset>> _providers = new(StringComparer.Ordinal);
    private readonly int _maxKeys;
    private readonly int _maxProvidersPerKey;

    public ProviderStore(int maxKeys, int maxProvidersPerKey)
    {
        _maxKeys = maxKeys;
        _maxProvidersPerKey = maxProvidersPerKey;
    }

    public int KeyCount => _providers.Count;

    /// <summary>Adds or renews a provider; false when the store or that key is full (existing providers are kept).</summary>
    public bool Add(ReadOnlySpan<byte> key, PeerId provider, DateTimeOffset expires)
    {
        var id = Convert.ToBase64String(key);
        if (!_providers.TryGetValue(id, out var set))
        {
            if (_providers.Count >= _maxKeys)
            {
                return false;
            }
            _providers[id] = set = [];
        }
        if (!set.ContainsKey(provider) && set.Count >= _maxProvidersPerKey)
        {
            return false;
        }
        set[provider] = expires;
        return true;
    }

    public IReadOnlyList<PeerId> Get(ReadOnlySpan<byte> key, DateTimeOffset now) =>
        _providers.TryGetValue(Convert.ToBase64String(key), out var set)
            ? set.Where(kv => kv.Value > now).Select(kv => kv.Key).ToArray()
            : [];

    public int RemoveExpired(DateTimeOffset now)
    {
        var removed = 0;
        foreach (var (id, set) in _providers.ToArray())
        {
            foreach (var (peer, expires) in set.ToArray())
            {
                if (expires <= now)
                {
                    set.Remove(peer);
                    removed++;
                }
            }
            if (set.Count == 0)
            {
                _providers.Remove(id);
            }
        }
        return removed;
    }
}
