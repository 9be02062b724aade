using Potluck.Node.Tests.Adversarial;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;

namespace Potluck.Node.Tests.Compute;

/// <summary>
/// The requester puts a provider's advertised addresses into its peer store once per advertisement and minute, not on every
/// lease and receipt (<c>ComputeClient.ChannelTo</c>). A store that lost them meanwhile (evicted under a flood of peers, or
/// forgotten) must not cut the requester off: the dial still finds the provider through the host's address source, which
/// reads the advertisement book.
/// </summary>
public class ProviderAddressNodeTests
{
    [Test]
    public void AProviderWhoseAddressesTheRequestersPeerStoreLost_IsStillLeased_WithinTheMinuteTheyAreNotPutBack() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 331);
        var (provider, requester) = await cluster.ProviderAndRequesterAsync(cores: 2);
        var advertised = provider.Potluck.Host.ListenAddresses[0];

        var first = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("before", 10), ct);
        Assert.That(first.Status, Is.EqualTo(ExecutionStatus.Success), first.Error);
        Assert.That(requester.Potluck.Host.Peers.GetAddresses(provider.PeerId), Does.Contain(advertised), "known after the lease (the channel, the dial and identify all put it there)");

        // The store forgets the provider, and the connection goes: the next lease must dial again, inside the minute in which
        // the channel does not put the same advertisement's addresses back.
        await requester.Potluck.Host.DisconnectAsync(provider.PeerId);
        requester.Potluck.Host.Peers.Remove(provider.PeerId);
        Assert.That(requester.Potluck.Host.Peers.GetAddresses(provider.PeerId), Is.Empty);
        var started = cluster.Time.GetUtcNow();
        var sequence = requester.Client.Providers().Single().Ad.Sequence;
        var second = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("after", 10), ct);
        Assert.That(second.Status, Is.EqualTo(ExecutionStatus.Success), second.Error);
        Assert.That(second.Provider, Is.EqualTo(provider.PeerId));
        Assert.That(cluster.Time.GetUtcNow() - started, Is.LessThan(TimeSpan.FromMinutes(1)), "leased inside the minute");
        Assert.That(second.History.Count, Is.EqualTo(1), "at the first attempt");
        Assert.That(requester.Client.Providers().Single().Ad.Sequence, Is.EqualTo(sequence),
            "the same advertisement throughout: its addresses were not put back for this lease");
    });
}
