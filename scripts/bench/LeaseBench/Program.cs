using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Node;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Scheduler.Providing;
using Potluck.Scheduler.Requesting;

namespace Potluck.Benchmarks.Lease;

/// <summary>
/// Lease-path scenario on loopback TCP, side by side in one run: one requester and two providers (separate
/// nodes, each with its own identity, ledger and sandbox, in this process). A no-op task (samples/testmods/
/// exitcode.wasm with argument 0 and empty input: WASI start-up and exit) measures the overhead of the whole
/// path — ad lookup, lease negotiation with signed terms, attestation, receipt and two SQLite ledgers with
/// synchronous=FULL for the commits a receipt rests on — next to a libp2p ping over the same connection and the
/// same task run in the local sandbox. Warm-up: 50 tasks one at a time, then a quarter of [total] at [concurrency].
/// Usage: dotnet run --project scripts/bench/LeaseBench -c Release -- [sequential] [total] [concurrency]
/// </summary>
public static class Program
{
    /// <summary>LEASEBENCH_ACCOUNTING=0 turns the accounting chain off on all three nodes (to measure what it costs, side by side).</summary>
    private static Potluck.Scheduler.Accounting.AccountingOptions Accounting(Potluck.Node.Hosting.ComputeOptions compute) =>
        compute.Accounting with { Enabled = Environment.GetEnvironmentVariable("LEASEBENCH_ACCOUNTING") != "0" };

    /// <summary>
    /// The providers' admission policy. By default a provider's own defaults: the requester here is a stranger to both, so it
    /// holds at most <see cref="ProviderOptions.MaxLeasesPerRequester"/> (4) leases per provider and at most
    /// <see cref="ProviderOptions.StrangerCoreShare"/> of the cores — 8 leases in flight in all, whatever the concurrency
    /// asked. LEASEBENCH_POLICY=cluster gives a private cluster's open policy (every core, as many leases as cores) so the
    /// path's speed is measured at the concurrency asked, as before those limits existed.
    /// </summary>
    private static ProviderOptions ProviderPolicy(int cores) =>
        Environment.GetEnvironmentVariable("LEASEBENCH_POLICY") == "cluster"
            ? new ProviderOptions { Cores = cores, MaxLeasesPerRequester = cores, StrangerCoreShare = 1 }
            : new ProviderOptions { Cores = cores };

    public static async Task<int> Main(string[] args)
    {
        var sequential = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 300;
        var total = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 2000;
        var concurrency = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 32;
        using var overall = new CancellationTokenSource(TimeSpan.FromMinutes(10));
        var ct = overall.Token;
        var root = FindRoot();
        var module = await File.ReadAllBytesAsync(Path.Combine(root, "samples", "testmods", "exitcode.wasm"), ct);
        var scratch = Directory.CreateTempSubdirectory("potluck-leasebench-");
        try
        {
            var loopback = new[] { Multiaddr.Parse("/ip4/127.0.0.1/tcp/0") };
            async Task<PotluckNode> Provider(string name) => await PotluckNode.CreateBuilder()
                .Configure(o => o with
                {
                    Listen = loopback,
                    DataDir = Path.Combine(scratch.FullName, name),
                    Compute = o.Compute with { Enabled = true, Provider = ProviderPolicy(Environment.ProcessorCount * 8), Accounting = Accounting(o.Compute) },
                })
                .StartAsync(ct);
            await using var p1 = await Provider("p1");
            await using var p2 = await Provider("p2");
            await using var requester = await PotluckNode.CreateBuilder()
                .Configure(o => o with
                {
                    Bootstrap = [p1.FullAddresses[0], p2.FullAddresses[0]],
                    DataDir = Path.Combine(scratch.FullName, "r"),
                    Compute = o.Compute with { Enabled = true, Provide = false, Accounting = Accounting(o.Compute) },
                })
                .StartAsync(ct);
            await requester.Compute!.Client.WaitForProvidersAsync(2, ct);
            var task = new TaskSubmission { Module = module, Args = ["0"], Fuel = 20_000_000, MaxPricePerMegaFuel = 10 };

            // Warm up every path (JIT, compiled-module caches on all three nodes, connections): sequentially, then
            // concurrently, so the concurrent phase below is not measuring tiered compilation of its own code paths.
            for (var i = 0; i < 50; i++)
            {
                await requester.Compute.SubmitAsync(task, ct);
            }
            var warmFailures = 0;
            await Task.WhenAll(Enumerable.Range(0, concurrency).Select(_ => Task.Run(async () =>
            {
                for (var i = 0; i < Math.Max(1, total / 4 / concurrency); i++)
                {
                    if (!await TrySubmitAsync(requester, task, ct))
                    {
                        Interlocked.Increment(ref warmFailures);
                    }
                }
            }, ct)));

            var ping = new List<double>();
            for (var i = 0; i < sequential; i++)
            {
                ping.Add((await requester.Ping.PingAsync(p1.PeerId, 1, ct))[0].TotalMilliseconds);
            }
            var local = new List<double>();
            var spec = new Potluck.Scheduler.Sandbox.TaskSpec { Module = module, Args = ["0"], FuelLimit = 20_000_000 };
            for (var i = 0; i < sequential; i++)
            {
                var sw = Stopwatch.StartNew();
                await requester.Compute.Sandbox.ExecuteAsync(spec, ReadOnlyMemory<byte>.Empty, ct);
                local.Add(sw.Elapsed.TotalMilliseconds);
            }
            var lease = new List<double>();
            var acknowledged = new List<double>();
            var verified = 0;
            for (var i = 0; i < sequential; i++)
            {
                var sw = Stopwatch.StartNew();
                var result = await requester.Compute.SubmitAsync(task, ct);
                lease.Add(sw.Elapsed.TotalMilliseconds);
                // The receipt is handed over in the background; one lease at a time means waiting for it too.
                await requester.Compute.Client.WhenReceiptsDeliveredAsync(ct);
                acknowledged.Add(sw.Elapsed.TotalMilliseconds);
                verified += result.Verified ? 1 : 0;
                if (!result.Succeeded)
                {
                    throw new InvalidOperationException($"task failed: {result.Error}");
                }
            }

            // A marker on stderr so that a profiler can attach for the sustained phase only.
            await Console.Error.WriteLineAsync($"# sustained phase starting, pid {Environment.ProcessId}");
            var timeline = Environment.GetEnvironmentVariable("LEASEBENCH_TIMELINE") == "1";
            Potluck.Scheduler.Metrics.LeaseTimeline.Clear();
            Potluck.Scheduler.Metrics.LeaseTimeline.Enabled = timeline;
            using var pool = timeline ? new PoolSampler() : null;
            var submitted = new System.Collections.Concurrent.ConcurrentBag<double>();
            var refusedBefore = p1.Compute!.Provider!.RefusedOverLimit + p2.Compute!.Provider!.RefusedOverLimit;
            var cpu = Process.GetCurrentProcess().TotalProcessorTime;
            using var sampler = Environment.GetEnvironmentVariable("LEASEBENCH_ALLOC") == "1" ? new AllocationSampler() : null;
            using var counters = Environment.GetEnvironmentVariable("LEASEBENCH_COUNTERS") == "1" ? new CounterSampler() : null;
            var allocated = GC.GetTotalAllocatedBytes(precise: false);
            var collections = (GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2));
            var workItems = ThreadPool.CompletedWorkItemCount;
            var jitMethods = System.Runtime.JitInfo.GetCompiledMethodCount();
            var jitTime = System.Runtime.JitInfo.GetCompilationTime();
            var contentions = Monitor.LockContentionCount;
            var wall = Stopwatch.StartNew();
            var next = 0;
            var failures = 0;
            async Task Worker()
            {
                while (Interlocked.Increment(ref next) <= total)
                {
                    var started = Stopwatch.GetTimestamp();
                    if (!await TrySubmitAsync(requester, task, ct))
                    {
                        Interlocked.Increment(ref failures);
                    }
                    if (timeline)
                    {
                        submitted.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                    }
                }
            }
            await Task.WhenAll(Enumerable.Range(0, concurrency).Select(_ => Task.Run(Worker, ct)));
            await requester.Compute.Client.WhenReceiptsDeliveredAsync(ct);
            var elapsed = wall.Elapsed;
            var cpuUsed = Process.GetCurrentProcess().TotalProcessorTime - cpu;
            var allocatedPerTask = (GC.GetTotalAllocatedBytes(precise: false) - allocated) / total;
            var workItemsPerTask = (double)(ThreadPool.CompletedWorkItemCount - workItems) / total;
            var jitMethodsDone = System.Runtime.JitInfo.GetCompiledMethodCount() - jitMethods;
            var jitTimeSpent = System.Runtime.JitInfo.GetCompilationTime() - jitTime;
            var contentionsPerTask = (double)(Monitor.LockContentionCount - contentions) / total;
            var gcs = (GC.CollectionCount(0) - collections.Item1, GC.CollectionCount(1) - collections.Item2, GC.CollectionCount(2) - collections.Item3);

            Console.WriteLine($"# Potluck lease-path benchmark — {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, .NET {Environment.Version}");
            Console.WriteLine($"# no-op task (exitcode.wasm 0), 1 requester + 2 providers on loopback TCP, one process; {sequential} sequential, then {total} with {concurrency} in flight");
            Console.WriteLine($"# providers' policy: {(Environment.GetEnvironmentVariable("LEASEBENCH_POLICY") == "cluster" ? "cluster (every core, as many leases as cores per requester)" : "defaults (a stranger: 4 leases per provider, half the cores)")}");
            Console.WriteLine();
            Console.WriteLine("| path | p50 ms | p99 ms |");
            Console.WriteLine("| --- | ---: | ---: |");
            Console.WriteLine($"| libp2p ping over the same connection | {P(ping, 50):0.000} | {P(ping, 99):0.000} |");
            Console.WriteLine($"| the task in the local sandbox (no network) | {P(local, 50):0.000} | {P(local, 99):0.000} |");
            Console.WriteLine($"| whole lease path: submit → offer → accept → run → attestation checked → receipt settled, result returned | {P(lease, 50):0.000} | {P(lease, 99):0.000} |");
            Console.WriteLine($"| the same until the provider has acknowledged the receipt (done in the background) | {P(acknowledged, 50):0.000} | {P(acknowledged, 99):0.000} |");
            Console.WriteLine();
            Console.WriteLine($"Results re-run locally by the requester (verification sampling) in the sequential phase: {verified}/{sequential}");
            Console.WriteLine($"Sustained: {total / elapsed.TotalSeconds:0} tasks/s with {concurrency} in flight ({failures} failed; {warmFailures} in the warm-up), {cpuUsed.TotalMilliseconds / total:0.00} ms CPU per task for all three nodes");
            Console.WriteLine($"Sustained phase, managed heap: {allocatedPerTask / 1024.0:0.0} KiB allocated per task; collections gen0 {gcs.Item1}, gen1 {gcs.Item2}, gen2 {gcs.Item3}");
            Console.WriteLine($"Sustained phase, threads: {workItemsPerTask:0.0} thread-pool work items and {contentionsPerTask:0.00} contended lock acquisitions per task; {ThreadPool.ThreadCount} pool threads at the end");
            // Methods still compiled (tier-up, mostly) while the sustained phase runs: part of its CPU, not the lease path's.
            Console.WriteLine($"Sustained phase, JIT: {jitMethodsDone} methods compiled, {jitTimeSpent.TotalMilliseconds:0} ms ({jitTimeSpent.TotalMilliseconds / total:0.00} ms per task)");
            sampler?.Report(Console.Out);
            counters?.Report(Console.Out, total);
            if (timeline)
            {
                Potluck.Scheduler.Metrics.LeaseTimeline.Enabled = false;
                var refused = p1.Compute!.Provider!.RefusedOverLimit + p2.Compute!.Provider!.RefusedOverLimit - refusedBefore;
                var latencies = submitted.ToList();
                Console.WriteLine();
                Console.WriteLine($"Sustained phase, submit → answer: p50 {P(latencies, 50):0.00} ms, p90 {P(latencies, 90):0.00} ms, p99 {P(latencies, 99):0.00} ms; requests refused as over the per-requester limit: {refused}");
                pool!.Report(Console.Out);
                static string Budgets(PotluckNode n) =>
                    $"{n.Host.Budgets.Bans} bans, refused over budget: {(n.Host.Budgets.Refused.Count == 0 ? "none" : string.Join(", ", n.Host.Budgets.Refused.Select(kv => $"{kv.Key} {kv.Value}")))}";
                Console.WriteLine($"Peer budgets (host:budgets) since start: provider 1 {Budgets(p1)}; provider 2 {Budgets(p2)}; requester {Budgets(requester)}");
                Potluck.Scheduler.Metrics.LeaseTimeline.Report(Console.Out);
            }
            return failures == 0 ? 0 : 1;
        }
        finally
        {
            // LEASEBENCH_KEEP=1 leaves the three nodes' files (ledgers included) for inspection, and says where.
            if (Environment.GetEnvironmentVariable("LEASEBENCH_KEEP") == "1")
            {
                Console.WriteLine($"# files kept in {scratch.FullName}");
            }
            else
            {
                scratch.Delete(true);
            }
        }
    }

    /// <summary>
    /// One submission of the concurrent phases; false when it failed or found no provider free (with capacity exactly
    /// matching the concurrency, a provider can still be busy for a moment when the next task arrives), counted, not fatal.
    /// </summary>
    private static async Task<bool> TrySubmitAsync(PotluckNode requester, TaskSubmission task, CancellationToken ct)
    {
        try
        {
            return (await requester.Compute!.SubmitAsync(task, ct)).Succeeded;
        }
        catch (SubmissionException)
        {
            return false;
        }
    }

    private static double P(List<double> values, int percentile)
    {
        var sorted = values.Order().ToArray();
        return sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(percentile / 100.0 * sorted.Length) - 1)];
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Node.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("run from inside the repository");
    }

    /// <summary>With LEASEBENCH_TIMELINE=1: the thread pool's threads and queued work items, sampled every 5 ms on a thread of its own.</summary>
    private sealed class PoolSampler : IDisposable
    {
        private readonly List<(int Threads, long Pending)> _samples = [];
        private volatile bool _stop;
        private readonly Thread _thread;

        public PoolSampler()
        {
            _thread = new Thread(() =>
            {
                while (!_stop)
                {
                    lock (_samples)
                    {
                        _samples.Add((ThreadPool.ThreadCount, ThreadPool.PendingWorkItemCount));
                    }
                    Thread.Sleep(5);
                }
            }) { IsBackground = true, Name = "pool sampler" };
            _thread.Start();
        }

        public void Report(TextWriter output)
        {
            _stop = true;
            lock (_samples)
            {
                var threads = _samples.Select(s => (double)s.Threads).ToList();
                var pending = _samples.Select(s => (double)s.Pending).ToList();
                output.WriteLine($"Thread pool over the sustained phase ({_samples.Count} samples, 5 ms apart): threads p50 {P(threads, 50):0} max {threads.DefaultIfEmpty().Max():0}; queued work items p50 {P(pending, 50):0} p90 {P(pending, 90):0} max {pending.DefaultIfEmpty().Max():0}");
            }
        }

        public void Dispose() => _stop = true;
    }

    /// <summary>
    /// With LEASEBENCH_COUNTERS=1: every potluck.* counter (all three nodes together) summed by name and tags over the
    /// sustained phase and printed per task: streams opened by protocol, gossip messages, bytes, receipts, ...
    /// </summary>
    private sealed class CounterSampler : IDisposable
    {
        private readonly System.Diagnostics.Metrics.MeterListener _listener = new();
        private readonly Dictionary<string, double> _sums = new(StringComparer.Ordinal);
        private bool _on = true;

        public CounterSampler()
        {
            _listener.InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Name.StartsWith("potluck.", StringComparison.Ordinal)
                    && instrument.GetType().Name.StartsWith("Counter", StringComparison.Ordinal))
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            };
            _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) => Add(instrument.Name, value, tags));
            _listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) => Add(instrument.Name, value, tags));
            _listener.Start();
        }

        private void Add(string name, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            var key = name;
            foreach (var tag in tags)
            {
                key += $" {tag.Key}={tag.Value}";
            }
            lock (_sums)
            {
                if (_on)
                {
                    _sums[key] = _sums.GetValueOrDefault(key) + value;
                }
            }
        }

        public void Report(TextWriter output, int total)
        {
            lock (_sums)
            {
                _on = false;
                foreach (var (key, sum) in _sums.OrderBy(p => p.Key, StringComparer.Ordinal))
                {
                    output.WriteLine($"counter {sum / total,10:0.000} per task  {key}");
                }
            }
        }

        public void Dispose() => _listener.Dispose();
    }

    /// <summary>
    /// With LEASEBENCH_ALLOC=1: the runtime's allocation samples (one event per ~100 KiB allocated, naming the type of
    /// the allocation that crossed the threshold) during the sustained phase, summed by type: where the garbage comes from.
    /// </summary>
    private sealed class AllocationSampler : System.Diagnostics.Tracing.EventListener
    {
        private readonly Dictionary<string, long> _byType = [];
        private bool _on;

        public AllocationSampler() => _on = true;

        protected override void OnEventSourceCreated(System.Diagnostics.Tracing.EventSource source)
        {
            if (source.Name == "Microsoft-Windows-DotNETRuntime")
            {
                EnableEvents(source, System.Diagnostics.Tracing.EventLevel.Verbose, (System.Diagnostics.Tracing.EventKeywords)0x1);
            }
        }

        protected override void OnEventWritten(System.Diagnostics.Tracing.EventWrittenEventArgs e)
        {
            if (!_on || e.EventName is null || !e.EventName.StartsWith("GCAllocationTick", StringComparison.Ordinal) || e.PayloadNames is null)
            {
                return;
            }
            var type = e.Payload![e.PayloadNames.IndexOf("TypeName")] as string ?? "?";
            var amount = Convert.ToInt64(e.Payload[e.PayloadNames.IndexOf("AllocationAmount64")], CultureInfo.InvariantCulture);
            lock (_byType)
            {
                _byType[type] = _byType.GetValueOrDefault(type) + amount;
            }
        }

        public void Report(TextWriter output)
        {
            _on = false;
            lock (_byType)
            {
                var sum = _byType.Values.Sum();
                foreach (var (type, amount) in _byType.OrderByDescending(p => p.Value).Take(25))
                {
                    output.WriteLine($"alloc {100.0 * amount / sum,5:0.0}% {type}");
                }
            }
        }
    }
}
