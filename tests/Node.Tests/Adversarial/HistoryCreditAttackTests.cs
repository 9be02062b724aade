using Potluck.Node.Hosting;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Requesting;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// Credit from a verified history (issue 8, deliverable 5): a provider lends a requester it never met beyond a stranger's
/// allowance only on contribution its own chain shows, paid by payers in good standing with the provider; Sybils paying
/// each other, and requesters that broke their audit commitment, get nothing extra.
/// </summary>
[Category("Adversarial")]
public class HistoryCreditAttackTests
{
    private const long Price = 100_000;
    private const long Limit = 200_000; // a stranger's allowance here: about 9 of these tasks

    private static ComputeOptions Configure(ComputeOptions c) => c with
    {
        Provider = c.Provider with { CreditLimitPerRequester = Limit },
        Credits = c.Credits with { Holdback = TimeSpan.FromMinutes(1) },
        // The whole verified contribution is lent (the default is a quarter), so that a few tasks show it; verdicts kept an
        // hour, so the one asserted is the one the provider acted on.
        Accounting = c.Accounting with { History = c.Accounting.History with { CreditShare = 1, CacheFor = TimeSpan.FromHours(1) } },
    };

    private static Task<TrustCluster.Member> AddAsync(TrustCluster cluster, string name, bool provide) =>
        cluster.AddAsync(name, provide, price: Price, grant: 0, configure: Configure);

    /// <summary>Submits up to <paramref name="max"/> tasks until refused: how many were served, the most one cost, and the refusal.</summary>
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
                await requester.Client.WhenReceiptsDeliveredAsync(CancellationToken.None);
                return (served, maxCost, e.Attempts.Count == 0 ? e.Message : string.Join("; ", e.Attempts.Select(h => h.Detail)));
            }
        }
        await requester.Client.WhenReceiptsDeliveredAsync(CancellationToken.None);
        return (served, maxCost, null);
    }

    /// <summary><paramref name="payer"/> pays <paramref name="payee"/> for <paramref name="tasks"/> tasks (it leases from no one else).</summary>
    private static async Task PayAsync(TrustCluster cluster, TrustCluster.Member payer, TrustCluster.Member payee, int tasks, string tag)
    {
        foreach (var other in cluster.Members.Where(m => m != payer && m != payee))
        {
            payer.Client.Reputation.Refuse(other.PeerId, "test: pays only " + payee.Name);
        }
        var (served, _, why) = await SubmitUntilRefusedAsync(payer, tag, tasks);
        Assert.That(served, Is.EqualTo(tasks), why);
        await payer.Node.Chain!.WhenIdleAsync(CancellationToken.None);
        await payee.Node.Chain!.WhenIdleAsync(CancellationToken.None);
        Assert.That(TrustCluster.Earned(payee, payer), Is.GreaterThan(0));
    }

    /// <summary>Leases only from <paramref name="provider"/> from now on.</summary>
    private static void OnlyFrom(TrustCluster cluster, TrustCluster.Member requester, TrustCluster.Member provider)
    {
        foreach (var other in cluster.Members.Where(m => m != requester && m != provider))
        {
            requester.Client.Reputation.Refuse(other.PeerId, "test: only the provider under test");
        }
    }

    [Test]
    public void VerifiedContributor_GetsMoreThanAStranger_RefusedBeyondIt_ASurplusBacksOnce_AViolatorGetsNothingExtra() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 181);
        var provider = await AddAsync(cluster, "provider", provide: true);
        var contributor = await AddAsync(cluster, "contributor", provide: true);
        await provider.Client.WaitForProvidersAsync(1, ct);

        // The contributor supplies the provider: in good standing there, with a surplus.
        await PayAsync(cluster, provider, contributor, 6, "p");
        await Task.Delay(provider.Ledger.Holdback + TimeSpan.FromSeconds(1), cluster.Time, ct); // counts once no longer held back
        var surplus = -provider.Ledger.Requester(contributor.PeerId).Debt;
        Assert.That(surplus, Is.GreaterThan(0));

        // Two workers the provider never met earn from the contributor.
        var worker = await AddAsync(cluster, "worker", provide: true);
        await contributor.Client.WaitForProvidersAsync(2, ct);
        await PayAsync(cluster, contributor, worker, 6, "w");
        var violator = await AddAsync(cluster, "violator", provide: true);
        await contributor.Client.WaitForProvidersAsync(3, ct);
        await PayAsync(cluster, contributor, violator, 6, "v");
        var twin = await AddAsync(cluster, "twin", provide: true); // a second identity the contributor pays as much
        await contributor.Client.WaitForProvidersAsync(4, ct);
        await PayAsync(cluster, contributor, twin, 6, "t");
        var stranger = await AddAsync(cluster, "stranger", provide: false);
        var earned = TrustCluster.Earned(worker, contributor);

        // A stranger: served on the stranger's allowance, then refused.
        OnlyFrom(cluster, stranger, provider);
        await stranger.Client.WaitForProvidersAsync(1, ct);
        var (strangerServed, cost, strangerRefusal) = await SubmitUntilRefusedAsync(stranger, "s", 40);
        Assert.That(strangerRefusal, Is.Not.Null.And.Contain("credit limit"));
        Assert.That(TrustCluster.Earned(provider, stranger), Is.LessThanOrEqualTo(Limit + cost));

        // The worker: its chain shows what the contributor (in good standing with the provider) paid it, up to the
        // contributor's surplus there; the provider lends that much more, and no more.
        OnlyFrom(cluster, worker, provider);
        var (workerServed, workerCost, workerRefusal) = await SubmitUntilRefusedAsync(worker, "x", 60);
        var extra = HistoryCredit.Extra(Math.Min(earned, surplus), 1, new ChainHistoryOptions().MaxCredit);
        Assert.That(provider.Node.Chain!.VerifiedCredit(worker.PeerId), Is.EqualTo(extra), "the verdict, cached");
        var taken = TrustCluster.Earned(provider, worker);
        Assert.That(workerRefusal, Is.Not.Null.And.Contain($"over the credit limit of {Limit + extra}"), "refused beyond the raised limit");
        Assert.That(taken, Is.GreaterThan(Limit + cost), "more than a stranger is ever lent");
        Assert.That(taken, Is.LessThanOrEqualTo(Limit + extra + Math.Max(cost, workerCost)), "the stranger's allowance plus the verified contribution");
        Assert.That(workerServed, Is.GreaterThan(strangerServed));
        Assert.That(provider.Provider.ServedOnHistoryCredit, Is.GreaterThan(0));
        TestContext.Out.WriteLine($"stranger: {strangerServed} tasks, {TrustCluster.Earned(provider, stranger)} µcredits; worker (earned {earned}, contributor's surplus {surplus}, extra {extra}): {workerServed} tasks, {taken} µcredits");

        // The twin's history shows as much from the contributor, but the contributor's surplus here already backs the worker,
        // which still owes on it: only what is left of it counts (one surplus is lent against once).
        Assert.That(await provider.Node.Chain.CheckHistoryAsync(twin.PeerId, ct), Is.GreaterThan(0), "its earnings verify");
        var twinCredit = provider.Node.Chain.VerifiedCredit(twin.PeerId);
        Assert.That(twinCredit, Is.EqualTo(Math.Max(0, surplus - Math.Min(earned, surplus))));
        Assert.That(twinCredit + provider.Node.Chain.VerifiedCredit(worker.PeerId), Is.LessThanOrEqualTo(surplus), "together, no more than the surplus");

        // The violator has the same history, but broke its audit commitment with the provider: nothing extra, nothing at all.
        Assert.That(provider.Ledger.RecordViolation(violator.PeerId, [1, 2, 3], (int)Potluck.Scheduler.Verification.AuditVerdict.WrongSecret, null), Is.True);
        Assert.That(await provider.Node.Chain.CheckHistoryAsync(violator.PeerId, ct), Is.GreaterThan(0), "its earnings verify");
        Assert.That(provider.Node.Chain.VerifiedCredit(violator.PeerId), Is.Zero, "but earn it no credit");
        OnlyFrom(cluster, violator, provider);
        var (violatorServed, _, violatorRefusal) = await SubmitUntilRefusedAsync(violator, "v", 5);
        Assert.That(violatorServed, Is.Zero);
        Assert.That(violatorRefusal, Does.Contain("audit commitment"));
        Assert.That(TrustCluster.Earned(provider, violator), Is.Zero);

        Assert.That(cluster.Members.Sum(m => m.Ledger.Balance()), Is.Zero, "nothing minted");
    });

    [Test]
    public void TheProviderRestarts_ASybilTwinCannotBeBackedAgainByTheSurplusThatBacksTheWorker() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 183);
        var provider = await AddAsync(cluster, "provider", provide: true);
        var contributor = await AddAsync(cluster, "contributor", provide: true);
        await provider.Client.WaitForProvidersAsync(1, ct);
        await PayAsync(cluster, provider, contributor, 6, "p");
        await Task.Delay(provider.Ledger.Holdback + TimeSpan.FromSeconds(1), cluster.Time, ct);
        var surplus = -provider.Ledger.Requester(contributor.PeerId).Debt;

        // The contributor pays two identities of one adversary as much: the worker borrows on it first.
        var worker = await AddAsync(cluster, "worker", provide: true);
        await contributor.Client.WaitForProvidersAsync(2, ct);
        await PayAsync(cluster, contributor, worker, 6, "w");
        var twin = await AddAsync(cluster, "twin", provide: true);
        await contributor.Client.WaitForProvidersAsync(3, ct);
        await PayAsync(cluster, contributor, twin, 6, "t");
        var earned = TrustCluster.Earned(worker, contributor);
        OnlyFrom(cluster, worker, provider);
        await Task.WhenAny(worker.Client.WaitForProvidersAsync(4, ct), Task.Delay(TimeSpan.FromMinutes(1), cluster.Time, ct));
        var (workerServed, _, refusal) = await SubmitUntilRefusedAsync(worker, "x", 60);
        TestContext.Out.WriteLine($"worker served {workerServed}: {refusal}");
        Assert.That(refusal, Is.Not.Null.And.Contain("credit limit"));
        var workerCredit = provider.Node.Chain!.VerifiedCredit(worker.PeerId);
        Assert.That(workerCredit, Is.GreaterThan(0), "the worker borrowed on the contributor's surplus");
        Assert.That(provider.Ledger.Requester(worker.PeerId).Debt, Is.GreaterThan(Limit), "and still owes on it");
        var backed = Math.Min(earned, surplus);

        // The provider restarts: its verdicts are gone, the split of the surplus is not.
        await cluster.StopAsync(provider);
        provider = await cluster.RestartAsync(provider);
        // It hears the others' advertisements (and addresses) again.
        await Task.WhenAny(provider.Client.WaitForProvidersAsync(4, ct), Task.Delay(TimeSpan.FromMinutes(1), cluster.Time, ct));

        Assert.That(await provider.Node.Chain!.CheckHistoryAsync(twin.PeerId, ct), Is.GreaterThan(0), "the twin's earnings verify");
        var twinCredit = provider.Node.Chain.VerifiedCredit(twin.PeerId);
        Assert.That(twinCredit, Is.EqualTo(Math.Max(0, surplus - backed)), "only what the worker's borrowing left of the surplus");
        Assert.That(twinCredit + backed, Is.LessThanOrEqualTo(surplus), "one surplus backs credit once, restart or not");
        TestContext.Out.WriteLine($"surplus {surplus}, worker backed by {backed} (credit {workerCredit}), twin after the restart {twinCredit}");
    });

    [Test]
    public void SybilsPayingEachOther_GetOnlyTheStrangersAllowance() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 182);
        var provider = await AddAsync(cluster, "provider", provide: true);
        var sybil = await AddAsync(cluster, "sybil", provide: true);
        var accomplice = await AddAsync(cluster, "accomplice", provide: false);
        await accomplice.Client.WaitForProvidersAsync(2, ct);

        // The accomplice (no standing with the provider) pays the Sybil for real work, signed and linked in both chains.
        await PayAsync(cluster, accomplice, sybil, 8, "a");
        var earned = TrustCluster.Earned(sybil, accomplice);
        Assert.That(earned, Is.GreaterThan(0));

        OnlyFrom(cluster, sybil, provider);
        await sybil.Client.WaitForProvidersAsync(1, ct);
        var (_, cost, refusal) = await SubmitUntilRefusedAsync(sybil, "s", 40);
        Assert.That(await provider.Node.Chain!.CheckHistoryAsync(sybil.PeerId, ct), Is.Zero, "payments from a payer with no standing here count nothing");
        Assert.That(provider.Node.Chain.VerifiedCredit(sybil.PeerId), Is.Zero);
        Assert.That(refusal, Is.Not.Null.And.Contain($"over the credit limit of {Limit}"), "a stranger's limit, not raised");
        Assert.That(TrustCluster.Earned(provider, sybil), Is.LessThanOrEqualTo(Limit + cost));
        Assert.That(provider.Provider.ServedOnHistoryCredit, Is.Zero);
    });
}
