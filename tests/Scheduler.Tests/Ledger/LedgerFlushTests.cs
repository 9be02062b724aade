using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Ledger;

/// <summary>
/// The group commit's flush runs after its COMMIT and outside the writer's lock (CreditLedger.Flush.cs): no caller returns
/// before the flush covering its commit, the next writers commit while a flush is under way, nothing read is answered
/// before the commits it could have seen are flushed, and a failed flush fails everyone it covered. The flush is held,
/// counted or failed through <see cref="CreditLedger.FlushHook"/>; every wait here is on a state, with a guard only
/// against a deadlock turning into a hung run.
/// </summary>
public class LedgerFlushTests
{
    private static readonly TimeSpan Guard = TimeSpan.FromSeconds(60);

    private TempDir _dir = null!;

    [SetUp]
    public void SetUp() => _dir = new TempDir();

    [TearDown]
    public void TearDown() => _dir.Dispose();

    [Test]
    public void DurableWrite_ReturnsOnlyAfterTheFlushOfItsCommit()
    {
        using var provider = OpenWarm(Provider);
        using var flush = new HeldFlush(provider);

        var write = Task.Run(() => provider.Record(MakeReceipt(Lease(1), Requester, Provider), LedgerEntryKind.Earned));

        Assert.That(Task.WaitAny([write, flush.Entered.WaitAsync(Guard)], Guard), Is.EqualTo(1), "the write returned before its flush began");
        Assert.That(write.IsCompleted, Is.False, "the write returned while its flush was held");
        Assert.That((provider.GroupCommits, provider.FlushedGroupCommits), Is.EqualTo((2L, 1L)), "committed, not yet flushed");
        flush.Release();
        Assert.That(write.Result, Is.EqualTo(LedgerResult.Recorded));
        Assert.That((provider.FlushedGroupCommits, flush.Flushes), Is.EqualTo((2L, 1)));
        Assert.That(provider.Pragma("synchronous"), Is.EqualTo(1L), "1 is NORMAL: the commit itself did not flush");
    }

    [Test]
    public void SecondWriter_CommitsWhileTheFirstFlushIsHeld_AndIsFlushedByALaterFlush()
    {
        using var provider = OpenWarm(Provider);
        using var flush = new HeldFlush(provider);
        var first = Task.Run(() => provider.Record(MakeReceipt(Lease(1), Requester, Provider), LedgerEntryKind.Earned));
        Assert.That(flush.Entered.Wait(Guard), Is.True);

        var second = Task.Run(() => provider.Record(MakeReceipt(Lease(2), Requester, Provider), LedgerEntryKind.Earned));

        // The writer's lock is free while the first flush is held: the second write commits (were the flush still under
        // the lock, this would wait until the guard).
        Assert.That(SpinWait.SpinUntil(() => provider.GroupCommits == 3, Guard), Is.True, "the second commit waited for the first flush");
        Assert.That((first.IsCompleted, second.IsCompleted), Is.EqualTo((false, false)), "neither returned before a flush covered it");
        flush.Release();
        Assert.That((first.Result, second.Result), Is.EqualTo((LedgerResult.Recorded, LedgerResult.Recorded)));
        // The first flush covered only what had committed when it began: the second commit needed one of its own.
        Assert.That((provider.FlushedGroupCommits, flush.Flushes), Is.EqualTo((3L, 2)));
        Assert.That(provider.Balance(), Is.EqualTo(Options.InitialGrant + 3 * 2500));
        Assert.That(provider.Balance(), Is.EqualTo(provider.SumEntries()));
    }

    [Test]
    public void Reader_ThatSeesAnUnflushedSettle_AnswersOnlyAfterItsFlush()
    {
        using var requester = OpenWarm(Requester);
        var lease = Lease(1);
        Assert.That(requester.ReservePayment(lease, Provider.PeerId, 10_000), Is.EqualTo(LedgerResult.Reserved));
        using var flush = new HeldFlush(requester);
        var settle = Task.Run(() => requester.Settle(MakeReceipt(lease, Requester, Provider)));
        Assert.That(flush.Entered.Wait(Guard), Is.True);

        // The Settle is committed (visible to the reader's connection) and not yet on disk.
        var read = Task.Run(() => requester.GetReservation(lease)?.State);
        var waiting = Task.Run(() => SpinWait.SpinUntil(() => requester.WaitingForFlush == 2, Guard));

        Assert.That(Task.WaitAny([read, waiting], Guard), Is.EqualTo(1), "the read answered from a commit not yet flushed");
        Assert.That(read.IsCompleted, Is.False);
        flush.Release();
        Assert.That(read.Result, Is.EqualTo(PaymentState.Settled));
        Assert.That(settle.Result, Is.EqualTo(LedgerResult.Recorded));
        Assert.That(requester.PreparedReads(), Has.Some.Contains("FROM reservations r"), "the read ran on the reader's connection");
    }

    [Test]
    public void DuplicateReceipt_IsNotAnsweredAlreadyRecordedBeforeTheFirstIsFlushed()
    {
        using var provider = OpenWarm(Provider);
        var receipt = MakeReceipt(Lease(1), Requester, Provider);
        Assert.That(provider.RecordOwed(Lease(1), Requester.PeerId, receipt.Receipt.Amount), Is.EqualTo(LedgerResult.Owed));
        using var flush = new HeldFlush(provider);
        var first = Task.Run(() => provider.RecordEarned(receipt));
        Assert.That(flush.Entered.Wait(Guard), Is.True);

        var duplicate = Task.Run(() => provider.RecordEarned(receipt));
        var waiting = Task.Run(() => SpinWait.SpinUntil(() => provider.WaitingForFlush == 2, Guard));

        Assert.That(Task.WaitAny([duplicate, waiting], Guard), Is.EqualTo(1), "AlreadyRecorded was answered from a commit not yet flushed");
        Assert.That(duplicate.IsCompleted, Is.False);
        flush.Release();
        Assert.That((first.Result, duplicate.Result), Is.EqualTo((LedgerResult.Recorded, LedgerResult.AlreadyRecorded)));
        Assert.That(provider.Unpaid(Requester.PeerId), Is.Zero);
    }

    [Test]
    public void FlushFailure_FailsEveryCallerItCovered_RefusesLaterCalls_AndTheReopenedLedgerCountsEachReceiptOnce()
    {
        var dir = _dir.Sub("provider");
        var receipts = Enumerable.Range(1, 3).Select(i => MakeReceipt(Lease(i), Requester, Provider)).ToArray();
        var provider = OpenWarm(Provider, dir);
        Task<LedgerResult> first, second;
        using (var flush = new HeldFlush(provider) { FailWith = new IOException("the disk is gone") })
        {
            first = Task.Run(() => provider.Record(receipts[0], LedgerEntryKind.Earned));
            Assert.That(flush.Entered.Wait(Guard), Is.True);
            second = Task.Run(() => provider.Record(receipts[1], LedgerEntryKind.Earned));
            Assert.That(SpinWait.SpinUntil(() => provider.GroupCommits == 3, Guard), Is.True);
            flush.Release();

            var failures = new[] { first, second }.Select(t => Assert.Throws<AggregateException>(() => t.Wait(Guard))!.InnerException).ToArray();
            Assert.That(failures, Has.All.TypeOf<LedgerException>(), "both commits were covered by the failed flush");
            Assert.That(failures[0]!.InnerException, Is.TypeOf<IOException>());
            Assert.That(flush.Flushes, Is.EqualTo(1), "a failed flush is not retried: the file's state is unknown");
        }
        Assert.Throws<LedgerException>(() => provider.Record(receipts[2], LedgerEntryKind.Earned));
        Assert.Throws<LedgerException>(() => provider.Balance());
        Assert.Throws<LedgerException>(() => provider.ReceiptOf(receipts[0].Receipt.ReceiptId, LedgerEntryKind.Earned));
        provider.Dispose();

        // Reopened, the ledger holds what reached the file (here all of it: the failure was the seam's), and every receipt
        // counts once whether or not its commit survived.
        using var reopened = LedgerFactory.Open(dir, Provider);
        Assert.That(reopened.Balance(), Is.EqualTo(reopened.SumEntries()));
        var counted = receipts.Count(r => reopened.Record(r, LedgerEntryKind.Earned) == LedgerResult.Recorded);
        Assert.That(counted, Is.EqualTo(1), "only the receipt refused after the failure was missing");
        Assert.That(receipts.Select(r => reopened.Record(r, LedgerEntryKind.Earned)), Is.All.EqualTo(LedgerResult.AlreadyRecorded));
        Assert.That(reopened.Balance(), Is.EqualTo(Options.InitialGrant + 4 * 2500));
        Assert.That(reopened.Balance(), Is.EqualTo(reopened.SumEntries()));
    }

    /// <summary>
    /// Opens a file-backed ledger and makes its first group commit (the one SQLite syncs itself, with the WAL's directory);
    /// every later group commit commits with NORMAL and is flushed by the ledger.
    /// </summary>
    private CreditLedger OpenWarm(PrivateKey owner, string? dir = null)
    {
        var ledger = LedgerFactory.Open(dir ?? _dir.Sub("ledger"), owner);
        var kind = owner == Provider ? LedgerEntryKind.Earned : LedgerEntryKind.Spent;
        Assert.That(ledger.Record(MakeReceipt(Lease(100), Requester, Provider), kind), Is.EqualTo(LedgerResult.Recorded));
        Assert.That((ledger.GroupCommits, ledger.FlushedGroupCommits), Is.EqualTo((1L, 1L)));
        return ledger;
    }

    /// <summary>Holds every flush of a ledger until <see cref="Release"/>; counts them, and fails them with <see cref="FailWith"/>.</summary>
    private sealed class HeldFlush : IDisposable
    {
        private readonly CreditLedger _ledger;
        private readonly ManualResetEventSlim _released = new();
        private int _flushes;

        public HeldFlush(CreditLedger ledger)
        {
            _ledger = ledger;
            ledger.FlushHook = flush =>
            {
                Interlocked.Increment(ref _flushes);
                Entered.Release();
                _released.Wait(Guard);
                if (FailWith is { } failure)
                {
                    throw failure;
                }
                flush();
            };
        }

        public SemaphoreSlim Entered { get; } = new(0);

        public Exception? FailWith { get; init; }

        public int Flushes => Volatile.Read(ref _flushes);

        public void Release() => _released.Set();

        public void Dispose()
        {
            _released.Set();
            _ledger.FlushHook = null;
            _released.Dispose();
            Entered.Dispose();
        }
    }
}
