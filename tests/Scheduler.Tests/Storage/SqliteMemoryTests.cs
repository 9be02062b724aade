using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Time.Testing;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Storage;
using Potluck.Scheduler.Verification;

namespace Potluck.Scheduler.Tests.Storage;

/// <summary>
/// The in-memory storage stand-in's connections (the mesh's keepers and the ledger's, reputation's and peers' own) run
/// without SQLite's per-connection lookaside allocator, on small pages, and the data is the same through them; a data
/// directory's databases are one store.
/// </summary>
public class SqliteMemoryTests
{
    private const int LookasideUsed = 0; // SQLITE_DBSTATUS_LOOKASIDE_USED

    private static int LookasideHighWater(SqliteConnection connection)
    {
        Assert.That(SQLitePCL.raw.sqlite3_db_status(connection.Handle, LookasideUsed, out _, out var high, 0), Is.EqualTo(SQLitePCL.raw.SQLITE_OK));
        return high;
    }

    private static void Exercise(SqliteConnection connection)
    {
        using var command = connection.CreateCommand();
        command.CommandText = "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('a'), ('b'); SELECT count(*) FROM t;";
        command.ExecuteScalar();
    }

    [Test]
    public void Keep_ConnectionUsesNoLookaside_WhereADefaultConnectionDoes()
    {
        var path = Path.Combine(Path.GetTempPath(), "potluck-lookaside-" + Guid.NewGuid().ToString("N"), "x.db");
        using (var ordinary = new SqliteConnection(SqliteMemory.ConnectionString(path + ".ordinary")))
        {
            ordinary.Open();
            Exercise(ordinary);
            Assert.That(LookasideHighWater(ordinary), Is.GreaterThan(0), "a default connection uses lookaside (else this test proves nothing)");
        }
        using var kept = SqliteMemory.Keep(path);
        Exercise(kept);
        Assert.That(LookasideHighWater(kept), Is.EqualTo(0));
    }

    [Test]
    public void StateFileOnDisk_UsesNoLookaside_WhereAFileConnectionOfTheDefaultKindDoes()
    {
        var directory = Path.Combine(Path.GetTempPath(), "potluck-lookaside-" + Guid.NewGuid().ToString("N"));
        try
        {
            using (var ordinary = new SqliteConnection(new SqliteConnectionStringBuilder
            {
                DataSource = Path.Combine(Directory.CreateDirectory(directory).FullName, "ordinary.db"),
                Pooling = false,
            }.ToString()))
            {
                ordinary.Open();
                Exercise(ordinary);
                Assert.That(LookasideHighWater(ordinary), Is.GreaterThan(0), "a default file connection uses lookaside (else this test proves nothing)");
            }
            using var file = SqliteStateFile.Open(directory, "state.db", "PRAGMA journal_mode = WAL;", "SELECT 1;");
            file.Use(connection =>
            {
                Exercise(connection);
                Assert.That(LookasideHighWater(connection), Is.EqualTo(0));
                using var count = connection.CreateCommand();
                count.CommandText = "SELECT count(*) FROM t";
                Assert.That(count.ExecuteScalar(), Is.EqualTo(2L), "the same results without it");
                return 0;
            });
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Test]
    public void Slim_AfterTheConnectionUsedLookaside_Throws()
    {
        using var connection = new SqliteConnection(SqliteMemory.ConnectionString(Path.Combine(Path.GetTempPath(), Guid.NewGuid().ToString("N"))));
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "CREATE TABLE t (k INTEGER PRIMARY KEY); SELECT count(*) FROM t;";
        using var reader = command.ExecuteReader(); // a statement open: its lookaside slots are in use
        Assert.Throws<InvalidOperationException>(() => SqliteMemory.Slim(connection));
    }

    [Test]
    public void InMemoryLedgerAndReputation_KeepTheirDataAcrossReopen_WithoutLookaside()
    {
        var dir = Path.Combine(Path.GetTempPath(), "potluck-slim-" + Guid.NewGuid().ToString("N"));
        var owner = PrivateKey.FromRandom(new Random(3)).PeerId;
        var options = new CreditsOptions { InitialGrant = 1234 };
        var time = new FakeTimeProvider(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
        using var keepLedger = SqliteMemory.Keep(Path.Combine(dir, CreditLedger.FileName));
        using var keepReputation = SqliteMemory.Keep(Path.Combine(dir, ReputationDatabase.FileName));
        using (var ledger = CreditLedger.Open(dir, owner, options, time, inMemory: true))
        {
            Assert.That(ledger.Balance(), Is.EqualTo(1234));
        }
        using (ReputationDatabase.Open(dir, inMemory: true))
        {
        }
        using var again = CreditLedger.Open(dir, owner, options, time, inMemory: true);
        Assert.That(again.Balance(), Is.EqualTo(1234));
        Assert.That(LookasideHighWater(keepLedger), Is.EqualTo(0));
        using var pageSize = keepLedger.CreateCommand();
        pageSize.CommandText = "PRAGMA page_size";
        Assert.That(Convert.ToInt32(pageSize.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture), Is.EqualTo(SqliteMemory.PageSize));
        Assert.That(Directory.Exists(dir), Is.False, "nothing reaches the disk");
    }

    [Test]
    public void InMemoryStore_OneDatabasePerDirectory_ALedgerIsNewBesideTheOtherTables()
    {
        var dir = Path.Combine(Path.GetTempPath(), "potluck-store-" + Guid.NewGuid().ToString("N"));
        var owner = PrivateKey.FromRandom(new Random(5)).PeerId;
        var options = new CreditsOptions { InitialGrant = 1234 };
        var time = new FakeTimeProvider(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
        using var keep = SqliteMemory.Keep(Path.Combine(dir, "any.db"));
        using (var reputation = ReputationDatabase.Open(dir, inMemory: true))
        {
            // The reputation table is there first (made by its first save): the ledger is still new (its meta table is
            // missing), not corrupt.
            reputation.Save([new(owner, new ProviderRecord(1, 1, 0, 0, null))]);
            using var ledger = CreditLedger.Open(dir, owner, options, time, inMemory: true);
            Assert.That(ledger.Created, Is.True);
            Assert.That(ledger.Balance(), Is.EqualTo(1234));
        }
        using (var reopened = CreditLedger.Open(dir, owner, options, time, inMemory: true))
        {
            Assert.That(reopened.Created, Is.False, "the same store, kept by one connection");
            Assert.That(reopened.Balance(), Is.EqualTo(1234));
        }
        using var tables = keep.CreateCommand();
        tables.CommandText = "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN ('meta', 'entries', 'providers')";
        Assert.That(Convert.ToInt32(tables.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture), Is.EqualTo(3),
            "the ledger's and reputation's tables in one database");
        // Another directory is another store: its ledger is made anew.
        using var other = CreditLedger.Open(dir + "-other", owner, options, time, inMemory: true);
        Assert.That(other.Created, Is.True);
        Assert.That(Directory.Exists(dir), Is.False, "nothing reaches the disk");
    }

    [TestCase(true)]
    [TestCase(false)]
    public void Ledger_KeepsNoSchemaOpeningOrRoundStatementPrepared_NewOrReopened(bool inMemory)
    {
        // A kept statement holds its compiled program while the connection is open (about 3 KiB for a CREATE): the
        // schema, migrations, opening pragmas and checks run once per open, the retry and redelivery rounds' scans once a
        // round, so none of them stays prepared.
        var dir = Path.Combine(Path.GetTempPath(), "potluck-stmts-" + Guid.NewGuid().ToString("N"));
        var owner = PrivateKey.FromRandom(new Random(4)).PeerId;
        var options = new CreditsOptions { InitialGrant = 1234 };
        var time = new FakeTimeProvider(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
        using var keep = inMemory ? SqliteMemory.Keep(Path.Combine(dir, CreditLedger.FileName)) : null;
        try
        {
            for (var open = 0; open < 2; open++)
            {
                using var ledger = CreditLedger.Open(dir, owner, options, time, inMemory);
                Assert.That(ledger.Balance(), Is.EqualTo(1234));
                // The rare paths of a start and of the retry and redelivery rounds: prepared for their run only.
                Assert.That(ledger.ChainRecoveryPending, Is.False);
                Assert.That(ledger.Reservations(PaymentState.Settled), Is.Empty);
                Assert.That(ledger.UnlinkedProposals(64), Is.Empty);
                Assert.That(ledger.DeliveredReceiptsWithoutBlock(64), Is.Empty);
                Assert.That(ledger.Forks(), Is.Empty);
                // A query of the lease path: kept.
                Assert.That(ledger.Unpaid(owner), Is.Zero);
                var kept = ledger.PreparedStatements().Concat(ledger.PreparedReads()).ToList();
                Assert.That(kept, Has.Some.Contains("FROM owed"), "the ledger's own queries are kept prepared (else this test proves nothing)");
                Assert.That(kept, Has.None.Contains("CREATE").And.None.Contains("DROP").And.None.Contains("journal_mode")
                    .And.None.Contains("quick_check").And.None.Contains("counterparty_totals (counterparty, earned")
                    .And.None.Contains("sqlite_schema").And.None.Contains("FROM meta").And.None.Contains("INSERT INTO meta")
                    .And.None.Contains("synchronous").And.None.Contains("FROM forks").And.None.Contains("NOT EXISTS")
                    .And.None.Contains("r.state = $state"), $"open {open + 1}");
            }
        }
        finally
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }
}
