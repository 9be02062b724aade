namespace Potluck.Scheduler.Requesting;

public sealed partial class ComputeClient
{
    /// <summary>
    /// Replicas that disagree, on a node that cannot re-run the task itself: one more provider, outside the set (every
    /// provider tried for the job is excluded), runs it with a declared re-run rate of one, and the result joins the vote.
    /// The tie-breaker is chosen among providers in good standing here (past a stranger's verified results) when one fits
    /// (<see cref="RequesterJob.Filter"/>): a Sybil swarm can supply any number of fresh identities, not a record of
    /// verified results with this node. Only when none fits does a stranger break the tie.
    /// A strict majority is then paid; when the tie-breaker is in good standing here and sides with it, the outvoted
    /// replicas are convicted like a failed re-run: refused, unpaid, what they hold here forfeited, and a fraud proof published that
    /// every node checks by re-running. A majority of strangers only is paid, its result reported as unverified, and the
    /// outvoted replica only not paid (identities that agree may be one adversary: a vote among strangers is no proof).
    /// No provider left to ask: unresolved, as before.
    /// </summary>
    /// <returns>The results with the extra one, and whether a tie-break lease ran.</returns>
    private async Task<(List<LeaseResultInfo> Results, bool TieBroken)> TieBreakAsync(Job job, List<LeaseResultInfo> results, CancellationToken ct)
    {
        LeaseResultInfo? extra = null;
        lock (job.Gate)
        {
            job.Core.BeginTieBreak();
        }
        try
        {
            for (var attempt = 0; attempt < _options.MaxAttempts && extra is null; attempt++)
            {
                extra = await LeaseOnceAsync(job, ct, alwaysCompared: true);
            }
        }
        catch (SubmissionException)
        {
            // No provider left outside the set: the disagreement stays unresolved.
        }
        finally
        {
            lock (job.Gate)
            {
                job.Core.EndTieBreak();
            }
        }
        if (extra is null)
        {
            _instruments.TieBreak("unresolved");
            return (results, false);
        }
        List<LeaseResultInfo> all = [.. results, extra];
        var groups = RequesterJob.Group(Views(all));
        _instruments.TieBreak(groups[0].Count * 2 > all.Count ? "majority" : "unresolved");
        return (all, true);
    }
}
