using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Adversaries;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>Strangers get what would be idle: a flood of fresh identities never crowds out a contributor in good standing.</summary>
[Category("Adversarial")]
public class StrangerAttackTests
{
    private static readonly byte[] HashChain = ComputeCluster.Sample("hashchain");

    [Test]
    public void FloodOfFreshIdentities_HoldsAtMostTheStrangersShare_AndAContributorPreemptsThem() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 95);
        // Two cores, half of them for requesters without standing.
        var provider = await cluster.AddAsync("provider", provide: true, price: 10,
            configure: c => c with
            {
                // The input grace is long here so the squatters' leases last the test (their end is SquattingAttackTests' business).
                Provider = c.Provider with { Cores = 2, StrangerCoreShare = 0.5, Lease = c.Provider.Lease with { InputGrace = TimeSpan.FromMinutes(10) } },
                Credits = c.Credits with { Holdback = TimeSpan.FromMinutes(1) },
            });
        var contributor = await cluster.AddAsync("contributor", provide: true, price: 10);
        await provider.Client.WaitForProvidersAsync(1, ct);
        await contributor.Client.WaitForProvidersAsync(1, ct);

        // The contributor supplies the provider some work first: that is its standing here.
        for (var i = 0; i < 3; i++)
        {
            var supplied = await provider.Node.SubmitAsync(OutcomeAttackTests.HashTask($"supply{i}", 20), ct);
            Assert.That(supplied.Provider, Is.EqualTo(contributor.PeerId));
        }
        await provider.Client.WhenReceiptsDeliveredAsync(ct);
        Assert.That(provider.Ledger.Requester(contributor.PeerId).Supplied, Is.Zero, "held back at first");
        await Task.Delay(provider.Ledger.Holdback + TimeSpan.FromSeconds(1), cluster.Time, ct);
        Assert.That(provider.Ledger.Requester(contributor.PeerId).Supplied, Is.GreaterThan(0));

        // Twelve fresh identities each take a lease and sit on it (input withheld, heartbeats sent).
        var providerKey = contributor.Client.Providers().Single(a => a.Provider == provider.PeerId).Key;
        var squatters = new List<SquattingRequester>();
        var held = 0;
        var strangers = new List<TrustCluster.Member>();
        for (var i = 0; i < 12; i++)
        {
            strangers.Add(await cluster.AddAsync($"stranger{i}", provide: false));
        }
        foreach (var node in strangers)
        {
            await node.Client.WaitForProvidersAsync(2, ct);
        }
        foreach (var node in strangers)
        {
            var squatter = new SquattingRequester(node.Potluck.Host, node.Key, node.Potluck.Runtime, provider.PeerId, NullLogger.Instance);
            squatters.Add(squatter);
            var work = new LeaseWork
            {
                Module = HashChain,
                Input = new TaskPayload(["10"], "squat"u8.ToArray()).Encode(),
                FuelLimit = 200_000_000,
                MemoryLimitBytes = 32L << 20,
                Deadline = cluster.Time.GetUtcNow() + TimeSpan.FromMinutes(10),
                MaxPricePerMegaFuel = 50,
            };
            held += await squatter.SquatAsync(providerKey, work, TimeSpan.FromSeconds(2)) ? 1 : 0;
        }
        Assert.That(held, Is.EqualTo(1), $"the strangers' share of two cores is one: the other eleven were refused as busy (share {provider.Provider.Capacity.StrangerCores}, in use {provider.Provider.Capacity.StrangerCoresInUse}, cores in use {provider.Provider.Capacity.CoresInUse}, ended {string.Join(",", squatters.Where(s => s.Ended.Task.IsCompleted).Select(s => s.Ended.Task.Result is LeaseCancel c ? c.Reason : s.Ended.Task.Result.GetType().Name))})");
        Assert.That(provider.Provider.Capacity.StrangerCoresInUse, Is.EqualTo(1));
        Assert.That(provider.Provider.Capacity.AvailableCores, Is.EqualTo(1), "a core stays free for contributors");

        // The contributor is served at once, twice in parallel: the free core, then the stranger's core by preemption.
        var results = await Task.WhenAll(
            contributor.Node.SubmitAsync(OutcomeAttackTests.HashTask("mine1", 20), ct),
            contributor.Node.SubmitAsync(OutcomeAttackTests.HashTask("mine2", 20), ct));
        Assert.That(results.Select(r => r.Status), Is.All.EqualTo(ExecutionStatus.Success));
        Assert.That(results.Select(r => r.Provider), Is.All.EqualTo(provider.PeerId), "served by the provider the strangers flooded");
        Assert.That(provider.Provider.Preempted, Is.EqualTo(1), "the stranger's lease made way");
        Assert.That(squatters.Count(s => s.Ended.Task.IsCompleted && s.Ended.Task.Result is LeaseCancel c && c.Reason.Contains("preempted")), Is.EqualTo(1));
        foreach (var s in squatters)
        {
            await s.DisposeAsync();
        }
    });
}
