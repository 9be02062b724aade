using Potluck.Node.Hosting;
using Potluck.Node.Simulation;

namespace Potluck.Node.Tests.Simulation;

/// <summary>
/// <see cref="SimScenario.AtEnd"/> (<c>potluck sim --hold-at-end</c>): called once when the run has drained, before the
/// report, without changing the run; a benchmark holds the process there to dump the end state's heap.
/// </summary>
[Category("fast")]
public class SimAtEndTests
{
    private static SimScenario Scenario(Action? atEnd) => new()
    {
        Mesh = new MeshOptions { Nodes = 10, Providers = 3, Seed = 7, StandIns = MeshStandIns.All },
        Tasks = 12,
        Duration = TimeSpan.FromSeconds(6),
        GossipProbes = 0,
        AtEnd = atEnd,
    };

    [Test]
    public void AtEnd_IsCalledOnceAfterTheDrain_AndLeavesTheRunAsItWas()
    {
        var progress = new List<string>();
        var calls = 0;
        var linesAtCall = -1;
        var without = SimRunner.Run(Scenario(null), _ => { });
        var with = SimRunner.Run(Scenario(() =>
        {
            calls++;
            linesAtCall = progress.Count;
        }), progress.Add);

        Assert.That(calls, Is.EqualTo(1));
        Assert.That(with.TraceHash, Is.EqualTo(without.TraceHash), "the hook does not change the run");
        Assert.That(with.VirtualS, Is.EqualTo(without.VirtualS));
        Assert.That(with.Tasks.Completed, Is.EqualTo(12), with.ToText());
        Assert.That(progress[linesAtCall - 1], Does.StartWith("memory at the end"), "called right after the end's memory line");
        Assert.That(progress.Skip(linesAtCall).Any(l => l.StartsWith("connection ends at the end", StringComparison.Ordinal)),
            "the end's census comes after it");
    }
}
