using System.Diagnostics.Metrics;
using Potluck.Node.Simulation;
using Potluck.Protocol.Runtime;

namespace Potluck.Node.Tests.Simulation;

/// <summary>
/// The shared-counters stand-in: the nodes of a mesh share one set of counters and histograms (what a node paid ~11 KiB
/// for), each keeps its own totals and observable instruments, a crashed node's observables go with it, and the runs are
/// the same runs.
/// </summary>
[Category("fast")]
public class SimSharedCountersTests
{
    private static readonly MeshStandIns Cheap = new() { PlaintextSecurity = true, InMemoryStorage = true };

    [Test]
    public void SharedCounters_AreOneInstrumentPerName_EachNodeKeepsItsTotalsAndObservables_AndACrashedNodesObservablesGo()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var mesh = await SimulatedMesh.StartAsync(d, new MeshOptions
            {
                Nodes = 6, Providers = 1, Seed = 5, StandIns = Cheap with { SharedCounters = true }, Loggers = Potluck.Tests.TestLogging.Factory,
            });
            await mesh.SettleAsync(TimeSpan.FromSeconds(5));
            var nodes = mesh.Nodes.Select(n => n.Node!).ToList();
            var shared = nodes[0].ProtocolMetrics.CountersMeter;
            Assert.That(nodes.Select(n => n.ProtocolMetrics.CountersMeter), Is.All.SameAs(shared));
            Assert.That(nodes.Select(n => n.ComputeMetrics.CountersMeter), Is.All.SameAs(nodes[0].ComputeMetrics.CountersMeter));
            Assert.That(nodes.Select(n => n.ProtocolMetrics.Meter).Distinct().Count(), Is.EqualTo(6), "each node keeps a meter of its own");
            Assert.That(nodes.Select(n => n.ProtocolMetrics.Meter), Has.None.SameAs(shared));
            Assert.That(Published(i => i.Meter == shared && i.Name == "potluck.dials"), Is.EqualTo(1), "one potluck.dials for six nodes");
            Assert.That(Published(i => i.Meter == shared && i is ObservableInstrument<long> or ObservableInstrument<int>), Is.Zero,
                "observable instruments call back into their node: never on the shared meter");
            Assert.That(Published(i => nodes.Any(n => n.ProtocolMetrics.Meter == i.Meter) && i.Name == "potluck.peers.tracked"), Is.EqualTo(6));

            // The shared instrument counts every node's dials; each node's totals (what the report reads) stay its own.
            using var recorder = new Potluck.Tests.MetricRecorder(shared);
            var before = mesh.DialTotals().Sum();
            var victim = mesh.Nodes[3];
            var victimMeter = victim.Node!.ProtocolMetrics.Meter;
            await mesh.CrashAsync(victim);
            await mesh.SettleAsync(TimeSpan.FromSeconds(2));
            await mesh.RestartAsync(victim);
            await mesh.SettleAsync(TimeSpan.FromSeconds(10));
            var dials = mesh.DialTotals().Sum() - before;
            Assert.That(dials, Is.GreaterThan(0), "the restart dialled");
            Assert.That(recorder.Sum("potluck.dials"), Is.EqualTo(dials), "the shared counter saw every node's dials, once each");

            // A crash must not leave the node's observables behind (their callbacks would keep the stopped node alive).
            Assert.That(Published(i => i.Meter == victimMeter), Is.Zero, "the crashed incarnation's meter went with it");
            Assert.That(victim.Node!.ProtocolMetrics.Meter, Is.Not.SameAs(victimMeter));
            var live = mesh.Nodes.Select(n => n.Node!.ProtocolMetrics.Meter).ToList();
            Assert.That(Published(i => live.Contains(i.Meter) && i.Name == "potluck.peers.tracked"), Is.EqualTo(6));
        });
    }

    [Test]
    public void SharedCounters_GiveTheSameTrace_AndAreNamed()
    {
        var own = Run(Cheap);
        var shared = Run(Cheap with { SharedCounters = true });
        Assert.That(own.Completed, Is.EqualTo(4), "every task completed");
        Assert.That(shared.Hash, Is.EqualTo(own.Hash), "the same runs, event by event");
        Assert.That(shared.Completed, Is.EqualTo(own.Completed));
        Assert.That(own.StandIns, Has.None.Contains("shared counters"));
        Assert.That(shared.StandIns, Has.One.Contains("shared counters"));
    }

    private static (string Hash, int Completed, IReadOnlyList<string> StandIns) Run(MeshStandIns standIns) => VirtualTimeDriver.Run(async d =>
    {
        await using var mesh = await SimulatedMesh.StartAsync(d, new MeshOptions
        {
            Nodes = 8, Providers = 2, Seed = 9, StandIns = standIns, Loggers = Potluck.Tests.TestLogging.Factory,
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
        return (mesh.TraceHash, records.Count(r => r.Completed), mesh.StandIns);
    });

    /// <summary>How many instruments in this process, published now, match <paramref name="match"/>.</summary>
    private static int Published(Func<Instrument, bool> match)
    {
        var count = 0;
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, _) =>
            {
                if (match(instrument))
                {
                    Interlocked.Increment(ref count);
                }
            },
        };
        listener.Start();
        return count;
    }
}
