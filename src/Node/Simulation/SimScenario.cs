using System.Diagnostics;
using System.Globalization;
using Potluck.Protocol.Host;
using Potluck.Protocol.Metrics;
using Potluck.Protocol.Runtime;

namespace Potluck.Node.Simulation;

/// <summary>
/// A whole run of a <see cref="SimulatedMesh"/>: warm-up, a workload of hashchain tasks spread over
/// <see cref="Duration"/> from random requesters, gossip probes, and the faults asked for (churn, a partition that
/// heals half-way), then a drain so receipts are delivered. <see cref="SimRunner.Run"/> runs it and reports.
/// </summary>
public sealed record SimScenario
{
    public MeshOptions Mesh { get; init; } = new();

    /// <summary>Tasks submitted over <see cref="Duration"/>. Default 100.</summary>
    public int Tasks { get; init; } = 100;

    /// <summary>Virtual time over which tasks are submitted (and faults happen). Default 60 s.</summary>
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Virtual time for meshes to form and advertisements to spread before the workload. Default 10 s.</summary>
    public TimeSpan Warmup { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>SHA-256 rounds per task (the work each does). Default 200.</summary>
    public int TaskRounds { get; init; } = 200;

    /// <summary>Share of nodes that crash (and restart <see cref="ChurnDowntime"/> later) per virtual minute. Default 0.</summary>
    public double ChurnPerMinute { get; init; }

    /// <summary>How long a churned node stays down. Default 10 s.</summary>
    public TimeSpan ChurnDowntime { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Split the nodes in two halves from a third of <see cref="Duration"/> to two thirds, then heal. Default off.</summary>
    public bool Partition { get; init; }

    /// <summary>Gossip messages published on a probe topic every node joins, to measure delivery and duplicates. Default 20.</summary>
    public int GossipProbes { get; init; } = 20;

    /// <summary>Attacks each requester-side adversary makes, spread over <see cref="Duration"/> (see <see cref="SimAttacks"/>). Default 10.</summary>
    public int AttackAttempts { get; init; } = 10;

    /// <summary>The report lists this many slowest tasks with their timelines (<see cref="TaskRecord.Steps"/>). Default 0.</summary>
    public int SlowestTasks { get; init; }

    /// <summary>
    /// Called on the loop once, when the run has drained (after the "memory at the end" progress line) and before the
    /// report is measured; the mesh's virtual time does not move while it runs, so it does not change the run. A
    /// benchmark holds the process here to take a heap dump of the end state (<c>potluck sim --hold-at-end</c>,
    /// <c>scripts/bench/sim-memory.sh</c>). Default none.
    /// </summary>
    public Action? AtEnd { get; init; }

    /// <summary>
    /// Where to write every event of the run, one line each (virtual ticks, item or timer, what it ran), to diff two runs
    /// (<c>POTLUCK_SIM_EVENT_LOG</c> for <c>potluck sim</c>); slow. Default none: the run keeps only the digest
    /// (<see cref="SimReport.EventsHash"/>).
    /// </summary>
    public TextWriter? EventLog { get; init; }

    /// <summary>
    /// Where to write the run's memory against virtual time (<c>potluck sim --memory-trace FILE</c>): every 100 ms of wall
    /// time a <c>sample</c> line from a thread of its own (resident set, its peak so far, GC committed and heap at the last
    /// collection, virtual seconds), and at every progress point on the loop a <c>census</c> line (connection ends per
    /// node, young, protected). Read-only: it arms no timer and reads nothing that sweeps, so the trace stays the same.
    /// Default none.
    /// </summary>
    public TextWriter? MemoryTrace { get; init; }

    /// <summary>
    /// The harness's cap on the managed heap's growth between full collections (<c>potluck sim</c>:
    /// <c>POTLUCK_SIM_GEN2_GROWTH</c>), checked between two moments of virtual time; it changes memory and CPU, never the
    /// run. Default none (the runtime's own policy).
    /// </summary>
    public SimHeapPolicy? HeapPolicy { get; init; }

    internal void Validate()
    {
        Mesh.Validate();
        if (Tasks < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(Tasks), Tasks, "must not be negative");
        }
        if (Duration <= TimeSpan.Zero || Warmup < TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(Duration), "duration must be positive, warm-up not negative");
        }
        if (AttackAttempts < 0 || AttackAttempts > 100_000)
        {
            throw new ArgumentOutOfRangeException(nameof(AttackAttempts), AttackAttempts, "must be 0 to 100,000");
        }
        if (TaskRounds < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(TaskRounds), TaskRounds, "must be at least 1");
        }
        if (!(ChurnPerMinute >= 0 && ChurnPerMinute <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(ChurnPerMinute), ChurnPerMinute, "must be in [0, 1]");
        }
    }
}

/// <summary>Runs a <see cref="SimScenario"/> on a fresh <see cref="VirtualTimeDriver"/> and measures it.</summary>
public static class SimRunner
{
    private const string ProbeTopic = "potluck/sim/probe";

    /// <summary>
    /// Runs <paramref name="scenario"/>; <paramref name="progress"/> gets a one-line status now and then (from the loop).
    /// Cancelling <paramref name="cancel"/> (Ctrl-C or SIGTERM in <c>potluck sim</c>) stops the run between two moments of
    /// virtual time with <see cref="OperationCanceledException"/> and no report; the nodes' data directory, when the mesh
    /// chose it, is deleted either way.
    /// </summary>
    public static SimReport Run(SimScenario scenario, Action<string>? progress = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(scenario);
        scenario.Validate();
        string? ownRoot = null;
        if (scenario.Mesh.DataRoot is null)
        {
            ownRoot = Path.Combine(Path.GetTempPath(), "potluck-sim-" + Guid.NewGuid().ToString("N"));
            scenario = scenario with { Mesh = scenario.Mesh with { DataRoot = ownRoot } };
        }
        if (Environment.GetEnvironmentVariable("POTLUCK_SIM_SQLITE_CENSUS") is { Length: > 0 } census && census != "0")
        {
            Scheduler.Storage.SqliteMemory.CensusStatements = true;
        }
        try
        {
            var driver = new VirtualTimeDriver();
            driver.DigestEvents(scenario.EventLog);
            if (scenario.HeapPolicy is { } heap)
            {
                driver.BetweenMoments = heap.Check;
            }
            return Run(scenario, progress, cancel, driver);
        }
        finally
        {
            if (ownRoot is not null && Directory.Exists(ownRoot))
            {
                try
                {
                    Directory.Delete(ownRoot, recursive: true);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                }
            }
        }
    }

    private static SimReport Run(SimScenario scenario, Action<string>? progress, CancellationToken cancel, VirtualTimeDriver driver)
    {
        var wall = Stopwatch.StartNew();
        SimReport? report = null;
        using var sampler = scenario.MemoryTrace is { } trace ? SimMemoryTrace.Start(trace, driver.Clock, wall) : null;
        driver.RunUntilComplete(async d =>
        {
            var started = 0;
            await using var mesh = await SimulatedMesh.StartAsync(d, scenario.Mesh, new InlineProgress(i =>
            {
                started = i;
                if (i % Math.Max(1, scenario.Mesh.Nodes / 20) == 0 || i == scenario.Mesh.Nodes)
                {
                    progress?.Invoke($"starting nodes {i}/{scenario.Mesh.Nodes}, virtual {d.Clock.Elapsed.TotalSeconds:F1} s, wall {wall.Elapsed.TotalSeconds:F1} s");
                    sampler?.Phase($"join {i}/{scenario.Mesh.Nodes}");
                }
            }));
            // The teardown, within one moment, gets the heap check that runs between moments.
            mesh.TeardownCheck = scenario.HeapPolicy is { } heap ? heap.Check : null;
            report = await RunAsync(mesh, scenario, wall, progress, sampler);
        }, cancel);
        // The mesh's teardown (every node disposed, after the figures were read) can raise the process's peak: at 10,000
        // nodes it did, 3,683 -> 4,053 MiB (stop 40). peak_rss_mib is what the run needed of the machine, so it is read
        // again once the teardown is over; the rest of the report is as measured before it.
        return WithPeakAfterTeardown(report!, PeakRssMibNow());
    }

    /// <summary>This process's peak resident set (VmHWM) in MiB.</summary>
    private static double PeakRssMibNow()
    {
        using var self = Process.GetCurrentProcess();
        return self.PeakWorkingSet64 / (1024.0 * 1024.0);
    }

    /// <summary>The report with the process's peak as read after the mesh's teardown (it only ever grows).</summary>
    internal static SimReport WithPeakAfterTeardown(SimReport report, double peakMib) =>
        peakMib <= report.PeakRssMib ? report
            : report with { PeakRssMib = peakMib, RssPerNodeKib = peakMib * 1024 / Math.Max(1, report.Nodes) };

    private sealed class InlineProgress(Action<int> report) : IProgress<int>
    {
        public void Report(int value) => report(value);
    }

    private static async Task<SimReport> RunAsync(SimulatedMesh mesh, SimScenario s, Stopwatch wall, Action<string>? progress, SimMemoryTrace? sampler)
    {
        var burst = BurstProbe.Start(progress);
        var probes = mesh.Nodes.ToDictionary(n => n.Index, n => n.Node!.JoinTopic(ProbeTopic));
        if (burst is not null)
        {
            await burst.AtInstantEndAsync(mesh);
        }
        mesh.Whitewashed += n => probes[n.Index] = n.Node!.JoinTopic(ProbeTopic);
        var perSecond = new List<IReadOnlyDictionary<string, long>>();
        // A staggered join's seconds come first: the warm-up starts when the last node is up.
        foreach (var second in mesh.JoinDialsPerSecond)
        {
            var joinDials = SimReport.DialFigures.Named(DialReason.All, second);
            perSecond.Add(joinDials);
            progress?.Invoke(string.Create(CultureInfo.InvariantCulture,
                $"join: virtual second {perSecond.Count} of {mesh.Elapsed.TotalSeconds:F1}; dials: {SimReport.DialFigures.Describe(joinDials)}"));
        }
        await WarmUpAsync(mesh, s, wall, progress, perSecond, sampler);
        // The warm-up leaves more alive than the work keeps (its connections are trimmed): a full collection here gives the
        // heap policy the work's own live heap to hold gen2 against, not the warm-up's larger one.
        s.HeapPolicy?.CollectNow();
        var warmupConnections = mesh.ConnectionsOpened;
        var endsAfterWarmup = mesh.CountConnectionEnds();
        sampler?.Census("work", endsAfterWarmup);
        progress?.Invoke(endsAfterWarmup.Describe("after warm-up"));
        progress?.Invoke(mesh.CountPerPeerState().Describe("after warm-up"));
        var warmupDials = mesh.DialTotals();
        var gossipAtWarmup = mesh.GossipTopicTotals();
        if (progress is not null)
        {
            foreach (var line in mesh.DescribeGossipMeshes())
            {
                progress("after warm-up: " + line);
            }
        }
        var workStart = mesh.Elapsed;
        var random = mesh.Random;
        var running = new List<Task>();
        // Requester-side adversaries attack (below); the workload comes from honest requesters.
        var requesters = mesh.Requesters.Where(n => !n.IsAdversary).ToList();
        var attacks = new SimAttacks(mesh, s);

        // Workload: submission times and requesters drawn up front from the seed.
        var plan = Enumerable.Range(0, s.Tasks)
            .Select(_ => (At: TimeSpan.FromTicks((long)(random.NextDouble() * s.Duration.Ticks)), Requester: requesters[random.Next(requesters.Count)]))
            .OrderBy(p => p.At).ToList();
        var tasks = plan.Select(_ => SimulatedMesh.HashChainTask(random, s.TaskRounds)).ToList();
        for (var i = 0; i < plan.Count; i++)
        {
            var (at, requester) = plan[i];
            var task = tasks[i];
            running.Add(At(mesh, workStart + at, () => mesh.SubmitAsync(requester, task)));
        }

        // Gossip probes from random live nodes, spread over the run.
        var published = new List<ProbeRecord>();
        for (var p = 0; p < s.GossipProbes; p++)
        {
            var at = workStart + TimeSpan.FromTicks(s.Duration.Ticks * (p + 1) / (s.GossipProbes + 1));
            var publisher = mesh.Nodes[random.Next(mesh.Nodes.Count)];
            var id = p;
            running.Add(At(mesh, at, async () =>
            {
                if (publisher.Node is { } node)
                {
                    // Owed to every node up and not cut off from the publisher by a partition.
                    var up = mesh.Nodes.Where(n => n.IsUp && n != publisher && !mesh.Network.IsPartitioned(publisher.Address, n.Address))
                        .Select(n => n.Index).ToList();
                    published.Add(new ProbeRecord(id, mesh.Elapsed, up));
                    await node.Gossip.PublishAsync(ProbeTopic, BitConverter.GetBytes(id), CancellationToken.None);
                }
            }));
        }

        // Churn: every node is equally likely to go down; down for ChurnDowntime, then back with the same identity and data.
        if (s.ChurnPerMinute > 0)
        {
            var perMinute = s.ChurnPerMinute * mesh.Nodes.Count;
            var crashes = (int)Math.Round(perMinute * s.Duration.TotalMinutes);
            for (var c = 0; c < crashes; c++)
            {
                var at = workStart + TimeSpan.FromTicks((long)(random.NextDouble() * s.Duration.Ticks));
                var victim = mesh.Nodes[random.Next(mesh.Nodes.Count)];
                running.Add(At(mesh, at, async () =>
                {
                    if (!victim.IsUp)
                    {
                        return;
                    }
                    await mesh.CrashAsync(victim);
                    await Task.Delay(s.ChurnDowntime, mesh.Clock);
                    await mesh.RestartAsync(victim);
                    probes[victim.Index] = victim.Node!.JoinTopic(ProbeTopic);
                }));
            }
        }

        if (s.Partition)
        {
            var half = mesh.Nodes.Count / 2;
            var left = mesh.Nodes.Take(half).ToList();
            var right = mesh.Nodes.Skip(half).ToList();
            running.Add(At(mesh, workStart + (s.Duration / 3), () =>
            {
                mesh.Partition(left, right);
                return Task.CompletedTask;
            }));
            running.Add(At(mesh, workStart + (s.Duration * 2 / 3), () =>
            {
                mesh.Heal(left, right);
                return Task.CompletedTask;
            }));
        }

        running.AddRange(attacks.Schedule(workStart));

        var reporter = ReportProgressAsync(mesh, s, wall, progress, running, sampler);
        await Task.WhenAll(running);
        sampler?.Phase("drain");
        // Drain: receipts still in flight reach their providers, gossip settles, whitewashers are back.
        await mesh.SettleAsync(TimeSpan.FromSeconds(30));
        await mesh.WhenQuietAsync();
        foreach (var node in mesh.Nodes.Where(n => n.IsUp))
        {
            await node.Node!.Compute!.Client.WhenReceiptsDeliveredAsync(CancellationToken.None);
        }
        await reporter;
        sampler?.Census("drained", mesh.CountConnectionEnds());
        progress?.Invoke(SimMemory.Now().Describe(mesh.Nodes.Count, "at the end"));
        if (s.AtEnd is { } atEnd)
        {
            wall.Stop(); // the hold is not the run's: wall_s and events_per_s leave it out
            atEnd();
            wall.Start();
        }
        var storageAtEnd = mesh.CountStorage();
        progress?.Invoke(storageAtEnd.Footprint.Describe(storageAtEnd.Nodes, "at the end"));
        if (progress is not null)
        {
            SqliteCensus(progress, "at the end", "end-");
        }
        var endsAtEnd = mesh.CountConnectionEnds();
        progress?.Invoke(endsAtEnd.Describe("at the end"));
        progress?.Invoke(mesh.CountPerPeerState().Describe("at the end"));
        if (progress is not null)
        {
            foreach (var line in mesh.DescribeGossipMeshes())
            {
                progress("at the end: " + line);
            }
            var changes = new long[Protocol.Gossipsub.RouterCounters.MeshChangeNames.Length];
            foreach (var n in mesh.Nodes)
            {
                if (n.Node is { } up)
                {
                    var c = up.Gossip.Counters.MeshChanges();
                    for (var i = 0; i < changes.Length; i++)
                    {
                        changes[i] += c[i];
                    }
                }
            }
            progress("gossip mesh changes (nodes up at the end, whole run): "
                + string.Join(", ", Protocol.Gossipsub.RouterCounters.MeshChangeNames.Select((name, i) => $"{name} {changes[i]}")));
            var (issued, providers) = mesh.AdPublicationTotals();
            progress(string.Create(CultureInfo.InvariantCulture,
                $"advertisements issued by the {providers} providers up (whole run): {string.Join(", ", Scheduler.Advertising.IssuerCounts.Names.Select((n, i) => $"{n} {issued[i]}"))}"));
            if (mesh.Driver.Digest is { } digest)
            {
                progress("events by what they ran (whole run, most first): "
                    + string.Join("; ", digest.CountsByKind().Select(k => string.Create(CultureInfo.InvariantCulture, $"{k.What} {k.Count}"))));
            }
            var names = Protocol.Gossipsub.TopicCounters.Names;
            foreach (var (topic, total) in mesh.GossipTopicTotals())
            {
                var before = gossipAtWarmup.GetValueOrDefault(topic) ?? new long[total.Length];
                progress(string.Create(CultureInfo.InvariantCulture,
                    $"gossip {topic} (warm-up + work): {string.Join(", ", names.Select((n, i) => $"{n} {before[i]}+{total[i] - before[i]}"))}"));
            }
        }
        var (expected, delivered) = CountProbes(mesh, probes, published);
        var dials = new SimReport.DialFigures(SimReport.DialFigures.Named(DialReason.All, mesh.DialTotals()),
            SimReport.DialFigures.Named(DialReason.All, warmupDials), perSecond,
            SimReport.DialFigures.Named(ProtocolInstruments.CloseReasons, mesh.ClosedTotals()),
            SimReport.DialFigures.Named(SimReport.DialFigures.QueryOutcomes, mesh.DhtQueryTotals()));
        return SimReport.Measure(mesh, s, wall.Elapsed, published.Count, expected, delivered, attacks.Measure(), warmupConnections, dials, endsAfterWarmup, endsAtEnd);
    }

    /// <summary>The warm-up (meshes form), with a progress line each virtual second when someone reads them.</summary>
    private static async Task WarmUpAsync(SimulatedMesh mesh, SimScenario s, Stopwatch wall, Action<string>? progress,
        List<IReadOnlyDictionary<string, long>> perSecond, SimMemoryTrace? sampler)
    {
        var end = mesh.Elapsed + s.Warmup;
        sampler?.Census("warm-up", mesh.CountConnectionEnds());
        if (progress is null)
        {
            await mesh.SettleAsync(s.Warmup);
            return;
        }
        while (mesh.Elapsed < end)
        {
            var step = end - mesh.Elapsed < TimeSpan.FromSeconds(1) ? end - mesh.Elapsed : TimeSpan.FromSeconds(1);
            var before = mesh.DialTotals();
            var queriesBefore = mesh.DhtQueryTotals();
            await mesh.SettleAsync(step);
            var dials = SimReport.DialFigures.Named(DialReason.All, mesh.DialTotals(), before);
            var queries = SimReport.DialFigures.Named(SimReport.DialFigures.QueryOutcomes, mesh.DhtQueryTotals(), queriesBefore);
            perSecond.Add(dials);
            progress(string.Create(CultureInfo.InvariantCulture,
                $"warm-up: virtual {mesh.Elapsed.TotalSeconds:F0} s, {mesh.ConnectionsOpened} connections opened, wall {wall.Elapsed.TotalSeconds:F1} s; dials this second: {SimReport.DialFigures.Describe(dials)}; DHT requests: {SimReport.DialFigures.Describe(queries)}"));
            sampler?.Census("warm-up", mesh.CountConnectionEnds());
        }
        progress(SimMemory.Now().Describe(mesh.Nodes.Count, "after warm-up"));
        var storage = mesh.CountStorage();
        progress(storage.Footprint.Describe(storage.Nodes, "after warm-up"));
        SqliteCensus(progress, "after warm-up", "warm-");
    }

    /// <summary>
    /// With <c>POTLUCK_SIM_SQLITE_CENSUS</c> set (1, or a directory to copy every in-memory store into), lines on the
    /// stand-in's stores: pages, free pages, statements kept prepared (<see cref="Scheduler.Storage.SqliteMemory.Census"/>).
    /// Measurement only: it reads the stores, the trace stays the same.
    /// </summary>
    private static void SqliteCensus(Action<string> progress, string when, string tag)
    {
        var setting = Environment.GetEnvironmentVariable("POTLUCK_SIM_SQLITE_CENSUS");
        if (string.IsNullOrEmpty(setting) || setting == "0")
        {
            return;
        }
        var directory = setting == "1" ? null : Directory.CreateDirectory(setting).FullName;
        foreach (var line in Scheduler.Storage.SqliteMemory.Census(directory, tag).Describe(when))
        {
            progress(line);
        }
    }

    private static async Task At(SimulatedMesh mesh, TimeSpan at, Func<Task> action)
    {
        var wait = at - mesh.Elapsed;
        if (wait > TimeSpan.Zero)
        {
            await Task.Delay(wait, mesh.Clock);
        }
        await action();
    }

    private static async Task ReportProgressAsync(SimulatedMesh mesh, SimScenario s, Stopwatch wall, Action<string>? progress, List<Task> running,
        SimMemoryTrace? sampler)
    {
        if (progress is null)
        {
            return;
        }
        var all = Task.WhenAll(running.ToArray());
        while (!all.IsCompleted)
        {
            await Task.WhenAny(all, Task.Delay(TimeSpan.FromSeconds(5), mesh.Clock));
            var done = mesh.Tasks.Count(t => t.Finished is not null);
            progress(string.Create(CultureInfo.InvariantCulture,
                $"virtual {mesh.Elapsed.TotalSeconds:F0} s, tasks {done}/{s.Tasks} done ({mesh.Tasks.Count(t => t.Completed)} completed), "
                + $"nodes up {mesh.Nodes.Count(n => n.IsUp)}/{mesh.Nodes.Count}, wall {wall.Elapsed.TotalSeconds:F1} s"));
            sampler?.Census("work", mesh.CountConnectionEnds());
        }
    }

    private sealed record ProbeRecord(int Id, TimeSpan At, List<int> Up);

    /// <summary>
    /// Probe deliveries owed and made: a probe is owed to every node up (and on the publisher's side of any partition)
    /// when it was published that did not crash
    /// afterwards (a node that crashed may have lost it with its state); made when that node's subscription holds it.
    /// </summary>
    private static (long Expected, long Delivered) CountProbes(SimulatedMesh mesh, Dictionary<int, Protocol.Gossipsub.GossipSubscription> subs,
        List<ProbeRecord> published)
    {
        var received = new Dictionary<int, HashSet<int>>();
        foreach (var (index, sub) in subs)
        {
            var ids = received[index] = [];
            while (sub.Messages.TryRead(out var message))
            {
                if (message.Data.Length == 4)
                {
                    ids.Add(BitConverter.ToInt32(message.Data.Span));
                }
            }
            sub.Dispose();
        }
        var lastCrash = mesh.Events.Where(e => e.Kind == MeshEventKind.Crash).GroupBy(e => e.Node).ToDictionary(g => g.Key, g => g.Max(e => e.At));
        long expected = 0, delivered = 0;
        foreach (var probe in published)
        {
            foreach (var node in probe.Up)
            {
                if (lastCrash.TryGetValue(node, out var crash) && crash >= probe.At)
                {
                    continue;
                }
                expected++;
                if (received.TryGetValue(node, out var ids) && ids.Contains(probe.Id))
                {
                    delivered++;
                }
            }
        }
        return (expected, delivered);
    }
}
