using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Verification;

/// <summary>A provider's record as this node has seen it.</summary>
/// <param name="ConsecutiveVerified">Results verified in a row since the last failure or inconclusive check.</param>
/// <param name="Verified">Results verified in all.</param>
/// <param name="Unchecked">Results accepted without a check.</param>
/// <param name="Failures">Leases that failed, expired or were cancelled by the provider.</param>
/// <param name="RefusedReason">Why the provider is refused, or null.</param>
public sealed record ProviderRecord(int ConsecutiveVerified, int Verified, int Unchecked, int Failures, string? RefusedReason)
{
    public static ProviderRecord Empty { get; } = new(0, 0, 0, 0, null);

    public bool IsRefused => RefusedReason is not null;
}

/// <summary>
/// Per-provider verification streaks, failures and the refused set, in memory; <see cref="ReputationJournal"/> keeps
/// them in <c>reputation.db</c> across restarts (changed records are handed over by <see cref="TakeChanges"/>), and
/// refusals also arrive as fraud proofs on <see cref="FraudProtocol.Topic"/>. Reputation for ranking is
/// <c>1 − 1/(verified + 2)</c>, lowered by failures, and 0 once refused. Bounded by
/// <see cref="MaxProviders"/>: when full, strangers (nothing verified, no refusal) are forgotten first, least recently
/// updated first, then other providers without a refusal; a refusal is never dropped for a stranger's record, and a new
/// refusal in a store full of refusals replaces the oldest one rather than being lost. Thread-safe.
/// </summary>
public sealed class ReputationStore
{
    private readonly Lock _gate = new();
    private readonly Dictionary<PeerId, ProviderRecord> _records = [];
    private readonly HashSet<PeerId> _changed = [];
    private readonly Dictionary<PeerId, long> _updated = [];
    private long _clock;

    public ReputationStore(int maxProviders = 100_000)
    {
        MaxProviders = maxProviders;
    }

    public int MaxProviders { get; }

    /// <summary>Raised (outside the lock) when a provider is first refused.</summary>
    public event Action<PeerId, string>? Refused;

    /// <summary>Puts back records saved earlier (not reported as changes); records already held win.</summary>
    public void Restore(IEnumerable<KeyValuePair<PeerId, ProviderRecord>> records)
    {
        ArgumentNullException.ThrowIfNull(records);
        lock (_gate)
        {
            foreach (var (provider, record) in records)
            {
                if (!_records.ContainsKey(provider) && _records.Count < MaxProviders)
                {
                    _records[provider] = record;
                    _updated[provider] = ++_clock;
                }
            }
        }
    }

    /// <summary>The records changed since the last call, for saving.</summary>
    public IReadOnlyCollection<KeyValuePair<PeerId, ProviderRecord>> TakeChanges()
    {
        lock (_gate)
        {
            var changes = new List<KeyValuePair<PeerId, ProviderRecord>>(_changed.Count);
            foreach (var provider in _changed)
            {
                if (_records.TryGetValue(provider, out var record))
                {
                    changes.Add(new(provider, record));
                }
            }
            _changed.Clear();
            return changes;
        }
    }

    public ProviderRecord Get(PeerId provider)
    {
        lock (_gate)
        {
            return _records.GetValueOrDefault(provider) ?? ProviderRecord.Empty;
        }
    }

    public bool IsRefused(PeerId provider) => Get(provider).IsRefused;

    /// <summary>Providers refused so far.</summary>
    public IReadOnlyList<PeerId> RefusedProviders()
    {
        lock (_gate)
        {
            return [.. _records.Where(kv => kv.Value.IsRefused).Select(kv => kv.Key)];
        }
    }

    /// <summary>In [0, 1], for <see cref="Matching.ProviderSelector"/>.</summary>
    public double Reputation(PeerId provider)
    {
        var r = Get(provider);
        if (r.IsRefused)
        {
            return 0;
        }
        var trust = 1.0 - 1.0 / (r.Verified + 2);
        return trust / (1 + r.Failures);
    }

    public void RecordVerified(PeerId provider) =>
        Update(provider, r => r with { ConsecutiveVerified = r.ConsecutiveVerified + 1, Verified = r.Verified + 1 });

    public void RecordUnchecked(PeerId provider) => Update(provider, r => r with { Unchecked = r.Unchecked + 1 });

    /// <summary>A check that could not decide (non-deterministic outcome): the streak starts over.</summary>
    public void RecordInconclusive(PeerId provider) => Update(provider, r => r with { ConsecutiveVerified = 0 });

    public void RecordFailure(PeerId provider) => Update(provider, r => r with { Failures = r.Failures + 1 });

    /// <summary>Refuses the provider from now on; returns false when it was refused already.</summary>
    public bool Refuse(PeerId provider, string reason)
    {
        bool first;
        lock (_gate)
        {
            var r = _records.GetValueOrDefault(provider) ?? ProviderRecord.Empty;
            first = !r.IsRefused;
            if (first)
            {
                Store(provider, r with { ConsecutiveVerified = 0, RefusedReason = reason });
            }
        }
        if (first)
        {
            Refused?.Invoke(provider, reason);
        }
        return first;
    }

    private void Update(PeerId provider, Func<ProviderRecord, ProviderRecord> change)
    {
        lock (_gate)
        {
            var r = _records.GetValueOrDefault(provider) ?? ProviderRecord.Empty;
            if (!r.IsRefused)
            {
                Store(provider, change(r));
            }
        }
    }

    private void Store(PeerId provider, ProviderRecord record)
    {
        if (!_records.ContainsKey(provider) && _records.Count >= MaxProviders)
        {
            var victim = Oldest(r => !r.IsRefused && r.Verified == 0)
                ?? Oldest(r => !r.IsRefused)
                ?? (record.IsRefused ? Oldest(_ => true) : null);
            if (victim is not { } v)
            {
                return; // full of refusals: a record that is not one is not worth forgetting one for
            }
            _records.Remove(v);
            _changed.Remove(v);
            _updated.Remove(v);
        }
        _records[provider] = record;
        _changed.Add(provider);
        _updated[provider] = ++_clock;
    }

    /// <summary>The least recently updated provider whose record matches, or null.</summary>
    private PeerId? Oldest(Func<ProviderRecord, bool> match)
    {
        PeerId? oldest = null;
        var at = long.MaxValue;
        foreach (var (provider, record) in _records)
        {
            if (match(record) && _updated.GetValueOrDefault(provider) < at)
            {
                oldest = provider;
                at = _updated.GetValueOrDefault(provider);
            }
        }
        return oldest;
    }
}
