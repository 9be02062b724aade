using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Host;

/// <summary>A rate and a burst: a token bucket that holds <see cref="Burst"/> tokens and refills at <see cref="PerSecond"/>.</summary>
public sealed record RateBudget
{
    public RateBudget() { }

    public RateBudget(double perSecond, int burst)
    {
        PerSecond = perSecond;
        Burst = burst;
    }

    /// <summary>Tokens added per second.</summary>
    public double PerSecond { get; init; } = 1;

    /// <summary>Most tokens held (what a peer may spend at once after a quiet spell).</summary>
    public int Burst { get; init; } = 1;
}

/// <summary>What a peer did wrong, each lowering its score by its penalty in <see cref="PeerBudgetOptions"/>.</summary>
public enum Misbehaviour
{
    /// <summary>Bytes that did not decode, or broke the protocol (the stream router's catch site reports these).</summary>
    Malformed,

    /// <summary>A request over its budget.</summary>
    OverBudget,

    /// <summary>A fraud proof, receipt or attestation that did not check out.</summary>
    RefusedProof,
}

/// <summary>
/// Per-peer budgets for the requests a remote can make of Potluck's own protocols, and the score that misbehaviour
/// lowers (in the spirit of gossipsub v1.1's peer scoring). Every default fits a home node: far above what an honest
/// peer asks, far below what a flood costs.
/// </summary>
public sealed record PeerBudgetOptions
{
    /// <summary>
    /// Lease requests (each request on a lease stream, and each new lease stream). Default 500/s, burst 1,000: above
    /// what one busy requester sends (the lease benchmark's ~1,000 tasks/s go to two providers), and each refused
    /// request costs the provider a decode and no signature.
    /// </summary>
    public RateBudget LeaseRequests { get; init; } = new(500, 1000);

    /// <summary>Advertisement fetches (<c>/potluck/ad/1.0.0</c>). Default 1/s, burst 5.</summary>
    public RateBudget AdFetches { get; init; } = new(1, 5);

    /// <summary>
    /// Advertisement samples (<c>/potluck/ads/sample/1.0.0</c>; each answer up to 32 envelopes). Default one per 10 s,
    /// burst 3: an honest node asks a peer once when it joins.
    /// </summary>
    public RateBudget AdSamples { get; init; } = new(0.1, 3);

    /// <summary>Receipts and notes delivered on their own streams (redelivery). Default 100/s, burst 500.</summary>
    public RateBudget Receipts { get; init; } = new(100, 500);

    /// <summary>
    /// Accounting-chain traffic: the chain's streams (proposals, batches, history, queries) and its gossiped blocks and
    /// batches, each counted per message. Default 500/s, burst 1,000, as <see cref="LeaseRequests"/>: every paid lease adds
    /// a linked pair to both parties' chains, so an honest peer sends about as many as it takes leases (at 100/s, the
    /// receipts' budget they shared before, a requester running ~300 no-op tasks/s banned both its providers within a minute).
    /// </summary>
    public RateBudget ChainRecords { get; init; } = new(500, 1000);

    /// <summary>Fraud proofs a peer forwards (each costs a re-run to check). Default one per 10 s, burst 3.</summary>
    public RateBudget FraudProofs { get; init; } = new(0.1, 3);

    /// <summary>Kademlia requests (each request message). Default 20/s, burst 100.</summary>
    public RateBudget DhtRequests { get; init; } = new(20, 100);

    /// <summary>Score lost for a malformed message. Default 10.</summary>
    public double MalformedPenalty { get; init; } = 10;

    /// <summary>Score lost for a request over budget. Default 1.</summary>
    public double OverBudgetPenalty { get; init; } = 1;

    /// <summary>Score lost for a refused proof. Default 25.</summary>
    public double RefusedProofPenalty { get; init; } = 25;

    /// <summary>A peer whose score falls to or below minus this is disconnected and banned. Default 50.</summary>
    public double BanThreshold { get; init; } = 50;

    /// <summary>How long a banned peer's connections are refused. Default 10 min.</summary>
    public TimeSpan BanDuration { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>A penalty halves in this time (misbehaviour is forgiven slowly). Default 5 min.</summary>
    public TimeSpan PenaltyHalfLife { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// Peers tracked at once; the least recently seen with no debt go first. Default 10,000. A peer whose buckets have
    /// all refilled and whose debt has decayed is forgotten sooner (a fresh state is the same): the table holds the
    /// peers that spent something lately or owe a penalty.
    /// </summary>
    public int MaxTrackedPeers { get; init; } = 10_000;

    public void Validate()
    {
        foreach (var (name, b) in Budgets())
        {
            if (!(b.PerSecond > 0) || b.Burst < 1)
            {
                throw new ArgumentOutOfRangeException(name, $"{name}: the rate must be positive and the burst at least 1");
            }
        }
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(BanThreshold, nameof(BanThreshold));
        ArgumentOutOfRangeException.ThrowIfLessThan(PenaltyHalfLife, TimeSpan.FromSeconds(1), nameof(PenaltyHalfLife));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxTrackedPeers, 1, nameof(MaxTrackedPeers));
    }

    internal IEnumerable<(string Name, RateBudget Budget)> Budgets()
    {
        yield return (PeerBudgets.LeaseRequests, LeaseRequests);
        yield return (PeerBudgets.AdFetches, AdFetches);
        yield return (PeerBudgets.AdSamples, AdSamples);
        yield return (PeerBudgets.Receipts, Receipts);
        yield return (PeerBudgets.ChainRecords, ChainRecords);
        yield return (PeerBudgets.FraudProofs, FraudProofs);
        yield return (PeerBudgets.DhtRequests, DhtRequests);
    }
}

/// <summary>
/// Per-peer token buckets for Potluck's own protocols and a misbehaviour score per peer. A request over budget is
/// refused (the caller resets the stream or drops the message) and costs a little score; malformed messages and refused
/// proofs cost more; a peer whose score reaches minus <see cref="PeerBudgetOptions.BanThreshold"/> is banned (its
/// connections closed and refused for <see cref="PeerBudgetOptions.BanDuration"/>) through <see cref="Banned"/>. Bounded:
/// at most <see cref="PeerBudgetOptions.MaxTrackedPeers"/> peers are tracked. Thread-safe; time from the host's clock.
/// </summary>
public sealed class PeerBudgets
{
    public const string LeaseRequests = "lease requests";
    public const string AdFetches = "ad fetches";
    public const string AdSamples = "ad samples";
    public const string Receipts = "receipts";
    public const string ChainRecords = "chain records";
    public const string FraudProofs = "fraud proofs";
    public const string DhtRequests = "dht requests";

    private readonly PeerBudgetOptions _options;
    private readonly TimeProvider _time;
    private readonly Dictionary<string, int> _budgetIndex;
    private readonly RateBudget[] _rates;
    private readonly Lock _gate = new();
    private readonly Dictionary<PeerId, PeerState> _peers = [];
    private readonly Dictionary<string, long> _refused = new(StringComparer.Ordinal);
    private long _bans;
    private long _lastSweep;
    private long _forgotten;
    private long _evicted;

    public PeerBudgets(PeerBudgetOptions options, TimeProvider time)
    {
        options.Validate();
        _options = options;
        _time = time;
        var budgets = options.Budgets().ToArray();
        _budgetIndex = budgets.Select((b, i) => (b.Name, i)).ToDictionary(b => b.Name, b => b.i, StringComparer.Ordinal);
        _rates = budgets.Select(b => b.Budget).ToArray();
    }

    /// <summary>Raised (outside any lock) when a peer's score falls to the threshold: the host bans and disconnects it.</summary>
    public event Action<PeerId>? Banned;

    public PeerBudgetOptions Options => _options;

    /// <summary>Whether <paramref name="name"/> names a budget.</summary>
    public bool IsBudget(string name) => _budgetIndex.ContainsKey(name);

    /// <summary>Requests refused per budget so far (for metrics).</summary>
    public IReadOnlyDictionary<string, long> Refused
    {
        get
        {
            lock (_gate)
            {
                return new Dictionary<string, long>(_refused, StringComparer.Ordinal);
            }
        }
    }

    /// <summary>Peers banned so far.</summary>
    public long Bans => Interlocked.Read(ref _bans);

    /// <summary>Peers forgotten because they were idle again (buckets full, no debt) and peers evicted at the cap, so far.</summary>
    public (long Idle, long Evicted) Forgotten
    {
        get
        {
            lock (_gate)
            {
                return (_forgotten, _evicted);
            }
        }
    }

    /// <summary>Peers tracked now.</summary>
    public int TrackedPeers
    {
        get
        {
            lock (_gate)
            {
                return _peers.Count;
            }
        }
    }

    /// <summary>
    /// Spends one token of <paramref name="budget"/> (one of this class's constants) for <paramref name="peer"/>; false
    /// when the peer is over budget (counted, and a small penalty unless <paramref name="penalise"/> is false).
    /// </summary>
    /// <param name="penalise">
    /// Whether a refusal costs the peer score. False where the peer only relays what others made (a gossip message it
    /// forwarded but did not author): the relay's volume is the network's, not its own doing, so the message is dropped
    /// at the budget but the honest relay is not pushed towards a ban (gossipsub's validation throttle drops the same way,
    /// without a score penalty).
    /// </param>
    public bool TryTake(PeerId peer, string budget, bool penalise = true)
    {
        if (!_budgetIndex.TryGetValue(budget, out var index))
        {
            throw new ArgumentException($"no budget named '{budget}'", nameof(budget));
        }
        var rate = _rates[index];
        bool banned;
        lock (_gate)
        {
            var now = _time.GetTimestamp();
            var state = StateOf(peer, now);
            ref var bucket = ref state.Buckets[index];
            var tokens = bucket.Used
                ? Math.Min(rate.Burst, bucket.Tokens + rate.PerSecond * _time.GetElapsedTime(bucket.At, now).TotalSeconds)
                : rate.Burst;
            bucket.Used = true;
            bucket.At = now;
            if (tokens >= 1)
            {
                bucket.Tokens = tokens - 1;
                return true;
            }
            bucket.Tokens = tokens;
            _refused[budget] = _refused.GetValueOrDefault(budget) + 1;
            banned = penalise && PenaliseLocked(state, _options.OverBudgetPenalty, now);
        }
        if (banned)
        {
            OnBanned(peer);
        }
        return false;
    }

    /// <summary>Lowers <paramref name="peer"/>'s score for <paramref name="what"/>; bans it when the score reaches the threshold.</summary>
    public void Penalise(PeerId peer, Misbehaviour what)
    {
        var penalty = what switch
        {
            Misbehaviour.Malformed => _options.MalformedPenalty,
            Misbehaviour.OverBudget => _options.OverBudgetPenalty,
            Misbehaviour.RefusedProof => _options.RefusedProofPenalty,
            _ => throw new ArgumentOutOfRangeException(nameof(what)),
        };
        bool banned;
        lock (_gate)
        {
            var now = _time.GetTimestamp();
            banned = PenaliseLocked(StateOf(peer, now), penalty, now);
        }
        if (banned)
        {
            OnBanned(peer);
        }
    }

    /// <summary>The peer's score now: 0 for a peer that never misbehaved, negative after penalties (decaying back towards 0).</summary>
    public double ScoreOf(PeerId peer)
    {
        lock (_gate)
        {
            return _peers.TryGetValue(peer, out var state) ? -Debt(state, _time.GetTimestamp()) : 0;
        }
    }

    private void OnBanned(PeerId peer)
    {
        Interlocked.Increment(ref _bans);
        Banned?.Invoke(peer);
    }

    private bool PenaliseLocked(PeerState state, double penalty, long now)
    {
        var debt = Debt(state, now) + penalty;
        state.Debt = debt;
        state.DebtAt = now;
        if (debt >= _options.BanThreshold)
        {
            state.Debt = 0; // the ban is the punishment; the peer starts again when it ends
            return true;
        }
        return false;
    }

    private double Debt(PeerState state, long now) =>
        state.Debt <= 0 ? 0 : state.Debt * Math.Pow(0.5, _time.GetElapsedTime(state.DebtAt, now) / _options.PenaltyHalfLife);

    private PeerState StateOf(PeerId peer, long now)
    {
        if (!_peers.TryGetValue(peer, out var state))
        {
            if (_peers.Count >= _options.MaxTrackedPeers || _time.GetElapsedTime(_lastSweep, now) >= SweepInterval)
            {
                _lastSweep = now;
                ForgetIdle(now);
            }
            if (_peers.Count >= _options.MaxTrackedPeers)
            {
                Evict(now);
            }
            _peers[peer] = state = new PeerState(_rates.Length);
        }
        state.Seen = now;
        return state;
    }

    /// <summary>How often (at most) a new peer's arrival sweeps out idle peers.</summary>
    internal static readonly TimeSpan SweepInterval = TimeSpan.FromSeconds(1);

    /// <summary>Forgets every peer whose buckets have all refilled and whose debt has decayed away: a fresh state is the same, so nothing is lost.</summary>
    private void ForgetIdle(long now)
    {
        List<PeerId>? idle = null;
        foreach (var (peer, state) in _peers)
        {
            if (IsIdle(state, now))
            {
                (idle ??= []).Add(peer);
            }
        }
        if (idle is not null)
        {
            foreach (var p in idle)
            {
                _peers.Remove(p);
            }
            _forgotten += idle.Count;
        }
    }

    private bool IsIdle(PeerState state, long now)
    {
        if (Debt(state, now) > ForgivenDebt)
        {
            return false;
        }
        for (var i = 0; i < _rates.Length; i++)
        {
            var b = state.Buckets[i];
            if (b.Used && b.Tokens + _rates[i].PerSecond * _time.GetElapsedTime(b.At, now).TotalSeconds < _rates[i].Burst)
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>A debt this small is no debt (a hundredth of the smallest default penalty).</summary>
    private const double ForgivenDebt = 0.01;

    /// <summary>Forgets the least recently seen tenth of the peers, those with no debt first (a debt must not be escaped by flooding identities).</summary>
    private void Evict(long now)
    {
        var victims = _peers
            .OrderBy(kv => Debt(kv.Value, now) > 0.5 ? 1 : 0)
            .ThenBy(kv => kv.Value.Seen)
            .Take(Math.Max(1, _peers.Count / 10))
            .Select(kv => kv.Key)
            .ToList();
        foreach (var v in victims)
        {
            _peers.Remove(v);
        }
        _evicted += victims.Count;
    }

    private struct Bucket
    {
        public double Tokens;
        public long At;
        public bool Used; // false: untouched, so full
    }

    private sealed class PeerState(int budgets)
    {
        public readonly Bucket[] Buckets = new Bucket[budgets];
        public double Debt;
        public long DebtAt;
        public long Seen;
    }
}
