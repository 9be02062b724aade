using MessagePack;
using Microsoft.Extensions.Time.Testing;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;
using Potluck.Tests;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Accounting;

/// <summary>
/// Batch blocks (<see cref="ChainBlock.Payments"/>): encoding round trips, the blocks written before them still decode,
/// the bounds on count, bytes, sums and ids, one payment in one own block only, forks of batch blocks, and how a round's
/// payments are cut into batches.
/// </summary>
public class ChainBatchBlockEncodingTests
{
    private static readonly ChainOptions Chain = new();

    private static List<SignedReceipt> Receipts(int count, int first = 1) =>
        [.. Enumerable.Range(first, count).Select(i => MakeReceipt(Lease(i), Requester, Provider))];

    private static ChainBlock Batch(IReadOnlyList<ChainPayment> payments, ulong seq = 1, byte[]? previous = null) => new()
    {
        Author = Requester.PeerId.ToBytes(),
        Seq = seq,
        Previous = previous ?? SignedBlock.Genesis,
        Counterparty = Provider.PeerId.ToBytes(),
        Kind = BlockKind.Proposal,
        ReceiptId = ChainBlock.BatchIdOf(payments),
        LeaseId = [],
        Amount = payments.Sum(p => p.Amount),
        FuelUsed = (ulong)payments.Sum(p => (long)p.FuelUsed),
        Payments = [.. payments],
    };

    private static byte[] RawSigned(ChainBlock block, PrivateKey key) =>
        SignedEnvelope.Seal(key, SignedBlock.Domain, MessagePackSerializer.Serialize(block, SignedEnvelope.Untrusted)).Encode();

    [Test]
    public void BatchBlock_RoundTrips_SumsItsPayments_AndLinksOnlyToAnAgreementOverTheSamePayments()
    {
        var receipts = Receipts(5);
        var proposal = SignedBlock.ProposeBatch([.. receipts.Select(r => r.Receipt)], Requester, 1, SignedBlock.Genesis, Epoch);

        Assert.That(SignedBlock.Decode(proposal.EnvelopeBytes, Chain, out var decoded), Is.EqualTo(BlockStatus.Valid));
        Assert.That(decoded!.Hash, Is.EqualTo(proposal.Hash));
        Assert.That(decoded.Block.IsBatch, Is.True);
        Assert.That(decoded.Block.Payments!.Select(p => (p.ReceiptId, p.LeaseId, p.Amount, p.FuelUsed)),
            Is.EqualTo(receipts.Select(r => (r.Receipt.ReceiptId, r.Receipt.LeaseId, r.Receipt.Amount, r.Receipt.FuelUsed))));
        Assert.That(decoded.Block.Amount, Is.EqualTo(receipts.Sum(r => r.Receipt.Amount)), "key 9 is the sum, so totals read both kinds alike");
        Assert.That(decoded.Block.ReceiptId, Is.EqualTo(ChainBlock.BatchIdOf(decoded.Block.Payments!)));
        Assert.That(receipts.Select(r => r.Receipt.ReceiptId), Has.None.EqualTo(decoded.Block.ReceiptId), "a batch id is never a receipt's id");

        var agreement = ChainBlockTests.Agreement(proposal, Provider, 1, SignedBlock.Genesis);
        Assert.That(proposal.LinkedBy(agreement), Is.EqualTo(BlockStatus.Valid));
        // An agreement over other payments with the same totals and batch id can not be built (the id covers the receipt
        // ids); one that differs in a payment's amount and fuel, with the sums kept, does not link.
        var skewed = decoded.Block.Payments!.Select((p, i) => new ChainPayment
        {
            ReceiptId = p.ReceiptId, LeaseId = p.LeaseId, Amount = p.Amount + (i == 0 ? 1 : i == 1 ? -1 : 0), FuelUsed = p.FuelUsed,
        }).ToList();
        var other = SignedBlock.Sign(new ChainBlock
        {
            Author = Provider.PeerId.ToBytes(), Seq = 1, Previous = SignedBlock.Genesis, Counterparty = Requester.PeerId.ToBytes(),
            LinkSeq = 1, LinkHash = proposal.Hash, Kind = BlockKind.Agreement, ReceiptId = proposal.Block.ReceiptId, LeaseId = [],
            Amount = proposal.Block.Amount, FuelUsed = proposal.Block.FuelUsed, Payments = skewed,
        }, Provider);
        Assert.That(proposal.LinkedBy(other), Is.EqualTo(BlockStatus.BadLink));
    }

    [Test]
    public void PreBatchBlock_WithoutKey12_StillDecodes_AsOnePayment_AndASingleBlockIsNotABatch()
    {
        var r = MakeReceipt(Lease(1), Requester, Provider).Receipt;
        var old = new PreBatchHalfBlock
        {
            Author = Requester.PeerId.ToBytes(), Seq = 1, Previous = SignedBlock.Genesis, Counterparty = Provider.PeerId.ToBytes(),
            Kind = BlockKind.Proposal, ReceiptId = r.ReceiptId, LeaseId = r.LeaseId, Amount = r.Amount, FuelUsed = r.FuelUsed,
        };
        var bytes = SignedEnvelope.Seal(Requester, SignedBlock.Domain, MessagePackSerializer.Serialize(old, SignedEnvelope.Untrusted)).Encode();

        Assert.That(SignedBlock.Decode(bytes, Chain, out var block), Is.EqualTo(BlockStatus.Valid));
        Assert.That(block!.Block.IsBatch, Is.False);
        Assert.That(block.Block.AllPayments.Single().SameAs(ChainPayment.Of(r)), Is.True);
        Assert.That(block.Payload, Is.EqualTo(MessagePackSerializer.Serialize(old, SignedEnvelope.Untrusted)), "hashed as it was written");
        var agreement = ChainBlockTests.Agreement(block, Provider, 1, SignedBlock.Genesis);
        Assert.That(block.LinkedBy(agreement), Is.EqualTo(BlockStatus.Valid), "an old proposal is agreed with a single-payment agreement");
    }

    [Test]
    public void BatchBlock_OutOfBounds_IsRefusedBySignAndByDecode_BeforeItsSignature()
    {
        var payments = Receipts(ChainBlock.MaxPayments + 1).Select(r => ChainPayment.Of(r.Receipt)).ToList();
        var two = payments.Take(2).ToList();
        var cases = new (string Name, ChainBlock Block, BlockStatus Expected)[]
        {
            ("no payment", Batch([]) , BlockStatus.Malformed),
            ("over the count", Batch(payments), BlockStatus.Malformed),
            ("a payment twice", Batch([two[0], two[1], two[0]]), BlockStatus.Malformed),
            ("a lease id at key 8", new ChainBlock { Author = Requester.PeerId.ToBytes(), Previous = SignedBlock.Genesis, Seq = 1, Counterparty = Provider.PeerId.ToBytes(), ReceiptId = ChainBlock.BatchIdOf(two), LeaseId = Lease(1), Amount = two.Sum(p => p.Amount), FuelUsed = (ulong)two.Sum(p => (long)p.FuelUsed), Payments = two }, BlockStatus.Malformed),
            ("amount not the sum", new ChainBlock { Author = Requester.PeerId.ToBytes(), Previous = SignedBlock.Genesis, Seq = 1, Counterparty = Provider.PeerId.ToBytes(), ReceiptId = ChainBlock.BatchIdOf(two), LeaseId = [], Amount = two.Sum(p => p.Amount) + 1, FuelUsed = (ulong)two.Sum(p => (long)p.FuelUsed), Payments = two }, BlockStatus.Malformed),
            ("fuel not the sum", new ChainBlock { Author = Requester.PeerId.ToBytes(), Previous = SignedBlock.Genesis, Seq = 1, Counterparty = Provider.PeerId.ToBytes(), ReceiptId = ChainBlock.BatchIdOf(two), LeaseId = [], Amount = two.Sum(p => p.Amount), FuelUsed = 1, Payments = two }, BlockStatus.Malformed),
            ("amounts that overflow", Overflowing(two), BlockStatus.Malformed),
            ("a batch id of other payments", new ChainBlock { Author = Requester.PeerId.ToBytes(), Previous = SignedBlock.Genesis, Seq = 1, Counterparty = Provider.PeerId.ToBytes(), ReceiptId = ChainBlock.BatchIdOf([two[1], two[0]]), LeaseId = [], Amount = two.Sum(p => p.Amount), FuelUsed = (ulong)two.Sum(p => (long)p.FuelUsed), Payments = two }, BlockStatus.ReceiptIdMismatch),
            ("a receipt id not of its lease and parties", Batch([two[0], new ChainPayment { ReceiptId = two[1].ReceiptId, LeaseId = Lease(77), Amount = two[1].Amount, FuelUsed = two[1].FuelUsed }]), BlockStatus.ReceiptIdMismatch),
            ("a payment of other parties", Batch([two[0], ChainPayment.Of(MakeReceipt(Lease(78), Stranger, Provider).Receipt)]), BlockStatus.ReceiptIdMismatch),
        };
        foreach (var (name, block, expected) in cases)
        {
            Assert.Throws<ArgumentException>(() => SignedBlock.Sign(block, Requester), name);
            // Signed by the wrong key as well: the shape is refused first, so no signature is checked for it.
            Assert.That(SignedBlock.Decode(RawSigned(block, Stranger), Chain, out var decoded), Is.EqualTo(expected), name);
            Assert.That(decoded, Is.Null, name);
        }
        var huge = RawSigned(Batch(payments), Stranger);
        Assert.That(SignedBlock.Decode(huge, Chain with { MaxBlockBytes = 2048, MaxPayloadBytes = 2000 }, out _), Is.EqualTo(BlockStatus.TooLarge), "over the byte limit: not even decoded");
        Assert.That(SignedBlock.Decode(RawSigned(Batch(two), Stranger), Chain, out _), Is.EqualTo(BlockStatus.WrongSigner), "a well-shaped batch is checked, and this one's signer is not its author");
    }

    private static ChainBlock Overflowing(List<ChainPayment> two)
    {
        var big = two.Select(p => new ChainPayment { ReceiptId = p.ReceiptId, LeaseId = p.LeaseId, Amount = long.MaxValue, FuelUsed = p.FuelUsed }).ToList();
        return new ChainBlock
        {
            Author = Requester.PeerId.ToBytes(), Previous = SignedBlock.Genesis, Seq = 1, Counterparty = Provider.PeerId.ToBytes(),
            ReceiptId = ChainBlock.BatchIdOf(big), LeaseId = [], Amount = long.MaxValue, FuelUsed = (ulong)two.Sum(p => (long)p.FuelUsed), Payments = big,
        };
    }

    [Test]
    public void OwnChain_HoldsAPaymentInOneBlockOnly_WhicheverKind_Durably()
    {
        var dir = Path.Combine(Path.GetTempPath(), "potluck-chain-tests", Guid.NewGuid().ToString("N"));
        try
        {
            var receipts = Receipts(4);
            SignedBlock Single(SignedReceipt r, ulong seq, byte[] prev) => ChainBlockTests.Proposal(r, Requester, seq, prev);
            (byte[], IReadOnlyList<byte[]>?, Func<ulong, byte[], SignedBlock>) BatchOf(params SignedReceipt[] rs) =>
                (ChainBlock.BatchIdOf([.. rs.Select(r => ChainPayment.Of(r.Receipt))]), rs.Select(r => r.Receipt.ReceiptId).ToArray(),
                 (s, p) => SignedBlock.ProposeBatch([.. rs.Select(r => r.Receipt)], Requester, s, p, Epoch));
            byte[][] written;
            using (var ledger = CreditLedger.Open(dir, Requester.PeerId, Options, new FakeTimeProvider(Epoch)))
            {
                var (single, _) = ledger.AppendOwnBlock(receipts[0].Receipt.ReceiptId, (s, p) => Single(receipts[0], s, p));
                var first = ledger.AppendOwnBatches([BatchOf(receipts[1], receipts[2])]);
                Assert.That((first[0].Appended, first[0].Block.Seq), Is.EqualTo((true, 2UL)));

                // A batch naming a payment held in a batch, one naming a payment held in a single block, and a single block
                // for a payment in a batch: each returns the block that holds it, and signs nothing.
                var again = ledger.AppendOwnBatches([
                    (BatchOf(receipts[3], receipts[2]).Item1, BatchOf(receipts[3], receipts[2]).Item2, (_, _) => throw new AssertionException("not signed")),
                    (BatchOf(receipts[0], receipts[3]).Item1, BatchOf(receipts[0], receipts[3]).Item2, (_, _) => throw new AssertionException("not signed")),
                    (receipts[1].Receipt.ReceiptId, null, (_, _) => throw new AssertionException("not signed")),
                ]);
                Assert.That(again.Select(b => (b.Appended, b.Block.Seq)), Is.EqualTo(new[] { (false, 2UL), (false, 1UL), (false, 2UL) }));
                Assert.That(ledger.ChainHead().Seq, Is.EqualTo(2UL));

                var last = ledger.AppendOwnBatches([BatchOf(receipts[3])]);
                Assert.That((last[0].Appended, last[0].Block.Seq, last[0].Block.Block.IsBatch), Is.EqualTo((true, 3UL, true)));
                written = [single.EnvelopeBytes, first[0].Block.EnvelopeBytes, last[0].Block.EnvelopeBytes];
            }
            using var reopened = CreditLedger.Open(dir, Requester.PeerId, Options, new FakeTimeProvider(Epoch));
            Assert.That(reopened.OwnBlocks(0, 10), Is.EqualTo(written), "committed and durable");
            Assert.That(reopened.AppendOwnBlock(receipts[2].Receipt.ReceiptId, (_, _) => throw new AssertionException("not signed")).Block.Seq, Is.EqualTo(2UL),
                "and still one block per payment after a restart");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void TwoBatchBlocksAtOneSeq_AreAForkProof_CheckedOffline()
    {
        var receipts = Receipts(4);
        var a = SignedBlock.ProposeBatch([receipts[0].Receipt, receipts[1].Receipt], Requester, 1, SignedBlock.Genesis, Epoch);
        var b = SignedBlock.ProposeBatch([receipts[2].Receipt, receipts[3].Receipt], Requester, 1, SignedBlock.Genesis, Epoch);
        var single = ChainBlockTests.Proposal(receipts[0], Requester, 1, SignedBlock.Genesis);

        Assert.That(ForkProof.From(a, b, out var proof), Is.EqualTo(BlockStatus.Valid));
        Assert.That(ForkProof.Check(proof!.Encoded, Chain, out var checkedProof), Is.EqualTo(BlockStatus.Valid));
        Assert.That((checkedProof!.Author, checkedProof.Seq), Is.EqualTo((Requester.PeerId, 1UL)));
        Assert.That(ForkProof.From(a, single, out _), Is.EqualTo(BlockStatus.Valid), "a batch and a single block at one seq fork too");
        Assert.That(ForkProof.From(a, a, out _), Is.EqualTo(BlockStatus.NotAFork));
    }

    [Test]
    public void RoundsPayments_AreCutByCountAndByBytes_AndOnePerBlockWithoutBatches()
    {
        var receipts = Receipts(130).Select(r => r.Receipt).ToList();
        Assert.That(TrustChainService.Batches(receipts, Chain.MaxPayloadBytes).Select(b => b.Count), Is.EqualTo(new[] { 64, 64, 2 }));
        var singles = TrustChainService.Batches(receipts, 0);
        Assert.That((singles.Count, singles.All(b => b.Count == 1)), Is.EqualTo((130, true)));
        var small = TrustChainService.Batches(receipts, 1024);
        Assert.That(small.SelectMany(b => b).Select(r => r.ReceiptId), Is.EqualTo(receipts.Select(r => r.ReceiptId)), "every payment once, in order");
        Assert.That(small, Has.All.Count.LessThan(64));
        foreach (var batch in small.Where(b => b.Count > 1))
        {
            var block = SignedBlock.ProposeBatch(batch, Requester, 1, SignedBlock.Genesis, Epoch);
            Assert.That(block.Payload, Has.Length.LessThanOrEqualTo(1024), "a cut batch fits the payload limit it was cut for");
        }
        var full = SignedBlock.ProposeBatch(receipts.Take(64).ToList(), Requester, 1, SignedBlock.Genesis, Epoch);
        Assert.That(SignedBlock.Decode(full.EnvelopeBytes, Chain, out _), Is.EqualTo(BlockStatus.Valid), "a full batch fits the default limits");
    }
    [Test]
    public void Recovery_AcceptsAChainOfSingleAndBatchBlocks_WithTheirLinks()
    {
        var rows = new List<(SignedBlock Proposal, SignedBlock Agreement)>();
        var (previous, providerPrevious) = (SignedBlock.Genesis, SignedBlock.Genesis);
        for (var seq = 1UL; seq <= 3; seq++)
        {
            var receipts = Receipts(seq == 2 ? 3 : 1, first: 10 * (int)seq).Select(r => r.Receipt).ToList();
            var proposal = receipts.Count == 1
                ? ChainBlockTests.Proposal(MakeReceipt(Lease(10 * (int)seq), Requester, Provider), Requester, seq, previous)
                : SignedBlock.ProposeBatch(receipts, Requester, seq, previous, Epoch);
            var agreement = ChainBlockTests.Agreement(proposal, Provider, seq, providerPrevious);
            rows.Add((proposal, agreement));
            (previous, providerPrevious) = (proposal.Hash, agreement.Hash);
        }
        var answer = ChainCodec.Encode(new ChainQueryAnswer
        {
            Blocks = [.. rows.Select(r => r.Proposal.EnvelopeBytes)], Links = [.. rows.Select(r => r.Agreement.EnvelopeBytes)],
        });

        Assert.That(ChainRecovery.CheckAnswer(Requester.PeerId, Provider.PeerId, 0, 16, answer, Chain, out var blocks, out _), Is.EqualTo(RecoveryStatus.Valid));
        Assert.That(blocks.Select(b => (b.Block.Seq, b.Block.Block.IsBatch)), Is.EqualTo(new[] { (1UL, false), (2UL, true), (3UL, false) }));
    }

    [Test]
    public void HistoryCheck_CountsABatchBlocksEarnings_AsTheSumOfItsPayments()
    {
        var payer = Key(42);
        var receipts = Enumerable.Range(0, 3).Select(i => MakeReceipt(Lease(400 + i), payer, Requester).Receipt).ToList();
        var proposal = SignedBlock.ProposeBatch(receipts, payer, 1, SignedBlock.Genesis, Epoch);
        var agreement = ChainBlockTests.Agreement(proposal, Requester, 1, SignedBlock.Genesis);
        var answer = ChainCodec.Encode(new ChainQueryAnswer { Blocks = [agreement.EnvelopeBytes], Links = [proposal.EnvelopeBytes] });

        Assert.That(ChainHistoryCheck.Verify(Requester.PeerId, [1], answer, Chain, _ => null, out var payments, out _), Is.EqualTo(HistoryStatus.Valid));
        Assert.That(payments.Select(p => (p.Seq, p.Amount, p.Earned)), Is.EqualTo(new[] { (1UL, receipts.Sum(r => r.Amount), true) }));
        Assert.That(ChainHistoryCheck.VerifiedEarnings(payments, p => p == payer.PeerId), Is.EqualTo(receipts.Sum(r => r.Amount)));
    }
}
