using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Leasing;
using Potluck.Node.Tests.Adversarial;

namespace Potluck.Node.Tests.Compute;

/// <summary>
/// More submissions at once than a provider lets one requester hold (<c>ProviderOptions.MaxLeasesPerRequester</c>): the ones
/// refused as busy wait for the requester's own leases with it to end (its lease window), not for a busy backoff timer or a
/// newer advertisement, and are not refused again.
/// </summary>
public class LeaseWindowNodeTests
{
    [Test]
    public void SubmissionsBeyondTheProvidersPerRequesterLimit_WaitForTheirOwnLeasesToEnd_AndAreRefusedOnlyOnce() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 311);
        var provider = await cluster.AddAsync("provider", provide: true, price: 10,
            configure: c => c with { Provider = c.Provider with { Cores = 4, StrangerCoreShare = 1, MaxLeasesPerRequester = 1 } });
        var requester = await cluster.AddAsync("requester", provide: false);
        await requester.Client.WaitForProvidersAsync(1, ct);

        var started = cluster.Time.GetUtcNow();
        var results = await Task.WhenAll(Enumerable.Range(0, 4).Select(i =>
            requester.Node.SubmitAsync(OutcomeAttackTests.HashTask($"window {i}", 10), ct)));
        var took = cluster.Time.GetUtcNow() - started;
        TestContext.Out.WriteLine($"took {took.TotalMilliseconds} ms of virtual time, {provider.Provider.RefusedOverLimit} refused over the limit");

        Assert.That(results.Select(r => r.Status), Is.All.EqualTo(ExecutionStatus.Success), string.Join("; ", results.Select(r => r.Error)));
        Assert.That(results.Select(r => r.Provider), Is.All.EqualTo(provider.PeerId));
        Assert.That(provider.Provider.RefusedOverLimit, Is.EqualTo(3),
            "only the three asked for beside the first are refused: after that each waits for the requester's own lease to end " +
            "(its window), and is not refused again (on main the refused ones ask again at each new advertisement: 12 refusals)");
        Assert.That(took, Is.LessThan(TimeSpan.FromSeconds(1)), "no wait for a busy backoff (1 s at least)");
    });
}
