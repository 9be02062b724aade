using Potluck.Node.Simulation;

namespace Potluck.Node.Tests.Simulation;

/// <summary>
/// Issue 11, deliverable 4 (README "Simulated meshes", "The N term, measured"): every advertisement reaches every node,
/// and a provider's free-core count changes at every lease's start and end. With the 2-second gap for every change (the
/// node before) a busy mesh's advertisements were mostly those; a load-only change now waits for
/// <c>AdvertisementOptions.LoadChangeGap</c> (1 minute), so in a 20-second burst of tasks a two-core provider that never
/// fills up publishes its first advertisement alone, and requesters still find it and every task completes.
/// </summary>
[Category("fast")]
public class SimAdvertisementLoadTests
{
    private static SimReport Run(TimeSpan? loadChangeGap) =>
        SimRunner.Run(new SimScenario
        {
            Mesh = new MeshOptions
            {
                Nodes = 40, Providers = 8, Seed = 7, MaxConnectionsPerNode = 32, StandIns = MeshStandIns.All,
                ConfigureAdvertising = loadChangeGap is { } gap ? a => a with { LoadChangeGap = gap } : null,
            },
            Tasks = 24,
            Duration = TimeSpan.FromSeconds(20),
        });

    [Test]
    public void LoadOnlyChanges_WaitForTheLoadGap_NoneIssuedInABurst_AndEveryTaskCompletes()
    {
        var before = Run(TimeSpan.FromSeconds(2)); // every change after the 2-second gap, as before
        var after = Run(null);
        var why = $"seed 7: before {before.ToText()}\nafter {after.ToText()}";

        Assert.That(before.Ads.Issued["first"], Is.EqualTo(8), why);
        Assert.That(before.Ads.Issued["free_cores"], Is.GreaterThan(0), "with a 2-second gap the load-only changes go out; " + why);
        Assert.That(after.Ads.Issued["first"], Is.EqualTo(8), why);
        Assert.That(after.Ads.Issued["free_cores"], Is.Zero, "no load-only change inside the minute; " + why);
        Assert.That(after.Ads.Issued.Values.Sum(), Is.LessThan(before.Ads.Issued.Values.Sum()), why);
        Assert.That(after.Events, Is.LessThan(before.Events), "fewer publications, fewer events; " + why);
        foreach (var r in new[] { before, after })
        {
            Assert.That(r.Tasks.Completed, Is.EqualTo(r.Tasks.Submitted), "requesters still find capacity; " + why);
            Assert.That(r.Gossip.Delivery, Is.EqualTo(1.0), why);
            Assert.That(r.Ads.KnownAtSubmitMin, Is.EqualTo(8), "every requester knew every provider when it submitted; " + why);
        }
    }
}
