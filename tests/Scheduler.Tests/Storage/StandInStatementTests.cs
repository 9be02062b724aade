using Microsoft.Extensions.Time.Testing;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Tests.Accounting;
using Potluck.Scheduler.Tests.Ledger;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Storage;

/// <summary>
/// What a ledger keeps prepared after the writes of a lease: a file ledger every statement it ran (the lease path parses
/// none twice); the in-memory stand-in none larger than <see cref="CreditLedger.StandInStatementBytes"/> (the writes with
/// their triggers are prepared per operation), with the same results.
/// </summary>
public class StandInStatementTests
{
    [TestCase(true)]
    [TestCase(false)]
    public void AfterALeasesWrites_TheStandInKeepsNoLargeStatement_AFileLedgerKeepsThem(bool inMemory)
    {
        using var dir = new TempDir();
        using var keep = inMemory ? Potluck.Scheduler.Storage.SqliteMemory.Keep(Path.Combine(dir.Sub("r"), CreditLedger.FileName)) : null;
        using var requester = CreditLedger.Open(dir.Sub("r"), Requester.PeerId, Options, new FakeTimeProvider(Epoch), inMemory);
        using var provider = CreditLedger.Open(dir.Sub("p"), Provider.PeerId, Options, new FakeTimeProvider(Epoch), inMemory);
        for (var n = 1; n <= 3; n++)
        {
            var receipt = MakeReceipt(Lease(n), Requester, Provider);
            Assert.That(requester.ReservePayment(Lease(n), Provider.PeerId, 10_000), Is.EqualTo(LedgerResult.Reserved));
            Assert.That(provider.RecordOwed(Lease(n), Requester.PeerId, receipt.Receipt.Amount), Is.EqualTo(LedgerResult.Owed));
            Assert.That(requester.Settle(receipt), Is.EqualTo(LedgerResult.Recorded));
            Assert.That(requester.Settle(receipt), Is.EqualTo(LedgerResult.AlreadyRecorded), "the same answers, statement kept or not");
            Assert.That(provider.RecordEarned(receipt), Is.EqualTo(LedgerResult.Recorded));
            Assert.That(requester.MarkDelivered(Lease(n)), Is.EqualTo(LedgerResult.Delivered));
            var n1 = n;
            requester.AppendOwnBlock(receipt.Receipt.ReceiptId, (s, p) => ChainBlockTests.Proposal(MakeReceipt(Lease(n1), Requester, Provider), Requester, s, p));
        }
        var amount = MakeReceipt(Lease(1), Requester, Provider).Receipt.Amount;
        Assert.That(requester.Balance(), Is.EqualTo(Options.InitialGrant - 3 * amount));
        Assert.That(provider.Balance(), Is.EqualTo(Options.InitialGrant + 3 * amount));
        Assert.That(requester.SumEntries(), Is.EqualTo(requester.Balance()));
        Assert.That(requester.Reservations(PaymentState.Delivered), Has.Count.EqualTo(3));
        Assert.That(provider.Unpaid(Requester.PeerId), Is.Zero);

        var kept = requester.PreparedStatementBytes().Concat(provider.PreparedStatementBytes()).ToList();
        var large = kept.Where(k => k.Bytes > CreditLedger.StandInStatementBytes).Select(k => k.Sql).ToList();
        if (inMemory)
        {
            Assert.That(large, Is.Empty, "the stand-in keeps no statement over its bound after an operation");
            Assert.That(kept.Select(k => k.Sql), Has.Some.EqualTo("BEGIN IMMEDIATE"), "the small ones stay kept");
        }
        else
        {
            Assert.That(large, Has.Some.Contains("INSERT INTO entries"), "a file ledger keeps its writes (else the bound proves nothing)");
        }
    }
}
