using MessagePack;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Leasing;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// Batch blocks (<see cref="ChainBlock.Payments"/>): one proposal and one agreement for several payments between the same
/// two parties. A provider agrees only when every payment in the batch is one it recorded as earned from the proposer
/// (same lease, amount and fuel) and in no other block of its chain; anything else refuses the whole batch with nothing
/// written. Malformed and oversized batches are refused before any signature is checked; two batch blocks at one seq are
/// a fork proof like any two blocks.
/// </summary>
[Category("Adversarial")]
public class ChainBatchBlockTests
{
    /// <summary><paramref name="count"/> receipts the provider recorded as earned from <paramref name="requester"/>.</summary>
    private static List<SignedReceipt> Earned(TrustCluster.Member provider, PrivateKey requester, int count, int first = 1)
    {
        var receipts = new List<SignedReceipt>();
        for (var i = first; i < first + count; i++)
        {
            var receipt = MakeReceipt(provider.Key, requester, i);
            Assert.That(provider.Ledger.Record(receipt, LedgerEntryKind.Earned), Is.EqualTo(LedgerResult.Recorded));
            receipts.Add(receipt);
        }
        return receipts;
    }

    private static SignedReceipt MakeReceipt(PrivateKey payee, PrivateKey payer, int i, ulong price = 10)
    {
        var attestation = SignedAttestation.Create(new Attestation
        {
            LeaseId = BitConverter.GetBytes(9000 + i),
            Requester = payer.PeerId.ToBytes(),
            Provider = payee.PeerId.ToBytes(),
            ModuleHash = new byte[32],
            InputHash = new byte[32],
            OutputHash = new byte[32],
            FuelUsed = 1_000_000,
        }, payee);
        return SignedReceipt.Create(Receipt.For(attestation, price, DateTimeOffset.UnixEpoch), payer);
    }

    /// <summary>A batch block's fields over <paramref name="payments"/>, sums and batch id as an honest proposer writes them.</summary>
    private static ChainBlock BatchOf(PrivateKey author, PrivateKey counterparty, ulong seq, byte[] previous, List<ChainPayment> payments) => new()
    {
        Author = author.PeerId.ToBytes(),
        Seq = seq,
        Previous = previous,
        Counterparty = counterparty.PeerId.ToBytes(),
        Kind = BlockKind.Proposal,
        ReceiptId = ChainBlock.BatchIdOf(payments),
        LeaseId = [],
        Amount = payments.Sum(p => p.Amount),
        FuelUsed = (ulong)payments.Sum(p => (long)p.FuelUsed),
        Payments = payments,
    };

    /// <summary>Signed as it is, whatever its shape (<see cref="SignedBlock.Sign"/> would refuse a malformed one): an attacker's bytes.</summary>
    private static byte[] RawSigned(ChainBlock block, PrivateKey key) =>
        SignedEnvelope.Seal(key, SignedBlock.Domain, MessagePackSerializer.Serialize(block, SignedEnvelope.Untrusted)).Encode();

    private static ChainProposal Message(byte[] proposal, SignedBlock? previous = null) =>
        new() { Proposal = proposal, Previous = previous?.EnvelopeBytes ?? [] };

    private static void AssertNothingWritten(TrustCluster.Member provider, PrivateKey requester, long statementsBefore, string why)
    {
        Assert.That(provider.Ledger.WriterStatements - statementsBefore, Is.Zero, $"{why}: no statement written");
        Assert.That(provider.Ledger.OwnBlocks(0, 10), Is.Empty, $"{why}: no agreement");
        Assert.That(provider.Ledger.HoldsBlocksOf(requester.PeerId), Is.False, $"{why}: the proposal is not kept");
    }

    [Test]
    public void BatchWithOneUnearnedForgedDuplicatedOrOverAmountPayment_IsRefusedWhole_NothingWritten_TheHonestBatchIsAgreed() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 160);
        var provider = await cluster.AddAsync("provider", provide: true);
        var requester = PrivateKey.FromRandom(new Random(16));
        var stranger = PrivateKey.FromRandom(new Random(17));
        await cluster.Hub.WhenIdleAsync(ct);
        var earned = Earned(provider, requester, 5);
        var honest = earned.Select(r => ChainPayment.Of(r.Receipt)).ToList();
        // A receipt another requester paid this provider: earned here, but not from this requester.
        var strangers = Earned(provider, stranger, 1, first: 50)[0].Receipt;

        var unearned = ChainPayment.Of(MakeReceipt(provider.Key, requester, 99).Receipt); // well formed, never recorded here
        var cases = new (string Name, List<ChainPayment> Payments)[]
        {
            ("unearned", [.. honest, unearned]),
            ("over-amount", [.. honest.Take(4), new ChainPayment { ReceiptId = honest[4].ReceiptId, LeaseId = honest[4].LeaseId, Amount = honest[4].Amount + 1, FuelUsed = honest[4].FuelUsed }]),
            ("other fuel", [.. honest.Take(4), new ChainPayment { ReceiptId = honest[4].ReceiptId, LeaseId = honest[4].LeaseId, Amount = honest[4].Amount, FuelUsed = honest[4].FuelUsed + 1 }]),
            ("forged receipt id", [.. honest.Take(4), new ChainPayment { ReceiptId = strangers.ReceiptId, LeaseId = strangers.LeaseId, Amount = strangers.Amount, FuelUsed = strangers.FuelUsed }]),
            ("duplicated", [.. honest, honest[2]]),
        };
        var refused = provider.Node.Chain!.Refused;
        foreach (var (name, payments) in cases)
        {
            var before = provider.Ledger.WriterStatements;
            var answers = provider.Node.Chain!.AnswerAll(requester.PeerId, [Message(RawSigned(BatchOf(requester, provider.Key, 1, SignedBlock.Genesis, payments), requester))], out var pairs);
            Assert.That(answers[0].Status, Is.EqualTo(ChainAnswerStatus.Refused), name);
            Assert.That(pairs[0], Is.Null, name);
            AssertNothingWritten(provider, requester, before, name);
        }

        // The honest batch of the same payments is agreed: one agreement covering all five, linked, and audited.
        var proposal = SignedBlock.Sign(BatchOf(requester, provider.Key, 1, SignedBlock.Genesis, honest), requester);
        var ok = provider.Node.Chain!.AnswerAll(requester.PeerId, [Message(proposal.EnvelopeBytes)], out var agreed);
        Assert.That(ok[0].Status, Is.EqualTo(ChainAnswerStatus.Agreed), ok[0].Detail);
        Assert.That(proposal.LinkedBy(agreed[0]!.Value.Agreement), Is.EqualTo(BlockStatus.Valid));
        Assert.That(agreed[0]!.Value.Agreement.Block.Payments!.Select(p => p.ReceiptId), Is.EqualTo(honest.Select(p => p.ReceiptId)));
        var audit = ChainAudit.Verify(provider.Ledger);
        Assert.That(audit.Problems, Is.Empty);
        Assert.That((audit.Agreements, audit.PaymentsReceived, audit.Earned), Is.EqualTo((1L, 5L, 50L)));
    });

    [Test]
    public void OversizedOrOverCountBatch_IsRefusedBeforeAnySignatureIsChecked() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 161);
        var provider = await cluster.AddAsync("provider", provide: true);
        var requester = PrivateKey.FromRandom(new Random(18));
        await cluster.Hub.WhenIdleAsync(ct);
        var earned = Earned(provider, requester, ChainBlock.MaxPayments + 1);
        var payments = earned.Select(r => ChainPayment.Of(r.Receipt)).ToList();
        // 65 payments: within the byte limit, over the count. 80 with the longest lease ids: over the byte limit.
        var overCount = RawSigned(BatchOf(requester, provider.Key, 1, SignedBlock.Genesis, payments), requester);
        Assert.That(overCount.Length, Is.LessThanOrEqualTo(new ChainOptions().MaxBlockBytes), "refused for its count, not its size");
        var wide = Enumerable.Range(0, 80).Select(i =>
        {
            var lease = new byte[Attestation.MaxLeaseIdLength];
            BitConverter.GetBytes(i).CopyTo(lease, 0);
            return new ChainPayment { ReceiptId = Receipt.ComputeId(lease, provider.PeerId, requester.PeerId), LeaseId = lease, Amount = 1, FuelUsed = 1 };
        }).ToList();
        var overBytes = RawSigned(BatchOf(requester, provider.Key, 1, SignedBlock.Genesis, wide), requester);
        Assert.That(overBytes.Length, Is.GreaterThan(new ChainOptions().MaxBlockBytes));
        // Each also with its signature broken: refused for its count or size all the same, so no signature was checked
        // first. A 2-payment batch with a broken signature shows what a signature check reports.
        static byte[] Broken(byte[] signed)
        {
            var copy = (byte[])signed.Clone();
            copy[^1] ^= 1;
            return copy;
        }
        var tampered = Broken(RawSigned(BatchOf(requester, provider.Key, 1, SignedBlock.Genesis, payments.Take(2).ToList()), requester));

        var before = provider.Ledger.WriterStatements;
        var answers = provider.Node.Chain!.AnswerAll(requester.PeerId,
            [Message(overCount), Message(overBytes), Message(Broken(overCount)), Message(Broken(overBytes))], out _);
        Assert.That(answers.Select(a => a.Status), Is.All.EqualTo(ChainAnswerStatus.Refused));
        Assert.That(answers.Select(a => a.Detail), Is.EqualTo(new[]
        {
            $"proposal: {BlockStatus.Malformed}", $"proposal: {BlockStatus.TooLarge}", $"proposal: {BlockStatus.Malformed}", $"proposal: {BlockStatus.TooLarge}",
        }));
        AssertNothingWritten(provider, requester, before, "oversized");

        var bad = provider.Node.Chain!.AnswerAll(requester.PeerId, [Message(tampered)], out _);
        Assert.That(bad[0].Detail, Is.EqualTo($"proposal: {BlockStatus.BadSignature}"));
    });

    [Test]
    public void PaymentProposedInTwoBlocks_IsRefusedTheSecondTime_NothingWritten_AndTheFirstStands() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 162);
        var provider = await cluster.AddAsync("provider", provide: true);
        var requester = PrivateKey.FromRandom(new Random(19));
        await cluster.Hub.WhenIdleAsync(ct);
        var p = Earned(provider, requester, 4).Select(r => ChainPayment.Of(r.Receipt)).ToList();

        var first = SignedBlock.Sign(BatchOf(requester, provider.Key, 1, SignedBlock.Genesis, [p[0], p[1]]), requester);
        Assert.That(provider.Node.Chain!.AnswerAll(requester.PeerId, [Message(first.EnvelopeBytes)], out _)[0].Status, Is.EqualTo(ChainAnswerStatus.Agreed));
        var head = provider.Ledger.OwnBlocks(0, 10);
        Assert.That(head, Has.Count.EqualTo(1));

        // p[1] again, in a batch at seq 2 with a new payment; then alone in a single-payment block at seq 2.
        var again = SignedBlock.Sign(BatchOf(requester, provider.Key, 2, first.Hash, [p[2], p[1]]), requester);
        var single = SignedBlock.Sign(new ChainBlock
        {
            Author = requester.PeerId.ToBytes(), Seq = 2, Previous = first.Hash, Counterparty = provider.PeerId.ToBytes(), Kind = BlockKind.Proposal,
            ReceiptId = p[1].ReceiptId, LeaseId = p[1].LeaseId, Amount = p[1].Amount, FuelUsed = p[1].FuelUsed,
        }, requester);
        foreach (var (name, block) in new[] { ("in a batch", again), ("alone", single) })
        {
            var answers = provider.Node.Chain!.AnswerAll(requester.PeerId, [Message(block.EnvelopeBytes, first)], out var pairs);
            Assert.That(answers[0].Status, Is.EqualTo(ChainAnswerStatus.Refused), name);
            Assert.That(answers[0].Detail, Is.EqualTo("this payment is linked to another block of yours already"), name);
            Assert.That(pairs[0], Is.Null, name);
            Assert.That(provider.Ledger.ChainHead().Seq, Is.EqualTo(1UL), $"{name}: nothing appended");
            Assert.That(provider.Ledger.ChainBlockAt(requester.PeerId, 2), Is.Null, $"{name}: the proposal is not kept");
            Assert.That(provider.Ledger.OwnBlocks(0, 10), Is.EqualTo(head), $"{name}: no second agreement");
        }
        Assert.That(provider.Node.Chain!.IsForker(requester.PeerId), Is.False, "not a fork: refused, nothing more");

        // The first batch sent again (its agreement lost) gets the same agreement back, not a new one.
        var retry = provider.Node.Chain!.AnswerAll(requester.PeerId, [Message(first.EnvelopeBytes)], out _);
        Assert.That(retry[0].Agreement, Is.EqualTo(head[0]));
        var audit = ChainAudit.Verify(provider.Ledger);
        Assert.That(audit.Problems, Is.Empty);
        Assert.That((audit.PaymentsReceived, audit.Earned), Is.EqualTo((2L, 20L)), "each payment counted once");
    });

    [Test]
    public void ForkOfBatchBlocks_IsDetected_Proven_AndTheForkerRefusedByABystander() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 163);
        var provider = await cluster.AddAsync("provider", provide: true);
        var bystander = await cluster.AddAsync("bystander", provide: false);
        var requester = PrivateKey.FromRandom(new Random(20));
        await cluster.Hub.WhenIdleAsync(ct);
        var p = Earned(provider, requester, 4).Select(r => ChainPayment.Of(r.Receipt)).ToList();

        var a = SignedBlock.Sign(BatchOf(requester, provider.Key, 1, SignedBlock.Genesis, [p[0], p[1]]), requester);
        var b = SignedBlock.Sign(BatchOf(requester, provider.Key, 1, SignedBlock.Genesis, [p[2], p[3]]), requester);
        Assert.That(provider.Node.Chain!.AnswerAll(requester.PeerId, [Message(a.EnvelopeBytes)], out _)[0].Status, Is.EqualTo(ChainAnswerStatus.Agreed));
        var answers = provider.Node.Chain!.AnswerAll(requester.PeerId, [Message(b.EnvelopeBytes)], out var pairs);
        await Task.Delay(TimeSpan.FromSeconds(1), cluster.Time, ct);
        await cluster.Hub.WhenIdleAsync(ct);

        Assert.That((answers[0].Status, answers[0].Detail), Is.EqualTo((ChainAnswerStatus.Refused, "fork")));
        Assert.That(pairs[0], Is.Null);
        Assert.That(provider.Node.Chain!.IsForker(requester.PeerId), Is.True, "the provider holds the proof");
        Assert.That(bystander.Node.Chain!.IsForker(requester.PeerId), Is.True, "and every node that checked it");
        var (_, proofBytes) = provider.Ledger.Forks().Single();
        Assert.That(ForkProof.Check(proofBytes, new ChainOptions(), out var proof), Is.EqualTo(BlockStatus.Valid), "a proof anyone checks offline");
        Assert.That(new[] { proof!.First.Hash, proof.Second.Hash }, Is.EquivalentTo(new[] { a.Hash, b.Hash }));
        Assert.That(provider.Ledger.OwnBlocks(0, 10), Has.Count.EqualTo(1), "one agreement only: to the first");
    });
}
