using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>A provider checks the chain of a requester it does not know before serving it beyond a stranger's terms.</summary>
[Category("Adversarial")]
public class ChainHistoryTests
{
    private static async Task PayAsync(TrustCluster.Member requester, string seed, CancellationToken ct)
    {
        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask(seed, 100), ct);
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        await requester.Node.Chain!.WhenIdleAsync(ct);
    }

    [Test]
    public void RequesterPaidByAContributorInGoodStanding_ProvesItWithItsChain_AStrangerWithNoChainDoesNot() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 140);
        // Payments count in standing only once held back (compute:credits:holdback); a minute here, waited out below.
        var provider = await cluster.AddAsync("provider", provide: false,
            configure: c => c with { Credits = c.Credits with { Holdback = TimeSpan.FromMinutes(1) } });
        var contributor = await cluster.AddAsync("contributor", provide: true);
        await provider.Client.WaitForProvidersAsync(1, ct);
        await PayAsync(provider, "provider pays the contributor", ct); // the contributor is in good standing with the provider
        await Task.Delay(provider.Ledger.Holdback + TimeSpan.FromSeconds(1), cluster.Time, ct); // once the payment is no longer held
        Assert.That(provider.Ledger.Requester(contributor.PeerId).Supplied, Is.GreaterThan(0));
        var worker = await cluster.AddAsync("worker", provide: true);
        await contributor.Client.WaitForProvidersAsync(1, ct); // the worker (a node never leases from itself)
        await PayAsync(contributor, "contributor pays the worker", ct);
        var stranger = await cluster.AddAsync("stranger", provide: false);

        var chain = provider.Node.Chain!;
        Assert.That(provider.Ledger.Requester(worker.PeerId).Supplied, Is.Zero, "no first-hand standing: a stranger here");
        var earned = await chain.CheckHistoryAsync(worker.PeerId, ct);
        Assert.That(earned, Is.EqualTo(TrustCluster.Earned(worker, contributor)).And.GreaterThan(0), "its earnings from the contributor, verified");
        Assert.That(chain.HasVerifiedStanding(worker.PeerId), Is.True, "the verdict is kept: served beyond a stranger's terms");

        // Connected, as a requester asking for a lease is.
        await stranger.Potluck.Host.ConnectAsync(provider.Potluck.Host.ListenAddresses[0].WithPeer(provider.PeerId), ct);
        Assert.That(await chain.CheckHistoryAsync(stranger.PeerId, ct), Is.Zero);
        Assert.That(chain.HasVerifiedStanding(stranger.PeerId), Is.False, "no chain, no verified standing: a stranger's terms");
        Assert.That((chain.HistoriesVerified, chain.HistoriesRefused), Is.EqualTo((1L, 1L)));
    });
}
