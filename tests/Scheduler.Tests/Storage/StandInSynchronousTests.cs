using Microsoft.Extensions.Time.Testing;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Tests.Accounting;
using Potluck.Scheduler.Tests.Ledger;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Storage;

/// <summary>
/// The ledger switches <c>synchronous</c> between FULL (settle, record) and NORMAL (the rest) on a file; the in-memory
/// stand-in has nothing to sync and keeps no such pragma prepared, with the same results and the same durable commits noted.
/// </summary>
public class StandInSynchronousTests
{
    [TestCase(true)]
    [TestCase(false)]
    public void AfterALeasesWrites_OnlyAFileLedgerKeepsTheSynchronousPragmas(bool inMemory)
    {
        using var dir = new TempDir();
        using var keep = inMemory ? Potluck.Scheduler.Storage.SqliteMemory.Keep(Path.Combine(dir.Sub("r"), CreditLedger.FileName)) : null;
        using var requester = CreditLedger.Open(dir.Sub("r"), Requester.PeerId, Options, new FakeTimeProvider(Epoch), inMemory);
        var durable = new List<bool>();
        requester.CrashHook = step => { if (step == "commit") { durable.Add(requester.CommitsDurably); } };
        for (var n = 1; n <= 2; n++)
        {
            var receipt = MakeReceipt(Lease(n), Requester, Provider);
            Assert.That(requester.ReservePayment(Lease(n), Provider.PeerId, 10_000), Is.EqualTo(LedgerResult.Reserved));
            Assert.That(requester.Settle(receipt), Is.EqualTo(LedgerResult.Recorded));
            Assert.That(requester.MarkDelivered(Lease(n)), Is.EqualTo(LedgerResult.Delivered));
        }
        var amount = MakeReceipt(Lease(1), Requester, Provider).Receipt.Amount;
        Assert.That(requester.Balance(), Is.EqualTo(Options.InitialGrant - 2 * amount));
        Assert.That(durable, Is.EqualTo(new[] { false, true, false, false, true, false }), "reserve NORMAL, settle durable, delivered NORMAL");
        var kept = requester.PreparedStatements();
        if (inMemory)
        {
            Assert.That(kept, Has.None.Contains("synchronous"), "nothing to sync in memory: no pragma kept");
        }
        else
        {
            Assert.That(kept, Has.Some.Contains("synchronous"), "a file ledger switches it (else this test proves nothing)");
        }
    }
}
