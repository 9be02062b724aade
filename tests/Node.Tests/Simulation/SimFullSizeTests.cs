using Potluck.Node.Simulation;

namespace Potluck.Node.Tests.Simulation;

/// <summary>
/// Full-size versions of <see cref="SimPropertyTests"/>: many seeds, bigger meshes. Minutes to hours on 2 cores, so
/// <c>[Explicit]</c>; run with <c>dotnet test tests/Node.Tests -c Release --filter "FullyQualifiedName~SimFullSizeTests"</c>.
/// </summary>
[Explicit("full-size simulations: minutes to hours")]
public class SimFullSizeTests
{
    /// <summary>
    /// An always-cheating provider is caught within 100 of its tasks in at least 99 % of seeded runs. The denominator is the
    /// cheaters that ran a task (a cheater no requester chose cannot be caught, and says nothing about checks); each caught
    /// one counts if it was caught within 100 of its own tasks.
    /// </summary>
    [Test]
    public void AlwaysCheater_CaughtWithin100Tasks_In99PercentOfSeeds([Values(100)] int seeds)
    {
        var caughtInTime = 0;
        var active = 0;
        for (var seed = 1; seed <= seeds; seed++)
        {
            var report = SimRunner.Run(new SimScenario
            {
                Mesh = new MeshOptions { Nodes = 10, Providers = 4, CheaterShare = 0.25, Seed = seed },
                Tasks = 40,
                Duration = TimeSpan.FromSeconds(40),
                GossipProbes = 0,
            });
            active += report.Cheaters.Active;
            caughtInTime += Math.Min(report.Cheaters.Active, report.TasksUntilCaughtEach.Count(n => n <= 100));
            Assert.That(report.HonestAccused, Is.Zero, $"seed {seed}");
            TestContext.Out.WriteLine($"seed {seed}: {report.Cheaters.Caught}/{report.Cheaters.Count} caught, {report.Cheaters.Active} ran a task, "
                + $"tasks until caught max {report.Cheaters.TasksUntilCaught.Max}");
        }
        Assert.That(active, Is.GreaterThan(0), "some cheater ran a task");
        TestContext.Out.WriteLine($"caught within 100 tasks: {caughtInTime}/{active}");
        Assert.That((double)caughtInTime / active, Is.GreaterThanOrEqualTo(0.99));
    }

    /// <summary>With 10 % selective cheaters, wrong results accepted stay at or below 1 in 1,000 tasks.</summary>
    [Test]
    public void SelectiveCheaters_WrongAcceptedAtMostOnePerThousand()
    {
        var report = SimRunner.Run(new SimScenario
        {
            Mesh = new MeshOptions { Nodes = 60, Providers = 20, CheaterShare = 0.1, Adversary = AdversaryKind.SelectiveCheater, CheatRate = 0.2, Seed = 3 },
            Tasks = 2000,
            Duration = TimeSpan.FromMinutes(10),
            GossipProbes = 0,
        });
        Assert.That(report.WrongAccepted, Is.LessThanOrEqualTo(report.Tasks.Completed / 1000), report.ToText());
        Assert.That(report.HonestAccused, Is.Zero, report.ToText());
    }
}
