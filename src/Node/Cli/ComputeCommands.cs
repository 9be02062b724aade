using System.Globalization;
using Microsoft.Extensions.Logging;
using Potluck.Node.Hosting;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Requesting;

namespace Potluck.Node.Cli;

/// <summary>`potluck submit` and `potluck ledger`.</summary>
internal static class ComputeCommands
{
    public static readonly OptionSpec[] SubmitOptions =
    [
        new("input", "file|-", "the task's stdin: a file, or - for this process's stdin (default: empty)"),
        new("arg", "text", "an argument for the task (argv[1..]), repeatable; or put them after --", Repeatable: true),
        new("fuel", "n", "fuel budget (default 1000000000)"),
        new("max-price", "credits", "most credits paid per million fuel (default 100)"),
        new("verify-rate", "r", "share of results re-run to check them, 0 < r <= 1 (default: adaptive per provider)"),
        new("replicas", "k", "run on k providers at once and compare (default 1)"),
        new("bootstrap", "multiaddr", "peer to join through (…/p2p/<peer id>), repeatable", Repeatable: true),
        new("no-mdns", null, "do not look for providers on the local network by mDNS"),
        new("wait", "seconds", "how long to wait for providers to be found (default 30)"),
        new("data-dir", "path", "the requester's identity and ledger (default <default data dir>/requester)"),
        new("swarm-key", "file", "join the private network of this swarm.key"),
        new("log-level", "level", "trace, debug, information, warning, error (default warning)"),
        new("help", null, "show this help"),
    ];

    public static readonly OptionSpec[] LedgerOptions =
    [
        new("data-dir", "path", "the node whose ledger to show (default $POTLUCK_DATA_DIR or ~/.local/share/potluck)"),
        new("count", "n", "recent entries to list (default 20)"),
        new("help", null, "show this help"),
    ];

    public static string DefaultRequesterDir() => Path.Combine(NodeConfiguration.DefaultDataDir(), "requester");

    public static async Task<int> SubmitAsync(ParsedArgs args, TextWriter stdout, TextWriter stderr)
    {
        var modulePath = args.Positionals[0];
        if (!File.Exists(modulePath))
        {
            throw new UsageException($"no module at '{modulePath}': give the path of a .wasm file (wasm32-wasi command module)");
        }
        var module = await File.ReadAllBytesAsync(modulePath);
        if (module.Length < 8 || module[0] != 0 || module[1] != (byte)'a' || module[2] != (byte)'s' || module[3] != (byte)'m')
        {
            throw new UsageException($"'{modulePath}' is not a WebAssembly binary (it does not start with \\0asm); build it with clang --target=wasm32-wasi");
        }
        byte[] input = [];
        if (args.Get("input") is { } inputPath)
        {
            if (inputPath == "-")
            {
                using var ms = new MemoryStream();
                await Console.OpenStandardInput().CopyToAsync(ms);
                input = ms.ToArray();
            }
            else if (!File.Exists(inputPath))
            {
                throw new UsageException($"--input: no file at '{inputPath}' (use - to read stdin)");
            }
            else
            {
                input = await File.ReadAllBytesAsync(inputPath);
            }
        }
        var taskArgs = args.GetAll("arg").Concat(args.Positionals.Skip(1)).ToArray();
        var fuel = GetLong(args, "fuel", 1_000_000_000, 1, long.MaxValue);
        var maxPrice = GetLong(args, "max-price", 100, 0, 1_000_000_000);
        double? verifyRate = null;
        if (args.Get("verify-rate") is { } rateText)
        {
            verifyRate = double.TryParse(rateText, NumberStyles.Float, CultureInfo.InvariantCulture, out var r) && r > 0 && r <= 1
                ? r
                : throw new UsageException($"--verify-rate '{rateText}' must be a number above 0 and at most 1 (never 0: every result keeps some chance of a check)");
        }
        var replicas = args.GetInt("replicas", 1, 1, 16);
        var wait = TimeSpan.FromSeconds(args.GetInt("wait", 30, 1, 3600));
        var bootstrap = args.GetAll("bootstrap").Select(a => Multiaddr.TryParse(a, out var m, out var error) ? m : throw new UsageException($"--bootstrap '{a}' is not a multiaddr: {error}")).ToArray();
        foreach (var b in bootstrap.Where(b => b.PeerId is null))
        {
            throw new UsageException($"--bootstrap '{b}' must end in /p2p/<peer id> (copy a full address from the provider's `potluck run` output)");
        }
        var swarmKey = Commands.LoadSwarmKey(args.Get("swarm-key"));
        var level = Commands.ParseLogLevel(args, LogLevel.Warning);
        string dataDir;
        try
        {
            dataDir = args.Get("data-dir") is { } given ? Path.GetFullPath(given) : DefaultRequesterDir();
        }
        catch (NodeStartException e)
        {
            await stderr.WriteLineAsync($"potluck submit: {e.Message}");
            return 1;
        }
        using var cts = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            cts.Cancel();
        };
        // The short-lived requester: its own identity and ledger, listening nowhere, with compute on and providing off.
        var builder = PotluckNode.CreateBuilder();
        builder.Logging.SetMinimumLevel(level);
        builder.Logging.AddSimpleConsole(o => o.SingleLine = true);
        builder.Logging.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
        builder.Configure(o => o with
        {
            DataDir = dataDir,
            Bootstrap = bootstrap,
            Discovery = o.Discovery with { Mdns = !args.Has("no-mdns") },
            Compute = o.Compute with { Enabled = true, Provide = false },
        });
        if (swarmKey is not null)
        {
            builder.UseSwarmKey(swarmKey);
        }
        await using var node = builder.Build();
        try
        {
            await node.StartAsync(cts.Token);
        }
        catch (Exception e) when (Commands.StartFailure(e) is { } message)
        {
            await stderr.WriteLineAsync($"potluck submit: {message}");
            return 1;
        }
        var compute = node.Compute!;
        try
        {
            using (var waiting = CancellationTokenSource.CreateLinkedTokenSource(cts.Token))
            {
                waiting.CancelAfter(wait);
                try
                {
                    await compute.Client.WaitForProvidersAsync(replicas, waiting.Token);
                }
                catch (OperationCanceledException) when (!cts.IsCancellationRequested)
                {
                    if (compute.Client.Providers().Count == 0)
                    {
                        await stderr.WriteLineAsync($"potluck submit: no provider found within {wait.TotalSeconds:0} s. " +
                            (bootstrap.Length == 0 ? "Give one with --bootstrap <address of a `potluck run` node>." : "Are the --bootstrap nodes running `potluck run`?"));
                        return 1;
                    }
                }
            }
            var result = await compute.SubmitAsync(new TaskSubmission
            {
                Module = module,
                Input = input,
                Args = taskArgs,
                Fuel = fuel,
                MaxPricePerMegaFuel = maxPrice,
                VerifyRate = verifyRate,
                Replicas = replicas,
            }, cts.Token);
            await using (var output = Console.OpenStandardOutput())
            {
                if (ReferenceEquals(stdout, Console.Out))
                {
                    await output.WriteAsync(result.Output, cts.Token);
                    await output.FlushAsync(cts.Token);
                }
                else
                {
                    await stdout.WriteAsync(System.Text.Encoding.UTF8.GetString(result.Output.Span));
                }
            }
            await stderr.WriteLineAsync(
                $"potluck submit: {result.Status.ToString().ToLowerInvariant()} on {result.Provider}, fuel {result.Fuel:N0}, cost {FormatCredits(result.Cost)} credits, " +
                $"{(result.Verified ? "verified" : "not re-checked")}, {result.Attempts} attempt{(result.Attempts == 1 ? "" : "s")}");
            foreach (var attempt in result.History.Where(a => a.Outcome != Scheduler.Leasing.LeaseOutcomeKind.Completed || a.Detail.Length > 0))
            {
                await stderr.WriteLineAsync($"  attempt on {attempt.Provider}: {attempt.Outcome} {attempt.Detail}".TrimEnd());
            }
            if (!result.Succeeded)
            {
                await stderr.WriteLineAsync($"potluck submit: the task did not succeed: {result.Error}");
                return 1;
            }
            return 0;
        }
        catch (SubmissionException e)
        {
            await stderr.WriteLineAsync($"potluck submit: {e.Message}");
            return 1;
        }
        catch (OperationCanceledException) when (cts.IsCancellationRequested)
        {
            await stderr.WriteLineAsync("potluck submit: cancelled");
            return 1;
        }
    }

    public static async Task<int> LedgerAsync(ParsedArgs args, TextWriter stdout, TextWriter stderr)
    {
        var dataDir = Commands.DataDirOf(args);
        var count = args.GetInt("count", 20, 1, 10_000);
        var keyPath = Path.Combine(dataDir, "identity.key");
        if (!File.Exists(keyPath) || !File.Exists(Path.Combine(dataDir, "ledger.db")))
        {
            await stderr.WriteLineAsync($"potluck ledger: no ledger in '{dataDir}' yet; a node creates one when it first runs (potluck run, or potluck submit for {DefaultRequesterDir()})");
            return 1;
        }
        try
        {
            var key = PrivateKey.LoadOrCreate(keyPath);
            using var ledger = CreditLedger.Open(dataDir, key.PeerId, new CreditsOptions(), TimeProvider.System);
            await stdout.WriteLineAsync($"Node:      {key.PeerId}");
            await stdout.WriteLineAsync($"Balance:   {FormatCredits(ledger.Balance())} credits");
            await stdout.WriteLineAsync($"Available: {FormatCredits(ledger.Available())} credits (balance less payments reserved for running leases)");
            var recent = ledger.Recent(count);
            await stdout.WriteLineAsync();
            await stdout.WriteLineAsync($"{"#",-6} {"when (UTC)",-20} {"kind",-7} {"amount",16}  counterparty");
            foreach (var e in recent)
            {
                await stdout.WriteLineAsync($"{e.Sequence,-6} {e.RecordedAt.UtcDateTime:yyyy-MM-dd HH:mm:ss} {e.Kind,-7} {FormatCredits(e.SignedAmount),16}  {(e.Kind == LedgerEntryKind.Grant ? "(initial grant)" : e.Counterparty.ToString())}");
            }
            return 0;
        }
        catch (LedgerException e)
        {
            await stderr.WriteLineAsync($"potluck ledger: {e.Message}");
            return 1;
        }
    }

    /// <summary>Micro-credits as credits with six decimals.</summary>
    public static string FormatCredits(long micro) =>
        (micro / 1_000_000m).ToString("0.000000", CultureInfo.InvariantCulture);

    private static long GetLong(ParsedArgs args, string name, long fallback, long min, long max)
    {
        var text = args.Get(name);
        if (text is null)
        {
            return fallback;
        }
        return long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n >= min && n <= max
            ? n
            : throw new UsageException($"--{name} '{text}' must be a whole number from {min} to {max}");
    }
}
