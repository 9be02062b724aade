using Potluck.Node.Simulation;
using Potluck.Protocol.Runtime;

namespace Potluck.Node.Tests.Simulation;

[Category("fast")]
public class SimulatedMeshTests
{
    private static (string Hash, int Completed, int Correct) Small(long seed) => VirtualTimeDriver.Run(async d =>
    {
        await using var mesh = await SimulatedMesh.StartAsync(d, new MeshOptions { Nodes = 8, Providers = 3, Seed = seed, Loggers = Potluck.Tests.TestLogging.Factory });
        await mesh.SettleAsync(TimeSpan.FromSeconds(10));
        var requesters = mesh.Requesters.ToList();
        var runs = new List<Task<TaskRecord>>();
        for (var i = 0; i < 6; i++)
        {
            runs.Add(mesh.SubmitAsync(requesters[i % requesters.Count], SimulatedMesh.HashChainTask(mesh.Random, 50)));
            await mesh.SettleAsync(TimeSpan.FromMilliseconds(100));
        }
        var records = await Task.WhenAll(runs);
        return (mesh.TraceHash, records.Count(r => r.Completed), records.Count(r => r.Correct));
    });

    [Test]
    public void EightNodes_RunTasks_AndTheSameSeedGivesTheSameTraceHash()
    {
        var first = Small(5);
        Assert.That(first.Completed, Is.EqualTo(6), "every task completed");
        Assert.That(first.Correct, Is.EqualTo(6), "with the right output");
        var again = Small(5);
        Assert.That(again, Is.EqualTo(first), "same seed, same trace");
        Assert.That(Small(6).Hash, Is.Not.EqualTo(first.Hash), "another seed, another trace");
    }

    [TestCase(8, "MaxConnectionsPerNode")]
    [TestCase(-1, "PipeSegmentSize")]
    public void MeshOptionsOutOfRange_AreRefusedBeforeAnyNodeStarts_NamingTheOption(int value, string option)
    {
        var options = option == "MaxConnectionsPerNode" ? new MeshOptions { MaxConnectionsPerNode = value } : new MeshOptions { PipeSegmentSize = value };
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => SimRunner.Run(new SimScenario { Mesh = options }));
        Assert.That(e!.ParamName, Is.EqualTo(option));
    }

    [Test]
    public void JoinOver_StartsNodesOneAfterAnother_OnVirtualTime_AndANegativeOneIsRefused()
    {
        var elapsed = VirtualTimeDriver.Run(async d =>
        {
            await using var mesh = await SimulatedMesh.StartAsync(d, new MeshOptions
            {
                Nodes = 4, Providers = 1, Seed = 3, JoinOver = TimeSpan.FromSeconds(6), Loggers = Potluck.Tests.TestLogging.Factory,
            });
            Assert.That(mesh.Nodes.All(n => n.IsUp), Is.True);
            return mesh.Elapsed;
        });
        Assert.That(elapsed, Is.GreaterThanOrEqualTo(TimeSpan.FromSeconds(6)).And.LessThan(TimeSpan.FromSeconds(7)), "three gaps of 2 s between four starts");

        var e = Assert.Throws<ArgumentOutOfRangeException>(() =>
            SimRunner.Run(new SimScenario { Mesh = new MeshOptions { JoinOver = TimeSpan.FromSeconds(-1) } }));
        Assert.That(e!.ParamName, Is.EqualTo("JoinOver"));
    }

    /// <summary>
    /// `potluck sim` stopped by Ctrl-C or SIGTERM: the run ends at the next moment of virtual time with
    /// <see cref="OperationCanceledException"/> (no report), not at the end of the scenario or never.
    /// </summary>
    [Test]
    public void ACancelledRun_StopsBeforeTheNextMomentOfVirtualTime_WithNoReport()
    {
        using var cancel = new CancellationTokenSource();
        var lines = new List<string>();
        var scenario = new SimScenario
        {
            Mesh = new MeshOptions { Nodes = 8, Providers = 3, Seed = 4, JoinOver = TimeSpan.FromSeconds(7), Loggers = Potluck.Tests.TestLogging.Factory },
            Tasks = 4,
            Duration = TimeSpan.FromSeconds(10),
        };
        Assert.Catch<OperationCanceledException>(() => SimRunner.Run(scenario, line =>
        {
            lines.Add(line);
            cancel.Cancel(); // as the signal handler does, from outside the run's logic
        }, cancel.Token));
        Assert.That(lines, Has.Count.EqualTo(1), "nothing ran after the moment the cancel came in (the next node starts a virtual second later)");
        Assert.That(lines[0], Does.StartWith("starting nodes 1/8"));
    }
}
