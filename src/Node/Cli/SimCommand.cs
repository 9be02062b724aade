using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Potluck.Node.Simulation;

namespace Potluck.Node.Cli;

/// <summary>
/// `potluck sim`: runs a simulated mesh of complete nodes in this process on virtual time (see
/// <see cref="SimulatedMesh"/>), from flags or a scenario file, with a progress line on stderr, and prints a report;
/// <c>--json</c> writes the figures as JSON, <c>--report</c> an HTML page with pictures.
/// </summary>
internal sealed class SimCommand : PotluckCommand
{
    public SimCommand(CliContext context)
        : base("sim", "Run a simulated mesh of complete Potluck nodes in this process on virtual time, with faults and adversaries, and report.", context)
    {
        Options.Add(Scenario);
        Options.Add(Nodes);
        Options.Add(Providers);
        Options.Add(Tasks);
        Options.Add(Cheaters);
        Options.Add(Adversary);
        Options.Add(CheatRate);
        Options.Add(Churn);
        Options.Add(Partition);
        Options.Add(Seed);
        Options.Add(Duration);
        Options.Add(Rounds);
        Options.Add(LatencyMs);
        Options.Add(Loss);
        Options.Add(StandIns);
        Options.Add(NoSharedValues);
        Options.Add(MaxConnections);
        Options.Add(JoinOver);
        Options.Add(Slowest);
        Options.Add(Json);
        Options.Add(Report);
        Options.Add(Quiet);
        Options.Add(HoldAtEnd);
        Options.Add(MemoryTrace);
        Options.Add(HeapLimit);
    }

    public Option<string> Scenario { get; } = CliOptions.ExistingFile("--scenario", "file",
        "a JSON scenario file whose keys are these options' names (\"nodes\": 1000, \"cheaters\": 0.1, \"partition\": true); flags override it",
        path => $"--scenario: no file at '{path}'");

    public Option<int?> Nodes { get; } = CliOptions.Int("--nodes", "n", "nodes in the mesh (default 20)", 2, 100_000);

    public Option<int?> Providers { get; } = CliOptions.Int("--providers", "n", "how many of them provide (default a quarter of the nodes)", 1, 100_000);

    public Option<int?> Tasks { get; } = CliOptions.Int("--tasks", "n", "tasks submitted over the duration (default 100)", 0, 10_000_000);

    public Option<double?> Cheaters { get; } = CliOptions.Number("--cheaters", "share", "share of providers that are adversaries (of requesting nodes for a requester-side --adversary; default 0)", 0, 1);

    public Option<string> Adversary { get; } = CliOptions.Text("--adversary", "kind",
        "what the adversaries do. Providers: cheater (every result wrong), selective (a share wrong, see --cheat-rate), fuel-inflater (claims 1M fuel more than used), false-timeout (claims a timeout without running), sybil (a swarm of colluding replicas: the lowest price, the same wrong output), whitewasher (a cheater that returns under a new identity when refused), forker (serves honestly, pays for what it submits, then signs a second half-block at a seq it used). Requesters: freeloader (never pays), receipt-forger (made-up receipts), squatter (takes leases, never sends input), proof-spammer (forged fraud proofs), gossip-spammer (junk on the ads topic). Default cheater");

    public Option<double?> CheatRate { get; } = CliOptions.Number("--cheat-rate", "share", "share of tasks a selective cheater corrupts (default 0.2)", 0.0001, 1);

    public Option<double?> Churn { get; } = CliOptions.Number("--churn", "share", "share of nodes that crash (and restart 10 s later) per virtual minute (default 0)", 0, 1);

    public Option<bool> Partition { get; } = CliOptions.Flag("--partition", "split the mesh in two halves from a third of the duration to two thirds, then heal");

    public Option<long?> Seed { get; } = CliOptions.Long("--seed", "n", "seed of everything in the run; the same seed gives the same trace hash (default 1)", 0, long.MaxValue);

    public Option<int?> Duration { get; } = CliOptions.Int("--duration", "seconds", "virtual seconds over which tasks are submitted (default 60)", 1, 86_400);

    public Option<int?> Rounds { get; } = CliOptions.Int("--rounds", "n", "SHA-256 rounds per task, the work each does (default 200)", 1, 10_000_000);

    public Option<int?> LatencyMs { get; } = CliOptions.Int("--latency-ms", "ms", "median one-way access latency per node, log-normal (default 20)", 0, 10_000);

    public Option<double?> Loss { get; } = CliOptions.Number("--loss", "share", "share of flushes lost once and retransmitted 200 ms late (default 0)", 0, 0.99);

    public Option<string> StandIns { get; } = CliOptions.Text("--stand-ins", "list",
        "cheaper parts for scale, comma-separated: plaintext (plaintext-sim security instead of Noise), shared-sandbox (one Wasmtime engine and module cache for all nodes), memory-store (in-memory SQLite ledgers), shared-counters (one set of metrics counters for all nodes), or all; default none (every node complete). The report lists what stood in");

    public Option<bool> NoSharedValues { get; } = CliOptions.Flag("--no-shared-values",
        "every node keeps its own copy of every decoded value (by default the nodes keep one instance of equal advertisements, peer ids, public keys and addresses: memory only, every node still checks every signature; the report says which)");

    public Option<int?> MaxConnections { get; } = CliOptions.Int("--max-connections", "n",
        "connections each node keeps (trimmed back to 3/4 above it; inbound refused above twice it); default the daemon's (trim above 320). Big meshes need it: each connection costs memory", 16, 100_000);

    public Option<double?> JoinOver { get; } = CliOptions.Number("--join-over", "seconds",
        "virtual seconds over which the nodes join, one after another, each bootstrapping from nodes already up (default 0.02 per node: 1,000 nodes over 20 s; 0: all at once)", 0, 3600);

    public Option<int?> Slowest { get; } = CliOptions.Int("--slowest", "n",
        "list the n slowest tasks with their timelines: connections to providers, each attempt's end (default 0)", 0, 1000);

    public Option<string> Json { get; } = CliOptions.Text("--json", "file", "also write the figures as JSON to this file ('-' for stdout)");

    public Option<string> Report { get; } = CliOptions.Path("--report", "file.html", "also write an HTML report with pictures to this file");

    public Option<bool> Quiet { get; } = CliOptions.Flag("--quiet", "no progress line on stderr");

    public Option<string> HoldAtEnd { get; } = CliOptions.Path("--hold-at-end", "file",
        "when the run has drained, say so on stderr and wait (the mesh frozen) until this file exists, then report: a benchmark takes a heap dump of the end state meanwhile (scripts/bench/sim-memory.sh)");

    public Option<string> MemoryTrace { get; } = CliOptions.Path("--memory-trace", "file",
        "write the run's memory against virtual time to this file: RSS, peak RSS, GC committed and heap every 100 ms of wall time, and connection ends per node at each progress point (read-only: the trace hash stays the same)");

    public Option<int?> HeapLimit { get; } = CliOptions.Int(SimGcSettings.HeapLimitFlag, "MiB",
        "a hard limit on the managed heap for the run (the runtime's DOTNET_GCHeapHardLimit, set when potluck sim starts itself): the garbage collector works harder to stay under it, so the peak is bounded by it plus native memory; a run that needs more fails (exit 1), and one in which node code caught an out-of-memory error reports it and exits 1. Default none",
        SimGcSettings.MinHeapLimitMiB, SimGcSettings.MaxHeapLimitMiB);

    public override string? HelpNotes =>
        "Every node is complete (Noise, Yamux, gossipsub, Kademlia, SQLite ledger, Wasmtime sandbox) and built as `potluck run` builds one;\n"
        + "time is virtual, so a minute of mesh costs what its events cost. Example:\n"
        + "  potluck sim --nodes 200 --providers 50 --tasks 500 --cheaters 0.1 --churn 0.05 --partition --seed 7 --json out.json --report out.html";

    protected override Task<int> ExecuteAsync(ParseResult result, CancellationToken ct)
    {
        var file = result.GetValue(Scenario) is { } path ? ReadScenario(path) : new Dictionary<string, JsonElement>();
        T Get<T>(Option<T> option, string key, Func<JsonElement, T> read)
        {
            var value = result.GetValue(option);
            if (value is not null && (value is not bool b || b))
            {
                return value;
            }
            if (file.TryGetValue(key, out var element))
            {
                try
                {
                    return read(element);
                }
                catch (Exception e) when (e is InvalidOperationException or FormatException)
                {
                    throw new UsageException($"--scenario: \"{key}\" has the wrong type ({element.ValueKind}); use the value --{key} takes");
                }
            }
            return value!;
        }
        var nodes = Get(Nodes, "nodes", e => (int?)e.GetInt32()) ?? 20;
        var providers = Get(Providers, "providers", e => (int?)e.GetInt32()) ?? Math.Max(1, nodes / 4);
        if (providers >= nodes)
        {
            throw new UsageException($"--providers {providers} must be below --nodes {nodes}: at least one node submits tasks");
        }
        var adversaryName = Get(Adversary, "adversary", e => e.GetString()!) ?? "cheater";
        var adversary = SimAttacks.Parse(adversaryName)
            ?? throw new UsageException($"--adversary '{adversaryName}' is not a kind this build simulates: use one of "
                + string.Join(", ", Enum.GetValues<AdversaryKind>().Where(k => k != AdversaryKind.None).Select(SimAttacks.Name)));
        var scenario = new SimScenario
        {
            Mesh = new MeshOptions
            {
                Nodes = nodes,
                Providers = providers,
                Seed = Get(Seed, "seed", e => (long?)e.GetInt64()) ?? 1,
                CheaterShare = Get(Cheaters, "cheaters", e => (double?)e.GetDouble()) ?? 0,
                Adversary = adversary,
                CheatRate = Get(CheatRate, "cheat-rate", e => (double?)e.GetDouble()) ?? 0.2,
                StandIns = ParseStandIns(Get(StandIns, "stand-ins", e => e.GetString()!)),
                ShareValues = !Get(NoSharedValues, "no-shared-values", e => e.GetBoolean()),
                MaxConnectionsPerNode = Get(MaxConnections, "max-connections", e => (int?)e.GetInt32()),
                JoinOver = Get(JoinOver, "join-over", e => (double?)e.GetDouble()) is { } joinOver ? TimeSpan.FromSeconds(joinOver) : null,
                Network = new NetworkModel
                {
                    LatencyMedian = TimeSpan.FromMilliseconds(Get(LatencyMs, "latency-ms", e => (int?)e.GetInt32()) ?? 20),
                    Loss = Get(Loss, "loss", e => (double?)e.GetDouble()) ?? 0,
                },
            },
            Tasks = Get(Tasks, "tasks", e => (int?)e.GetInt32()) ?? 100,
            Duration = TimeSpan.FromSeconds(Get(Duration, "duration", e => (int?)e.GetInt32()) ?? 60),
            TaskRounds = Get(Rounds, "rounds", e => (int?)e.GetInt32()) ?? 200,
            ChurnPerMinute = Get(Churn, "churn", e => (double?)e.GetDouble()) ?? 0,
            Partition = Get(Partition, "partition", e => e.GetBoolean()),
            SlowestTasks = Get(Slowest, "slowest", e => (int?)e.GetInt32()) ?? 0,
            AtEnd = result.GetValue(HoldAtEnd) is { } hold ? () => HoldUntilExists(hold, ct) : null,
        };
        using var eventLog = Environment.GetEnvironmentVariable("POTLUCK_SIM_EVENT_LOG") is { Length: > 0 } eventLogPath
            ? new StreamWriter(eventLogPath, append: false, new System.Text.UTF8Encoding(false), 1 << 20)
            : null;
        using var memoryTrace = result.GetValue(MemoryTrace) is { } memoryTracePath
            ? new StreamWriter(memoryTracePath, append: false, new System.Text.UTF8Encoding(false))
            : null;
        var heapPolicy = SimGcSettings.Gen2Policy(Environment.GetEnvironmentVariable);
        scenario = scenario with { EventLog = eventLog, MemoryTrace = memoryTrace, HeapPolicy = heapPolicy };
        var quiet = result.GetValue(Quiet);
        var heapLimit = result.GetValue(HeapLimit) is { } limitMiB ? limitMiB * (1L << 20) : (long?)null;
        if (heapLimit is { } wanted && SimGcSettings.HeapLimitMismatch(wanted, SimGcSettings.RuntimeHeapLimit()) is { } mismatch)
        {
            throw new UsageException(mismatch);
        }
        UseThroughputGc();
        SimReport report;
        using var runtime = SimRuntimeFigures.Start();
        var trimEvery = SimGcSettings.MallocTrimInterval(Environment.GetEnvironmentVariable);
        using var trimming = Simulation.NativeHeap.StartTrimming(trimEvery);
        // An out-of-memory error anywhere stops the run (polled from a timer thread, as a signal's cancellation comes).
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        using var outOfMemoryWatch = new Timer(_ =>
        {
            if (runtime.OutOfMemorySeen && !stop.IsCancellationRequested)
            {
                stop.Cancel();
            }
        }, null, TimeSpan.FromMilliseconds(100), TimeSpan.FromMilliseconds(100));
        try
        {
            report = SimRunner.Run(scenario, quiet ? null : line => Error.Write("\r" + line.PadRight(100)), stop.Token);
            report = report with { Runtime = runtime.Snapshot() with { Settings = SimGcSettings.Describe(Environment.GetEnvironmentVariable)
                + (trimming is null ? "; malloc not trimmed" : $"; malloc trimmed every {trimEvery.TotalSeconds:0.###} s wall")
                + (heapPolicy is null ? "; gen2 left to the runtime" : "; " + heapPolicy.Describe()) } };
        }
        catch (Exception e) when (IsOutOfMemory(e) || (runtime.OutOfMemorySeen && !ct.IsCancellationRequested))
        {
            if (!quiet)
            {
                Error.WriteLine();
            }
            Error.WriteLine($"sim: out of memory: {OutOfMemoryAdvice(SimGcSettings.RuntimeHeapLimit())}; the run stopped, no report");
            return Task.FromResult(1);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested && !quiet)
        {
            Error.WriteLine(); // past the progress line; the caller says "sim: cancelled"
            throw;
        }
        if (!quiet)
        {
            Error.WriteLine();
        }
        Out.Write(report.ToText());
        if (runtime.DescribeSites() is { Length: > 0 } sites)
        {
            Error.Write("exception sites (POTLUCK_SIM_EXCEPTION_SITES):\n" + sites);
        }
        if (result.GetValue(Json) is { } json)
        {
            if (json == "-")
            {
                Out.WriteLine(report.ToJson());
            }
            else
            {
                File.WriteAllText(json, report.ToJson());
            }
        }
        if (result.GetValue(Report) is { } html)
        {
            File.WriteAllText(html, SimHtmlReport.Render(report));
        }
        if (CaughtOutOfMemory(report.Runtime) is { } caught)
        {
            // Thrown in the run's last moments, after the watch's last look: reported, but not as a run that had room.
            Error.WriteLine($"sim: {caught} out-of-memory error(s) were thrown at the end of the run, so its figures are not "
                + $"those of a run with room: {OutOfMemoryAdvice(SimGcSettings.RuntimeHeapLimit())}");
            return Task.FromResult(1);
        }
        return Task.FromResult(0);
    }

    /// <summary>An out-of-memory error, however wrapped (the loop thread's failure reaches here inside others).</summary>
    internal static bool IsOutOfMemory(Exception e) => e switch
    {
        OutOfMemoryException => true,
        AggregateException a => a.InnerExceptions.Any(IsOutOfMemory),
        _ => e.InnerException is { } inner && IsOutOfMemory(inner),
    };

    /// <summary>How many out-of-memory errors the run threw (first chance: caught inside it or not); null for none.</summary>
    internal static long? CaughtOutOfMemory(SimReport.RuntimeFigures? runtime) =>
        runtime?.ExceptionsByType.TryGetValue(nameof(OutOfMemoryException), out var n) == true && n > 0 ? n : null;

    /// <summary>What to do about it, given the heap limit the runtime runs with (0: none).</summary>
    internal static string OutOfMemoryAdvice(ulong heapLimit) => heapLimit > 0
        ? $"the managed heap's limit of {heapLimit >> 20} MiB ({SimGcSettings.HeapLimitFlag} or {SimGcSettings.HeapHardLimitVariable}) is too small for this mesh; raise it or run fewer nodes"
        : "the machine has no room for this mesh; run fewer nodes or fewer connections per node (--max-connections)";

    /// <summary>
    /// A simulation is one batch job on a loop thread: the GC runs non-concurrent (<see cref="GCLatencyMode.Batch"/>, no
    /// background GC: 100 nodes, cap 32, 22 % less CPU than the concurrent GC with a 16 MiB gen0 budget, the same trace),
    /// unless <c>DOTNET_gcConcurrent</c> says otherwise. Knobs only the runtime's start reads stay environment variables
    /// (README "Simulated meshes": <c>DOTNET_GCConserveMemory=7</c>).
    /// </summary>
    private static void UseThroughputGc()
    {
        if (Environment.GetEnvironmentVariable("DOTNET_gcConcurrent") is null)
        {
            System.Runtime.GCSettings.LatencyMode = System.Runtime.GCLatencyMode.Batch;
        }
    }

    /// <summary>
    /// <c>--hold-at-end</c>: a line a script can match (with the process id), then a wait on the wall clock until
    /// <paramref name="path"/> exists or the command is cancelled. Only the command waits so; the mesh is frozen meanwhile.
    /// </summary>
    private void HoldUntilExists(string path, CancellationToken ct)
    {
        Error.WriteLine();
        Error.WriteLine($"holding at the end (pid {Environment.ProcessId}) until {path} exists");
        while (!File.Exists(path))
        {
            ct.ThrowIfCancellationRequested();
            Thread.Sleep(100);
        }
    }

    private static MeshStandIns ParseStandIns(string? list)
    {
        var standIns = new MeshStandIns();
        if (string.IsNullOrWhiteSpace(list) || list == "none")
        {
            return standIns;
        }
        foreach (var name in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            standIns = name switch
            {
                "all" => MeshStandIns.All,
                "plaintext" => standIns with { PlaintextSecurity = true },
                "shared-sandbox" => standIns with { SharedSandbox = true },
                "memory-store" => standIns with { InMemoryStorage = true },
                "shared-counters" => standIns with { SharedCounters = true },
                _ => throw new UsageException($"--stand-ins: '{name}' is not a stand-in; use plaintext, shared-sandbox, memory-store, shared-counters, all or none (comma-separated)"),
            };
        }
        return standIns;
    }

    private static Dictionary<string, JsonElement> ReadScenario(string path)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new UsageException($"--scenario: '{path}' must hold a JSON object of option names and values");
            }
            var known = new HashSet<string>(["nodes", "providers", "tasks", "cheaters", "adversary", "cheat-rate", "churn", "partition", "seed",
                "duration", "rounds", "latency-ms", "loss", "stand-ins", "max-connections", "join-over"]);
            var values = new Dictionary<string, JsonElement>();
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (!known.Contains(p.Name))
                {
                    throw new UsageException($"--scenario: '{path}' has \"{p.Name}\", which is not an option of potluck sim (known: {string.Join(", ", known)})");
                }
                values[p.Name] = p.Value.Clone();
            }
            return values;
        }
        catch (JsonException e)
        {
            throw new UsageException($"--scenario: '{path}' is not valid JSON ({e.Message})");
        }
    }
}
