using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Cores;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Verification;

namespace Potluck.Scheduler.Requesting;

public sealed partial class ComputeClient
{
    /// <summary>
    /// One submission on the shared shell: its <see cref="JobCore{TLease}"/> in a <see cref="CoreShell{TStep}"/>, this client's
    /// effects for its steps (choose, lease, re-run, settle), and the job's answer. A sampled run leases one provider at a
    /// time (the loop awaits the lease); replicas, a tie-breaker, a second provider's check and a dispute's third opinion
    /// are leased in slots, in the background, each lease's end coming back as its slot's event. An effect that throws ends
    /// the job with that exception; cancelling the submission stops the shell (leases in flight are cancelled and their
    /// reservations released).
    /// </summary>
    private sealed class JobRun : ICoreEffects<JobStep<LeaseResultInfo>>
    {
        private static readonly CoreShellOptions ShellOptions = new() { Name = "requester job" };

        private readonly ComputeClient _client;
        private readonly Job _job;
        private readonly JobCore<LeaseResultInfo> _core;
        private readonly CoreShell<JobStep<LeaseResultInfo>> _shell;
        private readonly TaskCompletionSource<SubmissionResult> _answer = new(); // the caller resumes where the answer is given: no thread-pool hop
        private Task _changed = Task.CompletedTask;
        private Task? _watching;
        private CancellationToken _cancelToken;

        public JobRun(ComputeClient client, Job job)
        {
            _client = client;
            _job = job;
            _core = new JobCore<LeaseResultInfo>(job.Core) { CanRerunLocally = client.CanRerunLocally(job) };
            // Room for every slot's answer at once beside the usual events (a slot's answer refused would leave its core waiting).
            var options = job.Core.Replicas == 1 ? ShellOptions : ShellOptions with { Capacity = ShellOptions.Capacity + 2 * job.Core.Replicas };
            _shell = new CoreShell<JobStep<LeaseResultInfo>>(this, client._time, options, client._work);
        }

        public async Task<SubmissionResult> RunAsync(CancellationToken ct)
        {
            _cancelToken = ct;
            using var cancel = ct.Register(static state =>
            {
                var run = (JobRun)state!;
                run._answer.TrySetCanceled(run._cancelToken);
                run._shell.Stop();
            }, this);
            // Should the shell end without an answer (a transition threw, or a failure's own effects did): that error, never a hang.
            _ = _shell.Completion.ContinueWith(static (done, state) =>
            {
                var answer = (TaskCompletionSource<SubmissionResult>)state!;
                if (done.Exception is { } error)
                {
                    answer.TrySetException(error.InnerExceptions);
                }
                else
                {
                    answer.TrySetException(new InvalidOperationException("the job's shell stopped without an answer"));
                }
            }, _answer, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            try
            {
                _ = _shell.Post(_core.Start);
                return await _answer.Task;
            }
            finally
            {
                _shell.Stop();
                _client.LeaveWindowQueue(_job);
            }
        }

        public CoreWake WakeOf(JobStep<LeaseResultInfo> step) => step.Wake;

        public JobStep<LeaseResultInfo> OnTimer(DateTimeOffset now) => _core.OnTimer(now);

        public JobStep<LeaseResultInfo> OnEffectFailed(JobStep<LeaseResultInfo> step, Exception error, DateTimeOffset now) => _core.OnEffectFailed(error, now);

        public async ValueTask PerformAsync(JobStep<LeaseResultInfo> step, CancellationToken ct)
        {
            var client = _client;
            if (step.Release is { } leaseId)
            {
                client._ledger.Release(leaseId);
            }
            foreach (var held in step.ReleaseAll ?? [])
            {
                client._ledger.Release(held);
            }
            if (step.NoteFor is { } provider)
            {
                client.Note(provider, step.Note);
            }
            if (step.Attempt is { } attempt)
            {
                client.AttemptEnded?.Invoke(attempt);
            }
            if (step.SecondCheck is { } inGoodStanding)
            {
                client._instruments.SecondCheck(inGoodStanding);
            }
            if (step.Dispute is { } dispute)
            {
                client._instruments.Dispute(dispute);
            }
            if (step.Checked)
            {
                client._instruments.Verification(step.Verdict);
            }
            if (step.TieBreak is { } tieBreak)
            {
                client._instruments.TieBreak(tieBreak);
            }
            foreach (var settlement in step.Settlements ?? [])
            {
                if (settlement.Counted)
                {
                    client._instruments.Verification(settlement.Step.Verdict);
                }
                await client.SettleAsync(_job, settlement.Lease, settlement.Step, ct, settlement.Why);
            }
            if (step.Settle is { } settle)
            {
                await client.SettleAsync(_job, step.Lease!, settle, ct);
            }
            switch (step.Action)
            {
                case JobAction.Choose:
                    Choose(step.Slot, ct);
                    break;
                case JobAction.Wait:
                    Watch(ct);
                    break;
                case JobAction.Lease when step.Slot is { } slot:
                    // A replica, a tie-breaker, a checker or a third opinion: leased beside the loop; its end is the slot's event.
                    _ = _client._work.Track("requester slot lease", SlotLeaseAsync(slot, step.Ad!, ct));
                    break;
                case JobAction.Lease:
                    await LeaseAsync(step.Ad!, ct);
                    break;
                case JobAction.Rerun:
                    var rerun = await client.RerunLocallyAsync(_job, ct);
                    lock (_job.Gate)
                    {
                        // The answer when only this node's run can be trusted: a deterministic one (a job of replicas takes
                        // its re-run, whichever it is, as the answer when no replica matches it).
                        if (rerun.Summary.Deterministic || _job.Trusted is null)
                        {
                            _job.Trusted = rerun;
                        }
                    }
                    Queue(now => _core.OnRerun(rerun.Summary, now));
                    break;
                case JobAction.Finish:
                    _answer.TrySetResult(step.End switch
                    {
                        JobEnd.LeaseResult result => _job.Finish(step.Answer!, result.Verified) with { Unresolved = result.Unresolved },
                        JobEnd.OwnRun own => _job.Finish(_job.Trusted!, client._key.PeerId, own.Verified),
                        var end => throw new InvalidOperationException($"not an answer: {end}"),
                    });
                    break;
                case JobAction.Fail:
                    _answer.TrySetException(step.Failure ?? step.NoProvider?.Invoke()
                        ?? new SubmissionException(((JobEnd.GiveUp)step.End!).Reason, _job.Locked(() => _job.Core.History.ToList())));
                    break;
            }
            if (step.ChooseNext is { } next)
            {
                Choose(next, ct);
            }
        }

        /// <summary>Looks at the providers now for the sampled lease or a slot; the answer is the loop's next event.</summary>
        private void Choose(int? slot, CancellationToken ct)
        {
            var choice = _client.TryChoose(_job, slot: slot is not null);
            _changed = choice.Changed;
            if (slot is not { } s)
            {
                if (choice.Ad is { } ad)
                {
                    Queue(now => _core.OnChosen(ad, now));
                }
                else
                {
                    Queue(now => _core.OnNoMatch(choice.Busy, choice.OthersSeen, choice.RetryAt, choice.Explain, now));
                }
                return;
            }
            if (choice.Ad is { } slotAd)
            {
                Queue(now => _core.OnChosen(s, slotAd, now));
            }
            else
            {
                Watch(ct); // a slot that waits does so beside the others: a newer advertisement wakes every waiting slot
                Queue(now => _core.OnNoMatch(s, choice.Busy, choice.OthersSeen, choice.RetryAt, choice.Explain, now));
            }
        }

        /// <summary>A newer advertisement ends a wait early; the shell's timer ends it at the step's wake time.</summary>
        private void Watch(CancellationToken ct)
        {
            if (!ReferenceEquals(_watching, _changed))
            {
                _watching = _changed; // one watcher per advertisement awaited, however many waits come before it
                _ = WaitForAdvertisementAsync(_changed, ct);
            }
        }

        private async Task LeaseAsync(VerifiedAdvertisement ad, CancellationToken ct)
        {
            var attempt = await _client.LeaseAsync(_job, ad, alwaysCompared: false, ct);
            if (ct.IsCancellationRequested)
            {
                // The submission was cancelled (the shell stopped): what the lease reserved is released at once.
                _client._ledger.Release(attempt.LeaseId);
                ct.ThrowIfCancellationRequested();
            }
            Queue(Answer(attempt, slot: null));
        }

        /// <summary>
        /// A slot's lease (a replica, a tie-breaker, a checker, a third opinion), declared as always compared, run beside the loop; its end is posted as
        /// the slot's event. One that throws is the slot's <see cref="JobCore{TLease}.OnLeaseFailed"/>; one that ends after the
        /// job did (the shell stopped) is released here.
        /// </summary>
        private async Task SlotLeaseAsync(int slot, VerifiedAdvertisement ad, CancellationToken ct)
        {
            LeaseAttempt attempt;
            try
            {
                attempt = await _client.LeaseAsync(_job, ad, alwaysCompared: true, ct);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                Post(now => _core.OnLeaseFailed(slot, e, now));
                return;
            }
            if (ct.IsCancellationRequested || !Post(Answer(attempt, slot)))
            {
                _client._ledger.Release(attempt.LeaseId);
            }
        }

        /// <summary>The core's event for how a lease ended: without a result, or with one to inspect (and, sampled, its audit draw).</summary>
        private Func<DateTimeOffset, JobStep<LeaseResultInfo>> Answer(LeaseAttempt attempt, int? slot)
        {
            if (attempt.Inspection is not { } inspection)
            {
                var outcome = attempt.Outcome;
                return slot is { } s
                    ? now => _core.OnLeaseEnded(s, attempt.Provider, attempt.AdSequence, attempt.LeaseId, outcome.Kind, outcome.RejectReason, outcome.Detail, now, attempt.HeldOthers)
                    : now => _core.OnLeaseEnded(attempt.Provider, attempt.AdSequence, attempt.LeaseId, outcome.Kind, outcome.RejectReason, outcome.Detail, now, attempt.HeldOthers);
            }
            var result = attempt.Result;
            var claimed = result is null ? null : RunSummary.Of(result.Attestation.Attestation);
            if (slot is { } t)
            {
                var standing = _client._consecutiveVerified(attempt.Provider);
                return now => _core.OnResult(t, result!, attempt.Provider, attempt.LeaseId, inspection, claimed, standing, now);
            }
            // Fixed only now that the signed attestation exists, from the secret committed to in the terms (revealed with the
            // receipt, so the provider can audit that the declared rate was followed).
            var sampled = result is not null && LeaseAudit.Selected(result.AuditSecret, result.Attestation.Hash, result.AuditRatePpm);
            var canRerun = _client.CanRerunLocally(_job);
            return now => _core.OnResult(result!, attempt.Provider, attempt.LeaseId, inspection, claimed, sampled, canRerun, now);
        }

        /// <summary>
        /// Raises <see cref="JobCore{TLease}.OnProvidersChanged"/> on the next advertisement, back on the waiting effect's own
        /// context (a simulated node's event loop); ends quietly when the shell stops.
        /// </summary>
        private async Task WaitForAdvertisementAsync(Task changed, CancellationToken ct)
        {
            try
            {
                await LoopSafeWait.WaitAsync(changed, ct);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            Post(_core.OnProvidersChanged);
        }

        /// <summary>From outside the loop: queues the event and runs the loop; false when the shell takes no more events.</summary>
        private bool Post(Func<DateTimeOffset, JobStep<LeaseResultInfo>> transition)
        {
            if (_shell.TryEnqueue(transition) != CorePost.Accepted)
            {
                return false;
            }
            _ = _shell.Pump();
            return true;
        }

        /// <summary>From an effect: the event is the loop's next (the loop is running it).</summary>
        private void Queue(Func<DateTimeOffset, JobStep<LeaseResultInfo>> transition) => _shell.TryEnqueue(transition);
    }
}
