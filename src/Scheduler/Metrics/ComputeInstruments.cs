using System.Diagnostics.Metrics;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Providing;
using Potluck.Scheduler.Sandbox;
using Potluck.Scheduler.Verification;

namespace Potluck.Scheduler.Metrics;

/// <summary>
/// The compute layer's metrics for one node (DESIGN §7), on one <see cref="Meter"/> named <see cref="MeterName"/> made
/// by the node's own <see cref="IMeterFactory"/>. Every tag value is one of a fixed set (roles, outcomes, verdicts).
/// <list type="table">
/// <item><c>potluck.leases.active</c> ({lease}, up-down; role: provider or requester) and <c>potluck.leases.ended</c>
/// ({lease}; role, outcome: completed, rejected, expired, cancelled, failed), and <c>potluck.leases.refused</c> ({lease};
/// reason: unpaid, over_limit): requests a provider's per-requester limits turned away</item>
/// <item><c>potluck.tasks.run</c> ({task}; outcome: the sandbox's), <c>potluck.tasks.fuel</c> ({fuel}: fuel consumed)
/// and <c>potluck.sandbox.duration</c> (s; outcome): every run in this node's sandbox (leased tasks, verification re-runs
/// and fraud-proof checks alike)</item>
/// <item><c>potluck.credits.earned</c> and <c>potluck.credits.spent</c> ({microcredit}): receipts newly recorded as earned,
/// and newly settled as spent</item>
/// <item><c>potluck.receipts</c> ({receipt}; path: lease_stream or receipt_stream; outcome: recorded, already_recorded,
/// refused): receipts a provider answered</item>
/// <item><c>potluck.verifications</c> ({check}; verdict: match, mismatch, inconclusive, unchecked): how each result a
/// requester accepted or refused was checked</item>
/// <item><c>potluck.fraud.proofs</c> ({proof}; outcome: published, confirmed, refuted, skipped)</item>
/// <item><c>potluck.credits.forfeited</c> ({microcredit}): payments to a provider still held back when a fraud proof
/// against it was upheld here (<see cref="Credits.CreditsOptions.Holdback"/>)</item>
/// <item><c>potluck.tiebreaks</c> ({task}; outcome: majority, unresolved): disagreeing replicas settled by one more run</item>
/// <item><c>potluck.secondchecks</c> ({task}; checker: good_standing, stranger): sampled results checked by a second provider (no sandbox here)</item>
/// <item><c>potluck.disputes</c> ({task}; outcome: accused_wrong, checker_wrong, no_third_opinion, no_agreement): a checker in
/// good standing contradicted a sampled result, and how a third opinion resolved it (the last two: unresolved)</item>
/// <item><c>potluck.provider.disk.evictions</c> ({file}) and <c>potluck.provider.disk.evicted</c> (By): files of modules
/// and compiled modules deleted to keep within <c>compute:provider:diskBytes</c>; a request refused for want of disk
/// counts in <c>potluck.leases.refused</c> with reason disk_full</item>
/// <item><c>potluck.chain.recovery</c> ({event}; outcome: block_recovered, answer_rejected, query_served, query_refused):
/// recovering this node's chain after a lost ledger, and serving counterparties that recover theirs</item>
/// <item><c>potluck.ads.samples</c> ({event}; outcome: asked, unsupported, garbage, answered, accepted, refused, skipped): book
/// samples for newcomers, as asker and answerer (<see cref="AdSamples"/>)</item>
/// </list>
/// </summary>
public sealed class ComputeInstruments
{
    public const string MeterName = "Potluck.Compute";

    private readonly UpDownCounter<long> _leasesActive;
    private readonly Counter<long> _leasesEnded;
    private readonly Counter<long> _leasesRefused;
    private readonly Counter<long> _tasksRun;
    private readonly Counter<long> _fuel;
    private readonly Histogram<double> _sandboxDuration;
    private readonly Counter<long> _creditsEarned;
    private readonly Counter<long> _creditsSpent;
    private readonly Counter<long> _receipts;
    private readonly Counter<long> _verifications;
    private readonly Counter<long> _fraudProofs;
    private readonly Counter<long> _creditsForfeited;
    private readonly Counter<long> _tiebreaks;
    private readonly Counter<long> _disputes;
    private readonly Counter<long> _secondChecks;
    private readonly Counter<long> _chainRecovery;
    private readonly Counter<long> _diskEvictions;
    private readonly Counter<long> _diskEvicted;
    private readonly Counter<long> _debitNotes;
    private readonly Counter<long> _historyCredit;
    private readonly Counter<long> _chainGossip;
    private readonly Counter<long> _adSamples;
    private readonly Counter<long> _meteringReruns;

    /// <summary>
    /// The instruments of one node, on a meter from <paramref name="meters"/> (the node's own factory); with
    /// <paramref name="sharedCounters"/> (a simulation stand-in) on that factory's meter instead, the same instruments
    /// for every node given it (as <c>ProtocolInstruments</c>: a listener sees their sum over the nodes).
    /// </summary>
    public ComputeInstruments(IMeterFactory meters, IMeterFactory? sharedCounters = null)
        : this((meters ?? throw new ArgumentNullException(nameof(meters))).Create(new MeterOptions(MeterName)),
            sharedCounters?.Create(new MeterOptions(MeterName)))
    {
    }

    private ComputeInstruments(Meter meter, Meter? counters = null)
    {
        Meter = meter;
        CountersMeter = counters ?? meter;
        _leasesActive = CountersMeter.CreateUpDownCounter<long>("potluck.leases.active", "{lease}", "Leases negotiating or running now");
        _leasesEnded = CountersMeter.CreateCounter<long>("potluck.leases.ended", "{lease}", "Leases that ended, by role and outcome");
        _leasesRefused = CountersMeter.CreateCounter<long>("potluck.leases.refused", "{lease}", "Lease requests a provider refused by its per-requester limits, by reason");
        _tasksRun = CountersMeter.CreateCounter<long>("potluck.tasks.run", "{task}", "Runs in this node's sandbox, by outcome");
        _fuel = CountersMeter.CreateCounter<long>("potluck.tasks.fuel", "{fuel}", "Fuel consumed by runs in this node's sandbox");
        _sandboxDuration = CountersMeter.CreateHistogram<double>("potluck.sandbox.duration", "s", "Time of one run in the sandbox, queueing included",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] });
        _creditsEarned = CountersMeter.CreateCounter<long>("potluck.credits.earned", "{microcredit}", "Credits newly recorded as earned");
        _creditsSpent = CountersMeter.CreateCounter<long>("potluck.credits.spent", "{microcredit}", "Credits newly settled as spent");
        _receipts = CountersMeter.CreateCounter<long>("potluck.receipts", "{receipt}", "Receipts a provider answered, by path and outcome");
        _verifications = CountersMeter.CreateCounter<long>("potluck.verifications", "{check}", "Results a requester took, by how the check ended");
        _fraudProofs = CountersMeter.CreateCounter<long>("potluck.fraud.proofs", "{proof}", "Fraud proofs published or received, by outcome");
        _creditsForfeited = CountersMeter.CreateCounter<long>("potluck.credits.forfeited", "{microcredit}", "Held-back payments forfeited by upheld fraud proofs");
        _tiebreaks = CountersMeter.CreateCounter<long>("potluck.tiebreaks", "{task}", "Disagreeing replicas settled by one more run, by outcome");
        _secondChecks = CountersMeter.CreateCounter<long>("potluck.secondchecks", "{task}", "Sampled results checked by a second provider, by the checker's standing");
        _disputes = CountersMeter.CreateCounter<long>("potluck.disputes", "{task}", "Sampled results a checker in good standing contradicted, by how the third opinion resolved it");
        _diskEvictions = CountersMeter.CreateCounter<long>("potluck.provider.disk.evictions", "{file}", "Files of modules and compiled modules deleted to keep within the disk limit");
        _diskEvicted = CountersMeter.CreateCounter<long>("potluck.provider.disk.evicted", "By", "Bytes deleted to keep within the disk limit");
        _debitNotes = CountersMeter.CreateCounter<long>("potluck.debit_notes", "{note}", "Debit notes of long leases, by role and outcome (sent, paid, unpaid; paid, refused)");
        _chainRecovery = CountersMeter.CreateCounter<long>("potluck.chain.recovery", "{event}", "Chain recovery after a lost ledger: blocks recovered, answers rejected, queries served and refused");
        _historyCredit = CountersMeter.CreateCounter<long>("potluck.leases.history_credit", "{lease}", "Lease requests a provider admitted beyond a stranger's credit limit on the requester's verified history");
        _chainGossip = CountersMeter.CreateCounter<long>("potluck.chain.gossip", "{pair}", "Completed payments gossiped in batches, by outcome (published; over_budget: a received batch ignored)");
        _adSamples = CountersMeter.CreateCounter<long>("potluck.ads.samples", "{event}", "Book samples of /potluck/ads/sample/1.0.0, by outcome (asked, unsupported, garbage, answered; ads accepted, refused, skipped)");
        _meteringReruns = CountersMeter.CreateCounter<long>("potluck.tasks.metering_reruns", "{run}", "Extra sandbox runs of tasks with debit notes, by reason (a fence reached unarmed; a trap after a fence)");
    }

    /// <summary>The node's own meter: every instrument unless the counters are shared (then none: this layer has no observable ones).</summary>
    public Meter Meter { get; }

    /// <summary>The meter every instrument is on: <see cref="Meter"/> unless the counters are shared.</summary>
    public Meter CountersMeter { get; }

    /// <summary>Instruments nobody registered (a part built by hand, outside the node builder): on their own meter.</summary>
    internal static ComputeInstruments Detached() => new(new Meter(MeterName));

    public void LeaseStarted(LeaseRole role) => _leasesActive.Add(1, RoleTag(role));

    public void LeaseEnded(LeaseRole role, LeaseOutcomeKind outcome)
    {
        var tag = RoleTag(role);
        _leasesActive.Add(-1, tag);
        _leasesEnded.Add(1, tag, new("outcome", OutcomeTag(outcome)));
    }

    /// <summary>Files deleted to keep within the disk limit.</summary>
    public void DiskEvicted(int files, long bytes)
    {
        _diskEvictions.Add(files);
        _diskEvicted.Add(bytes);
    }

    /// <param name="reason"><c>unpaid</c> (owes over the credit limit), <c>over_limit</c> (holds the most leases allowed) or
    /// <c>disk_full</c> (its module does not fit <c>compute:provider:diskBytes</c>).</param>
    public void LeaseRefused(string reason) => _leasesRefused.Add(1, new KeyValuePair<string, object?>("reason", reason));

    public void TaskRun(SandboxOutcome outcome, ulong fuel, TimeSpan duration)
    {
        var tag = new KeyValuePair<string, object?>("outcome", OutcomeTag(outcome));
        _tasksRun.Add(1, tag);
        _fuel.Add((long)Math.Min(fuel, long.MaxValue));
        _sandboxDuration.Record(duration.TotalSeconds, tag);
    }

    /// <param name="microCredits">A receipt's amount (micro-credits, as the ledger keeps them).</param>
    public void CreditsEarned(long microCredits) => _creditsEarned.Add(microCredits);

    /// <param name="microCredits">A receipt's amount (micro-credits, as the ledger keeps them).</param>
    public void CreditsSpent(long microCredits) => _creditsSpent.Add(microCredits);

    public void Receipt(bool onLeaseStream, ReceiptAckStatus outcome) =>
        _receipts.Add(1, new KeyValuePair<string, object?>("path", onLeaseStream ? "lease_stream" : "receipt_stream"),
            new("outcome", outcome switch
            {
                ReceiptAckStatus.Recorded => "recorded",
                ReceiptAckStatus.AlreadyRecorded => "already_recorded",
                _ => "refused",
            }));

    /// <param name="verdict">Null when the result was taken unchecked.</param>
    public void Verification(CheckVerdict? verdict) => _verifications.Add(1, new KeyValuePair<string, object?>("verdict", verdict switch
    {
        CheckVerdict.Match => "match",
        CheckVerdict.Mismatch => "mismatch",
        CheckVerdict.Inconclusive => "inconclusive",
        _ => "unchecked",
    }));

    /// <param name="outcome">One of <c>published</c>, <c>confirmed</c>, <c>refuted</c>, <c>skipped</c>.</param>
    public void FraudProof(string outcome) => _fraudProofs.Add(1, new KeyValuePair<string, object?>("outcome", outcome));

    /// <param name="microCredits">What one upheld proof forfeited.</param>
    public void CreditsForfeited(long microCredits) => _creditsForfeited.Add(microCredits);

    /// <param name="outcome"><c>majority</c> (the extra run sided with one group) or <c>unresolved</c>.</param>
    public void TieBreak(string outcome) => _tiebreaks.Add(1, new KeyValuePair<string, object?>("outcome", outcome));

    /// <summary>A second provider checked a sampled result; only one in good standing here can verify or convict.</summary>
    public void SecondCheck(bool checkerInGoodStanding) =>
        _secondChecks.Add(1, new KeyValuePair<string, object?>("checker", checkerInGoodStanding ? "good_standing" : "stranger"));

    /// <summary>A checker in good standing contradicted a sampled result; how the dispute ended.</summary>
    public void Dispute(Requesting.DisputeOutcome outcome) => _disputes.Add(1, new KeyValuePair<string, object?>("outcome", outcome switch
    {
        Requesting.DisputeOutcome.AccusedWrong => "accused_wrong",
        Requesting.DisputeOutcome.CheckerWrong => "checker_wrong",
        Requesting.DisputeOutcome.NoThirdOpinion => "no_third_opinion",
        _ => "no_agreement",
    }));

    /// <summary>Outcome: block_recovered, answer_rejected, query_served or query_refused.</summary>
    public void DebitNote(LeaseRole role, string outcome) =>
        _debitNotes.Add(1, RoleTag(role), new KeyValuePair<string, object?>("outcome", outcome));

    public void ChainRecovery(string outcome, long count = 1) => _chainRecovery.Add(count, new KeyValuePair<string, object?>("outcome", outcome));

    /// <summary>A lease request admitted beyond a stranger's credit limit on credit from the requester's verified history.</summary>
    public void HistoryCredit() => _historyCredit.Add(1);

    /// <summary><paramref name="pairs"/> completed payments published in one batch.</summary>
    public void ChainBatchPublished(long pairs) => _chainGossip.Add(pairs, new KeyValuePair<string, object?>("outcome", "published"));

    /// <summary>A received batch of <paramref name="pairs"/> ignored: its sender's receipts budget could not pay for every pair.</summary>
    public void ChainBatchOverBudget(long pairs) => _chainGossip.Add(pairs, new KeyValuePair<string, object?>("outcome", "over_budget"));

    /// <summary>
    /// Book samples (<c>/potluck/ads/sample/1.0.0</c>): as asker, a peer asked, one that does not speak it (unsupported), an
    /// answer refused whole (garbage), and the advertisements of answers accepted, refused one by one or skipped as held;
    /// as answerer, a sample answered.
    /// </summary>
    public void AdSamples(string outcome, long count = 1)
    {
        if (count > 0)
        {
            _adSamples.Add(count, new KeyValuePair<string, object?>("outcome", outcome));
        }
    }

    /// <summary>A run with debit notes ran <paramref name="runs"/> times (<see cref="SandboxResult.MeteringRuns"/>); counts the extra ones.</summary>
    public void MeteringRuns(int runs, bool unarmed)
    {
        if (runs > 1)
        {
            _meteringReruns.Add(runs - 1, new KeyValuePair<string, object?>("reason", unarmed ? "unarmed" : "trap"));
        }
    }

    private static KeyValuePair<string, object?> RoleTag(LeaseRole role) => new("role", role == LeaseRole.Provider ? "provider" : "requester");

    private static string OutcomeTag(LeaseOutcomeKind outcome) => outcome switch
    {
        LeaseOutcomeKind.Completed => "completed",
        LeaseOutcomeKind.Rejected => "rejected",
        LeaseOutcomeKind.Expired => "expired",
        LeaseOutcomeKind.Cancelled => "cancelled",
        LeaseOutcomeKind.Unreachable => "unreachable",
        _ => "failed",
    };

    private static string OutcomeTag(SandboxOutcome outcome) => outcome switch
    {
        SandboxOutcome.Success => "success",
        SandboxOutcome.ExitedNonZero => "exited_non_zero",
        SandboxOutcome.FuelExhausted => "fuel_exhausted",
        SandboxOutcome.MemoryLimitExceeded => "memory_limit_exceeded",
        SandboxOutcome.OutputLimitExceeded => "output_limit_exceeded",
        SandboxOutcome.Trapped => "trapped",
        SandboxOutcome.WallClockTimeout => "wall_clock_timeout",
        _ => "invalid_module",
    };
}

/// <summary>Which side of a lease a node is on.</summary>
public enum LeaseRole
{
    Provider,
    Requester,
}
