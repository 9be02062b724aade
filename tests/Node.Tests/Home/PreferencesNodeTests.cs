using Microsoft.Extensions.DependencyInjection;
using Potluck.Node.Home;
using Potluck.Protocol.Runtime;

namespace Potluck.Node.Tests.Home;

/// <summary>A provider node on the virtual-time driver, its machine read from prepared /proc files.</summary>
public class PreferencesNodeTests
{
    [Test]
    public void Provider_WaitsForIdle_Works_ThenPausesWhenTheOwnerReturns_AndResumesLive() => VirtualTimeDriver.Run(async d =>
    {
        using var machine = new FakeMachine();
        await using var nodes = new TestNodes(d, seed: 7);
        var builder = nodes.Builder(nodes.Options() with { DataDir = nodes.NewDataDir() });
        builder.Services.AddSingleton<IMachineProbe>(new ProcMachineProbe(machine.Root));
        builder.Services.AddSingleton(TimeZoneInfo.Utc);
        builder.Configure(o => o with
        {
            Compute = o.Compute with { Enabled = true, Provide = true },
            Preferences = new PreferencesOptions { OnlyWhenIdle = true, IdleFor = TimeSpan.FromSeconds(60), Grace = TimeSpan.FromSeconds(20) },
        });
        await using var node = await builder.StartAsync();
        var capacity = node.Compute!.Provider!.Capacity;
        var prefs = node.Preferences!;

        // Samples at 5 s, 10 s, …; the machine moves half-way between them.
        await Task.Delay(TimeSpan.FromSeconds(2.5), nodes.Time);
        async Task Run(int seconds, double others)
        {
            for (var i = 0; i < seconds; i += 5)
            {
                machine.Run(5, others);
                await Task.Delay(TimeSpan.FromSeconds(5), nodes.Time);
            }
        }

        Assert.That(capacity.PausedBecause, Is.Not.Null, "not measured yet: no work");
        await Run(30, others: 80);
        Assert.That(prefs.Current.State, Is.EqualTo(WorkState.IdlePaused));
        Assert.That(capacity.PausedBecause, Does.Contain("in use"));
        Assert.That(capacity.AvailableCores, Is.Zero, "a paused provider advertises no free core");

        await Run(70, others: 3);
        Assert.That(prefs.Current.State, Is.EqualTo(WorkState.Working));
        Assert.That(capacity.PausedBecause, Is.Null);
        Assert.That(capacity.AvailableCores, Is.EqualTo(capacity.Cores));

        await Run(15, others: 90);
        Assert.That(capacity.PausedBecause, Is.Null, "15 s over the threshold is within the 20 s grace");
        await Run(10, others: 90);
        Assert.That(capacity.PausedBecause, Does.Contain("others' CPU 90 %"));

        // Changed live: idle detection off, the node works at the next sample.
        prefs.Apply(prefs.Preferences with { OnlyWhenIdle = false });
        Assert.That(capacity.PausedBecause, Is.Null);
        Assert.That(prefs.Current.Reason, Does.Contain("onlyWhenIdle is off"));
    });
}
