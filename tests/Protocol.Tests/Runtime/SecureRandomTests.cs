using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Runtime;

public class SecureRandomTests
{
    [Test]
    public void Seeded_IsReplayable_AndSeparatedByPurposeAndSeed()
    {
        var a = new SeededSecureRandom(1, "x").GetBytes(100);
        Assert.That(new SeededSecureRandom(1, "x").GetBytes(100), Is.EqualTo(a));
        Assert.That(new SeededSecureRandom(1, "y").GetBytes(100), Is.Not.EqualTo(a));
        Assert.That(new SeededSecureRandom(2, "x").GetBytes(100), Is.Not.EqualTo(a));

        // Draw sizes do not change the stream.
        var pieces = new SeededSecureRandom(1, "x");
        var joined = pieces.GetBytes(7).Concat(pieces.GetBytes(33)).Concat(pieces.GetBytes(60)).ToArray();
        Assert.That(joined, Is.EqualTo(a));
    }

    [Test]
    public void NextInt32_StaysInRange_AndCoversIt()
    {
        var random = new SeededSecureRandom(3);
        var seen = new int[7];
        for (var i = 0; i < 7000; i++)
        {
            seen[random.NextInt32(7)]++;
        }
        Assert.That(seen, Has.All.GreaterThan(800));
        Assert.That(Enumerable.Range(0, 1000).Select(_ => random.NextDouble()), Has.All.InRange(0.0, 0.9999999999));
    }

    [Test]
    public void Runtime_ProtocolRandomness_IsReplayableOnlyWithASeed()
    {
        var seeded = NodeRuntime.WithTime(TimeProvider.System, seed: 5);
        Assert.That(seeded.CreateRandom("gossip").Next(), Is.EqualTo(NodeRuntime.WithTime(TimeProvider.System, seed: 5).CreateRandom("gossip").Next()));
        Assert.That(seeded.CreateRandom("gossip").Next(), Is.Not.EqualTo(seeded.CreateRandom("dht").Next()));
        Assert.That(NodeRuntime.System.IsDeterministic, Is.False);
        Assert.That(NodeRuntime.System.SecureRandom, Is.SameAs(SystemSecureRandom.Instance));
    }
}
