using System.Text;
using Potluck.Protocol.Runtime;
using Potluck.Node.Hosting;
using Potluck.Scheduler.Adversaries;
using Potluck.Scheduler.Requesting;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// A Sybil pair against the sampled check of a requester with no sandbox for the task: one identity runs the task, its
/// cheaper twin offers itself as the second provider and returns the same wrong output. The checker goes to a provider in
/// good standing here when one fits, which catches the lie; a stranger's agreement never counts as verified.
/// </summary>
[Category("Adversarial")]
public class SybilSecondCheckAttackTests
{
    /// <summary>
    /// A requester that cannot re-run the 32 MiB tasks, ranking by price only (no latency, reputation or random term): the
    /// cheapest Sybil runs the task, and as usual its twin would check it.
    /// </summary>
    private static ComputeOptions NoReRunPriceRanking(ComputeOptions c) => c with
    {
        Sandbox = c.Sandbox with { MaxMemoryBytes = 16L << 20 },
        Client = c.Client with { Selector = c.Client.Selector with { Jitter = 0, LatencyWeight = 0, ReputationWeight = 0 } },
    };

    [Test]
    public void SybilTwinOffersTheCheapestCheck_TheCheckGoesToAProviderInGoodStanding_TheLiarIsCaughtAndUnpaid() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 140);
        var requester = await cluster.AddAsync("requester", provide: false, configure: NoReRunPriceRanking);
        // Two identities of one adversary, both cheapest, both flipping the same byte: they agree with each other.
        var sybil = await cluster.AddAsync("sybil", provide: true, price: 1, decorate: inner => new WrongOutputExecutor(inner));
        var twin = await cluster.AddAsync("twin", provide: true, price: 1, decorate: inner => new WrongOutputExecutor(inner));
        // Dearer, with a record here: ten results verified in a row. The second gives the third opinion a disagreement needs.
        var referee = await cluster.AddAsync("referee", provide: true, price: 40);
        var second = await cluster.AddAsync("second referee", provide: true, price: 45);
        await requester.Client.WaitForProvidersAsync(4, ct);
        for (var i = 0; i < 10; i++)
        {
            requester.Client.Reputation.RecordVerified(referee.PeerId);
            requester.Client.Reputation.RecordVerified(second.PeerId);
        }

        using var metrics = new Potluck.Tests.MetricRecorder(requester.Potluck.ComputeMetrics.Meter);
        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("pair", 50), ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);

        var honestOutput = ComputeCluster.HashChain("pair"u8.ToArray(), 50);
        var ran = result.History.Select(h => h.Provider).ToList();
        // In the order settled: the check first, the third opinion, then the sampled lease they judged.
        Assert.That(ran, Has.Count.EqualTo(3), $"the sampled lease, its check and the third opinion: {RequesterJob.Summarise(result.History)}; {result.Unresolved}");
        Assert.That(ran[2], Is.AnyOf(sybil.PeerId, twin.PeerId), "a Sybil, the cheapest, ran the task");
        Assert.That(ran[1], Is.EqualTo(second.PeerId), "the third opinion, in good standing too");
        var liar = ran[2] == sybil.PeerId ? sybil : twin;
        Assert.That(ran[0], Is.EqualTo(referee.PeerId), "the check went to the provider in good standing, not to the cheaper twin");
        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(honestOutput), "the wrong output is not the answer");
        Assert.That(result.Provider, Is.EqualTo(referee.PeerId));
        Assert.That(result.Verified, Is.True, "two providers in good standing agree");
        Assert.That(requester.Client.Reputation.IsRefused(liar.PeerId), Is.True, "caught");
        Assert.That(TrustCluster.Spent(requester, sybil) + TrustCluster.Spent(requester, twin), Is.Zero, "the pair is not paid");
        Assert.That(TrustCluster.Spent(requester, referee), Is.GreaterThan(0), "the checker is paid");
        Assert.That(requester.Client.Reputation.IsRefused(referee.PeerId), Is.False);
        Assert.That(metrics.Sum("potluck.secondchecks", "checker=good_standing"), Is.EqualTo(1));
    });

    [Test]
    public void OnlyTheSybilTwinCanCheck_ItsAgreementIsReportedUnverified_AndCreditsNoVerifiedResult() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 141);
        var requester = await cluster.AddAsync("requester", provide: false, configure: NoReRunPriceRanking);
        var sybil = await cluster.AddAsync("sybil", provide: true, price: 1, decorate: inner => new WrongOutputExecutor(inner));
        var twin = await cluster.AddAsync("twin", provide: true, price: 1, decorate: inner => new WrongOutputExecutor(inner));
        await requester.Client.WaitForProvidersAsync(2, ct);

        using var metrics = new Potluck.Tests.MetricRecorder(requester.Potluck.ComputeMetrics.Meter);
        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("pair only", 50), ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);

        // Nobody in good standing: the twin checks, and a stranger's agreement proves nothing.
        Assert.That(result.History.Select(h => h.Provider), Is.EquivalentTo(new[] { sybil.PeerId, twin.PeerId }), "the sampled lease and its check");
        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.Not.EqualTo(ComputeCluster.HashChain("pair only"u8.ToArray(), 50)), "the pair's wrong output");
        Assert.That(result.Verified, Is.False, "never accepted as verified on a stranger's word");
        Assert.That(requester.Client.Reputation.Get(sybil.PeerId).ConsecutiveVerified + requester.Client.Reputation.Get(twin.PeerId).ConsecutiveVerified,
            Is.Zero, "neither identity gains a verified result toward good standing");
        Assert.That(metrics.Sum("potluck.secondchecks", "checker=stranger"), Is.EqualTo(1));
    });
}
