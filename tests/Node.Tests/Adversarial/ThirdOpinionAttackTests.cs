using System.Text;
using Potluck.Protocol.Runtime;
using Potluck.Node.Hosting;
using Potluck.Scheduler.Adversaries;
using Potluck.Scheduler.Requesting;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// A checker that earned its standing and then lies, against the sampled check of a requester with no sandbox for the
/// task: its disagreement alone convicts nobody. A third provider in good standing decides; with none left the dispute
/// stays unresolved (nobody convicted, nobody paid as verified). The requester ranks by price only, so the cheapest
/// fitting provider is chosen at each step: the honest stranger runs the task, the cheaper of those in good standing
/// checks it, the other gives the third opinion.
/// </summary>
[Category("Adversarial")]
public class ThirdOpinionAttackTests
{
    private static ComputeOptions NoReRunPriceRanking(ComputeOptions c) => c with
    {
        Sandbox = c.Sandbox with { MaxMemoryBytes = 16L << 20 },
        Client = c.Client with { Selector = c.Client.Selector with { Jitter = 0, LatencyWeight = 0, ReputationWeight = 0 } },
    };

    private static void GoodStanding(TrustCluster.Member requester, params TrustCluster.Member[] providers)
    {
        foreach (var p in providers)
        {
            for (var i = 0; i < 10; i++)
            {
                requester.Client.Reputation.RecordVerified(p.PeerId);
            }
        }
    }

    [Test]
    public void EstablishedCheckerTurnsLiar_TheThirdOpinionClearsTheHonestStranger_TheCheckerIsConvictedInstead() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 150);
        var requester = await cluster.AddAsync("requester", provide: false, configure: NoReRunPriceRanking);
        var worker = await cluster.AddAsync("worker", provide: true, price: 1);
        var turncoat = await cluster.AddAsync("turncoat", provide: true, price: 20, decorate: inner => new WrongOutputExecutor(inner));
        var referee = await cluster.AddAsync("referee", provide: true, price: 40);
        await requester.Client.WaitForProvidersAsync(3, ct);
        GoodStanding(requester, turncoat, referee);

        using var metrics = new Potluck.Tests.MetricRecorder(requester.Potluck.ComputeMetrics.Meter);
        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("turncoat", 50), ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);

        Assert.That(result.History.Select(h => h.Provider), Is.EquivalentTo(new[] { worker.PeerId, turncoat.PeerId, referee.PeerId }),
            "the stranger ran it, the cheaper established provider checked it, the other gave the third opinion");
        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("turncoat"u8.ToArray(), 50)));
        Assert.That(result.Provider, Is.EqualTo(worker.PeerId), "the honest stranger's result is the answer");
        Assert.That(result.Verified, Is.True, "confirmed by a provider in good standing");
        Assert.That(result.Unresolved, Is.Null);
        Assert.That(requester.Client.Reputation.IsRefused(worker.PeerId), Is.False, "the honest stranger is not convicted");
        Assert.That(TrustCluster.Spent(requester, worker), Is.GreaterThan(0), "and is paid");
        Assert.That(TrustCluster.Earned(worker, requester), Is.EqualTo(TrustCluster.Spent(requester, worker)), "the receipt reached it");
        Assert.That(requester.Client.Reputation.IsRefused(turncoat.PeerId), Is.True, "the lying checker is caught");
        Assert.That(requester.Client.Reputation.Get(turncoat.PeerId).ConsecutiveVerified, Is.Zero, "its standing is lost");
        Assert.That(TrustCluster.Spent(requester, turncoat), Is.Zero, "and it is not paid");
        Assert.That(TrustCluster.Spent(requester, referee), Is.GreaterThan(0), "the third opinion is paid");
        Assert.That(metrics.Sum("potluck.fraud.proofs", "outcome=published"), Is.EqualTo(1), "one proof, against the checker");
        Assert.That(metrics.Sum("potluck.disputes", "outcome=checker_wrong"), Is.EqualTo(1));
    });

    [Test]
    public void EstablishedCheckerTurnsLiar_NoThirdOpinionLeft_TheHonestStrangerIsPaid_NobodyConvicted_Unresolved() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 151);
        var requester = await cluster.AddAsync("requester", provide: false, configure: NoReRunPriceRanking);
        var worker = await cluster.AddAsync("worker", provide: true, price: 1);
        var turncoat = await cluster.AddAsync("turncoat", provide: true, price: 20, decorate: inner => new WrongOutputExecutor(inner));
        // Another stranger is about, but a stranger's opinion resolves nothing (a Sybil would side with its twin).
        var stranger = await cluster.AddAsync("stranger", provide: true, price: 5, decorate: inner => new WrongOutputExecutor(inner));
        await requester.Client.WaitForProvidersAsync(3, ct);
        GoodStanding(requester, turncoat);

        using var metrics = new Potluck.Tests.MetricRecorder(requester.Potluck.ComputeMetrics.Meter);
        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("no referee", 50), ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);

        Assert.That(result.History.Select(h => h.Provider), Is.EquivalentTo(new[] { worker.PeerId, turncoat.PeerId }),
            "no third lease to a stranger");
        Assert.That(result.Unresolved, Is.EqualTo(UnresolvedReason.NoThirdOpinion));
        Assert.That(result.Verified, Is.False);
        Assert.That(result.Provider, Is.EqualTo(worker.PeerId));
        Assert.That(requester.Client.Reputation.IsRefused(worker.PeerId), Is.False, "the honest stranger is not convicted on one word");
        Assert.That(requester.Client.Reputation.IsRefused(turncoat.PeerId), Is.False, "nor, unproven, the checker");
        Assert.That(TrustCluster.Spent(requester, worker), Is.GreaterThan(0), "the honest stranger is paid");
        Assert.That(TrustCluster.Earned(worker, requester), Is.EqualTo(TrustCluster.Spent(requester, worker)));
        Assert.That(requester.Client.Reputation.Get(worker.PeerId).ConsecutiveVerified
            + requester.Client.Reputation.Get(turncoat.PeerId).ConsecutiveVerified, Is.Zero, "nobody credited a verified result");
        Assert.That(TrustCluster.Spent(requester, stranger), Is.Zero);
        Assert.That(metrics.Sum("potluck.fraud.proofs", "outcome=published"), Is.Zero, "no proof against anyone");
        Assert.That(metrics.Sum("potluck.disputes", "outcome=no_third_opinion"), Is.EqualTo(1));
    });

    [Test]
    public void CheaterCheckedByAnHonestEstablishedChecker_TheThirdOpinionConfirms_TheCheaterIsStillConvicted() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 152);
        var requester = await cluster.AddAsync("requester", provide: false, configure: NoReRunPriceRanking);
        var cheater = await cluster.AddAsync("cheater", provide: true, price: 1, decorate: inner => new WrongOutputExecutor(inner));
        var checker = await cluster.AddAsync("checker", provide: true, price: 20);
        var referee = await cluster.AddAsync("referee", provide: true, price: 40);
        await requester.Client.WaitForProvidersAsync(3, ct);
        GoodStanding(requester, checker, referee);

        using var metrics = new Potluck.Tests.MetricRecorder(requester.Potluck.ComputeMetrics.Meter);
        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("cheater", 50), ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);

        Assert.That(result.History.Select(h => h.Provider), Is.EquivalentTo(new[] { cheater.PeerId, checker.PeerId, referee.PeerId }));
        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("cheater"u8.ToArray(), 50)));
        Assert.That(result.Provider, Is.EqualTo(checker.PeerId), "the checker's result, confirmed");
        Assert.That(result.Verified, Is.True, "two providers in good standing agree");
        Assert.That(requester.Client.Reputation.IsRefused(cheater.PeerId), Is.True, "caught");
        Assert.That(TrustCluster.Spent(requester, cheater), Is.Zero, "not paid");
        Assert.That(TrustCluster.Spent(requester, checker), Is.GreaterThan(0));
        Assert.That(TrustCluster.Spent(requester, referee), Is.GreaterThan(0));
        Assert.That(requester.Client.Reputation.IsRefused(checker.PeerId) || requester.Client.Reputation.IsRefused(referee.PeerId), Is.False);
        Assert.That(metrics.Sum("potluck.fraud.proofs", "outcome=published"), Is.EqualTo(1), "one proof, against the cheater");
        Assert.That(metrics.Sum("potluck.disputes", "outcome=accused_wrong"), Is.EqualTo(1));
    });

    [Test]
    public void EstablishedReplicaTurnsLiar_ItsSybilBreaksTheTie_TheHonestStrangerIsNotConvicted_NothingVerified() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 153);
        var requester = await cluster.AddAsync("requester", provide: false, configure: NoReRunPriceRanking);
        var turncoat = await cluster.AddAsync("turncoat", provide: true, price: 1, decorate: inner => new WrongOutputExecutor(inner));
        var honest = await cluster.AddAsync("honest", provide: true, price: 1);
        // The turncoat's Sybil, dearer, the only provider left to break the tie.
        var twin = await cluster.AddAsync("twin", provide: true, price: 2, decorate: inner => new WrongOutputExecutor(inner));
        await requester.Client.WaitForProvidersAsync(3, ct);
        GoodStanding(requester, turncoat);

        using var metrics = new Potluck.Tests.MetricRecorder(requester.Potluck.ComputeMetrics.Meter);
        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("replica turncoat", 50) with { Replicas = 2 }, ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);

        Assert.That(result.History.Select(h => h.Provider), Is.EquivalentTo(new[] { turncoat.PeerId, honest.PeerId, twin.PeerId }),
            "two replicas and the tie-breaker");
        Assert.That(result.Verified, Is.False, "an established liar and its Sybil verify nothing");
        Assert.That(requester.Client.Reputation.IsRefused(honest.PeerId), Is.False, "the honest stranger is not convicted on the turncoat's word");
        Assert.That(metrics.Sum("potluck.fraud.proofs", "outcome=published"), Is.Zero, "no proof against it");
        Assert.That(requester.Client.Reputation.Get(turncoat.PeerId).ConsecutiveVerified + requester.Client.Reputation.Get(twin.PeerId).ConsecutiveVerified,
            Is.Zero, "the pair earns no verified result from the vote");
    });
}
