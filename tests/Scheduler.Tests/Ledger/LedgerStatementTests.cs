using Microsoft.Data.Sqlite;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Tests.Accounting;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Ledger;

/// <summary>
/// What each step of the lease path costs on the ledger's writer connection (<see cref="CreditLedger.WriterStatements"/>),
/// and that every rule a cut folded into fewer statements still holds: duplicates refused, funds checked against the
/// current balance, states moved only as they may.
/// </summary>
public class LedgerStatementTests
{
    private TempDir _dir = null!;

    [SetUp]
    public void SetUp() => _dir = new TempDir();

    [TearDown]
    public void TearDown() => _dir.Dispose();

    private string RequesterDir => _dir.Sub("requester");

    private CreditLedger OpenRequester() => LedgerFactory.Open(RequesterDir, Requester);

    private static long Cost(CreditLedger ledger, Action step)
    {
        var before = ledger.WriterStatements;
        step();
        return ledger.WriterStatements - before;
    }

    private void Raw(string sql)
    {
        using var raw = new SqliteConnection($"Data Source={Path.Combine(RequesterDir, CreditLedger.FileName)};Pooling=False");
        raw.Open();
        using var cmd = raw.CreateCommand();
        cmd.CommandText = sql;
        cmd.ExecuteNonQuery();
    }

    [Test]
    public void Reserve_OnceTheBalanceIsKept_IsOneStatement_AndStillRefusesDuplicatesConflictsAndOverspending()
    {
        using var ledger = OpenRequester();
        Assert.That(ledger.ReservePayment(Lease(1), Provider.PeerId, 10_000), Is.EqualTo(LedgerResult.Reserved)); // sums the balance once

        LedgerResult result = default;
        Assert.That(Cost(ledger, () => result = ledger.ReservePayment(Lease(2), Provider.PeerId, 10_000)), Is.EqualTo(1));
        Assert.That(result, Is.EqualTo(LedgerResult.Reserved));

        Assert.That(ledger.ReservePayment(Lease(2), Provider.PeerId, 10_000), Is.EqualTo(LedgerResult.AlreadyReserved));
        Assert.That(ledger.ReservePayment(Lease(2), Provider.PeerId, 20_000), Is.EqualTo(LedgerResult.Conflict));
        Assert.That(ledger.ReservePayment(Lease(2), Stranger.PeerId, 10_000), Is.EqualTo(LedgerResult.Conflict));
        // 20,000 of the grant are reserved: exactly the rest still fits, one more micro-credit does not.
        Assert.That(ledger.ReservePayment(Lease(3), Provider.PeerId, Options.InitialGrant - 20_000 + 1), Is.EqualTo(LedgerResult.InsufficientFunds));
        Assert.That(ledger.ReservePayment(Lease(3), Provider.PeerId, Options.InitialGrant - 20_000), Is.EqualTo(LedgerResult.Reserved));
        Assert.That(ledger.Available(), Is.Zero);
        Assert.That(ledger.Reservations(PaymentState.Reserved), Has.Count.EqualTo(3));
    }

    [Test]
    public void Reserve_AfterAnotherConnectionSpentTheBalance_IsCheckedAgainstTheNewBalance()
    {
        using var ledger = OpenRequester();
        Assert.That(ledger.ReservePayment(Lease(1), Provider.PeerId, 1), Is.EqualTo(LedgerResult.Reserved)); // the balance is kept now
        // Another writer (an operator's tool, a second process) spends all but 100 of the grant behind the ledger's back.
        Raw($"""
            INSERT INTO entries (receipt_id, kind, counterparty, lease_id, amount, receipt, recorded_at)
            VALUES (randomblob(32), 2, x'{Convert.ToHexString(Provider.PeerId.ToBytes())}', NULL, {Options.InitialGrant - 100}, NULL, 0)
            """);

        Assert.That(ledger.ReservePayment(Lease(2), Provider.PeerId, 100), Is.EqualTo(LedgerResult.InsufficientFunds),
            "100 left less the 1 reserved: the kept balance must not be trusted after another connection wrote");
        Assert.That(ledger.ReservePayment(Lease(2), Provider.PeerId, 99), Is.EqualTo(LedgerResult.Reserved));
        Assert.That(ledger.Balance(), Is.EqualTo(100));
        Assert.That(ledger.Available(), Is.Zero);
    }

    [Test]
    public void Settle_IsFourStatements_AndEveryRefusalLeavesNoEntry()
    {
        using var ledger = OpenRequester();
        var lease = Lease(1);
        Assert.That(ledger.ReservePayment(lease, Provider.PeerId, 2_500), Is.EqualTo(LedgerResult.Reserved));
        Assert.That(ledger.ReservePayment(Lease(2), Provider.PeerId, 2_500), Is.EqualTo(LedgerResult.Reserved));
        Assert.That(ledger.Release(Lease(2)), Is.EqualTo(LedgerResult.Released));
        // The first group commit after opening commits with FULL (and switches the connection's setting): not the one counted.
        Assert.That(ledger.ReservePayment(Lease(3), Provider.PeerId, 2_500), Is.EqualTo(LedgerResult.Reserved));
        Assert.That(ledger.Settle(MakeReceipt(Lease(3), Requester, Provider)), Is.EqualTo(LedgerResult.Recorded));
        var settled = Options.InitialGrant - 2_500;

        // Refused after the entry went in first: each is rolled back whole, balance and entries as before.
        Assert.That(ledger.Settle(MakeReceipt(Lease(9), Requester, Provider)), Is.EqualTo(LedgerResult.NotReserved));
        Assert.That(ledger.Settle(MakeReceipt(lease, Requester, Stranger)), Is.EqualTo(LedgerResult.Conflict), "pays another provider");
        Assert.That(ledger.Settle(MakeReceipt(lease, Requester, Provider, fuel: 2_500_001)), Is.EqualTo(LedgerResult.ExceedsReservation));
        Assert.That(ledger.Settle(MakeReceipt(Lease(2), Requester, Provider)), Is.EqualTo(LedgerResult.AlreadyReleased));
        Assert.That(ledger.Recent(10).Count(e => e.Kind == LedgerEntryKind.Spent), Is.EqualTo(1));
        Assert.That(ledger.Balance(), Is.EqualTo(settled));
        Assert.That(ledger.SumEntries(), Is.EqualTo(settled));
        Assert.That(ledger.GetReservation(lease)!.State, Is.EqualTo(PaymentState.Reserved));

        var receipt = MakeReceipt(lease, Requester, Provider);
        LedgerResult result = default;
        // BEGIN, the entry, the move to Settled, COMMIT: the reservation is no longer read first.
        Assert.That(Cost(ledger, () => result = ledger.Settle(receipt)), Is.EqualTo(4));
        Assert.That(result, Is.EqualTo(LedgerResult.Recorded));
        Assert.That(ledger.Settle(receipt), Is.EqualTo(LedgerResult.AlreadyRecorded));
        Assert.That(ledger.Settle(MakeReceipt(lease, Requester, Provider, at: Epoch.AddSeconds(5))), Is.EqualTo(LedgerResult.Conflict));
        Assert.That(ledger.Recent(10).Count(e => e.Kind == LedgerEntryKind.Spent), Is.EqualTo(2));
        Assert.That(ledger.Balance(), Is.EqualTo(settled - 2_500));
        Assert.That(ledger.SumEntries(), Is.EqualTo(settled - 2_500));
        var reservation = ledger.GetReservation(lease)!;
        Assert.That((reservation.State, reservation.Receipt), Is.EqualTo((PaymentState.Settled, receipt.EnvelopeBytes)));
    }

    [Test]
    public void OwnBlock_NextOneIsSignedOverTheKeptHead_WithoutReadingIt_AndARolledBackBlockIsNeverTheHead()
    {
        using var ledger = OpenRequester();
        SignedBlock Sign(int lease, ulong seq, byte[] previous) => ChainBlockTests.Proposal(MakeReceipt(Lease(lease), Requester, Provider), Requester, seq, previous);
        byte[] Receipt(int lease) => MakeReceipt(Lease(lease), Requester, Provider).Receipt.ReceiptId;
        var (first, _) = ledger.AppendOwnBlock(Receipt(1), (s, p) => Sign(1, s, p));
        // The first group commit after opening commits with FULL; a write with NORMAL switches back, outside what is counted.
        Assert.That(ledger.Release(Lease(99)), Is.EqualTo(LedgerResult.NotReserved));
        SignedBlock second = null!;
        // BEGIN, the receipt's block looked up, the INSERT, COMMIT: the head is no longer read per block. Since stop 40, two
        // more per block: its payments leave the pending Delivered reservations, and it waits for its agreement in chain_unlinked.
        Assert.That(Cost(ledger, () => second = ledger.AppendOwnBlock(Receipt(2), (s, p) => Sign(2, s, p)).Block), Is.EqualTo(6));
        Assert.That((second.Seq, first.Precedes(second)), Is.EqualTo((2UL, BlockStatus.Valid)));

        // Inserted, then undone (a crash inside the transaction): the next block takes its seq, over the committed head.
        ledger.CrashHook = step => { if (step == "chain-append") { throw new IOException("crash"); } };
        Assert.Throws<IOException>(() => ledger.AppendOwnBlock(Receipt(3), (s, p) => Sign(3, s, p)));
        ledger.CrashHook = null;
        // One of a batch refused (signed over the wrong seq), after another of the batch was appended: only that one is undone.
        var batch = ledger.AppendOwnBlocks([(Receipt(4), (s, p) => Sign(4, s, p))]);
        Assert.Throws<ArgumentException>(() => ledger.AppendOwnBlocks([(Receipt(5), (s, p) => Sign(5, s, p)), (Receipt(6), (s, p) => Sign(6, s + 1, p))]));
        var (next, appended) = ledger.AppendOwnBlock(Receipt(7), (s, p) => Sign(7, s, p));

        Assert.That(batch[0].Block.Seq, Is.EqualTo(3UL), "the undone block's seq is taken again");
        Assert.That(second.Precedes(batch[0].Block), Is.EqualTo(BlockStatus.Valid));
        Assert.That(ledger.OwnBlockFor(Receipt(5)), Is.Not.Null, "appended in the batch beside the refused one");
        Assert.That(ledger.OwnBlockFor(Receipt(6)), Is.Null);
        Assert.That(ledger.OwnBlockFor(Receipt(3)), Is.Null);
        Assert.That((appended, next.Seq), Is.EqualTo((true, 5UL)));
        Assert.That(SignedBlock.DecodeChecked(ledger.ChainBlockAt(Requester.PeerId, 4)!)!.Precedes(next), Is.EqualTo(BlockStatus.Valid));
        Assert.That(ledger.ChainHead().Seq, Is.EqualTo(5UL));
    }

    [Test]
    public void ForeignBlock_Unkept_IsInsertedInOneStatement_AndAHeldOrForkingOneIsStillFound()
    {
        using var ledger = OpenRequester();
        var theirs = ChainBlockTests.Proposal(MakeReceipt(Lease(5), Stranger, Provider), Stranger, 1, SignedBlock.Genesis);
        var theirFork = ChainBlockTests.Proposal(MakeReceipt(Lease(6), Stranger, Provider), Stranger, 1, SignedBlock.Genesis);
        var next = ChainBlockTests.Proposal(MakeReceipt(Lease(7), Stranger, Provider), Stranger, 2, theirs.Hash);
        Assert.That(ledger.StoreForeignBlock(theirs, keep: false, out _), Is.EqualTo(ForeignBlockResult.Stored));

        var result = ForeignBlockResult.Conflict;
        // BEGIN, the INSERT, COMMIT: not looked up first.
        Assert.That(Cost(ledger, () => result = ledger.StoreForeignBlock(next, keep: false, out _)), Is.EqualTo(3));
        Assert.That(result, Is.EqualTo(ForeignBlockResult.Stored));
        Assert.That(ledger.StoreForeignBlock(theirs, keep: false, out var none), Is.EqualTo(ForeignBlockResult.AlreadyHeld));
        Assert.That(none, Is.Null);
        Assert.That(ledger.StoreForeignBlock(theirFork, keep: false, out var held), Is.EqualTo(ForeignBlockResult.Conflict));
        Assert.That(held, Is.EqualTo(theirs.EnvelopeBytes), "the block held is returned: the two are a fork proof");
        Assert.That(ledger.StoreForeignBlocks([theirFork, next], keep: false).Select(r => r.Result),
            Is.EqualTo(new[] { ForeignBlockResult.Conflict, ForeignBlockResult.AlreadyHeld }));
        Assert.That(ledger.StoreForeignBlock(theirs, keep: true, out _), Is.EqualTo(ForeignBlockResult.AlreadyHeld));
        Assert.That(ledger.ChainBlockAt(Stranger.PeerId, 1), Is.EqualTo(theirs.EnvelopeBytes), "the fork was never written");
        Assert.That(ledger.ChainBlockByHash(theirFork.Hash), Is.Null);
    }

    [Test]
    public void Earned_IsCheckedOnTheReader_AndFourStatementsOnTheWriter_AndABogusReceiptNeverReachesTheWriter()
    {
        using var provider = LedgerFactory.Open(_dir.Sub("provider"), Provider);
        Assert.That(provider.RecordOwed(Lease(1), Requester.PeerId, 2_500), Is.EqualTo(LedgerResult.Owed));
        Assert.That(provider.RecordOwed(Lease(2), Requester.PeerId, 2_500), Is.EqualTo(LedgerResult.Owed));
        Assert.That(provider.RecordEarned(MakeReceipt(Lease(1), Requester, Provider)), Is.EqualTo(LedgerResult.Recorded)); // the FULL first commit
        Assert.That(provider.RecordOwed(Lease(3), Requester.PeerId, 2_500), Is.EqualTo(LedgerResult.Owed)); // back to NORMAL

        // A flood of receipts for leases never owed, or for more than owed: refused by a read beside the writer, nothing queued.
        LedgerResult refused = default, over = default;
        Assert.That(Cost(provider, () => refused = provider.RecordEarned(MakeReceipt(Lease(9), Requester, Provider))), Is.Zero);
        Assert.That(Cost(provider, () => over = provider.RecordEarned(MakeReceipt(Lease(2), Requester, Provider, fuel: 2_500_001))), Is.Zero);
        Assert.That((refused, over), Is.EqualTo((LedgerResult.NotOwed, LedgerResult.ExceedsOwed)));
        Assert.That(provider.PreparedReads(), Has.Some.Contains("FROM owed"));

        var receipt = MakeReceipt(Lease(2), Requester, Provider);
        LedgerResult result = default;
        // BEGIN, the owed row marked paid, the entry, COMMIT.
        Assert.That(Cost(provider, () => result = provider.RecordEarned(receipt)), Is.EqualTo(4));
        Assert.That(result, Is.EqualTo(LedgerResult.Recorded));
        Assert.That(Cost(provider, () => result = provider.RecordEarned(receipt)), Is.Zero, "a replay is answered from the reader");
        Assert.That(result, Is.EqualTo(LedgerResult.AlreadyRecorded));
        Assert.That(provider.RecordEarned(MakeReceipt(Lease(2), Requester, Provider, at: Epoch.AddSeconds(5))), Is.EqualTo(LedgerResult.Conflict));
        Assert.That(provider.Recent(10).Count(e => e.Kind == LedgerEntryKind.Earned), Is.EqualTo(2));
        Assert.That(provider.Balance(), Is.EqualTo(Options.InitialGrant + 5_000));
        Assert.That(provider.Unpaid(Requester.PeerId), Is.EqualTo(2_500), "lease 3 only");
    }
}
