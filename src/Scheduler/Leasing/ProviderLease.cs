using System.Security.Cryptography;
using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Leasing;

/// <summary>
/// The provider's side of one lease of <see cref="LeaseProtocol.Id"/>, as a pure state machine: messages and
/// <c>now</c> in, a <see cref="LeaseStep"/> out. Created by <see cref="ProviderLeaseRegistry"/> when it offers
/// terms; holds one core of <see cref="ProviderCapacity"/>, and its module (or room on disk for it), from the offer to the end.
/// <para>Offered → (accept) Receiving → (module and input complete, hashes checked) Running → (result) Finished.
/// Retries are answered alike: a repeated request gets the same offer, a repeated accept an acknowledging heartbeat,
/// anything after the end the final message again. Any message from the requester is a sign of life; after
/// <see cref="LeaseOptions.MissedHeartbeatsBeforeExpiry"/> heartbeat intervals of silence, or at the deadline,
/// the lease expires; so does one whose module and input have not arrived within <see cref="LeaseOptions.InputGrace"/>
/// (plus their transfer time) of the accept.</para>
/// </summary>
public sealed class ProviderLease
{
    private enum Phase { Offered, Receiving, Running, Finished }

    private readonly PublicKey _requesterKey;
    private readonly LeaseOptions _options;
    private readonly CapacityReservation _reservation;
    private readonly IDisposable? _diskHold;
    private readonly TimeSpan _heartbeat;
    private readonly DateTimeOffset _offerExpires;
    private readonly DateTimeOffset _deadline;
    private Phase _phase = Phase.Offered;
    private ContentAssembler? _module;
    private ContentAssembler? _input;
    private DateTimeOffset _lastHeard;
    private DateTimeOffset _inputDeadline = DateTimeOffset.MaxValue;
    private DateTimeOffset _nextHeartbeat;
    private ulong _heartbeatSequence;
    private long _fuelProgress;
    private LeaseMessage? _final;

    internal ProviderLease(PrivateKey key, PublicKey requesterKey, LeaseRequest request, LeaseTerms terms,
        CapacityReservation reservation, LeaseOptions options, DateTimeOffset now, IDisposable? diskHold = null)
    {
        _diskHold = diskHold;
        _requesterKey = requesterKey;
        _options = options;
        _reservation = reservation;
        Requester = requesterKey.ToPeerId();
        Request = request;
        Terms = terms;
        var termsBytes = LeaseCodec.SerializeTerms(terms);
        Offer = new LeaseOffer
        {
            RequestId = request.RequestId,
            Terms = termsBytes,
            ProviderSignature = SignedLeaseTerms.SignProvider(termsBytes, key),
        };
        _heartbeat = TimeSpan.FromMilliseconds(terms.HeartbeatIntervalMs);
        _offerExpires = DateTimeOffset.FromUnixTimeMilliseconds(terms.OfferExpiresUnixMs);
        _deadline = DateTimeOffset.FromUnixTimeMilliseconds(terms.DeadlineUnixMs);
        _lastHeard = now;
    }

    public PeerId Requester { get; }

    /// <summary>Leased to a requester without standing: lowest priority, preemptible.</summary>
    public bool Stranger => _reservation.Stranger;

    /// <summary>Memory this lease holds.</summary>
    public long MemoryBytes => _reservation.MemoryBytes;

    public ulong RequestId => Request.RequestId;

    public LeaseRequest Request { get; }

    public LeaseTerms Terms { get; }

    /// <summary>The signed offer, sent first and again to every repeated request.</summary>
    public LeaseOffer Offer { get; }

    /// <summary>Set once the requester has counter-signed.</summary>
    public SignedLeaseTerms? SignedTerms { get; private set; }

    public LeaseOutcome? Outcome { get; private set; }

    public DateTimeOffset? FinishedAt { get; private set; }

    public bool IsFinished => _phase == Phase.Finished;

    /// <summary>True while the task has been handed to the executor and has not ended.</summary>
    public bool IsRunning => _phase == Phase.Running;

    internal LeaseStep Start() => new() { Send = [Offer], NextTimer = NextTimer() };

    public LeaseStep Handle(LeaseMessage message, DateTimeOffset now)
    {
        if (message.RequestId != RequestId)
        {
            return LeaseStep.Nothing;
        }
        if (_phase == Phase.Finished)
        {
            return message is LeaseRequest or LeaseAccept && _final is not null ? new LeaseStep { Send = [_final] } : LeaseStep.Nothing;
        }
        if (now >= _deadline || (_phase == Phase.Offered && now >= _offerExpires))
        {
            // The timer has not fired yet, but the lease is already over: end it before looking at the message.
            return OnTimer(now);
        }
        _lastHeard = now;
        switch (message)
        {
            case LeaseRequest request:
                if (!request.SameWork(Request))
                {
                    return new LeaseStep
                    {
                        Send = [new LeaseReject { RequestId = RequestId, Reason = LeaseRejectReason.BadRequest, Detail = "request id reused for different work" }],
                        NextTimer = NextTimer(),
                    };
                }
                return new LeaseStep { Send = [Offer], NextTimer = NextTimer() };
            case LeaseAccept accept:
                return OnAccept(accept, now);
            case LeaseData data:
                return OnData(data, now);
            case LeaseHeartbeat:
                return new LeaseStep { NextTimer = NextTimer() };
            case LeaseCancel cancel:
                return Finish(LeaseOutcomeKind.Cancelled, $"cancelled by requester: {cancel.Reason}", now, cancel, send: false);
            default:
                return Fail($"unexpected {message.GetType().Name} from requester", now);
        }
    }

    public LeaseStep OnTimer(DateTimeOffset now)
    {
        if (_phase == Phase.Finished)
        {
            return LeaseStep.Nothing;
        }
        if (now >= _deadline)
        {
            return Finish(LeaseOutcomeKind.Expired, "deadline passed", now, Cancel("deadline passed"));
        }
        if (_phase == Phase.Offered)
        {
            return now >= _offerExpires
                ? Finish(LeaseOutcomeKind.Expired, "offer not accepted in time", now, Cancel("offer expired"))
                : new LeaseStep { NextTimer = NextTimer() };
        }
        if (now >= SilenceLimit)
        {
            return Finish(LeaseOutcomeKind.Expired, "requester fell silent", now, Cancel("no heartbeat"));
        }
        if (_phase == Phase.Receiving && now >= _inputDeadline)
        {
            return Finish(LeaseOutcomeKind.Expired, "module and input did not arrive in time", now, Cancel("input not received in time"));
        }
        var send = new List<LeaseMessage>();
        if (now >= _nextHeartbeat)
        {
            send.Add(NextHeartbeat());
            _nextHeartbeat = now + _heartbeat;
        }
        return new LeaseStep { Send = send, NextTimer = NextTimer() };
    }

    /// <summary>The executor finished: send the result and end the lease. Ignored unless running.</summary>
    public LeaseStep OnExecutionCompleted(ExecutionReport report, DateTimeOffset now)
    {
        if (_phase != Phase.Running)
        {
            return LeaseStep.Nothing;
        }
        var output = report.Output;
        var result = new LeaseResult
        {
            RequestId = RequestId,
            Status = report.Status,
            FuelUsed = Math.Clamp(report.FuelUsed, 0, Terms.FuelLimit),
            ExitCode = report.ExitCode,
            OutputHash = SHA256.HashData(output.Span),
            OutputSize = output.Length,
            Output = output.Length <= _options.MaxInlineOutputBytes ? output.ToArray() : null,
            Attestation = report.Attestation.Length <= _options.MaxAttestationBytes ? report.Attestation.ToArray() : [],
            Stderr = report.Stderr.IsEmpty ? null : report.Stderr[..Math.Min(report.Stderr.Length, _options.MaxStderrBytes)].ToArray(),
        };
        return Finish(LeaseOutcomeKind.Completed, report.Status.ToString(), now, result);
    }

    /// <summary>Progress from the executor, reported in later heartbeats.</summary>
    public void ReportProgress(long fuelUsed) => _fuelProgress = Math.Clamp(fuelUsed, 0, Terms.FuelLimit);

    /// <summary>The provider gives up the lease (shutdown, operator).</summary>
    public LeaseStep Cancel(string reason, DateTimeOffset now) =>
        _phase == Phase.Finished ? LeaseStep.Nothing : Finish(LeaseOutcomeKind.Cancelled, $"cancelled by provider: {reason}", now, Cancel(reason));

    /// <summary>Whether the lease still holds content it received (module or input); none once it is finished.</summary>
    internal bool HoldsContent => _module is not null || _input is not null;

    private LeaseStep OnAccept(LeaseAccept accept, DateTimeOffset now)
    {
        if (_phase != Phase.Offered)
        {
            // A retried accept: acknowledge again, never a second lease.
            return new LeaseStep { Send = [NextHeartbeat()], NextTimer = NextTimer() };
        }
        if (!SignedLeaseTerms.VerifyRequester(Offer.Terms, accept.RequesterSignature, _requesterKey))
        {
            return Fail("accept signature does not verify", now);
        }
        SignedTerms = new SignedLeaseTerms
        {
            Terms = Offer.Terms,
            ProviderSignature = Offer.ProviderSignature,
            RequesterSignature = accept.RequesterSignature,
        };
        _phase = Phase.Receiving;
        _module = Terms.ModuleNeeded ? new ContentAssembler(Terms.ModuleHash, Terms.ModuleSize) : null;
        _input = new ContentAssembler(Terms.InputHash, Terms.InputSize);
        if (_input.IsComplete && !_input.HashMatches())
        {
            return Fail("empty input does not match its hash", now);
        }
        _nextHeartbeat = now + _heartbeat;
        var content = (Terms.ModuleNeeded ? Terms.ModuleSize : 0) + Terms.InputSize;
        _inputDeadline = now + _options.InputGrace + TimeSpan.FromSeconds((double)content / Math.Max(1, _options.MinContentBytesPerSecond));
        return TryRun([NextHeartbeat()]);
    }

    private LeaseStep OnData(LeaseData data, DateTimeOffset now)
    {
        if (_phase == Phase.Offered)
        {
            return Fail("data before accept", now);
        }
        var target = data.Kind == LeaseDataKind.Module ? _module : _input;
        if (target is null)
        {
            return Fail("module sent although the provider holds it", now);
        }
        if (target.Add(data.Offset, data.Bytes) is { } error)
        {
            return Fail($"{data.Kind}: {error}", now);
        }
        return TryRun([]);
    }

    private LeaseStep TryRun(List<LeaseMessage> send)
    {
        if (_phase != Phase.Receiving || (_module is not null && !_module.IsComplete) || !_input!.IsComplete)
        {
            return new LeaseStep { Send = send, NextTimer = NextTimer() };
        }
        _phase = Phase.Running;
        var execution = new LeaseExecution(SignedTerms!, Terms, Terms.ModuleHash, _module?.Content, _input.Content);
        return new LeaseStep { Send = send, NextTimer = NextTimer(), Execute = execution };
    }

    private LeaseStep Fail(string reason, DateTimeOffset now) =>
        Finish(LeaseOutcomeKind.Failed, reason, now, Cancel(reason));

    private LeaseStep Finish(LeaseOutcomeKind kind, string detail, DateTimeOffset now, LeaseMessage final, bool send = true)
    {
        var wasRunning = _phase == Phase.Running;
        _phase = Phase.Finished;
        // A finished lease answers retries from _final alone: the module and input it received (buffers up to twice their
        // size) go now, not when the registry forgets the lease (FinishedRetention, 5 min).
        _module = null;
        _input = null;
        _reservation.Dispose();
        _diskHold?.Dispose();
        _final = final;
        FinishedAt = now;
        Outcome = new LeaseOutcome(kind, detail) { Result = final as LeaseResult, Terms = SignedTerms };
        return new LeaseStep { Send = send ? [final] : [], AbortExecution = wasRunning && kind != LeaseOutcomeKind.Completed, Outcome = Outcome };
    }

    private LeaseCancel Cancel(string reason) => new() { RequestId = RequestId, Reason = Truncate(reason) };

    private string Truncate(string s) => s.Length <= _options.MaxReasonLength ? s : s[.._options.MaxReasonLength];

    private LeaseHeartbeat NextHeartbeat() => new() { RequestId = RequestId, Sequence = ++_heartbeatSequence, FuelUsed = _fuelProgress };

    private DateTimeOffset SilenceLimit => _lastHeard + _heartbeat * _options.MissedHeartbeatsBeforeExpiry;

    private DateTimeOffset? NextTimer() => _phase switch
    {
        Phase.Finished => null,
        Phase.Offered => Min(_offerExpires, _deadline),
        Phase.Receiving => Min(Min(Min(_deadline, SilenceLimit), _nextHeartbeat), _inputDeadline),
        _ => Min(Min(_deadline, SilenceLimit), _nextHeartbeat),
    };

    private static DateTimeOffset Min(DateTimeOffset a, DateTimeOffset b) => a <= b ? a : b;
}
