using System.Security.Cryptography;
using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Leasing;

/// <summary>The work a requester wants done, and what it is willing to pay.</summary>
public sealed record LeaseWork
{
    public required ReadOnlyMemory<byte> Module { get; init; }

    /// <summary>
    /// The SHA-256 of <see cref="Module"/> when the requester knows it already (its module digests, recognised by the bytes);
    /// null: the lease hashes the module itself.
    /// </summary>
    public byte[]? ModuleHash { get; init; }

    public ReadOnlyMemory<byte> Input { get; init; }

    public required long FuelLimit { get; init; }

    public required long MemoryLimitBytes { get; init; }

    public required DateTimeOffset Deadline { get; init; }

    /// <summary>The most the requester pays, credits per million fuel.</summary>
    public required long MaxPricePerMegaFuel { get; init; }

    /// <summary>
    /// The price the provider's signed advertisement named, when the lease was chosen from one: an offer above it is
    /// refused (a provider may not advertise cheaply and charge the requester's maximum).
    /// </summary>
    public long? AdvertisedPricePerMegaFuel { get; init; }

    /// <summary>The commitment to the requester's audit secret, put in the request and the terms; empty for none.</summary>
    public byte[] AuditCommitment { get; init; } = [];

    /// <summary>The re-run rate the requester declares in the terms, parts per million.</summary>
    public int AuditRatePpm { get; init; }

    /// <summary>Whether the requester pays long leases as they go (<see cref="LeaseDebitNote"/>); its shell must then pay them.</summary>
    public bool AcceptsDebitNotes { get; init; }
}

/// <summary>
/// The requester's side of one lease of <see cref="LeaseProtocol.Id"/>, as a pure state machine.
/// <para>Requesting (the request is repeated every <see cref="LeaseOptions.RetryInterval"/>, at most
/// <see cref="LeaseOptions.MaxAttempts"/> times) → (offer, checked against the request and the provider's signature)
/// Accepted: accept and content sent (repeated alike until acknowledged) → (first heartbeat) Running →
/// (result, checked against its hash) Finished. Heartbeats are sent every interval the terms name; after
/// <see cref="LeaseOptions.MissedHeartbeatsBeforeExpiry"/> intervals of silence from the provider, or at the
/// deadline, the lease expires.</para>
/// </summary>
public sealed class RequesterLease
{
    private enum Phase { Idle, Requesting, Accepted, Running, Finished }

    private readonly PrivateKey _key;
    private readonly PublicKey _providerKey;
    private readonly LeaseWork _work;
    private readonly LeaseOptions _options;
    private DateTimeOffset _deadline;
    private Phase _phase = Phase.Idle;
    private int _attempts;
    private DateTimeOffset _retryAt;
    private DateTimeOffset _lastHeard;
    private DateTimeOffset _nextHeartbeat;
    private TimeSpan _heartbeat;
    private ulong _heartbeatSequence;
    private List<LeaseMessage> _acceptAndData = [];

    /// <param name="requestId">Random per lease (from the shell's seeded <see cref="Random"/>); reused only for retries.</param>
    public RequesterLease(PrivateKey key, PublicKey provider, ulong requestId, LeaseWork work, LeaseOptions options)
    {
        _key = key;
        _providerKey = provider;
        _work = work;
        _options = options;
        _deadline = work.Deadline;
        Provider = provider.ToPeerId();
        Request = new LeaseRequest
        {
            RequestId = requestId,
            ModuleHash = work.ModuleHash ?? SHA256.HashData(work.Module.Span),
            ModuleSize = work.Module.Length,
            InputHash = SHA256.HashData(work.Input.Span),
            InputSize = work.Input.Length,
            FuelLimit = work.FuelLimit,
            MemoryLimitBytes = work.MemoryLimitBytes,
            DeadlineUnixMs = work.Deadline.ToUnixTimeMilliseconds(),
            MaxPricePerMegaFuel = work.MaxPricePerMegaFuel,
            AuditCommitment = work.AuditCommitment,
            AuditRatePpm = work.AuditRatePpm,
            AcceptsDebitNotes = work.AcceptsDebitNotes,
        };
    }

    public PeerId Provider { get; }

    public ulong RequestId => Request.RequestId;

    public LeaseRequest Request { get; }

    /// <summary>The provider's terms, once an acceptable offer arrived.</summary>
    public LeaseTerms? Terms { get; private set; }

    public SignedLeaseTerms? SignedTerms { get; private set; }

    public LeaseOutcome? Outcome { get; private set; }

    public bool IsFinished => _phase == Phase.Finished;

    /// <summary>Fuel the provider last reported having used.</summary>
    public long ReportedFuel { get; private set; }

    /// <summary>Sends the request.</summary>
    public LeaseStep Start(DateTimeOffset now)
    {
        if (_phase != Phase.Idle)
        {
            return LeaseStep.Nothing;
        }
        _phase = Phase.Requesting;
        _attempts = 1;
        _retryAt = now + _options.RetryInterval;
        return new LeaseStep { Send = [Request], NextTimer = NextTimer() };
    }

    public LeaseStep Handle(LeaseMessage message, DateTimeOffset now)
    {
        if (_phase is Phase.Finished or Phase.Idle || message.RequestId != RequestId)
        {
            return LeaseStep.Nothing;
        }
        _lastHeard = now;
        switch (message)
        {
            case LeaseOffer offer:
                return OnOffer(offer, now);
            case LeaseReject reject:
                return Finish(LeaseOutcomeKind.Rejected, $"{reject.Reason}: {reject.Detail}", null, reject.Reason,
                    reject.Reason == LeaseRejectReason.Busy ? reject.LeaseLimit : null);
            case LeaseHeartbeat heartbeat:
                if (_phase == Phase.Requesting)
                {
                    return Fail("heartbeat before accept");
                }
                _phase = Phase.Running;
                ReportedFuel = Math.Max(ReportedFuel, heartbeat.FuelUsed);
                return new LeaseStep { NextTimer = NextTimer() };
            case LeaseResult result:
                return OnResult(result, now);
            case LeaseCancel cancel:
                return Finish(LeaseOutcomeKind.Cancelled, $"cancelled by provider: {cancel.Reason}", null);
            case LeaseDebitNote when _phase is Phase.Accepted or Phase.Running && Terms is { DebitNoteFuel: > 0 }:
                // A sign of life (the task runs); the shell pays (or refuses) the note.
                _phase = Phase.Running;
                return new LeaseStep { NextTimer = NextTimer() };
            default:
                return Fail($"unexpected {message.GetType().Name} from provider");
        }
    }

    public LeaseStep OnTimer(DateTimeOffset now)
    {
        if (_phase is Phase.Finished or Phase.Idle)
        {
            return LeaseStep.Nothing;
        }
        if (now >= _deadline)
        {
            return Finish(LeaseOutcomeKind.Expired, "deadline passed", Cancel("deadline passed"));
        }
        var send = new List<LeaseMessage>();
        if (_phase is Phase.Requesting or Phase.Accepted && now >= _retryAt)
        {
            if (_attempts >= _options.MaxAttempts)
            {
                return _phase == Phase.Requesting
                    ? Finish(LeaseOutcomeKind.Expired, $"no answer after {_attempts} requests", Cancel("no answer"))
                    : Finish(LeaseOutcomeKind.Expired, $"accept not acknowledged after {_attempts} attempts", Cancel("no acknowledgement"));
            }
            _attempts++;
            _retryAt = now + _options.RetryInterval;
            send.AddRange(_phase == Phase.Requesting ? [Request] : _acceptAndData);
        }
        if (_phase is Phase.Accepted or Phase.Running)
        {
            if (now >= SilenceLimit)
            {
                return Finish(LeaseOutcomeKind.Expired, "provider fell silent", Cancel("no heartbeat"));
            }
            if (now >= _nextHeartbeat)
            {
                send.Add(new LeaseHeartbeat { RequestId = RequestId, Sequence = ++_heartbeatSequence });
                _nextHeartbeat = now + _heartbeat;
            }
        }
        return new LeaseStep { Send = send, NextTimer = NextTimer() };
    }

    /// <summary>
    /// The stream the lease's messages went on broke, or none could be opened: while a request or accept waits for its
    /// answer, it is repeated after <see cref="LeaseOptions.LostStreamRetry"/> instead of at the retry interval (the
    /// repeat counts against <see cref="LeaseOptions.MaxAttempts"/> as any other). Otherwise nothing changes.
    /// </summary>
    public LeaseStep OnStreamLost(DateTimeOffset now)
    {
        if (_phase is not (Phase.Requesting or Phase.Accepted))
        {
            return LeaseStep.Nothing;
        }
        var soon = now + (_options.LostStreamRetry < _options.RetryInterval ? _options.LostStreamRetry : _options.RetryInterval);
        if (soon < _retryAt)
        {
            _retryAt = soon;
        }
        return new LeaseStep { NextTimer = NextTimer() };
    }

    /// <summary>
    /// The provider could not be reached at all (the dial for a message failed). While the request waits for its offer the
    /// lease ends at once as <see cref="LeaseOutcomeKind.Unreachable"/> (nothing was agreed: the job chooses another
    /// provider); once an offer was accepted it keeps its retry interval, as the provider holds the lease.
    /// </summary>
    public LeaseStep OnUnreachable(DateTimeOffset now) =>
        _phase == Phase.Requesting ? Finish(LeaseOutcomeKind.Unreachable, $"provider unreachable after {_attempts} request{(_attempts == 1 ? "" : "s")}", null)
        : LeaseStep.Nothing;

    /// <summary>The requester gives up the lease.</summary>
    public LeaseStep Cancel(string reason, DateTimeOffset now) =>
        _phase is Phase.Finished ? LeaseStep.Nothing
        : Finish(LeaseOutcomeKind.Cancelled, $"cancelled by requester: {reason}", _phase == Phase.Idle ? null : Cancel(reason));

    private LeaseStep OnOffer(LeaseOffer offer, DateTimeOffset now)
    {
        if (_phase != Phase.Requesting)
        {
            // The provider answers a repeated request with the same offer; anything else is a violation.
            return SignedTerms is not null && offer.Terms.AsSpan().SequenceEqual(SignedTerms.Terms)
                ? new LeaseStep { NextTimer = NextTimer() }
                : Fail("a second, different offer");
        }
        if (CheckOffer(offer, now) is { } problem)
        {
            return Fail(problem);
        }
        var signature = SignedLeaseTerms.SignRequester(offer.Terms, _key);
        SignedTerms = new SignedLeaseTerms { Terms = offer.Terms, ProviderSignature = offer.ProviderSignature, RequesterSignature = signature };
        _heartbeat = TimeSpan.FromMilliseconds(Terms!.HeartbeatIntervalMs);
        _phase = Phase.Accepted;
        _attempts = 1;
        _retryAt = now + _options.RetryInterval;
        _nextHeartbeat = now + _heartbeat;
        _acceptAndData = [new LeaseAccept { RequestId = RequestId, RequesterSignature = signature }];
        if (Terms.ModuleNeeded)
        {
            AddChunks(_acceptAndData, LeaseDataKind.Module, _work.Module);
        }
        AddChunks(_acceptAndData, LeaseDataKind.Input, _work.Input);
        return new LeaseStep { Send = _acceptAndData, NextTimer = NextTimer() };
    }

    private string? CheckOffer(LeaseOffer offer, DateTimeOffset now)
    {
        if (!LeaseCodec.TryDecodeTerms(offer.Terms, _options, out var terms))
        {
            return "offer terms do not decode";
        }
        if (!SignedLeaseTerms.VerifyProvider(offer.Terms, offer.ProviderSignature, _providerKey))
        {
            return "offer signature does not verify";
        }
        if (terms.RequestId != RequestId || !terms.Provider.AsSpan().SequenceEqual(Provider.Bytes)
            || !terms.Requester.AsSpan().SequenceEqual(_key.PeerId.Bytes))
        {
            return "offer names other parties or another request";
        }
        var r = Request;
        if (!terms.ModuleHash.AsSpan().SequenceEqual(r.ModuleHash) || terms.ModuleSize != r.ModuleSize
            || !terms.InputHash.AsSpan().SequenceEqual(r.InputHash) || terms.InputSize != r.InputSize
            || terms.FuelLimit != r.FuelLimit || terms.MemoryLimitBytes != r.MemoryLimitBytes
            || terms.DeadlineUnixMs > r.DeadlineUnixMs || terms.DeadlineUnixMs <= now.ToUnixTimeMilliseconds()
            || !terms.AuditCommitment.AsSpan().SequenceEqual(r.AuditCommitment) || terms.AuditRatePpm != r.AuditRatePpm)
        {
            return "offer terms differ from the request";
        }
        if (terms.PricePerMegaFuel < 0 || terms.PricePerMegaFuel > r.MaxPricePerMegaFuel)
        {
            return "offer price over the maximum";
        }
        if (_work.AdvertisedPricePerMegaFuel is { } advertised && terms.PricePerMegaFuel > advertised)
        {
            return $"offer price {terms.PricePerMegaFuel} above the advertised {advertised}";
        }
        var heartbeat = TimeSpan.FromMilliseconds(terms.HeartbeatIntervalMs);
        if (heartbeat < _options.MinHeartbeatInterval || heartbeat > _options.MaxHeartbeatInterval)
        {
            return "offer heartbeat interval out of bounds";
        }
        if (terms.OfferExpiresUnixMs <= now.ToUnixTimeMilliseconds())
        {
            return "offer already expired";
        }
        if (DebitNoteSlicing.CheckOffered(r, terms, _options) is { } slicing)
        {
            return slicing;
        }
        // The provider may offer an earlier deadline than asked (it follows from the fuel and its speed): the lease ends then.
        Terms = terms;
        _deadline = DateTimeOffset.FromUnixTimeMilliseconds(terms.DeadlineUnixMs);
        return null;
    }

    private LeaseStep OnResult(LeaseResult result, DateTimeOffset now)
    {
        if (_phase == Phase.Requesting)
        {
            return Fail("result before accept");
        }
        if (result.Output is { } output && !SHA256.HashData(output).AsSpan().SequenceEqual(result.OutputHash))
        {
            return Fail("result output does not match its hash");
        }
        if (result.FuelUsed > Terms!.FuelLimit)
        {
            return Fail("result claims more fuel than the limit");
        }
        _phase = Phase.Finished;
        Outcome = new LeaseOutcome(LeaseOutcomeKind.Completed, result.Status.ToString()) { Result = result, Terms = SignedTerms };
        return new LeaseStep { Outcome = Outcome };
    }

    private void AddChunks(List<LeaseMessage> list, LeaseDataKind kind, ReadOnlyMemory<byte> content)
    {
        for (var offset = 0; offset < content.Length; offset += _options.MaxChunkBytes)
        {
            var length = Math.Min(_options.MaxChunkBytes, content.Length - offset);
            list.Add(new LeaseData { RequestId = RequestId, Kind = kind, Offset = offset, Bytes = content.Slice(offset, length).ToArray() });
        }
    }

    private LeaseStep Fail(string reason) => Finish(LeaseOutcomeKind.Failed, reason, Cancel(reason));

    private LeaseStep Finish(LeaseOutcomeKind kind, string detail, LeaseMessage? send, LeaseRejectReason? reject = null, int? leaseLimit = null)
    {
        _phase = Phase.Finished;
        Outcome = new LeaseOutcome(kind, detail) { Terms = SignedTerms, RejectReason = reject, RejectLeaseLimit = leaseLimit };
        return new LeaseStep { Send = send is null ? [] : [send], Outcome = Outcome };
    }

    private LeaseCancel Cancel(string reason) =>
        new() { RequestId = RequestId, Reason = reason.Length <= _options.MaxReasonLength ? reason : reason[.._options.MaxReasonLength] };

    private DateTimeOffset SilenceLimit => _lastHeard + _heartbeat * _options.MissedHeartbeatsBeforeExpiry;

    private DateTimeOffset? NextTimer()
    {
        var next = _deadline;
        if (_phase is Phase.Requesting or Phase.Accepted && _retryAt < next)
        {
            next = _retryAt;
        }
        if (_phase is Phase.Accepted or Phase.Running)
        {
            next = Min(Min(next, SilenceLimit), _nextHeartbeat);
        }
        return _phase is Phase.Finished or Phase.Idle ? null : next;
    }

    private static DateTimeOffset Min(DateTimeOffset a, DateTimeOffset b) => a <= b ? a : b;
}
