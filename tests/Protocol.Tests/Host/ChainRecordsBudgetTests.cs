using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Host;

/// <summary>
/// The accounting chain's traffic has a budget of its own, sized to the lease rate: a provider whose requester takes ~300
/// leases a second sends about as many chain records, and must not be banned for it (it was, on the receipts' 100/s).
/// </summary>
public class ChainRecordsBudgetTests
{
    private static readonly PeerId Provider = PrivateKey.FromRandom(new Random(7)).PeerId;

    /// <summary>300 records a second for a minute, in 10 ms steps: what the lease benchmark's honest providers send.</summary>
    private static (int Refused, long Bans) Send(string budget)
    {
        var clock = new VirtualClock();
        var budgets = new PeerBudgets(new PeerBudgetOptions(), clock);
        var refused = 0;
        for (var step = 0; step < 6000; step++)
        {
            for (var i = 0; i < 3; i++)
            {
                refused += budgets.TryTake(Provider, budget) ? 0 : 1;
            }
            clock.Advance(TimeSpan.FromMilliseconds(10));
        }
        return (refused, budgets.Bans);
    }

    [Test]
    public void AnHonestPeersChainRecords_AtThreeHundredLeasesASecond_AreNeverRefused_NorIsItBanned()
    {
        Assert.That(Send(PeerBudgets.ChainRecords), Is.EqualTo((0, 0L)));
    }

    [Test]
    public void TheSameTraffic_OnTheReceiptsBudget_WouldBanIt()
    {
        // Why the chain no longer shares the receipts' budget (100/s, burst 500): the same honest traffic is refused and
        // the peer banned within the minute, which is what stalled the lease benchmark at 8,000 tasks (every lease after
        // it "provider unreachable").
        var (refused, bans) = Send(PeerBudgets.Receipts);
        Assert.That(refused, Is.GreaterThan(50));
        Assert.That(bans, Is.GreaterThanOrEqualTo(1));
    }
}
