using Microsoft.Data.Sqlite;
using Potluck.Scheduler.Credits;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Ledger;

/// <summary>
/// The entries' seq without <c>AUTOINCREMENT</c> (stop 41): an insert no longer writes the counter in <c>sqlite_sequence</c>
/// (a page in the WAL per commit that records an entry), seq still counts up in insertion order and is never reused (the
/// entries are append-only), and a ledger made before moves to it when opened, answering every read the same. Counted from
/// the ledger's WAL file, so the counting test runs against main's code too (it fails there: a frame more per Record).
/// </summary>
public class EntriesRowidTests
{
    private TempDir _dir = null!;

    [SetUp]
    public void SetUp() => _dir = new TempDir();

    [TearDown]
    public void TearDown() => _dir.Dispose();

    /// <summary>
    /// A provider records ten receipts one after another, each its own group commit: per Record the entry's row, its two
    /// indexes and the totals row, and no counter page: 43 WAL frames here, 53 on main, which also wrote <c>sqlite_sequence</c> each time.
    /// </summary>
    [Test]
    public void Record_OneAfterAnother_WritesNoSequenceCounter_OneFrameFewerEach()
    {
        using var provider = LedgerFactory.Open(_dir.Sub("provider"), Provider);
        Assert.That(provider.Record(MakeReceipt(Lease(0), Requester, Provider), LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.Recorded));
        var before = WalFile.Read(provider);

        for (var i = 1; i <= 10; i++)
        {
            Assert.That(provider.Record(MakeReceipt(Lease(i), Requester, Provider), LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.Recorded));
        }

        var after = WalFile.Read(provider);
        TestContext.Out.WriteLine($"ten Records: {after.Commits - before.Commits} commits, {after.Frames - before.Frames} WAL frames");
        Assert.That(after.Commits - before.Commits, Is.EqualTo(10));
        Assert.That(after.Frames - before.Frames, Is.LessThanOrEqualTo(EntriesFramesBound), "no sqlite_sequence page per Record (main: 10 frames more)");
        var seqs = provider.Recent(11).Select(e => e.Sequence).Reverse().ToArray();
        Assert.That(seqs, Is.EqualTo(Enumerable.Range((int)seqs[0], 11).Select(s => (long)s)), "seq counts up by one per entry, in insertion order");
        Assert.That(provider.Balance(), Is.EqualTo(provider.SumEntries()));
    }

    /// <summary>Measured: 43 on this code, 53 on main (d6ab820), one sqlite_sequence page per Record.</summary>
    private const int EntriesFramesBound = 43;

    /// <summary>
    /// A ledger whose entries table main's schema made (<c>seq INTEGER PRIMARY KEY AUTOINCREMENT</c>, with its counter's
    /// row): opened, it is moved in its opening transaction (no counter, the same rows with the same seqs, the index and the
    /// append-only triggers), and every read answers as before; the reservations' trigger, which reads the entries, still
    /// checks a settle; the next entry takes the next seq; an update and a delete are still refused.
    /// </summary>
    [Test]
    public void Open_LedgerMadeByMainsSchema_MovesTheEntriesToRowids_EveryReadAnswersTheSame_AndLeasesGoOn()
    {
        var dir = _dir.Sub("requester");
        string[] reads;
        using (var requester = LedgerFactory.Open(dir, Requester))
        {
            for (var i = 1; i <= 4; i++)
            {
                Assert.That(requester.ReservePayment(Lease(i), Provider.PeerId, 10_000), Is.EqualTo(LedgerResult.Reserved));
                Assert.That(requester.Settle(MakeReceipt(Lease(i), Requester, Provider)), Is.EqualTo(LedgerResult.Recorded));
                Assert.That(requester.MarkDelivered(Lease(i)), Is.EqualTo(LedgerResult.Delivered));
            }
            Assert.That(requester.Record(MakeReceipt(Lease(20), Provider, Requester), LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.Recorded));
            Assert.That(requester.ReservePayment(Lease(5), Provider.PeerId, 10_000), Is.EqualTo(LedgerResult.Reserved));
            reads = Reads(requester);
        }
        MakeEntriesAsMainDid(dir);
        Assert.That(Sql(dir, "SELECT seq FROM sqlite_sequence WHERE name = 'entries'"), Is.EqualTo("6"), "main's counter, as main kept it");

        using (var requester = LedgerFactory.Open(dir, Requester))
        {
            Assert.That(Reads(requester), Is.EqualTo(reads));
            Assert.That(requester.Settle(MakeReceipt(Lease(5), Requester, Provider)), Is.EqualTo(LedgerResult.Recorded));
            Assert.That(requester.Settle(MakeReceipt(Lease(6), Requester, Provider)), Is.EqualTo(LedgerResult.NotReserved));
            Assert.That(requester.Recent(1)[0].Sequence, Is.EqualTo(7L), "the next seq");
            Assert.That(requester.Balance(), Is.EqualTo(requester.SumEntries()));
        }
        Assert.That(Sql(dir, "SELECT sql LIKE '%AUTOINCREMENT%' FROM sqlite_schema WHERE name = 'entries'"), Is.EqualTo("0"));
        Assert.That(Sql(dir, "SELECT count(*) FROM sqlite_sequence WHERE name = 'entries'"), Is.EqualTo("0"), "no counter left");
        Assert.That(Sql(dir, "SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_schema WHERE tbl_name = 'entries' ORDER BY name)"),
            Is.EqualTo("entries,entries_by_counterparty_time,entries_no_delete,entries_no_update,sqlite_autoindex_entries_1"));
        Assert.That(Sql(dir, "SELECT count(*) FROM sqlite_schema WHERE name = 'entries_rowid'"), Is.EqualTo("0"));
        Assert.That(() => Sql(dir, "UPDATE entries SET amount = 0 WHERE seq = 2", write: true), Throws.InstanceOf<SqliteException>().With.Message.Contains("append-only"));
        Assert.That(() => Sql(dir, "DELETE FROM entries WHERE seq = 7", write: true), Throws.InstanceOf<SqliteException>().With.Message.Contains("append-only"));
        Assert.That(Sql(dir, "PRAGMA integrity_check"), Is.EqualTo("ok"));
    }

    /// <summary>Everything a node reads from its entries and reservations, as text.</summary>
    private static string[] Reads(CreditLedger ledger) =>
    [
        $"balance {ledger.Balance()}, available {ledger.Available()}, sum {ledger.SumEntries()}",
        .. ledger.Recent(100).Select(e => $"{e.Sequence} {e.Kind} {Convert.ToHexString(e.ReceiptId)} {e.Amount} {e.Counterparty}"),
        .. ledger.ProofOfEarnings().Select(Convert.ToHexString),
        .. Enum.GetValues<PaymentState>().SelectMany(s => ledger.Reservations(s)).Select(r => $"{Convert.ToHexString(r.LeaseId)} {r.State} {r.Receipt?.Length}"),
        $"proof {CreditLedger.VerifyProofOfEarnings(Requester.PeerId, [.. ledger.ProofOfEarnings().Select(b => (ReadOnlyMemory<byte>)b)], Options).Total}",
    ];

    /// <summary>The entries table made again as main's schema made it (AUTOINCREMENT, the same index and triggers), with its rows.</summary>
    private static void MakeEntriesAsMainDid(string dir)
    {
        using var raw = new SqliteConnection($"Data Source={Path.Combine(dir, CreditLedger.FileName)};Pooling=False");
        raw.Open();
        using var tx = raw.BeginTransaction();
        using var cmd = raw.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = """
            PRAGMA legacy_alter_table = ON;
            CREATE TABLE entries_main (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                receipt_id BLOB NOT NULL,
                kind INTEGER NOT NULL CHECK (kind IN (0, 1, 2)),
                counterparty BLOB NOT NULL,
                lease_id BLOB,
                amount INTEGER NOT NULL CHECK (amount >= 0),
                receipt BLOB,
                recorded_at INTEGER NOT NULL,
                UNIQUE (receipt_id, kind)) STRICT;
            INSERT INTO entries_main SELECT * FROM entries ORDER BY seq;
            DROP TABLE entries;
            ALTER TABLE entries_main RENAME TO entries;
            CREATE INDEX entries_by_counterparty_time ON entries (kind, counterparty, recorded_at);
            CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
                BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
            CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
                BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
            PRAGMA legacy_alter_table = OFF;
            """;
        cmd.ExecuteNonQuery();
        tx.Commit();
    }

    private static string Sql(string dir, string sql, bool write = false)
    {
        using var raw = new SqliteConnection($"Data Source={Path.Combine(dir, CreditLedger.FileName)};Mode={(write ? "ReadWrite" : "ReadOnly")};Pooling=False");
        raw.Open();
        using var cmd = raw.CreateCommand();
        cmd.CommandText = sql;
        return Convert.ToString(cmd.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture) ?? "";
    }
}
