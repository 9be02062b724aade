using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Kademlia;

public enum LookupStepKind
{
    /// <summary>Send the request to <see cref="LookupStep.Peer"/>.</summary>
    Query,
    /// <summary>Nothing to send until a response, failure or timeout.</summary>
    Waiting,
    /// <summary>The lookup is over; read <see cref="ClosestPeersLookup.Result"/>.</summary>
    Finished,
}

public readonly record struct LookupStep(LookupStepKind Kind, PeerId Peer = default);

/// <summary>Parameters of one iterative lookup.</summary>
public sealed record LookupOptions
{
    /// <summary>k: how many closest peers the lookup looks for. Default 20.</summary>
    public int K { get; init; } = 20;

    /// <summary>α: requests in flight at once while the lookup makes progress. Default 3.</summary>
    public int Alpha { get; init; } = 3;

    /// <summary>A peer that has not answered within this is counted unresponsive (it may still answer). Default 10 s.</summary>
    public TimeSpan PeerTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Candidates remembered; the farthest uncontacted ones are dropped beyond it. Default 200.</summary>
    public int MaxCandidates { get; init; } = 200;

    /// <summary>
    /// Ask a candidate only while fewer than k peers closer than it have answered or are being asked: the spec's
    /// termination (the k closest seen have all answered) needs no other, and one farther is asked only once one of
    /// those fails or times out. Off, a lookup that widens when stalled (rust-libp2p's <c>ClosestPeersIter</c>) also asks
    /// candidates beyond the k closest, to be cancelled when the k closest have answered: each may be a dial for
    /// nothing. Default off; <see cref="KademliaService"/> turns it on.
    /// </summary>
    public bool StayWithinK { get; init; }
}

/// <summary>
/// An iterative closest-peers lookup as a pure state machine, after rust-libp2p's <c>ClosestPeersIter</c>:
/// <see cref="Next"/> says whom to query, <see cref="OnSuccess"/>/<see cref="OnFailure"/> feed the answers.
/// At most α requests are in flight; after α answers in a row bring nothing closer the lookup is stalled and
/// widens to k in flight, unless <see cref="WidenWhenStalled"/> is off (connections are scarce); with
/// <see cref="LookupOptions.StayWithinK"/> it never asks a peer farther than k others answered or in flight. It
/// finishes when the k closest peers it knows (ignoring failed ones) have all answered, or when nobody is left to ask.
/// </summary>
public sealed class ClosestPeersLookup
{
    private readonly LookupOptions _options;
    private readonly List<Candidate> _sorted = [];
    private readonly Dictionary<PeerId, Candidate> _byPeer = [];
    private readonly PeerId? _self;
    private int _waiting;
    private int _noProgress;
    private bool _stalled;
    private bool _finished;

    public ClosestPeersLookup(KadKey target, IEnumerable<PeerId> seeds, LookupOptions? options = null, PeerId? self = null)
    {
        _options = options ?? new LookupOptions();
        Target = target;
        _self = self;
        foreach (var seed in seeds)
        {
            Insert(seed, 1);
        }
    }

    public KadKey Target { get; }

    /// <summary>
    /// Whether a stalled lookup widens to k requests in flight (rust-libp2p's behaviour). The shell turns it off while
    /// connections are scarce: each extra request may dial a peer and make a full host close another connection, and
    /// the requests still in flight when the lookup ends are cancelled, their dials wasted. Off, a stalled lookup keeps
    /// to α in flight and asks the same peers in the same order, one round later. Default on.
    /// </summary>
    public bool WidenWhenStalled { get; set; } = true;

    public bool IsFinished => _finished;

    /// <summary>Requests handed out so far.</summary>
    public int QueriesSent { get; private set; }

    /// <summary>Peers that answered, closest first, at most k.</summary>
    public IReadOnlyList<PeerId> Result =>
        _sorted.Where(c => c.State == State.Succeeded).Take(_options.K).Select(c => c.Peer).ToArray();

    /// <summary>
    /// Hops to the closest peer that answered: 1 when a seed was the closest, one more for every response
    /// that had to name the next peer. 0 when nobody answered.
    /// </summary>
    public int Hops => _sorted.FirstOrDefault(c => c.State == State.Succeeded)?.Depth ?? 0;

    public LookupStep Next(DateTimeOffset now)
    {
        if (_finished)
        {
            return new LookupStep(LookupStepKind.Finished);
        }
        foreach (var c in _sorted)
        {
            if (c.State == State.Waiting && now >= c.Deadline)
            {
                c.State = State.Unresponsive;
                _waiting--;
            }
        }
        var capacity = _stalled && WidenWhenStalled ? Math.Max(_options.K, _options.Alpha) : _options.Alpha;
        var succeeded = 0;
        var closerPending = false;
        // Peers closer than the current candidate that answered or are being asked: the k closest while it is below k.
        var ahead = 0;
        foreach (var c in _sorted)
        {
            switch (c.State)
            {
                case State.Succeeded:
                    // Done only when the k closest non-failed peers have all answered: one still in flight closer
                    // than the k-th success may name closer peers.
                    if (++succeeded >= _options.K && !closerPending)
                    {
                        _finished = true;
                        return new LookupStep(LookupStepKind.Finished);
                    }
                    ahead++;
                    break;
                case State.NotContacted:
                    // With k ahead of it (fewer than k answered, so some are in flight) it is needed only if one of them fails.
                    if (_waiting >= capacity || (_options.StayWithinK && ahead >= _options.K))
                    {
                        return new LookupStep(LookupStepKind.Waiting);
                    }
                    c.State = State.Waiting;
                    c.Deadline = now + _options.PeerTimeout;
                    _waiting++;
                    QueriesSent++;
                    return new LookupStep(LookupStepKind.Query, c.Peer);
                case State.Waiting:
                    if (_waiting >= capacity)
                    {
                        return new LookupStep(LookupStepKind.Waiting);
                    }
                    closerPending = true;
                    ahead++;
                    break;
            }
        }
        if (_waiting > 0)
        {
            return new LookupStep(LookupStepKind.Waiting);
        }
        _finished = true;
        return new LookupStep(LookupStepKind.Finished);
    }

    /// <summary>The peer answered with <paramref name="closer"/> peers. Answers from peers never asked are ignored.</summary>
    public void OnSuccess(PeerId peer, IEnumerable<PeerId> closer)
    {
        if (_finished || !_byPeer.TryGetValue(peer, out var c) || c.State is not (State.Waiting or State.Unresponsive))
        {
            return;
        }
        if (c.State == State.Waiting)
        {
            _waiting--;
        }
        c.State = State.Succeeded;
        var before = _sorted[0].Distance;
        foreach (var p in closer)
        {
            Insert(p, c.Depth + 1);
        }
        if (_sorted[0].Distance < before)
        {
            _noProgress = 0;
            _stalled = false;
        }
        else if (++_noProgress >= _options.Alpha)
        {
            _stalled = true;
        }
    }

    public void OnFailure(PeerId peer)
    {
        if (_finished || !_byPeer.TryGetValue(peer, out var c) || c.State is not (State.Waiting or State.Unresponsive))
        {
            return;
        }
        if (c.State == State.Waiting)
        {
            _waiting--;
        }
        c.State = State.Failed;
    }

    /// <summary>Ends the lookup early (the caller found what it wanted).</summary>
    public void Finish() => _finished = true;

    private void Insert(PeerId peer, int depth)
    {
        if (peer.IsEmpty || (_self is { } self && peer == self) || _byPeer.ContainsKey(peer))
        {
            return;
        }
        var candidate = new Candidate(peer, KadKey.FromPeer(peer).DistanceTo(Target), depth);
        var index = _sorted.BinarySearch(candidate, CandidateComparer.Instance);
        if (index < 0)
        {
            index = ~index;
        }
        if (_sorted.Count >= _options.MaxCandidates)
        {
            // Drop the farthest peer nobody asked yet; if there is none or it is closer than the newcomer, drop the newcomer.
            var victim = _sorted.FindLastIndex(x => x.State == State.NotContacted);
            if (victim < 0 || victim < index)
            {
                return;
            }
            _byPeer.Remove(_sorted[victim].Peer);
            _sorted.RemoveAt(victim);
        }
        _sorted.Insert(index, candidate);
        _byPeer[peer] = candidate;
    }

    private enum State
    {
        NotContacted,
        Waiting,
        Unresponsive,
        Succeeded,
        Failed,
    }

    private sealed class Candidate(PeerId peer, KadDistance distance, int depth)
    {
        public PeerId Peer { get; } = peer;
        public KadDistance Distance { get; } = distance;
        public int Depth { get; } = depth;
        public State State { get; set; }
        public DateTimeOffset Deadline { get; set; }
    }

    private sealed class CandidateComparer : IComparer<Candidate>
    {
        public static readonly CandidateComparer Instance = new();

        public int Compare(Candidate? x, Candidate? y) => x!.Distance.CompareTo(y!.Distance);
    }
}
