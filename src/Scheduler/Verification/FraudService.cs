using Microsoft.Extensions.Logging;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Metrics;
using Potluck.Scheduler.Topics;

namespace Potluck.Scheduler.Verification;

/// <summary>
/// Fraud proofs on <see cref="FraudProtocol.Topic"/>: publishes this node's, and checks everyone else's, without letting
/// a proof buy work on every node. The gossip validator makes every cheap check before a proof is accepted (and so
/// forwarded), cheapest first: it decodes and is signed by both parties (<see cref="FraudProof.Inspect"/>); its gossip
/// author is the lease's requester (only a party to the lease publishes); the author has not published a refuted proof;
/// the lease was not seen before (one check per lease); the accused provider is one this node might use
/// (<see cref="IsRelevant"/>: a provider it holds an advertisement from or has a record of, so a lease between two
/// throwaway identities interests nobody); the author is within <see cref="FraudOptions.MaxProofsPerAuthor"/> per
/// window; fewer than <see cref="FraudOptions.MaxQueuedChecks"/> checks wait; and the terms name this node's runtime.
/// The handler then re-runs the task within the fuel bound: a proof that stands refuses the provider; a refuted one
/// costs its author its standing (refused, and its later proofs dropped unread).
/// </summary>
public sealed partial class FraudService : IDisposable
{
    private readonly ITopicBus _bus;
    private readonly FraudChecker? _checker;
    private readonly ReputationStore _reputation;
    private readonly FraudOptions _options;
    private readonly ILogger<FraudService> _log;
    private readonly ComputeInstruments _instruments;
    private readonly TimeProvider _time;
    private readonly Lock _gate = new();
    private readonly HashSet<string> _seenLeases = new(StringComparer.Ordinal);
    private readonly Queue<string> _seenOrder = new();
    private readonly Dictionary<PeerId, (DateTimeOffset Since, int Count)> _authors = [];
    private readonly HashSet<PeerId> _discredited = [];
    private readonly PriorityQueue<TopicMessage, (int Priority, long Fuel, long Arrival)> _queue = new();
    private long _arrivals;
    private int _pending;
    private IDisposable? _subscription;

    /// <param name="checker">Null on a node without a sandbox: proofs are then only inspected, never acted on.</param>
    /// <param name="instruments">The node's metrics (<c>potluck.fraud.proofs</c>); null counts into instruments of its own.</param>
    /// <param name="time">The clock of the per-author window; the system clock when null.</param>
    public FraudService(ITopicBus bus, FraudChecker? checker, ReputationStore reputation, FraudOptions options, ILogger<FraudService> log,
        ComputeInstruments? instruments = null, TimeProvider? time = null)
    {
        _instruments = instruments ?? ComputeInstruments.Detached();
        _bus = bus;
        _checker = checker;
        _reputation = reputation;
        _options = options;
        _log = log;
        _time = time ?? TimeProvider.System;
    }

    /// <summary>Whether a proof against this provider is worth checking here (default: every provider).</summary>
    public Func<PeerId, bool>? IsRelevant { get; set; }

    /// <summary>
    /// The order proofs are checked in: lower first (default 0 for all), e.g. 0 for a provider this node has leased from,
    /// 1 for one it only holds an advertisement of; then the smaller fuel limit, then arrival. Not arrival order alone, so a
    /// flood of proofs about strangers cannot delay the check that matters to this node.
    /// </summary>
    public Func<PeerId, int>? Priority { get; set; }

    /// <summary>Called with the author of a proof a re-run refuted (a node lowers its peer score: <c>Misbehaviour.RefusedProof</c>).</summary>
    public Action<PeerId>? Penalise { get; set; }

    /// <summary>Called with a received proof that a re-run here upheld (a node forfeits what the provider holds from it: <see cref="Forfeiture"/>).</summary>
    public Action<FraudProofCheck>? Upheld { get; set; }

    /// <summary>
    /// Called with a proof whose requester's audit reveal does not check (<see cref="FraudProofStatus.BrokenReveal"/>), its
    /// author being that requester; a node that is the accused provider records it as an audit violation.
    /// </summary>
    public Action<FraudProofCheck, FraudProof>? RevealBroken { get; set; }

    /// <summary>Proofs accepted for a re-run and not yet checked.</summary>
    public int Pending
    {
        get
        {
            lock (_gate)
            {
                return _pending;
            }
        }
    }

    /// <summary>Raised after a received proof was re-run: the provider, and whether the proof stood.</summary>
    public event Action<PeerId, bool>? Checked;

    public void Start() => _subscription ??= _bus.Subscribe(FraudProtocol.Topic, Validate, HandleAsync);

    /// <summary>Publishes a proof; false when it is over <see cref="FraudOptions.MaxProofBytes"/> (then only this node acts on it).</summary>
    public async ValueTask<bool> PublishAsync(FraudProof proof, CancellationToken ct)
    {
        var bytes = proof.Encode();
        if (bytes.Length > _options.MaxProofBytes)
        {
            LogProofTooLarge(_log, bytes.Length);
            return false;
        }
        await _bus.PublishAsync(FraudProtocol.Topic, bytes, ct);
        _instruments.FraudProof("published");
        return true;
    }

    private TopicVerdict Validate(TopicMessage message)
    {
        if (!FraudProof.TryDecode(message.Data, _options, out var proof))
        {
            return TopicVerdict.Reject;
        }
        var inspected = proof.Inspect(_options);
        if (inspected.Status == FraudProofStatus.Invalid)
        {
            return TopicVerdict.Reject;
        }
        if (message.Author is not { } author || !author.Bytes.SequenceEqual(inspected.Terms!.Requester))
        {
            // Only the lease's requester may publish a proof of it (a provider is never wronged by its own result).
            _instruments.FraudProof("not-a-party");
            return TopicVerdict.Reject;
        }
        if (inspected.Status == FraudProofStatus.BrokenReveal)
        {
            // The requester's own reveal shows the check was not the one its declared rate selected (or it hid the secret):
            // refuted without a re-run, and its author pays as for a refuted proof; the accused provider records it.
            _instruments.FraudProof("bad-reveal");
            lock (_gate)
            {
                _discredited.Add(author);
            }
            _reputation.Refuse(author, $"published a fraud proof whose audit reveal does not check ({inspected.Audit})");
            Penalise?.Invoke(author);
            LogBrokenReveal(_log, inspected.Provider, author, inspected.Audit);
            RevealBroken?.Invoke(inspected, proof);
            return TopicVerdict.Reject;
        }
        string? drop = null;
        lock (_gate)
        {
            var now = _time.GetUtcNow();
            var lease = Convert.ToHexString(inspected.Terms.Provider) + ":" + Convert.ToHexString(inspected.Attestation!.Attestation.LeaseId);
            if (_discredited.Contains(author))
            {
                drop = "discredited";
            }
            else if (_reputation.IsRefused(inspected.Provider) || _seenLeases.Contains(lease))
            {
                drop = "duplicate";
            }
            else if (IsRelevant is { } relevant && !relevant(inspected.Provider))
            {
                drop = "irrelevant";
            }
            else if (_authors.TryGetValue(author, out var window) && now - window.Since < _options.AuthorWindow && window.Count >= _options.MaxProofsPerAuthor)
            {
                drop = "rate";
            }
            else if (_pending >= _options.MaxQueuedChecks)
            {
                drop = "queue-full";
            }
            else if (inspected.Terms.RuntimeVersion != Execution.ComputeRuntime.Version)
            {
                drop = "other-runtime";
            }
            else
            {
                _authors[author] = _authors.TryGetValue(author, out var w) && now - w.Since < _options.AuthorWindow ? (w.Since, w.Count + 1) : (now, 1);
                if (_authors.Count > _options.MaxRememberedLeases)
                {
                    foreach (var stale in _authors.Where(kv => now - kv.Value.Since >= _options.AuthorWindow).Select(kv => kv.Key).ToList())
                    {
                        _authors.Remove(stale);
                    }
                }
                _seenLeases.Add(lease);
                _seenOrder.Enqueue(lease);
                while (_seenOrder.Count > _options.MaxRememberedLeases && _seenOrder.TryDequeue(out var old))
                {
                    _seenLeases.Remove(old);
                }
                _pending++;
                // Checked by priority, not arrival: each accepted proof is one handler call, and each call takes the best waiting.
                _queue.Enqueue(message with { Data = message.Data.ToArray() }, (Priority?.Invoke(inspected.Provider) ?? 0, inspected.Terms.FuelLimit, _arrivals++));
            }
        }
        if (drop is not null)
        {
            _instruments.FraudProof(drop);
            return TopicVerdict.Ignore;
        }
        return TopicVerdict.Accept;
    }

    private async ValueTask HandleAsync(TopicMessage message, CancellationToken ct)
    {
        try
        {
            lock (_gate)
            {
                if (_queue.TryDequeue(out var best, out _))
                {
                    message = best;
                }
            }
            await CheckAsync(message, ct);
        }
        finally
        {
            lock (_gate)
            {
                _pending = Math.Max(0, _pending - 1);
            }
        }
    }

    private async Task CheckAsync(TopicMessage message, CancellationToken ct)
    {
        if (!FraudProof.TryDecode(message.Data, _options, out var proof) || _checker is null)
        {
            _instruments.FraudProof("skipped");
            return;
        }
        var inspected = proof.Inspect(_options);
        if (inspected.Status != FraudProofStatus.Plausible || _reputation.IsRefused(inspected.Provider))
        {
            _instruments.FraudProof("skipped");
            return;
        }
        var (check, verdict) = await _checker.CheckAsync(proof, ct);
        if (verdict is null)
        {
            _instruments.FraudProof("skipped");
            return;
        }
        var stands = verdict == CheckVerdict.Mismatch;
        if (stands)
        {
            _instruments.FraudProof("confirmed");
            _reputation.Refuse(check.Provider, $"fraud proof from {message.Author ?? message.ReceivedFrom} confirmed by re-running");
            LogProofConfirmed(_log, check.Provider);
            Upheld?.Invoke(check);
        }
        else
        {
            _instruments.FraudProof("refuted");
            LogProofRefuted(_log, check.Provider, message.ReceivedFrom, verdict.Value);
            if (verdict == CheckVerdict.Match && message.Author is { } author)
            {
                // A false accusation: the re-run agrees with the provider's attested result exactly.
                lock (_gate)
                {
                    _discredited.Add(author);
                }
                _reputation.Refuse(author, "published a fraud proof that a re-run refuted");
                Penalise?.Invoke(author);
            }
        }
        Checked?.Invoke(check.Provider, stands);
    }

    public void Dispose() => _subscription?.Dispose();

    [LoggerMessage(Level = LogLevel.Warning, Message = "Fraud proof against {Provider} confirmed by re-running: provider refused")]
    private static partial void LogProofConfirmed(ILogger logger, PeerId provider);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Fraud proof against {Provider} from {From} not upheld: {Verdict}")]
    private static partial void LogProofRefuted(ILogger logger, PeerId provider, PeerId from, CheckVerdict verdict);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Fraud proof against {Provider} from {Author} refuted unrun: its audit reveal is {Verdict}")]
    private static partial void LogBrokenReveal(ILogger logger, PeerId provider, PeerId author, AuditVerdict verdict);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Fraud proof of {Bytes} bytes is too large to publish; acting on it locally only")]
    private static partial void LogProofTooLarge(ILogger logger, int bytes);
}
