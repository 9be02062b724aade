using System.Text;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Adversaries;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Leasing;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// Cheating after earning does not pay: what a provider earned from a requester is held back
/// (<see cref="CreditsOptions.Holdback"/>) and forfeited when it is caught, by the requester that re-ran it and by every
/// other node that paid it and upholds the fraud proof.
/// </summary>
[Category("Adversarial")]
public class HoldbackAttackTests
{
    private static readonly TimeSpan Holdback = TimeSpan.FromMinutes(10);

    [Test]
    public void ProviderCheatingAfterEarning_LosesWhatItHeld_FromEveryNodeThatCaughtIt_AndTheRequestersBooksStayRight() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 108);
        Potluck.Node.Hosting.ComputeOptions Hold(Potluck.Node.Hosting.ComputeOptions c) => c with { Credits = c.Credits with { Holdback = Holdback } };
        var requester = await cluster.AddAsync("requester", provide: false, configure: Hold);
        var witness = await cluster.AddAsync("witness", provide: false, configure: Hold);
        WrongOutputExecutor? cheat = null;
        var runs = 0;
        // Cheapest, so chosen first: honest for its first four tasks (it earns), then it invents outputs.
        var cheater = await cluster.AddAsync("cheater", provide: true, price: 5,
            decorate: inner => cheat = new WrongOutputExecutor(inner, _ => Interlocked.Increment(ref runs) > 4));
        var honest = await cluster.AddAsync("honest", provide: true, price: 10);
        await requester.Client.WaitForProvidersAsync(2, ct);
        await witness.Client.WaitForProvidersAsync(2, ct);

        // The witness and the requester each pay the cheater for two honest results (a stranger's results are all re-run).
        for (var i = 0; i < 2; i++)
        {
            Assert.That((await witness.Node.SubmitAsync(OutcomeAttackTests.HashTask($"w{i}", 50), ct)).Provider, Is.EqualTo(cheater.PeerId));
        }
        for (var i = 0; i < 2; i++)
        {
            Assert.That((await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask($"r{i}", 50), ct)).Provider, Is.EqualTo(cheater.PeerId));
        }
        await witness.Client.WhenReceiptsDeliveredAsync(ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        var paidByRequester = TrustCluster.Spent(requester, cheater);
        var paidByWitness = TrustCluster.Spent(witness, cheater);
        Assert.That(paidByRequester, Is.GreaterThan(0));
        Assert.That(paidByWitness, Is.GreaterThan(0));
        Assert.That(requester.Ledger.Held(cheater.PeerId), Is.EqualTo(paidByRequester), "earned, and held");

        using var metrics = new Potluck.Tests.MetricRecorder(requester.Potluck.ComputeMetrics.Meter);
        // Its fifth task it cheats on: the requester's re-run contradicts it; the task is done by the honest provider.
        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("caught", 50), ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        await cluster.Hub.WhenIdleAsync(ct);

        Assert.That(cheat!.Corrupted, Is.EqualTo(1));
        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("caught"u8.ToArray(), 50)));
        Assert.That(result.Provider, Is.EqualTo(honest.PeerId));
        Assert.That(TrustCluster.Spent(requester, cheater), Is.EqualTo(paidByRequester), "the invented output is not paid");
        Assert.That(requester.Ledger.Forfeited(cheater.PeerId), Is.EqualTo(paidByRequester), "all it held from the requester is forfeited");
        Assert.That(requester.Ledger.Held(cheater.PeerId), Is.Zero);
        Assert.That(metrics.Sum("potluck.credits.forfeited"), Is.EqualTo(paidByRequester));
        Assert.That(witness.Node.Reputation.IsRefused(cheater.PeerId), Is.True, "the witness upheld the fraud proof");
        Assert.That(witness.Ledger.Forfeited(cheater.PeerId), Is.EqualTo(paidByWitness), "and forfeited what the cheater held from it");

        // The requester's books: the grant less exactly what it paid; the honest provider's earnings held, not forfeited.
        var paidHonest = TrustCluster.Spent(requester, honest);
        Assert.That(paidHonest, Is.GreaterThan(0));
        Assert.That(requester.Ledger.Balance(), Is.EqualTo(ComputeCluster.Grant - paidByRequester - paidHonest));
        Assert.That(requester.Ledger.Held(honest.PeerId), Is.EqualTo(paidHonest));
        Assert.That(requester.Ledger.Forfeited(honest.PeerId), Is.Zero);

        // Past the holdback, the honest provider's earnings count as its standing; the cheater's never do, after a restart too.
        await Task.Delay(Holdback + TimeSpan.FromMinutes(1), cluster.Time, ct);
        Assert.That(requester.Ledger.Requester(honest.PeerId).Supplied, Is.EqualTo(paidHonest));
        Assert.That(requester.Ledger.Requester(cheater.PeerId).Supplied, Is.Zero);
        await cluster.StopAsync(requester);
        var restarted = await cluster.RestartAsync(requester);
        Assert.That(restarted.Ledger.Forfeited(cheater.PeerId), Is.EqualTo(paidByRequester));
        Assert.That(restarted.Ledger.Requester(cheater.PeerId).Supplied, Is.Zero);
        Assert.That(restarted.Ledger.Balance(), Is.EqualTo(ComputeCluster.Grant - paidByRequester - paidHonest));
    });
}
