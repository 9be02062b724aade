using Microsoft.Extensions.Time.Testing;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Storage;
using Potluck.Scheduler.Verification;

namespace Potluck.Scheduler.Tests.Storage;

/// <summary>
/// What SQLite connections a node holds between uses of its files: the reputation file none (opened for each load and
/// save, closed after it, its WAL and synchronous=NORMAL as before), the ledger one (its writer) until the first read
/// opens the reader beside it, and the in-memory stand-in one for the state files of a node's store, shared. Counted
/// by the descriptors the process holds on each file (one per open connection; Linux), so they fail where a connection is
/// kept open.
/// </summary>
public class SqliteConnectionsHeldTests
{
    private static readonly PeerId Provider = PrivateKey.FromRandom(new Random(11)).PeerId;
    private static readonly PeerId Requester = PrivateKey.FromRandom(new Random(13)).PeerId;
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Path.Combine(Path.GetTempPath(), "potluck-held-" + Guid.NewGuid().ToString("N"));

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, true);
        }
    }

    /// <summary>Descriptors this process has open on <paramref name="path"/> (each SQLite connection opens its own).</summary>
    internal static int OpenDescriptors(string path)
    {
        var count = 0;
        foreach (var fd in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            try
            {
                count += new FileInfo(fd).LinkTarget == path ? 1 : 0;
            }
            catch (IOException)
            {
                // Closed while enumerated (the enumeration's own descriptor among them).
            }
        }
        return count;
    }

    [Test]
    public void ReputationFile_HoldsNoConnectionBetweenUses_KeepsItsDataWalAndSynchronousSetting()
    {
        Assume.That(OperatingSystem.IsLinux(), "counts descriptors in /proc/self/fd");
        using var db = ReputationDatabase.Open(_dir);
        var path = Path.Combine(_dir, ReputationDatabase.FileName);
        Assert.That(OpenDescriptors(path), Is.Zero, "after opening (setup and check ran, then it closed)");
        db.Save([new(Provider, new ProviderRecord(4, 9, 1, 2, null))]);
        Assert.That(OpenDescriptors(path), Is.Zero, "after a save");
        Assert.That(db.Load(10).Single().Value, Is.EqualTo(new ProviderRecord(4, 9, 1, 2, null)));
        Assert.That(OpenDescriptors(path), Is.Zero, "after a load");
        Assert.That(File.Exists(path + "-wal") && new FileInfo(path + "-wal").Length > 0, Is.True,
            "the save's commit is in the WAL, not checkpointed by the close (durable as with one connection kept open)");
        using var file = SqliteStateFile.Open(_dir, ReputationDatabase.FileName, "", "SELECT count(*) FROM providers", perOpen: "PRAGMA synchronous = NORMAL;");
        var (mode, synchronous) = file.Use(connection =>
        {
            using var command = connection.CreateCommand();
            command.CommandText = "PRAGMA journal_mode";
            var journal = (string)command.ExecuteScalar()!;
            command.CommandText = "PRAGMA synchronous";
            return (journal, Convert.ToInt64(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture));
        });
        Assert.That((mode, synchronous), Is.EqualTo(("wal", 1L)), "WAL, and synchronous=NORMAL set again at each open");
        file.Dispose();
        db.Dispose();
        Assert.That(File.Exists(path + "-wal") || File.Exists(path + "-shm"), Is.False,
            "closed as one connection kept open was: checkpointed, the WAL and SHM files removed");
        using var again = ReputationDatabase.Open(_dir);
        Assert.That(again.Load(10).Single().Value, Is.EqualTo(new ProviderRecord(4, 9, 1, 2, null)));
    }

    [Test]
    public void ReputationFile_RemovedBetweenUses_SaveThrowsAndCreatesNothing()
    {
        Assume.That(OperatingSystem.IsLinux(), "a file removed while open");
        using var db = ReputationDatabase.Open(_dir);
        foreach (var suffix in new[] { "", "-wal", "-shm" })
        {
            File.Delete(Path.Combine(_dir, ReputationDatabase.FileName + suffix));
        }
        Assert.Throws<Microsoft.Data.Sqlite.SqliteException>(() => db.Save([new(Provider, new ProviderRecord(1, 1, 0, 0, null))]));
        Assert.That(File.Exists(Path.Combine(_dir, ReputationDatabase.FileName)), Is.False, "no empty file without its table");
    }

    [Test]
    public void FileLedger_OpensItsReaderWithTheFirstRead_NotWithTheLedger()
    {
        Assume.That(OperatingSystem.IsLinux(), "counts descriptors in /proc/self/fd");
        var owner = PrivateKey.FromRandom(new Random(12)).PeerId;
        var time = new FakeTimeProvider(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var path = Path.Combine(_dir, CreditLedger.FileName);
        using (var ledger = CreditLedger.Open(_dir, owner, new CreditsOptions { InitialGrant = 500 }, time))
        {
            Assert.That(OpenDescriptors(path), Is.EqualTo(1), "the writer only");
            Assert.That(ledger.RecordOwed([1, 2, 3], Requester, 40), Is.EqualTo(LedgerResult.Owed));
            Assert.That(OpenDescriptors(path), Is.EqualTo(1), "a write opens no reader");
            Assert.That(ledger.Unpaid(Requester), Is.EqualTo(40), "the first read sees what was committed");
            Assert.That(OpenDescriptors(path), Is.EqualTo(2), "the reader, opened by the read");
            Assert.That(ledger.PreparedReads(), Has.Some.Contains("FROM owed"), "the read ran on the reader");
            Assert.That(ledger.ReaderLookasideHighWater(), Is.Zero, "the reader runs without lookaside");
        }
        Assert.That(OpenDescriptors(path), Is.Zero, "both closed with the ledger");
    }

    [Test]
    public void InMemoryStandIn_LedgerAndStateFilesOfOneStore_ShareOneConnection_AndTheLastClosesIt()
    {
        var owner = PrivateKey.FromRandom(new Random(14)).PeerId;
        var time = new FakeTimeProvider(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var ledger = CreditLedger.Open(_dir, owner, new CreditsOptions { InitialGrant = 700 }, time, inMemory: true);
        using var reputation = ReputationDatabase.Open(_dir, inMemory: true);
        using var other = SqliteStateFile.Open(_dir, "peers.db", "CREATE TABLE IF NOT EXISTS other (k INTEGER PRIMARY KEY) STRICT;", "SELECT count(*) FROM other", inMemory: true);
        Assert.That(ledger.Footprint().Connections + reputation.Footprint().Connections + other.Footprint().Connections, Is.Zero,
            "none before the first write (LazyStoreTests)");
        Assert.That(ledger.RecordOwed([7], Requester, 25), Is.EqualTo(LedgerResult.Owed));
        Assert.That(ledger.Footprint().Connections + reputation.Footprint().Connections + other.Footprint().Connections, Is.EqualTo(1.0).Within(1e-9),
            "one connection, a third each");
        Assert.That(ledger.Unpaid(Requester), Is.EqualTo(25));
        ledger.Dispose();
        Assert.That(reputation.Footprint().Connections + other.Footprint().Connections, Is.EqualTo(1.0).Within(1e-9), "half each once the ledger has gone");
        using (var again = CreditLedger.Open(_dir, owner, new CreditsOptions { InitialGrant = 700 }, time, inMemory: true))
        {
            Assert.That(again.Created, Is.False, "the store outlived the ledger: the state files' connection kept it");
            Assert.That((again.Balance(), again.Unpaid(Requester)), Is.EqualTo((700L, 25L)));
        }
        reputation.Save([new(Provider, new ProviderRecord(2, 3, 0, 0, "x"))]);
        Assert.That(other.Use(c =>
        {
            using var command = c.CreateCommand();
            command.CommandText = "SELECT count(*) FROM providers";
            return command.ExecuteScalar();
        }), Is.EqualTo(1L), "one store: the other file's connection sees the reputation table");
        other.Dispose();
        Assert.That(reputation.Load(10).Single().Value.RefusedReason, Is.EqualTo("x"), "still open for the holder left");
        reputation.Dispose();
        using var fresh = ReputationDatabase.Open(_dir, inMemory: true);
        Assert.That(fresh.Load(10), Is.Empty, "the last holder closed the store (nothing kept it)");
        Assert.That(Directory.Exists(_dir), Is.False, "nothing reaches the disk");
    }
}
