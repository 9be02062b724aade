using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Adversaries;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Providing;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// Auditable bilateral accounting: every payment is a linked pair of half-blocks in both parties' hash-chained histories;
/// a requester that shows two providers two histories is caught by both and refused; forged fork proofs cost their sender.
/// </summary>
[Category("Adversarial")]
public class ChainAttackTests
{
    private static readonly byte[] HashChain = ComputeCluster.Sample("hashchain");

    private static LeaseWork Work(TrustCluster cluster, string seed) => new()
    {
        Module = HashChain,
        Input = new TaskPayload(["100"], Encoding.UTF8.GetBytes(seed)).Encode(),
        FuelLimit = 200_000_000,
        MemoryLimitBytes = 32L << 20,
        Deadline = cluster.Time.GetUtcNow() + TimeSpan.FromMinutes(5),
        MaxPricePerMegaFuel = 50,
    };

    /// <summary>A real lease from <paramref name="provider"/>, paid with a correct receipt: returns the receipt the provider recorded.</summary>
    private static async Task<byte[]> LeaseAndPayAsync(TrustCluster cluster, FreeloadingRequester lessee, TrustCluster.Member payer,
        TrustCluster.Member provider, string seed, CancellationToken ct)
    {
        var key = payer.Client.Providers().Single(a => a.Provider == provider.PeerId).Key;
        var outcome = await lessee.LeaseAsync(key, Work(cluster, seed), ct);
        Assert.That(outcome.Kind, Is.EqualTo(LeaseOutcomeKind.Completed), outcome.Detail);
        LeaseCodec.TryDecodeTerms(outcome.Terms!.Terms, new LeaseOptions(), out var terms);
        var attestation = SignedAttestation.Decode(outcome.Result!.Attestation, new CreditsOptions());
        Assert.That(attestation.IsValid, Is.True);
        var receipt = SignedReceipt.Create(Receipt.For(attestation.Value!, (ulong)terms!.PricePerMegaFuel, cluster.Time.GetUtcNow()), payer.Key).EnvelopeBytes;
        var ack = await lessee.SendReceiptAsync(provider.PeerId, receipt, ct);
        Assert.That(ack.Status, Is.EqualTo(ReceiptAckStatus.Recorded), ack.Detail);
        return receipt;
    }

    private static async Task SettleAsync(TrustCluster cluster, CancellationToken ct)
    {
        await Task.Delay(TimeSpan.FromSeconds(1), cluster.Time, ct);
        await cluster.Hub.WhenIdleAsync(ct);
    }

    [Test]
    public void EveryPayment_IsALinkedPairOfHalfBlocks_InBothChains_AndTheAuditChecksThem() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 120);
        var provider = await cluster.AddAsync("provider", provide: true);
        var requester = await cluster.AddAsync("requester", provide: false);
        await requester.Client.WaitForProvidersAsync(1, ct);

        long cost = 0;
        for (var i = 0; i < 3; i++)
        {
            var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask($"chain {i}", 100), ct);
            Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
            cost += result.Cost;
        }
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        await requester.Node.Chain!.WhenIdleAsync(ct);

        var mine = ChainAudit.Verify(requester.Ledger);
        var theirs = ChainAudit.Verify(provider.Ledger);
        Assert.That(mine.Problems, Is.Empty);
        Assert.That(theirs.Problems, Is.Empty);
        // The three payments fall in one round of proposals: one batch block on each side (batch blocks: one pair per round).
        Assert.That((mine.PaymentsMade, theirs.PaymentsReceived, mine.Unlinked), Is.EqualTo((3L, 3L, 0L)), "three payments, each linked");
        Assert.That((mine.Blocks, mine.Proposals, mine.LinkedBlocks), Is.EqualTo((1L, 1L, 1L)), "in one batch block");
        Assert.That((theirs.Blocks, theirs.Agreements, theirs.LinkedBlocks), Is.EqualTo((1L, 1L, 1L)));
        Assert.That(mine.Paid, Is.EqualTo(cost).And.EqualTo(theirs.Earned), "both chains count what was paid, once");
        Assert.That(provider.Node.Chain!.Agreed, Is.EqualTo(1));
    });

    [Test]
    public void ForkerShowingTwoProvidersConflictingHistories_IsCaughtAndRefusedByBoth() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 121);
        var first = await cluster.AddAsync("first", provide: true);
        var second = await cluster.AddAsync("second", provide: true);
        var bystander = await cluster.AddAsync("bystander", provide: false);
        var forkerNode = await cluster.AddAsync("forker", provide: false);
        await forkerNode.Client.WaitForProvidersAsync(2, ct);
        await using var lessee = new FreeloadingRequester(forkerNode.Potluck.Host, forkerNode.Key, forkerNode.Potluck.Runtime, NullLogger.Instance);
        var forker = new ChainForker(forkerNode.Potluck.Host, forkerNode.Key);

        // Two real, paid leases; then each provider is shown a chain where its payment is the forker's first block.
        var toFirst = await LeaseAndPayAsync(cluster, lessee, forkerNode, first, "a", ct);
        var toSecond = await LeaseAndPayAsync(cluster, lessee, forkerNode, second, "b", ct);
        var a = forker.Propose(toFirst, 1, SignedBlock.Genesis, cluster.Time.GetUtcNow());
        var b = forker.Propose(toSecond, 1, SignedBlock.Genesis, cluster.Time.GetUtcNow());
        var answerA = await forker.SendAsync(first.PeerId, a, null, ct);
        await SettleAsync(cluster, ct);
        var answerB = await forker.SendAsync(second.PeerId, b, null, ct);
        await SettleAsync(cluster, ct);

        Assert.That(answerA.Status, Is.EqualTo(ChainAnswerStatus.Agreed), answerA.Detail);
        Assert.That(answerB.Status, Is.EqualTo(ChainAnswerStatus.Agreed), "each history alone is consistent");
        foreach (var honest in new[] { first, second, bystander })
        {
            Assert.That(honest.Node.Chain!.IsForker(forkerNode.PeerId), Is.True, $"{honest.Name} holds the fork proof");
            Assert.That(honest.Node.Reputation.IsRefused(forkerNode.PeerId), Is.True, $"{honest.Name} refuses the forker");
        }
        Assert.That(first.Ledger.Forks().Single().Author, Is.EqualTo(forkerNode.PeerId), "kept in the ledger, so a restart refuses it too");
        Assert.That(ForkProof.Check(first.Ledger.Forks().Single().Proof, new ChainOptions(), out _), Is.EqualTo(BlockStatus.Valid), "anyone can check it offline");

        foreach (var provider in new[] { first, second })
        {
            var key = forkerNode.Client.Providers().Single(ad => ad.Provider == provider.PeerId).Key;
            var refused = await lessee.LeaseAsync(key, Work(cluster, "more"), ct);
            Assert.That(refused.Kind, Is.EqualTo(LeaseOutcomeKind.Rejected), $"{provider.Name} serves the forker no new lease");
            Assert.That(refused.Detail, Does.Contain("refuses"));
        }
    });

    [Test]
    public void ForgedForkProofs_AreRejectedBeforeForwarding_AndCostTheirAuthorItsStanding() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 122);
        var provider = await cluster.AddAsync("provider", provide: true);
        var requester = await cluster.AddAsync("requester", provide: false);
        var bystander = await cluster.AddAsync("bystander", provide: false);
        var attacker = await cluster.AddAsync("attacker", provide: false);
        await requester.Client.WaitForProvidersAsync(1, ct);
        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("victim", 100), ct);
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        await requester.Node.Chain!.WhenIdleAsync(ct);
        SignedBlock.Decode(requester.Ledger.OwnBlocks(0, 1).Single(), new ChainOptions(), out var victimBlock);
        SignedBlock.Decode(provider.Ledger.OwnBlocks(0, 1).Single(), new ChainOptions(), out var otherBlock);
        var rejected = cluster.Hub.Rejected;
        var attackerBus = cluster.Hub.Join(attacker.PeerId);

        var forged = ChainForker.ForgedForkProofs(victimBlock!, otherBlock!);
        foreach (var proof in forged)
        {
            await attackerBus.PublishAsync(ChainProtocol.ForksTopic, proof, ct);
        }
        await SettleAsync(cluster, ct);

        // Every other subscriber rejected each one (gossipsub forwards nothing rejected).
        Assert.That(cluster.Hub.Rejected - rejected, Is.EqualTo(forged.Count * 4L));
        foreach (var honest in new[] { provider, requester, bystander })
        {
            Assert.That(honest.Node.Chain!.IsForker(requester.PeerId), Is.False, $"{honest.Name}: the accused keeps its standing");
            Assert.That(honest.Node.Reputation.IsRefused(attacker.PeerId), Is.True, $"{honest.Name}: the forger loses its own");
        }
    });

    [Test]
    public void CrashBetweenWritingAProposalAndSendingIt_LosesNothing_AndCountsNothingTwice() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 123);
        var provider = await cluster.AddAsync("provider", provide: true);
        var requester = await cluster.AddAsync("requester", provide: false);
        await requester.Client.WaitForProvidersAsync(1, ct);
        var a = requester.Potluck.Host.ListenAddresses[0];
        var b = provider.Potluck.Host.ListenAddresses[0];
        SignedBlock? written = null;
        // The proposal reaches the disk; the process dies before it is sent (the link is gone, then the node stops).
        requester.Node.Chain!.AfterProposalWritten = block =>
        {
            written = block;
            cluster.Network.Partition(a, b);
        };

        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("crash", 100), ct);
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        await requester.Node.Chain.WhenIdleAsync(ct);
        Assert.That(written, Is.Not.Null);
        Assert.That(provider.Node.Chain!.Agreed, Is.Zero, "the proposal never arrived");
        await cluster.StopAsync(requester);
        cluster.Network.Heal(a, b);

        var restarted = await cluster.RestartAsync(requester);
        await Task.Delay(TimeSpan.FromSeconds(5), cluster.Time, ct);
        await restarted.Node.Chain!.RetryAsync(ct);

        var mine = ChainAudit.Verify(restarted.Ledger);
        var theirs = ChainAudit.Verify(provider.Ledger);
        Assert.That(mine.Problems, Is.Empty);
        Assert.That(theirs.Problems, Is.Empty);
        Assert.That((mine.Blocks, mine.Unlinked), Is.EqualTo((1L, 0L)), "the same proposal, sent after the restart, linked");
        Assert.That(restarted.Ledger.OwnBlocks(0, 10).Single(), Is.EqualTo(written!.EnvelopeBytes), "not signed again");
        Assert.That(theirs.Agreements, Is.EqualTo(1), "countersigned once, though offered twice");
        Assert.That((mine.Paid, theirs.Earned), Is.EqualTo((result.Cost, result.Cost)));
        Assert.That(TrustCluster.Earned(provider, restarted), Is.EqualTo(result.Cost), "the provider's ledger counts the payment once");
    });
}
