using Microsoft.Extensions.Logging;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Metrics;
using Potluck.Scheduler.Topics;

namespace Potluck.Scheduler.Verification;

/// <summary>
/// Fraud proofs on <see cref="FraudProtocol.Topic"/>: publishes this node's, and checks everyone else's. The gossip
/// validator only inspects (signatures, hashes, bounds: <see cref="FraudProof.Inspect"/>) and rejects what is
/// malformed; the handler then re-runs the task within the fuel bound and, when the proof stands, refuses the
/// provider in the <see cref="ReputationStore"/>. Deviation: a plausible proof is forwarded before it is re-run
/// (validators must be quick), so every receiver re-runs it itself rather than trusting the forwarder.
/// </summary>
public sealed partial class FraudService : IDisposable
{
    private readonly ITopicBus _bus;
    private readonly FraudChecker? _checker;
    private readonly ReputationStore _reputation;
    private readonly FraudOptions _options;
    private readonly ILogger<FraudService> _log;
    private readonly ComputeInstruments _instruments;
    private IDisposable? _subscription;

    /// <param name="checker">Null on a node without a sandbox: proofs are then only inspected, never acted on.</param>
    /// <param name="instruments">The node's metrics (<c>potluck.fraud.proofs</c>); null counts into instruments of its own.</param>
    public FraudService(ITopicBus bus, FraudChecker? checker, ReputationStore reputation, FraudOptions options, ILogger<FraudService> log,
        ComputeInstruments? instruments = null)
    {
        _instruments = instruments ?? ComputeInstruments.Detached();
        _bus = bus;
        _checker = checker;
        _reputation = reputation;
        _options = options;
        _log = log;
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
        return proof.Inspect(_options).Status == FraudProofStatus.Invalid ? TopicVerdict.Reject : TopicVerdict.Accept;
    }

    private async ValueTask HandleAsync(TopicMessage message, CancellationToken ct)
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
        }
        else
        {
            _instruments.FraudProof("refuted");
            LogProofRefuted(_log, check.Provider, message.ReceivedFrom, verdict.Value);
        }
        Checked?.Invoke(check.Provider, stands);
    }

    public void Dispose() => _subscription?.Dispose();

    [LoggerMessage(Level = LogLevel.Warning, Message = "Fraud proof against {Provider} confirmed by re-running: provider refused")]
    private static partial void LogProofConfirmed(ILogger logger, PeerId provider);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Fraud proof against {Provider} from {From} not upheld: {Verdict}")]
    private static partial void LogProofRefuted(ILogger logger, PeerId provider, PeerId from, CheckVerdict verdict);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Fraud proof of {Bytes} bytes is too large to publish; acting on it locally only")]
    private static partial void LogProofTooLarge(ILogger logger, int bytes);
}
