using Potluck.Node.Hosting;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Requesting;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>Credit nobody can mint: no grant, and receipts count only as far as the payer supplied work or the provider chose to extend.</summary>
[Category("Adversarial")]
public class CreditAttackTests
{
    private const long Price = 100_000;

    /// <summary>Submits <paramref name="max"/> tasks at most, until the network refuses; returns what was served and what each cost.</summary>
    private static async Task<(int Served, long MaxCost, string? Refusal)> SubmitUntilRefusedAsync(TrustCluster.Member requester, string tag, int max)
    {
        var served = 0;
        long maxCost = 0;
        for (var i = 0; i < max; i++)
        {
            try
            {
                var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask($"{tag}{i}", 20, maxPrice: Price) with { VerifyRate = 0.05, Fuel = 20_000_000 }, CancellationToken.None);
                Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
                served++;
                maxCost = Math.Max(maxCost, result.Cost);
            }
            catch (SubmissionException e)
            {
                return (served, maxCost, string.Join("; ", e.Attempts.Select(h => h.Detail)));
            }
        }
        return (served, maxCost, null);
    }

    [Test]
    public void FreshIdentities_RunOnTheProvidersCredit_AndNoFurther_WhileAContributorGetsWhatItSupplied() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 93);
        const long limit = 200_000; // 0.2 credits of net debt per requester (about 9 of these tasks)
        Func<ComputeOptions, ComputeOptions> withLimit =
            c => c with { Provider = c.Provider with { CreditLimitPerRequester = limit }, Credits = c.Credits with { Holdback = TimeSpan.FromMinutes(1) } };
        // Nobody is granted anything: the default.
        var provider = await cluster.AddAsync("provider", provide: true, price: Price, grant: 0, configure: withLimit);
        var stranger = await cluster.AddAsync("stranger", provide: false, grant: 0);
        var contributor = await cluster.AddAsync("contributor", provide: true, price: Price, grant: 0, configure: withLimit);
        await stranger.Client.WaitForProvidersAsync(2, ct);
        await provider.Client.WaitForProvidersAsync(1, ct);

        // The contributor first does work for the provider (the provider's own submissions go to it).
        var (supplied, _, why) = await SubmitUntilRefusedAsync(provider, "p", 3);
        await provider.Client.WhenReceiptsDeliveredAsync(ct);
        Assert.That(supplied, Is.EqualTo(3), why);
        var contribution = TrustCluster.Earned(contributor, provider);
        Assert.That(contribution, Is.GreaterThan(0));
        await Task.Delay(provider.Ledger.Holdback + TimeSpan.FromSeconds(1), cluster.Time, ct); // it counts once no longer held back

        // A fresh identity with nothing: served on credit, then refused; its receipts are IOUs, not money.
        stranger.Client.Reputation.Refuse(contributor.PeerId, "test: only the provider under test"); // one provider only
        var (strangerServed, cost, refusal) = await SubmitUntilRefusedAsync(stranger, "s", 40);
        await stranger.Client.WhenReceiptsDeliveredAsync(ct);
        Assert.That(strangerServed, Is.GreaterThan(0), "a newcomer gets going on the provider's credit, with no grant");
        Assert.That(refusal, Is.Not.Null.And.Contain("credit limit"), "then it is refused, although it paid every receipt");
        var taken = TrustCluster.Earned(provider, stranger);
        Assert.That(taken, Is.LessThanOrEqualTo(limit + cost), "what a stranger takes is bounded by the provider's credit");
        Assert.That(stranger.Ledger.Balance(), Is.EqualTo(-taken), "the stranger owes it: a debt, not minted credit");

        // The contributor is served for what it supplied plus the same credit.
        var (contributorServed, cost2, _) = await SubmitUntilRefusedAsync(contributor, "c", 60);
        await contributor.Client.WhenReceiptsDeliveredAsync(ct);
        var consumed = TrustCluster.Earned(provider, contributor);
        Assert.That(consumed, Is.GreaterThan(taken), "supplying work earns service beyond a stranger's");
        Assert.That(consumed, Is.LessThanOrEqualTo(TrustCluster.Spent(provider, contributor) + limit + cost2));
        Assert.That(contributorServed, Is.GreaterThan(strangerServed));

        // Conservation: every balance sums to zero, nothing was minted.
        Assert.That(cluster.Members.Sum(m => m.Ledger.Balance()), Is.Zero);
    });
}
