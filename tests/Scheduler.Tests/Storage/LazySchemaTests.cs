using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Time.Testing;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Storage;
using Potluck.Scheduler.Verification;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Storage;

/// <summary>
/// The in-memory stand-in creates the ledger's lease, chain, fork and recovery tables when a statement first names them
/// (CreditLedger.Lazy.cs); a file ledger creates them all when it is created, as before. What every operation returns is
/// the same; the totals the triggers keep stay right.
/// </summary>
public class LazySchemaTests
{
    private static readonly string[] LazyTables = ["reservations", "owed", "requester_violations", "chain", "forks", "chain_recovered"];

    private static readonly FakeTimeProvider Time = new(Epoch);

    private static string NewDir() => Path.Combine(Path.GetTempPath(), "potluck-lazy-" + Guid.NewGuid().ToString("N"));

    private static List<string> Tables(SqliteConnection connection) => SqlNames.Of(connection, "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name");

    private static List<string> Triggers(SqliteConnection connection) => SqlNames.Of(connection, "SELECT name FROM sqlite_schema WHERE type = 'trigger' ORDER BY name");

    private static SignedReceipt Receipt(int lease, long amountFuel = 2_500_000) =>
        MakeReceipt(Lease(lease), Requester, Provider, (ulong)amountFuel);

    [Test]
    public void InMemoryLedger_ANodeThatTakesPartInNoLease_HoldsNoLeaseChainForkOrRecoveryTable()
    {
        var dir = NewDir();
        using var keep = SqliteMemory.Keep(Path.Combine(dir, CreditLedger.FileName));
        for (var open = 0; open < 2; open++)
        {
            using var ledger = CreditLedger.Open(dir, Provider.PeerId, Options, Time, inMemory: true);
            // What every node reads: at start, in the retry and redelivery rounds, and for the blocks it is shown.
            Assert.That(ledger.Balance(), Is.EqualTo(Options.InitialGrant));
            Assert.That(ledger.ChainRecoveryPending, Is.False);
            Assert.That(ledger.ChainHead().Seq, Is.Zero);
            Assert.That(ledger.HoldsBlocksOf(Requester.PeerId), Is.False);
            Assert.That(ledger.ChainBlockAt(Requester.PeerId, 1), Is.Null);
            Assert.That(ledger.ChainBlockByHash(new byte[32]), Is.Null);
            Assert.That(ledger.AgreementLinking(new byte[32]), Is.Null);
            Assert.That(ledger.OwnBlockFor(new byte[32]), Is.Null);
            Assert.That(ledger.Reservations(PaymentState.Settled), Is.Empty);
            Assert.That(ledger.UndeliveredReceipts(), Is.Empty);
            Assert.That(ledger.UnlinkedProposals(64), Is.Empty);
            Assert.That(ledger.DeliveredReceiptsWithoutBlock(64), Is.Empty);
            Assert.That(ledger.Forks(), Is.Empty);
            Assert.That(ledger.WasRecovered(1), Is.False);
            Assert.That(ledger.GetReservation(Lease(1)), Is.Null);
            // A receipt for a lease this node never served: refused, and no table made for it.
            Assert.That(ledger.RecordEarned(Receipt(1)), Is.EqualTo(LedgerResult.NotOwed));
            Assert.That(Tables(keep), Has.None.AnyOf(LazyTables), $"open {open + 1}");
            Assert.That(Tables(keep), Is.SupersetOf(new[] { "meta", "entries", "counterparty_totals" }));
        }
    }

    [Test]
    public void InMemoryLedger_ARequesterThatNeverProvides_HoldsNoProviderTables()
    {
        var dir = NewDir();
        using var keep = SqliteMemory.Keep(Path.Combine(dir, CreditLedger.FileName));
        using var ledger = CreditLedger.Open(dir, Requester.PeerId, Options, Time, inMemory: true);
        var receipt = Receipt(7);
        Assert.That(ledger.ReservePayment(receipt.Receipt.LeaseId, Provider.PeerId, receipt.Receipt.Amount + 10), Is.EqualTo(LedgerResult.Reserved));
        Assert.That(ledger.Settle(receipt), Is.EqualTo(LedgerResult.Recorded));
        Assert.That(ledger.MarkDelivered(receipt.Receipt.LeaseId), Is.EqualTo(LedgerResult.Delivered));
        Assert.That(ledger.Balance(), Is.EqualTo(Options.InitialGrant - receipt.Receipt.Amount));
        Assert.That(ledger.Reservations(PaymentState.Delivered), Has.Count.EqualTo(1));
        var tables = Tables(keep);
        Assert.That(tables, Does.Contain("reservations"));
        Assert.That(tables, Has.None.AnyOf("owed", "requester_violations", "forks", "chain_recovered"));
        Assert.That(Triggers(keep), Does.Contain("reservations_transitions").And.None.StartsWith("totals_owed").And.None.StartsWith("totals_violation"));
        Assert.That(ledger.TotalsMismatches(), Is.Empty);
    }

    [Test]
    public void InMemoryLedger_AProvider_TotalsKeptByTheTriggersMadeWithItsTables()
    {
        var dir = NewDir();
        using var keep = SqliteMemory.Keep(Path.Combine(dir, CreditLedger.FileName));
        using var ledger = CreditLedger.Open(dir, Provider.PeerId, Options, Time, inMemory: true);
        var paid = Receipt(1);
        var unpaid = Receipt(2);
        Assert.That(ledger.RecordOwed(paid.Receipt.LeaseId, Requester.PeerId, paid.Receipt.Amount), Is.EqualTo(LedgerResult.Owed));
        Assert.That(ledger.RecordOwed(unpaid.Receipt.LeaseId, Requester.PeerId, unpaid.Receipt.Amount), Is.EqualTo(LedgerResult.Owed));
        Assert.That(ledger.Unpaid(Requester.PeerId), Is.EqualTo(paid.Receipt.Amount + unpaid.Receipt.Amount));
        Assert.That(ledger.RecordEarned(paid), Is.EqualTo(LedgerResult.Recorded));
        Assert.That(ledger.RecordViolation(Requester.PeerId, unpaid.Receipt.LeaseId, 1, null), Is.True);
        var record = ledger.Requester(Requester.PeerId);
        Assert.That(record.Unpaid, Is.EqualTo(unpaid.Receipt.Amount), "totals_owed_* made with owed");
        Assert.That(record.Consumed, Is.EqualTo(paid.Receipt.Amount + unpaid.Receipt.Amount), "earned (totals_entry) plus unpaid");
        Assert.That(record.Violations, Is.EqualTo(1), "totals_violation_insert made with requester_violations");
        ledger.ForgetOwed(unpaid.Receipt.LeaseId, Requester.PeerId);
        Assert.That(ledger.Requester(Requester.PeerId).Unpaid, Is.Zero, "totals_owed_delete");
        Assert.That(ledger.TotalsMismatches(), Is.Empty);
        Assert.That(Tables(keep), Does.Contain("owed").And.Contain("requester_violations").And.Not.Contain("reservations"));
    }

    [Test]
    public void InMemoryLedger_ATableMadeInAWriteThatRollsBack_IsMadeAgainByTheNext()
    {
        var dir = NewDir();
        using var keep = SqliteMemory.Keep(Path.Combine(dir, CreditLedger.FileName));
        using var ledger = CreditLedger.Open(dir, Requester.PeerId, Options, Time, inMemory: true);
        var receipt = Receipt(3);
        // Recording a Spent receipt reads the lease's reservation first (inside the write): the table is made there, and
        // undone with the rest when the write fails after it.
        ledger.CrashHook = point => throw new InvalidOperationException("fail at " + point);
        Assert.Catch(() => ledger.Record(receipt, LedgerEntryKind.Spent));
        ledger.CrashHook = null;
        Assert.That(Tables(keep), Has.None.EqualTo("reservations"), "rolled back with the write");
        Assert.That(ledger.Balance(), Is.EqualTo(Options.InitialGrant));
        Assert.That(ledger.Record(receipt, LedgerEntryKind.Spent), Is.EqualTo(LedgerResult.Recorded));
        var next = Receipt(4);
        Assert.That(ledger.ReservePayment(next.Receipt.LeaseId, Provider.PeerId, next.Receipt.Amount), Is.EqualTo(LedgerResult.Reserved));
        Assert.That(ledger.Reservations(PaymentState.Reserved), Has.Count.EqualTo(1));
        Assert.That(ledger.Balance(), Is.EqualTo(Options.InitialGrant - receipt.Receipt.Amount));
        Assert.That(Tables(keep), Does.Contain("reservations"));
    }

    [Test]
    public void FileLedger_New_HoldsEveryTableAtOpen_AsBefore()
    {
        var dir = NewDir();
        try
        {
            using (CreditLedger.Open(dir, Requester.PeerId, Options, Time))
            {
            }
            using var connection = new SqliteConnection(new SqliteConnectionStringBuilder
            {
                DataSource = Path.Combine(dir, CreditLedger.FileName),
                Mode = SqliteOpenMode.ReadOnly,
                Pooling = false,
            }.ToString());
            connection.Open();
            Assert.That(Tables(connection), Is.SupersetOf(LazyTables).And.SupersetOf(new[] { "meta", "entries", "counterparty_totals" }));
            Assert.That(Triggers(connection), Is.SupersetOf(new[]
            {
                "entries_no_update", "entries_no_delete", "reservations_transitions", "reservations_no_delete", "totals_entry",
                "totals_owed_insert", "totals_owed_update", "totals_owed_delete", "totals_violation_insert", "totals_violation_delete",
                "chain_own_no_update", "chain_own_no_delete",
            }));
        }
        finally
        {
            if (Directory.Exists(dir))
            {
                SqliteConnection.ClearAllPools();
                Directory.Delete(dir, recursive: true);
            }
        }
    }

    [Test]
    public void InMemoryStore_ANodeThatTakesPartInNoLease_ParsedSchemaUnder16KiB()
    {
        // The store's parsed schema (SQLite keeps it while a connection is open): the ledger's core tables, reputation's.
        var dir = NewDir();
        using var keep = SqliteMemory.Keep(Path.Combine(dir, CreditLedger.FileName));
        using var ledger = CreditLedger.Open(dir, Requester.PeerId, Options, Time, inMemory: true);
        using var reputation = ReputationDatabase.Open(dir, inMemory: true);
        Assert.That(ledger.Balance(), Is.EqualTo(Options.InitialGrant));
        Assert.That(ledger.HoldsBlocksOf(Provider.PeerId), Is.False);
        var schema = SqliteFootprint.Of(keep).Schema;
        TestContext.Out.WriteLine($"parsed schema {schema} B");
        Assert.That(schema, Is.GreaterThan(0).And.LessThan(16 * 1024));
    }
    [Test]
    public void InMemoryStore_ANodeThatTakesPartInNoLease_StoresItsSchemaTextInUnder1536Bytes()
    {
        // sqlite_schema keeps each CREATE statement's text as it was run (every node's store, in its pages): the same
        // statements without their indentation and line breaks.
        var dir = NewDir();
        using var keep = SqliteMemory.Keep(Path.Combine(dir, CreditLedger.FileName));
        using var ledger = CreditLedger.Open(dir, Requester.PeerId, Options, Time, inMemory: true);
        using var reputation = ReputationDatabase.Open(dir, inMemory: true);
        Assert.That(ledger.Balance(), Is.EqualTo(Options.InitialGrant));
        using var command = keep.CreateCommand();
        command.CommandText = "SELECT sum(length(sql)), count(*), sum(instr(sql, char(10)) > 0) FROM sqlite_schema WHERE sql IS NOT NULL";
        using var reader = command.ExecuteReader();
        Assert.That(reader.Read(), Is.True);
        var (bytes, statements, withLineBreaks) = (reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2));
        TestContext.Out.WriteLine($"stored schema text {bytes} B in {statements} statements");
        Assert.That(statements, Is.GreaterThanOrEqualTo(7),
            "the core ledger's tables, index and triggers, and reputation's table (7: no sqlite_sequence since stop 41, the entries' seq is their rowid)");
        Assert.That(withLineBreaks, Is.Zero);
        Assert.That(bytes, Is.LessThan(1536), "1,655 B as the statements were written");
    }
    [TestCase(true)]
    [TestCase(false)]
    public void Ledger_OpenedAndUsed_NeverOpensTheTempDatabase(bool inMemory)
    {
        // A bare PRAGMA quick_check checks every database of the connection and opens temp to do so (its pager, B-tree
        // and a 4 KiB page, ~19 KiB held while the connection is open); the ledger checks main, where all it has is.
        var dir = NewDir();
        try
        {
            using var keep = inMemory ? SqliteMemory.Keep(Path.Combine(dir, CreditLedger.FileName)) : null;
            for (var open = 0; open < 2; open++)
            {
                using var ledger = CreditLedger.Open(dir, Requester.PeerId, Options, Time, inMemory);
                var receipt = Receipt(10 + open);
                Assert.That(ledger.ReservePayment(receipt.Receipt.LeaseId, Provider.PeerId, receipt.Receipt.Amount + 10), Is.EqualTo(LedgerResult.Reserved));
                Assert.That(ledger.Settle(receipt), Is.EqualTo(LedgerResult.Recorded));
                Assert.That(ledger.UndeliveredReceipts(), Has.Count.EqualTo(open + 1));
                Assert.That(ledger.TotalsMismatches(), Is.Empty);
                Assert.That(ledger.OpenDatabases(), Is.EqualTo(new[] { "main" }), $"open {open + 1}");
            }
        }
        finally
        {
            SqliteConnection.ClearAllPools();
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }
}
