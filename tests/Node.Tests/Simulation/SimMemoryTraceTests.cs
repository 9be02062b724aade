using System.Globalization;
using Potluck.Node.Hosting;
using Potluck.Node.Simulation;

namespace Potluck.Node.Tests.Simulation;

/// <summary>
/// <see cref="SimScenario.MemoryTrace"/> (<c>potluck sim --memory-trace</c>): memory samples and connection-end censuses
/// against virtual time, read-only: the run is the same with it as without it.
/// </summary>
[Category("fast")]
public class SimMemoryTraceTests
{
    private static SimScenario Scenario(TextWriter? trace) => new()
    {
        Mesh = new MeshOptions { Nodes = 10, Providers = 3, Seed = 7, StandIns = MeshStandIns.All },
        Tasks = 12,
        Duration = TimeSpan.FromSeconds(6),
        GossipProbes = 0,
        MemoryTrace = trace,
    };

    [Test]
    public void MemoryTrace_SamplesAndCensuses_LeaveTheRunAsItWas()
    {
        var without = SimRunner.Run(Scenario(null), _ => { });
        var trace = new StringWriter(CultureInfo.InvariantCulture);
        var with = SimRunner.Run(Scenario(trace), _ => { });

        Assert.That(with.TraceHash, Is.EqualTo(without.TraceHash), "the trace does not change the run");
        Assert.That(with.VirtualS, Is.EqualTo(without.VirtualS));
        Assert.That(with.Tasks.Completed, Is.EqualTo(12), with.ToText());
        var lines = trace.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var samples = lines.Where(l => l.StartsWith("sample ", StringComparison.Ordinal)).Select(l => l.Split(' ')).ToList();
        var censuses = lines.Where(l => l.StartsWith("census ", StringComparison.Ordinal)).Select(l => l.Split(' ')).ToList();
        Assert.That(samples, Is.Not.Empty, "at least the last sample, written when the run ends");
        Assert.That(samples.All(s => s.Length == 8 && double.Parse(s[4], CultureInfo.InvariantCulture) > 0
            && double.Parse(s[5], CultureInfo.InvariantCulture) >= double.Parse(s[4], CultureInfo.InvariantCulture)), "RSS, and its peak at least RSS");
        Assert.That(censuses.Select(c => c[3]), Does.Contain("warm-up").And.Contain("work").And.Contain("drained"));
        var last = censuses[^1];
        Assert.That(double.Parse(last[2], CultureInfo.InvariantCulture), Is.EqualTo(with.VirtualS).Within(0.01), "the drained census at the run's virtual end");
        Assert.That(double.Parse(last[4], CultureInfo.InvariantCulture), Is.GreaterThan(0), "connection ends per node");
        var virtualTimes = censuses.Select(c => double.Parse(c[2], CultureInfo.InvariantCulture)).ToList();
        Assert.That(virtualTimes, Is.Ordered, "in virtual time");
    }
}
