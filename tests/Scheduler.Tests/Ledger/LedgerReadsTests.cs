using Potluck.Scheduler.Credits;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Ledger;

/// <summary>
/// A file-backed ledger's lookups run on a second, read-only connection beside the writer (CreditLedger.Reads.cs): they
/// do not wait for a write or its fsync, see committed data only, and a read made inside a write sees that write.
/// </summary>
public class LedgerReadsTests
{
    /// <summary>Only a guard against a deadlock turning into a hung run: every wait here ends as soon as the read does.</summary>
    private static readonly TimeSpan Guard = TimeSpan.FromSeconds(60);

    private TempDir _dir = null!;

    [SetUp]
    public void SetUp() => _dir = new TempDir();

    [TearDown]
    public void TearDown() => _dir.Dispose();

    [Test]
    public void Reads_DuringADurableCommit_RunBesideItAndSeeOnlyWhatIsCommitted()
    {
        using var requester = LedgerFactory.Open(_dir.Sub("requester"), Requester);
        var lease = Lease(1);
        var receipt = MakeReceipt(lease, Requester, Provider);
        Assert.That(requester.ReservePayment(lease, Provider.PeerId, 10_000), Is.EqualTo(LedgerResult.Reserved));
        (PaymentState? State, byte[]? Spent, int Undelivered)? seenBeside = null;
        PaymentState? seenInside = null;
        requester.CrashHook = step =>
        {
            if (step != "commit")
            {
                return;
            }
            // The group commit holds the writer's lock here, its transaction open: another thread reads beside it (were
            // reads still behind that lock, this wait would never end) ...
            var beside = Task.Run(() => (requester.GetReservation(lease)?.State,
                requester.ReceiptOf(receipt.Receipt.ReceiptId, LedgerEntryKind.Spent), requester.UndeliveredReceipts().Count));
            Assert.That(beside.Wait(Guard), Is.True, "a read waited for the write's lock");
            seenBeside = beside.Result;
            // ... while a read on the writing thread itself sees the write's own, uncommitted changes.
            seenInside = requester.GetReservation(lease)?.State;
        };

        Assert.That(requester.Settle(receipt), Is.EqualTo(LedgerResult.Recorded));

        Assert.That(seenBeside, Is.EqualTo(((PaymentState?)PaymentState.Reserved, (byte[]?)null, 0)), "beside an open write: only what was committed");
        Assert.That(seenInside, Is.EqualTo(PaymentState.Settled), "inside the write: its own changes");
        requester.CrashHook = null;
        Assert.That(requester.GetReservation(lease)?.State, Is.EqualTo(PaymentState.Settled), "once committed, every reader sees it");
        Assert.That(requester.ReceiptOf(receipt.Receipt.ReceiptId, LedgerEntryKind.Spent), Is.EqualTo(receipt.EnvelopeBytes));
        Assert.That(requester.UndeliveredReceipts(), Has.Count.EqualTo(1));
        Assert.That(requester.PreparedReads(), Has.Some.Contains("FROM reservations r"), "the lookups ran on the reader");
    }

    [Test]
    public void Reads_OfAWriteThatFailed_SeeNothingOfIt()
    {
        using var provider = LedgerFactory.Open(_dir.Sub("provider"), Provider);
        provider.CrashHook = step =>
        {
            if (step == "commit")
            {
                throw new InvalidOperationException("crash before the commit");
            }
        };
        Assert.Throws<InvalidOperationException>(() => provider.RecordViolation(Requester.PeerId, Lease(1), 1, null));
        provider.CrashHook = null;

        Assert.That(provider.Requester(Requester.PeerId).Violations, Is.Zero);
        Assert.That(provider.RecordViolation(Requester.PeerId, Lease(1), 1, null), Is.True);
        Assert.That(provider.Requester(Requester.PeerId).Violations, Is.EqualTo(1));
    }

    [Test]
    public void ReadersAndWriters_Concurrently_ReadsOnlyGrowAndEndAtTheTotal()
    {
        const int Writers = 2, LeasesEach = 150, Readers = 2, ReadsEach = 300;
        using var provider = LedgerFactory.Open(_dir.Sub("provider"), Provider);
        var start = new Barrier(Writers + Readers);
        var writers = Enumerable.Range(0, Writers).Select(w => Task.Factory.StartNew(() =>
        {
            start.SignalAndWait(Guard);
            for (var i = 0; i < LeasesEach; i++)
            {
                Assert.That(provider.RecordOwed(Lease((w * LeasesEach) + i), Requester.PeerId, 3), Is.EqualTo(LedgerResult.Owed));
            }
        }, TaskCreationOptions.LongRunning)).ToArray();
        var readers = Enumerable.Range(0, Readers).Select(_ => Task.Factory.StartNew(() =>
        {
            start.SignalAndWait(Guard);
            var seen = new List<(long Amount, int Leases)>(ReadsEach);
            for (var i = 0; i < ReadsEach; i++)
            {
                // Leases first, then the amount: a commit between the two can only make the amount larger.
                var leases = provider.UnpaidLeases(Requester.PeerId);
                seen.Add((provider.Unpaid(Requester.PeerId), leases));
            }
            return seen;
        }, TaskCreationOptions.LongRunning)).ToArray();

        Assert.That(Task.WaitAll([.. writers, .. readers], Guard), Is.True);
        foreach (var seen in readers.Select(r => r.Result))
        {
            Assert.That(seen.Select(s => s.Leases), Is.Ordered, "a reader never sees a commit undone");
            Assert.That(seen.Select(s => s.Amount), Is.Ordered);
            Assert.That(seen, Has.All.Matches<(long Amount, int Leases)>(s => s.Amount >= 3L * s.Leases && s.Amount % 3 == 0
                && s.Amount <= 3L * Writers * LeasesEach), "whole commits only");
        }
        Assert.That(provider.Unpaid(Requester.PeerId), Is.EqualTo(3L * Writers * LeasesEach));
        Assert.That(provider.UnpaidLeases(Requester.PeerId), Is.EqualTo(Writers * LeasesEach));
        Assert.That(provider.PreparedReads(), Has.Some.Contains("FROM owed"));
    }

    [Test]
    public void Reads_AfterDispose_Throw()
    {
        var provider = LedgerFactory.Open(_dir.Sub("provider"), Provider);
        provider.Dispose();
        Assert.Throws<ObjectDisposedException>(() => provider.Unpaid(Requester.PeerId));
        Assert.Throws<ObjectDisposedException>(() => provider.ChainBlockAt(Requester.PeerId, 1));
    }
}
