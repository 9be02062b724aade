using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;
using static Potluck.Protocol.Tests.Gossipsub.RouterFixture;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// A disconnected peer's score is retained only when it carries a penalty, for retain_score, at most
/// <see cref="PeerScoreParams.MaxRetainedPeers"/> of them: a bad peer cannot shed its penalty by reconnecting, and a
/// stranger minting identities cannot grow the table or push a bad peer's record out.
/// </summary>
public class RetainedScoreTests
{
    private static GossipsubOptions SlowDecay(GossipsubOptions o, int maxRetained = 4096) => o with
    {
        Score = o.Score with { BehaviourPenaltyDecay = 0.99, RetainScore = TimeSpan.FromMinutes(1), MaxRetainedPeers = maxRetained },
    };

    [Test, Category("Adversarial")]
    public void PenalisedPeer_ReconnectingBeforeRetainScore_KeepsItsPenalty_AfterItItIsForgotten()
    {
        var f = new RouterFixture(3, o => SlowDecay(o));
        var bad = f.Id(0);
        for (var i = 0; i < 3; i++)
        {
            f.Router.MalformedRpc(bad);
        }
        var before = f.Score(0);
        Assert.That(before, Is.EqualTo(-90).Within(1e-9), "P₇: 3² × −10");

        f.Router.RemovePeer(bad, f.Now);
        Assert.That(f.Router.RetainedScores, Is.EqualTo(1));
        f.Heartbeat(5);
        f.Router.AddPeer(bad, GossipsubProtocol.V11, false, null, f.Now); // back after 5 s, same identity
        Assert.That(f.Router.RetainedScores, Is.Zero, "connected again: not counted as retained");
        Assert.That(f.Score(0), Is.LessThan(-80), "the penalty came back with it (decayed 5 s at 0.99 a second)");

        f.Router.RemovePeer(bad, f.Now);
        f.Heartbeat(61);
        Assert.That(f.Router.RetainedScores, Is.Zero, "forgotten after retain_score");
        f.Router.AddPeer(bad, GossipsubProtocol.V11, false, null, f.Now);
        Assert.That(f.Score(0), Is.Zero, "a fresh start only after retain_score");
    }

    [Test]
    public void PeerWithNothingAgainstIt_IsForgottenAtDisconnect_NotRetained()
    {
        var f = new RouterFixture(3);
        Assert.That(f.Router.ScoredPeers, Is.EqualTo(3));
        f.Router.RemovePeer(f.Id(1), f.Now);
        f.Router.RemovePeer(f.Id(2), f.Now);
        Assert.That(f.Router.ScoredPeers, Is.EqualTo(1));
        Assert.That(f.Router.RetainedScores, Is.Zero);
    }

    [Test, Category("Adversarial")]
    public void TenThousandPenalisedIdentities_KeepRetainedScoresAtTheCap_AndTheWorstOffenderIsStillRemembered()
    {
        var f = new RouterFixture(2, o => SlowDecay(o, maxRetained: 100));
        var worst = f.Id(0);
        for (var i = 0; i < 10; i++)
        {
            f.Router.MalformedRpc(worst);
        }
        f.Router.RemovePeer(worst, f.Now);
        var random = new Random(9);
        var max = 0;
        for (var i = 0; i < 10_000; i++)
        {
            var sybil = Potluck.Protocol.Tests.Host.Sybils.Mint(random);
            f.Router.AddPeer(sybil, GossipsubProtocol.V11, false, null, f.Now);
            f.Router.MalformedRpc(sybil);
            f.Router.RemovePeer(sybil, f.Now);
            max = Math.Max(max, f.Router.RetainedScores);
        }

        Assert.That(max, Is.LessThanOrEqualTo(100));
        Assert.That(f.Router.ScoredPeers, Is.LessThanOrEqualTo(100 + 1), "the retained plus the one honest peer still connected");
        f.Router.AddPeer(worst, GossipsubProtocol.V11, false, null, f.Now);
        Assert.That(f.Score(0), Is.EqualTo(-1000).Within(1e-9), "10² × −10: the least penalised were forgotten first, not it");
        Assert.That(f.Score(1), Is.Zero, "the honest connected peer is untouched");
    }

    [Test, Category("Adversarial")]
    public void PeerThatLeavesOwingAnIWantPromise_IsStillPenalised_WhenItComesBack()
    {
        var f = new RouterFixture(3, o => SlowDecay(o));
        f.Router.Subscribe(Topic, f.Now);
        var advertised = Signed(PrivateKey.FromRandom(new Random(3)), Topic, [1, 2, 3], 1);
        f.Receive(0, IHave(Topic, IdOf(advertised)));
        f.Drain(); // our IWANT goes out: peer 0 owes the message
        var liar = f.Id(0);
        f.Router.RemovePeer(liar, f.Now); // and leaves before delivering it

        Assert.That(f.Router.RetainedScores, Is.EqualTo(1), "owing a promise keeps its record");
        f.Heartbeat(4); // past the follow-up time: the promise is broken
        f.Router.AddPeer(liar, GossipsubProtocol.V11, false, null, f.Now);
        Assert.That(f.Router.Counters.BrokenPromises, Is.EqualTo(1));
        Assert.That(f.Score(0), Is.LessThan(0), "the broken promise costs it, though it left and came back");
    }
}
