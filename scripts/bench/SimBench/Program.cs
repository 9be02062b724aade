using System.Diagnostics;
using System.Globalization;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Kademlia;

namespace Potluck.Benchmarks.Sim;

/// <summary>
/// Scenario runner for the protocol simulations (no sockets, virtual time, seeded, bounded):
/// <list type="bullet">
/// <item><c>gossip</c>: a gossipsub mesh on <see cref="GossipsubSimulation"/> (real routers, every RPC encoded and
/// decoded, fixed link latency): fraction of subscribers reached, propagation p50/p99 in heartbeats and virtual
/// milliseconds, duplicates per message. Targets: reach ≥ 99.9 %.</item>
/// <item><c>dht</c>: a Kademlia network on <see cref="KademliaSimulation"/>: fraction of FIND_NODE lookups returning
/// exactly the true k closest, median hops. Targets: exact ≥ 99 %, median hops ≤ 4.</item>
/// </list>
/// Exit code 0 when every target is met, 1 otherwise, 2 on bad arguments.
/// </summary>
public static class Program
{
    private const string Topic = "potluck-bench";

    public static int Main(string[] args)
    {
        Options o;
        try
        {
            o = Options.Parse(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine(e.Message);
            Console.Error.WriteLine(Options.Usage);
            return 2;
        }
        var ok = true;
        if (o.Scenario is "gossip" or "all")
        {
            ok &= RunGossip(o);
        }
        if (o.Scenario is "dht" or "all")
        {
            ok &= RunDht(o);
        }
        return ok ? 0 : 1;
    }

    // ------------------------------------------------------------------ gossip

    private static bool RunGossip(Options o)
    {
        var wall = Stopwatch.StartNew();
        var latency = TimeSpan.FromMilliseconds(o.LatencyMs);
        var sim = new GossipsubSimulation(o.Nodes, o.Degree, o.Seed, latency, (_, g) => g with
        {
            FloodPublish = o.FloodPublish,
            IDontWantMinDataSize = o.IDontWantMin,
            D = o.D ?? g.D,
            DLow = o.DLow ?? (o.D is { } d ? Math.Max(1, d - 2) : g.DLow),
            DHigh = o.DHigh ?? (o.D is { } d2 ? d2 * 2 : g.DHigh),
            DLazy = o.DLazy ?? o.D ?? g.DLazy,
            DOut = o.DOut ?? (o.D is { } d3 ? Math.Min(g.DOut, Math.Max(1, d3 / 2 - 1)) : g.DOut),
        }, o.Protocol, o.LatencySigma, o.UplinkMbit * 125_000L, o.Stagger);
        var heartbeat = sim.Options[0].HeartbeatInterval;
        for (var i = 0; i < o.Nodes; i++)
        {
            sim.Subscribe(i, Topic);
        }
        // Let the mesh form: grafts go out on the first heartbeats.
        sim.RunHeartbeats(o.WarmupHeartbeats);
        var heartbeatsRun = o.WarmupHeartbeats;
        // RunHeartbeats leaves the clock on the last heartbeat; the next one is a period later.
        var nextHeartbeat = sim.Now + heartbeat;

        // One step: a link latency of events, or up to and including the next heartbeat when that comes first.
        void Step()
        {
            if (sim.Now + latency < nextHeartbeat)
            {
                sim.RunUntil(sim.Now + latency);
            }
            else
            {
                sim.RunHeartbeats(1);
                heartbeatsRun++;
                nextHeartbeat += heartbeat;
            }
        }

        var random = new Random(o.Seed ^ 0x5eed);
        var seen = new int[o.Nodes]; // per node: how much of sim.Delivered[node] has been scanned
        long subscribersTotal = 0, reachedTotal = 0;
        var delaysMs = new List<double>();
        var delaysHeartbeats = new List<int>();
        var duplicatesBefore = sim.TotalDuplicates;
        var incomplete = 0;
        for (var m = 0; m < o.Messages; m++)
        {
            var publisher = random.Next(o.Nodes);
            var payload = new byte[Math.Max(4, o.Payload)];
            BitConverter.GetBytes(m).CopyTo(payload, 0);
            var start = sim.Now;
            var startHeartbeats = heartbeatsRun;
            var id = sim.Publish(publisher, Topic, payload);
            var subscribers = o.Nodes - 1;
            var reached = 0;
            // Step one link latency at a time (heartbeats when due) until everyone has it or the bound is hit.
            while (reached < subscribers && heartbeatsRun - startHeartbeats < o.MaxHeartbeatsPerMessage)
            {
                Step();
                for (var node = 0; node < o.Nodes; node++)
                {
                    if (!sim.Delivered.TryGetValue(node, out var list))
                    {
                        continue;
                    }
                    for (; seen[node] < list.Count; seen[node]++)
                    {
                        if (list[seen[node]].Id == id)
                        {
                            reached++;
                            delaysMs.Add((sim.Now - start).TotalMilliseconds);
                            delaysHeartbeats.Add(heartbeatsRun - startHeartbeats);
                        }
                    }
                }
            }
            if (reached < subscribers)
            {
                incomplete++;
            }
            subscribersTotal += subscribers;
            reachedTotal += reached;
            // Drain copies still in flight so they count against this message, then space messages out.
            for (var k = 0; k < 10; k++)
            {
                Step();
            }
        }
        var duplicates = sim.TotalDuplicates - duplicatesBefore;
        delaysMs.Sort();
        delaysHeartbeats.Sort();
        var reach = (double)reachedTotal / subscribersTotal;
        var meshSizes = Enumerable.Range(0, o.Nodes).Select(i => sim.Routers[i].MeshPeers(Topic).Count).ToArray();
        var ok = reach >= 0.999;
        var idontwant = sim.Routers.Sum(r => r.Counters.IDontWantSent);
        var honoured = sim.Routers.Sum(r => r.Counters.IDontWantHonoured);
        Console.WriteLine($"gossip: {o.Nodes} nodes, each dialing {o.Degree} (links {sim.Links.Count}), link latency {o.LatencyMs} ms (sigma {o.LatencySigma}), "
            + $"uplink {(o.UplinkMbit == 0 ? "unlimited" : o.UplinkMbit + " Mbit/s")}, protocol {o.Protocol}, payload {o.Payload} B, IDONTWANT from {o.IDontWantMin} B ({idontwant} sent, {honoured} copies saved), D {sim.Options[0].D} (lo {sim.Options[0].DLow}, hi {sim.Options[0].DHigh}, lazy {sim.Options[0].DLazy}, out {sim.Options[0].DOut}), "
            + $"heartbeat {heartbeat.TotalMilliseconds} ms, flood publish {(o.FloodPublish ? "on" : "off")}, heartbeats {(o.Stagger ? "staggered" : "in step")}, seed {o.Seed}, {o.Messages} messages");
        Console.WriteLine($"  mesh size: min {meshSizes.Min()}, mean {meshSizes.Average():F2}, max {meshSizes.Max()}; sizes {string.Join(' ', meshSizes.GroupBy(m => m).OrderBy(g => g.Key).Select(g => $"{g.Key}:{g.Count()}"))}");
        Console.WriteLine(F($"  reached: {reachedTotal}/{subscribersTotal} = {reach * 100:F3} % (target >= 99.9 %) {(ok ? "OK" : "MISSED")}; messages not reaching everyone: {incomplete}"));
        Console.WriteLine(F($"  propagation: p50 {Percentile(delaysMs, 0.5):F0} ms, p99 {Percentile(delaysMs, 0.99):F0} ms, max {delaysMs.LastOrDefault():F0} ms (resolution {o.LatencyMs} ms)"));
        Console.WriteLine(F($"  propagation in heartbeats: p50 {Percentile(delaysHeartbeats, 0.5):F0}, p99 {Percentile(delaysHeartbeats, 0.99):F0}, max {delaysHeartbeats.LastOrDefault()}"));
        Console.WriteLine(F($"  duplicates per message: {(double)duplicates / o.Messages:F1} ({(double)duplicates / o.Messages / (o.Nodes - 1):F2} per receiving node)"));
        Console.WriteLine(F($"  wall time {wall.Elapsed.TotalSeconds:F1} s"));
        return ok;
    }

    // ------------------------------------------------------------------ dht

    private static bool RunDht(Options o)
    {
        var wall = Stopwatch.StartNew();
        var sim = new KademliaSimulation(o.DhtNodes, o.Seed);
        sim.Bootstrap();
        var bootstrapMessages = sim.Messages;
        var bootstrapTime = wall.Elapsed;
        var report = sim.RunLookups(o.Lookups);
        var ok = report.ExactFraction >= 0.99 && report.MedianHops <= 4;
        Console.WriteLine($"dht: {report.Nodes} nodes, k 20, alpha 3, seed {o.Seed}, {report.Lookups} FIND_NODE lookups for random keys from random nodes");
        Console.WriteLine(F($"  exact true-20-closest: {report.ExactFraction * 100:F2} % (target >= 99 %), mean recall {report.MeanRecall * 100:F3} %"));
        Console.WriteLine(F($"  hops: median {report.MedianHops} (target <= 4); mean requests per lookup {report.MeanQueries:F1}"));
        Console.WriteLine(F($"  {(ok ? "OK" : "MISSED")}; bootstrap {bootstrapMessages} requests in {bootstrapTime.TotalSeconds:F1} s, lookups {sim.Messages - bootstrapMessages} requests; wall time {wall.Elapsed.TotalSeconds:F1} s"));
        return ok;
    }

    private static double Percentile<T>(List<T> sorted, double p) where T : IConvertible
    {
        if (sorted.Count == 0)
        {
            return double.NaN;
        }
        var index = (int)Math.Ceiling(p * sorted.Count) - 1;
        return sorted[Math.Clamp(index, 0, sorted.Count - 1)].ToDouble(CultureInfo.InvariantCulture);
    }

    private static string F(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    private sealed record Options(
        string Scenario, int Seed, int Nodes, int Degree, double LatencyMs, int Messages, bool FloodPublish, int WarmupHeartbeats,
        int MaxHeartbeatsPerMessage, int DhtNodes, int Lookups, string Protocol = GossipsubProtocol.V11, int Payload = 4,
        int IDontWantMin = 1024, double LatencySigma = 0, int? D = null, int UplinkMbit = 0, int? DLow = null, int? DHigh = null, int? DLazy = null, int? DOut = null, bool Stagger = false)
    {
        public const string Usage =
            "usage: SimBench [gossip|dht|all] [--seed N] [--nodes N] [--degree N] [--latency-ms X] [--messages N] [--flood-publish on|off]\n"
            + "                [--warmup-heartbeats N] [--max-heartbeats N] [--dht-nodes N] [--lookups N]";

        public static Options Parse(string[] args)
        {
            var o = new Options("all", 1, 1000, 8, 50, 200, true, 10, 20, 1000, 1000);
            var i = 0;
            if (args.Length > 0 && !args[0].StartsWith("--", StringComparison.Ordinal))
            {
                o = o with { Scenario = args[0] is "gossip" or "dht" or "all" ? args[0] : throw new ArgumentException($"unknown scenario {args[0]}") };
                i = 1;
            }
            for (; i < args.Length; i++)
            {
                var flag = args[i];
                string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{flag} needs a value");
                int Int(int min, int max)
                {
                    var v = Value();
                    return int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) && n >= min && n <= max
                        ? n
                        : throw new ArgumentException($"{flag}: {v} is not an integer in {min}..{max}");
                }
                o = flag switch
                {
                    "--seed" => o with { Seed = Int(0, int.MaxValue) },
                    "--nodes" => o with { Nodes = Int(2, 100_000) },
                    "--degree" => o with { Degree = Int(1, 1_000) },
                    "--latency-ms" => o with { LatencyMs = Int(1, 10_000) },
                    "--messages" => o with { Messages = Int(1, 100_000) },
                    "--flood-publish" => o with { FloodPublish = Value() switch { "on" => true, "off" => false, var v => throw new ArgumentException($"--flood-publish on|off, not {v}") } },
                    "--warmup-heartbeats" => o with { WarmupHeartbeats = Int(1, 10_000) },
                    "--max-heartbeats" => o with { MaxHeartbeatsPerMessage = Int(1, 10_000) },
                    "--dht-nodes" => o with { DhtNodes = Int(2, 100_000) },
                    "--lookups" => o with { Lookups = Int(1, 1_000_000) },
                    "--protocol" => o with { Protocol = Value() switch { "1.1" => GossipsubProtocol.V11, "1.2" => GossipsubProtocol.V12, var v => throw new ArgumentException($"--protocol 1.1|1.2, not {v}") } },
                    "--payload" => o with { Payload = Int(0, 1 << 20) },
                    "--idontwant-min" => o with { IDontWantMin = Int(0, 1 << 20) },
                    "--latency-sigma" => o with { LatencySigma = double.Parse(Value(), CultureInfo.InvariantCulture) is var x && x >= 0 && x <= 3 ? x : throw new ArgumentException("--latency-sigma: 0 to 3") },
                    "--d" => o with { D = Int(2, 50) },
                    "--d-lo" => o with { DLow = Int(1, 50) },
                    "--d-hi" => o with { DHigh = Int(2, 100) },
                    "--d-lazy" => o with { DLazy = Int(0, 50) },
                    "--d-out" => o with { DOut = Int(0, 50) },
                    "--stagger-heartbeats" => o with { Stagger = Value() switch { "on" => true, "off" => false, var v => throw new ArgumentException($"--stagger-heartbeats on|off, not {v}") } },
                    "--uplink-mbit" => o with { UplinkMbit = Int(0, 100_000) },
                    _ => throw new ArgumentException($"unknown flag {flag}"),
                };
            }
            return o;
        }
    }
}
