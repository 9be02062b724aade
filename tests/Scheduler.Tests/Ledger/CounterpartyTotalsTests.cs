using Microsoft.Data.Sqlite;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Ledger;

/// <summary>The per-counterparty totals behind a provider's one-row admission read (CreditLedger.Totals.cs).</summary>
public class CounterpartyTotalsTests
{
    private TempDir _dir = null!;

    [SetUp]
    public void SetUp() => _dir = new TempDir();

    [TearDown]
    public void TearDown() => _dir.Dispose();

    private string ProviderDir => _dir.Sub("provider");

    // Payments count at once here: what is held back is HoldbackTests' subject (Requester() subtracts it from Supplied).
    private CreditLedger OpenProvider() => LedgerFactory.Open(ProviderDir, Provider, CreditsFixtures.Options with { Holdback = TimeSpan.Zero });

    private void Raw(string dir, params string[] statements)
    {
        using var raw = new SqliteConnection($"Data Source={Path.Combine(dir, CreditLedger.FileName)};Pooling=False");
        raw.Open();
        foreach (var sql in statements)
        {
            using var cmd = raw.CreateCommand();
            cmd.CommandText = sql;
            cmd.ExecuteNonQuery();
        }
    }

    /// <summary>A provider's history with <see cref="Requester"/> and <see cref="Stranger"/>: owed, paid, forgotten, a violation, and a payment made.</summary>
    private static void History(CreditLedger provider, int leases)
    {
        for (var i = 0; i < leases; i++)
        {
            var lease = Lease(i);
            Assert.That(provider.RecordOwed(lease, Requester.PeerId, 3_000), Is.EqualTo(LedgerResult.Owed));
            if (i % 3 != 2)
            {
                Assert.That(provider.RecordEarned(MakeReceipt(lease, Requester, Provider)), Is.EqualTo(LedgerResult.Recorded));
            }
        }
        provider.ForgetOwed(Lease(2), Requester.PeerId); // one unpaid lease whose result never left
        provider.RecordOwed(Lease(1000), Stranger.PeerId, 700);
        provider.RecordViolation(Stranger.PeerId, Lease(1000), 1, null);
        // The provider paid the requester for work the other way round: Supplied.
        provider.ReservePayment(Lease(2000), Requester.PeerId, 5_000);
        Assert.That(provider.Settle(MakeReceipt(Lease(2000), Provider, Requester, fuel: 1_000_000)), Is.EqualTo(LedgerResult.Recorded));
    }

    [Test]
    public void Requester_OneRowRead_EqualsTheSumsOverTheRows_AfterEveryKindOfWrite()
    {
        using var provider = OpenProvider();
        Assert.That(provider.Requester(Requester.PeerId), Is.EqualTo(default(RequesterRecord)), "no history: zeros");
        History(provider, leases: 9);

        var requester = provider.Requester(Requester.PeerId);
        Assert.That(requester, Is.EqualTo(provider.RequesterSummed(Requester.PeerId)));
        // 9 leases owed 3,000 each; 6 paid 2,500; 3 unpaid of which one forgotten; paid the requester 1,000.
        Assert.That(requester, Is.EqualTo(new RequesterRecord(Consumed: 6 * 2_500 + 2 * 3_000, Supplied: 1_000, Unpaid: 2 * 3_000, Violations: 0)));
        var stranger = provider.Requester(Stranger.PeerId);
        Assert.That(stranger, Is.EqualTo(new RequesterRecord(700, 0, 700, 1)));
        Assert.That(stranger, Is.EqualTo(provider.RequesterSummed(Stranger.PeerId)));
        Assert.That(provider.TotalsMismatches(), Is.Empty);
    }

    [Test]
    public void Totals_RolledBackWrite_LeavesNoTrace()
    {
        using var provider = OpenProvider();
        History(provider, leases: 3);
        var before = provider.Requester(Requester.PeerId);
        provider.RecordOwed(Lease(50), Requester.PeerId, 3_000);
        provider.CrashHook = step => throw new IOException("crash at " + step);
        Assert.Throws<IOException>(() => provider.RecordEarned(MakeReceipt(Lease(50), Requester, Provider)));
        provider.CrashHook = null;
        Assert.That(provider.Requester(Requester.PeerId), Is.EqualTo(before with { Consumed = before.Consumed + 3_000, Unpaid = before.Unpaid + 3_000 }));
        Assert.That(provider.TotalsMismatches(), Is.Empty);
    }

    [Test]
    public void Open_LedgerFromBeforeTheTotals_ComputesThemOnceFromTheRows()
    {
        using (var provider = OpenProvider())
        {
            History(provider, leases: 12);
        }
        // What a ledger written before this table existed looks like: no table, no triggers.
        Raw(ProviderDir,
            "DROP TRIGGER totals_entry", "DROP TRIGGER totals_owed_insert", "DROP TRIGGER totals_owed_update", "DROP TRIGGER totals_owed_delete",
            "DROP TRIGGER totals_violation_insert", "DROP TRIGGER totals_violation_delete", "DROP TABLE counterparty_totals");

        using var reopened = OpenProvider();
        Assert.That(reopened.Requester(Requester.PeerId), Is.EqualTo(reopened.RequesterSummed(Requester.PeerId)));
        Assert.That(reopened.Requester(Requester.PeerId).Consumed, Is.EqualTo(8 * 2_500 + 3 * 3_000));
        Assert.That(reopened.Requester(Stranger.PeerId), Is.EqualTo(new RequesterRecord(700, 0, 700, 1)));
        Assert.That(reopened.TotalsMismatches(), Is.Empty);
        // And kept from then on.
        reopened.RecordOwed(Lease(99), Requester.PeerId, 3_000);
        Assert.That(reopened.RecordEarned(MakeReceipt(Lease(99), Requester, Provider)), Is.EqualTo(LedgerResult.Recorded));
        Assert.That(reopened.Requester(Requester.PeerId), Is.EqualTo(reopened.RequesterSummed(Requester.PeerId)));
    }

    [Test]
    public void Verify_ACorruptedTotal_IsReportedWithTheCounterpartyAndTheDifference()
    {
        using (var provider = OpenProvider())
        {
            History(provider, leases: 4);
            Assert.That(ChainAudit.Verify(provider).TotalsMismatches, Is.Empty);
        }
        // Someone edits the kept total to raise the requester's standing (reopening does not recompute it).
        Raw(ProviderDir, $"UPDATE counterparty_totals SET spent = spent + 5000 WHERE counterparty = x'{Convert.ToHexString(Requester.PeerId.ToBytes())}'");

        using var reopened = OpenProvider();
        var mismatches = reopened.TotalsMismatches();
        Assert.That(mismatches, Has.Count.EqualTo(1));
        Assert.That(mismatches[0], Is.EqualTo(new TotalsMismatch(Requester.PeerId, 0, 5_000, 0, 0)));
        var report = ChainAudit.Verify(reopened);
        Assert.That(report.IsSound, Is.False);
        Assert.That(report.TotalsMismatches, Is.EqualTo(mismatches));
        Assert.That(report.Problems, Has.Some.Contains("totals of " + Requester.PeerId));
    }

    [Test]
    public void Verify_AMissingTotalsRow_IsReported()
    {
        using (var provider = OpenProvider())
        {
            History(provider, leases: 2);
        }
        Raw(ProviderDir, $"DELETE FROM counterparty_totals WHERE counterparty = x'{Convert.ToHexString(Stranger.PeerId.ToBytes())}'");
        using var reopened = OpenProvider();
        Assert.That(reopened.TotalsMismatches(), Is.EqualTo(new[] { new TotalsMismatch(Stranger.PeerId, 0, 0, -700, -1) }));
    }
}
