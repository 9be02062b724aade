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
        "chain_by_hash", "chain_by_link", "chain_own_receipt", "chain_unkept_by_time", "entries_by_counterparty_time", "reservations_pending",
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

    /// <summary>
    /// A requester's ledger made by main's schema (91fa8db: <c>reservations_by_state</c> over every reservation, no open
    /// index) with leases in all four states: opened, it has the open index instead, and every read of the reservations
    /// answers as before (funds, recovery's Reserved and Settled, the Delivered and Released listings, the chain round's
    /// delivered receipts, one lease), then the leases go on as before.
    /// </summary>
    [Test]
    public void Open_LedgerWithTheStateIndexOfEveryReservation_KeepsOnlyTheOpenOne_AndEveryReadAnswersTheSame()
    {
        var dir = _dir.Sub("requester");
        var reservationIndexes = new List<string>();
        void Answers(CreditLedger ledger, List<string> into)
        {
            into.Add($"available {ledger.Available()}, balance {ledger.Balance()}");
            foreach (var state in Enum.GetValues<PaymentState>())
            {
                into.Add($"{state}: " + string.Join(" ", ledger.Reservations(state).Select(r => $"{Convert.ToHexString(r.LeaseId)}/{r.MaxAmount}/{r.Receipt?.Length}")));
            }
            into.Add("undelivered " + ledger.UndeliveredReceipts().Count);
            into.Add("unblocked " + string.Join(" ", ledger.DeliveredReceiptsWithoutBlock(64).Select(Convert.ToHexString)));
            into.Add("lease 5 " + ledger.GetReservation(Lease(5))!.State);
        }
        var before = new List<string>();
        using (var requester = LedgerFactory.Open(dir, Requester))
        {
            for (var i = 1; i <= 8; i++)
            {
                Assert.That(requester.ReservePayment(Lease(i), Provider.PeerId, 10_000 + i), Is.EqualTo(LedgerResult.Reserved));
            }
            for (var i = 1; i <= 6; i++)
            {
                Assert.That(requester.Settle(MakeReceipt(Lease(i), Requester, Provider)), Is.EqualTo(LedgerResult.Recorded));
            }
            for (var i = 1; i <= 3; i++)
            {
                Assert.That(requester.MarkDelivered(Lease(i)), Is.EqualTo(LedgerResult.Delivered));
            }
            Assert.That(requester.Release(Lease(8)), Is.EqualTo(LedgerResult.Released));
            Answers(requester, before);
        }
        // What main's schema looks like: the state index over every reservation, no partial one.
        using (var raw = new SqliteConnection($"Data Source={Path.Combine(dir, CreditLedger.FileName)};Pooling=False"))
        {
            raw.Open();
            foreach (var sql in new[] { "DROP INDEX reservations_pending", "CREATE INDEX reservations_by_state ON reservations (state)" })
            {
                using var cmd = raw.CreateCommand();
                cmd.CommandText = sql;
                cmd.ExecuteNonQuery();
            }
            reservationIndexes.AddRange(SqlNames.Of(raw, "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'reservations' ORDER BY name"));
        }
        Assert.That(reservationIndexes, Is.EqualTo(new[] { "reservations_by_state", "sqlite_autoindex_reservations_1" }), "main's schema, else this proves nothing");

        using var reopened = LedgerFactory.Open(dir, Requester);
        var after = new List<string>();
        Answers(reopened, after);
        Assert.That(after, Is.EqualTo(before));
        using (var raw = new SqliteConnection($"Data Source={Path.Combine(dir, CreditLedger.FileName)};Mode=ReadOnly;Pooling=False"))
        {
            raw.Open();
            Assert.That(SqlNames.Of(raw, "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'reservations' ORDER BY name"),
                Is.EqualTo(new[] { "reservations_pending", "sqlite_autoindex_reservations_1" }));
            using var plan = raw.CreateCommand();
            plan.CommandText = "EXPLAIN QUERY PLAN SELECT COALESCE(SUM(max_amount), 0) FROM reservations WHERE state = 0";
            using var reader = plan.ExecuteReader();
            Assert.That(reader.Read(), Is.True);
            Assert.That(reader.GetString(3), Does.Contain("reservations_pending"), "the funds' sum reads the pending index");
        }
        // Written to after the change, read the same way: lease 7 settled and delivered, lease 4 delivered, a new one reserved.
        Assert.That(reopened.Settle(MakeReceipt(Lease(7), Requester, Provider)), Is.EqualTo(LedgerResult.Recorded));
        Assert.That(reopened.MarkDelivered(Lease(7)), Is.EqualTo(LedgerResult.Delivered));
        Assert.That(reopened.MarkDelivered(Lease(4)), Is.EqualTo(LedgerResult.Delivered));
        Assert.That(reopened.ReservePayment(Lease(9), Provider.PeerId, 500), Is.EqualTo(LedgerResult.Reserved));
        Assert.That(reopened.Reservations(PaymentState.Reserved).Select(r => r.LeaseId), Is.EqualTo(new[] { Lease(9) }));
        Assert.That(reopened.Reservations(PaymentState.Settled).Select(r => r.LeaseId), Is.EqualTo(new[] { Lease(5), Lease(6) }));
        Assert.That(reopened.Reservations(PaymentState.Delivered).Select(r => r.LeaseId), Is.EqualTo(new[] { Lease(1), Lease(2), Lease(3), Lease(4), Lease(7) }));
        Assert.That(reopened.Available(), Is.EqualTo(reopened.Balance() - 500));
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
