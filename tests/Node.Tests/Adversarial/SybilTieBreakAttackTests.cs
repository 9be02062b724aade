using System.Text;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Adversaries;
using Potluck.Node.Hosting;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// A Sybil swarm that runs a replica and also offers the cheapest tie-breakers: the tie-break lease goes to a provider
/// in good standing here when one fits (a swarm can make identities, not a record of verified results with this
/// requester), and with none left, the strangers' majority is reported unverified and convicts nobody.
/// </summary>
[Category("Adversarial")]
public class SybilTieBreakAttackTests
{
    /// <summary>
    /// A requester that cannot re-run the 32 MiB tasks, ranking by price and reputation only (no latency, no random term),
    /// so which providers run the replicas is fixed: the honest one in good standing, then a Sybil.
    /// </summary>
    private static ComputeOptions NoReRunPlainRanking(ComputeOptions c) => c with
    {
        Sandbox = c.Sandbox with { MaxMemoryBytes = 16L << 20 },
        Client = c.Client with { Selector = c.Client.Selector with { Jitter = 0, LatencyWeight = 0 } },
    };

    [Test]
    public void SwarmOffersTheCheapestTieBreaker_TheTieBreakGoesToAProviderInGoodStanding_TheSwarmIsUnpaidAndConvicted() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 130);
        var requester = await cluster.AddAsync("requester", provide: false, configure: NoReRunPlainRanking);
        var honest = await cluster.AddAsync("honest", provide: true, price: 1);
        // Two identities of one adversary, both cheapest, both flipping the same byte: they agree with each other.
        var sybil1 = await cluster.AddAsync("sybil1", provide: true, price: 1, decorate: inner => new WrongOutputExecutor(inner));
        var sybil2 = await cluster.AddAsync("sybil2", provide: true, price: 1, decorate: inner => new WrongOutputExecutor(inner));
        // Dearer, but with a record here: ten results verified in a row, as has the honest one.
        var referee = await cluster.AddAsync("referee", provide: true, price: 40);
        await requester.Client.WaitForProvidersAsync(4, ct);
        for (var i = 0; i < 10; i++)
        {
            requester.Client.Reputation.RecordVerified(honest.PeerId);
            requester.Client.Reputation.RecordVerified(referee.PeerId);
        }

        using var metrics = new Potluck.Tests.MetricRecorder(requester.Potluck.ComputeMetrics.Meter);
        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("swarm", 50) with { Replicas = 2 }, ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);

        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("swarm"u8.ToArray(), 50)), "the honest result");
        Assert.That(result.Verified, Is.True, "a majority with providers in good standing");
        var ran = result.History.Select(h => h.Provider).ToList();
        Assert.That(result.Attempts, Is.EqualTo(3), "two replicas and one tie-break lease");
        Assert.That(ran, Does.Contain(referee.PeerId), "the tie-break went to the provider in good standing");
        Assert.That(ran.Count(p => p == sybil1.PeerId || p == sybil2.PeerId), Is.EqualTo(1), "not to the cheaper stranger the swarm offered");
        var replica = ran.Contains(sybil1.PeerId) ? sybil1 : sybil2;
        Assert.That(metrics.Sum("potluck.tiebreaks", "outcome=majority"), Is.EqualTo(1));
        Assert.That(TrustCluster.Spent(requester, sybil1) + TrustCluster.Spent(requester, sybil2), Is.Zero, "the swarm is not paid");
        Assert.That(TrustCluster.Spent(requester, honest), Is.GreaterThan(0), "the honest replica is paid");
        Assert.That(TrustCluster.Spent(requester, referee), Is.GreaterThan(0));
        Assert.That(requester.Client.Reputation.IsRefused(replica.PeerId), Is.True, "convicted: outvoted by providers in good standing");
        Assert.That(requester.Client.Reputation.IsRefused(honest.PeerId), Is.False);
    });

    [Test]
    public void SwarmSuppliesTheOnlyTieBreaker_ItsMajorityIsReportedUnverified_AndTheHonestReplicaIsNotConvicted() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 131);
        var requester = await cluster.AddAsync("requester", provide: false, configure: NoReRunPlainRanking);
        var honest = await cluster.AddAsync("honest", provide: true, price: 1);
        var sybil1 = await cluster.AddAsync("sybil1", provide: true, price: 1, decorate: inner => new WrongOutputExecutor(inner));
        var sybil2 = await cluster.AddAsync("sybil2", provide: true, price: 1, decorate: inner => new WrongOutputExecutor(inner));
        await requester.Client.WaitForProvidersAsync(3, ct);
        for (var i = 0; i < 10; i++)
        {
            requester.Client.Reputation.RecordVerified(honest.PeerId);
        }

        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("swarm only", 50) with { Replicas = 2 }, ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);

        // Nobody in good standing outside the set: a stranger breaks the tie, and a vote of strangers proves nothing.
        Assert.That(result.Attempts, Is.EqualTo(3), "two replicas and one tie-break lease");
        Assert.That(result.Verified, Is.False, "never a Sybil majority accepted as verified");
        Assert.That(requester.Client.Reputation.IsRefused(honest.PeerId), Is.False, "outvoted by strangers is not convicted");
        Assert.That(requester.Client.Reputation.Get(honest.PeerId).ConsecutiveVerified, Is.Zero, "its streak starts over (outvoted), as for any unconfirmed disagreement");
        Assert.That(requester.Client.Reputation.Get(sybil1.PeerId).ConsecutiveVerified + requester.Client.Reputation.Get(sybil2.PeerId).ConsecutiveVerified,
            Is.Zero, "nor does the swarm's vote");
    });
}
