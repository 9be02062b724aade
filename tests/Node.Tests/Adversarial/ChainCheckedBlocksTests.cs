using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Leasing;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// Each node checks a half-block's signature once: a requester never checks its own proposals nor, twice, the agreements it
/// took (it hears them back in the payee's gossip), and a provider that checked the payer's block to the other provider as
/// the block before a proposal does not check it again in that provider's gossip. Every foreign block is still checked
/// once where it is relied on, and the chains audit clean.
/// </summary>
[Category("Adversarial")]
public class ChainCheckedBlocksTests
{
    private static int Paid(TrustCluster.Member payer, TrustCluster.Member payee) =>
        payer.Ledger.Recent(1000).Count(e => e.Kind == LedgerEntryKind.Spent && e.Counterparty == payee.PeerId);

    [Test]
    public void EveryBlock_IsCheckedOncePerNode_NoneOfOwnOnes_AndTheChainsStillAudit() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 190);
        var p1 = await cluster.AddAsync("p1", provide: true);
        var p2 = await cluster.AddAsync("p2", provide: true);
        var requester = await cluster.AddAsync("requester", provide: false);
        await requester.Client.WaitForProvidersAsync(2, ct);

        for (var round = 0; round < 3; round++)
        {
            var results = await Task.WhenAll(Enumerable.Range(0, 6).Select(i => requester.Node.SubmitAsync(OutcomeAttackTests.HashTask($"checked {round} {i}", 100), ct)));
            Assert.That(results.Select(r => r.Status), Is.All.EqualTo(ExecutionStatus.Success));
            await requester.Client.WhenReceiptsDeliveredAsync(ct);
            await requester.Node.Chain!.WhenIdleAsync(ct);
            await cluster.Hub.WhenIdleAsync(ct);
        }

        var mine = ChainAudit.Verify(requester.Ledger);
        Assert.That(mine.Problems, Is.Empty);
        Assert.That(mine.Unlinked, Is.Zero);
        var (n1, n2) = (Paid(requester, p1), Paid(requester, p2));
        Assert.That((n1 + n2, n1 > 0, n2 > 0), Is.EqualTo((mine.PaymentsMade, true, true)), "both providers were paid");
        // Blocks, not payments, are what is signed and checked: one batch block per provider and round.
        var (b1, b2) = (ChainAudit.Verify(p1.Ledger).Agreements, ChainAudit.Verify(p2.Ledger).Agreements);
        Assert.That(b1 + b2, Is.EqualTo(mine.Proposals));
        Assert.That(mine.Proposals, Is.LessThan(mine.PaymentsMade), "fewer blocks than payments");

        // The requester checks each agreement once (when it arrives, or in gossip if that comes first), its own blocks never.
        Assert.That(requester.Node.Chain!.BlockChecks.Verified, Is.EqualTo(mine.Proposals));
        Assert.That(requester.Node.Chain!.BlockChecks.Remembered, Is.GreaterThanOrEqualTo(mine.Proposals), "its gossiped payments, heard back");
        // A provider checks the proposals to it, the other's agreements, and the payer's blocks to the other at most once.
        foreach (var (provider, own, other) in new[] { (p1, b1, b2), (p2, b2, b1) })
        {
            var (verified, _) = provider.Node.Chain!.BlockChecks;
            Assert.That(verified, Is.InRange(own + other, own + (2 * other)), provider.Name);
            Assert.That(provider.Ledger.HoldsBlocksOf(requester.PeerId), Is.True);
            Assert.That(ChainAudit.Verify(provider.Ledger).Problems, Is.Empty, provider.Name);
        }
    });
}
