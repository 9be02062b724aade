using Potluck.Node.Hosting;
using Potluck.Node.Simulation;
using Potluck.Protocol.Runtime;

namespace Potluck.Node.Tests.Simulation;

/// <summary>The scale stand-ins change what a node costs, not what it computes: same outputs, same fuel, the ledger intact across a crash.</summary>
[Category("fast")]
public class SimStandInTests
{
    private static (List<(bool Correct, long Fuel)> Tasks, IReadOnlyList<string> StandIns, long Balances, long Grants) Run(MeshStandIns standIns) =>
        VirtualTimeDriver.Run(async d =>
        {
            var options = new MeshOptions { Nodes = 8, Providers = 3, Seed = 5, StandIns = standIns, Loggers = Potluck.Tests.TestLogging.Factory };
            await using var mesh = await SimulatedMesh.StartAsync(d, options);
            await mesh.SettleAsync(TimeSpan.FromSeconds(10));
            var requesters = mesh.Requesters.ToList();
            var runs = new List<Task<TaskRecord>>();
            for (var i = 0; i < 6; i++)
            {
                runs.Add(mesh.SubmitAsync(requesters[i % requesters.Count], SimulatedMesh.HashChainTask(mesh.Random, 50 + (i * 10))));
                await mesh.SettleAsync(TimeSpan.FromMilliseconds(100));
            }
            var records = await Task.WhenAll(runs);
            // A provider crashes and comes back: with in-memory storage its ledger must survive as the file would.
            var provider = mesh.Providers.First();
            var before = provider.Node!.Compute!.Ledger.Balance();
            await mesh.CrashAsync(provider);
            await mesh.SettleAsync(TimeSpan.FromSeconds(2));
            await mesh.RestartAsync(provider);
            Assert.That(provider.Node!.Compute!.Ledger.Balance(), Is.EqualTo(before), "the ledger survives a crash and restart");
            await mesh.SettleAsync(TimeSpan.FromSeconds(30));
            foreach (var n in mesh.Nodes)
            {
                await n.Node!.Compute!.Client.WhenReceiptsDeliveredAsync(CancellationToken.None);
            }
            var balances = mesh.Nodes.Sum(n => n.Node!.Compute!.Ledger.Balance());
            return (records.Select(r => (r.Correct, r.Result?.Fuel ?? -1)).ToList(), mesh.StandIns, balances, options.InitialGrant * options.Nodes);
        });

    [Test]
    public void AllStandIns_GiveTheSameOutputsAndFuel_AsCompleteNodes_AndAreNamed()
    {
        var real = Run(new MeshStandIns());
        var cheap = Run(MeshStandIns.All);

        Assert.That(real.Tasks.All(t => t.Correct), Is.True, "complete nodes: every output right");
        Assert.That(cheap.Tasks.All(t => t.Correct), Is.True, "with stand-ins: every output right");
        Assert.That(cheap.Tasks.Select(t => t.Fuel), Is.EqualTo(real.Tasks.Select(t => t.Fuel)), "the same fuel, task by task");
        Assert.That(real.StandIns, Is.Empty);
        Assert.That(cheap.StandIns, Has.Count.EqualTo(4));
        Assert.That(cheap.StandIns, Has.Some.Contains("plaintext-sim"));
        Assert.That(cheap.StandIns, Has.Some.Contains("shared sandbox"));
        Assert.That(cheap.StandIns, Has.Some.Contains("in-memory SQLite"));
        Assert.That(cheap.StandIns, Has.Some.Contains("shared counters"));
        Assert.That(cheap.Balances, Is.EqualTo(cheap.Grants), "credits conserved on in-memory ledgers");
        Assert.That(real.Balances, Is.EqualTo(real.Grants));
    }

    [Test]
    public void StandIns_AreRefused_OffTheSimulatedNetwork()
    {
        var builder = PotluckNode.CreateBuilder().UseStandIns(new NodeStandIns { PlaintextSecurity = true });
        var e = Assert.Throws<InvalidOperationException>(() => builder.Build());
        Assert.That(e!.Message, Does.Contain("simulated network"));
    }
}
