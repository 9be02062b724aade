using Potluck.Protocol.Gossipsub;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// Why complete nodes got more copies than the router simulation (README "Gossip efficiency", issue 11 deliverable 5):
/// with heartbeats out of step — each node beats from its own start, as real nodes do — inbound grafts fill meshes up
/// towards D_hi, and each node receives a message about (mean mesh size − 2) times over. Node-like options (D 5, D_lo 4,
/// D_out 2, D_lazy 6, flood publish on); 300 routers, seeded, virtual time.
/// </summary>
public class MeshDegreeTests
{
    private const string Topic = "t";

    private static (double MeanMesh, double Duplicates) Run(int dHigh, bool stagger)
    {
        const int nodes = 300;
        var sim = new GossipsubSimulation(nodes, 8, seed: 3, TimeSpan.FromMilliseconds(50),
            (_, o) => o with { D = 5, DLow = 4, DHigh = dHigh, DOut = 2, DLazy = 6 }, GossipsubProtocol.V12, staggerHeartbeats: stagger);
        for (var i = 0; i < nodes; i++)
        {
            sim.Subscribe(i, Topic);
        }
        sim.RunHeartbeats(10);
        var before = sim.TotalDuplicates;
        var random = new Random(3);
        for (var m = 0; m < 10; m++)
        {
            var publisher = random.Next(nodes);
            var id = sim.Publish(publisher, Topic, BitConverter.GetBytes(m));
            sim.RunHeartbeats(1);
            Assert.That(sim.Report(id, Topic, publisher, before).Reached, Is.EqualTo(nodes - 1), $"message {m} reached every node");
        }
        var mean = sim.Routers.Average(r => r.MeshPeers(Topic).Count);
        return (mean, (double)(sim.TotalDuplicates - before) / 10 / (nodes - 1));
    }

    [Test]
    public void HeartbeatsOutOfStep_FillMeshesTowardsDHigh_AndTheCopiesFollow()
    {
        var inStep = Run(dHigh: 7, stagger: false);
        var outOfStep = Run(dHigh: 7, stagger: true);
        var node = Run(dHigh: 6, stagger: true);
        var why = $"D_hi 7 in step {inStep}, out of step {outOfStep}; D_hi 6 out of step {node}";
        TestContext.Out.WriteLine(why);
        Assert.That(outOfStep.MeanMesh, Is.GreaterThan(inStep.MeanMesh + 0.1), "out of step, meshes grow; " + why);
        Assert.That(outOfStep.Duplicates, Is.GreaterThan(inStep.Duplicates + 0.1), "and so do the copies; " + why);
        Assert.That(outOfStep.Duplicates, Is.GreaterThan(3.5), "D_hi 7 misses the target once heartbeats are out of step; " + why);
        Assert.That(node.MeanMesh, Is.LessThan(outOfStep.MeanMesh - 0.2), "D_hi 6 holds meshes nearer D; " + why);
        Assert.That(node.Duplicates, Is.LessThanOrEqualTo(3.5), "the node's D_hi 6 meets it; " + why);
    }
}
