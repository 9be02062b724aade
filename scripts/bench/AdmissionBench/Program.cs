using System.Diagnostics;
using System.Globalization;
using Microsoft.Data.Sqlite;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;

// A provider's admission read of a requester's standing, side by side in one run on this machine: the kept totals
// (CreditLedger.Requester: one indexed row) against the four queries admission ran before (CreditLedger.RequesterSummed:
// two of them sum every receipt of the requester), at growing histories. Also: the one-off migration of a ledger without
// the totals (computed at open) and `ledger --verify`'s totals check, both reading every row.
// usage: dotnet run --project scripts/bench/AdmissionBench -c Release -- [histories, default 100,10000,300000]
var sizes = (args.Length > 0 ? args[0] : "100,10000,300000").Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
var provider = PrivateKey.FromRandom(new Random(2));
var requester = PrivateKey.FromRandom(new Random(1));
var others = Enumerable.Range(10, 20).Select(i => PrivateKey.FromRandom(new Random(i)).PeerId).ToArray();
var credits = new CreditsOptions();
var process = Process.GetCurrentProcess();

Console.WriteLine($"# Admission read — {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, .NET {Environment.Version}, load {Load()}");
Console.WriteLine();
Console.WriteLine("| requester's receipts (+ 20 others × 1/10 as many) | kept totals µs/read (CPU) | summed, before µs/read (CPU) | ratio | migration at open ms | totals verify ms |");
Console.WriteLine("| ---: | ---: | ---: | ---: | ---: | ---: |");
foreach (var size in sizes)
{
    var dir = Path.Combine(Path.GetTempPath(), "potluck-admissionbench-" + Guid.NewGuid().ToString("N"));
    try
    {
        using (CreditLedger.Open(dir, provider.PeerId, credits, TimeProvider.System))
        {
        }
        using (var raw = new SqliteConnection($"Data Source={Path.Combine(dir, CreditLedger.FileName)};Pooling=False"))
        {
            raw.Open();
            using var tx = raw.BeginTransaction();
            Fill(raw, requester.PeerId, size, unpaidEvery: 50);
            foreach (var other in others)
            {
                Fill(raw, other, Math.Max(1, size / 10), unpaidEvery: 7);
            }
            tx.Commit();
        }

        using var ledger = CreditLedger.Open(dir, provider.PeerId, credits, TimeProvider.System);
        if (ledger.Requester(requester.PeerId) != ledger.RequesterSummed(requester.PeerId))
        {
            throw new InvalidOperationException("the kept totals differ from the summed ones");
        }
        // Alternate the two in rounds so load on the shared machine falls on both alike.
        double keptWall = 0, keptCpu = 0, summedWall = 0, summedCpu = 0;
        long keptReads = 0, summedReads = 0;
        var summedPerRound = Math.Max(3, 300_000 / Math.Max(1, size));
        for (var round = 0; round < 10; round++)
        {
            (var w, var c) = Time(() => ledger.Requester(requester.PeerId), 2_000);
            keptWall += w; keptCpu += c; keptReads += 2_000;
            (w, c) = Time(() => ledger.RequesterSummed(requester.PeerId), summedPerRound);
            summedWall += w; summedCpu += c; summedReads += summedPerRound;
        }
        var kept = keptWall / keptReads * 1e6;
        var summed = summedWall / summedReads * 1e6;

        // The migration of a ledger from before the totals: drop them, reopen (computed once at open).
        ledger.Dispose();
        using (var raw = new SqliteConnection($"Data Source={Path.Combine(dir, CreditLedger.FileName)};Pooling=False"))
        {
            raw.Open();
            foreach (var sql in new[] { "totals_entry", "totals_owed_insert", "totals_owed_update", "totals_owed_delete", "totals_violation_insert", "totals_violation_delete" })
            {
                Exec(raw, $"DROP TRIGGER {sql}");
            }
            Exec(raw, "DROP TABLE counterparty_totals");
        }
        var clock = Stopwatch.StartNew();
        using var migrated = CreditLedger.Open(dir, provider.PeerId, credits, TimeProvider.System);
        var migration = clock.Elapsed.TotalMilliseconds;
        clock.Restart();
        var mismatches = migrated.TotalsMismatches();
        var verify = clock.Elapsed.TotalMilliseconds;
        if (mismatches.Count != 0)
        {
            throw new InvalidOperationException("mismatches after migration");
        }
        Console.WriteLine($"| {size:N0} | {kept:0.0} ({keptCpu / keptReads * 1e6:0.0}) | {summed:0.0} ({summedCpu / summedReads * 1e6:0.0}) | {summed / kept:0}× | {migration:0} | {verify:0} |");
    }
    finally
    {
        SqliteConnection.ClearAllPools();
        try
        {
            Directory.Delete(dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
Console.WriteLine();
Console.WriteLine($"load after: {Load()}; process CPU {process.TotalProcessorTime.TotalSeconds:0.0} s");
return 0;

(double Wall, double Cpu) Time(Func<RequesterRecord> read, int count)
{
    process.Refresh();
    var cpu = process.TotalProcessorTime;
    var clock = Stopwatch.StartNew();
    for (var i = 0; i < count; i++)
    {
        read();
    }
    var wall = clock.Elapsed.TotalSeconds;
    process.Refresh();
    return (wall, (process.TotalProcessorTime - cpu).TotalSeconds);
}

// Earned entries with receipt-sized rows (282 bytes, as a signed receipt), and an owed row per lease (every
// unpaidEvery-th one unpaid), as a provider's ledger holds them for a requester it served that often.
static void Fill(SqliteConnection raw, PeerId peer, int count, int unpaidEvery)
{
    using var cmd = raw.CreateCommand();
    cmd.CommandText = """
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $count)
        INSERT INTO owed (requester, lease_id, amount, paid, created_at)
        SELECT $peer, randomblob(16), 25, CASE WHEN i % $every = 0 THEN 0 ELSE 1 END, 0 FROM n;
        INSERT INTO entries (receipt_id, kind, counterparty, lease_id, amount, receipt, recorded_at)
        SELECT randomblob(32), 1, requester, lease_id, 25, zeroblob(282), 0 FROM owed WHERE requester = $peer AND paid = 1;
        """;
    cmd.Parameters.AddWithValue("$count", count);
    cmd.Parameters.AddWithValue("$peer", peer.ToBytes());
    cmd.Parameters.AddWithValue("$every", unpaidEvery);
    cmd.ExecuteNonQuery();
}

static void Exec(SqliteConnection raw, string sql)
{
    using var cmd = raw.CreateCommand();
    cmd.CommandText = sql;
    cmd.ExecuteNonQuery();
}

static string Load() => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "?";
