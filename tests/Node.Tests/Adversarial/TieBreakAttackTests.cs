using System.Text;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Adversaries;
using Potluck.Node.Hosting;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// Replicas that disagree are resolved, not both paid: by the requester's own re-run when it can, otherwise by a tie-break
/// lease to one more provider outside the set; the majority is paid and, when the tie-breaker is in good standing here and
/// sides with it, the outvoted one is convicted with a fraud proof every node checks by re-running.
/// </summary>
[Category("Adversarial")]
public class TieBreakAttackTests
{
    /// <summary>A requester whose sandbox is too small to re-run the 32 MiB tasks: it must ask others.</summary>
    private static ComputeOptions NoReRun(ComputeOptions c) => c with { Sandbox = c.Sandbox with { MaxMemoryBytes = 16L << 20 } };

    /// <summary>The same, ranking by price only: the replicas go to the two cheapest, the tie-break to the provider in good standing.</summary>
    private static ComputeOptions NoReRunPriceRanking(ComputeOptions c) => NoReRun(c) with
    {
        Client = c.Client with { Selector = c.Client.Selector with { Jitter = 0, LatencyWeight = 0, ReputationWeight = 0 } },
    };

    [Test]
    public void OneLiarVsOneHonest_NoReRunHere_ATieBreakLeasePaysTheMajority_AndConvictsTheLiarForEveryone() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 120);
        var requester = await cluster.AddAsync("requester", provide: false, configure: NoReRunPriceRanking);
        var witness = await cluster.AddAsync("witness", provide: false);
        var liar = await cluster.AddAsync("liar", provide: true, price: 5, decorate: inner => new WrongOutputExecutor(inner));
        var honest = await cluster.AddAsync("honest", provide: true, price: 6);
        var referee = await cluster.AddAsync("referee", provide: true, price: 7);
        await requester.Client.WaitForProvidersAsync(3, ct);
        await witness.Client.WaitForProvidersAsync(3, ct);
        // The referee has a record here: ten results verified in a row (past a stranger's first ten).
        for (var i = 0; i < 10; i++)
        {
            requester.Client.Reputation.RecordVerified(referee.PeerId);
        }

        using var metrics = new Potluck.Tests.MetricRecorder(requester.Potluck.ComputeMetrics.Meter);
        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("tie", 50) with { Replicas = 2 }, ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        await cluster.Hub.WhenIdleAsync(ct);

        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("tie"u8.ToArray(), 50)));
        Assert.That(result.Verified, Is.True, "a majority the tie-breaker in good standing sided with");
        Assert.That(result.Attempts, Is.EqualTo(3), "two replicas and one tie-break lease");
        Assert.That(metrics.Sum("potluck.tiebreaks", "outcome=majority"), Is.EqualTo(1));
        Assert.That(TrustCluster.Spent(requester, liar), Is.Zero, "the outvoted liar is not paid");
        Assert.That(TrustCluster.Spent(requester, honest), Is.GreaterThan(0), "the majority is paid");
        Assert.That(TrustCluster.Spent(requester, referee), Is.GreaterThan(0));
        Assert.That(requester.Client.Reputation.IsRefused(liar.PeerId), Is.True, "convicted");
        Assert.That(requester.Client.Reputation.IsRefused(honest.PeerId) || requester.Client.Reputation.IsRefused(referee.PeerId), Is.False);
        Assert.That(witness.Node.Reputation.IsRefused(liar.PeerId), Is.True, "the fraud proof checked out when the witness re-ran it");
        Assert.That(witness.Node.Reputation.IsRefused(requester.PeerId), Is.False, "and its publisher keeps its standing");
    });

    [Test]
    public void OneLiarVsOneHonest_AmongStrangers_TheMajorityIsPaid_TheLiarIsNot_AndNobodyIsConvictedOnAVote() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 121);
        var requester = await cluster.AddAsync("requester", provide: false, configure: NoReRun);
        var liar = await cluster.AddAsync("liar", provide: true, price: 5, decorate: inner => new WrongOutputExecutor(inner));
        var honest = await cluster.AddAsync("honest", provide: true, price: 6);
        var third = await cluster.AddAsync("third", provide: true, price: 7);
        await requester.Client.WaitForProvidersAsync(3, ct);

        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("vote", 50) with { Replicas = 2 }, ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);

        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("vote"u8.ToArray(), 50)));
        Assert.That(result.Verified, Is.False, "a vote among strangers is no proof");
        Assert.That(TrustCluster.Spent(requester, liar), Is.Zero, "outvoted: not paid");
        Assert.That(TrustCluster.Spent(requester, honest), Is.GreaterThan(0));
        Assert.That(TrustCluster.Spent(requester, third), Is.GreaterThan(0));
        Assert.That(requester.Client.Reputation.IsRefused(liar.PeerId), Is.False, "not convicted without a re-run or a provider in good standing");
        Assert.That(requester.Client.Reputation.Get(liar.PeerId).ConsecutiveVerified, Is.Zero);
    });

    [Test]
    public void TwoColludingLiarsVsOneHonest_TheRequestersReRunDecides_TheLiarsAreRefusedAndUnpaid() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 122);
        var requester = await cluster.AddAsync("requester", provide: false);
        // Two identities of one adversary: each flips the same byte, so they agree, and outvote the honest one 2 to 1.
        var liar1 = await cluster.AddAsync("liar1", provide: true, price: 5, decorate: inner => new WrongOutputExecutor(inner));
        var liar2 = await cluster.AddAsync("liar2", provide: true, price: 5, decorate: inner => new WrongOutputExecutor(inner));
        var honest = await cluster.AddAsync("honest", provide: true, price: 6);
        await requester.Client.WaitForProvidersAsync(3, ct);

        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("collude", 50) with { Replicas = 3 }, ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);

        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("collude"u8.ToArray(), 50)));
        Assert.That(result.Verified, Is.True);
        Assert.That(TrustCluster.Spent(requester, honest), Is.GreaterThan(0), "the honest minority is paid");
        Assert.That(requester.Client.Reputation.IsRefused(honest.PeerId), Is.False);
        foreach (var liar in new[] { liar1, liar2 })
        {
            Assert.That(TrustCluster.Spent(requester, liar), Is.Zero, $"{liar.Name} unpaid");
            Assert.That(requester.Client.Reputation.IsRefused(liar.PeerId), Is.True, $"{liar.Name} refused");
        }
    });

    [Test]
    public void TwoColludingLiarsVsOneHonest_NoReRunHere_NoProviderLeft_TheHonestOneIsNeverConvicted() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 123);
        var requester = await cluster.AddAsync("requester", provide: false, configure: NoReRun);
        var liar1 = await cluster.AddAsync("liar1", provide: true, price: 5, decorate: inner => new WrongOutputExecutor(inner));
        var liar2 = await cluster.AddAsync("liar2", provide: true, price: 5, decorate: inner => new WrongOutputExecutor(inner));
        var honest = await cluster.AddAsync("honest", provide: true, price: 6);
        await requester.Client.WaitForProvidersAsync(3, ct);

        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("sybil vote", 50) with { Replicas = 3 }, ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);

        // Nobody outside the set to ask and no re-run here: the strangers' majority is paid but reported unverified.
        Assert.That(result.Verified, Is.False, "the caller is told the result is unverified");
        Assert.That(requester.Client.Reputation.IsRefused(honest.PeerId), Is.False, "outvoted is not convicted");
        Assert.That(TrustCluster.Spent(requester, honest), Is.Zero, "the minority of an unchecked vote is not paid");
        Assert.That(requester.Client.Reputation.IsRefused(liar1.PeerId) || requester.Client.Reputation.IsRefused(liar2.PeerId), Is.False);
    });
}
