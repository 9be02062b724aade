using Potluck.Node.Simulation;

namespace Potluck.Node.Tests.Simulation;

/// <summary>
/// A seed replays the whole run, not only the part the trace records: the same count of events (loop items and timers)
/// and the same digest of all of them (<see cref="SimReport.EventsHash"/>), with the same trace hash. Sandbox runs end on
/// their own threads at wall-clock moments; their results used to reach the loop inline or mid-way through an instant
/// depending on that, and the same seed gave a few events more or fewer (issue 11).
/// </summary>
[Category("fast")]
public class SimReplayTests
{
    private static SimReport Run(long seed, MeshStandIns standIns, StringWriter? log = null) => SimRunner.Run(new SimScenario
    {
        Mesh = new MeshOptions { Nodes = 10, Providers = 3, Seed = seed, StandIns = standIns },
        Tasks = 12,
        Duration = TimeSpan.FromSeconds(6),
        GossipProbes = 4,
        EventLog = log,
    });

    [Test]
    public void TheSameSeedTwice_IsTheSameRun_EventForEvent_WithOneSandboxForAll()
    {
        var first = Run(7, MeshStandIns.All);
        var again = Run(7, MeshStandIns.All);

        Assert.That(first.Tasks.Completed, Is.EqualTo(12), first.ToText());
        Assert.That(first.EventsHash, Does.Match("^[0-9a-f]{16}$"));
        Assert.That(again.Events, Is.EqualTo(first.Events), "the same events, to the count");
        Assert.That(again.EventsHash, Is.EqualTo(first.EventsHash), "the same events, one by one");
        Assert.That(again.TraceHash, Is.EqualTo(first.TraceHash));
        Assert.That(first.ToJson(), Does.Contain($"\"events_hash\": \"{first.EventsHash}\""));
        Assert.That(first.ToText(), Does.Contain($"events {first.EventsHash}"));

        var other = Run(8, MeshStandIns.All);
        Assert.That(other.EventsHash, Is.Not.EqualTo(first.EventsHash), "another seed, another run");
    }

    [Test]
    public void TheSameSeedTwice_IsTheSameRun_EventForEvent_WithCompleteNodes()
    {
        var first = Run(3, new MeshStandIns());
        var again = Run(3, new MeshStandIns());

        Assert.That(first.Tasks.Completed, Is.EqualTo(12), first.ToText());
        Assert.That((again.Events, again.EventsHash, again.TraceHash), Is.EqualTo((first.Events, first.EventsHash, first.TraceHash)));
    }

    [Test]
    public void TheEventLog_WritesEveryEvent_AndLeavesTheRunAsItWas()
    {
        using var log = new StringWriter();
        var logged = Run(7, MeshStandIns.All, log);
        var plain = Run(7, MeshStandIns.All);

        Assert.That((logged.Events, logged.EventsHash, logged.TraceHash), Is.EqualTo((plain.Events, plain.EventsHash, plain.TraceHash)), "logging changes nothing");
        var lines = log.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        // The report counts the events up to its measurement; the log goes on while the mesh is disposed.
        Assert.That(lines, Has.Length.GreaterThanOrEqualTo(logged.Events));
        Assert.That(lines.Take((int)logged.Events).All(l => l.Contains(" item ", StringComparison.Ordinal) || l.Contains(" timer ", StringComparison.Ordinal)), Is.True);
        Assert.That(lines.Select(l => long.Parse(l[..l.IndexOf(' ', StringComparison.Ordinal)], System.Globalization.CultureInfo.InvariantCulture)), Is.Ordered,
            "virtual time never goes back");
    }
}
