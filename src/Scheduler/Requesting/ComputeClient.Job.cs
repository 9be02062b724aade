using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Cores;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Verification;

namespace Potluck.Scheduler.Requesting;

public sealed partial class ComputeClient
{
    /// <summary>
    /// One sampled submission on the shared shell: its <see cref="JobCore{TLease}"/> in a <see cref="CoreShell{TStep}"/>, this
    /// client's effects for its steps (choose, lease, re-run, a second provider's check, settle, resolve a dispute), and the
    /// job's answer. An effect that throws ends the job with that exception; cancelling the submission stops the shell.
    /// </summary>
    private sealed class SampledRun : ICoreEffects<JobStep<LeaseResultInfo>>
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

        public SampledRun(ComputeClient client, Job job)
        {
            _client = client;
            _job = job;
            _core = new JobCore<LeaseResultInfo>(job.Core);
            _shell = new CoreShell<JobStep<LeaseResultInfo>>(this, client._time, ShellOptions, client._work);
        }

        public async Task<SubmissionResult> RunAsync(CancellationToken ct)
        {
            _cancelToken = ct;
            using var cancel = ct.Register(static state =>
            {
                var run = (SampledRun)state!;
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
            if (step.NoteFor is { } provider)
            {
                client.Note(provider, step.Note);
            }
            if (step.Attempt is { } attempt)
            {
                client.AttemptEnded?.Invoke(attempt);
            }
            if (step.Checked)
            {
                client._instruments.Verification(step.Verdict);
            }
            if (step.Settle is { } settle)
            {
                await client.SettleAsync(_job, step.Lease!, settle, ct);
            }
            switch (step.Action)
            {
                case JobAction.Choose:
                    Choose();
                    break;
                case JobAction.Wait:
                    // A newer advertisement ends the wait early; the shell's timer ends it at the step's wake time.
                    if (!ReferenceEquals(_watching, _changed))
                    {
                        _watching = _changed; // one watcher per advertisement awaited, however many waits come before it
                        _ = WaitForAdvertisementAsync(_changed, ct);
                    }
                    break;
                case JobAction.Lease:
                    await LeaseAsync(step.Ad!, ct);
                    break;
                case JobAction.Rerun:
                    var rerun = await client.RerunLocallyAsync(_job, ct);
                    lock (_job.Gate)
                    {
                        if (rerun.Summary.Deterministic)
                        {
                            _job.Trusted = rerun;
                        }
                    }
                    Queue(now => _core.OnRerun(rerun.Summary, now));
                    break;
                case JobAction.CheckOnSecond:
                    var (check, checker) = await client.CheckOnSecondAsync(_job, RunSummary.Of(step.Lease!.Attestation.Attestation), ct);
                    Queue(now => _core.OnSecondChecked(check, checker, now));
                    break;
                case JobAction.Dispute:
                    var lease = step.Lease!;
                    _answer.TrySetResult(await client.ResolveDisputeAsync(_job, lease, RunSummary.Of(lease.Attestation.Attestation), step.Checker!, ct)); // ComputeClient.Dispute.cs
                    break;
                case JobAction.Finish:
                    _answer.TrySetResult(step.End switch
                    {
                        JobEnd.LeaseResult result => _job.Finish(step.Answer!, result.Verified),
                        JobEnd.OwnRun own => _job.Finish(_job.Trusted!, client._key.PeerId, own.Verified),
                        var end => throw new InvalidOperationException($"not an answer: {end}"),
                    });
                    break;
                case JobAction.Fail:
                    _answer.TrySetException(step.Failure ?? step.NoProvider?.Invoke()
                        ?? new SubmissionException(((JobEnd.GiveUp)step.End!).Reason, _job.Locked(() => _job.Core.History.ToList())));
                    break;
            }
        }

        /// <summary>Looks at the providers now; the answer is the loop's next event.</summary>
        private void Choose()
        {
            var choice = _client.TryChoose(_job);
            _changed = choice.Changed;
            if (choice.Ad is { } ad)
            {
                Queue(now => _core.OnChosen(ad, now));
            }
            else
            {
                Queue(now => _core.OnNoMatch(choice.Busy, choice.OthersSeen, choice.RetryAt, choice.Explain, now));
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
            if (attempt.Inspection is not { } inspection)
            {
                var outcome = attempt.Outcome;
                Queue(now => _core.OnLeaseEnded(attempt.Provider, attempt.AdSequence, attempt.LeaseId, outcome.Kind, outcome.RejectReason, outcome.Detail, now));
                return;
            }
            var result = attempt.Result;
            // Fixed only now that the signed attestation exists, from the secret committed to in the terms (revealed with the
            // receipt, so the provider can audit that the declared rate was followed).
            var sampled = result is not null && LeaseAudit.Selected(result.AuditSecret, result.Attestation.Hash, result.AuditRatePpm);
            var claimed = result is null ? null : RunSummary.Of(result.Attestation.Attestation);
            var canRerun = _client.CanRerunLocally(_job);
            Queue(now => _core.OnResult(result!, attempt.Provider, attempt.LeaseId, inspection, claimed, sampled, canRerun, now));
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
            if (_shell.TryEnqueue(_core.OnProvidersChanged) == CorePost.Accepted)
            {
                _ = _shell.Pump();
            }
        }

        /// <summary>From an effect: the event is the loop's next (the loop is running it).</summary>
        private void Queue(Func<DateTimeOffset, JobStep<LeaseResultInfo>> transition) => _shell.TryEnqueue(transition);
    }
}
