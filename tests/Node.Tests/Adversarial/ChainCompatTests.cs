using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Topics;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// Batch chain blocks in a network of mixed versions: pairs of batch blocks go on <c>potluck/chain/2</c> only to nodes
/// that read them (identify lists <see cref="ChainProtocol.BatchBlocksId"/>), so a node built before batch blocks
/// (<see cref="PreBatchChainGossip"/>, its decoder as a fixture) never rejects what a new node sends and never scores it
/// down for it, while new nodes still hear every payment.
/// </summary>
[Category("Adversarial")]
public class ChainCompatTests
{
    /// <summary>A node of the pre-batch build on the hub: its identify lacks 1.2.0, and it reads chain/2 as 91126f0 did.</summary>
    private sealed class OldNode
    {
        public int Accepted;
        public int Rejected;

        public OldNode(TrustCluster cluster)
        {
            var bus = cluster.Hub.Join(PrivateKey.FromRandom(new Random(cluster.Seed + 2000)).PeerId,
                speaks: protocol => protocol != ChainProtocol.BatchBlocksId);
            bus.Subscribe(ChainProtocol.BlockBatchesTopic, m =>
            {
                var verdict = PreBatchChainGossip.Validate(m);
                Interlocked.Increment(ref verdict == TopicVerdict.Accept ? ref Accepted : ref Rejected);
                return verdict;
            }, (_, _) => ValueTask.CompletedTask);
        }
    }

    /// <summary>A node of this build on the hub: counts the payments it hears in batch blocks and in single ones.</summary>
    private sealed class NewNode
    {
        public int BatchPayments;
        public int SinglePayments;

        /// <summary>Messages holding no batch block (what an old node may be sent).</summary>
        public int SingleMessages;

        public NewNode(TrustCluster cluster)
        {
            var bus = cluster.Hub.Join(PrivateKey.FromRandom(new Random(cluster.Seed + 1000)).PeerId);
            bus.Subscribe(ChainProtocol.BlockBatchesTopic, m =>
            {
                Assert.That(ChainCodec.TryDecode(m.Data, ChainProtocol.MaxBatchBytes(new ChainOptions()), out BlockBatch? batch), Is.True);
                var batches = BatchPayments;
                foreach (var pair in batch!.Pairs)
                {
                    Assert.That(SignedBlock.Decode(pair.First, new ChainOptions(), out var proposal), Is.EqualTo(BlockStatus.Valid));
                    if (proposal!.Block.IsBatch)
                    {
                        BatchPayments += proposal.Block.AllPayments.Count;
                    }
                    else
                    {
                        SinglePayments++;
                    }
                }
                if (BatchPayments == batches)
                {
                    SingleMessages++;
                }
                return TopicVerdict.Ignore;
            }, (_, _) => ValueTask.CompletedTask);
        }
    }

    [Test]
    public void BatchPairs_ReachNodesThatReadThem_AndANodeBuiltBeforeBatchBlocksNeverRejectsAMessage() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 170);
        var provider = await cluster.AddAsync("provider", provide: true);
        var requester = await cluster.AddAsync("requester", provide: false);
        await requester.Client.WaitForProvidersAsync(1, ct);
        var old = new OldNode(cluster);
        var fresh = new NewNode(cluster);

        async Task PayAsync(int tasks, string label)
        {
            var results = await Task.WhenAll(Enumerable.Range(0, tasks).Select(i => requester.Node.SubmitAsync(OutcomeAttackTests.HashTask($"{label} {i}", 100), ct)));
            Assert.That(results.Select(r => r.Status), Is.All.EqualTo(ExecutionStatus.Success));
            await requester.Client.WhenReceiptsDeliveredAsync(ct);
            await requester.Node.Chain!.WhenIdleAsync(ct);
            await cluster.Hub.WhenIdleAsync(ct);
        }

        // One payment in a round: a single-payment block, gossiped to every node; the old node reads and accepts it.
        await PayAsync(1, "single");
        Assert.That((fresh.SinglePayments, fresh.BatchPayments), Is.EqualTo((1, 0)));
        Assert.That((old.Accepted, old.Rejected), Is.EqualTo((1, 0)), "the old node hears single payments and accepts them");

        // Eight at once: a round's batch block; its pair reaches the new node only.
        await PayAsync(8, "batch");
        var audit = ChainAudit.Verify(requester.Ledger);
        Assert.That(audit.Problems, Is.Empty);
        Assert.That(audit.PaymentsMade, Is.EqualTo(9));
        Assert.That(fresh.BatchPayments, Is.GreaterThanOrEqualTo(2), "the scenario made a batch block, and a new node heard it");
        Assert.That(fresh.SinglePayments + fresh.BatchPayments, Is.EqualTo(9), "a new node hears every payment once");
        Assert.That(old.Rejected, Is.Zero, "the old node was never sent a message it rejects (it would score the sender down)");
        Assert.That(old.Accepted, Is.EqualTo(fresh.SingleMessages), "it is sent every message of single payments, and nothing else");
        Assert.That(provider.Node.Chain!.IsForker(requester.PeerId), Is.False);
    });
}
