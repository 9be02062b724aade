namespace Potluck.Scheduler.Leasing;

/// <summary>How a lease ended.</summary>
public enum LeaseOutcomeKind
{
    /// <summary>A result was delivered (the task itself may have trapped: see <see cref="LeaseResult.Status"/>).</summary>
    Completed,
    /// <summary>The provider declined the request.</summary>
    Rejected,
    /// <summary>The other side fell silent past the grace window, the offer lapsed, retries ran out, or the deadline passed.</summary>
    Expired,
    /// <summary>One side cancelled.</summary>
    Cancelled,
    /// <summary>The other side broke the protocol: bad signature, terms that do not match, content that does not hash.</summary>
    Failed,
    /// <summary>
    /// Requester only: the provider could not be reached at all (the dial for the request failed). Nothing was agreed; the
    /// job tries another provider at once and does not count it against the provider or its attempts.
    /// </summary>
    Unreachable,
}

/// <summary>The end of a lease, reported once.</summary>
public sealed record LeaseOutcome(LeaseOutcomeKind Kind, string Detail)
{
    /// <summary>Set when <see cref="Kind"/> is <see cref="LeaseOutcomeKind.Rejected"/>.</summary>
    public LeaseRejectReason? RejectReason { get; init; }

    /// <summary>A busy refusal's <see cref="LeaseReject.LeaseLimit"/>: the leases the provider lets this requester hold at once.</summary>
    public int? RejectLeaseLimit { get; init; }

    /// <summary>The result sent or received, when <see cref="Kind"/> is <see cref="LeaseOutcomeKind.Completed"/>.</summary>
    public LeaseResult? Result { get; init; }

    /// <summary>The terms both parties signed, when the lease got that far.</summary>
    public SignedLeaseTerms? Terms { get; init; }
}

/// <summary>
/// What a lease state machine asks its shell to do after an event: send these messages in order, call
/// <c>OnTimer</c> at <see cref="NextTimer"/> (replacing any earlier timer; null keeps the current one), start or
/// abort the execution, and report the outcome when the lease has ended (after which no timer is needed).
/// </summary>
public sealed record LeaseStep
{
    public static LeaseStep Nothing { get; } = new();

    public IReadOnlyList<LeaseMessage> Send { get; init; } = [];

    /// <summary>When to call <c>OnTimer</c> next; null keeps the timer already set (none once the lease has ended).</summary>
    public DateTimeOffset? NextTimer { get; init; }

    /// <summary>Provider only: run this task now and report with <c>OnExecutionCompleted</c>.</summary>
    public LeaseExecution? Execute { get; init; }

    /// <summary>Provider only: stop the running task; its result will be ignored.</summary>
    public bool AbortExecution { get; init; }

    /// <summary>Set on the step that ends the lease.</summary>
    public LeaseOutcome? Outcome { get; init; }
}
