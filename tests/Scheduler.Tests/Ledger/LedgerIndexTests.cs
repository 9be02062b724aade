using Microsoft.Data.Sqlite;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Tests.Storage;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Ledger;

/// <summary>The ledger keeps the indexes its queries need and no more (each costs a write per row); older ledgers lose the rest.</summary>
public class LedgerIndexTests
{
    private static readonly string[] Needed =
    [
        "chain_by_hash", "chain_by_link", "chain_own_receipt", "chain_unkept_by_time", "entries_by_counterparty_time", "reservations_by_state",
    ];

    private TempDir _dir = null!;

    [SetUp]
    public void SetUp() => _dir = new TempDir();

    [TearDown]
    public void TearDown() => _dir.Dispose();

    private string ProviderDir => _dir.Sub("provider");

    private CreditLedger OpenProvider() => LedgerFactory.Open(ProviderDir, Provider, CreditsFixtures.Options with { Holdback = TimeSpan.Zero });

    private List<string> Indexes()
    {
        using var raw = new SqliteConnection($"Data Source={Path.Combine(ProviderDir, CreditLedger.FileName)};Pooling=False");
        raw.Open();
        return SqlNames.Of(raw, """
            SELECT name FROM sqlite_schema WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex%'
              AND tbl_name IN ('entries', 'owed', 'chain', 'reservations') ORDER BY name
            """);
    }

    private void Raw(params string[] statements)
    {
        using var raw = new SqliteConnection($"Data Source={Path.Combine(ProviderDir, CreditLedger.FileName)};Pooling=False");
        raw.Open();
        foreach (var sql in statements)
        {
            using var cmd = raw.CreateCommand();
            cmd.CommandText = sql;
            cmd.ExecuteNonQuery();
        }
    }

    private static void Payments(CreditLedger provider, int from, int count)
    {
        for (var i = from; i < from + count; i++)
        {
            Assert.That(provider.RecordOwed(Lease(i), Requester.PeerId, 3_000), Is.EqualTo(LedgerResult.Owed));
            Assert.That(provider.RecordEarned(MakeReceipt(Lease(i), Requester, Provider)), Is.EqualTo(LedgerResult.Recorded));
        }
        Assert.That(provider.RecordOwed(Lease(from + count), Requester.PeerId, 3_000), Is.EqualTo(LedgerResult.Owed));
    }

    [Test]
    public void Open_NewLedger_HasOnlyTheIndexesItsQueriesNeed()
    {
        using (var provider = OpenProvider())
        {
            Payments(provider, 1, 3);
        }
        Assert.That(Indexes(), Is.EqualTo(Needed));
    }

    [Test]
    public void Open_FileLedger_CheckpointsTheWalEvery4096Pages_NotSqlitesDefault1000()
    {
        using var provider = OpenProvider();
        Assert.That(provider.Pragma("wal_autocheckpoint"), Is.EqualTo((long)CreditLedger.WalCheckpointPages));
        Assert.That(CreditLedger.WalCheckpointPages, Is.EqualTo(4_096));
    }

    [Test]
    public void Open_OlderLedgerWithRedundantIndexes_DropsThem_AndEverySumReadsTheSame()
    {
        using (var provider = OpenProvider())
        {
            Payments(provider, 1, 4);
        }
        // What an older ledger looks like: the three indexes this one no longer keeps, and no (kind, counterparty, time) one.
        Raw("DROP INDEX entries_by_counterparty_time", "DROP INDEX chain_unkept_by_time",
            "CREATE INDEX entries_by_kind ON entries (kind, counterparty)", "CREATE INDEX owed_unpaid ON owed (requester, paid)",
            "CREATE INDEX chain_unkept ON chain (keep, stored_at)");

        using var reopened = OpenProvider();
        Assert.That(Indexes(), Is.EqualTo(Needed));
        Assert.That(reopened.Unpaid(Requester.PeerId), Is.EqualTo(3_000));
        Assert.That(reopened.UnpaidLeases(Requester.PeerId), Is.EqualTo(1));
        Assert.That(reopened.Requester(Requester.PeerId), Is.EqualTo(reopened.RequesterSummed(Requester.PeerId)));
        Assert.That(reopened.ProofOfEarnings(Requester.PeerId), Has.Count.EqualTo(4));
        Assert.That(reopened.TotalsMismatches(), Is.Empty);
        // Written to after the change, read the same way.
        Payments(reopened, 20, 2);
        Assert.That(reopened.Unpaid(Requester.PeerId), Is.EqualTo(6_000));
        Assert.That(reopened.ProofOfEarnings(Requester.PeerId), Has.Count.EqualTo(6));
        Assert.That(reopened.Requester(Requester.PeerId), Is.EqualTo(reopened.RequesterSummed(Requester.PeerId)));
    }
}
