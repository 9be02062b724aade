using Potluck.Node.Hosting;
using Potluck.Node.Simulation;

namespace Potluck.Node.Tests.Simulation;

/// <summary>
/// <c>potluck sim --slowest n</c>: the n slowest tasks with their timelines (connections to providers, each attempt's end)
/// on virtual time, without changing the run.
/// </summary>
[Category("fast")]
public class SimSlowestTests
{
    private static SimReport Run(int slowest) => SimRunner.Run(new SimScenario
    {
        Mesh = new MeshOptions { Nodes = 10, Providers = 3, Seed = 7, StandIns = MeshStandIns.All },
        Tasks = 12,
        Duration = TimeSpan.FromSeconds(6),
        GossipProbes = 0,
        SlowestTasks = slowest,
    });

    [Test]
    public void Slowest_ListsTheSlowestTasksWithTheirSteps_AndLeavesTheRunAsItWas()
    {
        var without = Run(0);
        var with = Run(3);

        Assert.That(with.TraceHash, Is.EqualTo(without.TraceHash), "listing the slowest tasks does not change the run");
        Assert.That(without.Slowest, Is.Null, "nothing listed unless asked");
        Assert.That(without.ToJson(), Does.Not.Contain("slowest"));
        Assert.That(with.Tasks.Completed, Is.EqualTo(12), with.ToText());

        var slow = with.Slowest!;
        Assert.That(slow, Has.Count.EqualTo(3));
        Assert.That(slow.Select(t => t.LatencyMs), Is.Ordered.Descending);
        Assert.That(slow[0].LatencyMs, Is.EqualTo(with.LeaseLatencyMs.Max), "the first is the slowest lease");
        foreach (var t in slow)
        {
            Assert.That(t.Steps.Select(s => s.AtMs), Is.Ordered, $"task {t.Id}: steps in virtual-time order");
            Assert.That(t.Steps.All(s => s.AtMs >= 0 && s.AtMs <= t.LatencyMs), $"task {t.Id}: steps within the task's time");
            // The task ended with its provider's result, recorded by the requester as a completed attempt, before the task ended.
            Assert.That(t.Steps.Any(s => s.What.StartsWith($"n{t.Provider} Completed", StringComparison.Ordinal)),
                $"task {t.Id} done by n{t.Provider}: {string.Join("; ", t.Steps.Select(s => s.What))}");
        }
        Assert.That(with.ToText(), Does.Contain($"slow task {slow[0].Id}: "));
        Assert.That(with.ToJson(), Does.Contain("\"slowest\""));
    }
}
