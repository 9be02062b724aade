using Potluck.Node.Simulation;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Credits;

namespace Potluck.Node.Tests.Simulation;

/// <summary>
/// The in-memory storage stand-in keeps a node's store alive with a hold (no second connection) only while the node is down:
/// a node that is up holds its own, a crashed one's data survives until it is back, a whitewasher's dropped identity
/// stays readable, and each node's ledger is its own.
/// </summary>
[Category("fast")]
public class SimMemoryStoreTests
{
    [Test]
    public void Keepers_OnlyWhileANodeIsDown_AndItsLedgerSurvives_AndStaysItsOwn()
    {
        VirtualTimeDriver.Run(async d =>
        {
            var options = new MeshOptions
            {
                Nodes = 4, Providers = 1, Seed = 9, Loggers = Potluck.Tests.TestLogging.Factory,
                StandIns = new MeshStandIns { PlaintextSecurity = true, InMemoryStorage = true },
            };
            await using var mesh = await SimulatedMesh.StartAsync(d, options);
            await mesh.SettleAsync(TimeSpan.FromSeconds(5));
            Assert.That(mesh.MemoryKeepers, Is.Zero, "nodes that are up hold their databases themselves");

            var node = mesh.Requesters.First();
            var other = mesh.Nodes.First(n => n != node);
            var before = node.Node!.Compute!.Ledger.Balance();
            await mesh.CrashAsync(node);
            Assert.That(mesh.MemoryKeepers, Is.EqualTo(1), "one store (ledger, reputation and peers) kept while the node is down");
            await mesh.SettleAsync(TimeSpan.FromSeconds(2));
            var credits = new CreditsOptions { InitialGrant = options.InitialGrant };
            using (var ledger = CreditLedger.Open(node.DataDir, node.PeerId, credits, mesh.Clock, inMemory: true))
            {
                Assert.That(ledger.Created, Is.False, "the down node's ledger is still there, not made anew");
                Assert.That(ledger.Balance(), Is.EqualTo(before));
            }
            // Another node's database is not this one's: its ledger belongs to its own owner.
            var e = Assert.Throws<LedgerException>(() => CreditLedger.Open(other.DataDir, node.PeerId, credits, mesh.Clock, inMemory: true));
            Assert.That(e!.Message, Does.Contain("belongs to"));

            await mesh.RestartAsync(node);
            Assert.That(mesh.MemoryKeepers, Is.Zero, "the restarted node holds its databases again");
            Assert.That(node.Node!.Compute!.Ledger.Balance(), Is.EqualTo(before), "the ledger survived the crash");
        });
    }
}
