using Potluck.Node.Simulation;

namespace Potluck.Node.Tests.Simulation;

/// <summary>
/// <see cref="Potluck.Protocol.Host.HostOptions.TrimIdle"/> on a whole simulated mesh (complete nodes, virtual time,
/// seeded): idle connections closed below the high watermark leave gossip delivering to every node and every requester
/// leasing, with fewer connection ends at the end than the same run with the rule off.
/// </summary>
[Category("fast")]
public class SimIdleTrimTests
{
    private static SimReport Run(bool rule) => SimRunner.Run(new SimScenario
    {
        // A floor of 4 (the default 12 is more than a node of 24 holds): the rule bites on every node.
        Mesh = new MeshOptions
        {
            Nodes = 24, Providers = 6, Seed = 7, ConfigureHost = h => h with { TrimIdle = rule, IdleTrimFloor = 4 },
        },
        Tasks = 24,
        Duration = TimeSpan.FromSeconds(60),
        GossipProbes = 10,
    });

    [Test]
    public void IdleConnectionsClosedBelowTheHighWatermark_GossipStillReachesEveryNode_AndEveryRequesterLeases()
    {
        var on = Run(rule: true);
        var off = Run(rule: false);
        var why = $"on: {on.ToText()}\noff: {off.ToText()}";
        Assert.That(on.Tasks.Completed, Is.EqualTo(on.Tasks.Submitted), "every task leased and completed; " + why);
        Assert.That(on.Tasks.Failed, Is.Zero, why);
        Assert.That(on.Gossip.Delivery, Is.EqualTo(1.0), "every gossip probe reached every node; " + why);
        Assert.That(on.Credits.BalancesSum, Is.EqualTo(on.Credits.Grants), "credits conserved; " + why);
        Assert.That(on.Dials.Closed.GetValueOrDefault("idle-trim"), Is.GreaterThan(0), "idle connections were closed; " + why);
        Assert.That(off.Dials.Closed.GetValueOrDefault("idle-trim"), Is.Zero, "none with the rule off; " + why);
        Assert.That(on.Connections.EndsAtEnd.PerNode, Is.LessThan(off.Connections.EndsAtEnd.PerNode),
            "fewer connection ends at the end than with the rule off; " + why);
        Assert.That(off.Tasks.Completed, Is.EqualTo(off.Tasks.Submitted), why);
    }
}
