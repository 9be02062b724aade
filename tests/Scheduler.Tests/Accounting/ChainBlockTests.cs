using Microsoft.Extensions.Time.Testing;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Tests.Ledger;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Accounting;

/// <summary>Half-blocks, links, fork proofs, and the chain kept in the ledger.</summary>
public class ChainBlockTests
{
    private static readonly ChainOptions Chain = new();

    internal static SignedBlock Proposal(SignedReceipt receipt, PrivateKey requester, ulong seq, byte[] previous) =>
        SignedBlock.Sign(new ChainBlock
        {
            Author = requester.PeerId.ToBytes(),
            Seq = seq,
            Previous = previous,
            Counterparty = receipt.Provider.ToBytes(),
            Kind = BlockKind.Proposal,
            ReceiptId = receipt.Receipt.ReceiptId,
            LeaseId = receipt.Receipt.LeaseId,
            Amount = receipt.Receipt.Amount,
            FuelUsed = receipt.Receipt.FuelUsed,
            TimestampUnixMs = Epoch.ToUnixTimeMilliseconds(),
        }, requester);

    internal static SignedBlock Agreement(SignedBlock proposal, PrivateKey provider, ulong seq, byte[] previous) =>
        SignedBlock.Sign(new ChainBlock
        {
            Author = provider.PeerId.ToBytes(),
            Seq = seq,
            Previous = previous,
            Counterparty = proposal.Author.ToBytes(),
            LinkSeq = proposal.Seq,
            LinkHash = proposal.Hash,
            Kind = BlockKind.Agreement,
            ReceiptId = proposal.Block.ReceiptId,
            LeaseId = proposal.Block.LeaseId,
            Amount = proposal.Block.Amount,
            FuelUsed = proposal.Block.FuelUsed,
            Payments = proposal.Block.Payments,
            TimestampUnixMs = Epoch.ToUnixTimeMilliseconds(),
        }, provider);

    [Test]
    public void SignedBlock_RoundTrips_AndLinks()
    {
        var receipt = MakeReceipt(Lease(1), Requester, Provider);
        var proposal = Proposal(receipt, Requester, 1, SignedBlock.Genesis);
        var agreement = Agreement(proposal, Provider, 1, SignedBlock.Genesis);

        Assert.That(SignedBlock.Decode(proposal.EnvelopeBytes, Chain, out var decoded), Is.EqualTo(BlockStatus.Valid));
        Assert.That(decoded!.Hash, Is.EqualTo(proposal.Hash));
        Assert.That(proposal.LinkedBy(agreement), Is.EqualTo(BlockStatus.Valid));
        Assert.That(proposal.EnvelopeBytes.Length, Is.LessThan(Chain.MaxBlockBytes));
    }

    [Test]
    public void Decode_TamperedOrForeignOrOversized_IsRefusedWithItsReason()
    {
        var receipt = MakeReceipt(Lease(1), Requester, Provider);
        var proposal = Proposal(receipt, Requester, 1, SignedBlock.Genesis);
        var flipped = (byte[])proposal.EnvelopeBytes.Clone();
        flipped[^1] ^= 1;
        Assert.That(SignedBlock.Decode(flipped, Chain, out _), Is.EqualTo(BlockStatus.BadSignature));
        // The same payload signed by someone else: a valid signature, but not the author's.
        var stolen = SignedEnvelope.Seal(Stranger, SignedBlock.Domain, proposal.Payload).Encode();
        Assert.That(SignedBlock.Decode(stolen, Chain, out _), Is.EqualTo(BlockStatus.WrongSigner));
        // Signed under another domain (a receipt's): never a block.
        var replay = SignedEnvelope.Seal(Requester, SignatureDomains.Receipt, proposal.Payload).Encode();
        Assert.That(SignedBlock.Decode(replay, Chain, out _), Is.EqualTo(BlockStatus.BadSignature));
        Assert.That(SignedBlock.Decode(new byte[Chain.MaxBlockBytes + 1], Chain, out _), Is.EqualTo(BlockStatus.TooLarge));
        Assert.That(SignedBlock.Decode(new byte[] { 0x93, 1, 2, 3 }, Chain, out _), Is.EqualTo(BlockStatus.Malformed));
    }

    [Test]
    public void Sign_RefusesBadSequenceLinkAndReceiptId()
    {
        var receipt = MakeReceipt(Lease(1), Requester, Provider);
        Assert.Throws<ArgumentException>(() => Proposal(receipt, Requester, 1, new byte[32].Select(_ => (byte)7).ToArray()), "seq 1 needs the genesis hash");
        Assert.Throws<ArgumentException>(() => Proposal(receipt, Requester, 2, SignedBlock.Genesis), "seq 2 cannot follow genesis");
        Assert.Throws<ArgumentException>(() => Proposal(receipt, Requester, 0, SignedBlock.Genesis), "seq 0");
        Assert.Throws<ArgumentException>(() => Proposal(receipt, Provider, 1, SignedBlock.Genesis), "the payee cannot propose the payer's payment");
    }

    [Test]
    public void ForkProof_TwoBlocksOneSeq_ChecksOffline_AndForgeriesDoNot()
    {
        var a = Proposal(MakeReceipt(Lease(1), Requester, Provider), Requester, 1, SignedBlock.Genesis);
        var b = Proposal(MakeReceipt(Lease(2), Requester, Stranger), Requester, 1, SignedBlock.Genesis);
        Assert.That(ForkProof.From(a, b, out var proof), Is.EqualTo(BlockStatus.Valid));
        Assert.That(ForkProof.Check(proof!.Encoded, Chain, out var checkedProof), Is.EqualTo(BlockStatus.Valid));
        Assert.That(checkedProof!.Author, Is.EqualTo(Requester.PeerId));
        Assert.That(ForkProof.From(b, a, out var reversed), Is.EqualTo(BlockStatus.Valid));
        Assert.That(reversed!.Encoded, Is.EqualTo(proof.Encoded), "one fork, one encoding");

        var other = Proposal(MakeReceipt(Lease(3), Stranger, Provider), Stranger, 1, SignedBlock.Genesis);
        var forged = Adversaries.ChainForker.ForgedForkProofs(a, other);
        Assert.That(ForkProof.Check(forged[0], Chain, out _), Is.EqualTo(BlockStatus.NotAFork), "the same block twice");
        Assert.That(ForkProof.Check(forged[1], Chain, out _), Is.EqualTo(BlockStatus.BadSignature), "a garbled second block");
        Assert.That(ForkProof.Check(forged[2], Chain, out _), Is.EqualTo(BlockStatus.NotAFork), "two authors");
        Assert.That(ForkProof.Check(forged[3], Chain, out _), Is.EqualTo(BlockStatus.Malformed));
    }

    [Test]
    public void Ledger_AppendsOncePerReceipt_InSequence_AndDetectsConflictingForeignBlocks()
    {
        var dir = Path.Combine(Path.GetTempPath(), "potluck-chain-tests", Guid.NewGuid().ToString("N"));
        try
        {
            using var ledger = CreditLedger.Open(dir, Requester.PeerId, Options, new FakeTimeProvider(Epoch));
            var r1 = MakeReceipt(Lease(1), Requester, Provider);
            var r2 = MakeReceipt(Lease(2), Requester, Provider);
            SignedBlock Sign(SignedReceipt r, ulong seq, byte[] prev) => Proposal(r, Requester, seq, prev);

            var (b1, appended1) = ledger.AppendOwnBlock(r1.Receipt.ReceiptId, (s, p) => Sign(r1, s, p));
            var (again, appendedAgain) = ledger.AppendOwnBlock(r1.Receipt.ReceiptId, (s, p) => Sign(r1, s, p));
            var (b2, _) = ledger.AppendOwnBlock(r2.Receipt.ReceiptId, (s, p) => Sign(r2, s, p));

            Assert.That((appended1, appendedAgain), Is.EqualTo((true, false)), "one block per payment");
            Assert.That(again.EnvelopeBytes, Is.EqualTo(b1.EnvelopeBytes));
            Assert.That(b1.Seq, Is.EqualTo(1UL));
            Assert.That(b2.Seq, Is.EqualTo(2UL));
            Assert.That(b1.Precedes(b2), Is.EqualTo(BlockStatus.Valid));
            Assert.That(ledger.ChainHead().Seq, Is.EqualTo(2UL));

            var theirs = Proposal(MakeReceipt(Lease(5), Stranger, Provider), Stranger, 1, SignedBlock.Genesis);
            var theirFork = Proposal(MakeReceipt(Lease(6), Stranger, Provider), Stranger, 1, SignedBlock.Genesis);
            Assert.That(ledger.StoreForeignBlock(theirs, keep: false, out _), Is.EqualTo(ForeignBlockResult.Stored));
            Assert.That(ledger.StoreForeignBlock(theirs, keep: true, out _), Is.EqualTo(ForeignBlockResult.AlreadyHeld));
            Assert.That(ledger.StoreForeignBlock(theirFork, keep: false, out var held), Is.EqualTo(ForeignBlockResult.Conflict));
            Assert.That(held, Is.EqualTo(theirs.EnvelopeBytes));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void Ledger_AppendsABatch_InSequence_OncePerReceipt_AFailedOneAlone_Durably()
    {
        var dir = Path.Combine(Path.GetTempPath(), "potluck-chain-tests", Guid.NewGuid().ToString("N"));
        try
        {
            var receipts = Enumerable.Range(1, 5).Select(i => MakeReceipt(Lease(i), Requester, Provider)).ToArray();
            SignedBlock Sign(SignedReceipt r, ulong seq, byte[] prev) => Proposal(r, Requester, seq, prev);
            byte[][] written;
            using (var ledger = CreditLedger.Open(dir, Requester.PeerId, Options, new FakeTimeProvider(Epoch)))
            {
                var (first, _) = ledger.AppendOwnBlock(receipts[0].Receipt.ReceiptId, (s, p) => Sign(receipts[0], s, p));
                // receipts[0] again (held: returned, not signed again), then [1], a block for the wrong receipt, [2], [3].
                var batch = new (byte[], Func<ulong, byte[], SignedBlock>)[]
                {
                    (receipts[0].Receipt.ReceiptId, (s, p) => throw new AssertionException("a held block is not signed again")),
                    (receipts[1].Receipt.ReceiptId, (s, p) => Sign(receipts[1], s, p)),
                    (receipts[4].Receipt.ReceiptId, (s, p) => Sign(receipts[2], s, p)),
                    (receipts[2].Receipt.ReceiptId, (s, p) => Sign(receipts[2], s, p)),
                    (receipts[3].Receipt.ReceiptId, (s, p) => Sign(receipts[3], s, p)),
                };
                Assert.Throws<ArgumentException>(() => ledger.AppendOwnBlocks(batch), "the one that does not extend the chain for its receipt");
                Assert.That(ledger.ChainHead().Seq, Is.EqualTo(4UL), "the others are appended, in order, without a gap");
                Assert.That(ledger.OwnBlockFor(receipts[4].Receipt.ReceiptId), Is.Null, "the failed one left no trace");

                var again = ledger.AppendOwnBlocks([.. receipts.Take(4).Select(r => (r.Receipt.ReceiptId, (Func<ulong, byte[], SignedBlock>)((s, p) => Sign(r, s, p))))]);
                Assert.That(again.Select(b => b.Appended), Is.All.False, "one block per payment");
                Assert.That(again[0].Block.EnvelopeBytes, Is.EqualTo(first.EnvelopeBytes));
                Assert.That(again.Select(b => b.Block.Seq), Is.EqualTo(new ulong[] { 1, 2, 3, 4 }));
                for (var i = 1; i < 4; i++)
                {
                    Assert.That(again[i - 1].Block.Precedes(again[i].Block), Is.EqualTo(BlockStatus.Valid));
                }
                written = [.. again.Select(b => b.Block.EnvelopeBytes)];
                Assert.That(ledger.AppendOwnBlocks([]), Is.Empty);
            }
            using var reopened = CreditLedger.Open(dir, Requester.PeerId, Options, new FakeTimeProvider(Epoch));
            Assert.That(reopened.OwnBlocks(0, 10), Is.EqualTo(written), "committed and durable");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void GossipedBlock_HeldAsIsAndNamingThisNode_IsNotVerifiedAgain_AnyOtherIs()
    {
        var proposal = Proposal(MakeReceipt(Lease(1), Requester, Provider), Requester, 1, SignedBlock.Genesis);
        var agreement = Agreement(proposal, Provider, 1, SignedBlock.Genesis);
        var garbled = (byte[])agreement.EnvelopeBytes.Clone();
        garbled[^1] ^= 0x01; // the signature's last byte: same payload, same hash, bad signature
        Assert.That(SignedBlock.Decode(garbled, Chain, out _), Is.EqualTo(BlockStatus.BadSignature));
        var store = new Dictionary<string, byte[]>();
        byte[]? Held(byte[] hash) => store.GetValueOrDefault(Convert.ToHexString(hash));

        // Held as is by the requester (it is the counterparty): taken as stored. Held garbled, to show the check is skipped.
        store[Convert.ToHexString(agreement.Hash)] = garbled;
        Assert.That(TrustChainService.DecodeGossiped(garbled, Chain, Requester.PeerId, Held, out var taken), Is.EqualTo(BlockStatus.Valid));
        Assert.That(taken!.Hash, Is.EqualTo(agreement.Hash));
        // The same payload held, other bytes sent: verified.
        store[Convert.ToHexString(agreement.Hash)] = agreement.EnvelopeBytes;
        Assert.That(TrustChainService.DecodeGossiped(garbled, Chain, Requester.PeerId, Held, out _), Is.EqualTo(BlockStatus.BadSignature));
        Assert.That(TrustChainService.DecodeGossiped(agreement.EnvelopeBytes, Chain, Requester.PeerId, Held, out var good), Is.EqualTo(BlockStatus.Valid));
        Assert.That(good!.EnvelopeBytes, Is.EqualTo(agreement.EnvelopeBytes));
        // A third party's view: a block naming neither side is always verified, held or not.
        store[Convert.ToHexString(agreement.Hash)] = garbled;
        Assert.That(TrustChainService.DecodeGossiped(garbled, Chain, Stranger.PeerId, Held, out _), Is.EqualTo(BlockStatus.BadSignature));
        // Not held at all: verified.
        store.Clear();
        Assert.That(TrustChainService.DecodeGossiped(garbled, Chain, Requester.PeerId, Held, out _), Is.EqualTo(BlockStatus.BadSignature));
        Assert.That(TrustChainService.DecodeGossiped([1, 2, 3], Chain, Requester.PeerId, Held, out _), Is.EqualTo(BlockStatus.Malformed));
    }
}
