using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Topics;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// Completed payments are gossiped in batches on <see cref="ChainProtocol.BlockBatchesTopic"/> (one message, one gossip
/// signature, per stream of proposals): a batch is bounded, accepted only when every pair in it checks, and costs its
/// sender one receipts-budget token per pair, as the same pairs one by one would.
/// </summary>
[Category("Adversarial")]
public class ChainGossipBatchTests
{
    /// <summary>A linked pair at <paramref name="seq"/> in both chains: <paramref name="payer"/>'s proposal and <paramref name="payee"/>'s agreement.</summary>
    private static BlockPair Pair(PrivateKey payer, PrivateKey payee, ulong seq)
    {
        var lease = BitConverter.GetBytes(seq);
        var previous = seq == 1 ? SignedBlock.Genesis : System.Security.Cryptography.SHA256.HashData(lease);
        var receiptId = Receipt.ComputeId(lease, payee.PeerId, payer.PeerId);
        var proposal = SignedBlock.Sign(new ChainBlock
        {
            Author = payer.PeerId.ToBytes(),
            Seq = seq,
            Previous = previous,
            Counterparty = payee.PeerId.ToBytes(),
            Kind = BlockKind.Proposal,
            ReceiptId = receiptId,
            LeaseId = lease,
            Amount = 10,
            FuelUsed = 1_000_000,
        }, payer);
        var agreement = SignedBlock.Sign(new ChainBlock
        {
            Author = payee.PeerId.ToBytes(),
            Seq = seq,
            Previous = previous,
            Counterparty = payer.PeerId.ToBytes(),
            LinkSeq = proposal.Seq,
            LinkHash = proposal.Hash,
            Kind = BlockKind.Agreement,
            ReceiptId = receiptId,
            LeaseId = lease,
            Amount = 10,
            FuelUsed = 1_000_000,
        }, payee);
        Assert.That(proposal.LinkedBy(agreement), Is.EqualTo(BlockStatus.Valid));
        return new BlockPair { First = proposal.EnvelopeBytes, Second = agreement.EnvelopeBytes };
    }

    private static byte[] Batch(IEnumerable<BlockPair> pairs) => ChainCodec.Encode(new BlockBatch { Pairs = [.. pairs] });

    /// <summary>Counts, as a bystander on the hub, the messages and pairs heard on both block topics.</summary>
    private sealed class Listener
    {
        public int Batches;
        public int Pairs;
        public int Singles;

        /// <summary>Payments in the pairs heard (a batch block's each count).</summary>
        public int Payments;

        public Listener(TrustCluster cluster)
        {
            var bus = cluster.Hub.Join(PrivateKey.FromRandom(new Random(cluster.Seed + 1000)).PeerId);
            foreach (var topic in new[] { ChainProtocol.BlockBatchesTopic })
            {
                bus.Subscribe(topic, m =>
                {
                    Assert.That(ChainCodec.TryDecode(m.Data, ChainProtocol.MaxBatchBytes(new ChainOptions()), out BlockBatch? batch), Is.True);
                    Batches++;
                    Pairs += batch!.Pairs.Count;
                    foreach (var pair in batch.Pairs)
                    {
                        Assert.That(SignedBlock.Decode(pair.First, new ChainOptions(), out var proposal), Is.EqualTo(BlockStatus.Valid));
                        Payments += proposal!.Block.AllPayments.Count;
                    }
                    return TopicVerdict.Ignore;
                }, (_, _) => ValueTask.CompletedTask);
            }
            bus.Subscribe(ChainProtocol.BlocksTopic, _ =>
            {
                Singles++;
                return TopicVerdict.Ignore;
            }, (_, _) => ValueTask.CompletedTask);
        }
    }

    [Test]
    public void HonestPayments_AreGossipedAsOneBatchPerStream_EveryPairOnce_AndStillLink() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 150);
        var provider = await cluster.AddAsync("provider", provide: true);
        var requester = await cluster.AddAsync("requester", provide: false);
        await requester.Client.WaitForProvidersAsync(1, ct);
        var listener = new Listener(cluster);

        var results = await Task.WhenAll(Enumerable.Range(0, 8).Select(i => requester.Node.SubmitAsync(OutcomeAttackTests.HashTask($"batch {i}", 100), ct)));
        Assert.That(results.Select(r => r.Status), Is.All.EqualTo(ExecutionStatus.Success));
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        await requester.Node.Chain!.WhenIdleAsync(ct);
        await cluster.Hub.WhenIdleAsync(ct);

        var mine = ChainAudit.Verify(requester.Ledger);
        Assert.That(mine.Problems, Is.Empty);
        Assert.That((mine.PaymentsMade, mine.Unlinked), Is.EqualTo((8L, 0L)));
        Assert.That(listener.Payments, Is.EqualTo(8), "every completed payment gossiped once");
        Assert.That(listener.Pairs, Is.EqualTo(mine.Proposals), "every pair once");
        Assert.That(listener.Batches, Is.LessThan(8), "in fewer messages than payments (one per stream of proposals)");
        Assert.That(listener.Singles, Is.Zero, "nothing on the one-pair topic");
    });

    /// <summary>
    /// A provider that was paid by <c>requester</c> holds its blocks, so it keeps every further block of it heard in an
    /// accepted batch: whether <c>requester</c>'s block at a seq is held there afterwards tells whether a batch was accepted.
    /// The test signs those blocks with the requester's key, as gossip of its real payments would carry them.
    /// </summary>
    private static async Task<(TrustCluster.Member Provider, TrustCluster.Member Requester)> PaidOnceAsync(TrustCluster cluster, CancellationToken ct)
    {
        var provider = await cluster.AddAsync("provider", provide: true);
        var requester = await cluster.AddAsync("requester", provide: false);
        await requester.Client.WaitForProvidersAsync(1, ct);
        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("paid", 100), ct);
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        await requester.Node.Chain!.WhenIdleAsync(ct);
        await cluster.Hub.WhenIdleAsync(ct);
        Assert.That(provider.Ledger.HoldsBlocksOf(requester.PeerId), Is.True);
        return (provider, requester);
    }

    [Test]
    public void OversizedOrLyingBatch_IsRejectedWhole_ByEveryNode_AndNothingInItIsKept() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 151);
        var (provider, requester) = await PaidOnceAsync(cluster, ct);
        var attackerKey = PrivateKey.FromRandom(new Random(1));
        var attacker = cluster.Hub.Join(attackerKey.PeerId);
        var pairs = Enumerable.Range(0, ChainProtocol.MaxPairsPerBatch + 1).Select(i => Pair(requester.Key, attackerKey, 1000 + (ulong)i)).ToList();
        const int subscribers = 2;
        int Kept() => Enumerable.Range(0, pairs.Count).Count(i => provider.Ledger.ChainBlockAt(requester.PeerId, 1000 + (ulong)i) is not null);

        async Task<long> RejectedByAsync(byte[] message)
        {
            var rejected = cluster.Hub.Rejected;
            await attacker.PublishAsync(ChainProtocol.BlockBatchesTopic, message, ct);
            await cluster.Hub.WhenIdleAsync(ct);
            return cluster.Hub.Rejected - rejected;
        }

        // One pair more than a batch holds: refused before any signature is checked.
        Assert.That(await RejectedByAsync(Batch(pairs)), Is.EqualTo(subscribers));
        // A full batch with one pair the publisher did not agree to (another payee's agreement): the whole message refused.
        var lying = pairs.Take(ChainProtocol.MaxPairsPerBatch - 1).Append(Pair(requester.Key, PrivateKey.FromRandom(new Random(3)), 2000));
        Assert.That(await RejectedByAsync(Batch(lying)), Is.EqualTo(subscribers));
        // One tampered block: refused whole.
        var tampered = pairs[5].Second.ToArray();
        tampered[^1] ^= 1;
        var withTampered = pairs.Take(ChainProtocol.MaxPairsPerBatch).Select((p, i) => i == 5 ? new BlockPair { First = p.First, Second = tampered } : p);
        Assert.That(await RejectedByAsync(Batch(withTampered)), Is.EqualTo(subscribers));
        // Empty, or not a batch at all: refused.
        Assert.That(await RejectedByAsync(Batch([])), Is.EqualTo(subscribers));
        Assert.That(await RejectedByAsync(ChainCodec.Encode(pairs[0])), Is.EqualTo(subscribers));
        Assert.That(Kept(), Is.Zero, "nothing of a refused batch was kept, not even its good pairs");

        // The same pairs, a full batch, all agreed by the publisher: accepted everywhere and kept.
        Assert.That(await RejectedByAsync(Batch(pairs.Take(ChainProtocol.MaxPairsPerBatch))), Is.Zero);
        Assert.That(Kept(), Is.EqualTo(ChainProtocol.MaxPairsPerBatch));
        Assert.That(provider.Node.Chain!.IsForker(requester.PeerId), Is.False);
    });

    /// <summary>
    /// A batch is decoded and checked once, by the validator, and the handler keeps what it checked: the provider verifies
    /// each new block once and takes none of them from its checked-blocks memory afterwards (the handler used to decode the
    /// batch again and look every block up there). A batch that fails validation is never handled: nothing of it is kept.
    /// </summary>
    [Test]
    public void AcceptedBatch_IsDecodedAndVerifiedOnce_AndTheHandlerKeepsWhatTheValidatorChecked() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 153);
        var (provider, requester) = await PaidOnceAsync(cluster, ct);
        var attackerKey = PrivateKey.FromRandom(new Random(5));
        var attacker = cluster.Hub.Join(attackerKey.PeerId);
        const int count = 8;
        const ulong first = 3000;
        var pairs = Enumerable.Range(0, count).Select(i => Pair(requester.Key, attackerKey, first + (ulong)i)).ToList();
        int Kept() => Enumerable.Range(0, count).Count(i => provider.Ledger.ChainBlockAt(requester.PeerId, first + (ulong)i) is not null);

        // Refused by the validator (the last agreement tampered): its good pairs were checked, but nothing is handled.
        var tampered = pairs[^1].Second.ToArray();
        tampered[^1] ^= 1;
        var (verified, remembered) = provider.Node.Chain!.BlockChecks;
        await attacker.PublishAsync(ChainProtocol.BlockBatchesTopic, Batch(pairs.SkipLast(1).Append(new BlockPair { First = pairs[^1].First, Second = tampered })), ct);
        await cluster.Hub.WhenIdleAsync(ct);
        Assert.That(Kept(), Is.Zero, "a batch that fails validation is never handled");
        Assert.That(provider.Node.Chain!.BlockChecks.Verified - verified, Is.EqualTo(2 * count), "every block of the refused batch verified once, up to the bad one");

        // Accepted: the good blocks verified before are remembered by the validator; the handler looks none up again.
        (verified, remembered) = provider.Node.Chain!.BlockChecks;
        await attacker.PublishAsync(ChainProtocol.BlockBatchesTopic, Batch(pairs), ct);
        await cluster.Hub.WhenIdleAsync(ct);
        Assert.That(Kept(), Is.EqualTo(count));
        var (verifiedAfter, rememberedAfter) = provider.Node.Chain!.BlockChecks;
        Assert.That(verifiedAfter - verified, Is.EqualTo(1), "only the one block it had not checked yet, the last agreement");
        Assert.That(rememberedAfter - remembered, Is.EqualTo((2 * count) - 1), "the validator's hits only: the handler decoded and looked up nothing");
    });

    /// <summary>
    /// The blocks a node keeps from an accepted batch are written in one transaction, not one each: storing a batch of
    /// <c>count</c> new blocks runs BEGIN, one INSERT per block and COMMIT on the writer (one each used to run BEGIN, INSERT
    /// and COMMIT: 3 × <c>count</c>), and every block is kept. Blocks of an author the node holds nothing of are not kept.
    /// </summary>
    [Test]
    public void AcceptedBatch_IsKeptInOneWriteTransaction() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 155);
        var (provider, requester) = await PaidOnceAsync(cluster, ct);
        var attackerKey = PrivateKey.FromRandom(new Random(7));
        var attacker = cluster.Hub.Join(attackerKey.PeerId);
        const int count = 16;
        const ulong first = 5000;
        var pairs = Enumerable.Range(0, count).Select(i => Pair(requester.Key, attackerKey, first + (ulong)i)).ToList();

        var statements = provider.Ledger.WriterStatements;
        await attacker.PublishAsync(ChainProtocol.BlockBatchesTopic, Batch(pairs), ct);
        await cluster.Hub.WhenIdleAsync(ct);
        var ran = provider.Ledger.WriterStatements - statements;

        Assert.That(Enumerable.Range(0, count).Count(i => provider.Ledger.ChainBlockAt(requester.PeerId, first + (ulong)i) is not null), Is.EqualTo(count),
            "every proposal of the requester, whose blocks the provider holds, kept");
        Assert.That(provider.Ledger.HoldsBlocksOf(attackerKey.PeerId), Is.False, "the agreements of an author held nowhere here are not kept");
        Assert.That(ran, Is.EqualTo(count + 2), "BEGIN, one INSERT per block, COMMIT");
        Assert.That(provider.Node.Chain!.IsForker(requester.PeerId), Is.False);
    });

    /// <summary>
    /// A fork met among the blocks a node keeps from an accepted batch (a second block of the requester at a seq where the
    /// provider holds its real proposal): the proof is held, the block held stays, and the batch's other blocks, before and
    /// after the fork, are kept.
    /// </summary>
    [Test]
    public void ForkInsideAnAcceptedBatch_IsFound_AndTheBatchsOtherBlocksAreKept() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 154);
        var (provider, requester) = await PaidOnceAsync(cluster, ct);
        var attackerKey = PrivateKey.FromRandom(new Random(6));
        var attacker = cluster.Hub.Join(attackerKey.PeerId);
        const int count = 8;
        const ulong first = 4000;
        var pairs = Enumerable.Range(0, count).Select(i => Pair(requester.Key, attackerKey, first + (ulong)i)).ToList();
        int Kept() => Enumerable.Range(0, count).Count(i => provider.Ledger.ChainBlockAt(requester.PeerId, first + (ulong)i) is not null);

        var held = provider.Ledger.ChainBlockAt(requester.PeerId, 1);
        Assert.That(held, Is.Not.Null);
        await attacker.PublishAsync(ChainProtocol.BlockBatchesTopic, Batch(pairs.Take(count / 2).Append(Pair(requester.Key, attackerKey, 1)).Concat(pairs.Skip(count / 2))), ct);
        await cluster.Hub.WhenIdleAsync(ct);
        Assert.That(provider.Node.Chain!.IsForker(requester.PeerId), Is.True, "the second block at seq 1 is a fork");
        Assert.That(provider.Ledger.ChainBlockAt(requester.PeerId, 1), Is.EqualTo(held), "the block held at seq 1 stays");
        Assert.That(Kept(), Is.EqualTo(count), "the batch's other blocks, before and after the fork, kept");
    });

    [Test]
    public void FloodOfValidBatches_CostsTheSenderOneChainRecordsTokenPerPair_AndIsIgnoredOnceItsBudgetIsSpent() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 152);
        var (provider, requester) = await PaidOnceAsync(cluster, ct);
        var attackerKey = PrivateKey.FromRandom(new Random(4));
        var attacker = cluster.Hub.Join(attackerKey.PeerId);
        var burst = provider.Potluck.Host.Budgets.Options.ChainRecords.Burst;
        var perBatch = ChainProtocol.MaxPairsPerBatch - 1; // the hub takes no token for the message itself; the validator one per further pair
        var affordable = burst / perBatch;
        const ulong first = 1000;

        for (var i = 0; i < affordable + 3; i++)
        {
            var pairs = Enumerable.Range(0, ChainProtocol.MaxPairsPerBatch).Select(k => Pair(requester.Key, attackerKey, first + (ulong)((i * ChainProtocol.MaxPairsPerBatch) + k)));
            await attacker.PublishAsync(ChainProtocol.BlockBatchesTopic, Batch(pairs), ct);
            await cluster.Hub.WhenIdleAsync(ct);
        }

        bool KeptBatch(int i) => provider.Ledger.ChainBlockAt(requester.PeerId, first + (ulong)(i * ChainProtocol.MaxPairsPerBatch)) is not null;
        Assert.That(Enumerable.Range(0, affordable).Select(KeptBatch), Is.All.True, "batches within the sender's budget are accepted");
        Assert.That(Enumerable.Range(affordable, 3).Select(KeptBatch), Is.All.False, "then ignored: the flood costs the provider no more signature checks");
        Assert.That(provider.Node.Chain!.IsForker(requester.PeerId), Is.False);
    });
    /// <summary>A linked pair of batch blocks of <see cref="ChainBlock.MaxPayments"/> payments each, at <paramref name="seq"/>.</summary>
    private static BlockPair BatchBlockPair(PrivateKey payer, PrivateKey payee, ulong seq)
    {
        var payments = Enumerable.Range(0, ChainBlock.MaxPayments).Select(k =>
        {
            var lease = BitConverter.GetBytes((seq * 1000) + (ulong)k);
            return new ChainPayment { ReceiptId = Receipt.ComputeId(lease, payee.PeerId, payer.PeerId), LeaseId = lease, Amount = 10, FuelUsed = 1_000_000 };
        }).ToList();
        var previous = System.Security.Cryptography.SHA256.HashData(BitConverter.GetBytes(seq));
        ChainBlock Block(PrivateKey author, PrivateKey other, BlockKind kind, SignedBlock? linked) => new()
        {
            Author = author.PeerId.ToBytes(), Seq = seq, Previous = previous, Counterparty = other.PeerId.ToBytes(), Kind = kind,
            LinkSeq = linked?.Seq ?? 0, LinkHash = linked?.Hash ?? [], ReceiptId = ChainBlock.BatchIdOf(payments), LeaseId = [],
            Amount = 10 * payments.Count, FuelUsed = 1_000_000UL * (ulong)payments.Count, Payments = payments,
        };
        var proposal = SignedBlock.Sign(Block(payer, payee, BlockKind.Proposal, null), payer);
        var agreement = SignedBlock.Sign(Block(payee, payer, BlockKind.Agreement, proposal), payee);
        return new BlockPair { First = proposal.EnvelopeBytes, Second = agreement.EnvelopeBytes };
    }

    /// <summary>
    /// A batch block's payments each cost the sender a receipts-budget token, as the same payments in single blocks would:
    /// a flood of messages of one pair of 64-payment batch blocks is accepted while the budget lasts (63 tokens a message
    /// beyond the one the bus takes), then ignored before any signature is checked.
    /// </summary>
    [Test]
    public void FloodOfBatchBlockPairs_CostsTheSenderOneTokenPerPayment_AndIsIgnoredOnceItsBudgetIsSpent() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 156);
        var (provider, requester) = await PaidOnceAsync(cluster, ct);
        var attackerKey = PrivateKey.FromRandom(new Random(8));
        var attacker = cluster.Hub.Join(attackerKey.PeerId);
        var burst = provider.Potluck.Host.Budgets.Options.ChainRecords.Burst;
        var perMessage = ChainBlock.MaxPayments - 1; // the hub takes no token for the message itself; the validator one per further payment
        var affordable = burst / perMessage;
        Assert.That(affordable, Is.LessThan(burst), "per pair, the same flood would be affordable " + burst + " times");
        const ulong first = 6000;

        for (var i = 0; i < affordable + 3; i++)
        {
            await attacker.PublishAsync(ChainProtocol.BlockBatchesTopic, Batch([BatchBlockPair(requester.Key, attackerKey, first + (ulong)i)]), ct);
            await cluster.Hub.WhenIdleAsync(ct);
        }

        bool Kept(int i) => provider.Ledger.ChainBlockAt(requester.PeerId, first + (ulong)i) is not null;
        Assert.That(Enumerable.Range(0, affordable).Select(Kept), Is.All.True, "batch blocks within the sender's budget are accepted and kept");
        Assert.That(Enumerable.Range(affordable, 3).Select(Kept), Is.All.False, "then ignored: charged per payment, not per pair");
        Assert.That(provider.Node.Chain!.IsForker(requester.PeerId), Is.False);
    });
}
