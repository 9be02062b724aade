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
}
