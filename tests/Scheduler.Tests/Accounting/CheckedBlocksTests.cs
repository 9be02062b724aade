using System.Runtime.CompilerServices;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Accounting;
using static Potluck.Scheduler.Tests.Accounting.ChainBlockTests;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Accounting;

/// <summary>
/// A node's memory of the half-blocks it signed or verified: the same bytes are not verified twice, any other bytes are,
/// the size limits hold on every call, failures are never remembered, and it stays bounded.
/// </summary>
[Category("Adversarial")]
public class CheckedBlocksTests
{
    private static readonly ChainOptions Chain = new();

    private static (SignedBlock Proposal, SignedBlock Agreement) Pair(int n)
    {
        var proposal = Proposal(MakeReceipt(Lease(n), Requester, Provider), Requester, 1, SignedBlock.Genesis);
        return (proposal, Agreement(proposal, Provider, 1, SignedBlock.Genesis));
    }

    [Test]
    public void SameBytes_AreVerifiedOnce_AndSignedOnesNever()
    {
        var (proposal, agreement) = Pair(1);
        var known = new CheckedBlocks();
        known.Remember(proposal); // signed here

        Assert.That(known.Decode(proposal.EnvelopeBytes, Chain, out var p), Is.EqualTo(BlockStatus.Valid));
        Assert.That(p!.Hash, Is.EqualTo(proposal.Hash));
        Assert.That(known.Decode(agreement.EnvelopeBytes, Chain, out var a1), Is.EqualTo(BlockStatus.Valid));
        Assert.That(known.Decode(agreement.EnvelopeBytes.ToArray(), Chain, out var a2), Is.EqualTo(BlockStatus.Valid));
        Assert.That(a2!.EnvelopeBytes, Is.EqualTo(a1!.EnvelopeBytes));
        Assert.That((known.Verified, known.Remembered), Is.EqualTo((1L, 2L)), "the agreement verified once; the proposal (signed here) and the agreement's second coming not");
    }

    [Test]
    public void TamperedBytesOfARememberedBlock_AreVerified_AndRefused_EveryTime()
    {
        var (_, agreement) = Pair(2);
        var known = new CheckedBlocks();
        Assert.That(known.Decode(agreement.EnvelopeBytes, Chain, out _), Is.EqualTo(BlockStatus.Valid));
        var garbled = agreement.EnvelopeBytes.ToArray();
        garbled[^1] ^= 0x01; // same payload, same block hash, another signature
        for (var i = 0; i < 3; i++)
        {
            Assert.That(known.Decode(garbled, Chain, out var block), Is.EqualTo(BlockStatus.BadSignature));
            Assert.That(block, Is.Null);
            Assert.That(known.TryGet(garbled, Chain, out _), Is.False);
        }
        Assert.That((known.Verified, known.Remembered, known.Count), Is.EqualTo((4L, 0L, 1)), "a failure is never remembered: each bad copy costs its check");
        Assert.That(known.Decode([1, 2, 3], Chain, out _), Is.EqualTo(BlockStatus.Malformed));
    }

    [Test]
    public void RememberedBlock_OverTheCallersLimits_IsTooLarge_NotTakenFromMemory()
    {
        var (proposal, _) = Pair(3);
        var known = new CheckedBlocks();
        known.Remember(proposal);
        var small = new ChainOptions { MaxBlockBytes = proposal.EnvelopeBytes.Length - 1 };
        Assert.That(known.TryGet(proposal.EnvelopeBytes, small, out _), Is.False);
        Assert.That(known.Decode(proposal.EnvelopeBytes, small, out _), Is.EqualTo(BlockStatus.TooLarge));
        var smallPayload = new ChainOptions { MaxPayloadBytes = proposal.Payload.Length - 1 };
        Assert.That(known.TryGet(proposal.EnvelopeBytes, smallPayload, out _), Is.False);
        Assert.That(known.Decode(proposal.EnvelopeBytes, smallPayload, out _), Is.EqualTo(BlockStatus.TooLarge));
    }

    [Test]
    public void Memory_IsBounded_OldestDroppedFirst()
    {
        var known = new CheckedBlocks();
        var first = Pair(10_000).Proposal;
        known.Remember(first);
        for (var i = 0; i < CheckedBlocks.Capacity; i++)
        {
            known.Remember(Proposal(MakeReceipt(Lease(20_000 + i), Requester, Provider), Requester, 1, SignedBlock.Genesis));
        }
        Assert.That(known.Count, Is.EqualTo(CheckedBlocks.Capacity));
        Assert.That(known.TryGet(first.EnvelopeBytes, Chain, out _), Is.False, "the oldest was dropped");
        Assert.That(known.Decode(first.EnvelopeBytes, Chain, out _), Is.EqualTo(BlockStatus.Valid), "and is verified again when it comes back");
        Assert.That(known.Verified, Is.EqualTo(1));
    }

    /// <summary>A valid half-block signed by <paramref name="author"/>, distinct for each <paramref name="n"/> (a flood needs no receipts).</summary>
    private static SignedBlock Flooded(PrivateKey author, int n) => SignedBlock.Sign(new ChainBlock
    {
        Author = author.PeerId.ToBytes(),
        Seq = 1,
        Previous = SignedBlock.Genesis,
        Counterparty = Provider.PeerId.ToBytes(),
        Kind = BlockKind.Proposal,
        ReceiptId = Potluck.Scheduler.Credits.Receipt.ComputeId(Lease(n), Provider.PeerId, author.PeerId),
        LeaseId = Lease(n),
        Amount = 1,
        FuelUsed = 1,
    }, author);

    /// <summary>
    /// Two and a half caps of distinct blocks: exactly the last <see cref="CheckedBlocks.Capacity"/> are remembered (the
    /// index's deletions, runs that wrap included, lose none and keep none too many), in 40 bytes each: the ring's
    /// 32-byte digests and an index of twice its slots (a <c>HashSet</c> beside the ring held about 80).
    /// </summary>
    [Test]
    public void AfterManyEvictions_ExactlyTheNewestCapacityAreRemembered_InThreeSlotsEach()
    {
        var known = new CheckedBlocks();
        var blocks = Enumerable.Range(0, CheckedBlocks.Capacity * 5 / 2).Select(i => Flooded(Stranger, 200_000 + i)).ToArray();
        foreach (var block in blocks)
        {
            known.Remember(block);
        }
        var newest = blocks.Length - CheckedBlocks.Capacity;
        for (var i = 0; i < blocks.Length; i++)
        {
            Assert.That(known.TryGet(blocks[i].EnvelopeBytes, Chain, out _), Is.EqualTo(i >= newest), $"block {i}");
        }
        Assert.That(known.Count, Is.EqualTo(CheckedBlocks.Capacity));
        Assert.That(known.Slots, Is.EqualTo(3 * CheckedBlocks.Capacity), "the ring and an index of twice its slots");
    }

    [Test]
    public void FloodOfDistinctValidBlocksFromAStranger_StaysAtTheCap_AndHonestChecksStayRight()
    {
        var known = new CheckedBlocks();
        var (honest, honestAgreement) = Pair(30);
        known.Remember(honest); // signed here, before the flood
        var flood = Enumerable.Range(0, CheckedBlocks.Capacity + CheckedBlocks.Capacity / 2).Select(i => Flooded(Stranger, 100_000 + i)).ToArray();
        var slots = 0;
        foreach (var (block, i) in flood.Select((b, i) => (b, i)))
        {
            Assert.That(known.Decode(block.EnvelopeBytes, Chain, out _), Is.EqualTo(BlockStatus.Valid));
            if (i == CheckedBlocks.Capacity)
            {
                slots = known.Slots;
            }
        }
        Assert.That(known.Count, Is.EqualTo(CheckedBlocks.Capacity), "entries stay at the cap");
        Assert.That(known.Slots, Is.EqualTo(slots), "and so does what holds them: nothing grows once full");
        Assert.That(known.Verified, Is.EqualTo(flood.Length), "each distinct block verified once");

        // Honest checks after the flood: the honest block (pushed out) is verified again and valid; an honest agreement
        // is verified and then remembered; a tampered copy is refused every time; the flood's newest are still remembered.
        Assert.That(known.Decode(honest.EnvelopeBytes, Chain, out var again), Is.EqualTo(BlockStatus.Valid));
        Assert.That(again!.Hash, Is.EqualTo(honest.Hash));
        Assert.That(known.Decode(honestAgreement.EnvelopeBytes, Chain, out _), Is.EqualTo(BlockStatus.Valid));
        var verified = known.Verified;
        Assert.That(known.Decode(honestAgreement.EnvelopeBytes, Chain, out var remembered), Is.EqualTo(BlockStatus.Valid));
        Assert.That(honest.LinkedBy(remembered!), Is.EqualTo(BlockStatus.Valid));
        var garbled = honestAgreement.EnvelopeBytes.ToArray();
        garbled[^1] ^= 0x01;
        Assert.That(known.Decode(garbled, Chain, out _), Is.EqualTo(BlockStatus.BadSignature));
        Assert.That(known.Decode(flood[^1].EnvelopeBytes, Chain, out _), Is.EqualTo(BlockStatus.Valid));
        Assert.That(known.Verified - verified, Is.EqualTo(1), "only the garbled copy was verified; the agreement and the flood's last were remembered");
        Assert.That(known.Count, Is.EqualTo(CheckedBlocks.Capacity));
    }

    [Test]
    public void AHit_IsTheBlockAVerificationGives_OnItsOwnCopy()
    {
        var (proposal, agreement) = Pair(40);
        var known = new CheckedBlocks();
        Assert.That(known.Decode(agreement.EnvelopeBytes, Chain, out _), Is.EqualTo(BlockStatus.Valid));
        var bytes = agreement.EnvelopeBytes.ToArray();
        Assert.That(known.Decode(bytes, Chain, out var hit), Is.EqualTo(BlockStatus.Valid));
        Assert.That(SignedBlock.Decode(bytes, Chain, out var verified), Is.EqualTo(BlockStatus.Valid));
        Assert.That((known.Verified, known.Remembered), Is.EqualTo((1L, 1L)));
        Assert.That(hit!.EnvelopeBytes, Is.EqualTo(verified!.EnvelopeBytes).And.Not.SameAs(bytes), "the caller's array stays its own");
        Assert.That(hit.Payload, Is.EqualTo(verified.Payload));
        Assert.That(hit.Hash, Is.EqualTo(verified.Hash));
        Assert.That((hit.Author, hit.Counterparty, hit.Seq), Is.EqualTo((verified.Author, verified.Counterparty, verified.Seq)));
        Assert.That((hit.Block.Kind, hit.Block.LinkSeq, hit.Block.Amount, hit.Block.FuelUsed), Is.EqualTo((verified.Block.Kind, verified.Block.LinkSeq, verified.Block.Amount, verified.Block.FuelUsed)));
        Assert.That(proposal.LinkedBy(hit), Is.EqualTo(BlockStatus.Valid));
    }

    [Test]
    public void TheSamePayloadSealedByAnotherKey_IsOtherBytes_Verified_AndRefused()
    {
        var (proposal, _) = Pair(50);
        var known = new CheckedBlocks();
        known.Remember(proposal);
        var resealed = Potluck.Scheduler.Credits.SignedEnvelope.Seal(Stranger, SignedBlock.Domain, proposal.Payload).Encode();
        for (var i = 0; i < 2; i++)
        {
            Assert.That(known.Decode(resealed, Chain, out var block), Is.EqualTo(BlockStatus.WrongSigner));
            Assert.That(block, Is.Null);
        }
        Assert.That((known.Verified, known.Remembered, known.Count), Is.EqualTo((2L, 0L, 1)));
    }

    /// <summary>
    /// What gossip brings a node in no lease (strangers paying strangers) is verified and not remembered: its table stays
    /// without slots however many such blocks come; a block naming the node, or one of a party it holds blocks of (a payer of
    /// its own), is remembered and not verified again.
    /// </summary>
    [Test]
    public void GossipedPaymentsBetweenStrangers_AreVerifiedAndNotRemembered_ANodeInNoLeaseHoldsNoSlots()
    {
        var known = new CheckedBlocks();
        byte[]? NoneHeld(byte[] hash) => null;
        for (var n = 0; n < 300; n++)
        {
            var (proposal, agreement) = Pair(100 + n);
            foreach (var block in new[] { proposal, agreement })
            {
                Assert.That(TrustChainService.DecodeGossiped(block.EnvelopeBytes, Chain, Stranger.PeerId, NoneHeld, out var decoded, known, holdsBlocksOf: _ => false),
                    Is.EqualTo(BlockStatus.Valid));
                Assert.That(decoded!.Hash, Is.EqualTo(block.Hash));
            }
        }
        Assert.That((known.Verified, known.Count, known.Slots), Is.EqualTo((600L, 0, 0)), "every block verified, none remembered, no array");

        // A payer this node holds blocks of: its proposal and the payee's agreement (its counterparty) are remembered (they
        // come again in the payer's next proposal here) and taken as checked the second time.
        var (mine, theirs) = Pair(1000);
        Assert.That(TrustChainService.DecodeGossiped(mine.EnvelopeBytes, Chain, Stranger.PeerId, NoneHeld, out _, known, holdsBlocksOf: a => a == Requester.PeerId), Is.EqualTo(BlockStatus.Valid));
        Assert.That(TrustChainService.DecodeGossiped(theirs.EnvelopeBytes, Chain, Stranger.PeerId, NoneHeld, out _, known, holdsBlocksOf: a => a == Requester.PeerId), Is.EqualTo(BlockStatus.Valid));
        Assert.That(known.Decode(mine.EnvelopeBytes, Chain, out _), Is.EqualTo(BlockStatus.Valid));
        Assert.That(known.Decode(theirs.EnvelopeBytes, Chain, out _), Is.EqualTo(BlockStatus.Valid));
        Assert.That((known.Verified, known.Remembered, known.Count), Is.EqualTo((602L, 2L, 2)));

        // A block naming this node (here the provider, the proposal's counterparty and the agreement's author) is remembered.
        var (toMe, byMe) = Pair(1001);
        Assert.That(TrustChainService.DecodeGossiped(toMe.EnvelopeBytes, Chain, Provider.PeerId, NoneHeld, out _, known, holdsBlocksOf: _ => false), Is.EqualTo(BlockStatus.Valid));
        Assert.That(TrustChainService.DecodeGossiped(byMe.EnvelopeBytes, Chain, Provider.PeerId, NoneHeld, out _, known, holdsBlocksOf: _ => false), Is.EqualTo(BlockStatus.Valid));
        Assert.That((known.Verified, known.Count), Is.EqualTo((604L, 4)));
    }

    [Test]
    public void NoDecodedBlockIsKept()
    {
        var known = new CheckedBlocks();
        var weak = CheckAndDrop(known, Pair(60).Agreement.EnvelopeBytes);
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true);
        GC.WaitForPendingFinalizers();
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true);
        Assert.That(weak.Block.TryGetTarget(out _), Is.False, "the checked block itself is not kept");
        Assert.That(weak.Bytes.TryGetTarget(out _), Is.False, "nor its bytes");
        Assert.That(known.Count, Is.EqualTo(1), "only what says these bytes checked");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static (WeakReference<SignedBlock> Block, WeakReference<byte[]> Bytes) CheckAndDrop(CheckedBlocks known, byte[] bytes)
    {
        var copy = bytes.ToArray();
        Assert.That(known.Decode(copy, Chain, out var block), Is.EqualTo(BlockStatus.Valid));
        return (new WeakReference<SignedBlock>(block!), new WeakReference<byte[]>(block!.EnvelopeBytes));
    }
}
