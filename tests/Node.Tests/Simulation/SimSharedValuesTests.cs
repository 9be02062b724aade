using Potluck.Node.Simulation;
using Potluck.Protocol.Runtime;

namespace Potluck.Node.Tests.Simulation;

/// <summary>
/// Shared immutable values (<see cref="MeshOptions.ShareValues"/>): the nodes of a mesh keep one instance of each
/// provider's advertisement instead of a copy each, the runs are the same runs event by event, and the report says so.
/// </summary>
[Category("fast")]
public class SimSharedValuesTests
{
    private static readonly MeshStandIns Cheap = new() { PlaintextSecurity = true, InMemoryStorage = true };

    [Test]
    public void SharedValues_EveryNodeHoldsOneInstanceOfAProvidersAdvertisement()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var mesh = await SimulatedMesh.StartAsync(d, new MeshOptions
            {
                Nodes = 8, Providers = 2, Seed = 9, StandIns = Cheap, Loggers = Potluck.Tests.TestLogging.Factory,
            });
            await mesh.SettleAsync(TimeSpan.FromSeconds(10));
            Assert.That(mesh.SharedValues.Enabled);
            var provider = mesh.Nodes.First(n => n.Role == SimRole.Provider).PeerId;
            var held = mesh.Nodes.Where(n => n.PeerId != provider)
                .Select(n => n.Node!.Compute!.Client.Providers().SingleOrDefault(a => a.Provider == provider)).ToList();
            Assert.That(held, Has.None.Null, "every other node holds the provider's advertisement");
            Assert.That(held.Distinct().Count(), Is.EqualTo(1), "one instance for all seven");
        });
    }

    [Test]
    public void SharedValues_GiveTheSameTrace_AndTheReportSaysWhetherOn()
    {
        var own = Run(share: false);
        var shared = Run(share: true);
        Assert.That(own.Completed, Is.EqualTo(4), "every task completed");
        Assert.That(shared.Hash, Is.EqualTo(own.Hash), "the same runs, event by event");
        Assert.That(shared.Completed, Is.EqualTo(own.Completed));
        Assert.That(own.Held, Is.GreaterThanOrEqualTo(12), "nearly every node holds both providers' advertisements");
        Assert.That(own.Instances, Is.EqualTo(own.Held), "without sharing: a copy per node");
        Assert.That(shared.Held, Is.EqualTo(own.Held));
        Assert.That(shared.Instances, Is.EqualTo(shared.Versions), "with: one instance per advertisement (provider and sequence)");
        Assert.That(shared.Instances, Is.LessThan(shared.Held));
    }

    private static (string Hash, int Completed, int Held, int Instances, int Versions) Run(bool share) => VirtualTimeDriver.Run(async d =>
    {
        await using var mesh = await SimulatedMesh.StartAsync(d, new MeshOptions
        {
            Nodes = 8, Providers = 2, Seed = 9, StandIns = Cheap, ShareValues = share, Loggers = Potluck.Tests.TestLogging.Factory,
        });
        await mesh.SettleAsync(TimeSpan.FromSeconds(10));
        var requesters = mesh.Requesters.ToList();
        var runs = new List<Task<TaskRecord>>();
        for (var i = 0; i < 4; i++)
        {
            runs.Add(mesh.SubmitAsync(requesters[i % requesters.Count], SimulatedMesh.HashChainTask(mesh.Random, 40)));
            await mesh.SettleAsync(TimeSpan.FromMilliseconds(100));
        }
        var records = await Task.WhenAll(runs);
        // Each node's own advertisement is not in its book: a provider holds the other's, every requester both.
        var held = mesh.Nodes.SelectMany(n => n.Node!.Compute!.Client.Providers()).ToList();
        return (mesh.TraceHash, records.Count(r => r.Completed), held.Count, held.Distinct().Count(),
            held.Select(a => (a.Provider, a.Ad.Sequence)).Distinct().Count());
    });
}
