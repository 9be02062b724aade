using Potluck.Protocol.Identity;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Requesting;
using Potluck.Scheduler.Tests.Advertising;
using Potluck.Scheduler.Verification;

using static Potluck.Scheduler.Tests.Requesting.RequesterFixture;

namespace Potluck.Scheduler.Tests.Requesting;

/// <summary>
/// The requester's decisions (<see cref="RequesterJob"/>) on `now` values alone: no network, no clock, no randomness (the
/// audit draw comes in as a bit).
/// </summary>
public class RequesterJobTests
{
    private static RequesterJob NewJob(int replicas = 1) => new(Settings, Self, replicas);

    private static RunSummary Run(byte output, AttestedOutcome outcome = AttestedOutcome.Exited, long fuel = 1000, bool deterministic = true) =>
        new(outcome, 0, [output, 0, 0, 0], 4, fuel, deterministic);

    private static IReadOnlyList<PeerId> Providers(ChoiceFilter f) =>
        [.. f.Candidates.Where(a => !f.Excluded.Contains(a.Provider)).Select(a => a.Provider)];

    // ------------------------------------------------------------------ choosing and retrying

    [Test]
    public void Filter_ExcludesThisNode_TriedAndRefusedProviders()
    {
        var job = NewJob();
        job.OnLeaseStarted(A);
        var f = job.Filter([Ad(SelfKey), Ad(AKey), Ad(BKey), Ad(CKey)], [C], T0);

        Assert.That(Providers(f), Is.EqualTo(new[] { B }));
        Assert.That(f.Excluded, Is.SupersetOf(new[] { Self, A, C }));
        Assert.That(job.Why[A], Is.EqualTo(RequesterJob.RunningReplica));
    }

    [Test]
    public void Busy_IsSkippedUntilItsRetryTime_WithABackoffDoublingToTheRetryInterval_OrANewerAdvertisement()
    {
        var job = NewJob();
        var backoffs = new List<TimeSpan>();
        var now = T0;
        for (var i = 0; i < 4; i++)
        {
            job.OnLeaseStarted(A);
            Assert.That(job.OnLeaseEnded(A, 1, LeaseOutcomeKind.Rejected, LeaseRejectReason.Busy, "Busy: no core", now), Is.EqualTo(ReputationNote.None),
                "busy does not count against the provider");
            var f = job.Filter([Ad(AKey)], [], now);
            Assert.That(Providers(f), Is.Empty, "skipped at the same advertisement");
            Assert.That(f.BusyHere, Is.EqualTo(1));
            backoffs.Add(f.RetryAt!.Value - now);
            Assert.That(Providers(job.Filter([Ad(AKey)], [], f.RetryAt.Value)), Is.EqualTo(new[] { A }), "asked again at its retry time");
            Assert.That(Providers(job.Filter([Ad(AKey, sequence: 2)], [], now)), Is.EqualTo(new[] { A }), "or at once when it advertises again");
            now = f.RetryAt.Value;
        }
        Assert.That(backoffs, Is.EqualTo(new[] { TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(4), TimeSpan.FromSeconds(4) }));
        Assert.That(job.BusyRefusals, Is.EqualTo(4));
        Assert.That(job.Tried, Does.Not.Contain(A), "busy is never 'tried'");
    }

    [Test]
    public void Attempts_BusyRefusalsAreNotCounted_FailuresAre_ThenTheJobGivesUpWithEveryReason()
    {
        var job = NewJob();
        var leases = 0;
        var providers = new[] { A, B, C, D };
        var failed = 0;
        while (job.NextAttempt())
        {
            var p = providers[failed];
            job.OnLeaseStarted(p);
            leases++;
            if (leases % 2 == 1)
            {
                job.OnLeaseEnded(p, 1, LeaseOutcomeKind.Rejected, LeaseRejectReason.Busy, "Busy: no core", T0);
                continue;
            }
            Assert.That(job.OnLeaseEnded(p, 1, LeaseOutcomeKind.Rejected, LeaseRejectReason.Policy, "Policy: fuel limit over 100", T0),
                Is.EqualTo(ReputationNote.Failure));
            failed++;
        }

        Assert.That(failed, Is.EqualTo(Settings.MaxAttempts), "three failures end it; the three busy refusals between did not count");
        Assert.That(leases, Is.EqualTo(6));
        Assert.That(job.Why[A], Is.EqualTo("refused: fuel limit over 100"));
        Assert.That(job.Tried, Is.SupersetOf(new[] { A, B, C }), "a provider that refused on policy is not asked again");
        var end = job.OutOfAttempts();
        Assert.That(end, Is.TypeOf<JobEnd.GiveUp>());
        var reason = ((JobEnd.GiveUp)end).Reason;
        Assert.That(reason, Does.StartWith("no result after 6 attempts: "));
        Assert.That(reason, Does.Contain($"{B}: Rejected (Policy: fuel limit over 100)"));
    }

    [Test]
    public void LostLease_CountsAgainstTheProvider_WhichIsAskedAgainOnlyAfterTheRetryInterval()
    {
        var job = NewJob();
        job.OnLeaseStarted(A);
        Assert.That(job.OnLeaseEnded(A, 7, LeaseOutcomeKind.Expired, null, "provider fell silent", T0), Is.EqualTo(ReputationNote.Failure));

        Assert.That(Providers(job.Filter([Ad(AKey, 7)], [], T0 + TimeSpan.FromSeconds(3))), Is.Empty);
        Assert.That(Providers(job.Filter([Ad(AKey, 7)], [], T0 + Settings.BusyRetryInterval)), Is.EqualTo(new[] { A }));
        Assert.That(job.Why[A], Is.EqualTo("dead or unreachable (provider fell silent)"));
    }

    [Test]
    public void NoMatch_WhileBusy_WaitsNoLaterThanTheNextRetry_ThenUpToWaitForCapacity_ThenGivesUp()
    {
        var job = NewJob();
        var by = job.BeginChoice(T0);
        Assert.That(job.OnNoMatch(busy: 1, othersSeen: 1, retryAt: T0 + TimeSpan.FromSeconds(2), T0, ref by), Is.EqualTo(T0 + TimeSpan.FromSeconds(2)));
        Assert.That(job.BusySince, Is.EqualTo(T0));
        var later = T0 + TimeSpan.FromSeconds(50);
        Assert.That(job.OnNoMatch(busy: 1, othersSeen: 1, retryAt: null, later, ref by), Is.EqualTo(T0 + Settings.WaitForCapacity),
            "the wait is bounded from its start, not from each look");
        Assert.That(job.OnNoMatch(busy: 1, othersSeen: 1, retryAt: null, T0 + Settings.WaitForCapacity, ref by), Is.Null);
    }

    [Test]
    public void NoMatch_NoProviderSeen_WaitsForProviders_OthersSeenButNoneFits_GivesUpAtOnce()
    {
        var job = NewJob();
        var by = job.BeginChoice(T0);
        Assert.That(job.OnNoMatch(0, 0, null, T0 + TimeSpan.FromSeconds(1), ref by), Is.EqualTo(T0 + Settings.WaitForProviders));
        Assert.That(job.OnNoMatch(0, 0, null, T0 + Settings.WaitForProviders, ref by), Is.Null);
        Assert.That(job.OnNoMatch(0, othersSeen: 2, null, T0, ref by), Is.Null);
    }

    [Test]
    public void AnAnswerOtherThanBusy_EndsTheWaitForCapacity()
    {
        var job = NewJob();
        var by = job.BeginChoice(T0);
        job.OnNoMatch(1, 1, null, T0, ref by);
        job.OnLeaseStarted(A);
        job.OnLeaseEnded(A, 1, LeaseOutcomeKind.Rejected, LeaseRejectReason.Price, "Price: too low", T0 + TimeSpan.FromSeconds(1));
        Assert.That(job.BusySince, Is.Null);
    }

    // ------------------------------------------------------------------ results and checks

    [Test]
    public void WallClockTimeout_IsNeverPaid_AndCountsAgainstTheProvider()
    {
        var job = NewJob();
        job.OnLeaseStarted(A);
        job.OnResultDelivered();
        var problem = job.InspectResult(A, null, matchesDelivery: true, ExecutionStatus.TimedOut, attestedFuel: 5, paidFuel: 0, termsDecode: true);

        Assert.That(problem, Is.Not.Null);
        Assert.That(problem!.Value.Note, Is.EqualTo(ReputationNote.Failure));
        Assert.That(problem.Value.Why, Does.Contain("not paid"));
        Assert.That(job.History.Single(), Is.EqualTo(new AttemptRecord(A, LeaseOutcomeKind.Failed, problem.Value.Why, 0)));
    }

    [TestCase("BadSignature", true, 10UL, 0UL, true, "attestation BadSignature")]
    [TestCase(null, false, 10UL, 0UL, true, "result does not match its attestation")]
    [TestCase(null, true, 10UL, 20UL, true, "the attestation reports less fuel than debit notes were paid for: not paid")]
    [TestCase(null, true, 10UL, 0UL, false, "terms do not decode")]
    [TestCase(null, true, 20UL, 20UL, true, null)]
    public void InspectResult_UnusableResultsAreNamed_UsableOnesPass(string? attestation, bool matches, ulong attested, ulong paid, bool decodes, string? why)
    {
        var job = NewJob();
        var problem = job.InspectResult(A, attestation, matches, ExecutionStatus.Success, attested, paid, decodes);
        Assert.That(problem?.Why, Is.EqualTo(why));
        Assert.That(job.History, Has.Count.EqualTo(why is null ? 0 : 1));
    }

    [Test]
    public void Sample_Check_Mismatch_ConvictsAndDoesNotPay_ThenTheNextResultIsComparedWithTheTrustedRunForFree()
    {
        var job = NewJob();
        var policy = new VerificationPolicy(new VerificationOptions());
        Assert.That(job.PlanCheck(sampled: true, canRerunLocally: true), Is.EqualTo(CheckPlan.RerunLocally));
        var honest = Run(1);
        var verdict = job.OnLocalRerun(claimed: Run(2), rerun: honest);
        Assert.That(verdict, Is.EqualTo(CheckVerdict.Mismatch));
        var decision = job.OnVerdict(Run(2), verdict, ownRunDeterministic: true);
        Assert.That(decision.Settle.Convict, Is.True);
        Assert.That(decision.Settle.Pay, Is.False, "a convicted result is never paid");
        Assert.That(decision.End, Is.Null, "another provider is tried");

        Assert.That(job.Trusted, Is.EqualTo(honest));
        Assert.That(job.DeclaredRatePpm(policy, consecutiveVerified: 1000, requested: null, alwaysCompared: false), Is.EqualTo(LeaseAudit.AlwaysPpm),
            "with a trusted run every later result is compared: declared as rate one");
        Assert.That(job.PlanCheck(sampled: false, canRerunLocally: true), Is.EqualTo(CheckPlan.CompareWithTrusted));
        Assert.That(job.CompareWithTrusted(Run(1)), Is.EqualTo(CheckVerdict.Match));
    }

    [Test]
    public void Sample_Check_Agrees_PaysAsCompared_AndEndsVerified()
    {
        var job = NewJob();
        var verdict = job.OnLocalRerun(Run(1), Run(1));
        var decision = job.OnVerdict(Run(1), verdict, ownRunDeterministic: true);

        Assert.That(decision.Settle, Is.EqualTo(new SettleStep { Compared = true, Note = ReputationNote.Verified }));
        Assert.That(decision.Settle.Pay, Is.True);
        Assert.That(decision.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: true)));
    }

    [Test]
    public void NotSampled_IsPaidUncompared_AndReportedUnverified()
    {
        var job = NewJob();
        Assert.That(job.PlanCheck(sampled: false, canRerunLocally: true), Is.EqualTo(CheckPlan.Unchecked));
        var decision = job.OnVerdict(Run(1), null, ownRunDeterministic: false);
        Assert.That(decision.Settle, Is.EqualTo(new SettleStep { Compared = false, Note = ReputationNote.Unchecked }));
        Assert.That(decision.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: false)));
    }

    [Test]
    public void ATrapARerunCannotConfirm_IsNotPaid_AndTheOwnRunIsTheAnswer()
    {
        var job = NewJob();
        var verdict = job.OnLocalRerun(Run(0, AttestedOutcome.Trapped), Run(1));
        Assert.That(verdict, Is.EqualTo(CheckVerdict.Mismatch), "a claimed trap a deterministic re-run does not reproduce is invented");
        var stackOverflow = Run(0, AttestedOutcome.Trapped, deterministic: false);
        var nondeterministic = NewJob();
        var v2 = nondeterministic.OnLocalRerun(Run(0, AttestedOutcome.Trapped), stackOverflow with { FuelUsed = 7 });
        Assert.That(v2, Is.EqualTo(CheckVerdict.Inconclusive));
        var decision = nondeterministic.OnVerdict(Run(0, AttestedOutcome.Trapped), v2, ownRunDeterministic: false);
        Assert.That(decision.Settle.NotPaid, Is.EqualTo("an unconfirmed trap: not paid"));
        Assert.That(decision.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: false)));
        Assert.That(nondeterministic.Trusted, Is.Null, "a run that may differ between machines is never trusted");
    }

    [Test]
    public void NoSandboxHere_ACheckerInGoodStanding_VerifiesWhenItAgrees_AndDisputesWhenItDisagrees()
    {
        var job = NewJob();
        Assert.That(job.PlanCheck(sampled: true, canRerunLocally: false), Is.EqualTo(CheckPlan.LeaseSecond));
        var agree = job.OnSecondResult(Run(1), Run(1), checkerConsecutiveVerified: 10);
        Assert.That(agree.Verdict, Is.EqualTo(CheckVerdict.Match));
        Assert.That(agree.Second is { Pay: true, Compared: true, Note: ReputationNote.Verified });
        var verified = job.OnVerdict(Run(1), agree.Verdict, ownRunDeterministic: false, agree);
        Assert.That(verified.Settle is { Pay: true, Compared: true, Note: ReputationNote.Verified });
        Assert.That(verified.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: true)));

        var disagree = job.OnSecondResult(Run(1), Run(2), checkerConsecutiveVerified: 10);
        Assert.That(disagree.Verdict, Is.EqualTo(CheckVerdict.Mismatch));
        Assert.That(disagree.Disputed, Is.True, "one remote word convicts nobody: a third opinion decides");
        Assert.That(() => job.OnVerdict(Run(1), disagree.Verdict, ownRunDeterministic: false, disagree), Throws.InvalidOperationException);
        Assert.That(job.OnVerdict(Run(1), CheckVerdict.Mismatch, ownRunDeterministic: true).Settle.Convict, Is.True, "a re-run here still convicts");

        var flaky = job.OnSecondResult(Run(1), Run(2, deterministic: false), checkerConsecutiveVerified: 10);
        Assert.That(flaky.Verdict, Is.EqualTo(CheckVerdict.Inconclusive), "a run that may differ between machines convicts nobody");
        Assert.That(flaky.Disputed, Is.False);
        Assert.That(job.OnVerdict(Run(1), flaky.Verdict, ownRunDeterministic: false, flaky).Settle.Convict, Is.False);
    }

    [Test]
    public void NoSandboxHere_AStrangerChecker_NeitherVerifiesNorConvicts()
    {
        var job = NewJob();
        // A Sybil twin agrees: unverified, not compared, no verified result credited to either.
        var agree = job.OnSecondResult(Run(1), Run(1), checkerConsecutiveVerified: 9);
        Assert.That(agree.Verdict, Is.Null);
        Assert.That(agree.CheckerInGoodStanding, Is.False);
        Assert.That(agree.Second is { Pay: true, Compared: false, Note: ReputationNote.None });
        var decision = job.OnVerdict(Run(1), agree.Verdict, ownRunDeterministic: false, agree);
        Assert.That(decision.Settle is { Pay: true, Compared: false, Note: ReputationNote.None });
        Assert.That(decision.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: false)));
        var trap = job.OnVerdict(Run(0, AttestedOutcome.Trapped), agree.Verdict, ownRunDeterministic: false, agree);
        Assert.That(trap.Settle.NotPaid, Is.EqualTo("a trap only a stranger confirmed: not paid"));

        // A stranger disagrees: inconclusive, the streaks start over, nobody convicted on a stranger's word.
        var disagree = job.OnSecondResult(Run(1), Run(2), checkerConsecutiveVerified: 0);
        Assert.That(disagree.Verdict, Is.EqualTo(CheckVerdict.Inconclusive));
        Assert.That(disagree.Second is { Pay: true, Note: ReputationNote.Inconclusive });
        var unresolved = job.OnVerdict(Run(1), disagree.Verdict, ownRunDeterministic: false, disagree);
        Assert.That(unresolved.Settle is { Convict: false, Note: ReputationNote.Inconclusive });
        Assert.That(unresolved.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: false)));
    }

    [Test]
    public void ThirdOpinion_IsChosenAmongProvidersInGoodStandingOnly_NeitherTheAccusedNorTheChecker()
    {
        var job = NewJob();
        job.OnLeaseStarted(A); // the accused
        job.OnLeaseStarted(C); // the checker
        var standing = new Dictionary<PeerId, int> { [A] = Good, [B] = 0, [C] = Good, [D] = Good };
        VerifiedAdvertisement[] live = [Ad(AKey), Ad(BKey), Ad(CKey), Ad(DKey)];

        Assert.That(Providers(job.Filter(live, [], T0, p => standing[p])), Is.EquivalentTo(new[] { B, D }));
        job.BeginThirdOpinion();
        Assert.That(Providers(job.Filter(live, [], T0, p => standing[p])), Is.EqualTo(new[] { D }), "strictly: a stranger's opinion resolves nothing");
        standing[D] = Good - 1;
        Assert.That(Providers(job.Filter(live, [], T0, p => standing[p])), Is.Empty, "nobody left: unresolved, never a stranger");
        job.EndThirdOpinion();
        Assert.That(Providers(job.Filter(live, [], T0, p => standing[p])), Is.EquivalentTo(new[] { B, D }));
    }

    [Test]
    public void Dispute_ThirdOpinionSidesWithTheChecker_TheAccusedIsConvicted_TheOthersPaidVerified()
    {
        var d = NewJob().ResolveDispute(Run(1), Run(2), Run(2), thirdConsecutiveVerified: Good);

        Assert.That(d.Outcome, Is.EqualTo(DisputeOutcome.AccusedWrong));
        Assert.That(d.Accused is { Convict: true, Pay: false });
        Assert.That(d.Checker is { Pay: true, Compared: true, Note: ReputationNote.Verified });
        Assert.That(d.Third is { Pay: true, Compared: true, Note: ReputationNote.Verified });
        Assert.That(d.End, Is.EqualTo(new JobEnd.LeaseResult(1, Verified: true)), "the checker's result, confirmed");
    }

    [Test]
    public void Dispute_ThirdOpinionSidesWithTheAccused_TheLyingCheckerIsConvicted_TheAccusedPaidVerified()
    {
        var d = NewJob().ResolveDispute(Run(1), Run(2), Run(1), thirdConsecutiveVerified: Good);

        Assert.That(d.Outcome, Is.EqualTo(DisputeOutcome.CheckerWrong));
        Assert.That(d.Checker is { Convict: true, Pay: false });
        Assert.That(d.Accused is { Pay: true, Compared: true, Note: ReputationNote.Verified });
        Assert.That(d.Third is { Pay: true, Note: ReputationNote.Verified });
        Assert.That(d.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: true)));
    }

    [Test]
    public void Dispute_WithoutAThirdOpinionInGoodStanding_NobodyConvicted_NobodyVerified_Unresolved()
    {
        var job = NewJob();
        var none = job.ResolveDispute(Run(1), Run(2), third: null, thirdConsecutiveVerified: 0);
        Assert.That(none.Outcome, Is.EqualTo(DisputeOutcome.NoThirdOpinion));
        Assert.That(none.Accused is { Convict: false, Pay: true, Note: ReputationNote.Inconclusive });
        Assert.That(none.Checker is { Convict: false, Pay: true, Note: ReputationNote.Inconclusive });
        Assert.That(none.Third, Is.Null);
        Assert.That(none.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: false, UnresolvedReason.NoThirdOpinion)));

        // A stranger that slipped through agrees with one side: still nobody's word to convict on.
        var stranger = job.ResolveDispute(Run(1), Run(2), Run(2), thirdConsecutiveVerified: Good - 1);
        Assert.That(stranger.Outcome, Is.EqualTo(DisputeOutcome.NoThirdOpinion));
        Assert.That(new[] { stranger.Accused, stranger.Checker, stranger.Third! }.Any(s => s.Convict || s.Note == ReputationNote.Verified), Is.False);

        // A trap nobody confirmed is not paid.
        var trap = job.ResolveDispute(Run(0, AttestedOutcome.Trapped), Run(2), third: null, thirdConsecutiveVerified: 0);
        Assert.That(trap.Accused is { Pay: false, Convict: false });
        Assert.That(trap.Checker.Pay, Is.True);
    }

    [Test]
    public void Dispute_ThirdOpinionAgreesWithNeither_NobodyConvicted_Unresolved()
    {
        var d = NewJob().ResolveDispute(Run(1), Run(2), Run(3), thirdConsecutiveVerified: Good);

        Assert.That(d.Outcome, Is.EqualTo(DisputeOutcome.NoAgreement));
        Assert.That(new[] { d.Accused, d.Checker, d.Third! }.All(s => s is { Convict: false, Pay: true, Note: ReputationNote.Inconclusive }));
        Assert.That(d.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: false, UnresolvedReason.NoAgreement)));
    }

    [Test]
    public void SecondCheck_PrefersProvidersInGoodStanding_OnlyWhileChecking()
    {
        var job = NewJob();
        job.OnLeaseStarted(A);
        var standing = new Dictionary<PeerId, int> { [A] = Good, [B] = 0, [C] = Good, [D] = Good - 1 };
        VerifiedAdvertisement[] live = [Ad(AKey), Ad(BKey), Ad(CKey), Ad(DKey)];

        Assert.That(job.Filter(live, [], T0, p => standing[p]).Preferred, Is.Empty, "the sampled lease is chosen as usual");
        job.BeginSecondCheck();
        Assert.That(job.Filter(live, [], T0, p => standing[p]).Preferred.Select(a => a.Provider), Is.EqualTo(new[] { C }),
            "in good standing, not the sampled provider, not one short of the record");
        job.EndSecondCheck();
        Assert.That(job.Filter(live, [], T0, p => standing[p]).Preferred, Is.Empty);
    }

    [Test]
    public void OutOfAttempts_WithATrustedRun_EndsWithIt()
    {
        var job = NewJob();
        job.OnLocalRerun(Run(2), Run(1));
        Assert.That(job.OutOfAttempts(), Is.EqualTo(new JobEnd.OwnRun(Verified: true)));
    }

    [Test]
    public void Paid_AddsUp_WithCheckedArithmetic()
    {
        var job = NewJob();
        job.OnPaid(5);
        job.OnPaid(7);
        Assert.That(job.Cost, Is.EqualTo(12));
        Assert.Throws<OverflowException>(() => job.OnPaid(long.MaxValue));
    }

    // ------------------------------------------------------------------ replicas and tie-breaks

    private const int Good = 10;

    [Test]
    public void Replicas_AllAgree_WithOneInGoodStanding_AreVerifiedAndPaid_NoTieBreak_NoRerun()
    {
        var job = NewJob(2);
        ReplicaResult[] results = [new(A, Run(1), Good), new(B, Run(1), 0)];
        Assert.That(job.NeedsTieBreak(results, canRerunLocally: false), Is.False);
        Assert.That(job.NeedsLocalRerun(results, false, canRerunLocally: true), Is.False);
        var d = job.DecideReplicas(results, tieBroken: false, ownRun: null);
        Assert.That(d.Settle.Select(s => (s.Pay, s.Note)), Is.EqualTo(new[] { (true, ReputationNote.Verified), (true, ReputationNote.Verified) }));
        Assert.That(d.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: true)));
    }

    [Test]
    public void Replicas_AllStrangersAgreeing_ArePaidButUnverified_AndRerunWhenPossible()
    {
        var job = NewJob(2);
        ReplicaResult[] results = [new(A, Run(1), 0), new(B, Run(1), 3)];
        Assert.That(job.NeedsLocalRerun(results, false, canRerunLocally: true), Is.True, "identities that agree may be one adversary");
        var d = job.DecideReplicas(results, tieBroken: false, ownRun: null);
        Assert.That(d.Settle.All(s => s.Pay && s.Note == ReputationNote.None), Is.True, "paid, but no standing earned from a vote");
        Assert.That(d.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: false)));
    }

    [Test]
    public void Replicas_Disagree_RerunHere_ConvictsTheWrongOne_PaysOnlyTheRightOne()
    {
        var job = NewJob(3);
        ReplicaResult[] results = [new(A, Run(9), 0), new(B, Run(9), 0), new(C, Run(1), 0)];
        Assert.That(job.NeedsTieBreak(results, canRerunLocally: true), Is.False, "a re-run here decides");
        Assert.That(job.NeedsLocalRerun(results, false, canRerunLocally: true), Is.True);
        var d = job.DecideReplicas(results, tieBroken: false, ownRun: Run(1));
        Assert.That(d.Settle.Select(s => s.Convict), Is.EqualTo(new[] { true, true, false }), "two colluding liars outvote nobody");
        Assert.That(d.Settle[2] is { Pay: true, Note: ReputationNote.Verified, Verdict: CheckVerdict.Match });
        Assert.That(d.End, Is.EqualTo(new JobEnd.LeaseResult(2, Verified: true)));
    }

    [Test]
    public void Replicas_Disagree_NoRerun_TieBreakerInGoodStanding_ConvictsTheOutvoted_PaysTheMajority()
    {
        var job = NewJob(2);
        ReplicaResult[] set = [new(A, Run(9), 0), new(B, Run(1), 0)];
        Assert.That(job.NeedsTieBreak(set, canRerunLocally: false), Is.True);
        ReplicaResult[] all = [.. set, new(C, Run(1), Good)];
        var d = job.DecideReplicas(all, tieBroken: true, ownRun: null);
        Assert.That(d.Settle[0].Convict, Is.True, "the outvoted liar: convicted, unpaid");
        Assert.That(d.Settle[1].Pay && d.Settle[2].Pay, Is.True);
        Assert.That(d.Majority, Is.True);
        Assert.That(d.End, Is.EqualTo(new JobEnd.LeaseResult(1, Verified: true)));
    }

    [Test]
    public void Replicas_Disagree_NoRerun_AStrangerTieBreaker_PaysTheMajority_ReportsUnverified_ConvictsNobody()
    {
        var job = NewJob(2);
        // The swarm supplied the tie-breaker too: B (honest, good standing here) is outvoted by two strangers.
        ReplicaResult[] all = [new(A, Run(9), 0), new(B, Run(1), Good), new(D, Run(9), 0)];
        var d = job.DecideReplicas(all, tieBroken: true, ownRun: null);
        Assert.That(d.Settle.Any(s => s.Convict), Is.False, "a vote among strangers convicts nobody");
        Assert.That(d.Settle[1].Pay, Is.False);
        Assert.That(d.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: false)), "never a Sybil majority accepted as verified");
    }

    [Test]
    public void Replicas_Disagree_NoRerun_AnEstablishedLiarAndAStrangerTieBreaker_ConvictNobody_VerifyNothing()
    {
        var job = NewJob(2);
        // A earned its standing and lies; its Sybil D breaks the tie: B, an honest stranger, is outvoted on A's word alone.
        ReplicaResult[] all = [new(A, Run(9), Good), new(B, Run(1), 0), new(D, Run(9), 0)];
        var d = job.DecideReplicas(all, tieBroken: true, ownRun: null);
        Assert.That(d.Settle.Any(s => s.Convict), Is.False, "one remote word convicts nobody");
        Assert.That(d.Settle.Any(s => s.Note == ReputationNote.Verified), Is.False, "nor credits a verified result");
        Assert.That(d.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: false)));

        // The same with the tie-breaker in good standing: its word resolves it.
        ReplicaResult[] resolved = [new(A, Run(9), Good), new(B, Run(1), 0), new(C, Run(1), Good)];
        var r = job.DecideReplicas(resolved, tieBroken: true, ownRun: null);
        Assert.That(r.Settle.Select(s => s.Convict), Is.EqualTo(new[] { true, false, false }), "the established liar is convicted");
        Assert.That(r.End, Is.EqualTo(new JobEnd.LeaseResult(1, Verified: true)));
    }

    [Test]
    public void Replicas_TieBreakUnresolved_NobodyPaid()
    {
        var job = NewJob(2);
        ReplicaResult[] all = [new(A, Run(9), Good), new(B, Run(1), Good), new(C, Run(5), Good)];
        var d = job.DecideReplicas(all, tieBroken: true, ownRun: null);
        Assert.That(d.Majority, Is.False);
        Assert.That(d.Settle.Count(s => s.Pay), Is.EqualTo(0), "no strict majority: nobody paid");
        Assert.That(d.Settle.Any(s => s.Convict), Is.False);
        Assert.That(d.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: false)));
    }

    [Test]
    public void TieBreak_PrefersProvidersInGoodStanding_OnlyWhileTieBreaking()
    {
        var job = NewJob(2);
        job.OnLeaseStarted(A);
        job.OnLeaseStarted(B);
        var standing = new Dictionary<PeerId, int> { [A] = Good, [B] = 0, [C] = 0, [D] = Good + 5 };
        VerifiedAdvertisement[] live = [Ad(AKey), Ad(BKey), Ad(CKey), Ad(DKey)];

        Assert.That(job.Filter(live, [], T0, p => standing[p]).Preferred, Is.Empty, "replicas themselves are chosen as usual");
        job.BeginTieBreak();
        var f = job.Filter(live, [], T0, p => standing[p]);
        Assert.That(f.Preferred.Select(a => a.Provider), Is.EqualTo(new[] { D }), "in good standing and outside the set (A ran a replica)");
        Assert.That(job.Filter(live, [D], T0, p => standing[p]).Preferred, Is.Empty, "a refused provider is never preferred");
        job.EndTieBreak();
        Assert.That(job.Filter(live, [], T0, p => standing[p]).Preferred, Is.Empty);
    }

    [Test]
    public void Group_OrdersByCount_TiesInOrderOfFirstAppearance()
    {
        ReplicaResult[] results = [new(A, Run(3), 0), new(B, Run(1), 0), new(C, Run(1), 0), new(D, Run(3) with { FuelUsed = 999 }, 0)];
        Assert.That(RequesterJob.Group(results), Is.EqualTo(new[] { new[] { 1, 2 }, new[] { 0 }, new[] { 3 } }), "fuel is part of the result");
    }
}
