using System.Diagnostics;
using System.Globalization;
using Potluck.Node;
using Potluck.Protocol.Multiformats;
using Potluck.Scheduler.Requesting;

namespace Potluck.HostileLoad;

/// <summary>
/// The honest requester, in a process of its own so that the 1,000 attacking hosts (their threads, their garbage) do not
/// stand in its latency: a full Potluck node (compute on, not providing) bootstrapped to the target. Reads commands on
/// stdin — <c>measure &lt;label&gt; &lt;leases&gt; &lt;pings&gt;</c> — and answers one line each:
/// <c>result &lt;label&gt; &lt;lease p50&gt; &lt;lease p99&gt; &lt;ping p50&gt; &lt;ping p99&gt; &lt;failed leases&gt; &lt;own CPU ms&gt; &lt;failed pings&gt;</c>
/// (milliseconds; a lease or ping the node refused or reset is counted as failed, not timed).
/// A lease round trip is one no-op task (exitcode.wasm 0) submitted and its result returned: ad lookup, lease
/// negotiation with signed terms, the run, the attestation checked, the receipt settled.
/// </summary>
internal static class Honest
{
    public static async Task<int> RunAsync(Multiaddr target, string module)
    {
        using var overall = new CancellationTokenSource(TimeSpan.FromMinutes(20));
        var ct = overall.Token;
        var dataDir = Directory.CreateTempSubdirectory("potluck-load-honest-");
        try
        {
            await using var node = await PotluckNode.CreateBuilder()
                .Configure(o => o with
                {
                    Bootstrap = [target],
                    DataDir = dataDir.FullName,
                    Compute = o.Compute with { Enabled = true, Provide = false },
                })
                .StartAsync(ct);
            await node.Compute!.Client.WaitForProvidersAsync(1, ct);
            var task = new TaskSubmission { Module = await File.ReadAllBytesAsync(module, ct), Args = ["0"], Fuel = 20_000_000, MaxPricePerMegaFuel = 10 };
            var peer = target.PeerId!.Value;
            await MeasureAsync(node, task, peer, 50, 100, ct); // warm-up: JIT, caches, the connection
            Console.WriteLine("ready");
            while (Console.ReadLine() is { } line)
            {
                var parts = line.Split(' ');
                if (parts[0] != "measure")
                {
                    break;
                }
                var cpu = Process.GetCurrentProcess().TotalProcessorTime;
                var (lease, ping, failed, failedPings) = await MeasureAsync(node, task, peer, int.Parse(parts[2], CultureInfo.InvariantCulture), int.Parse(parts[3], CultureInfo.InvariantCulture), ct);
                var used = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalMilliseconds;
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"result {parts[1]} {Percentile(lease, 50):F3} {Percentile(lease, 99):F3} {Percentile(ping, 50):F3} {Percentile(ping, 99):F3} {failed} {used:F0} {failedPings}"));
            }
            return 0;
        }
        finally
        {
            dataDir.Delete(true);
        }
    }

    /// <summary>Leases and pings interleaved (one lease, then pings in proportion), so both see the same moments of the load.</summary>
    private static async Task<(List<double> Lease, List<double> Ping, int Failed, int FailedPings)> MeasureAsync(PotluckNode node, TaskSubmission task, Potluck.Protocol.Identity.PeerId peer, int leases, int pings, CancellationToken ct)
    {
        var lease = new List<double>(leases);
        var ping = new List<double>(pings);
        var failed = 0;
        var failedPings = 0;
        for (var i = 0; i < Math.Max(leases, pings); i++)
        {
            if (i < leases)
            {
                var sw = Stopwatch.StartNew();
                try
                {
                    var result = await node.Compute!.SubmitAsync(task, ct);
                    failed += result.Succeeded ? 0 : 1;
                }
                catch (SubmissionException)
                {
                    failed++;
                }
                lease.Add(sw.Elapsed.TotalMilliseconds);
            }
            if (i < pings)
            {
                try
                {
                    ping.Add((await node.Ping.PingAsync(peer, 1, ct))[0].TotalMilliseconds);
                }
                catch (Exception e) when (Potluck.Protocol.Runtime.Failures.IsRemote(e))
                {
                    failedPings++; // refused or reset by the node: counted, not timed
                }
            }
        }
        return (lease, ping, failed, failedPings);
    }

    internal static double Percentile(IReadOnlyCollection<double> values, int percentile)
    {
        if (values.Count == 0)
        {
            return double.NaN;
        }
        var sorted = values.Order().ToArray();
        return sorted[Math.Clamp((int)Math.Ceiling(percentile / 100.0 * sorted.Length) - 1, 0, sorted.Length - 1)];
    }
}
