using Potluck.Protocol.Identity;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;

namespace Potluck.Scheduler.Providing;

/// <summary>The credit limit a provider sets a requester: a stranger's allowance, plus what its verified history earns it.</summary>
public sealed partial class ProviderService
{
    /// <summary>
    /// The extra credit a requester's own verified chain earns it here (<see cref="HistoryCredit"/>: a bounded share of its
    /// net verified contribution, cached with the history verdict; 0 while unchecked, for a forker, or with none). Quick.
    /// </summary>
    public Func<PeerId, long>? VerifiedCredit { get; set; }

    /// <summary>Requests served beyond a stranger's credit limit on the strength of a verified history.</summary>
    public long ServedOnHistoryCredit => Interlocked.Read(ref _servedOnHistoryCredit);

    private long _servedOnHistoryCredit;

    /// <summary>
    /// The most <paramref name="requester"/> may owe here: <see cref="ProviderOptions.CreditLimitPerRequester"/>, and only
    /// when it owes more than that, the history is asked for more (so a requester within a stranger's allowance costs no
    /// check). Never more for a requester with audit violations (refused before this is asked) or a fork proof.
    /// </summary>
    private long CreditLimitFor(PeerId requester, RequesterRecord record)
    {
        var limit = _options.CreditLimitPerRequester;
        if (record.Debt <= limit || record.Violations > 0 || RefuseRequester?.Invoke(requester) == true || VerifiedCredit is not { } credit)
        {
            return limit;
        }
        var raised = HistoryCredit.Limit(limit, credit(requester));
        if (raised > limit && record.Debt <= raised)
        {
            Interlocked.Increment(ref _servedOnHistoryCredit);
            _instruments.HistoryCredit();
        }
        return raised;
    }
}
