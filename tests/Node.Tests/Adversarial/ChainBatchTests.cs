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
}
