using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Host;

/// <summary>Per-peer budgets hold the peers that spent something lately or owe a penalty, and no one else.</summary>
public class PeerBudgetsBoundsTests
{
    private static readonly PeerId Flooder = PrivateKey.FromRandom(new Random(1)).PeerId;
    private static readonly PeerId Honest = PrivateKey.FromRandom(new Random(2)).PeerId;

    [Test]
    public void APeerWhoseBucketsRefilled_IsForgotten_AndComesBackToTheSameFullBucket()
    {
        var clock = new VirtualClock();
        var budgets = new PeerBudgets(new PeerBudgetOptions { Receipts = new RateBudget(10, 20) }, clock);
        for (var i = 0; i < 20; i++)
        {
            Assert.That(budgets.TryTake(Honest, PeerBudgets.Receipts), Is.True);
        }
        Assert.That(budgets.TryTake(Honest, PeerBudgets.Receipts), Is.False, "the burst is spent");

        clock.Advance(TimeSpan.FromSeconds(1.9)); // 19 tokens: not full yet
        budgets.TryTake(Flooder, PeerBudgets.Receipts); // a newcomer triggers the sweep
        Assert.That(budgets.TrackedPeers, Is.EqualTo(2), "not full again: kept");

        clock.Advance(TimeSpan.FromSeconds(1)); // full since 2.0 s (one penalty point for the refusal is still owed)
        budgets.TryTake(PrivateKey.FromRandom(new Random(3)).PeerId, PeerBudgets.Receipts);
        Assert.That(budgets.ScoreOf(Honest), Is.LessThan(0), "the refusal cost a point, still owed");
        Assert.That(budgets.TrackedPeers, Is.EqualTo(2), "the debt keeps the honest peer; the other, full again, is forgotten");

        clock.Advance(TimeSpan.FromHours(1)); // the point halves 12 times: forgiven
        budgets.TryTake(PrivateKey.FromRandom(new Random(4)).PeerId, PeerBudgets.Receipts);
        Assert.That(budgets.TrackedPeers, Is.EqualTo(1), "the idle ones are forgotten; only the newcomer is left");
        Assert.That(budgets.Forgotten.Idle, Is.EqualTo(3));
        Assert.That(Enumerable.Range(0, 25).Count(_ => budgets.TryTake(Honest, PeerBudgets.Receipts)), Is.EqualTo(20),
            "back to a full bucket: forgetting lost nothing");
    }

    [Test, Category("Adversarial")]
    public void TenThousandMintedIdentities_SendingReceipts_LeaveTheTableBounded_AndAnIndebtedPeerKeepsItsDebt()
    {
        var clock = new VirtualClock();
        var budgets = new PeerBudgets(new PeerBudgetOptions { MaxTrackedPeers = 1_000 }, clock);
        budgets.Penalise(Flooder, Misbehaviour.RefusedProof);
        budgets.Penalise(Flooder, Misbehaviour.Malformed);
        var random = new Random(5);
        var max = 0;
        for (var i = 0; i < 10_000; i++)
        {
            var sybil = Sybils.Mint(random);
            for (var j = 0; j < 600; j += 100)
            {
                budgets.TryTake(sybil, PeerBudgets.Receipts); // a few receipts each
            }
            if (i % 4 == 0)
            {
                Assert.That(budgets.TryTake(Honest, PeerBudgets.Receipts), Is.True, "the honest peer is served throughout");
            }
            max = Math.Max(max, budgets.TrackedPeers);
            clock.Advance(TimeSpan.FromMilliseconds(5));
        }

        Assert.That(max, Is.LessThanOrEqualTo(1_000));
        Assert.That(budgets.TrackedPeers, Is.LessThan(300), "at 200 identities a second, those idle for a second are swept");
        Assert.That(budgets.ScoreOf(Flooder), Is.LessThan(-30), "35 points, decayed over 50 s, not escaped by the flood");
        Assert.That(budgets.Refused.GetValueOrDefault(PeerBudgets.Receipts), Is.Zero);
    }
}
