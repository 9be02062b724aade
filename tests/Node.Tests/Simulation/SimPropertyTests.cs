using Potluck.Node.Simulation;

namespace Potluck.Node.Tests.Simulation;

/// <summary>
/// The properties of issue 11 at CI size, each on a whole simulated mesh (complete nodes, virtual time, seeded):
/// full-size runs of the same scenarios are in scripts/bench/sim-mesh.sh, with figures in the README.
/// </summary>
[Category("fast")]
[Category("Adversarial")]
public class SimPropertyTests
{
    [Test]
    public void Cheaters_AreCaught_NoWrongResultAccepted_NoHonestProviderAccused_CreditsTrackFuel_APartitionThatHealsLosesNothing()
    {
        var report = SimRunner.Run(new SimScenario
        {
            Mesh = new MeshOptions { Nodes = 14, Providers = 6, CheaterShare = 1.0 / 3, Adversary = AdversaryKind.Cheater, Seed = 11 },
            Tasks = 40,
            Duration = TimeSpan.FromSeconds(45),
            Partition = true,
            GossipProbes = 10,
        });
        var seed = $"seed {report.Seed}: {report.ToText()}";
        Assert.That(report.Cheaters.Count, Is.EqualTo(2), seed);
        Assert.That(report.Cheaters.Caught, Is.EqualTo(2), "every always-cheating provider is caught; " + seed);
        Assert.That(report.Cheaters.TasksUntilCaught.Max, Is.LessThanOrEqualTo(100), "within 100 of its tasks; " + seed);
        Assert.That(report.WrongAccepted, Is.Zero, "no wrong result is accepted; " + seed);
        Assert.That(report.HonestAccused, Is.Zero, "no honest provider is accused; " + seed);
        Assert.That(report.Tasks.Failed, Is.Zero, "the partition healed and no task was lost; " + seed);
        Assert.That(report.Credits.BalancesSum, Is.EqualTo(report.Credits.Grants), "credits are conserved across the partition; " + seed);
        Assert.That(report.Credits.OpenPayments, Is.Zero, "every payment settled and handed over; " + seed);
        Assert.That(report.Credits.Gini, Is.LessThan(0.05), "honest providers' credits track the fuel they supplied; " + seed);
        Assert.That(report.AdversaryGain, Is.LessThanOrEqualTo(0), "an always-cheating provider is never paid; " + seed);
        Assert.That(report.Faults.Partitions, Is.EqualTo(1));
        Assert.That(report.Faults.Heals, Is.EqualTo(1));
        Assert.That(report.Gossip.Delivery, Is.EqualTo(1.0), "every gossip probe reached every node; " + seed);
    }

    [Test]
    public void Churn_CrashedProvidersRestartWithTheirLedgers_NoCreditIsLostOrCountedTwice()
    {
        var report = SimRunner.Run(new SimScenario
        {
            Mesh = new MeshOptions { Nodes = 12, Providers = 5, Seed = 23 },
            Tasks = 30,
            Duration = TimeSpan.FromSeconds(40),
            ChurnPerMinute = 0.3,
            GossipProbes = 0,
        });
        var seed = $"seed {report.Seed}: {report.ToText()}";
        Assert.That(report.Faults.Crashes, Is.GreaterThan(0), seed);
        Assert.That(report.Faults.Restarts, Is.EqualTo(report.Faults.Crashes), "every crashed node came back; " + seed);
        Assert.That(report.Credits.BalancesSum, Is.EqualTo(report.Credits.Grants), "a crash mid-lease loses no credit and counts none twice; " + seed);
        Assert.That(report.WrongAccepted, Is.Zero, seed);
        Assert.That(report.HonestAccused, Is.Zero, seed);
        Assert.That(report.Tasks.Completed, Is.GreaterThan(report.Tasks.Submitted / 2), "work goes on through churn; " + seed);
        // potluck.dials{reason}, summed over nodes, crashed ones' counts kept: every connection opened was a dial counted.
        Assert.That(report.Dials.Total.Keys, Is.SubsetOf(Potluck.Protocol.Host.DialReason.All), seed);
        Assert.That(report.Dials.Total.Values.Sum(), Is.GreaterThanOrEqualTo(report.Connections.Opened), seed);
        Assert.That(report.Dials.Total.GetValueOrDefault(Potluck.Protocol.Host.DialReason.DhtBootstrap), Is.GreaterThan(0), "the DHT's join dials; " + seed);
        Assert.That(report.Dials.Warmup.Values.Sum(), Is.LessThanOrEqualTo(report.Dials.Total.Values.Sum()), seed);
        Assert.That(report.Dials.DhtQueries.GetValueOrDefault("ok"), Is.GreaterThan(0), seed);
        Assert.That(report.ToText(), Does.Contain("dials by reason: "), seed);
    }
}
