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
    /// <summary>
    /// Lease <see cref="JobStep{TLease}.Ad"/>: answer with <see cref="JobCore{TLease}.OnLeaseEnded"/> or <see cref="JobCore{TLease}.OnResult"/>.
    /// With a <see cref="JobStep{TLease}.Slot"/> (a replica, a tie-breaker, a third opinion): start it, declared as always
    /// compared, and go on at once; it answers with the slot's events when it ends (or <see cref="JobCore{TLease}.OnLeaseFailed"/>).
    /// </summary>
    Lease,
    /// <summary>Re-run the task here: answer with <see cref="JobCore{TLease}.OnRerun"/>.</summary>
    Rerun,
    /// <summary>The job ends with an answer (<see cref="JobStep{TLease}.End"/>).</summary>
    Finish,
    /// <summary>The job ends without one: <see cref="JobStep{TLease}.Failure"/>, the no-match explanation, or <see cref="JobEnd.GiveUp"/>.</summary>
    Fail,
}

/// <summary>What a delivered result looks like before it is trusted (the inputs of <see cref="RequesterJob.InspectResult"/>).</summary>
public sealed record ResultInspection(string? AttestationProblem, bool MatchesDelivery, ExecutionStatus ClaimedStatus, ulong AttestedFuel,
    ulong PaidFuel, bool TermsDecode);

/// <summary>One result's settlement among several (<see cref="JobStep{TLease}.Settlements"/>).</summary>
/// <param name="Why">Why a convicted party is refused (null: a re-run contradicts it).</param>
/// <param name="Counted">Its verdict is counted by the verification counter.</param>
public sealed record Settlement<TLease>(TLease Lease, SettleStep Step, string? Why = null, bool Counted = false) where TLease : class;

/// <summary>
/// One step of a <see cref="JobCore{TLease}"/>, carried out by the shell in this order: bookkeeping for the attempt that just
/// ended (<see cref="Release"/> its reservation, or <see cref="ReleaseAll"/> when the job fails holding results, <see cref="Note"/>
/// the provider's record, report <see cref="Attempt"/>), the counters (<see cref="SecondCheck"/>, <see cref="Dispute"/>, the
/// verdict, <see cref="TieBreak"/>), the settlements of checked results (<see cref="Settlements"/> in order, then
/// <see cref="Settle"/>: convict and publish, pay, or leave unpaid), then <see cref="Action"/> and <see cref="ChooseNext"/>.
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

    /// <summary>The result to settle, or to re-check (<see cref="JobAction.Rerun"/>).</summary>
    public TLease? Lease { get; init; }

    /// <summary>How to settle <see cref="Lease"/>: convict (no payment), pay, or leave unpaid.</summary>
    public SettleStep? Settle { get; init; }

    /// <summary>A check's verdict was reached (for the verification counter), <see cref="Verdict"/> being it (null: unchecked).</summary>
    public bool Checked { get; init; }

    public CheckVerdict? Verdict { get; init; }

    /// <summary>The provider to lease (<see cref="JobAction.Lease"/>).</summary>
    public VerifiedAdvertisement? Ad { get; init; }

    /// <summary>
    /// The lease slot a <see cref="JobAction.Choose"/> or <see cref="JobAction.Lease"/> is for: a replica, a tie-breaker or a
    /// third opinion, leased beside others (its answers name it). Null: the one lease of a sampled run.
    /// </summary>
    public int? Slot { get; init; }

    /// <summary>After <see cref="Action"/>: choose a provider for this slot too (answer with the slot's <c>OnChosen</c> or <c>OnNoMatch</c>).</summary>
    public int? ChooseNext { get; init; }

    /// <summary>Reservations of results the job held and will not settle (it fails): released.</summary>
    public IReadOnlyList<byte[]>? ReleaseAll { get; init; }

    /// <summary>Several results to settle, in order (replicas; a dispute's three parties), after <see cref="Settle"/>.</summary>
    public IReadOnlyList<Settlement<TLease>>? Settlements { get; init; }

    /// <summary>A tie-break ended: "majority" or "unresolved" (for the tie-break counter).</summary>
    public string? TieBreak { get; init; }

    /// <summary>A second provider's check answered: whether the checker was in good standing (for the second-check counter).</summary>
    public bool? SecondCheck { get; init; }

    /// <summary>A dispute was resolved, or not: how (for the dispute counter).</summary>
    public DisputeOutcome? Dispute { get; init; }

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
/// The requester's per-job flow as a core a <see cref="CoreShell{TStep}"/> drives: events in (a provider chosen or none fits,
/// advertisements changed, a lease ended without a result or delivered one, a re-run's or a second provider's verdict, the
/// timer, an effect that threw) with <c>now</c>, steps out (choose, wait until, lease this provider, re-run, check on a second
/// provider, convict or pay or leave unpaid, finish, fail). The decisions are <see cref="RequesterJob"/>'s; this adds the
/// states between them. No I/O, no awaits, no clock inside.
/// <para>
/// A sampled run (one replica) leases one provider at a time; a sample it cannot re-run here is checked by a second
/// provider, leased in a slot (below) among providers in good standing when one fits. A job of k replicas leases k providers at once, each in a
/// numbered slot (<see cref="JobStep{TLease}.Slot"/>): a slot chooses, waits while none fits, leases, and ends with a result
/// or without one; rounds of the missing replicas follow (up to <see cref="RequesterJobSettings.MaxAttempts"/>, rounds of
/// busy refusals only not counted); replicas that disagree on a node that cannot re-run get a tie-breaker
/// (<see cref="RequesterJob.NeedsTieBreak"/>), leased in a slot of its own among providers in good standing when one fits;
/// then a re-run here if <see cref="RequesterJob.NeedsLocalRerun"/>, and <see cref="RequesterJob.DecideReplicas"/> settles
/// every replica. A dispute (a checker in good standing contradicts a sampled result) gets its third opinion the same way:
/// a slot leased among providers in good standing only, up to <see cref="RequesterJobSettings.MaxAttempts"/> leases, then
/// <see cref="RequesterJob.ResolveDispute"/> settles the three parties and ends the job.
/// </para>
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
    private TLease? _checker;
    private RunSummary? _checkerClaimed;

    // Slots (replicas, a tie-breaker, a second provider's check, a third opinion): leases in flight beside each other, and the results they brought.
    private readonly Dictionary<int, Slot> _slots = [];
    private readonly Queue<int> _toChoose = new();
    private readonly List<Held> _results = [];
    private Phase _phase;
    private int? _choosing;
    private int _nextSlot;
    private int _round;
    private int _roundEmpty;
    private int _roundBusyBefore;
    private int _tries;
    private bool _tieBroken;
    private Func<Exception>? _noProvider;

    public JobCore(RequesterJob job)
    {
        ArgumentNullException.ThrowIfNull(job);
        _job = job;
    }

    /// <summary>This node's sandbox can reproduce the task (a job of replicas re-runs here rather than break a tie remotely).</summary>
    public bool CanRerunLocally { get; init; }

    /// <summary>The decisions this core moves between.</summary>
    public RequesterJob Job => _job;

    /// <summary>No more events are taken: the job finished or failed.</summary>
    public bool IsEnded => _state == State.Ended;

    /// <summary>The job starts: its first attempt, or its first round of replicas.</summary>
    public JobStep<TLease> Start(DateTimeOffset now)
    {
        if (_state != State.Idle)
        {
            return Nothing;
        }
        if (_job.Replicas == 1)
        {
            return NextAttempt(now, Nothing);
        }
        _state = State.Slots;
        _phase = Phase.Replicas;
        return NewRound(now, Nothing);
    }

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

    /// <summary>A newer advertisement arrived: a waiting job (every waiting slot) chooses again.</summary>
    public JobStep<TLease> OnProvidersChanged(DateTimeOffset now) => _state == State.Slots ? SlotsChooseAgain(now, all: true) : ChooseAgain();

    /// <summary>The wake time of a wait came: choose again (the slots whose wait is over).</summary>
    public JobStep<TLease> OnTimer(DateTimeOffset now) => _state == State.Slots ? SlotsChooseAgain(now, all: false) : ChooseAgain();

    /// <summary>
    /// A lease produced no result (busy, refused, lost, failed): its reservation is released, the provider's record noted as
    /// <see cref="RequesterJob.OnLeaseEnded"/> says, and the next attempt begins (a busy refusal is not counted).
    /// </summary>
    /// <param name="heldOthers">A busy refusal while this node held other leases with the provider: no backoff (<see cref="RequesterJob.OnLeaseEnded"/>).</param>
    public JobStep<TLease> OnLeaseEnded(PeerId provider, ulong adSequence, byte[] leaseId, LeaseOutcomeKind kind, LeaseRejectReason? reject,
        string detail, DateTimeOffset now, bool heldOthers = false)
    {
        if (_state != State.Leasing)
        {
            return Nothing;
        }
        var note = _job.OnLeaseEnded(provider, adSequence, kind, reject, detail, now, heldOthers);
        return NextAttempt(now, AttemptEnded(provider, leaseId, note, kind, detail));
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
        if (Refused(provider, leaseId, inspection) is { } refused)
        {
            return NextAttempt(now, refused);
        }
        ArgumentNullException.ThrowIfNull(lease);
        _lease = lease;
        _claimed = claimed ?? throw new ArgumentNullException(nameof(claimed));
        switch (_job.PlanCheck(sampled, canRerunLocally))
        {
            case CheckPlan.CompareWithTrusted:
                return Judge(Nothing, _job.CompareWithTrusted(_claimed), ownRunDeterministic: true, null, null, now); // trusted only when deterministic
            case CheckPlan.RerunLocally:
                _state = State.Checking;
                return new JobStep<TLease> { Action = JobAction.Rerun, Lease = lease };
            case CheckPlan.LeaseSecond:
                // No sandbox here: one more lease, in a slot, among providers in good standing when one fits.
                _state = State.Slots;
                _phase = Phase.SecondCheck;
                _job.BeginSecondCheck();
                OpenSlot(now);
                return Then(Nothing);
            default:
                return Judge(Nothing, null, ownRunDeterministic: false, null, null, now);
        }
    }

    /// <summary>This node re-ran the task (<see cref="RequesterJob.OnLocalRerun"/>).</summary>
    public JobStep<TLease> OnRerun(RunSummary rerun, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(rerun);
        if (_state == State.Slots && _phase == Phase.Rerun)
        {
            return DecideReplicas(Nothing, rerun);
        }
        if (_state != State.Checking)
        {
            return Nothing;
        }
        return Judge(Nothing, _job.OnLocalRerun(_claimed!, rerun), rerun.Deterministic, null, null, now);
    }

    /// <summary>
    /// An effect threw: the job ends with that failure (it never hangs); the results it held unsettled are released (leases
    /// still in flight end with the shell, which releases theirs).
    /// </summary>
    public JobStep<TLease> OnEffectFailed(Exception error, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(error);
        return Fail(new JobStep<TLease> { Failure = error });
    }

    // ------------------------------------------------------------------ slots (replicas, a tie-breaker, a check, a third opinion)

    /// <summary>The shell chose <paramref name="ad"/> for <paramref name="slot"/>: lease it (not chosen again for this job while it runs).</summary>
    public JobStep<TLease> OnChosen(int slot, VerifiedAdvertisement ad, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(ad);
        if (_state != State.Slots || _choosing != slot || !_slots.TryGetValue(slot, out var s))
        {
            return Nothing;
        }
        _choosing = null;
        s.State = SlotState.Leasing;
        _job.OnLeaseStarted(ad.Provider);
        return Then(new JobStep<TLease> { Action = JobAction.Lease, Slot = slot, Ad = ad });
    }

    /// <summary>
    /// No provider fits <paramref name="slot"/> now (<see cref="RequesterJob.OnNoMatch"/>): it waits until the time that says
    /// (or a newer advertisement), or gives up with <paramref name="explain"/>: a replica's round then fails the job with it
    /// once the round's other leases have ended; a tie-break ends unresolved.
    /// </summary>
    public JobStep<TLease> OnNoMatch(int slot, int busy, int othersSeen, DateTimeOffset? retryAt, Func<Exception> explain, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(explain);
        if (_state != State.Slots || _choosing != slot || !_slots.TryGetValue(slot, out var s))
        {
            return Nothing;
        }
        _choosing = null;
        if (_job.OnNoMatch(busy, othersSeen, retryAt, now, ref s.ProvidersBy) is not { } wake)
        {
            _slots.Remove(slot);
            return SlotEnded(now, Nothing, null, explain);
        }
        s.State = SlotState.Waiting;
        s.WakeAt = wake;
        return Then(Nothing);
    }

    /// <summary>A slot's lease produced no result (busy, refused, lost, failed): released, noted as <see cref="RequesterJob.OnLeaseEnded"/> says.</summary>
    /// <param name="heldOthers">A busy refusal while this node held other leases with the provider: no backoff (<see cref="RequesterJob.OnLeaseEnded"/>).</param>
    public JobStep<TLease> OnLeaseEnded(int slot, PeerId provider, ulong adSequence, byte[] leaseId, LeaseOutcomeKind kind, LeaseRejectReason? reject,
        string detail, DateTimeOffset now, bool heldOthers = false)
    {
        if (!EndLease(slot))
        {
            return Nothing;
        }
        var note = _job.OnLeaseEnded(provider, adSequence, kind, reject, detail, now, heldOthers);
        return SlotEnded(now, AttemptEnded(provider, leaseId, note, kind, detail), null, null);
    }

    /// <summary>
    /// A slot's lease delivered a result: one that cannot be used (<see cref="RequesterJob.InspectResult"/>) is not paid;
    /// otherwise it is held, unsettled, until the replicas are judged.
    /// </summary>
    /// <param name="consecutiveVerified">The provider's verified results in a row here, as the result arrived.</param>
    public JobStep<TLease> OnResult(int slot, TLease lease, PeerId provider, byte[] leaseId, ResultInspection inspection, RunSummary? claimed,
        int consecutiveVerified, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(inspection);
        if (!EndLease(slot))
        {
            return Nothing;
        }
        if (Refused(provider, leaseId, inspection) is { } refused)
        {
            return SlotEnded(now, refused, null, null);
        }
        ArgumentNullException.ThrowIfNull(lease);
        var view = new ReplicaResult(provider, claimed ?? throw new ArgumentNullException(nameof(claimed)), consecutiveVerified);
        return SlotEnded(now, Nothing, new Held(lease, leaseId, view), null);
    }

    /// <summary>
    /// A slot's lease could not be carried out (its effect threw). A tie-breaker's or third provider's lease refused as a
    /// submission problem (credits ran out) leaves the disagreement unresolved; anything else ends the job with that failure,
    /// every result it held released.
    /// </summary>
    public JobStep<TLease> OnLeaseFailed(int slot, Exception error, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(error);
        if (!EndLease(slot))
        {
            return Nothing;
        }
        return (_phase, error) switch
        {
            (Phase.TieBreak, SubmissionException) => EndTieBreak(Nothing, null),
            (Phase.ThirdOpinion, SubmissionException) => ResolveDispute(Nothing, null),
            _ => Fail(new JobStep<TLease> { Failure = error }),
        };
    }

    private bool EndLease(int slot)
    {
        if (_state != State.Slots || !_slots.TryGetValue(slot, out var s) || s.State != SlotState.Leasing)
        {
            return false;
        }
        _slots.Remove(slot);
        return true;
    }

    /// <summary>A slot ended, with a usable result, without one, or with no provider to fit: what its phase does next.</summary>
    private JobStep<TLease> SlotEnded(DateTimeOffset now, JobStep<TLease> before, Held? held, Func<Exception>? noProvider)
    {
        if (_phase == Phase.SecondCheck)
        {
            return noProvider is not null ? Fail(before with { NoProvider = noProvider }) : SecondChecked(now, before, held);
        }
        if (_phase is Phase.TieBreak or Phase.ThirdOpinion)
        {
            // One tie-breaker or third provider at a time, up to MaxAttempts leases (busy ones too); none left: unresolved.
            if (held is not null || noProvider is not null || ++_tries >= _job.Settings.MaxAttempts)
            {
                return _phase == Phase.TieBreak ? EndTieBreak(before, held) : ResolveDispute(before, held);
            }
            OpenSlot(now);
            return Then(before);
        }
        if (held is not null)
        {
            _results.Add(held);
        }
        else if (noProvider is null)
        {
            _roundEmpty++;
        }
        _noProvider ??= noProvider;
        return _slots.Count > 0 ? Then(before) : EndRound(now, before);
    }

    /// <summary>Every lease of a round has ended: fail, another round for the replicas still missing, or judge them.</summary>
    private JobStep<TLease> EndRound(DateTimeOffset now, JobStep<TLease> before)
    {
        if (_noProvider is { } explain)
        {
            return Fail(before with { NoProvider = explain });
        }
        var busy = _job.BusyRefusals - _roundBusyBefore;
        if (busy == 0 || _roundEmpty != busy)
        {
            _round++; // a round of busy refusals only is capacity to wait for (bounded by WaitForCapacity), not failed attempts
        }
        if (_round < _job.Settings.MaxAttempts && _results.Count < _job.Replicas)
        {
            return NewRound(now, before);
        }
        if (_results.Count == 0)
        {
            return Fail(before with { End = new JobEnd.GiveUp($"no replica produced a result: {RequesterJob.Summarise(_job.History)}") });
        }
        if (_job.NeedsTieBreak(Views(), CanRerunLocally))
        {
            _phase = Phase.TieBreak;
            _tries = 0;
            _job.BeginTieBreak();
            OpenSlot(now);
            return Then(before);
        }
        return AfterTieBreak(before);
    }

    private JobStep<TLease> NewRound(DateTimeOffset now, JobStep<TLease> before)
    {
        _roundEmpty = 0;
        _roundBusyBefore = _job.BusyRefusals;
        for (var i = _results.Count; i < _job.Replicas; i++)
        {
            OpenSlot(now);
        }
        return Then(before);
    }

    /// <summary>The tie-break is over: with the tie-breaker's result joining the vote, or unresolved.</summary>
    private JobStep<TLease> EndTieBreak(JobStep<TLease> before, Held? held)
    {
        _job.EndTieBreak();
        var outcome = "unresolved";
        if (held is not null)
        {
            _results.Add(held);
            _tieBroken = true;
            outcome = RequesterJob.Group(Views())[0].Count * 2 > _results.Count ? "majority" : "unresolved";
        }
        return AfterTieBreak(before with { TieBreak = outcome });
    }

    /// <summary>
    /// A second provider's check is in (null <paramref name="second"/>: none produced a result): judged by
    /// <see cref="RequesterJob.OnSecondResult"/> (only a checker in good standing verifies; the checker is settled first,
    /// unless it disputes the result). A dispute is resolved by a third opinion: leased in a slot among providers in good
    /// standing here only (neither of the two), then <see cref="RequesterJob.ResolveDispute"/>.
    /// </summary>
    private JobStep<TLease> SecondChecked(DateTimeOffset now, JobStep<TLease> before, Held? second)
    {
        _job.EndSecondCheck();
        if (second is null)
        {
            return Judge(before, null, ownRunDeterministic: false, null, null, now);
        }
        var check = _job.OnSecondResult(_claimed!, second.View.Summary, second.View.ConsecutiveVerified);
        before = before with { SecondCheck = check.CheckerInGoodStanding };
        if (!check.Disputed)
        {
            // The checker is settled before the result it checked.
            return Judge(before with { Settlements = [new(second.Lease, check.Second)] }, check.Verdict, ownRunDeterministic: false, check, second.Lease, now);
        }
        _checker = second.Lease;
        _checkerClaimed = second.View.Summary;
        _phase = Phase.ThirdOpinion;
        _tries = 0;
        _job.BeginThirdOpinion();
        OpenSlot(now);
        return Then(before);
    }

    /// <summary>
    /// The third opinion is in, or none could be had: <see cref="RequesterJob.ResolveDispute"/> convicts the side it
    /// contradicts and pays the side it confirms, or leaves the dispute unresolved; the checker, the third provider and the
    /// sampled lease are settled in that order, and the job ends with the confirmed result.
    /// </summary>
    private JobStep<TLease> ResolveDispute(JobStep<TLease> before, Held? third)
    {
        _job.EndThirdOpinion();
        var decision = _job.ResolveDispute(_claimed!, _checkerClaimed!, third?.View.Summary, third?.View.ConsecutiveVerified ?? 0);
        List<Settlement<TLease>> settlements =
        [
            new(_checker!, decision.Checker, decision.Checker.Convict ? "a checker whose result a third provider in good standing contradicted" : null),
        ];
        if (third is not null && decision.Third is { } thirdStep)
        {
            settlements.Add(new(third.Lease, thirdStep));
        }
        settlements.Add(new(_lease!, decision.Accused));
        _state = State.Ended;
        var end = (JobEnd.LeaseResult)decision.End;
        return before with
        {
            Action = JobAction.Finish,
            Dispute = decision.Outcome,
            Checked = true,
            Verdict = decision.Accused.Verdict,
            Settlements = settlements,
            End = end,
            Answer = end.Index switch
            {
                1 => _checker,
                2 => third!.Lease,
                _ => _lease,
            },
            Wake = CoreWake.Ended,
        };
    }

    private JobStep<TLease> AfterTieBreak(JobStep<TLease> before)
    {
        // Agreement proves nothing among identities that may be one adversary (Sybils): replicas count as verified only
        // with a re-run here, or when a provider in good standing (past its stranger results) is among those agreeing.
        if (_job.NeedsLocalRerun(Views(), _tieBroken, CanRerunLocally))
        {
            _phase = Phase.Rerun;
            return before with { Action = JobAction.Rerun, Wake = CoreWake.Disarm };
        }
        return DecideReplicas(before, null);
    }

    /// <summary>The replicas are judged (<see cref="RequesterJob.DecideReplicas"/>): each settled in order, then the answer.</summary>
    private JobStep<TLease> DecideReplicas(JobStep<TLease> before, RunSummary? ownRun)
    {
        var decision = _job.DecideReplicas(Views(), _tieBroken, ownRun);
        var step = before with
        {
            Settlements = [.. _results.Select((r, i) => new Settlement<TLease>(r.Lease, decision.Settle[i], Counted: true))],
            Wake = CoreWake.Ended,
        };
        _state = State.Ended;
        return decision.End switch
        {
            JobEnd.LeaseResult r => step with { Action = JobAction.Finish, End = r, Answer = _results[r.Index].Lease },
            JobEnd.OwnRun own => step with { Action = JobAction.Finish, End = own },
            var end => step with { Action = JobAction.Fail, End = end },
        };
    }

    private void OpenSlot(DateTimeOffset now)
    {
        var id = _nextSlot++;
        _slots[id] = new Slot(id) { ProvidersBy = _job.BeginChoice(now) };
        _toChoose.Enqueue(id);
    }

    /// <summary>Waiting slots choose again: all of them (a newer advertisement), or those whose wait is over.</summary>
    private JobStep<TLease> SlotsChooseAgain(DateTimeOffset now, bool all)
    {
        foreach (var s in _slots.Values.Where(s => s.State == SlotState.Waiting && (all || s.WakeAt <= now)).OrderBy(s => s.Id).ToList())
        {
            s.State = SlotState.Choosing;
            _toChoose.Enqueue(s.Id);
        }
        return Then(Nothing);
    }

    /// <summary>
    /// <paramref name="step"/>, then one choice for the next slot waiting to choose (one at a time: each choice sees the
    /// providers the ones before it took), and the timer at the earliest wait's end.
    /// </summary>
    private JobStep<TLease> Then(JobStep<TLease> step)
    {
        if (_choosing is null && _toChoose.TryDequeue(out var next))
        {
            _choosing = next;
            step = step.Action == JobAction.None ? step with { Action = JobAction.Choose, Slot = next } : step with { ChooseNext = next };
        }
        DateTimeOffset? wake = null;
        foreach (var s in _slots.Values)
        {
            if (s.State == SlotState.Waiting && (wake is not { } w || s.WakeAt < w))
            {
                wake = s.WakeAt;
            }
        }
        return step with { Wake = wake is { } at ? CoreWake.WakeAt(at) : CoreWake.Disarm };
    }

    /// <summary>The job fails: results it held are released, nothing else is settled.</summary>
    private JobStep<TLease> Fail(JobStep<TLease> step)
    {
        _state = State.Ended;
        return step with
        {
            Action = JobAction.Fail,
            ReleaseAll = _results.Count == 0 ? null : [.. _results.Select(r => r.LeaseId)],
            Wake = CoreWake.Ended,
        };
    }

    private List<ReplicaResult> Views() => [.. _results.Select(r => r.View)];

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
    private JobStep<TLease> Judge(JobStep<TLease> before, CheckVerdict? verdict, bool ownRunDeterministic, SecondCheck? check, TLease? checker, DateTimeOffset now)
    {
        var decision = _job.OnVerdict(_claimed!, verdict, ownRunDeterministic, check);
        var settle = before with { Checked = true, Verdict = verdict, Lease = _lease, Settle = decision.Settle };
        if (decision.End is not { } end)
        {
            return NextAttempt(now, settle);
        }
        _state = State.Ended;
        return settle with
        {
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

    /// <summary>
    /// A result has arrived: counts it delivered and checks it before it is trusted (<see cref="RequesterJob.InspectResult"/>);
    /// the step for a result refused there (its reservation released, the provider noted, the attempt failed), or null.
    /// </summary>
    private JobStep<TLease>? Refused(PeerId provider, byte[] leaseId, ResultInspection inspection)
    {
        _job.OnResultDelivered();
        return _job.InspectResult(provider, inspection.AttestationProblem, inspection.MatchesDelivery, inspection.ClaimedStatus,
                inspection.AttestedFuel, inspection.PaidFuel, inspection.TermsDecode) is { } problem
            ? AttemptEnded(provider, leaseId, problem.Note, LeaseOutcomeKind.Failed, problem.Why)
            : null;
    }

    /// <summary>An attempt that produced nothing to pay: its reservation released, the provider noted, the attempt reported.</summary>
    private static JobStep<TLease> AttemptEnded(PeerId provider, byte[] leaseId, ReputationNote note, LeaseOutcomeKind kind, string why) => new()
    {
        Release = leaseId,
        NoteFor = provider,
        Note = note,
        Attempt = new AttemptRecord(provider, kind, why, 0),
    };

    private enum State : byte
    {
        Idle,
        Choosing,
        Waiting,
        Leasing,
        Checking,
        /// <summary>Leasing in slots (replicas, a tie-breaker), or judging what they brought (<see cref="Phase"/>).</summary>
        Slots,
        Ended,
    }

    private enum Phase : byte
    {
        Replicas,
        TieBreak,
        Rerun,
        SecondCheck,
        ThirdOpinion,
    }

    private enum SlotState : byte
    {
        Choosing,
        Waiting,
        Leasing,
    }

    private sealed class Slot(int id)
    {
        public int Id { get; } = id;

        public SlotState State;

        public DateTimeOffset ProvidersBy;

        public DateTimeOffset WakeAt;
    }

    /// <summary>A usable result a slot brought, held unsettled until the replicas are judged.</summary>
    private sealed record Held(TLease Lease, byte[] LeaseId, ReplicaResult View);
}
