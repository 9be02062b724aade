using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Data.Sqlite;

namespace Potluck.Chaos;

/// <summary>
/// Crash safety, tested by killing (issue 9): real <c>potluck run</c> providers and a <c>potluck submit --batch</c>
/// requester as processes on loopback, batches of hashchain tasks submitted one after another, and SIGKILL at random
/// moments to a provider or the requester. A killed process is restarted within a second on the same address, identity
/// and data directory (the batch resumes with what has no output yet). When the kills are done, the last batch finishes
/// and one more runs with no kills (it also hands over receipts a killed requester left settled), the providers are
/// stopped, and both sides' ledgers are reconciled.
/// </summary>
internal static partial class Program
{
    private static readonly object Gate = new();
    private static readonly List<(DateTimeOffset At, string Victim)> Kills = [];
    private static string _logDir = "";

    private static async Task<int> Main(string[] args)
    {
        if (args.Length < 2)
        {
            Console.Error.WriteLine("usage: Potluck.Chaos <potluck.dll> <hashchain.wasm> [--kills N] [--providers N] [--limit-s N] [--seed N] [--ci] [--keep]");
            return 2;
        }
        var potluck = args[0];
        var module = args[1];
        int kills = 100, providers = 2, limitS = 900, tasksPerBatch = 24, parallel = 2, hashRounds = 20000;
        var seed = Environment.TickCount & 0x7fffffff;
        var keep = false;
        for (var i = 2; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--ci": kills = 5; providers = 1; limitS = 40; tasksPerBatch = 8; break;
                case "--kills": kills = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--providers": providers = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--limit-s": limitS = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--seed": seed = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--tasks": tasksPerBatch = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--keep": keep = true; break;
                default: Console.Error.WriteLine($"unknown option {args[i]}"); return 2;
            }
        }
        var work = Directory.CreateTempSubdirectory("potluck-chaos-").FullName;
        _logDir = Directory.CreateDirectory(Path.Combine(work, "logs")).FullName;
        Console.WriteLine($"chaos: {kills} kills, {providers} provider(s), batches of {tasksPerBatch} (--parallel {parallel}), seed {seed}, limit {limitS} s; logs in {_logDir}");
        var started = Stopwatch.StartNew();
        var rng = new Random(seed);

        var nodes = new List<ProviderNode>();
        for (var i = 0; i < providers; i++)
        {
            nodes.Add(new ProviderNode($"provider{i}", potluck, Path.Combine(work, $"provider{i}"), FreePort()));
        }
        var requester = new RequesterNode(potluck, module, Path.Combine(work, "requester"), parallel, hashRounds);
        using var stopAll = new CancellationTokenSource();
        var exitCode = 1;
        try
        {
            var supervisors = nodes.Select(n => n.SuperviseAsync(new Random(rng.Next()), stopAll.Token)).ToList();
            await Task.WhenAll(nodes.Select(n => n.WaitReadyAsync(TimeSpan.FromSeconds(90))));
            requester.Bootstrap = [.. nodes.Select(n => n.Address!)];
            Console.WriteLine($"chaos: providers up in {started.Elapsed.TotalSeconds:F1} s");

            var killDeadline = started.Elapsed + TimeSpan.FromSeconds(limitS);
            using var killing = new CancellationTokenSource();
            var killer = KillLoopAsync(kills, nodes, requester, new Random(rng.Next()), killDeadline, started, killing.Token);
            var batches = await requester.RunBatchesAsync(Path.Combine(work, "batches"), tasksPerBatch, new Random(rng.Next()), killer,
                started, killDeadline + TimeSpan.FromSeconds(180));
            killing.Cancel();
            await killer;

            stopAll.Cancel();
            await Task.WhenAll(nodes.Select(n => n.StopAsync()));
            await Task.WhenAll(supervisors);

            var report = Reconcile(requester, nodes, batches, started.Elapsed);
            exitCode = report ? 0 : 1;
        }
        finally
        {
            stopAll.Cancel();
            foreach (var n in nodes)
            {
                n.KillNow();
            }
            requester.KillNow();
            if (!keep && exitCode == 0)
            {
                try
                {
                    Directory.Delete(work, recursive: true);
                }
                catch (IOException)
                {
                }
            }
            else
            {
                Console.WriteLine($"chaos: data directories and logs kept in {work}");
            }
        }
        return exitCode;
    }

    /// <summary>
    /// Until the count or the time is up: picks a provider or the requester at random and kills it once it has been up
    /// (a provider: since it listened; the requester: since it started) for a random 0.5–6 s, so kills land anywhere in
    /// start-up, leasing, running, paying and receipt delivery.
    /// </summary>
    private static async Task<int> KillLoopAsync(int count, List<ProviderNode> providers, RequesterNode requester, Random rng, TimeSpan deadline,
        Stopwatch clock, CancellationToken ct)
    {
        var done = 0;
        try
        {
            while (done < count && clock.Elapsed < deadline)
            {
                var victims = new List<IVictim>(providers) { requester };
                var victim = victims[rng.Next(victims.Count)];
                var after = TimeSpan.FromMilliseconds(rng.Next(500, 6000));
                // A process that ends before it has been up that long (a short `submit --batch` run) is not waited on
                // for ever: the victim and the moment are drawn again (else no kill would ever land on a fast batch).
                TimeSpan? seen = null;
                var redraw = false;
                while (victim.UpFor is not { } up || up < after)
                {
                    var now = victim.UpFor;
                    if (seen is { } was && (now is null || now < was))
                    {
                        redraw = true;
                        break;
                    }
                    seen = now ?? seen;
                    await Task.Delay(100, ct);
                    if (clock.Elapsed >= deadline)
                    {
                        return done;
                    }
                }
                if (redraw)
                {
                    continue;
                }
                if (victim.KillForChaos())
                {
                    done++;
                    lock (Gate)
                    {
                        Kills.Add((DateTimeOffset.UtcNow, victim.Name));
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        Console.WriteLine($"chaos: {done} kills done at {clock.Elapsed.TotalSeconds:F0} s");
        return done;
    }

    private static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        var port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    internal static string NewLog(string name)
    {
        lock (Gate)
        {
            for (var i = 0; ; i++)
            {
                var path = Path.Combine(_logDir, $"{name}-{i:D3}.log");
                if (!File.Exists(path))
                {
                    File.WriteAllText(path, "");
                    return path;
                }
            }
        }
    }

    /// <summary>Starts a process whose output goes to <paramref name="log"/>; <paramref name="onLine"/> sees each stdout line.</summary>
    internal static Process Start(string potluck, IEnumerable<string> args, string log, Action<string>? onLine = null)
    {
        var info = new ProcessStartInfo("dotnet", [potluck, .. args])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        info.Environment["POTLUCK__PREFERENCES__ONLYWHENIDLE"] = "false";
        info.Environment["POTLUCK__PREFERENCES__NOTONBATTERY"] = "false";
        info.Environment["DOTNET_TieredPGO"] = "0";
        var writer = new StreamWriter(log, append: true) { AutoFlush = true };
        var process = new Process { StartInfo = info, EnableRaisingEvents = true };
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                return;
            }
            lock (writer)
            {
                writer.WriteLine(e.Data);
            }
            onLine?.Invoke(e.Data);
        };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (writer)
                {
                    writer.WriteLine(e.Data);
                }
            }
        };
        process.Exited += (_, _) =>
        {
            // Let the output readers drain before the writer closes.
            _ = Task.Delay(2000).ContinueWith(_ =>
            {
                lock (writer)
                {
                    writer.Dispose();
                }
            }, TaskScheduler.Default);
        };
        process.Start();
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    // ------------------------------------------------------------------ reconciliation

    private sealed record Entry(string ReceiptId, string LeaseId, string Counterparty, long Amount);

    private sealed record Owed(string Requester, string LeaseId, long Amount, bool Paid, long CreatedAt);

    private sealed record Reservation(string LeaseId, string Provider, int State, long CreatedAt, long UpdatedAt);

    private sealed record Ledger(string Owner, List<Entry> Spent, List<Entry> Earned, List<Owed> Owed, List<Reservation> Reservations);

    private static Ledger ReadLedger(string dataDir)
    {
        var path = Path.Combine(dataDir, "ledger.db");
        using var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Mode = SqliteOpenMode.ReadOnly, Pooling = false }.ToString());
        connection.Open();
        string Hex(object o) => Convert.ToHexString((byte[])o);
        List<T> Query<T>(string sql, Func<SqliteDataReader, T> map)
        {
            using var command = connection.CreateCommand();
            command.CommandText = sql;
            using var reader = command.ExecuteReader();
            var list = new List<T>();
            while (reader.Read())
            {
                list.Add(map(reader));
            }
            return list;
        }
        var owner = Query("SELECT value FROM meta WHERE key = 'owner'", r => Hex(r.GetValue(0))).Single();
        var entries = Query("SELECT receipt_id, lease_id, counterparty, amount, kind FROM entries WHERE kind IN (1, 2)",
            r => (Kind: r.GetInt32(4), Entry: new Entry(Hex(r.GetValue(0)), r.IsDBNull(1) ? "" : Hex(r.GetValue(1)), Hex(r.GetValue(2)), r.GetInt64(3))));
        var owed = Query("SELECT requester, lease_id, amount, paid, created_at FROM owed",
            r => new Owed(Hex(r.GetValue(0)), Hex(r.GetValue(1)), r.GetInt64(2), r.GetInt32(3) == 1, r.GetInt64(4)));
        var reservations = Query("SELECT lease_id, provider, state, created_at, updated_at FROM reservations",
            r => new Reservation(Hex(r.GetValue(0)), Hex(r.GetValue(1)), r.GetInt32(2), r.GetInt64(3), r.GetInt64(4)));
        return new Ledger(owner, [.. entries.Where(e => e.Kind == 2).Select(e => e.Entry)], [.. entries.Where(e => e.Kind == 1).Select(e => e.Entry)],
            owed, reservations);
    }

    private static bool Reconcile(RequesterNode requesterNode, List<ProviderNode> providerNodes, BatchTally tally, TimeSpan elapsed)
    {
        var requester = ReadLedger(requesterNode.DataDir);
        var providers = providerNodes.Select(p => (Node: p, Ledger: ReadLedger(p.DataDir))).ToList();
        var byOwner = providers.ToDictionary(p => p.Ledger.Owner, p => p.Ledger);

        // Receipts the requester settled that the provider has not recorded (after redelivery), and the reverse.
        var settledNotRecorded = requester.Spent.Count(s => !byOwner.TryGetValue(s.Counterparty, out var p) || p.Earned.All(e => e.ReceiptId != s.ReceiptId));
        var recordedNotSettled = providers.Sum(p => p.Ledger.Earned.Count(e => e.Counterparty == requester.Owner && requester.Spent.All(s => s.ReceiptId != e.ReceiptId)));
        // Counted twice: two Spent entries for one lease, or two Earned entries for one lease at one provider.
        var countedTwice = requester.Spent.GroupBy(s => s.LeaseId).Sum(g => g.Count() - 1)
            + providers.Sum(p => p.Ledger.Earned.GroupBy(e => (e.Counterparty, e.LeaseId)).Sum(g => g.Count() - 1));
        // Paid but never delivered: an Earned entry with no completed lease behind it (owed and marked paid), or more than owed.
        var paidNotOwed = providers.Sum(p => p.Ledger.Earned.Count(e => !p.Ledger.Owed.Any(o => o.Requester == e.Counterparty && o.LeaseId == e.LeaseId && o.Paid && e.Amount <= o.Amount)));
        // Owed marked paid without a receipt recorded for it.
        var paidWithoutReceipt = providers.Sum(p => p.Ledger.Owed.Count(o => o.Paid && !p.Ledger.Earned.Any(e => e.Counterparty == o.Requester && e.LeaseId == o.LeaseId)));
        // Both sides' totals.
        var totalsDisagree = 0;
        var totals = new List<string>();
        foreach (var (node, ledger) in providers)
        {
            var spent = requester.Spent.Where(s => s.Counterparty == ledger.Owner).Sum(s => s.Amount);
            var earned = ledger.Earned.Where(e => e.Counterparty == requester.Owner).Sum(e => e.Amount);
            var owedPaid = ledger.Owed.Where(o => o.Requester == requester.Owner && o.Paid).Sum(o => o.Amount);
            totals.Add($"{node.Name}: paid {spent} µcredits / earned {earned} / owed for paid leases {owedPaid}");
            if (spent != earned)
            {
                totalsDisagree++;
            }
        }
        var stillSettled = requester.Reservations.Count(r => r.State == 1);
        var stillReserved = requester.Reservations.Count(r => r.State == 0);

        // Completed by a provider and never paid: explained only by a kill of the requester or of that provider while the lease
        // was open (the requester never accepted the result); anything else is work done and lost.
        List<(DateTimeOffset At, string Victim)> kills;
        lock (Gate)
        {
            kills = [.. Kills];
        }
        int unpaidExplained = 0, unpaidUnexplained = 0;
        long unpaidAmount = 0;
        var reservations = requester.Reservations.ToDictionary(r => r.LeaseId);
        foreach (var (node, ledger) in providers)
        {
            foreach (var o in ledger.Owed.Where(o => o.Requester == requester.Owner && !o.Paid))
            {
                unpaidAmount += o.Amount;
                var explained = reservations.TryGetValue(o.LeaseId, out var r) && r.State == 3
                    && kills.Any(k => (k.Victim == "requester" || k.Victim == node.Name)
                        && k.At.ToUnixTimeMilliseconds() >= r.CreatedAt - 1000 && k.At.ToUnixTimeMilliseconds() <= r.UpdatedAt + 1000);
                if (explained)
                {
                    unpaidExplained++;
                }
                else
                {
                    unpaidUnexplained++;
                    Console.WriteLine($"  unexplained unpaid lease {o.LeaseId} at {node.Name} (requester reservation: {(r is null ? "none" : $"state {r.State}")})");
                }
            }
        }

        var requesterKills = kills.Count(k => k.Victim == "requester");
        var providerKills = kills.Count - requesterKills;
        var leases = requester.Reservations.Count;
        var paidLeases = requester.Reservations.Count(r => r.State is 1 or 2);
        Console.WriteLine();
        Console.WriteLine($"| kill -9 chaos ({elapsed.TotalSeconds:F0} s) | result |");
        Console.WriteLine("| --- | ---: |");
        Console.WriteLine($"| kills (provider / requester) | {kills.Count} ({providerKills} / {requesterKills}) |");
        Console.WriteLine($"| tasks submitted / completed with the right output | {tally.Inputs} / {tally.Correct} |");
        Console.WriteLine($"| wrong outputs | {tally.Wrong} |");
        Console.WriteLine($"| tasks neither completed nor reported failed | {tally.Inputs - tally.Correct - tally.Wrong - tally.FailedAtEnd} |");
        Console.WriteLine($"| submissions that failed (retried by the next run) | {tally.FailedReports} |");
        Console.WriteLine($"| batch runs interrupted by a kill and resumed | {tally.Interrupted} |");
        Console.WriteLine($"| leases begun / paid / ended unpaid (interrupted, retried) | {leases} / {paidLeases} / {requester.Reservations.Count(r => r.State == 3)} |");
        Console.WriteLine($"| receipts the requester settled that the provider has not recorded | {settledNotRecorded} |");
        Console.WriteLine($"| receipts a provider recorded that the requester never settled | {recordedNotSettled} |");
        Console.WriteLine($"| receipts counted twice (a lease paid or earned twice) | {countedTwice} |");
        Console.WriteLine($"| receipts earned for no completed lease, or above what was owed | {paidNotOwed} |");
        Console.WriteLine($"| leases marked paid without a receipt | {paidWithoutReceipt} |");
        Console.WriteLine($"| providers whose earned total differs from the requester's paid total | {totalsDisagree} |");
        Console.WriteLine($"| receipts still undelivered at the end / reservations still open | {stillSettled} / {stillReserved} |");
        Console.WriteLine($"| completed but unpaid: the requester or provider was killed while the lease was open | {unpaidExplained} ({unpaidAmount} µcredits owed) |");
        Console.WriteLine($"| completed but unpaid with no kill to explain it (work lost) | {unpaidUnexplained} |");
        Console.WriteLine($"| processes that exited on their own (crashes) | {tally.Crashes + providerNodes.Sum(p => p.Crashes)} |");
        foreach (var line in totals)
        {
            Console.WriteLine($"  {line}");
        }
        foreach (var failure in tally.FailureReasons.Take(10))
        {
            Console.WriteLine($"  failed: {failure}");
        }
        var ok = tally.Wrong == 0 && tally.Correct == tally.Inputs && tally.FailedReports == 0 && settledNotRecorded == 0 && recordedNotSettled == 0
            && countedTwice == 0 && paidNotOwed == 0 && paidWithoutReceipt == 0 && totalsDisagree == 0 && stillSettled == 0 && stillReserved == 0
            && unpaidUnexplained == 0 && tally.Crashes + providerNodes.Sum(p => p.Crashes) == 0;
        Console.WriteLine(ok ? "chaos: nothing lost, nothing counted twice" : "chaos: FAILED (see the table)");
        return ok;
    }

    internal static string Expected(byte[] seed, int rounds)
    {
        var h = SHA256.HashData(seed);
        for (var i = 1; i < rounds; i++)
        {
            h = SHA256.HashData(h);
        }
        return Convert.ToHexString(h).ToLowerInvariant() + "\n";
    }

    [GeneratedRegex(@"Listening on (/ip4/127\.0\.0\.1/tcp/\d+/p2p/\S+)")]
    internal static partial Regex ListeningPattern();
}

internal interface IVictim
{
    string Name { get; }

    /// <summary>How long it has been up (a provider: listening), or null when it is not.</summary>
    TimeSpan? UpFor { get; }

    /// <summary>SIGKILL, when running; true when it was killed.</summary>
    bool KillForChaos();
}

/// <summary>A <c>potluck run</c> provider, restarted 0–1 s after each kill on the same port and data directory.</summary>
internal sealed class ProviderNode(string name, string potluck, string dataDir, int port) : IVictim
{
    private readonly object _gate = new();
    private Process? _process;
    private bool _killedByUs;
    private TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public string Name { get; } = name;

    public string DataDir { get; } = dataDir;

    public string? Address { get; private set; }

    public int Crashes { get; private set; }

    private readonly Stopwatch _up = new();

    public bool IsReady => _ready.Task.IsCompleted && !_killedByUs && _process is { HasExited: false };

    public TimeSpan? UpFor
    {
        get
        {
            lock (_gate)
            {
                return IsReady ? _up.Elapsed : null;
            }
        }
    }

    public Task WaitReadyAsync(TimeSpan timeout) => _ready.Task.WaitAsync(timeout);

    public async Task SuperviseAsync(Random rng, CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            Process process;
            lock (_gate)
            {
                _killedByUs = false;
                var ready = _ready;
                process = _process = Program.Start(potluck, ["run", "--listen", $"/ip4/127.0.0.1/tcp/{port}", "--no-mdns", "--data-dir", DataDir,
                    "--control-listen", "127.0.0.1:0", "--cores", "2", "--log-level", "warning"], Program.NewLog(Name), line =>
                {
                    if (Program.ListeningPattern().Match(line) is { Success: true } m)
                    {
                        Address = m.Groups[1].Value;
                        _up.Restart();
                        ready.TrySetResult();
                    }
                });
            }
            await process.WaitForExitAsync(CancellationToken.None);
            lock (_gate)
            {
                if (!_killedByUs && !ct.IsCancellationRequested)
                {
                    Crashes++;
                    Console.WriteLine($"chaos: {Name} exited on its own with code {process.ExitCode}");
                }
                _ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }
            if (ct.IsCancellationRequested)
            {
                return;
            }
            try
            {
                await Task.Delay(rng.Next(0, 1000), ct);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    public bool KillForChaos()
    {
        lock (_gate)
        {
            if (_process is not { HasExited: false } p || !_ready.Task.IsCompleted || _killedByUs)
            {
                return false; // not up, or killed already and not restarted yet
            }
            _killedByUs = true;
            p.Kill();
            return true;
        }
    }

    /// <summary>SIGTERM (a clean stop), then SIGKILL after 20 s.</summary>
    public async Task StopAsync()
    {
        Process? p;
        lock (_gate)
        {
            p = _process;
            _killedByUs = true;
        }
        if (p is null || p.HasExited)
        {
            return;
        }
        using (var term = Process.Start("kill", ["-TERM", p.Id.ToString(CultureInfo.InvariantCulture)]))
        {
            await term.WaitForExitAsync();
        }
        try
        {
            await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(20));
        }
        catch (TimeoutException)
        {
            p.Kill();
        }
    }

    public void KillNow()
    {
        lock (_gate)
        {
            _killedByUs = true;
            try
            {
                if (_process is { HasExited: false } p)
                {
                    p.Kill();
                }
            }
            catch (InvalidOperationException)
            {
            }
        }
    }
}

internal sealed class BatchTally
{
    public int Inputs { get; set; }
    public int Correct { get; set; }
    public int Wrong { get; set; }
    public int FailedAtEnd { get; set; }
    public int FailedReports { get; set; }
    public int Interrupted { get; set; }
    public int Crashes { get; set; }
    public List<string> FailureReasons { get; } = [];
}

/// <summary>The requester: <c>potluck submit --batch</c> on one data directory, restarted 0–1 s after each kill (the batch resumes).</summary>
internal sealed class RequesterNode(string potluck, string module, string dataDir, int parallel, int hashRounds) : IVictim
{
    private readonly object _gate = new();
    private Process? _process;
    private bool _killedByUs;

    public string Name => "requester";

    public string DataDir { get; } = dataDir;

    public IReadOnlyList<string> Bootstrap { get; set; } = [];

    private readonly Stopwatch _up = new();

    public TimeSpan? UpFor
    {
        get
        {
            lock (_gate)
            {
                return _process is { HasExited: false } && !_killedByUs ? _up.Elapsed : null;
            }
        }
    }

    /// <summary>
    /// Runs batch after batch until the killer is done, then the batch in progress to its end and one more with no kills.
    /// A run that reports failures is run again (it retries only the failed inputs), at most 10 times per batch.
    /// </summary>
    public async Task<BatchTally> RunBatchesAsync(string root, int tasks, Random rng, Task killer, Stopwatch clock, TimeSpan hardDeadline)
    {
        var tally = new BatchTally();
        var final = false;
        for (var batch = 0; ; batch++)
        {
            var input = Directory.CreateDirectory(Path.Combine(root, $"b{batch:D3}", "in")).FullName;
            var output = Path.Combine(root, $"b{batch:D3}", "out");
            var expected = new Dictionary<string, string>();
            for (var i = 0; i < tasks; i++)
            {
                var seed = new byte[16];
                rng.NextBytes(seed);
                var name = $"t{i:D3}";
                File.WriteAllBytes(Path.Combine(input, name), seed);
                expected[name] = Program.Expected(seed, hashRounds);
            }
            tally.Inputs += tasks;
            var reruns = 0;
            while (true)
            {
                if (clock.Elapsed > hardDeadline)
                {
                    Console.WriteLine("chaos: hard deadline reached; stopping the batches");
                    Count(tally, output, expected);
                    return tally;
                }
                var (code, killed) = await RunOnceAsync(input, output);
                if (killed)
                {
                    tally.Interrupted++;
                    await Task.Delay(rng.Next(0, 1000));
                    continue;
                }
                foreach (var failed in Directory.Exists(output) ? Directory.GetFiles(output, ".*.failed") : [])
                {
                    tally.FailedReports++;
                    tally.FailureReasons.Add($"batch {batch} {Path.GetFileName(failed)}: {File.ReadAllText(failed).Trim()}");
                    File.Delete(failed);
                }
                if (code == 0)
                {
                    break;
                }
                if (code != 1)
                {
                    tally.Crashes++;
                    Console.WriteLine($"chaos: the requester exited with code {code}");
                }
                if (++reruns > 10)
                {
                    Console.WriteLine($"chaos: batch {batch} still incomplete after {reruns} runs");
                    break;
                }
            }
            Count(tally, output, expected);
            Console.WriteLine($"chaos: batch {batch} done at {clock.Elapsed.TotalSeconds:F0} s ({tally.Correct}/{tally.Inputs} right so far, {tally.Interrupted} runs interrupted)");
            if (final)
            {
                return tally;
            }
            final = killer.IsCompleted;
        }
    }

    private static void Count(BatchTally tally, string output, Dictionary<string, string> expected)
    {
        foreach (var (name, want) in expected)
        {
            var path = Path.Combine(output, name);
            if (File.Exists(path))
            {
                if (File.ReadAllText(path) == want)
                {
                    tally.Correct++;
                }
                else
                {
                    tally.Wrong++;
                }
            }
            else if (File.Exists(Path.Combine(output, "." + name + ".failed")))
            {
                tally.FailedAtEnd++;
            }
        }
    }

    private async Task<(int Code, bool Killed)> RunOnceAsync(string input, string output)
    {
        Process process;
        lock (_gate)
        {
            _killedByUs = false;
            var args = new List<string> { "submit", module, "--batch", input, "--out", output, "--parallel", parallel.ToString(CultureInfo.InvariantCulture),
                "--data-dir", DataDir, "--no-mdns", "--log-level", "warning" };
            foreach (var b in Bootstrap)
            {
                args.AddRange(["--bootstrap", b]);
            }
            args.AddRange(["--", hashRounds.ToString(CultureInfo.InvariantCulture)]);
            process = _process = Program.Start(potluck, args, Program.NewLog(Name));
            _up.Restart();
        }
        await process.WaitForExitAsync();
        lock (_gate)
        {
            return (process.ExitCode, _killedByUs);
        }
    }

    public bool KillForChaos()
    {
        lock (_gate)
        {
            if (_process is not { HasExited: false } p || _killedByUs)
            {
                return false; // not running, or killed already
            }
            _killedByUs = true;
            p.Kill();
            return true;
        }
    }

    public void KillNow()
    {
        lock (_gate)
        {
            try
            {
                if (_process is { HasExited: false } p)
                {
                    _killedByUs = true;
                    p.Kill();
                }
            }
            catch (InvalidOperationException)
            {
            }
        }
    }
}
