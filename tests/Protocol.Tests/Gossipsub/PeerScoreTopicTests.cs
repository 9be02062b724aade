using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// A peer's topic records as a list in the order first met (not a table), and their topic names held once: the
/// score is what the old table gave (<see cref="CompactDeliveryRecordTests"/> compares the two over random calls), the
/// names are bounded, and a peer that names a thousand topics still has each recorded.
/// </summary>
public class PeerScoreTopicTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    [Test]
    public void AThousandTopicNames_HoldAtMost256Names_AndEveryTopicIsStillRecorded()
    {
        var parameters = new PeerScoreParams
        {
            DefaultTopic = new() { TopicWeight = 1, MeshMessageDeliveriesWeight = 0, MeshFailurePenaltyWeight = 0, InvalidMessageDeliveriesWeight = -1 },
        };
        var score = new PeerScore(parameters, TimeSpan.FromMinutes(2), T0);
        var random = new Random(3);
        var attacker = PrivateKey.FromRandom(random).PeerId;
        var honest = PrivateKey.FromRandom(random).PeerId;
        score.AddPeer(attacker, null);
        score.AddPeer(honest, null);
        for (var i = 0; i < 1_000; i++)
        {
            score.Graft(attacker, $"topic-{i}", T0);
            score.MarkInvalid(attacker, $"topic-{i}");
        }
        Assert.That(score.TopicNamesHeld, Is.EqualTo(256), "names held once, at most 256");
        Assert.That(score.Counters(attacker, "topic-999")?.InvalidDeliveries, Is.EqualTo(1), "a topic past the names' bound is still recorded");
        Assert.That(score.Counters(attacker, "topic-0")?.InvalidDeliveries, Is.EqualTo(1));
        Assert.That(score.Score(attacker, T0), Is.EqualTo(-1_000), "P4 over every topic: 1,000 x -1 x 1^2");

        // Per-RPC copies of one name: the honest peer's record finds its topic whichever copy names it.
        score.Graft(honest, new string("topic-7".ToCharArray()), T0);
        score.MarkInvalid(honest, new string("topic-7".ToCharArray()));
        Assert.That(score.Counters(honest, "topic-7")?.InvalidDeliveries, Is.EqualTo(1));
        Assert.That(score.Score(honest, T0), Is.EqualTo(-1));
        Assert.That(score.TopicNamesHeld, Is.EqualTo(256));
    }
}
