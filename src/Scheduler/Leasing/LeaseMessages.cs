using MessagePack;

namespace Potluck.Scheduler.Leasing;

/// <summary>
/// One message of <see cref="LeaseProtocol.Id"/>: a MessagePack union (tag, body) with integer keys, framed by an
/// unsigned-varint length (<see cref="LeaseCodec"/>). Every message names the lease by <see cref="RequestId"/>,
/// chosen at random by the requester; a message repeated with the same id is a retry, never a new lease.
/// </summary>
[Union(0, typeof(LeaseRequest))]
[Union(1, typeof(LeaseOffer))]
[Union(2, typeof(LeaseReject))]
[Union(3, typeof(LeaseAccept))]
[Union(4, typeof(LeaseData))]
[Union(5, typeof(LeaseHeartbeat))]
[Union(6, typeof(LeaseCancel))]
[Union(7, typeof(LeaseResult))]
[Union(8, typeof(LeaseReceipt))]
[Union(9, typeof(LeaseReceiptAck))]
[Union(10, typeof(LeaseDebitNote))]
public abstract record LeaseMessage
{
    [Key(0)] public ulong RequestId { get; init; }
}

/// <summary>Requester → provider: run this module on this input within these limits, at up to this price.</summary>
[MessagePackObject]
public sealed record LeaseRequest : LeaseMessage
{
    /// <summary>SHA-256 of the WASM module.</summary>
    [Key(1)] public byte[] ModuleHash { get; init; } = [];

    [Key(2)] public long ModuleSize { get; init; }

    /// <summary>SHA-256 of the input (stdin) bytes.</summary>
    [Key(3)] public byte[] InputHash { get; init; } = [];

    [Key(4)] public long InputSize { get; init; }

    [Key(5)] public long FuelLimit { get; init; }

    [Key(6)] public long MemoryLimitBytes { get; init; }

    /// <summary>When the result must be in, Unix milliseconds.</summary>
    [Key(7)] public long DeadlineUnixMs { get; init; }

    /// <summary>The most the requester pays, in credits per million fuel.</summary>
    [Key(8)] public long MaxPricePerMegaFuel { get; init; }

    /// <summary>SHA-256 commitment to the requester's audit secret (see <see cref="LeaseTerms.AuditCommitment"/>); empty for none.</summary>
    [Key(9)] public byte[] AuditCommitment { get; init; } = [];

    /// <summary>The re-run rate the requester declares, parts per million.</summary>
    [Key(10)] public int AuditRatePpm { get; init; }

    /// <summary>
    /// The requester pays long leases as they go (it takes <see cref="LeaseDebitNote"/>s): absent, and false, from older
    /// nodes, which are then never sent one.
    /// </summary>
    [Key(11)] public bool AcceptsDebitNotes { get; init; }

    /// <summary>True when both requests ask for the same work (a retry rather than a reused id).</summary>
    public bool SameWork(LeaseRequest other) =>
        RequestId == other.RequestId && ModuleHash.AsSpan().SequenceEqual(other.ModuleHash) && ModuleSize == other.ModuleSize
        && InputHash.AsSpan().SequenceEqual(other.InputHash) && InputSize == other.InputSize && FuelLimit == other.FuelLimit
        && MemoryLimitBytes == other.MemoryLimitBytes && DeadlineUnixMs == other.DeadlineUnixMs
        && MaxPricePerMegaFuel == other.MaxPricePerMegaFuel
        && AuditCommitment.AsSpan().SequenceEqual(other.AuditCommitment) && AuditRatePpm == other.AuditRatePpm
        && AcceptsDebitNotes == other.AcceptsDebitNotes;
}

/// <summary>Provider → requester: the terms (exact MessagePack bytes of <see cref="LeaseTerms"/>) and the provider's signature.</summary>
[MessagePackObject]
public sealed record LeaseOffer : LeaseMessage
{
    [Key(1)] public byte[] Terms { get; init; } = [];

    [Key(2)] public byte[] ProviderSignature { get; init; } = [];
}

/// <summary>Why a provider declined a request.</summary>
public enum LeaseRejectReason
{
    /// <summary>No free core or memory.</summary>
    Busy = 1,
    /// <summary>The offered price is below the provider's.</summary>
    Price = 2,
    /// <summary>Limits, sizes or deadline outside the provider's policy.</summary>
    Policy = 3,
    /// <summary>The provider lacks the module and does not fetch unknown ones.</summary>
    UnknownModule = 4,
    /// <summary>The request is inconsistent, e.g. an id reused for different work.</summary>
    BadRequest = 5,
}

/// <summary>Provider → requester: no lease, and why.</summary>
[MessagePackObject]
public sealed record LeaseReject : LeaseMessage
{
    [Key(1)] public LeaseRejectReason Reason { get; init; }

    /// <summary>A short human explanation, bounded by <see cref="LeaseOptions.MaxReasonLength"/>.</summary>
    [Key(2)] public string Detail { get; init; } = "";

    /// <summary>
    /// Set with <see cref="LeaseRejectReason.Busy"/> when the requester holds as many leases here as this provider lets it
    /// hold at once (<c>compute:provider:maxLeasesPerRequester</c>): that number, so the requester's window is the provider's
    /// limit itself instead of a guess from its own count (which its other refusals and endings move while they are in
    /// flight). Null otherwise, and from providers built before it (a trailing key: older requesters skip it).
    /// </summary>
    [Key(3)] public int? LeaseLimit { get; init; }
}

/// <summary>Requester → provider: the requester's signature over the offered terms bytes; the lease starts.</summary>
[MessagePackObject]
public sealed record LeaseAccept : LeaseMessage
{
    [Key(1)] public byte[] RequesterSignature { get; init; } = [];
}

/// <summary>Which content a <see cref="LeaseData"/> chunk belongs to.</summary>
public enum LeaseDataKind
{
    Module = 0,
    Input = 1,
}

/// <summary>
/// Requester → provider: one chunk of the module (only when the terms say the provider needs it) or of the input,
/// at a byte offset. Content is addressed by the SHA-256 in the terms and checked once complete.
/// </summary>
[MessagePackObject]
public sealed record LeaseData : LeaseMessage
{
    [Key(1)] public LeaseDataKind Kind { get; init; }

    [Key(2)] public long Offset { get; init; }

    [Key(3)] public byte[] Bytes { get; init; } = [];
}

/// <summary>Either side: still here. Any message counts as a sign of life; heartbeats fill the silence.</summary>
[MessagePackObject]
public sealed record LeaseHeartbeat : LeaseMessage
{
    [Key(1)] public ulong Sequence { get; init; }

    /// <summary>Provider only: fuel used so far, for progress; 0 when unknown.</summary>
    [Key(2)] public long FuelUsed { get; init; }
}

/// <summary>Either side: the lease ends now, unfinished.</summary>
[MessagePackObject]
public sealed record LeaseCancel : LeaseMessage
{
    [Key(1)] public string Reason { get; init; } = "";
}

/// <summary>How the task itself ended (the lease completed either way).</summary>
public enum ExecutionStatus
{
    Success = 0,
    /// <summary>The module trapped or exited non-zero.</summary>
    Trapped = 1,
    OutOfFuel = 2,
    OutOfMemory = 3,
    /// <summary>The runtime could not load the module.</summary>
    InvalidModule = 4,
    /// <summary>The task wrote more output than the runtime allows.</summary>
    OutputTooLarge = 5,
    /// <summary>The provider's wall-clock limit ended the task (not reproducible elsewhere).</summary>
    TimedOut = 6,
}

/// <summary>
/// Provider → requester: the result. The output travels inline when it fits <see cref="LeaseOptions.MaxInlineOutputBytes"/>,
/// otherwise only its hash and size. <see cref="Attestation"/> is opaque here (built by the ledger).
/// </summary>
[MessagePackObject]
public sealed record LeaseResult : LeaseMessage
{
    [Key(1)] public ExecutionStatus Status { get; init; }

    [Key(2)] public long FuelUsed { get; init; }

    [Key(3)] public int ExitCode { get; init; }

    /// <summary>SHA-256 of the full output.</summary>
    [Key(4)] public byte[] OutputHash { get; init; } = [];

    [Key(5)] public long OutputSize { get; init; }

    /// <summary>The output, or null when only its hash is sent.</summary>
    [Key(6)] public byte[]? Output { get; init; }

    [Key(7)] public byte[] Attestation { get; init; } = [];

    /// <summary>
    /// The task's stderr, at most <see cref="LeaseOptions.MaxStderrBytes"/>, or null when empty. A diagnostic for the
    /// submitter only: not attested, not compared by verification, never paid for (a provider could alter it).
    /// </summary>
    [Key(8)] public byte[]? Stderr { get; init; }
}

/// <summary>
/// Requester → provider, after the lease (<see cref="LeaseProtocol.IdWithReceipts"/> only): the signed receipt that
/// pays for it, as <c>/potluck/receipt/1.0.0</c> would carry it. Opaque here (built and checked by the ledger).
/// </summary>
[MessagePackObject]
public sealed record LeaseReceipt : LeaseMessage
{
    [Key(1)] public byte[] Envelope { get; init; } = [];
}

/// <summary>Provider → requester: the answer to a <see cref="LeaseReceipt"/>, an encoded receipt acknowledgement (opaque here).</summary>
[MessagePackObject]
public sealed record LeaseReceiptAck : LeaseMessage
{
    [Key(1)] public byte[] Ack { get; init; } = [];
}

/// <summary>
/// Provider → requester, only on a lease whose terms name <see cref="LeaseTerms.DebitNoteFuel"/>: a signed debit note
/// (<see cref="Credits.SignedDebitNote"/>, opaque here) for the fuel used so far. The task waits until the requester pays it
/// with a receipt (<see cref="LeaseReceipt"/> on the lease stream, or <c>/potluck/receipt/1.0.0</c>).
/// </summary>
[MessagePackObject]
public sealed record LeaseDebitNote : LeaseMessage
{
    [Key(1)] public byte[] Note { get; init; } = [];
}
