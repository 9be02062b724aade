using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Adversaries;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>No squatting: an accepted lease whose input never comes frees its core; a requester holds few leases at once.</summary>
[Category("Adversarial")]
public class SquattingAttackTests
{
    private static readonly byte[] HashChain = ComputeCluster.Sample("hashchain");

    [Test]
    public void AcceptedLeaseWhoseInputNeverArrives_EndsWithinSeconds_AndTheCoreServesAnHonestRequester() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 87);
        var provider = await cluster.AddAsync("provider", provide: true, price: 10);
        var squatterNode = await cluster.AddAsync("squatter", provide: false);
        var honest = await cluster.AddAsync("honest", provide: false);
        await squatterNode.Client.WaitForProvidersAsync(1, ct);
        await honest.Client.WaitForProvidersAsync(1, ct);
        var providerKey = squatterNode.Client.Providers().Single().Key;
        await using var squatter = new SquattingRequester(squatterNode.Potluck.Host, squatterNode.Key, squatterNode.Potluck.Runtime, provider.PeerId, NullLogger.Instance);

        var started = cluster.Time.GetUtcNow();
        var work = new LeaseWork
        {
            Module = HashChain,
            Input = new TaskPayload(["10"], "squat"u8.ToArray()).Encode(),
            FuelLimit = 200_000_000,
            MemoryLimitBytes = 32L << 20,
            Deadline = started + TimeSpan.FromHours(1),
            MaxPricePerMegaFuel = 50,
        };
        Assert.That(await squatter.SquatAsync(providerKey, work, TimeSpan.FromSeconds(2)), Is.True, "the provider offered, and the squatter accepted");
        Assert.That(provider.Provider.Capacity.AvailableCores, Is.Zero, "its one core is held");

        var ended = await squatter.Ended.Task;
        var heldFor = cluster.Time.GetUtcNow() - started;
        Assert.That(ended, Is.TypeOf<LeaseCancel>());
        Assert.That(((LeaseCancel)ended).Reason, Does.Contain("input"));
        Assert.That(heldFor, Is.LessThan(TimeSpan.FromMinutes(1)), "the lease ended within seconds of its accept, not at its deadline");

        var result = await honest.Node.SubmitAsync(OutcomeAttackTests.HashTask("after", 10), ct);
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        Assert.That(result.Provider, Is.EqualTo(provider.PeerId), "the freed core served the honest requester");
    });

    /// <summary>
    /// A requester that takes lease after lease on a provider with cores to spare (and never sends input) holds at most
    /// <see cref="Potluck.Scheduler.Providing.ProviderOptions.MaxLeasesPerRequester"/> of them at once: the next request is
    /// refused as busy, counted, and the cores it would have taken serve an honest requester.
    /// </summary>
    [Test]
    public void RequesterTakingLeaseAfterLease_HoldsAtMostTheLimit_AndTheRestServeOthers() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 88);
        var provider = await cluster.AddAsync("provider", provide: true, price: 10,
            configure: c => c with { Provider = c.Provider with { Cores = 4, StrangerCoreShare = 1, MaxLeasesPerRequester = 2 } });
        var squatterNode = await cluster.AddAsync("squatter", provide: false);
        var honest = await cluster.AddAsync("honest", provide: false);
        await squatterNode.Client.WaitForProvidersAsync(1, ct);
        await honest.Client.WaitForProvidersAsync(1, ct);
        var providerKey = squatterNode.Client.Providers().Single().Key;
        var work = new LeaseWork
        {
            Module = HashChain,
            Input = new TaskPayload(["10"], "squat"u8.ToArray()).Encode(),
            FuelLimit = 200_000_000,
            MemoryLimitBytes = 32L << 20,
            Deadline = cluster.Time.GetUtcNow() + TimeSpan.FromHours(1),
            MaxPricePerMegaFuel = 50,
        };

        var squatters = new List<SquattingRequester>();
        var taken = new List<bool>();
        try
        {
            for (var i = 0; i < 4; i++)
            {
                var squatter = new SquattingRequester(squatterNode.Potluck.Host, squatterNode.Key, squatterNode.Potluck.Runtime, provider.PeerId, NullLogger.Instance);
                squatters.Add(squatter);
                taken.Add(await squatter.SquatAsync(providerKey, work, TimeSpan.FromSeconds(2)));
            }
            Assert.That(taken, Is.EqualTo(new[] { true, true, false, false }), "two leases offered and accepted, then refused");
            Assert.That(provider.Provider.RefusedOverLimit, Is.EqualTo(2));
            Assert.That(provider.Provider.Capacity.AvailableCores, Is.EqualTo(2), "the squatter holds two of four cores, no more");

            var result = await honest.Node.SubmitAsync(OutcomeAttackTests.HashTask("beside", 10), ct);
            Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
            Assert.That(result.Provider, Is.EqualTo(provider.PeerId), "a free core served the honest requester while the squatter held its two");
        }
        finally
        {
            foreach (var squatter in squatters)
            {
                await squatter.DisposeAsync();
            }
        }
    });
}
