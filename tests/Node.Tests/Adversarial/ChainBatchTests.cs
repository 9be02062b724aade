using Potluck.Protocol.Framing;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Leasing;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// A round's proposals to one provider travel on one <see cref="ChainProtocol.BatchId"/> stream: bounded per stream (one
/// more resets it unanswered), and an older provider that speaks only <see cref="ChainProtocol.Id"/> still links every payment.
/// </summary>
[Category("Adversarial")]
public class ChainBatchTests
{
    [Test]
    public void OlderProvider_SpeakingOnlyOneProposalPerStream_StillLinksEveryPayment() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 140);
        var provider = await cluster.AddAsync("provider", provide: true);
        provider.Potluck.Host.RemoveStreamHandler(ChainProtocol.BatchId); // as a node built before the batch protocol
        provider.Potluck.Host.RemoveStreamHandler(ChainProtocol.BatchBlocksId); // (and before batch blocks: single-payment blocks only)
        var requester = await cluster.AddAsync("requester", provide: false);
        await requester.Client.WaitForProvidersAsync(1, ct);

        var results = await Task.WhenAll(Enumerable.Range(0, 4).Select(i => requester.Node.SubmitAsync(OutcomeAttackTests.HashTask($"old {i}", 100), ct)));
        Assert.That(results.Select(r => r.Status), Is.All.EqualTo(ExecutionStatus.Success));
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        await requester.Node.Chain!.WhenIdleAsync(ct);

        var mine = ChainAudit.Verify(requester.Ledger);
        var theirs = ChainAudit.Verify(provider.Ledger);
        Assert.That(mine.Problems, Is.Empty);
        Assert.That(theirs.Problems, Is.Empty);
        Assert.That((mine.Proposals, mine.Unlinked), Is.EqualTo((4L, 0L)), "four payments, each linked");
        Assert.That((theirs.Agreements, provider.Node.Chain!.Agreed, provider.Node.Chain.Refused), Is.EqualTo((4L, 4L, 0L)));
        Assert.That(mine.Paid, Is.EqualTo(results.Sum(r => r.Cost)).And.EqualTo(theirs.Earned));
    });

    [Test]
    public void FullBatch_IsAnswered_OneMoreIsResetUnanswered_AndTheProviderStillLinksHonestPayments() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 141);
        var provider = await cluster.AddAsync("provider", provide: true);
        var requester = await cluster.AddAsync("requester", provide: false);
        await requester.Client.WaitForProvidersAsync(1, ct);

        // Well-formed blocks, but none a proposal from its author to this provider: each is refused, none penalised.
        var stranger = PrivateKey.FromRandom(new Random(7));
        byte[] Foreign(int i) => ChainCodec.Encode(new ChainProposal
        {
            Proposal = SignedBlock.Sign(new ChainBlock
            {
                Author = stranger.PeerId.ToBytes(),
                Seq = 1,
                Previous = SignedBlock.Genesis,
                Counterparty = provider.PeerId.ToBytes(),
                ReceiptId = Receipt.ComputeId(BitConverter.GetBytes(i), provider.PeerId, stranger.PeerId),
                LeaseId = BitConverter.GetBytes(i),
                Amount = 1,
                FuelUsed = 1,
            }, stranger).EnvelopeBytes,
        });
        // A full batch is answered, each refused, none penalised.
        await using (var stream = await requester.Potluck.Host.NewStreamAsync(provider.PeerId, [ChainProtocol.BatchId], ct))
        {
            Assert.That(stream.Protocol, Is.EqualTo(ChainProtocol.BatchId));
            for (var i = 0; i < ChainProtocol.MaxProposalsPerStream; i++)
            {
                await LengthPrefixed.WriteAsync(stream.Output, Foreign(i), ct);
            }
            await stream.Output.CompleteAsync();
            for (var i = 0; i < ChainProtocol.MaxProposalsPerStream; i++)
            {
                var reply = await LengthPrefixed.ReadAsync(stream.Input, 4096, ChainProtocol.BatchId, ct);
                Assert.That(ChainCodec.TryDecode(reply, 4096, out ChainAnswer? answer), Is.True);
                Assert.That(answer!.Status, Is.EqualTo(ChainAnswerStatus.Refused));
            }
            Assert.That(await LengthPrefixed.ReadAsync(stream.Input, 4096, ChainProtocol.BatchId, ct), Is.Null, "then the end");
        }
        Assert.That((provider.Node.Chain!.Refused, provider.Node.Chain.Agreed), Is.EqualTo(((long)ChainProtocol.MaxProposalsPerStream, 0L)));

        // One more than the limit: the stream is reset before anything is answered.
        await using (var stream = await requester.Potluck.Host.NewStreamAsync(provider.PeerId, [ChainProtocol.BatchId], ct))
        {
            for (var i = 0; i <= ChainProtocol.MaxProposalsPerStream; i++)
            {
                await LengthPrefixed.WriteAsync(stream.Output, Foreign(100 + i), ct);
            }
            await stream.Output.CompleteAsync();
            byte[]? first = null;
            try
            {
                first = await LengthPrefixed.ReadAsync(stream.Input, 4096, ChainProtocol.BatchId, ct);
            }
            catch (Exception e) when (e is not AssertionException)
            {
                // reset: as expected
            }
            Assert.That(first, Is.Null, "no answer to an oversized batch");
        }
        Assert.That((provider.Node.Chain!.Refused, provider.Node.Chain.Agreed), Is.EqualTo(((long)ChainProtocol.MaxProposalsPerStream, 0L)), "nothing of it was handled");

        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("honest", 100), ct);
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        await requester.Node.Chain!.WhenIdleAsync(ct);
        Assert.That(ChainAudit.Verify(requester.Ledger).Unlinked, Is.Zero, "the honest payment is linked");
        Assert.That(provider.Node.Chain.Agreed, Is.EqualTo(1));
    });

    /// <summary>
    /// A requester's chain whose odd seqs pay another provider and even seqs this one: each proposal on a stream here comes
    /// with a block before it that this provider does not hold. The receipts paid to this provider are recorded as earned.
    /// </summary>
    private static (ChainProposal[] Messages, SignedBlock[] Chain) PayEvenSeqs(TrustCluster.Member provider, PrivateKey requester, int count)
    {
        var other = PrivateKey.FromRandom(new Random(9));
        var chain = new SignedBlock[(2 * count) + 1];
        var messages = new ChainProposal[count];
        var previous = SignedBlock.Genesis;
        for (var seq = 1; seq <= 2 * count; seq++)
        {
            var payee = seq % 2 == 0 ? provider.Key : other;
            var lease = BitConverter.GetBytes(7000 + seq);
            var attestation = SignedAttestation.Create(new Attestation
            {
                LeaseId = lease,
                Requester = requester.PeerId.ToBytes(),
                Provider = payee.PeerId.ToBytes(),
                ModuleHash = new byte[32],
                InputHash = new byte[32],
                OutputHash = new byte[32],
                FuelUsed = 1_000_000,
            }, payee);
            var receipt = SignedReceipt.Create(Receipt.For(attestation, 10, DateTimeOffset.UnixEpoch), requester);
            if (payee == provider.Key)
            {
                Assert.That(provider.Ledger.Record(receipt, LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.Recorded));
            }
            chain[seq] = SignedBlock.Sign(new ChainBlock
            {
                Author = requester.PeerId.ToBytes(),
                Seq = (ulong)seq,
                Previous = previous,
                Counterparty = payee.PeerId.ToBytes(),
                Kind = BlockKind.Proposal,
                ReceiptId = receipt.Receipt.ReceiptId,
                LeaseId = lease,
                Amount = receipt.Receipt.Amount,
                FuelUsed = receipt.Receipt.FuelUsed,
            }, requester);
            previous = chain[seq].Hash;
            if (seq % 2 == 0)
            {
                messages[(seq / 2) - 1] = new ChainProposal { Proposal = chain[seq].EnvelopeBytes, Previous = chain[seq - 1].EnvelopeBytes };
            }
        }
        return (messages, chain);
    }

    /// <summary>
    /// The blocks before a stream's proposals that the provider does not hold are stored together in one transaction (BEGIN,
    /// one INSERT each, COMMIT), not one transaction each (BEGIN, INSERT, COMMIT per block, as before); every one is held
    /// afterwards, and every proposal agreed.
    /// </summary>
    [Test]
    public void BlocksBeforeAStreamsProposals_AreStoredInOneTransaction_AndEveryProposalIsAgreed() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 144);
        var provider = await cluster.AddAsync("provider", provide: true);
        var requester = PrivateKey.FromRandom(new Random(10));
        const int count = 8;
        var (messages, chain) = PayEvenSeqs(provider, requester, count);
        await cluster.Hub.WhenIdleAsync(ct);

        var before = provider.Ledger.WriterStatements;
        var answers = provider.Node.Chain!.AnswerAll(requester.PeerId, messages, out var pairs);
        var ran = provider.Ledger.WriterStatements - before;

        Assert.That(answers.Select(a => a.Status), Is.All.EqualTo(ChainAnswerStatus.Agreed));
        Assert.That(pairs, Is.All.Not.Null);
        Assert.That(Enumerable.Range(1, 2 * count).Select(seq => provider.Ledger.ChainBlockAt(requester.PeerId, (ulong)seq)),
            Is.EqualTo(Enumerable.Range(1, 2 * count).Select(seq => chain[seq].EnvelopeBytes)), "every block before a proposal, and every proposal, held");
        // The 8 blocks before in one transaction (BEGIN, 8 INSERTs, COMMIT), then the agreements' group commit (51 statements
        // for these 8 proposals). One transaction per block before (BEGIN, INSERT, COMMIT) ran 75 in all (main), 14 more.
        Assert.That(ran, Is.EqualTo(51 + count + 2), "the blocks before stored in one transaction");
    });

    /// <summary>
    /// A block before a proposal that conflicts with one the provider holds (another block of the requester at that seq) is a
    /// fork: the proposals of the stream before it are agreed, that one is refused as a fork, the later ones as a forker's,
    /// and the proof is held.
    /// </summary>
    [Test]
    public void BlockBeforeAProposal_ThatForks_RefusesThatProposalAndTheForkersLaterOnes_AndAgreesTheEarlierOnes() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 143);
        var provider = await cluster.AddAsync("provider", provide: true);
        var requester = PrivateKey.FromRandom(new Random(8));
        var (messages, chain) = PayEvenSeqs(provider, requester, 4);
        await cluster.Hub.WhenIdleAsync(ct);
        // Another block of the requester at seq 3, held before the stream arrives.
        var fork = SignedBlock.Sign(new ChainBlock
        {
            Author = requester.PeerId.ToBytes(),
            Seq = 3,
            Previous = chain[2].Hash,
            Counterparty = chain[3].Block.Counterparty,
            Kind = BlockKind.Proposal,
            ReceiptId = Receipt.ComputeId([1, 2, 3], chain[3].Counterparty, requester.PeerId),
            LeaseId = [1, 2, 3],
            Amount = 1,
            FuelUsed = 1,
        }, requester);
        Assert.That(provider.Ledger.StoreForeignBlock(fork, keep: false, out _), Is.EqualTo(ForeignBlockResult.Stored));

        var answers = provider.Node.Chain!.AnswerAll(requester.PeerId, messages, out var pairs);
        Assert.That(answers.Select(a => a.Status), Is.EqualTo(new[] { ChainAnswerStatus.Agreed, ChainAnswerStatus.Refused, ChainAnswerStatus.Refused, ChainAnswerStatus.Refused }));
        Assert.That(answers[1].Detail, Is.EqualTo("fork"));
        Assert.That(answers.Skip(2).Select(a => a.Detail), Is.All.EqualTo("this node holds a fork proof against you"));
        Assert.That(pairs[0]?.Agreement.Seq, Is.EqualTo(1UL));
        Assert.That(pairs.Skip(1), Is.All.Null);
        Assert.That(provider.Node.Chain.IsForker(requester.PeerId), Is.True);
        Assert.That(provider.Ledger.ChainBlockAt(requester.PeerId, 3), Is.EqualTo(fork.EnvelopeBytes), "the block held stays");
        Assert.That(provider.Ledger.OwnBlocks(0, 10), Has.Count.EqualTo(1), "one agreement only");
    });
}
