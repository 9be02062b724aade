using Potluck.Protocol.Identity;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Cores;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Verification;

namespace Potluck.Scheduler.Requesting;

/// <summary>What the shell does for a <see cref="JobStep{TLease}"/> once its bookkeeping and settlement are done.</summary>
public enum JobAction
{
    /// <summary>Nothing (an event that changes nothing now, such as a stale timer).</summary>
    None,
    /// <summary>Choose a provider now (<see cref="RequesterJob.Filter"/>, the selector): answer with <see cref="JobCore{TLease}.OnChosen"/> or <see cref="JobCore{TLease}.OnNoMatch"/>.</summary>
    Choose,
    /// <summary>Wait for a newer advertisement (<see cref="JobCore{TLease}.OnProvidersChanged"/>) or the step's wake time.</summary>
    Wait,
    /// <summary>Lease <see cref="JobStep{TLease}.Ad"/>: answer with <see cref="JobCore{TLease}.OnLeaseEnded"/> or <see cref="JobCore{TLease}.OnResult"/>.</summary>
    Lease,
    /// <summary>Re-run the task here: answer with <see cref="JobCore{TLease}.OnRerun"/>.</summary>
    Rerun,
    /// <summary>No sandbox here: lease the task to a second provider (<see cref="RequesterJob.OnSecondResult"/>), answer with <see cref="JobCore{TLease}.OnSecondChecked"/>.</summary>
    CheckOnSecond,
    /// <summary>A checker in good standing contradicts the result: resolve the dispute with a third opinion, which ends the job.</summary>
    Dispute,
    /// <summary>The job ends with an answer (<see cref="JobStep{TLease}.End"/>).</summary>
    Finish,
    /// <summary>The job ends without one: <see cref="JobStep{TLease}.Failure"/>, the no-match explanation, or <see cref="JobEnd.GiveUp"/>.</summary>
    Fail,
}

/// <summary>What a delivered result looks like before it is trusted (the inputs of <see cref="RequesterJob.InspectResult"/>).</summary>
public sealed record ResultInspection(string? AttestationProblem, bool MatchesDelivery, ExecutionStatus ClaimedStatus, ulong AttestedFuel,
    ulong PaidFuel, bool TermsDecode);

/// <summary>
/// One step of a <see cref="JobCore{TLease}"/>, carried out by the shell in this order: bookkeeping for the attempt that just
/// ended (<see cref="Release"/> its reservation, <see cref="Note"/> the provider's record, report <see cref="Attempt"/>), the
/// settlement of a checked result (<see cref="Settle"/>: convict and publish, pay, or leave unpaid), then <see cref="Action"/>.
/// </summary>
/// <typeparam name="TLease">The shell's handle of a delivered result (opaque to the core).</typeparam>
public sealed record JobStep<TLease> where TLease : class
{
    public JobAction Action { get; init; }

    public CoreWake Wake { get; init; }

    /// <summary>The lease whose reservation is released (it produced nothing to pay).</summary>
    public byte[]? Release { get; init; }

    /// <summary>The provider whose record gets <see cref="Note"/>.</summary>
    public PeerId? NoteFor { get; init; }

    public ReputationNote Note { get; init; }

    /// <summary>An attempt the job has recorded, to report (<c>ComputeClient.AttemptEnded</c>).</summary>
    public AttemptRecord? Attempt { get; init; }

    /// <summary>The result to settle, or to re-check (<see cref="JobAction.Rerun"/>, <see cref="JobAction.CheckOnSecond"/>, <see cref="JobAction.Dispute"/>).</summary>
    public TLease? Lease { get; init; }

    /// <summary>How to settle <see cref="Lease"/>: convict (no payment), pay, or leave unpaid.</summary>
    public SettleStep? Settle { get; init; }

    /// <summary>A check's verdict was reached (for the verification counter), <see cref="Verdict"/> being it (null: unchecked).</summary>
    public bool Checked { get; init; }

    public CheckVerdict? Verdict { get; init; }

    /// <summary>The provider to lease (<see cref="JobAction.Lease"/>).</summary>
    public VerifiedAdvertisement? Ad { get; init; }

    /// <summary>The second provider's check (<see cref="JobAction.Dispute"/>).</summary>
    public TLease? Checker { get; init; }

    /// <summary>The job's end (<see cref="JobAction.Finish"/>, or <see cref="JobAction.Fail"/> out of attempts).</summary>
    public JobEnd? End { get; init; }

    /// <summary>The result that is the answer (<see cref="JobEnd.LeaseResult"/>).</summary>
    public TLease? Answer { get; init; }

    /// <summary>Why the job fails: an effect threw this (<see cref="JobAction.Fail"/>).</summary>
    public Exception? Failure { get; init; }

    /// <summary>No provider fits: the shell's explanation (<see cref="JobAction.Fail"/>).</summary>
    public Func<Exception>? NoProvider { get; init; }
}

/// <summary>
/// The requester's per-job flow for one provider at a time (a sample checked) as a core a <see cref="CoreShell{TStep}"/> drives:
/// events in (a provider chosen or none fits, advertisements changed, a lease ended without a result or delivered one, a
/// re-run's or a second provider's verdict, the timer, an effect that threw) with <c>now</c>, steps out (choose, wait until,
/// lease this provider, re-run, check on a second provider, convict or pay or leave unpaid, finish, fail). The decisions are
/// <see cref="RequesterJob"/>'s; this adds the states between them. No I/O, no awaits, no clock inside.
/// Replicas and their tie-break are not on it (they lease concurrently: <c>ComputeClient.RunReplicatedAsync</c>), and a
/// dispute, once the core has found one, is resolved by the shell's <c>ResolveDisputeAsync</c> (<see cref="JobAction.Dispute"/>).
/// </summary>
public sealed class JobCore<TLease> where TLease : class
{
    private static readonly JobStep<TLease> Nothing = new();

    /// <summary>Choose a provider, with nothing to carry out first: one shared step (steps are immutable).</summary>
    private static readonly JobStep<TLease> ChooseNow = new() { Action = JobAction.Choose, Wake = CoreWake.Disarm };

    private readonly RequesterJob _job;
    private State _state;
    private DateTimeOffset _providersBy;
    private TLease? _lease;
    private RunSummary? _claimed;

    public JobCore(RequesterJob job)
    {
        ArgumentNullException.ThrowIfNull(job);
        _job = job;
    }

    /// <summary>The decisions this core moves between.</summary>
    public RequesterJob Job => _job;

    /// <summary>No more events are taken: the job finished or failed.</summary>
    public bool IsEnded => _state == State.Ended;

    /// <summary>The job starts: its first attempt.</summary>
    public JobStep<TLease> Start(DateTimeOffset now) => _state == State.Idle ? NextAttempt(now, Nothing) : Nothing;

    /// <summary>The shell chose <paramref name="ad"/> among the providers <see cref="RequesterJob.Filter"/> left: lease it (it is not chosen again while it runs).</summary>
    public JobStep<TLease> OnChosen(VerifiedAdvertisement ad, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(ad);
        if (_state != State.Choosing)
        {
            return Nothing;
        }
        _state = State.Leasing;
        _job.OnLeaseStarted(ad.Provider);
        return new JobStep<TLease> { Action = JobAction.Lease, Ad = ad };
    }

    /// <summary>
    /// No provider fits now (<see cref="RequesterJob.OnNoMatch"/>): wait for a newer advertisement until the time it says
    /// (busy providers are asked again by their backoff), or fail with <paramref name="explain"/>.
    /// </summary>
    public JobStep<TLease> OnNoMatch(int busy, int othersSeen, DateTimeOffset? retryAt, Func<Exception> explain, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(explain);
        if (_state != State.Choosing)
        {
            return Nothing;
        }
        if (_job.OnNoMatch(busy, othersSeen, retryAt, now, ref _providersBy) is not { } wake)
        {
            _state = State.Ended;
            return new JobStep<TLease> { Action = JobAction.Fail, NoProvider = explain, Wake = CoreWake.Ended };
        }
        _state = State.Waiting;
        return new JobStep<TLease> { Action = JobAction.Wait, Wake = CoreWake.WakeAt(wake) };
    }

    /// <summary>A newer advertisement arrived: a waiting job chooses again.</summary>
    public JobStep<TLease> OnProvidersChanged(DateTimeOffset now) => ChooseAgain();

    /// <summary>The wake time of a wait came: choose again.</summary>
    public JobStep<TLease> OnTimer(DateTimeOffset now) => ChooseAgain();

    /// <summary>
    /// A lease produced no result (busy, refused, lost, failed): its reservation is released, the provider's record noted as
    /// <see cref="RequesterJob.OnLeaseEnded"/> says, and the next attempt begins (a busy refusal is not counted).
    /// </summary>
    public JobStep<TLease> OnLeaseEnded(PeerId provider, ulong adSequence, byte[] leaseId, LeaseOutcomeKind kind, LeaseRejectReason? reject,
        string detail, DateTimeOffset now)
    {
        if (_state != State.Leasing)
        {
            return Nothing;
        }
        var note = _job.OnLeaseEnded(provider, adSequence, kind, reject, detail, now);
        return NextAttempt(now, new JobStep<TLease>
        {
            Release = leaseId,
            NoteFor = provider,
            Note = note,
            Attempt = new AttemptRecord(provider, kind, detail, 0),
        });
    }

    /// <summary>
    /// A lease delivered a result. One that cannot be used (<see cref="RequesterJob.InspectResult"/>) is not paid and the next
    /// attempt begins; otherwise it is checked as <see cref="RequesterJob.PlanCheck"/> says.
    /// </summary>
    /// <param name="claimed">The attested summary (read only when <paramref name="inspection"/> finds no problem).</param>
    /// <param name="sampled">The audit draw over the secret and the attestation (<see cref="LeaseAudit.Selected"/>).</param>
    public JobStep<TLease> OnResult(TLease lease, PeerId provider, byte[] leaseId, ResultInspection inspection, RunSummary? claimed, bool sampled,
        bool canRerunLocally, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(inspection);
        if (_state != State.Leasing)
        {
            return Nothing;
        }
        _job.OnResultDelivered();
        if (_job.InspectResult(provider, inspection.AttestationProblem, inspection.MatchesDelivery, inspection.ClaimedStatus,
                inspection.AttestedFuel, inspection.PaidFuel, inspection.TermsDecode) is { } problem)
        {
            return NextAttempt(now, new JobStep<TLease>
            {
                Release = leaseId,
                NoteFor = provider,
                Note = problem.Note,
                Attempt = new AttemptRecord(provider, LeaseOutcomeKind.Failed, problem.Why, 0),
            });
        }
        ArgumentNullException.ThrowIfNull(lease);
        _lease = lease;
        _claimed = claimed ?? throw new ArgumentNullException(nameof(claimed));
        switch (_job.PlanCheck(sampled, canRerunLocally))
        {
            case CheckPlan.CompareWithTrusted:
                return Judge(_job.CompareWithTrusted(_claimed), ownRunDeterministic: true, null, null, now); // trusted only when deterministic
            case CheckPlan.RerunLocally:
                _state = State.Checking;
                return new JobStep<TLease> { Action = JobAction.Rerun, Lease = lease };
            case CheckPlan.LeaseSecond:
                _state = State.Checking;
                return new JobStep<TLease> { Action = JobAction.CheckOnSecond, Lease = lease };
            default:
                return Judge(null, ownRunDeterministic: false, null, null, now);
        }
    }

    /// <summary>This node re-ran the task (<see cref="RequesterJob.OnLocalRerun"/>).</summary>
    public JobStep<TLease> OnRerun(RunSummary rerun, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(rerun);
        if (_state != State.Checking)
        {
            return Nothing;
        }
        return Judge(_job.OnLocalRerun(_claimed!, rerun), rerun.Deterministic, null, null, now);
    }

    /// <summary>
    /// A second provider's check (<see cref="RequesterJob.OnSecondResult"/>; its own lease is settled by the shell unless
    /// disputed); null <paramref name="check"/> when none produced a result. A dispute goes to <see cref="JobAction.Dispute"/>.
    /// </summary>
    public JobStep<TLease> OnSecondChecked(SecondCheck? check, TLease? checker, DateTimeOffset now)
    {
        if (_state != State.Checking)
        {
            return Nothing;
        }
        if (check is { Disputed: true })
        {
            _state = State.Ended;
            return new JobStep<TLease> { Action = JobAction.Dispute, Lease = _lease, Checker = checker, Wake = CoreWake.Ended };
        }
        return Judge(check?.Verdict, ownRunDeterministic: false, check, checker, now);
    }

    /// <summary>An effect threw: the job ends with that failure (it never hangs).</summary>
    public JobStep<TLease> OnEffectFailed(Exception error, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(error);
        _state = State.Ended;
        return new JobStep<TLease> { Action = JobAction.Fail, Failure = error, Wake = CoreWake.Ended };
    }

    private JobStep<TLease> ChooseAgain()
    {
        if (_state != State.Waiting)
        {
            return Nothing;
        }
        _state = State.Choosing;
        return ChooseNow;
    }

    /// <summary>The verdict is in (<see cref="RequesterJob.OnVerdict"/>): settle, then finish or try another provider.</summary>
    private JobStep<TLease> Judge(CheckVerdict? verdict, bool ownRunDeterministic, SecondCheck? check, TLease? checker, DateTimeOffset now)
    {
        var decision = _job.OnVerdict(_claimed!, verdict, ownRunDeterministic, check);
        if (decision.End is not { } end)
        {
            return NextAttempt(now, new JobStep<TLease> { Checked = true, Verdict = verdict, Lease = _lease, Settle = decision.Settle });
        }
        _state = State.Ended;
        return new JobStep<TLease>
        {
            Checked = true,
            Verdict = verdict,
            Lease = _lease,
            Settle = decision.Settle,
            Action = JobAction.Finish,
            End = end,
            Answer = end is JobEnd.LeaseResult { Index: 1 } ? checker : _lease,
            Wake = CoreWake.Ended,
        };
    }

    /// <summary>Another attempt, if any is left (<see cref="RequesterJob.NextAttempt"/>), after <paramref name="before"/>'s effects.</summary>
    private JobStep<TLease> NextAttempt(DateTimeOffset now, JobStep<TLease> before)
    {
        _lease = null;
        _claimed = null;
        if (!_job.NextAttempt())
        {
            _state = State.Ended;
            var end = _job.OutOfAttempts();
            return before with { Action = end is JobEnd.GiveUp ? JobAction.Fail : JobAction.Finish, End = end, Wake = CoreWake.Ended };
        }
        _providersBy = _job.BeginChoice(now);
        _state = State.Choosing;
        return ReferenceEquals(before, Nothing) ? ChooseNow : before with { Action = JobAction.Choose, Wake = CoreWake.Disarm };
    }

    private enum State : byte
    {
        Idle,
        Choosing,
        Waiting,
        Leasing,
        Checking,
        Ended,
    }
}
