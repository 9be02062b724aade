using Microsoft.Data.Sqlite;
using Potluck.Scheduler.Credits;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Ledger;

/// <summary>
/// The requester's reservation row, written per lease (stop 39): counted in commits and WAL frames (pages written), read from
/// the ledger's WAL file itself, so the same tests run against main's code. Main kept a state index over every reservation,
/// where a lease's Delivered move rewrote two pages of it; here the state index holds only the open rows.
/// </summary>
public class ReservationWritesTests
{
    private TempDir _dir = null!;

    [SetUp]
    public void SetUp() => _dir = new TempDir();

    [TearDown]
    public void TearDown() => _dir.Dispose();

    private string RequesterDir => _dir.Sub("requester");

    /// <summary>The state of a lease's reservation as the file holds it, read on a connection of its own (what a crash would leave).</summary>
    private string StatesInTheFile(params byte[][] leases)
    {
        using var raw = new SqliteConnection($"Data Source={Path.Combine(RequesterDir, CreditLedger.FileName)};Mode=ReadOnly;Pooling=False");
        raw.Open();
        using var cmd = raw.CreateCommand();
        cmd.CommandText = "SELECT state FROM reservations WHERE lease_id = $lease";
        var lease = cmd.Parameters.Add("$lease", SqliteType.Blob);
        return string.Join(",", leases.Select(l =>
        {
            lease.Value = l;
            return Convert.ToString(cmd.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
        }));
    }

    /// <summary>
    /// <paramref name="count"/> leases of long ago, all Delivered, as a requester's ledger holds after a day's work, written
    /// straight into the file (the ledger closed).
    /// </summary>
    private void DeliveredLeasesOfLongAgo(int count)
    {
        using (LedgerFactory.Open(RequesterDir, Requester))
        {
        }
        using var raw = new SqliteConnection($"Data Source={Path.Combine(RequesterDir, CreditLedger.FileName)};Pooling=False");
        raw.Open();
        using var tx = raw.BeginTransaction();
        using var cmd = raw.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = """
            INSERT INTO reservations (lease_id, provider, max_amount, state, receipt_id, created_at, updated_at)
            VALUES ($lease, $provider, 10000, 2, $lease, 0, 0)
            """;
        var lease = cmd.Parameters.Add("$lease", SqliteType.Blob);
        cmd.Parameters.AddWithValue("$provider", Provider.PeerId.ToBytes());
        for (var i = 0; i < count; i++)
        {
            lease.Value = Lease(1_000_000 + i);
            cmd.ExecuteNonQuery();
        }
        tx.Commit();
    }

    /// <summary>
    /// After 3,000 Delivered leases, a lease's Delivered mark commits two pages: the row's, and the one page of the open-state
    /// index its entry leaves. On main it moved the entry to the far end of an index of every lease: three pages.
    /// </summary>
    [Test]
    public void DeliveredMark_AfterThousandsOfLeases_WritesTheRowAndOneIndexPage()
    {
        DeliveredLeasesOfLongAgo(3_000);
        using var requester = LedgerFactory.Open(RequesterDir, Requester);
        var lease = Lease(1);
        Assert.That(requester.ReservePayment(lease, Provider.PeerId, 10_000), Is.EqualTo(LedgerResult.Reserved));
        Assert.That(requester.Settle(MakeReceipt(lease, Requester, Provider)), Is.EqualTo(LedgerResult.Recorded));
        var before = WalFile.Read(requester);

        Assert.That(requester.MarkDelivered(lease), Is.EqualTo(LedgerResult.Delivered));
        Assert.That(requester.GetReservation(lease)!.State, Is.EqualTo(PaymentState.Delivered));

        var after = WalFile.Read(requester);
        Assert.That((after.Frames - before.Frames, after.Commits - before.Commits), Is.EqualTo((2L, 1L)),
            "the row's page and the open index's page, one commit (main: three pages, the state index's twice)");
        Assert.That(requester.Reservations(PaymentState.Delivered), Has.Count.EqualTo(3_001));
        Assert.That(requester.Reservations(PaymentState.Settled), Is.Empty);
    }
}
