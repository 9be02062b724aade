using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Cores;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Requesting;
using Potluck.Scheduler.Tests.Advertising;
using Potluck.Scheduler.Verification;

using static Potluck.Scheduler.Tests.Requesting.RequesterFixture;

namespace Potluck.Scheduler.Tests.Requesting;

/// <summary>
/// The requester's per-job flow as it runs: its core (<see cref="JobCore{TLease}"/> over <see cref="RequesterJob"/>) in the
/// shell both sides share (<see cref="CoreShell{TStep}"/>), on a virtual clock, with fake effects that record what they were
/// asked (choose, lease, re-run, convict, pay, leave unpaid) and answer as each test scripts the providers.
/// </summary>
public class JobShellTests
{
    private static RunSummary Run(byte output, long fuel = 1000, bool deterministic = true) =>
        new(AttestedOutcome.Exited, 0, [output, 0, 0, 0], 4, fuel, deterministic);

    private static readonly ResultInspection Sound = new(null, true, ExecutionStatus.Success, 1000, 0, true);

    internal sealed record FakeLease(PeerId Provider, RunSummary Claimed);

    /// <summary>How a scripted provider answers one lease.</summary>
    private abstract record Answer
    {
        public sealed record Busy : Answer;

        public sealed record Lost : Answer;

        /// <summary>The dial failed: the lease ended at once as unreachable (<see cref="RequesterLease.OnUnreachable"/>).</summary>
        public sealed record Unreachable : Answer;

        public sealed record Refused(string Detail) : Answer;

        public sealed record Broken(string Detail) : Answer;

        public sealed record Result(RunSummary Claimed, bool Sampled) : Answer;

        public sealed record Throws : Answer;
    }

    /// <summary>The job's shell effects, faked: the providers answer from a script; every effect is logged with the virtual time.</summary>
    private sealed class Harness : ICoreEffects<JobStep<FakeLease>>
    {
        private readonly Dictionary<PeerId, Queue<Answer>> _script = [];
        private ulong _nextLease;

        private readonly Dictionary<ulong, PeerId> _leased = [];
        private JobCore<FakeLease>? _core;

        public Harness(params PrivateKey[] providers)
            : this(1, providers)
        {
        }

        /// <param name="replicas">Providers to run the task on at once (1: a sampled run).</param>
        public Harness(int replicas, params PrivateKey[] providers)
        {
            Job = new RequesterJob(Settings, SelfKey.PeerId, replicas);
            Shell = new CoreShell<JobStep<FakeLease>>(this, Time, new CoreShellOptions { Name = "job under test" });
            Live = [.. providers.Select(k => Ad(k))];
        }

        public VirtualClock Time { get; } = new(T0);

        public RequesterJob Job { get; }

        /// <summary>The core under test (built on first use, once <see cref="Rerun"/> says whether this node can re-run).</summary>
        public JobCore<FakeLease> Core => _core ??= new JobCore<FakeLease>(Job) { CanRerunLocally = Rerun is not null };

        /// <summary>Verified results in a row here, per provider (absent: a stranger).</summary>
        public Dictionary<PeerId, int> Standing { get; } = [];

        /// <summary>How long a slot's lease (a replica, a tie-breaker) runs on the virtual clock before it answers.</summary>
        public TimeSpan SlotLeaseTime { get; init; }

        public CoreShell<JobStep<FakeLease>> Shell { get; }

        public List<VerifiedAdvertisement> Live { get; }

        /// <summary>This node's re-run of the task; null: no sandbox here.</summary>
        public RunSummary? Rerun { get; set; }

        public List<string> Log { get; } = [];

        public List<AttemptRecord> Reported { get; } = [];

        public List<DisputeOutcome> Disputes { get; } = [];

        public TaskCompletionSource<JobStep<FakeLease>> Ended { get; } = new();

        public InvalidOperationException Boom { get; } = new("the lease's stream broke in a way nobody expected");

        public string Name(PeerId p) => p == A ? "A" : p == B ? "B" : p == C ? "C" : p == D ? "D" : p.ToString();

        public double Seconds => (Time.GetUtcNow() - T0).TotalSeconds;

        public void Script(PeerId provider, params Answer[] answers) => _script[provider] = new Queue<Answer>(answers);

        /// <summary>Starts the job and runs virtual time until it ends (bounded: a job that would hang fails the test).</summary>
        public JobStep<FakeLease> Run()
        {
            _ = Shell.Post(Core.Start);
            for (var i = 0; i < 1000 && !Ended.Task.IsCompleted; i++)
            {
                if (!Time.AdvanceToNextTimer())
                {
                    break;
                }
            }
            Assert.That(Ended.Task.IsCompleted, Is.True, $"the job ended (at {Seconds} s; log: {string.Join(", ", Log)})");
            Assert.That(Shell.IsEnded, Is.True, "the shell takes no more events once the job ended");
            return Ended.Task.Result;
        }

        public IEnumerable<string> Effects(string prefix) => Log.Where(l => l.StartsWith(prefix, StringComparison.Ordinal));

        public CoreWake WakeOf(JobStep<FakeLease> step) => step.Wake;

        public JobStep<FakeLease> OnTimer(DateTimeOffset now) => Core.OnTimer(now);

        public JobStep<FakeLease> OnEffectFailed(JobStep<FakeLease> step, Exception error, DateTimeOffset now) => Core.OnEffectFailed(error, now);

        public ValueTask PerformAsync(JobStep<FakeLease> step, CancellationToken ct)
        {
            if (step.Release is not null)
            {
                Log.Add($"release {Name(step.NoteFor!.Value)}");
            }
            foreach (var held in step.ReleaseAll ?? [])
            {
                Log.Add($"release {Name(_leased[BitConverter.ToUInt64(held)])}");
            }
            if (step.TieBreak is { } tieBreak)
            {
                Log.Add($"tiebreak {tieBreak}");
            }
            if (step.NoteFor is { } noted && step.Note != ReputationNote.None)
            {
                Log.Add($"note {Name(noted)} {step.Note}");
            }
            if (step.Attempt is { } attempt)
            {
                Reported.Add(attempt);
            }
            foreach (var settlement in step.Settlements ?? [])
            {
                LogSettle(settlement.Lease, settlement.Step, settlement.Why);
            }
            if (step.Settle is { } settle)
            {
                LogSettle(step.Lease!, settle);
            }
            if (step.Dispute is { } dispute)
            {
                Disputes.Add(dispute);
            }
            switch (step.Action)
            {
                case JobAction.Choose:
                    Choose(step.Slot);
                    break;
                case JobAction.Lease when step.Slot is { } slot:
                    SlotLease(slot, step.Ad!.Provider);
                    break;
                case JobAction.Lease:
                    Lease(step.Ad!.Provider);
                    break;
                case JobAction.Rerun:
                    Log.Add("rerun");
                    Shell.TryEnqueue(t => Core.OnRerun(Rerun!, t));
                    break;
                case JobAction.Finish or JobAction.Fail:
                    Log.Add(step.Action == JobAction.Finish ? "finish" : "fail");
                    Ended.TrySetResult(step);
                    break;
            }
            if (step.ChooseNext is { } next)
            {
                Choose(next);
            }
            return ValueTask.CompletedTask;
        }

        private void LogSettle(FakeLease lease, SettleStep settle, string? refusedWhy = null)
        {
            var who = Name(lease.Provider);
            Log.Add(settle.Convict ? $"convict {who}{(refusedWhy is null ? "" : $" ({refusedWhy})")}" : settle.Pay ? $"pay {who}{(settle.Compared ? " compared" : "")}" : $"unpaid {who}");
            if (settle.Note != ReputationNote.None)
            {
                Log.Add($"note {who} {settle.Note}");
            }
        }

        /// <summary>As the client's choice: among providers in good standing first, when the job prefers them and one fits.</summary>
        private void Choose(int? slot)
        {
            var now = Time.GetUtcNow();
            var filter = Job.Filter(Live, [], now, p => Standing.GetValueOrDefault(p));
            var pick = filter.Preferred.FirstOrDefault() ?? filter.Candidates.FirstOrDefault(a => !filter.Excluded.Contains(a.Provider));
            // As the client's explanation, which counts the unreachable apart from the busy.
            Func<Exception> explain = () => new SubmissionException(
                filter.UnreachableHere > 0 ? $"no provider fits: {filter.UnreachableHere} unreachable" : "no provider fits", Job.History.ToList());
            var othersSeen = filter.Candidates.Count + filter.BusyHere;
            Shell.TryEnqueue((pick, slot) switch
            {
                (null, null) => t => Core.OnNoMatch(filter.BusyHere, othersSeen, filter.RetryAt, explain, t),
                (null, { } s) => t => Core.OnNoMatch(s, filter.BusyHere, othersSeen, filter.RetryAt, explain, t),
                (_, null) => t => Core.OnChosen(pick, t),
                (_, { } s) => t => Core.OnChosen(s, pick, t),
            });
        }

        /// <summary>
        /// A slot's lease runs beside the loop for <see cref="SlotLeaseTime"/>, then posts its answer (as the client's shell
        /// does); one that throws is the slot's lease failure, one that ends after the job is released.
        /// </summary>
        private void SlotLease(int slot, PeerId provider)
        {
            Log.Add($"lease {Name(provider)}@{Seconds}");
            var leaseId = NewLease(provider);
            var answer = _script[provider].Dequeue();
            if (answer is Answer.Throws)
            {
                // As the client's shell: the lease's own work threw (credits ran out, a stream broke): the slot's failure event.
                Shell.TryEnqueue(t => Core.OnLeaseFailed(slot, Boom, t));
                return;
            }
            Func<DateTimeOffset, JobStep<FakeLease>> ended = answer switch
            {
                Answer.Busy => t => Core.OnLeaseEnded(slot, provider, 1, leaseId, LeaseOutcomeKind.Rejected, LeaseRejectReason.Busy, "Busy: no free core", t),
                Answer.Refused refused => t => Core.OnLeaseEnded(slot, provider, 1, leaseId, LeaseOutcomeKind.Rejected, LeaseRejectReason.Policy, refused.Detail, t),
                Answer.Broken broken => t => Core.OnLeaseEnded(slot, provider, 1, leaseId, LeaseOutcomeKind.Failed, null, broken.Detail, t),
                Answer.Result result => t => Core.OnResult(slot, new FakeLease(provider, result.Claimed), provider, leaseId, Sound, result.Claimed,
                    Standing.GetValueOrDefault(provider), t),
                _ => t => Core.OnLeaseEnded(slot, provider, 1, leaseId, LeaseOutcomeKind.Expired, null, "silent past the grace window", t),
            };
            _ = Task.Delay(SlotLeaseTime, Time).ContinueWith(_ =>
            {
                if (Shell.TryEnqueue(ended) == CorePost.Accepted)
                {
                    _ = Shell.Pump();
                }
                else
                {
                    Log.Add($"release {Name(provider)} (after the job)");
                }
            }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default); // on the clock's thread: deterministic
        }

        private byte[] NewLease(PeerId provider)
        {
            _leased[++_nextLease] = provider;
            return BitConverter.GetBytes(_nextLease);
        }

        private void Lease(PeerId provider)
        {
            Log.Add($"lease {Name(provider)}@{Seconds}");
            var leaseId = NewLease(provider);
            var answer = _script[provider].Dequeue();
            switch (answer)
            {
                case Answer.Busy:
                    Shell.TryEnqueue(t => Core.OnLeaseEnded(provider, 1, leaseId, LeaseOutcomeKind.Rejected, LeaseRejectReason.Busy, "Busy: no free core", t));
                    break;
                case Answer.Lost:
                    Shell.TryEnqueue(t => Core.OnLeaseEnded(provider, 1, leaseId, LeaseOutcomeKind.Expired, null, "silent past the grace window", t));
                    break;
                case Answer.Unreachable:
                    Shell.TryEnqueue(t => Core.OnLeaseEnded(provider, 1, leaseId, LeaseOutcomeKind.Unreachable, null, "provider unreachable after 1 request", t));
                    break;
                case Answer.Refused refused:
                    Shell.TryEnqueue(t => Core.OnLeaseEnded(provider, 1, leaseId, LeaseOutcomeKind.Rejected, LeaseRejectReason.Policy, refused.Detail, t));
                    break;
                case Answer.Broken broken:
                    Shell.TryEnqueue(t => Core.OnLeaseEnded(provider, 1, leaseId, LeaseOutcomeKind.Failed, null, broken.Detail, t));
                    break;
                case Answer.Result result:
                    Shell.TryEnqueue(t => Core.OnResult(new FakeLease(provider, result.Claimed), provider, leaseId, Sound, result.Claimed, result.Sampled,
                        canRerunLocally: Rerun is not null, t));
                    break;
                default:
                    throw Boom;
            }
        }
    }

    [Test]
    public void Busy_IsAskedAgainAfter1_2_4SecondsOnTheVirtualClock_NotCountedAsAttempts_ThenPaid()
    {
        var h = new Harness(AKey);
        h.Script(A, new Answer.Busy(), new Answer.Busy(), new Answer.Busy(), new Answer.Busy(), new Answer.Result(Run(1), Sampled: false));

        var end = h.Run();

        Assert.That(h.Effects("lease"), Is.EqualTo(new[] { "lease A@0", "lease A@1", "lease A@3", "lease A@7", "lease A@11" }),
            "the backoff doubles from 1 s up to the busy retry interval (4 s)");
        Assert.That(end.Action, Is.EqualTo(JobAction.Finish));
        Assert.That(end.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: false)));
        Assert.That(end.Answer!.Provider, Is.EqualTo(A));
        Assert.That(h.Effects("pay"), Is.EqualTo(new[] { "pay A" }), "an unchecked result is paid, not as compared");
        Assert.That(h.Effects("release"), Has.Exactly(4).EqualTo("release A"), "each busy lease's reservation is released");
        Assert.That(h.Log, Does.Not.Contain("note A Failure"), "busy is a market answer, not a failure");
        Assert.That(h.Job.BusyRefusals, Is.EqualTo(4));
        Assert.That(h.Reported.Select(r => r.Outcome), Is.EqualTo(Enumerable.Repeat(LeaseOutcomeKind.Rejected, 4)));
    }

    [Test]
    public void LeaseLost_IsRetriedAfterTheRetryInterval_AndCountsAgainstTheProvider()
    {
        var h = new Harness(AKey);
        h.Script(A, new Answer.Lost(), new Answer.Result(Run(1), Sampled: false));

        var end = h.Run();

        Assert.That(h.Effects("lease"), Is.EqualTo(new[] { "lease A@0", "lease A@4" }), "asked again once the busy retry interval has passed");
        Assert.That(h.Log, Does.Contain("release A").And.Contain("note A Failure"));
        Assert.That(h.Reported[0], Is.EqualTo(new AttemptRecord(A, LeaseOutcomeKind.Expired, "silent past the grace window", 0)));
        Assert.That(end.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: false)));
        Assert.That(h.Effects("pay"), Is.EqualTo(new[] { "pay A" }));
    }

    [Test]
    public void Unreachable_AnotherProviderIsChosenAtOnce_NotCountedAgainstTheProviderOrTheAttempts()
    {
        var h = new Harness(AKey, BKey);
        h.Script(A, new Answer.Unreachable());
        h.Script(B, new Answer.Result(Run(1), Sampled: false));

        var end = h.Run();

        Assert.That(h.Effects("lease"), Is.EqualTo(new[] { "lease A@0", "lease B@0" }), "B is leased at once, not after a retry interval");
        Assert.That(end.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: false)));
        Assert.That(end.Answer!.Provider, Is.EqualTo(B));
        Assert.That(h.Log, Does.Contain("release A"), "the unreachable lease's reservation is released");
        Assert.That(h.Log, Does.Not.Contain("note A Failure"), "not reaching a provider says nothing about its honesty");
        Assert.That(h.Reported[0], Is.EqualTo(new AttemptRecord(A, LeaseOutcomeKind.Unreachable, "provider unreachable after 1 request", 0)));
        Assert.That(h.Job.RetryAt(A), Is.EqualTo(T0 + TimeSpan.FromSeconds(1)), "A is skipped for this job for the first busy backoff");
    }

    [Test]
    public void AllUnreachable_TheJobWaitsWithABackoff_AndCompletesOnceOneIsReachable()
    {
        // Both cut off for the first 3 s (three tries each, more than MaxAttempts = 3 in all): the job does not give up.
        var h = new Harness(AKey, BKey);
        h.Script(A, new Answer.Unreachable(), new Answer.Unreachable(), new Answer.Unreachable(), new Answer.Result(Run(1), Sampled: false));
        h.Script(B, new Answer.Unreachable(), new Answer.Unreachable(), new Answer.Unreachable(), new Answer.Result(Run(1), Sampled: false));

        var end = h.Run();

        Assert.That(h.Effects("lease"), Is.EqualTo(new[]
        {
            "lease A@0", "lease B@0", "lease A@1", "lease B@1", "lease A@3", "lease B@3", "lease A@7",
        }), "each waits its doubling backoff (1, 2, 4 s up to the busy retry interval); none is given up");
        Assert.That(end.Action, Is.EqualTo(JobAction.Finish));
        Assert.That(end.Answer!.Provider, Is.EqualTo(A));
        Assert.That(h.Effects("pay"), Is.EqualTo(new[] { "pay A" }));
        Assert.That(h.Log, Does.Not.Contain("note A Failure").And.Not.Contain("note B Failure"));
        Assert.That(h.Reported.Count(r => r.Outcome == LeaseOutcomeKind.Unreachable), Is.EqualTo(6));
    }

    [Test]
    public void AllUnreachable_PastTheJobsWaitLimit_GivesUpNamingUnreachable()
    {
        var h = new Harness(AKey, BKey);
        var never = Enumerable.Repeat<Answer>(new Answer.Unreachable(), 100).ToArray();
        h.Script(A, never);
        h.Script(B, never);

        var end = h.Run();

        Assert.That(end.Action, Is.EqualTo(JobAction.Fail));
        var error = end.NoProvider!();
        Assert.That(error, Is.TypeOf<SubmissionException>());
        Assert.That(error.Message, Is.EqualTo("no provider fits: 2 unreachable"));
        Assert.That(h.Job.Why[A], Is.EqualTo("unreachable"));
        Assert.That(h.Seconds, Is.GreaterThanOrEqualTo(Settings.WaitForCapacity.TotalSeconds).And.LessThan(Settings.WaitForCapacity.TotalSeconds + 5),
            "it waits as long as the job waits for capacity, and no longer");
        Assert.That(h.Log.Where(l => l.StartsWith("note", StringComparison.Ordinal)), Is.Empty, "neither provider is noted at all");
    }

    [Test]
    public void Sampled_Mismatch_IsConvictedAndNeverPaid_TheNextProviderIsComparedWithTheTrustedRun()
    {
        var h = new Harness(AKey, BKey) { Rerun = Run(7) };
        h.Script(A, new Answer.Result(Run(6), Sampled: true));
        h.Script(B, new Answer.Result(Run(7), Sampled: false));

        var end = h.Run();

        Assert.That(h.Log, Is.EqualTo(new[]
        {
            "lease A@0", "rerun", "convict A",
            "lease B@0", "pay B compared", "note B Verified", "finish",
        }), "A is convicted without a pay effect; B, not drawn, is still compared with the deterministic re-run for free");
        Assert.That(h.Effects("pay A"), Is.Empty);
        Assert.That(end.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: true)));
        Assert.That(end.Answer!.Provider, Is.EqualTo(B));
        Assert.That(h.Job.Tried, Does.Contain(A), "a convicted provider is not asked again for this job");
    }

    [Test]
    public void Sampled_Match_IsPaidAsCompared_AndTheAnswerIsVerified()
    {
        var h = new Harness(AKey) { Rerun = Run(7) };
        h.Script(A, new Answer.Result(Run(7), Sampled: true));

        var end = h.Run();

        Assert.That(h.Log, Is.EqualTo(new[] { "lease A@0", "rerun", "pay A compared", "note A Verified", "finish" }));
        Assert.That(end.Verdict, Is.EqualTo(CheckVerdict.Match));
        Assert.That(end.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: true)));
    }

    [Test]
    public void Failures_UpToMaxAttempts_GiveUpWithEachReason_NothingPaid()
    {
        var h = new Harness(AKey, BKey, CKey);
        h.Script(A, new Answer.Refused("Policy: fuel limit over 100"));
        h.Script(B, new Answer.Broken("attestation not signed by the provider"));
        h.Script(C, new Answer.Lost());

        var end = h.Run();

        Assert.That(h.Effects("lease"), Is.EqualTo(new[] { "lease A@0", "lease B@0", "lease C@0" }));
        Assert.That(end.Action, Is.EqualTo(JobAction.Fail));
        var reason = ((JobEnd.GiveUp)end.End!).Reason;
        Assert.That(reason, Does.StartWith("no result after 3 attempts"));
        Assert.That(reason, Does.Contain("fuel limit over 100").And.Contain("attestation not signed by the provider").And.Contain("silent past the grace window"));
        Assert.That(h.Effects("pay"), Is.Empty);
        Assert.That(h.Effects("release"), Is.EqualTo(new[] { "release A", "release B", "release C" }), "every reservation is released");
    }

    [Test]
    public void NoProvider_WaitsForProvidersOnTheVirtualClock_ThenFailsWithTheShellsExplanation()
    {
        var h = new Harness();

        var end = h.Run();

        Assert.That(end.Action, Is.EqualTo(JobAction.Fail));
        Assert.That(h.Seconds, Is.EqualTo(Settings.WaitForProviders.TotalSeconds), "it waited for providers, then gave up");
        Assert.That(end.NoProvider!().Message, Is.EqualTo("no provider fits"));
    }

    [Test]
    public void NewAdvertisement_EndsAWaitEarly()
    {
        var h = new Harness();
        h.Script(A, new Answer.Result(Run(1), Sampled: false));
        _ = h.Shell.Post(h.Core.Start);
        h.Time.Advance(TimeSpan.FromSeconds(5));
        Assert.That(h.Ended.Task.IsCompleted, Is.False, "still waiting for providers");

        h.Live.Add(Ad(AKey));
        _ = h.Shell.Post(h.Core.OnProvidersChanged);

        Assert.That(h.Effects("lease"), Is.EqualTo(new[] { "lease A@5" }));
        Assert.That(h.Ended.Task.Result.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: false)));
    }

    [Test]
    public void AnEffectThatThrows_EndsTheJobWithThatFailure_NeverHangs()
    {
        var h = new Harness(AKey, BKey);
        h.Script(A, new Answer.Throws());
        h.Script(B, new Answer.Result(Run(1), Sampled: false));

        var end = h.Run();

        Assert.That(end.Action, Is.EqualTo(JobAction.Fail));
        Assert.That(end.Failure, Is.SameAs(h.Boom));
        Assert.That(h.Effects("lease"), Is.EqualTo(new[] { "lease A@0" }), "no other provider is leased after the failure");
        Assert.That(h.Effects("pay"), Is.Empty);
        Assert.That(h.Shell.EffectFailures, Is.EqualTo(1));
        Assert.That(h.Shell.Completion.IsCompletedSuccessfully, Is.True, "the job ended; the shell did not fault");
        Assert.That(h.Time.PendingTimers, Is.Zero, "no timer left behind");
    }

    // ------------------------------------------------------------------ replicas on the core

    [Test]
    public void Replicas_ThreeAgree_AmongStrangers_LeasedAtOnce_AllPaid_TheAnswerIsNotVerified()
    {
        var h = new Harness(3, AKey, BKey, CKey) { SlotLeaseTime = TimeSpan.FromSeconds(5) };
        foreach (var p in new[] { A, B, C })
        {
            h.Script(p, new Answer.Result(Run(1), Sampled: false));
        }

        var end = h.Run();

        Assert.That(h.Log, Is.EqualTo(new[]
        {
            "lease A@0", "lease B@0", "lease C@0", "pay A compared", "pay B compared", "pay C compared", "finish",
        }), "three providers at once; identities that agree may be one adversary: nobody is credited a verified result");
        Assert.That(h.Seconds, Is.EqualTo(5), "judged when the last replica answered");
        Assert.That(end.Action, Is.EqualTo(JobAction.Finish));
        Assert.That(end.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: false)));
        Assert.That(end.Answer!.Provider, Is.EqualTo(A));
        Assert.That(h.Time.PendingTimers, Is.Zero);
    }

    [Test]
    public void Replicas_ThreeAgree_OneInGoodStanding_AllPaid_AndVerified()
    {
        var h = new Harness(3, AKey, BKey, CKey);
        h.Standing[C] = Settings.StrangerResults;
        foreach (var p in new[] { A, B, C })
        {
            h.Script(p, new Answer.Result(Run(1), Sampled: false));
        }

        var end = h.Run();

        Assert.That(h.Log, Is.EqualTo(new[]
        {
            "lease A@0", "lease B@0", "lease C@0",
            "pay A compared", "note A Verified", "pay B compared", "note B Verified", "pay C compared", "note C Verified", "finish",
        }));
        Assert.That(end.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: true)));
    }

    [Test]
    public void Replicas_ThreeAgree_AmongStrangers_AReRunHereVerifies()
    {
        var h = new Harness(3, AKey, BKey, CKey) { Rerun = Run(1) };
        foreach (var p in new[] { A, B, C })
        {
            h.Script(p, new Answer.Result(Run(1), Sampled: false));
        }

        var end = h.Run();

        Assert.That(h.Log, Is.EqualTo(new[]
        {
            "lease A@0", "lease B@0", "lease C@0", "rerun",
            "pay A compared", "note A Verified", "pay B compared", "note B Verified", "pay C compared", "note C Verified", "finish",
        }));
        Assert.That(end.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: true)));
    }

    [Test]
    public void Replicas_OneOfThreeDisagrees_ATieBreakIsLeased_InGoodStanding_TheOutvotedIsConvictedAndUnpaid()
    {
        var h = new Harness(3, AKey, BKey, CKey, DKey);
        h.Standing[D] = Settings.StrangerResults;
        h.Script(A, new Answer.Result(Run(1), Sampled: false));
        h.Script(B, new Answer.Result(Run(1), Sampled: false));
        h.Script(C, new Answer.Result(Run(2), Sampled: false));
        h.Script(D, new Answer.Result(Run(1), Sampled: false));

        var end = h.Run();

        Assert.That(h.Log, Is.EqualTo(new[]
        {
            "lease A@0", "lease B@0", "lease C@0", "lease D@0", "tiebreak majority",
            "pay A compared", "note A Verified", "pay B compared", "note B Verified", "convict C", "pay D compared", "note D Verified", "finish",
        }), "the tie-breaker is in good standing and sides with the majority: the outvoted replica is convicted, never paid");
        Assert.That(end.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: true)));
        Assert.That(end.Answer!.Provider, Is.EqualTo(A), "the answer is the majority's");
        Assert.That(h.Job.TieBreaking, Is.False, "the tie-break is over");
    }

    [Test]
    public void Replicas_OneOfThreeDisagrees_AStrangerBreaksTheTie_TheOutvotedIsNotPaid_NobodyConvicted_NothingVerified()
    {
        var h = new Harness(3, AKey, BKey, CKey, DKey);
        h.Script(A, new Answer.Result(Run(1), Sampled: false));
        h.Script(B, new Answer.Result(Run(1), Sampled: false));
        h.Script(C, new Answer.Result(Run(2), Sampled: false));
        h.Script(D, new Answer.Result(Run(1), Sampled: false));

        var end = h.Run();

        Assert.That(h.Log, Is.EqualTo(new[]
        {
            "lease A@0", "lease B@0", "lease C@0", "lease D@0", "tiebreak majority",
            "pay A compared", "note A Inconclusive", "pay B compared", "note B Inconclusive", "unpaid C", "note C Inconclusive",
            "pay D compared", "note D Inconclusive", "finish",
        }), "a vote among strangers is no proof: the majority is paid, the outvoted is not, nobody is convicted");
        Assert.That(end.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: false)));
    }

    [Test]
    public void Replicas_Disagree_NoTieBreakerLeft_Unresolved_NobodyConvicted_NothingPaid()
    {
        var h = new Harness(2, AKey, BKey);
        h.Script(A, new Answer.Result(Run(1), Sampled: false));
        h.Script(B, new Answer.Result(Run(2), Sampled: false));

        var end = h.Run();

        Assert.That(h.Log, Is.EqualTo(new[]
        {
            "lease A@0", "lease B@0", "tiebreak unresolved",
            "unpaid A", "note A Inconclusive", "unpaid B", "note B Inconclusive", "finish",
        }));
        Assert.That(end.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: false)), "the first result is returned, unverified");
        Assert.That(h.Seconds, Is.Zero, "no provider outside the set: it does not wait for one");
        Assert.That(h.Time.PendingTimers, Is.Zero);
    }

    [Test]
    public void Replicas_ARefusedReplica_IsReplacedInTheNextRound_ByAnotherProvider()
    {
        var h = new Harness(2, AKey, BKey, CKey);
        h.Standing[C] = Settings.StrangerResults;
        h.Script(A, new Answer.Result(Run(1), Sampled: false));
        h.Script(B, new Answer.Refused("Policy: fuel limit over 100"));
        h.Script(C, new Answer.Result(Run(1), Sampled: false));

        var end = h.Run();

        Assert.That(h.Log, Is.EqualTo(new[]
        {
            "lease A@0", "lease B@0", "release B", "note B Failure", "lease C@0",
            "pay A compared", "note A Verified", "pay C compared", "note C Verified", "finish",
        }));
        Assert.That(end.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: true)));
    }

    [Test]
    public void Replicas_ABusyRound_WaitsOnTheVirtualClock_AndIsNotCountedAsAnAttempt()
    {
        var h = new Harness(2, AKey, BKey);
        h.Script(A, new Answer.Result(Run(1), Sampled: false));
        h.Script(B, new Answer.Busy(), new Answer.Busy(), new Answer.Busy(), new Answer.Busy(), new Answer.Result(Run(1), Sampled: false));

        var end = h.Run();

        Assert.That(h.Effects("lease"), Is.EqualTo(new[] { "lease A@0", "lease B@0", "lease B@1", "lease B@3", "lease B@7", "lease B@11" }),
            "busy rounds are capacity to wait for (1, 2, 4, 4 s), not attempts (3 allowed)");
        Assert.That(h.Effects("pay"), Is.EqualTo(new[] { "pay A compared", "pay B compared" }));
        Assert.That(end.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: false)));
    }

    [TestCase(false, TestName = "Replicas_ALeaseThrows_WithResultsHeld_TypedFailure_EveryReservationReleased_NoTimerLeft")]
    [TestCase(true, TestName = "Replicas_ALeaseThrows_WithLeasesInFlight_TypedFailure_EveryReservationReleased_NoTimerLeft")]
    public void Replicas_ALeaseThrows_TypedFailure_EveryReservationReleased_NoTimerLeft(bool inFlight)
    {
        var h = new Harness(3, AKey, BKey, CKey) { SlotLeaseTime = inFlight ? TimeSpan.FromSeconds(5) : TimeSpan.Zero };
        h.Script(A, new Answer.Result(Run(1), Sampled: false));
        h.Script(B, new Answer.Result(Run(1), Sampled: false));
        h.Script(C, new Answer.Throws());

        var end = h.Run();
        h.Time.Advance(TimeSpan.FromSeconds(10)); // leases still in flight end after the job

        Assert.That(end.Action, Is.EqualTo(JobAction.Fail));
        Assert.That(end.Failure, Is.SameAs(h.Boom));
        Assert.That(h.Log, Is.EqualTo(inFlight
            ? new[] { "lease A@0", "lease B@0", "lease C@0", "fail", "release A (after the job)", "release B (after the job)" }
            : new[] { "lease A@0", "lease B@0", "lease C@0", "release A", "release B", "fail" }), "nothing paid, every reservation released");
        Assert.That(h.Shell.Completion.IsCompletedSuccessfully, Is.True, "the job ended; the shell did not fault");
        Assert.That(h.Time.PendingTimers, Is.Zero, "no timer left behind");
    }

    // ------------------------------------------------------------------ a second provider's check and a dispute on the core

    [Test]
    public void Sampled_NoSandboxHere_ASecondProviderInGoodStandingAgrees_BothPaid_TheResultIsVerified()
    {
        var h = new Harness(AKey, BKey, CKey);
        h.Standing[C] = Settings.StrangerResults;
        h.Script(A, new Answer.Result(Run(1), Sampled: true));
        h.Script(C, new Answer.Result(Run(1), Sampled: false));

        var end = h.Run();

        Assert.That(h.Log, Is.EqualTo(new[]
        {
            "lease A@0", "lease C@0", "pay C compared", "note C Verified", "pay A compared", "note A Verified", "finish",
        }), "the checker is chosen among providers in good standing (C, not the stranger B), settled first");
        Assert.That(end.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: true)));
        Assert.That(end.Answer!.Provider, Is.EqualTo(A));
        Assert.That(h.Job.CheckingSecond, Is.False);
    }

    [Test]
    public void Dispute_TheThirdOpinionSidesWithTheChecker_TheProviderIsConvicted_TheCheckerAndThirdPaidVerified()
    {
        var h = new Harness(AKey, BKey, CKey, DKey);
        h.Standing[B] = h.Standing[C] = Settings.StrangerResults;
        h.Script(A, new Answer.Result(Run(6), Sampled: true));
        h.Script(B, new Answer.Result(Run(7), Sampled: false));
        h.Script(C, new Answer.Result(Run(7), Sampled: false));

        var end = h.Run();

        Assert.That(h.Log, Is.EqualTo(new[]
        {
            "lease A@0", "lease B@0", "lease C@0",
            "pay B compared", "note B Verified", "pay C compared", "note C Verified", "convict A", "finish",
        }), "the checker B contradicts A; the third opinion, in good standing (C, never the stranger D), agrees with B");
        Assert.That(h.Disputes, Is.EqualTo(new[] { DisputeOutcome.AccusedWrong }));
        Assert.That(end.Verdict, Is.EqualTo(CheckVerdict.Mismatch));
        Assert.That(end.End, Is.EqualTo(new JobEnd.LeaseResult(1, Verified: true)));
        Assert.That(end.Answer!.Provider, Is.EqualTo(B), "the answer is the confirmed result");
        Assert.That(h.Job.SeekingThirdOpinion, Is.False);
    }

    [Test]
    public void Dispute_TheThirdOpinionSidesWithTheProvider_TheCheckerIsNotTrusted_ItIsConvicted_TheProviderPaidVerified()
    {
        var h = new Harness(AKey, BKey, CKey);
        h.Standing[B] = h.Standing[C] = Settings.StrangerResults;
        h.Script(A, new Answer.Result(Run(6), Sampled: true));
        h.Script(B, new Answer.Result(Run(7), Sampled: false));
        h.Script(C, new Answer.Result(Run(6), Sampled: false));

        var end = h.Run();

        Assert.That(h.Log, Is.EqualTo(new[]
        {
            "lease A@0", "lease B@0", "lease C@0",
            "convict B (a checker whose result a third provider in good standing contradicted)", "pay C compared", "note C Verified",
            "pay A compared", "note A Verified", "finish",
        }));
        Assert.That(h.Disputes, Is.EqualTo(new[] { DisputeOutcome.CheckerWrong }));
        Assert.That(end.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: true)));
        Assert.That(end.Answer!.Provider, Is.EqualTo(A));
    }

    [Test]
    public void Dispute_NoThirdOpinionInGoodStanding_Unresolved_NobodyConvicted_NothingPaidAsVerified()
    {
        var h = new Harness(AKey, BKey, CKey);
        h.Standing[B] = Settings.StrangerResults;
        h.Script(A, new Answer.Result(Run(6), Sampled: true));
        h.Script(B, new Answer.Result(Run(7), Sampled: false));

        var end = h.Run();

        Assert.That(h.Log, Is.EqualTo(new[]
        {
            "lease A@0", "lease B@0", "pay B compared", "note B Inconclusive", "pay A compared", "note A Inconclusive", "finish",
        }), "the stranger C is never asked for a third opinion");
        Assert.That(h.Disputes, Is.EqualTo(new[] { DisputeOutcome.NoThirdOpinion }));
        Assert.That(end.End, Is.EqualTo(new JobEnd.LeaseResult(0, Verified: false, UnresolvedReason.NoThirdOpinion)));
        Assert.That(h.Time.PendingTimers, Is.Zero);
    }
}
