using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Potluck.Node.Simulation;

/// <summary>
/// What a <see cref="SimScenario"/> run measured. Latencies are virtual time; <c>wall_s</c>, <c>events_per_s</c> and
/// <c>peak_rss_mib</c> are this process's. Written as JSON by <c>potluck sim --json</c> (snake_case, nested as
/// <c>tasks.completed</c>).
/// </summary>
public sealed record SimReport
{
    public required long Seed { get; init; }

    public required int Nodes { get; init; }

    public required int Providers { get; init; }

    public required TaskFigures Tasks { get; init; }

    public required Percentiles LeaseLatencyMs { get; init; }

    /// <summary>Fuel re-executed to verify results (a verified result was re-run once locally) over useful fuel (fuel of completed tasks).</summary>
    public required double VerificationOverhead { get; init; }

    /// <summary>
    /// The same ratio over tasks whose requester had already had 10 results from that provider (past the stranger period,
    /// when every result is checked; see VerificationOptions.StrangerResults): what verification costs once honest
    /// providers are established. Null when no task qualifies.
    /// </summary>
    public double? VerificationOverheadEstablished { get; init; }

    /// <summary>Completed tasks counted in <see cref="VerificationOverheadEstablished"/>.</summary>
    public int EstablishedTasks { get; init; }

    public required CheaterFigures Cheaters { get; init; }

    /// <summary>Completed tasks whose output differs from the honest one.</summary>
    public required int WrongAccepted { get; init; }

    /// <summary>Honest providers refused by anyone.</summary>
    public required int HonestAccused { get; init; }

    public required GossipFigures Gossip { get; init; }

    /// <summary>
    /// Live advertisements each requester's book held when it submitted a task (min / p50 / mean over tasks), and the
    /// book samples of <c>/potluck/ads/sample/1.0.0</c> summed over the nodes up at the end.
    /// </summary>
    public AdFigures Ads { get; init; } = AdFigures.Empty;

    public required CreditFigures Credits { get; init; }

    /// <summary>Fuel-equivalent of what adversaries were paid for wrong results (credits paid to them ÷ price, minus fuel of their correct results).</summary>
    public required double AdversaryGain { get; init; }

    public required FaultFigures Faults { get; init; }

    /// <summary>What requester-side adversaries tried and got (see <see cref="AttackFigures"/>); kind "none" otherwise.</summary>
    public AttackFigures Attacks { get; init; } = AttackFigures.None;

    /// <summary>New identities whitewashers took.</summary>
    public int Whitewashes { get; init; }

    public required string TraceHash { get; init; }

    public required long TraceLines { get; init; }

    public required double WallS { get; init; }

    public required double VirtualS { get; init; }

    /// <summary>Virtual seconds the nodes joined over (<see cref="MeshOptions.JoinWindow"/>; 0: all at once), before the warm-up.</summary>
    public double JoinOverS { get; init; }

    /// <summary>Work items run on the event loop plus timers fired, per wall second.</summary>
    public required double EventsPerS { get; init; }

    public required long Events { get; init; }

    /// <summary>
    /// Digest of every event counted in <see cref="Events"/> (each loop item and timer: its virtual time, kind and what it
    /// ran; <see cref="Protocol.Runtime.EventDigest"/>): the same seed gives the same run, event for event, when this and
    /// <see cref="Events"/> repeat. Null when the driver kept no digest.
    /// </summary>
    public string? EventsHash { get; init; }

    /// <summary>Connections the nodes opened over the whole run (counted at the dialer), and during the warm-up alone (the mesh forming).</summary>
    public ConnectionFigures Connections { get; init; } = new(0, 0);

    /// <summary>
    /// Dials the nodes started, by reason (<c>potluck.dials</c>, summed over nodes): over the run, during the warm-up,
    /// and per virtual second of the warm-up (when it ran with a progress line); connections closed, by reason.
    /// </summary>
    public DialFigures Dials { get; init; } = DialFigures.Empty;

    public required double VirtualToWall { get; init; }

    /// <summary>CPU seconds this process used (all threads): on a shared machine the steadier figure than wall time.</summary>
    public required double CpuS { get; init; }

    /// <summary>Events per CPU second.</summary>
    public required double EventsPerCpuS { get; init; }

    /// <summary>Wall seconds the driver waited for sandbox runs (on their own threads) to post back.</summary>
    public required double SandboxWaitS { get; init; }

    public required double PeakRssMib { get; init; }

    /// <summary>Exceptions thrown and the GC's work over the run (this process's; set by <c>potluck sim</c>, null otherwise).</summary>
    public RuntimeFigures? Runtime { get; init; }

    public required double RssPerNodeKib { get; init; }

    /// <summary>What stands in for real parts in this run (none: every node runs real crypto, real ledgers and real sandbox runs).</summary>
    public required IReadOnlyList<string> StandIns { get; init; }

    /// <summary>
    /// Whether the nodes kept one instance of equal immutable decoded values (<see cref="MeshOptions.ShareValues"/>): not a
    /// stand-in (every node decodes and checks all it did), but what memory figures were measured with.
    /// </summary>
    public bool SharedValues { get; init; }

    /// <summary>The slowest tasks (as many as <see cref="SimScenario.SlowestTasks"/>), slowest first, each with its timeline.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public IReadOnlyList<SlowTask>? Slowest { get; init; }

    /// <summary>A task of <see cref="Slowest"/>: virtual milliseconds from its submission to its end, and each step's offset.</summary>
    public sealed record SlowTask(int Id, int Requester, int Provider, double SubmittedS, double LatencyMs, bool Completed, bool StepsShared,
        IReadOnlyList<SlowStep> Steps);

    /// <summary>One step of a <see cref="SlowTask"/>: milliseconds after the task's submission.</summary>
    public sealed record SlowStep(double AtMs, string What);

    /// <summary>The <paramref name="n"/> slowest of <paramref name="tasks"/> (failed ones by the time they took to fail).</summary>
    internal static IReadOnlyList<SlowTask> SlowestOf(IEnumerable<TaskRecord> tasks, int n) =>
        tasks.Where(t => t.Finished is not null)
            .OrderByDescending(t => t.Latency!.Value).ThenBy(t => t.Id).Take(n)
            .Select(t => new SlowTask(t.Id, t.RequesterIndex, t.ProviderIndex, t.Submitted.TotalSeconds, t.Latency!.Value.TotalMilliseconds,
                t.Completed, t.StepsShared, t.Steps.Select(x => new SlowStep((x.At - t.Submitted).TotalMilliseconds, x.What)).ToList()))
            .ToList();

    /// <summary>Per completed task: virtual latency (ms), for the report's picture.</summary>
    [JsonIgnore]
    public IReadOnlyList<double> LatencySamplesMs { get; init; } = [];

    /// <summary>Per provider: (fuel supplied, credits earned, adversary).</summary>
    [JsonIgnore]
    public IReadOnlyList<(long Fuel, long Credits, bool Adversary)> ProviderPoints { get; init; } = [];

    /// <summary>Leases each caught adversary held up to and including the one that caught it, ascending.</summary>
    [JsonIgnore]
    public IReadOnlyList<double> TasksUntilCaughtEach { get; init; } = [];

    /// <summary>Virtual seconds at which each cheater was first refused.</summary>
    [JsonIgnore]
    public IReadOnlyList<double> CaughtAtS { get; init; } = [];

    public sealed record TaskFigures(int Submitted, int Completed, int Failed, int Verified);

    public sealed record Percentiles(double P50, double P99, double Max);

    /// <param name="Count">Adversaries in the mesh.</param>
    /// <param name="Caught">Adversaries some node refused.</param>
    /// <param name="TasksUntilCaught">Leases each caught adversary held (as provider) up to and including the one that caught it.</param>
    /// <param name="Corrupted">Outputs corrupted or faked.</param>
    /// <param name="Active">Adversaries that held at least one lease as a provider: the ones a check could catch (the denominator of a catch rate).</param>
    public sealed record CheaterFigures(int Count, int Caught, Percentiles TasksUntilCaught, int Corrupted, int Active);

    public sealed record GossipFigures(int Probes, double Delivery, double DuplicatesPerNode, long Delivered, long Duplicates);

    /// <param name="KnownAtSubmitMin">Fewest live advertisements a requester held when it submitted (-1: no task).</param>
    /// <param name="KnownAtSubmitP50">The median of those counts over tasks.</param>
    /// <param name="KnownAtSubmitMean">Their mean.</param>
    /// <param name="Samples">Book samples summed over the nodes up at the end (<see cref="Scheduler.Requesting.SampleFigures"/>).</param>
    public sealed record AdFigures(int KnownAtSubmitMin, double KnownAtSubmitP50, double KnownAtSubmitMean, Scheduler.Requesting.SampleFigures Samples)
    {
        public static AdFigures Empty { get; } = new(-1, 0, 0, default);

        /// <summary>
        /// Advertisements the providers up at the end issued over the run, by why (<see cref="Scheduler.Advertising.IssuerCounts.Names"/>:
        /// first, busy_or_free, free_cores, addresses, other, republish); each reaches every node.
        /// </summary>
        public IReadOnlyDictionary<string, long> Issued { get; init; } = new Dictionary<string, long>();
    }

    /// <param name="BalancesSum">Every node's balance, summed (crashed nodes' read back from disk).</param>
    /// <param name="Grants">What the nodes were granted: conserved credits sum to exactly this.</param>
    /// <param name="OpenPayments">Reservations still open or receipts settled but not handed to their provider, at the end.</param>
    public sealed record CreditFigures(double Gini, long HonestEarned, long AdversaryEarned, long BalancesSum, long Grants, int OpenPayments);

    public sealed record FaultFigures(int Crashes, int Restarts, int Partitions, int Heals);

    /// <param name="Total">Dials by reason over the run (reasons with none left out).</param>
    /// <param name="Warmup">Dials by reason during the warm-up.</param>
    /// <param name="WarmupPerSecond">Dials by reason in each virtual second of a staggered join, then of the warm-up, in order.</param>
    /// <param name="Closed">Connections closed by reason (trimmed, room, idle, unused, local, remote), counted at both ends.</param>
    /// <param name="DhtQueries">DHT requests: ok (answered), failed, backed-off (not sent: the peer hung up on us moments ago),
    /// cancelled (in flight when their lookup ended).</param>
    public sealed record DialFigures(IReadOnlyDictionary<string, long> Total, IReadOnlyDictionary<string, long> Warmup,
        IReadOnlyList<IReadOnlyDictionary<string, long>> WarmupPerSecond, IReadOnlyDictionary<string, long> Closed,
        IReadOnlyDictionary<string, long> DhtQueries)
    {
        public static IReadOnlyList<string> QueryOutcomes { get; } = ["ok", "failed", "backed-off", "cancelled"];

        public static DialFigures Empty { get; } = new(new Dictionary<string, long>(), new Dictionary<string, long>(), [], new Dictionary<string, long>(),
            new Dictionary<string, long>());

        /// <summary>The non-zero entries of <paramref name="totals"/> keyed by <paramref name="names"/>, in their order.</summary>
        public static IReadOnlyDictionary<string, long> Named(IReadOnlyList<string> names, long[] totals, long[]? minus = null)
        {
            var d = new Dictionary<string, long>(StringComparer.Ordinal);
            for (var i = 0; i < names.Count; i++)
            {
                var v = totals[i] - (minus?[i] ?? 0);
                if (v != 0)
                {
                    d[names[i]] = v;
                }
            }
            return d;
        }

        /// <summary>"reason n, reason n, …" (largest first), or "none".</summary>
        public static string Describe(IReadOnlyDictionary<string, long> counts) => counts.Count == 0 ? "none"
            : string.Join(", ", counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal)
                .Select(kv => string.Create(CultureInfo.InvariantCulture, $"{kv.Key} {kv.Value}")));
    }

    /// <param name="Exceptions">Exceptions thrown (first chance: a rethrow through an awaiting method counts again).</param>
    /// <param name="ExceptionsByType">The same by type name, most frequent first.</param>
    /// <param name="GcPauseS">Seconds the GC paused the process.</param>
    /// <param name="GcPauseShare">Those seconds over the wall time of the run.</param>
    /// <param name="Settings">The GC and JIT settings the runtime started with (<c>potluck sim</c>: its environment's).</param>
    public sealed record RuntimeFigures(long Exceptions, IReadOnlyDictionary<string, long> ExceptionsByType, int Gen0, int Gen1, int Gen2,
        double GcPauseS, double GcPauseShare, string Settings = "");

    /// <summary>
    /// Connections opened (at the dialer): over the run, and while the mesh formed (the warm-up); the connection ends the
    /// nodes held when the warm-up ended and at the end of the run (<see cref="ConnectionEndCensus"/>).
    /// </summary>
    public sealed record ConnectionFigures(long Opened, long OpenedWarmup, ConnectionEndCensus EndsAfterWarmup = default, ConnectionEndCensus EndsAtEnd = default);

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    internal static SimReport Measure(SimulatedMesh mesh, SimScenario s, TimeSpan wall, int probes, long probesExpected, long probesDelivered,
        AttackFigures attacks, long warmupConnections = 0, DialFigures? dials = null,
        ConnectionEndCensus endsAfterWarmup = default, ConnectionEndCensus endsAtEnd = default)
    {
        var tasks = mesh.Tasks;
        var completed = tasks.Where(t => t.Completed).ToList();
        var latencies = completed.Select(t => t.Latency!.Value.TotalMilliseconds).Order().ToList();
        var usefulFuel = completed.Sum(t => t.Result!.Fuel);
        // A verified result was re-run once by its requester; a conviction re-ran the task too.
        var reexecuted = completed.Where(t => t.Result!.Verified).Sum(t => t.Result!.Fuel)
            + tasks.Sum(t => t.History.Count(h => h.Detail.StartsWith("fraud", StringComparison.Ordinal)) * (t.Result?.Fuel ?? 0));

        // Tasks of established pairs: the requester had 10 earlier results from the same provider.
        var pairCounts = new Dictionary<(int, int), int>();
        long establishedFuel = 0, establishedReexecuted = 0;
        var establishedTasks = 0;
        foreach (var t in completed.Where(t => t.ProviderIndex >= 0).OrderBy(t => t.Finished))
        {
            var pair = (t.RequesterIndex, t.ProviderIndex);
            var before = pairCounts.GetValueOrDefault(pair);
            pairCounts[pair] = before + 1;
            if (before >= 10)
            {
                establishedTasks++;
                establishedFuel += t.Result!.Fuel;
                establishedReexecuted += t.Result.Verified ? t.Result.Fuel : 0;
            }
        }

        var refusals = mesh.Events.Where(e => e.Kind == MeshEventKind.Refused && e.Other >= 0).ToList();
        var firstRefused = refusals.GroupBy(e => e.Other).ToDictionary(g => g.Key, g => g.Min(e => e.At));
        var adversaries = mesh.Nodes.Where(n => n.IsAdversary).ToList();
        var caught = adversaries.Where(a => firstRefused.ContainsKey(a.Index)).ToList();
        var untilCaught = caught.Select(a =>
        {
            var at = firstRefused[a.Index];
            var before = tasks.Where(t => t.Finished <= at).Sum(t => t.History.Count(h => a.Owns(h.Provider)));
            var catching = tasks.Any(t => !(t.Finished <= at) && t.History.Any(h => a.Owns(h.Provider) && h.Detail.StartsWith("fraud", StringComparison.Ordinal)));
            return (double)(before + (catching ? 1 : 0));
        }).Order().ToList();
        var honestAccused = mesh.Nodes.Count(n => !n.IsAdversary && firstRefused.ContainsKey(n.Index));
        var active = adversaries.Count(a => tasks.Any(t => t.History.Any(h => a.Owns(h.Provider))));

        // Credits against fuel supplied, per provider.
        var fuelBy = completed.Where(t => t.ProviderIndex >= 0).GroupBy(t => t.ProviderIndex).ToDictionary(g => g.Key, g => g.Sum(t => t.Result!.Fuel));
        // Every task of a scenario is the same work (same module, rounds and input size), so the fuel an honest provider
        // states is the true cost; an adversary's result is worth that much if its output is right, nothing if not.
        var honestFuel = completed.Where(t => t.ProviderIndex >= 0 && !mesh.Nodes[t.ProviderIndex].IsAdversary)
            .GroupBy(t => t.Result!.Fuel).OrderByDescending(g => g.Count()).Select(g => g.Key).FirstOrDefault();
        var points = new List<(long Fuel, long Credits, bool Adversary)>();
        foreach (var p in mesh.Providers)
        {
            if (p.Node?.Compute is not { } compute)
            {
                continue;
            }
            var earned = compute.Ledger.Balance() - s.Mesh.InitialGrant;
            points.Add((fuelBy.GetValueOrDefault(p.Index), earned, p.IsAdversary));
        }
        var honestRatios = points.Where(p => !p.Adversary && p.Fuel > 0).Select(p => (double)p.Credits / p.Fuel).ToList();
        // What a whitewasher earned under identities it dropped counts too.
        var pastEarned = new Dictionary<int, long>();
        long pastBalances = 0;
        foreach (var a in adversaries)
        {
            foreach (var (key, dir) in a.PastIdentities)
            {
                using var ledger = Scheduler.Credits.CreditLedger.Open(dir, key.PeerId,
                    new Scheduler.Credits.CreditsOptions { InitialGrant = s.Mesh.InitialGrant }, mesh.Clock, s.Mesh.StandIns.InMemoryStorage);
                pastBalances += ledger.Balance();
                pastEarned[a.Index] = pastEarned.GetValueOrDefault(a.Index) + ledger.Balance() - s.Mesh.InitialGrant;
            }
        }
        var adversaryEarned = points.Where(p => p.Adversary).Sum(p => p.Credits) + pastEarned.Values.Sum();
        // A correct result is worth what an honest provider is paid for it: its (honest) fuel at the price, rounded up to a
        // whole credit as every lease's cost is (LeaseTerms.CostOf), in fuel at the adversary's price.
        var adversaryCorrectFuel = adversaries.Sum(a =>
        {
            var price = Math.Max(1, mesh.PriceOf(a));
            return completed.Where(t => t.ProviderIndex == a.Index && t.Correct)
                .Sum(t => Math.Ceiling((honestFuel > 0 ? Math.Min(honestFuel, t.Result!.Fuel) : t.Result!.Fuel) * (double)price / 1_000_000) * 1_000_000.0 / price);
        });
        var earnedByAdversary = mesh.Providers.Where(p => p.IsAdversary && p.Node?.Compute is not null)
            .ToDictionary(p => p.Index, p => p.Node!.Compute!.Ledger.Balance() - s.Mesh.InitialGrant);
        var adversaryEarnedFuel = adversaries.Sum(a =>
            (earnedByAdversary.GetValueOrDefault(a.Index) + pastEarned.GetValueOrDefault(a.Index)) * 1_000_000.0 / Math.Max(1, mesh.PriceOf(a)));
        // Freeloaders supplied nothing for the fuel they obtained.
        var gain = adversaryEarnedFuel - adversaryCorrectFuel + attacks.FuelObtained;

        var balances = pastBalances;
        var open = 0;
        foreach (var n in mesh.Nodes)
        {
            if (n.Node?.Compute is { } c)
            {
                balances += c.Ledger.Balance();
                open += c.Ledger.Reservations(Scheduler.Credits.PaymentState.Settled).Count + c.Ledger.Reservations(Scheduler.Credits.PaymentState.Reserved).Count;
            }
            else
            {
                using var ledger = Scheduler.Credits.CreditLedger.Open(n.DataDir, n.PeerId,
                    new Scheduler.Credits.CreditsOptions { InitialGrant = s.Mesh.InitialGrant }, mesh.Clock, s.Mesh.StandIns.InMemoryStorage);
                balances += ledger.Balance();
            }
        }

        long gossipDelivered = 0, gossipDuplicates = 0;
        foreach (var n in mesh.Nodes)
        {
            var (d, dup) = n.GossipCounters();
            gossipDelivered += d;
            gossipDuplicates += dup;
        }

        var known = tasks.Where(t => t.ProvidersKnown >= 0).Select(t => (double)t.ProvidersKnown).Order().ToList();
        var samples = default(Scheduler.Requesting.SampleFigures);
        foreach (var n in mesh.Nodes)
        {
            if (n.IsUp && n.Node?.Compute is { } c)
            {
                var f = c.Client.Samples;
                samples = new(samples.Asked + f.Asked, samples.Unsupported + f.Unsupported, samples.Garbage + f.Garbage, samples.Accepted + f.Accepted,
                    samples.Refused + f.Refused, samples.Skipped + f.Skipped, samples.Answered + f.Answered);
            }
        }
        var ads = known.Count == 0 ? AdFigures.Empty with { Samples = samples }
            : new AdFigures((int)known[0], Percentile(known, 0.5), known.Average(), samples);
        var (issued, _) = mesh.AdPublicationTotals();
        ads = ads with { Issued = Scheduler.Advertising.IssuerCounts.Names.Select((n, i) => (n, issued[i])).ToDictionary(p => p.n, p => p.Item2) };

        var events = mesh.Driver.Loop.ItemsRun + mesh.Driver.Clock.TimersFired;
        var digest = mesh.Driver.Digest;
        using var self = Process.GetCurrentProcess();
        var peak = self.PeakWorkingSet64 / (1024.0 * 1024.0);
        var cpu = self.TotalProcessorTime.TotalSeconds;
        var virtualS = mesh.Elapsed.TotalSeconds;
        return new SimReport
        {
            Seed = s.Mesh.Seed,
            Nodes = mesh.Nodes.Count,
            Providers = mesh.Providers.Count(),
            Tasks = new TaskFigures(tasks.Count, completed.Count, tasks.Count - completed.Count, completed.Count(t => t.Result!.Verified)),
            LeaseLatencyMs = Of(latencies),
            VerificationOverhead = usefulFuel == 0 ? 0 : (double)reexecuted / usefulFuel,
            VerificationOverheadEstablished = establishedFuel == 0 ? null : (double)establishedReexecuted / establishedFuel,
            EstablishedTasks = establishedTasks,
            Cheaters = new CheaterFigures(adversaries.Count, caught.Count, Of(untilCaught), adversaries.Sum(a => a.Corrupted + (a.Cheat?.Invoke() ?? 0)), active),
            WrongAccepted = completed.Count(t => !t.Correct),
            HonestAccused = honestAccused,
            Gossip = new GossipFigures(probes, probesExpected == 0 ? 1 : (double)probesDelivered / probesExpected,
                gossipDelivered == 0 ? 0 : (double)gossipDuplicates / gossipDelivered, gossipDelivered, gossipDuplicates),
            Ads = ads,
            Credits = new CreditFigures(Gini(honestRatios), points.Where(p => !p.Adversary).Sum(p => p.Credits), adversaryEarned,
                balances, s.Mesh.InitialGrant * (mesh.Nodes.Count + mesh.Whitewashes), open),
            Attacks = attacks,
            AdversaryGain = gain,
            Whitewashes = mesh.Whitewashes,
            Faults = new FaultFigures(
                mesh.Events.Count(e => e.Kind == MeshEventKind.Crash), mesh.Events.Count(e => e.Kind == MeshEventKind.Restart),
                mesh.Events.Count(e => e.Kind == MeshEventKind.Partition), mesh.Events.Count(e => e.Kind == MeshEventKind.Heal)),
            TraceHash = mesh.TraceHash,
            TraceLines = mesh.TraceLines,
            WallS = wall.TotalSeconds,
            VirtualS = virtualS,
            JoinOverS = s.Mesh.JoinWindow.TotalSeconds,
            Events = events,
            EventsHash = digest?.Hash,
            Connections = new ConnectionFigures(mesh.ConnectionsOpened, warmupConnections, endsAfterWarmup, endsAtEnd),
            Dials = dials ?? DialFigures.Empty,
            EventsPerS = events / Math.Max(1e-9, wall.TotalSeconds),
            VirtualToWall = virtualS / Math.Max(1e-9, wall.TotalSeconds),
            CpuS = cpu,
            EventsPerCpuS = events / Math.Max(1e-9, cpu),
            SandboxWaitS = mesh.Driver.ExternalWaitTime.TotalSeconds,
            PeakRssMib = peak,
            RssPerNodeKib = peak * 1024 / mesh.Nodes.Count,
            StandIns = mesh.StandIns,
            SharedValues = mesh.SharedValues.Enabled,
            LatencySamplesMs = latencies,
            Slowest = s.SlowestTasks > 0 ? SlowestOf(tasks, s.SlowestTasks) : null,
            ProviderPoints = points,
            TasksUntilCaughtEach = untilCaught,
            CaughtAtS = [.. caught.Select(a => firstRefused[a.Index].TotalSeconds).Order()],
        };
    }

    private static Percentiles Of(List<double> sorted) => sorted.Count == 0
        ? new Percentiles(double.NaN, double.NaN, double.NaN)
        : new Percentiles(Percentile(sorted, 0.5), Percentile(sorted, 0.99), sorted[^1]);

    private static double Percentile(List<double> sorted, double p) => sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Count) - 1, 0, sorted.Count - 1)];

    /// <summary>Gini coefficient of non-negative values (0: all equal); 0 for fewer than two.</summary>
    public static double Gini(IReadOnlyList<double> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (values.Count < 2)
        {
            return 0;
        }
        var sorted = values.Order().ToList();
        var sum = sorted.Sum();
        if (sum <= 0)
        {
            return 0;
        }
        double weighted = 0;
        for (var i = 0; i < sorted.Count; i++)
        {
            weighted += (i + 1) * sorted[i];
        }
        var n = sorted.Count;
        return (2 * weighted / (n * sum)) - ((n + 1.0) / n);
    }

    /// <summary>The human-readable summary <c>potluck sim</c> prints.</summary>
    public string ToText()
    {
        var b = new StringBuilder();
        void Line(FormattableString f) => b.AppendLine(f.ToString(CultureInfo.InvariantCulture));
        Line($"nodes {Nodes} ({Providers} providers, {Cheaters.Count} adversaries{(Attacks.Kind != "none" ? " of kind " + Attacks.Kind : "")}), seed {Seed}");
        Line($"tasks: {Tasks.Completed}/{Tasks.Submitted} completed, {Tasks.Failed} failed, {Tasks.Verified} verified");
        Line($"lease latency (virtual): p50 {LeaseLatencyMs.P50:F1} ms, p99 {LeaseLatencyMs.P99:F1} ms, max {LeaseLatencyMs.Max:F1} ms");
        Line($"verification overhead: {VerificationOverhead:P1} of useful fuel; once established (requester had 10 results from the provider): {(VerificationOverheadEstablished is { } v ? v.ToString("P1", CultureInfo.InvariantCulture) : "n/a")} over {EstablishedTasks} tasks");
        Line($"cheaters: {Cheaters.Caught}/{Cheaters.Count} caught ({Cheaters.Active} ran a task), tasks until caught p99 {Cheaters.TasksUntilCaught.P99}, {Cheaters.Corrupted} outputs corrupted or faked");
        Line($"wrong results accepted: {WrongAccepted}; honest providers accused: {HonestAccused}");
        Line($"gossip: delivery {Gossip.Delivery:P2} of {Gossip.Probes} probes, {Gossip.DuplicatesPerNode:F2} duplicates per delivered message");
        if (Ads.KnownAtSubmitMin >= 0)
        {
            var f = Ads.Samples;
            Line($"providers known at submission: min {Ads.KnownAtSubmitMin}, p50 {Ads.KnownAtSubmitP50:F0}, mean {Ads.KnownAtSubmitMean:F1}; book samples: {f.Asked} asked ({f.Unsupported} unsupported, {f.Garbage} refused as garbage), {f.Accepted} ads taken, {f.Skipped} skipped as held, {f.Refused} refused");
        }
        if (Ads.Issued.Count > 0)
        {
            Line($"advertisements issued: {string.Join(", ", Ads.Issued.Select(p => $"{p.Key} {p.Value}"))}");
        }
        Line($"credits: Gini of credits per fuel across honest providers {Credits.Gini:F4}; adversary gain {AdversaryGain:F0} fuel; balances sum {Credits.BalancesSum} of {Credits.Grants} granted ({(Credits.BalancesSum == Credits.Grants ? "conserved" : "NOT conserved")}), {Credits.OpenPayments} payments open");
        if (Attacks.Kind != "none")
        {
            Line($"attacks ({Attacks.Kind}): {Attacks.Attempts} made, {Attacks.Served} served, {Attacks.Refused} refused; fuel obtained unpaid {Attacks.FuelObtained} (allowance {Attacks.AllowanceFuel:F0}), owed to honest providers {Attacks.Unpaid} credits; proof re-runs {Attacks.ProofReRuns}; longest squat {Attacks.SquatHeldMaxS:F1} s; gossip messages rejected {Attacks.SpamRejected}");
        }
        if (Attacks.Kind == "forker")
        {
            Line($"forks: {Attacks.Forks} signed; fork proof held by {Attacks.ForkProofHolders}/{Attacks.HonestUp} honest nodes; honest tasks leased to a forker after its requester refused it: {Attacks.ServedAsProviderAfterProof}");
        }
        if (Whitewashes > 0)
        {
            Line($"whitewashes: {Whitewashes} new identities");
        }
        Line($"faults: {Faults.Crashes} crashes, {Faults.Restarts} restarts, {Faults.Partitions} partitions, {Faults.Heals} heals");
        Line($"connections opened: {Connections.Opened} ({Connections.OpenedWarmup} during the join over {JoinOverS:F1} virtual s and the warm-up)");
        Line($"connection ends per node: {Connections.EndsAfterWarmup.PerNode:F1} after the warm-up (most {Connections.EndsAfterWarmup.Max}, {Connections.EndsAfterWarmup.Young} ends young, {Connections.EndsAfterWarmup.Protected} protected, {Connections.EndsAfterWarmup.OverCap} nodes above their high watermark), {Connections.EndsAtEnd.PerNode:F1} at the end (most {Connections.EndsAtEnd.Max}, {Connections.EndsAtEnd.OverCap} nodes above)");
        Line($"gossip meshes per node: {Connections.EndsAfterWarmup.PerNodeOf(Connections.EndsAfterWarmup.MeshPeers):F1} distinct mesh peers after the warm-up ({Connections.EndsAfterWarmup.PerNodeOf(Connections.EndsAfterWarmup.MeshPeersInOneMesh):F1} in one mesh only; {Connections.EndsAfterWarmup.PerNodeOf(Connections.EndsAfterWarmup.MeshMemberships):F1} places in {Connections.EndsAfterWarmup.PerNodeOf(Connections.EndsAfterWarmup.MeshTopics):F1} meshes), {Connections.EndsAtEnd.PerNodeOf(Connections.EndsAtEnd.MeshPeers):F1} at the end ({Connections.EndsAtEnd.PerNodeOf(Connections.EndsAtEnd.MeshPeersInOneMesh):F1} in one mesh only; {Connections.EndsAtEnd.PerNodeOf(Connections.EndsAtEnd.MeshMemberships):F1} places)");
        Line($"dials by reason: {DialFigures.Describe(Dials.Total)} (warm-up: {DialFigures.Describe(Dials.Warmup)}); connections closed: {DialFigures.Describe(Dials.Closed)}; DHT requests: {DialFigures.Describe(Dials.DhtQueries)}");
        Line($"trace {TraceHash} ({TraceLines} lines){(EventsHash is null ? "" : $", events {EventsHash}")}");
        Line($"wall {WallS:F1} s, cpu {CpuS:F1} s, virtual {VirtualS:F1} s ({VirtualToWall:F2}x wall), {Events} events ({EventsPerS:F0}/s wall, {EventsPerCpuS:F0}/s cpu), peak RSS {PeakRssMib:F0} MiB ({RssPerNodeKib:F0} KiB per node); {SandboxWaitS:F1} s waiting for sandbox runs");
        if (Runtime is { } r)
        {
            Line($"runtime: {r.Exceptions} exceptions thrown ({r.Exceptions / Math.Max(1e-9, WallS):F1}/s wall, {r.Exceptions / Math.Max(1e-9, CpuS):F1}/cpu s: {DialFigures.Describe(r.ExceptionsByType)}); GC {r.Gen0}/{r.Gen1}/{r.Gen2} collections (gen0/1/2), paused {r.GcPauseS:F1} s ({r.GcPauseShare:P1} of wall)");
            if (r.Settings.Length > 0)
            {
                Line($"runtime settings: {r.Settings}");
            }
        }
        foreach (var t in Slowest ?? [])
        {
            Line($"slow task {t.Id}: {t.LatencyMs:F0} ms from virtual {t.SubmittedS:F3} s, requester n{t.Requester}, {(t.Completed ? $"done by n{t.Provider}" : "failed")}{(t.StepsShared ? " (its requester had other tasks in flight: steps may be theirs)" : "")}");
            foreach (var step in t.Steps)
            {
                Line($"  +{step.AtMs,8:F1} ms  {step.What}");
            }
        }
        Line($"stand-ins: {(StandIns.Count == 0 ? "none (real Noise, Ed25519, SQLite ledgers, Wasmtime runs)" : string.Join("; ", StandIns))}");
        Line($"shared values: {(SharedValues ? "on (" + Potluck.Protocol.Runtime.SharedValues.ReportName + ")" : "off (every node keeps its own copy of every decoded value)")}");
        return b.ToString();
    }
}
