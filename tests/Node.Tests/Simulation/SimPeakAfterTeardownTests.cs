using System.Diagnostics;
using Potluck.Node.Simulation;
using Potluck.Protocol.Runtime;

namespace Potluck.Node.Tests.Simulation;

/// <summary>
/// <c>peak_rss_mib</c> covers the mesh's teardown (stop 40): at 10,000 nodes disposing every node after the figures were
/// read raised the process's peak from 3,683 to 4,053 MiB, and the report said 3,683. The report now reads the peak again
/// once the mesh is gone.
/// </summary>
[Category("fast")]
public class SimPeakAfterTeardownTests
{
    private static SimReport SmallRun() => SimRunner.Run(new SimScenario
    {
        Mesh = new MeshOptions { Nodes = 10, Providers = 3, Seed = 7, StandIns = MeshStandIns.All },
        Tasks = 4,
        Duration = TimeSpan.FromSeconds(4),
        GossipProbes = 2,
    });

    [Test]
    public void TheReportsPeak_IsTheProcesssPeakAfterTheMeshIsGone()
    {
        var report = SmallRun();
        using var self = Process.GetCurrentProcess();
        var after = self.PeakWorkingSet64 / (1024.0 * 1024.0);
        // VmHWM only grows: read after the run returned it is at least the report's; and the report's was read after the
        // teardown, so nothing between the two can have raised it by more than this test's own few allocations.
        Assert.That(report.PeakRssMib, Is.LessThanOrEqualTo(after));
        Assert.That(report.PeakRssMib, Is.GreaterThan(after - 16), "read after the teardown, not before it");
        Assert.That(report.RssPerNodeKib, Is.EqualTo(report.PeakRssMib * 1024 / report.Nodes).Within(1e-6));
    }

    [Test]
    public void APeakRaisedByTheTeardown_ReplacesTheOneReadBeforeIt_AndALowerOneChangesNothing()
    {
        var report = SmallRun();
        var raised = SimRunner.WithPeakAfterTeardown(report, report.PeakRssMib + 370);
        Assert.That(raised.PeakRssMib, Is.EqualTo(report.PeakRssMib + 370));
        Assert.That(raised.RssPerNodeKib, Is.EqualTo((report.PeakRssMib + 370) * 1024 / report.Nodes).Within(1e-6));
        Assert.That((raised.TraceHash, raised.Events, raised.WallS), Is.EqualTo((report.TraceHash, report.Events, report.WallS)),
            "only the peak moves");
        Assert.That(SimRunner.WithPeakAfterTeardown(report, report.PeakRssMib - 1), Is.SameAs(report));
    }

    [Test]
    public void TheTeardown_ChecksTheHeapAfterEachNodeIsDisposed_WithinOneMoment()
    {
        var upAtEachCheck = new List<int>();
        var momentsDuringTeardown = 0;
        VirtualTimeDriver.Run(async d =>
        {
            var mesh = await SimulatedMesh.StartAsync(d, new MeshOptions { Nodes = 8, Providers = 3, Seed = 3, StandIns = MeshStandIns.All });
            await mesh.SettleAsync(TimeSpan.FromSeconds(5));
            mesh.TeardownCheck = () => upAtEachCheck.Add(mesh.Nodes.Count(n => n.Node is not null));
            d.BetweenMoments = () => momentsDuringTeardown++;
            await mesh.DisposeAsync();
            d.BetweenMoments = null;
        });
        // Once per node, each after that node is gone; and no moment passed meanwhile, so only this hook can hold the heap.
        Assert.That(upAtEachCheck, Is.EqualTo(new[] { 7, 6, 5, 4, 3, 2, 1, 0 }));
        Assert.That(momentsDuringTeardown, Is.EqualTo(0), "the teardown runs within one moment of virtual time");
    }
}
