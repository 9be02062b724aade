using System.Security.Cryptography;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Verification;

namespace Potluck.Scheduler.Requesting;

/// <summary>What a <see cref="RequesterJob"/> needs to decide: the retry, wait and trust limits of one submission.</summary>
public sealed record RequesterJobSettings
{
    /// <summary>Leases tried (busy refusals not counted) before giving up (<see cref="ComputeClientOptions.MaxAttempts"/>).</summary>
    public int MaxAttempts { get; init; } = 5;

    /// <summary>The longest wait before a busy (or lost) provider is asked again (<see cref="ComputeClientOptions.BusyRetryInterval"/>).</summary>
    public TimeSpan BusyRetryInterval { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>How long in all a job waits for a free core (<see cref="ComputeClientOptions.WaitForCapacity"/>).</summary>
    public TimeSpan WaitForCapacity { get; init; } = TimeSpan.FromHours(1);

    /// <summary>How long a job waits when no provider is known (<see cref="ComputeClientOptions.WaitForProviders"/>).</summary>
    public TimeSpan WaitForProviders { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Verified results in a row past which a provider is in good standing here (<see cref="VerificationOptions.StrangerResults"/>).</summary>
    public int StrangerResults { get; init; } = 10;

    public static RequesterJobSettings From(ComputeClientOptions options) => new()
    {
        MaxAttempts = options.MaxAttempts,
        BusyRetryInterval = options.BusyRetryInterval,
        WaitForCapacity = options.WaitForCapacity,
        WaitForProviders = options.WaitForProviders,
        StrangerResults = options.Verification.StrangerResults,
    };
}

/// <summary>What to tell the reputation store about a provider after a result.</summary>
public enum ReputationNote
{
    None,
    Verified,
    Unchecked,
    Inconclusive,
    Failure,
}

/// <summary>The providers a choice may pick from now, and what holds the others back.</summary>
/// <param name="Candidates">Live advertisements not skipped as busy (excluded ones included: the selector explains them).</param>
/// <param name="Preferred">
/// During a tie-break or a second provider's check: the candidates in good standing here, not excluded; the choice is made among them when one fits.
/// Empty otherwise.
/// </param>
/// <param name="Excluded">Tried for this job, running it, or refused by this node.</param>
/// <param name="BusyHere">
/// Providers skipped because they refused this job as busy at their current advertisement, or could not be reached (those
/// also counted in <paramref name="UnreachableHere"/>).
/// </param>
/// <param name="RetryAt">The earliest time one of those is asked again even if it publishes nothing new.</param>
public sealed record ChoiceFilter(IReadOnlyList<VerifiedAdvertisement> Candidates, IReadOnlyList<VerifiedAdvertisement> Preferred,
    HashSet<PeerId> Excluded, int BusyHere, DateTimeOffset? RetryAt, int UnreachableHere = 0);

/// <summary>How to check one result of a sampled run.</summary>
public enum CheckPlan
{
    /// <summary>Not selected by the audit draw: paid unchecked.</summary>
    Unchecked,
    /// <summary>Compared with a result this job already trusts (free): <see cref="RequesterJob.CompareWithTrusted"/>.</summary>
    CompareWithTrusted,
    /// <summary>Re-run here, then <see cref="RequesterJob.OnLocalRerun"/>.</summary>
    RerunLocally,
    /// <summary>No sandbox here: one more lease, always compared, then <see cref="RequesterJob.OnSecondResult"/>.</summary>
    LeaseSecond,
}

/// <summary>What to do with one result once its check (if any) is known.</summary>
public sealed record SettleStep
{
    /// <summary>Refuse the provider, do not pay, forfeit what it holds here, publish a fraud proof.</summary>
    public bool Convict { get; init; }

    /// <summary>Settle and send a receipt for the result (unless <see cref="Convict"/> or <see cref="NotPaid"/>).</summary>
    public bool Pay => !Convict && NotPaid is null;

    /// <summary>The receipt says the result was compared.</summary>
    public bool Compared { get; init; }

    /// <summary>Set when the result is not paid (the reservation is released), with the reason recorded for the attempt.</summary>
    public string? NotPaid { get; init; }

    public ReputationNote Note { get; init; }

    /// <summary>The check's verdict for this result, where one was made (for the verification metric).</summary>
    public CheckVerdict? Verdict { get; init; }
}

/// <summary>How a job ends.</summary>
public abstract record JobEnd
{
    /// <summary>
    /// The result of the sampled lease (or, for replicas, of <see cref="Index"/>) is the answer. In a sampled run, index 1
    /// is the second provider's check and 2 the third opinion of a dispute (<see cref="RequesterJob.ResolveDispute"/>).
    /// </summary>
    /// <param name="Unresolved">Set when a dispute between the provider and its checker could not be resolved.</param>
    public sealed record LeaseResult(int Index, bool Verified, UnresolvedReason? Unresolved = null) : JobEnd;

    /// <summary>This node's own re-run is the answer.</summary>
    public sealed record OwnRun(bool Verified) : JobEnd;

    /// <summary>No answer: a <see cref="SubmissionException"/> with this reason.</summary>
    public sealed record GiveUp(string Reason) : JobEnd;
}

/// <summary>A sampled result's settlement, and whether the job ends with it (null: try another provider).</summary>
public sealed record SampleDecision(SettleStep Settle, JobEnd? End);

/// <summary>One replica's result as the core sees it: who, what it attested, and its standing here when the set was judged.</summary>
public sealed record ReplicaResult(PeerId Provider, RunSummary Summary, int ConsecutiveVerified);

/// <summary>
/// A second provider's check of a sampled result (no sandbox here). <paramref name="Verdict"/>: Match only when a checker in
/// good standing agrees, Mismatch when one disagrees (deterministically), Inconclusive on a stranger's disagreement, null on
/// a stranger's agreement (two strangers agreeing may be one adversary: unverified).
/// </summary>
/// <param name="Second">How to settle the checker's own lease (not yet, when <see cref="Disputed"/>).</param>
/// <param name="CheckerInGoodStanding">The checker was in good standing here when it answered.</param>
public sealed record SecondCheck(CheckVerdict? Verdict, SettleStep Second, bool CheckerInGoodStanding)
{
    /// <summary>
    /// A checker in good standing disagrees, deterministically: one of the two lies, and one remote word does not say which.
    /// Neither is settled until <see cref="RequesterJob.ResolveDispute"/> has a third opinion.
    /// </summary>
    public bool Disputed => CheckerInGoodStanding && Verdict == CheckVerdict.Mismatch;
}

/// <summary>Why a dispute between a sampled provider and the checker in good standing that contradicts it stays open.</summary>
public enum UnresolvedReason
{
    /// <summary>No other provider in good standing here (neither the accused nor the checker) gave a third opinion.</summary>
    NoThirdOpinion,

    /// <summary>The third opinion agreed with neither side (or could not be compared deterministically with the other).</summary>
    NoAgreement,
}

/// <summary>How a dispute ended, for the <c>potluck.disputes</c> counter.</summary>
public enum DisputeOutcome
{
    /// <summary>The third opinion agreed with the checker: the sampled provider is convicted.</summary>
    AccusedWrong,

    /// <summary>The third opinion agreed with the sampled provider: the checker lied, and is convicted.</summary>
    CheckerWrong,

    /// <summary>No third opinion: nobody convicted, nobody paid as verified.</summary>
    NoThirdOpinion,

    /// <summary>The third opinion agreed with neither: nobody convicted, nobody paid as verified.</summary>
    NoAgreement,
}

/// <summary>A dispute's settlement: the sampled lease, the checker's, the third opinion's (when one ran), and the answer.</summary>
public sealed record DisputeDecision(SettleStep Accused, SettleStep Checker, SettleStep? Third, JobEnd End, DisputeOutcome Outcome);

/// <summary>What replicas come to: each one's settlement (in order), the answer, and the tie-break outcome for metrics.</summary>
public sealed record ReplicaDecision(IReadOnlyList<SettleStep> Settle, JobEnd End, bool Majority);

/// <summary>
/// The requester's decisions for one submitted task, as a pure state machine: the <see cref="ComputeClient"/> shell feeds it
/// what happened (advertisements and refusals, how each lease ended, the result's attested summary, the audit draw, check
/// verdicts, replica results) with the time, and carries out what it returns (choose among these providers or wait until
/// then, lease with this declared rate, check this way, convict, pay or leave unpaid, finish or give up).
/// No I/O, no awaits, no clock and no randomness inside: the audit draw comes in as a decided bit (from
/// <see cref="LeaseAudit.Selected"/> over the secret and the attestation), the selector's ranking stays in the shell.
/// Not thread-safe: the shell serialises calls (replicas run concurrently, under its lock).
/// </summary>
public sealed class RequesterJob
{
    public const string RunningReplica = "already running this task";

    public const string RanAlready = "ran this task already";

    private readonly RequesterJobSettings _settings;
    private readonly Dictionary<PeerId, BusyRefusal> _busyAt = [];
    private readonly List<AttemptRecord> _history = [];
    private int _attemptsUsed;
    private bool _attemptOpen;

    /// <param name="self">This node: never leased to.</param>
    /// <param name="replicas">Providers to run the task on at once (1: one at a time, a sample checked).</param>
    public RequesterJob(RequesterJobSettings settings, PeerId self, int replicas = 1)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentOutOfRangeException.ThrowIfLessThan(replicas, 1);
        _settings = settings;
        Replicas = replicas;
        Tried.Add(self);
    }

    public RequesterJobSettings Settings => _settings;

    public int Replicas { get; }

    /// <summary>Providers not to ask again for this job (this node, those running it or done with it).</summary>
    public HashSet<PeerId> Tried { get; } = [];

    /// <summary>Why each tried provider is not asked again, in words (for "no provider fits").</summary>
    public Dictionary<PeerId, string> Why { get; } = [];

    public IReadOnlyList<AttemptRecord> History => _history;

    /// <summary>Micro-credits paid so far, over every attempt.</summary>
    public long Cost { get; private set; }

    /// <summary>When this job began waiting for a core; null while it is not waiting.</summary>
    public DateTimeOffset? BusySince { get; private set; }

    /// <summary>Busy refusals and unreachable providers so far (they are not attempts).</summary>
    public int BusyRefusals { get; private set; }

    /// <summary>The last lease ended in a busy refusal or an unreachable provider (it does not count as an attempt).</summary>
    public bool LastWasBusy { get; private set; }

    /// <summary>A deterministic result of this job's own re-run: every later result is compared with it, for free.</summary>
    public RunSummary? Trusted { get; private set; }

    /// <summary>A tie-break is being leased: the choice prefers providers in good standing (see <see cref="Filter"/>).</summary>
    public bool TieBreaking { get; private set; }

    /// <summary>A second provider's check is being leased: the choice prefers providers in good standing (see <see cref="Filter"/>).</summary>
    public bool CheckingSecond { get; private set; }

    /// <summary>A dispute's third opinion is being leased: the choice is made among providers in good standing only (see <see cref="Filter"/>).</summary>
    public bool SeekingThirdOpinion { get; private set; }

    /// <summary>Whether a provider with this record is in good standing here: past a stranger's first verified results.</summary>
    public bool InGoodStanding(int consecutiveVerified) => consecutiveVerified >= _settings.StrangerResults;

    // ------------------------------------------------------------------ choosing

    /// <summary>
    /// Starts a choice: with no provider seen, it waits up to <see cref="RequesterJobSettings.WaitForProviders"/> from now.
    /// Returns that time, for <see cref="OnNoMatch"/> (concurrent choices of one job, its replicas, each keep their own).
    /// </summary>
    public DateTimeOffset BeginChoice(DateTimeOffset now) => now + _settings.WaitForProviders;

    /// <summary>
    /// The providers a choice may pick from now: those tried or refused are excluded; one that refused this job as busy is
    /// skipped until it publishes a newer advertisement or its retry time comes. During a tie-break or a second check, the not excluded
    /// candidates in good standing (<paramref name="consecutiveVerified"/>) are named as preferred: a Sybil swarm can supply
    /// any number of strangers, not a record of verified results here.
    /// </summary>
    public ChoiceFilter Filter(IReadOnlyList<VerifiedAdvertisement> live, IReadOnlyCollection<PeerId> refused, DateTimeOffset now,
        Func<PeerId, int>? consecutiveVerified = null)
    {
        var excluded = new HashSet<PeerId>(Tried);
        excluded.UnionWith(refused);
        if (SeekingThirdOpinion)
        {
            // Strictly: a stranger's opinion resolves nothing (a Sybil would side with its twin).
            excluded.UnionWith(live.Where(a => consecutiveVerified is null || !InGoodStanding(consecutiveVerified(a.Provider))).Select(a => a.Provider));
        }
        var candidates = new List<VerifiedAdvertisement>(live.Count);
        var busyHere = 0;
        var unreachableHere = 0;
        DateTimeOffset? retryAt = null;
        foreach (var ad in live)
        {
            if (!excluded.Contains(ad.Provider) && _busyAt.TryGetValue(ad.Provider, out var refusal)
                && ad.Ad.Sequence <= refusal.Sequence && now < refusal.RetryAt)
            {
                busyHere++;
                unreachableHere += refusal.Unreachable ? 1 : 0;
                retryAt = retryAt is { } r && r < refusal.RetryAt ? r : refusal.RetryAt;
                continue;
            }
            candidates.Add(ad);
        }
        IReadOnlyList<VerifiedAdvertisement> preferred = (TieBreaking || CheckingSecond) && consecutiveVerified is not null
            ? candidates.Where(a => !excluded.Contains(a.Provider) && InGoodStanding(consecutiveVerified(a.Provider))).ToList()
            : [];
        return new ChoiceFilter(candidates, preferred, excluded, busyHere, retryAt, unreachableHere);
    }

    /// <summary>
    /// No provider fits now. Returns when to look again (a newer advertisement may come sooner), or null to give up:
    /// while any that fits is busy, up to <see cref="RequesterJobSettings.WaitForCapacity"/> from the start of the wait (and
    /// no later than the next busy retry); with no other provider seen at all, until the wait for providers ends.
    /// </summary>
    /// <param name="busy">Providers that fit but are busy (by their advertisement or their refusal of this job).</param>
    /// <param name="othersSeen">Providers seen other than this node itself.</param>
    /// <param name="retryAt">From <see cref="ChoiceFilter.RetryAt"/>.</param>
    /// <param name="providersBy">From <see cref="BeginChoice"/>; moved on while providers are busy.</param>
    public DateTimeOffset? OnNoMatch(int busy, int othersSeen, DateTimeOffset? retryAt, DateTimeOffset now, ref DateTimeOffset providersBy)
    {
        DateTimeOffset waitUntil;
        if (busy > 0)
        {
            BusySince ??= now;
            waitUntil = BusySince.Value + _settings.WaitForCapacity;
            providersBy = now + _settings.WaitForProviders; // should the busy ones vanish, the usual wait for others
        }
        else
        {
            waitUntil = othersSeen == 0 ? providersBy : now;
        }
        if (waitUntil <= now)
        {
            return null;
        }
        if (retryAt is { } retry && retry < waitUntil)
        {
            return retry < now ? now : retry;
        }
        return waitUntil;
    }

    // ------------------------------------------------------------------ leasing

    /// <summary>
    /// Loop guard for one-at-a-time runs: true while attempts are left. Each call after the first counts the attempt
    /// before it, unless that one ended in a busy refusal (busy is a market answer, not a failure).
    /// </summary>
    public bool NextAttempt()
    {
        if (_attemptOpen && !LastWasBusy)
        {
            _attemptsUsed++;
        }
        _attemptOpen = true;
        LastWasBusy = false;
        return _attemptsUsed < _settings.MaxAttempts;
    }

    /// <summary>The re-run rate to declare in a lease's terms, in parts per million.</summary>
    /// <param name="alwaysCompared">The result will be compared whatever happens (a replica, a second run, a tie-break).</param>
    public int DeclaredRatePpm(VerificationPolicy policy, int consecutiveVerified, double? requested, bool alwaysCompared) =>
        alwaysCompared || Trusted is not null
            ? LeaseAudit.AlwaysPpm
            : LeaseAudit.ToPpm(policy.DeclaredRate(consecutiveVerified, requested));

    /// <summary>A lease to <paramref name="provider"/> starts: it is not chosen again for this job while it runs.</summary>
    public void OnLeaseStarted(PeerId provider)
    {
        LastWasBusy = false;
        Tried.Add(provider);
        Why[provider] = RunningReplica;
    }

    /// <summary>
    /// A lease produced no result (refused, lost, failed). The reservation is always released; returns whether it counts
    /// against the provider. Busy is "wait and retry" (skipped until a newer advertisement or a doubling backoff up to
    /// <see cref="RequesterJobSettings.BusyRetryInterval"/>); a lease lost on the way (expired, cancelled) is a failure, and
    /// the provider may be asked again after <see cref="RequesterJobSettings.BusyRetryInterval"/>; anything else excludes it.
    /// An unreachable provider (the dial failed) is treated as busy: not counted against it or the job's attempts, skipped for
    /// a doubling backoff, waited for (up to <see cref="RequesterJobSettings.WaitForCapacity"/>) when every provider is.
    /// </summary>
    /// <param name="adSequence">The sequence of the advertisement it was chosen by.</param>
    /// <param name="heldOthers">
    /// The refusal was busy while this node held other leases with the provider: the provider is full for this node (its
    /// per-requester limit), not short of cores. The job does not back off from it: the requester's window
    /// (<see cref="LeaseWindows"/>) keeps it from being chosen until one of those leases ends, and that end wakes the job.
    /// </param>
    public ReputationNote OnLeaseEnded(PeerId provider, ulong adSequence, LeaseOutcomeKind kind, LeaseRejectReason? reject, string detail, DateTimeOffset now,
        bool heldOthers = false)
    {
        var unreachable = kind == LeaseOutcomeKind.Unreachable;
        if (reject is not LeaseRejectReason.Busy && !unreachable)
        {
            BusySince = null; // the provider answered with more than "busy": the wait for capacity is over
        }
        var note = ReputationNote.Failure;
        if (kind is LeaseOutcomeKind.Expired or LeaseOutcomeKind.Cancelled)
        {
            Tried.Remove(provider);
            _busyAt[provider] = new BusyRefusal(adSequence, now + _settings.BusyRetryInterval, _settings.BusyRetryInterval);
        }
        else if (reject is LeaseRejectReason.Busy && heldOthers)
        {
            Tried.Remove(provider);
            _busyAt.Remove(provider);
            LastWasBusy = true;
            BusyRefusals++;
            note = ReputationNote.None;
        }
        else if (reject is LeaseRejectReason.Busy || unreachable)
        {
            Tried.Remove(provider);
            var backoff = _busyAt.TryGetValue(provider, out var before)
                ? TimeSpan.FromTicks(Math.Min(before.Backoff.Ticks * 2, _settings.BusyRetryInterval.Ticks))
                : TimeSpan.FromTicks(Math.Min(TimeSpan.FromSeconds(1).Ticks, _settings.BusyRetryInterval.Ticks));
            _busyAt[provider] = new BusyRefusal(adSequence, now + backoff, backoff, unreachable);
            LastWasBusy = true;
            BusyRefusals++;
            note = ReputationNote.None;
        }
        Record(new AttemptRecord(provider, kind, detail, 0));
        return note;
    }

    /// <summary>A lease delivered a result: the wait for capacity, if any, is over.</summary>
    public void OnResultDelivered() => BusySince = null;

    /// <summary>When a provider that refused as busy (or was lost) may be asked again at the same advertisement; null if never.</summary>
    public DateTimeOffset? RetryAt(PeerId provider) => _busyAt.TryGetValue(provider, out var r) ? r.RetryAt : null;

    /// <summary>
    /// Whether a delivered result can be used at all. Null when it can; otherwise why not, and it is not paid (the
    /// reservation is released): an attestation that is not valid or not about what was delivered, a wall-clock timeout
    /// (nothing proves the work was done; it counts against the provider), less fuel attested than debit notes paid for,
    /// or terms that do not decode.
    /// </summary>
    public (string Why, ReputationNote Note)? InspectResult(PeerId provider, string? attestationProblem, bool matchesDelivery,
        ExecutionStatus claimedStatus, ulong attestedFuel, ulong paidFuel, bool termsDecode)
    {
        (string, ReputationNote)? problem =
            attestationProblem is not null ? ($"attestation {attestationProblem}", ReputationNote.Failure)
            : !matchesDelivery ? ("result does not match its attestation", ReputationNote.Failure)
            : claimedStatus == ExecutionStatus.TimedOut ? ("the provider's wall clock ran out: not paid", ReputationNote.Failure)
            : attestedFuel < paidFuel ? ("the attestation reports less fuel than debit notes were paid for: not paid", ReputationNote.Failure)
            : !termsDecode ? ("terms do not decode", ReputationNote.None)
            : null;
        if (problem is { } p)
        {
            Record(new AttemptRecord(provider, LeaseOutcomeKind.Failed, p.Item1, 0));
        }
        return problem;
    }

    // ------------------------------------------------------------------ checking (one at a time)

    /// <summary>How to check a result: against one trusted already (free), else only when the audit draw selected it.</summary>
    /// <param name="sampled">The audit draw (<see cref="LeaseAudit.Selected"/>), fixed only once the signed attestation exists.</param>
    /// <param name="canRerunLocally">This node's sandbox can reproduce the task's limits.</param>
    public CheckPlan PlanCheck(bool sampled, bool canRerunLocally) =>
        Trusted is not null ? CheckPlan.CompareWithTrusted
        : !sampled ? CheckPlan.Unchecked
        : canRerunLocally ? CheckPlan.RerunLocally
        : CheckPlan.LeaseSecond;

    public CheckVerdict CompareWithTrusted(RunSummary claimed) =>
        FraudChecker.Compare(claimed, Trusted ?? throw new InvalidOperationException("nothing trusted yet"));

    /// <summary>This node re-ran the task: a deterministic re-run is trusted from now on.</summary>
    public CheckVerdict OnLocalRerun(RunSummary claimed, RunSummary rerun)
    {
        if (rerun.Deterministic)
        {
            Trusted = rerun;
        }
        return FraudChecker.Compare(claimed, rerun);
    }

    /// <summary>A second provider's check is leased: the choice prefers providers in good standing until <see cref="EndSecondCheck"/>.</summary>
    public void BeginSecondCheck() => CheckingSecond = true;

    public void EndSecondCheck() => CheckingSecond = false;

    /// <summary>
    /// A second provider ran it (no sandbox here). A checker in good standing that agrees verifies; one that disagrees
    /// deterministically opens a dispute (<see cref="SecondCheck.Disputed"/>): one remote word convicts nobody, since a
    /// checker that earned its standing may still lie; <see cref="ResolveDispute"/> decides once a third provider in good
    /// standing has run it. A stranger's word decides nothing, since a
    /// Sybil can check its own twin: its agreement leaves the result unverified (not compared, no verified result credited
    /// to either), its disagreement is inconclusive and convicts nobody. The checker is paid either way.
    /// </summary>
    /// <param name="checkerConsecutiveVerified">The checker's verified results in a row here.</param>
    public SecondCheck OnSecondResult(RunSummary claimed, RunSummary second, int checkerConsecutiveVerified)
    {
        var agree = second.SameAs(claimed);
        if (InGoodStanding(checkerConsecutiveVerified))
        {
            var verdict = agree ? CheckVerdict.Match : FraudChecker.Compare(claimed, second);
            var note = verdict switch
            {
                CheckVerdict.Match => ReputationNote.Verified,
                CheckVerdict.Inconclusive => ReputationNote.Inconclusive,
                _ => ReputationNote.None, // disputed: settled by ResolveDispute
            };
            return new SecondCheck(verdict, new SettleStep { Compared = true, Note = note, Verdict = verdict }, true);
        }
        return agree
            ? new SecondCheck(null, new SettleStep { Compared = false, Note = ReputationNote.None }, false)
            : new SecondCheck(CheckVerdict.Inconclusive,
                new SettleStep { Compared = true, Note = ReputationNote.Inconclusive, Verdict = CheckVerdict.Inconclusive }, false);
    }

    /// <summary>
    /// The sampled result's fate (a disputed second check is decided by <see cref="ResolveDispute"/> instead). A mismatch
    /// with a deterministic re-run here is fraud: convicted, unpaid, and the job tries another provider. Otherwise it is paid (a trap a re-run could not confirm never is) and the job ends: with this node's
    /// own run when only that can be trusted, else with the lease's result, verified when the check matched.
    /// </summary>
    /// <param name="ownRunDeterministic">This node re-ran it here and that run was deterministic.</param>
    /// <param name="second">
    /// The second provider's check, when one was made (<see cref="OnSecondResult"/>). Only a stranger agreed: the result is
    /// paid unverified, not compared and credited as no verified result (a trap only a stranger confirmed is not paid).
    /// </param>
    /// <exception cref="InvalidOperationException">The second check is disputed: see <see cref="ResolveDispute"/>.</exception>
    public SampleDecision OnVerdict(RunSummary claimed, CheckVerdict? verdict, bool ownRunDeterministic, SecondCheck? second = null)
    {
        if (second is { Disputed: true })
        {
            throw new InvalidOperationException("a disputed check is settled by ResolveDispute");
        }
        if (verdict == CheckVerdict.Mismatch)
        {
            return new SampleDecision(new SettleStep { Convict = true }, null);
        }
        if (second is { CheckerInGoodStanding: false, Verdict: null })
        {
            return new SampleDecision(claimed.Outcome == AttestedOutcome.Trapped
                    ? new SettleStep { NotPaid = "a trap only a stranger confirmed: not paid" }
                    : new SettleStep { Compared = false, Note = ReputationNote.None },
                new JobEnd.LeaseResult(0, Verified: false));
        }
        var note = verdict switch
        {
            CheckVerdict.Match => ReputationNote.Verified,
            CheckVerdict.Inconclusive => ReputationNote.Inconclusive,
            _ => ReputationNote.Unchecked,
        };
        var settle = verdict == CheckVerdict.Inconclusive && claimed.Outcome == AttestedOutcome.Trapped
            ? new SettleStep { NotPaid = "an unconfirmed trap: not paid", Note = note }
            : new SettleStep { Compared = verdict is not null, Note = note };
        JobEnd end = verdict == CheckVerdict.Inconclusive && ownRunDeterministic
            ? new JobEnd.OwnRun(Verified: true)
            : new JobEnd.LeaseResult(0, Verified: verdict == CheckVerdict.Match);
        return new SampleDecision(settle, end);
    }

    /// <summary>A dispute's third opinion is leased: the choice is among providers in good standing only, until <see cref="EndThirdOpinion"/>.</summary>
    public void BeginThirdOpinion() => SeekingThirdOpinion = true;

    public void EndThirdOpinion() => SeekingThirdOpinion = false;

    /// <summary>
    /// Resolves a dispute (<see cref="SecondCheck.Disputed"/>): the sampled provider's result <paramref name="claimed"/>
    /// against the checker's <paramref name="checker"/>, with a third provider's run when one in good standing here gave it.
    /// The third opinion decides: the side it agrees with is paid as compared and verified, with the third; the side it
    /// deterministically contradicts is convicted (a lying checker too: refused, its standing lost, a proof published), and
    /// the answer is the confirmed result, verified. With no third opinion (none in good standing left, or it produced no
    /// result), or one that agrees with neither, nobody is convicted and nobody is paid as verified: each is paid as
    /// compared but inconclusive (its streak of verified results starts over; a trap nobody confirmed is not paid), and the
    /// job ends with the sampled result, unverified, and the reason (<see cref="UnresolvedReason"/>).
    /// </summary>
    /// <param name="third">The third opinion's attested result; null when none was had.</param>
    /// <param name="thirdConsecutiveVerified">The third provider's verified results in a row here, when it answered.</param>
    public DisputeDecision ResolveDispute(RunSummary claimed, RunSummary checker, RunSummary? third, int thirdConsecutiveVerified)
    {
        if (third is not null && InGoodStanding(thirdConsecutiveVerified))
        {
            var confirmed = new SettleStep { Compared = true, Note = ReputationNote.Verified, Verdict = CheckVerdict.Match };
            if (third.SameAs(checker) && FraudChecker.Compare(claimed, third) == CheckVerdict.Mismatch)
            {
                return new DisputeDecision(new SettleStep { Convict = true, Verdict = CheckVerdict.Mismatch }, confirmed, confirmed,
                    new JobEnd.LeaseResult(1, Verified: true), DisputeOutcome.AccusedWrong);
            }
            if (third.SameAs(claimed) && FraudChecker.Compare(checker, third) == CheckVerdict.Mismatch)
            {
                return new DisputeDecision(confirmed, new SettleStep { Convict = true, Verdict = CheckVerdict.Mismatch }, confirmed,
                    new JobEnd.LeaseResult(0, Verified: true), DisputeOutcome.CheckerWrong);
            }
        }
        var reason = third is null || !InGoodStanding(thirdConsecutiveVerified) ? UnresolvedReason.NoThirdOpinion : UnresolvedReason.NoAgreement;
        return new DisputeDecision(Unresolved(claimed), Unresolved(checker), third is null ? null : Unresolved(third),
            new JobEnd.LeaseResult(0, Verified: false, reason),
            reason == UnresolvedReason.NoThirdOpinion ? DisputeOutcome.NoThirdOpinion : DisputeOutcome.NoAgreement);

        static SettleStep Unresolved(RunSummary run) => run.Outcome == AttestedOutcome.Trapped
            ? new SettleStep { NotPaid = "a disputed trap nobody confirmed: not paid", Note = ReputationNote.Inconclusive, Verdict = CheckVerdict.Inconclusive }
            : new SettleStep { Compared = true, Note = ReputationNote.Inconclusive, Verdict = CheckVerdict.Inconclusive };
    }

    /// <summary>Attempts ran out: this node's own trusted run is the answer if there is one, else the job fails with the history.</summary>
    public JobEnd OutOfAttempts() => Trusted is not null
        ? new JobEnd.OwnRun(Verified: true)
        : new JobEnd.GiveUp($"no result after {_history.Count} attempts: {Summarise(_history)}");

    // ------------------------------------------------------------------ replicas

    /// <summary>Replicas grouped by what they attested, the largest group first (ties in order of first appearance).</summary>
    public static List<List<int>> Group(IReadOnlyList<ReplicaResult> results)
    {
        var groups = new List<List<int>>();
        var keys = new List<byte[]>();
        for (var i = 0; i < results.Count; i++)
        {
            var key = Fingerprint(results[i].Summary);
            var at = keys.FindIndex(k => k.AsSpan().SequenceEqual(key));
            if (at < 0)
            {
                keys.Add(key);
                groups.Add([i]);
            }
            else
            {
                groups[at].Add(i);
            }
        }
        return [.. groups.OrderByDescending(g => g.Count)];
    }

    /// <summary>
    /// Replicas that disagree need one more opinion when this node cannot re-run the task: a tie-break lease. Starting one
    /// makes the choice prefer providers in good standing (<see cref="Filter"/>).
    /// </summary>
    public bool NeedsTieBreak(IReadOnlyList<ReplicaResult> results, bool canRerunLocally) =>
        !canRerunLocally && Group(results).Count > 1;

    public void BeginTieBreak() => TieBreaking = true;

    public void EndTieBreak() => TieBreaking = false;

    /// <summary>
    /// Whether the answer of these replicas counts as verified without a re-run here: they all agree (or a tie-break gave a
    /// strict majority) and a provider in good standing is among the majority. Identities that agree may be one adversary
    /// (Sybils): a vote among strangers is no proof.
    /// </summary>
    public bool MajorityInGoodStanding(IReadOnlyList<ReplicaResult> results, bool tieBroken)
    {
        var groups = Group(results);
        return (groups.Count == 1 || (tieBroken && groups[0].Count * 2 > results.Count))
            && groups[0].Any(i => InGoodStanding(results[i].ConsecutiveVerified));
    }

    /// <summary>Whether to re-run here before judging: the replicas disagree or no provider in good standing vouches for them.</summary>
    public bool NeedsLocalRerun(IReadOnlyList<ReplicaResult> results, bool tieBroken, bool canRerunLocally) =>
        canRerunLocally && (Group(results).Count > 1 || !MajorityInGoodStanding(results, tieBroken));

    /// <summary>
    /// Judges the replicas. With a re-run here, each is compared with it: a deterministic mismatch is convicted, the
    /// matching ones paid. Without one, the largest group matches: replicas that disagree are resolved only by a tie-breaker
    /// in good standing here that sides with a strict majority (the third opinion): then the others are convicted and the
    /// majority verified. A majority whose only provider in good standing is one of the disputing replicas convicts nobody
    /// and verifies nothing: one remote word, even an established one's, may be a lie (its Sybil can break the tie). A strict
    /// majority is paid; replicas outvoted or unresolved are not paid. The answer is the first matching replica, else this
    /// node's own run, else the largest group's first (unverified).
    /// </summary>
    /// <param name="ownRun">This node's re-run, when it made one.</param>
    public ReplicaDecision DecideReplicas(IReadOnlyList<ReplicaResult> results, bool tieBroken, RunSummary? ownRun)
    {
        if (results.Count == 0)
        {
            return new ReplicaDecision([], new JobEnd.GiveUp($"no replica produced a result: {Summarise(_history)}"), false);
        }
        var groups = Group(results);
        var majority = groups[0].Count * 2 > results.Count;
        // A tie-breaker is the last result; its word resolves a disagreement only when it is in good standing here.
        var inGoodStanding = groups.Count == 1
            ? MajorityInGoodStanding(results, tieBroken)
            : tieBroken && majority && groups[0].Contains(results.Count - 1) && InGoodStanding(results[^1].ConsecutiveVerified);
        var steps = new List<SettleStep>(results.Count);
        int? chosen = null;
        for (var i = 0; i < results.Count; i++)
        {
            var verdict = ownRun is not null
                ? FraudChecker.Compare(results[i].Summary, ownRun)
                : groups[0].Contains(i) ? CheckVerdict.Match : CheckVerdict.Inconclusive;
            if ((verdict == CheckVerdict.Mismatch && ownRun is { Deterministic: true }) || (tieBroken && inGoodStanding && verdict != CheckVerdict.Match))
            {
                steps.Add(new SettleStep { Convict = true, Verdict = verdict });
                continue;
            }
            // An unresolved disagreement: every streak of verified results starts over, the majority's too.
            var note = verdict == CheckVerdict.Match && (groups.Count == 1 || ownRun is not null || inGoodStanding)
                ? (ownRun is not null || inGoodStanding ? ReputationNote.Verified : ReputationNote.None)
                : ReputationNote.Inconclusive;
            if (verdict == CheckVerdict.Match)
            {
                chosen ??= i;
            }
            steps.Add(verdict == CheckVerdict.Match && (ownRun is not null || majority)
                ? new SettleStep { Compared = true, Note = note, Verdict = verdict }
                : new SettleStep { NotPaid = "a replica outvoted or unresolved: not paid", Note = note, Verdict = verdict });
        }
        JobEnd end = chosen is { } c ? new JobEnd.LeaseResult(c, Verified: ownRun is not null || inGoodStanding)
            : ownRun is not null ? new JobEnd.OwnRun(Verified: true)
            : new JobEnd.LeaseResult(groups[0][0], Verified: false);
        return new ReplicaDecision(steps, end, majority);
    }

    // ------------------------------------------------------------------ settling

    /// <summary>An attempt ended (paid, unpaid, convicted): recorded in the history, and why its provider is not asked again.</summary>
    public void Record(AttemptRecord record)
    {
        _history.Add(record);
        Why[record.Provider] = Cause(record);
    }

    /// <summary>A payment was settled (a receipt or debit notes).</summary>
    public void OnPaid(long amount) => Cost = checked(Cost + amount);

    /// <summary>The reason an attempt's provider is not asked again: refused (and why), dead, failed, or used.</summary>
    public static string Cause(AttemptRecord record) => record.Outcome switch
    {
        LeaseOutcomeKind.Rejected => "refused: " + RejectDetail(record.Detail),
        LeaseOutcomeKind.Expired => $"dead or unreachable ({record.Detail})",
        LeaseOutcomeKind.Cancelled => $"cancelled ({record.Detail})",
        LeaseOutcomeKind.Failed => $"failed ({record.Detail})",
        LeaseOutcomeKind.Unreachable => "unreachable",
        _ => record.Detail.StartsWith("fraud", StringComparison.Ordinal) ? "caught cheating" : RanAlready,
    };

    public static string Summarise(IEnumerable<AttemptRecord> history) =>
        string.Join("; ", history.Select(h => $"{h.Provider}: {h.Outcome} ({h.Detail})"));

    /// <summary>"Policy: fuel limit over 100" → "fuel limit over 100" (the provider's own words, bounded by the lease options).</summary>
    private static string RejectDetail(string detail)
    {
        var colon = detail.IndexOf(": ", StringComparison.Ordinal);
        return colon > 0 && Enum.TryParse<LeaseRejectReason>(detail[..colon], out _) ? detail[(colon + 2)..] : detail;
    }

    internal static byte[] Fingerprint(RunSummary s) =>
        SHA256.HashData([.. BitConverter.GetBytes((int)s.Outcome), .. BitConverter.GetBytes(s.ExitCode), .. s.OutputHash,
            .. BitConverter.GetBytes(s.OutputSize), .. BitConverter.GetBytes(s.FuelUsed)]);

    private sealed record BusyRefusal(ulong Sequence, DateTimeOffset RetryAt, TimeSpan Backoff, bool Unreachable = false);
}
