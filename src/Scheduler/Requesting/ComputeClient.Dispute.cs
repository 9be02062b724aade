using Potluck.Scheduler.Execution;

namespace Potluck.Scheduler.Requesting;

public sealed partial class ComputeClient
{
    /// <summary>
    /// A checker in good standing contradicted a sampled result (no sandbox here, <see cref="SecondCheck.Disputed"/>): one
    /// remote word convicts nobody, since a provider that earned its standing may turn liar. A third provider, in good
    /// standing here and neither of the two, runs the task with a declared re-run rate of one; the job
    /// (<see cref="RequesterJob.ResolveDispute"/>) convicts the side it contradicts (refused, unpaid, what it holds here
    /// forfeited, a fraud proof published, a lying checker's standing lost with it) and pays the side it confirms, verified.
    /// With no such provider, or a third opinion that agrees with neither, nobody is convicted or paid as verified, and the
    /// result says why (<see cref="SubmissionResult.Unresolved"/>, counter <c>potluck.disputes</c>).
    /// </summary>
    private async Task<SubmissionResult> ResolveDisputeAsync(Job job, LeaseResultInfo lease, RunSummary claimed, LeaseResultInfo checker, CancellationToken ct)
    {
        LeaseResultInfo? third = null;
        lock (job.Gate)
        {
            job.Core.BeginThirdOpinion();
        }
        try
        {
            for (var attempt = 0; attempt < _options.MaxAttempts && third is null; attempt++)
            {
                third = await LeaseOnceAsync(job, ct, alwaysCompared: true);
            }
        }
        catch (SubmissionException)
        {
            // No provider in good standing left besides the two: the dispute stays unresolved.
        }
        finally
        {
            lock (job.Gate)
            {
                job.Core.EndThirdOpinion();
            }
        }
        var decision = job.Locked(() => job.Core.ResolveDispute(claimed, RunSummary.Of(checker.Attestation.Attestation),
            third is null ? null : RunSummary.Of(third.Attestation.Attestation), third is null ? 0 : _consecutiveVerified(third.Provider)));
        _instruments.Dispute(decision.Outcome);
        _instruments.Verification(decision.Accused.Verdict);
        if (decision.Checker.Convict)
        {
            await ConvictAsync(job, checker, ct, "a checker whose result a third provider in good standing contradicted");
        }
        else
        {
            await SettleAsync(job, checker, decision.Checker, ct);
        }
        if (third is not null && decision.Third is { } thirdStep)
        {
            await SettleAsync(job, third, thirdStep, ct);
        }
        await SettleAsync(job, lease, decision.Accused, ct);
        var end = (JobEnd.LeaseResult)decision.End;
        var answer = end.Index switch
        {
            1 => checker,
            2 => third!,
            _ => lease,
        };
        return job.Finish(answer, end.Verified) with { Unresolved = end.Unresolved };
    }
}
