using Microsoft.Extensions.DependencyInjection;
using Potluck.Node.Home;
using Potluck.Node.Simulation;
using Potluck.Protocol.Runtime;

namespace Potluck.Node.Tests.Simulation;

/// <summary>
/// A simulated node's machine is simulated too (<see cref="SimulatedMachineProbe"/>): idle, on mains, nobody at the
/// keyboard, its counters on the mesh's virtual clock; no node of a mesh reads the host's /proc, /dev or /sys.
/// </summary>
[Category("fast")]
public class SimMachineTests
{
    [Test]
    public void EveryNodeOfAMesh_ReadsTheSimulatedMachine_NotTheHost() => VirtualTimeDriver.Run(async d =>
    {
        var options = new MeshOptions { Nodes = 4, Providers = 1, Seed = 3, StandIns = MeshStandIns.All, Loggers = Potluck.Tests.TestLogging.Factory };
        await using var mesh = await SimulatedMesh.StartAsync(d, options);
        foreach (var node in mesh.Nodes)
        {
            Assert.That(node.Node!.Services.GetRequiredService<IMachineProbe>(), Is.InstanceOf<SimulatedMachineProbe>(), $"{node}");
        }
    });

    [Test]
    public void TheSimulatedMachine_IsIdleOnVirtualTime_SoAnOnlyWhenIdleNodeWorksAfterIdleFor()
    {
        var clock = new VirtualClock();
        var probe = new SimulatedMachineProbe(clock, cores: 4);
        var prefs = new PreferencesOptions { OnlyWhenIdle = true, IdleFor = TimeSpan.FromMinutes(3) };
        var tracker = new AvailabilityTracker(prefs, TimeZoneInfo.Utc, clock.GetUtcNow());

        var first = probe.Read()!;
        Assert.That((first.TotalTicks, first.IdleTicks, first.OwnTicks, first.LastInput, first.OnBattery), Is.EqualTo((0L, 0L, 0L, (DateTimeOffset?)null, (bool?)null)));
        Assert.That(tracker.Update(first, clock.GetUtcNow()).State, Is.EqualTo(WorkState.IdlePaused), "nothing measured yet");

        clock.Advance(TimeSpan.FromSeconds(5));
        var second = probe.Read()!;
        Assert.That(second.TotalTicks, Is.EqualTo(5 * 100 * 4), "USER_HZ ticks of 4 cores over 5 virtual seconds");
        Assert.That(second.IdleTicks, Is.EqualTo(second.TotalTicks), "all of it idle");
        var quiet = tracker.Update(second, clock.GetUtcNow());
        Assert.That(quiet.OthersCpuPercent, Is.EqualTo(0));
        Assert.That(quiet.State, Is.EqualTo(WorkState.IdlePaused), "idle, but not for IdleFor yet");

        // Readings every 5 virtual seconds, as the preferences service samples: working once 3 virtual minutes were quiet.
        var at = clock.GetUtcNow();
        Availability now = quiet;
        while (now.State != WorkState.Working)
        {
            clock.Advance(TimeSpan.FromSeconds(5));
            now = tracker.Update(probe.Read(), clock.GetUtcNow());
            Assert.That(clock.GetUtcNow() - at, Is.LessThanOrEqualTo(TimeSpan.FromMinutes(3)), "working within IdleFor of the first quiet reading");
        }
        Assert.That(clock.GetUtcNow() - at, Is.EqualTo(TimeSpan.FromMinutes(3)));
    }
}
