namespace Potluck.Scheduler.Requesting;

public sealed partial class ComputeClient
{
    /// <summary>
    /// Replicas that disagree, on a node that cannot re-run the task itself: one more provider, outside the set (every
    /// provider tried for the job is excluded), runs it with a declared re-run rate of one, and the result joins the vote.
    /// A strict majority is then paid; when it includes a provider in good standing here (past its stranger results), the
    /// outvoted replicas are convicted like a failed re-run: refused, unpaid, what they hold here forfeited, and a fraud
    /// proof published that every node checks by re-running. A majority of strangers only is paid, its result reported
    /// as unverified, and the outvoted replica only not paid (identities that agree may be one adversary: a vote among
    /// strangers is no proof). No provider left to ask: unresolved, as before.
    /// </summary>
    /// <returns>The results with the extra one, grouped again (largest first), and whether a tie-break lease ran.</returns>
    private async Task<(List<LeaseResultInfo> Results, List<IGrouping<string, LeaseResultInfo>> Groups, bool TieBroken)> TieBreakAsync(
        Job job, List<LeaseResultInfo> results, List<IGrouping<string, LeaseResultInfo>> groups, CancellationToken ct)
    {
        LeaseResultInfo? extra = null;
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
        if (extra is null)
        {
            _instruments.TieBreak("unresolved");
            return (results, groups, false);
        }
        List<LeaseResultInfo> all = [.. results, extra];
        var regrouped = all.GroupBy(r => Convert.ToHexString(Fingerprint(Execution.RunSummary.Of(r.Attestation.Attestation))))
            .OrderByDescending(g => g.Count()).ToList();
        _instruments.TieBreak(regrouped[0].Count() * 2 > all.Count ? "majority" : "unresolved");
        return (all, regrouped, true);
    }
}
