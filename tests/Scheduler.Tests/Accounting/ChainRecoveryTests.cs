using Potluck.Protocol.Identity;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Tests.Ledger;
using static Potluck.Scheduler.Tests.Accounting.ChainBlockTests;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Accounting;

/// <summary>
/// Recovering a node's chain from its counterparties after a lost ledger: what a counterparty's answer must be to be
/// believed, and the ledger that signs its next block after the highest recovered seq.
/// </summary>
[Category("Adversarial")]
public class ChainRecoveryTests
{
    private static readonly ChainOptions Chain = new();
    private const int Asked = 16;

    /// <summary>The requester's chain of <paramref name="count"/> payments to the provider, each with the provider's agreement.</summary>
    private static List<(SignedBlock Proposal, SignedBlock Agreement)> History(int count, PrivateKey? counterparty = null, int firstLease = 0)
    {
        var provider = counterparty ?? Provider;
        var list = new List<(SignedBlock, SignedBlock)>();
        var previous = SignedBlock.Genesis;
        var providerPrevious = SignedBlock.Genesis;
        for (var i = 0; i < count; i++)
        {
            var proposal = Proposal(MakeReceipt(Lease(firstLease + i), Requester, provider), Requester, (ulong)i + 1, previous);
            var agreement = Agreement(proposal, provider, (ulong)i + 1, providerPrevious);
            list.Add((proposal, agreement));
            previous = proposal.Hash;
            providerPrevious = agreement.Hash;
        }
        return list;
    }

    private static byte[] Answer(IEnumerable<(SignedBlock Proposal, SignedBlock Agreement)> pairs, bool more = false) =>
        Answer(pairs.Select(p => (p.Proposal.EnvelopeBytes, p.Agreement.EnvelopeBytes)), more);

    private static byte[] Answer(IEnumerable<(byte[] Block, byte[] Link)> rows, bool more = false)
    {
        var list = rows.ToList();
        return ChainCodec.Encode(new ChainQueryAnswer { Blocks = [.. list.Select(r => r.Block)], Links = [.. list.Select(r => r.Link)], More = more });
    }

    private static RecoveryStatus Check(byte[] answer, ulong after = 0, PeerId? answerer = null) =>
        ChainRecovery.CheckAnswer(Requester.PeerId, answerer ?? Provider.PeerId, after, Asked, answer, Chain, out _, out _);

    [Test]
    public void CheckAnswer_HonestCounterparty_ReturnsEveryBlockWithItsLink()
    {
        var history = History(5);
        var status = ChainRecovery.CheckAnswer(Requester.PeerId, Provider.PeerId, 0, Asked, Answer(history, more: true), Chain, out var blocks, out var more);
        Assert.That(status, Is.EqualTo(RecoveryStatus.Valid));
        Assert.That(blocks.Select(b => b.Block.Seq), Is.EqualTo(new ulong[] { 1, 2, 3, 4, 5 }));
        Assert.That(blocks.All(b => b.Link is not null), Is.True);
        Assert.That(more, Is.True);
        // An empty answer is honest too (the peer holds nothing of ours).
        Assert.That(Check(Answer(Array.Empty<(byte[], byte[])>())), Is.EqualTo(RecoveryStatus.Valid));
    }

    [Test]
    public void CheckAnswer_ForgedBlockInTheAskersName_IsRejected()
    {
        var history = History(3);
        // The counterparty signs a block naming the requester as author, to raise what the requester "paid".
        var forged = SignedEnvelope.Seal(Provider, SignedBlock.Domain, history[2].Proposal.Payload).Encode();
        Assert.That(Check(Answer(new[] { (history[0].Proposal.EnvelopeBytes, history[0].Agreement.EnvelopeBytes), (forged, Array.Empty<byte>()) })), Is.EqualTo(RecoveryStatus.BadBlock));
        var flipped = (byte[])history[1].Proposal.EnvelopeBytes.Clone();
        flipped[^1] ^= 1;
        Assert.That(Check(Answer(new[] { (flipped, Array.Empty<byte>()) })), Is.EqualTo(RecoveryStatus.BadBlock));
    }

    [Test]
    public void CheckAnswer_AnotherIdentitysBlocks_AreRejected()
    {
        // The provider's own chain (genuine blocks, but not the asker's).
        var history = History(2);
        Assert.That(Check(Answer(new[] { (history[0].Agreement.EnvelopeBytes, history[0].Proposal.EnvelopeBytes) })), Is.EqualTo(RecoveryStatus.OtherAuthor));
        // The asker's genuine blocks with a third party, relayed by a peer that was not party to them.
        var withStranger = History(1, counterparty: Stranger, firstLease: 50);
        Assert.That(Check(Answer(withStranger)), Is.EqualTo(RecoveryStatus.NotCounterparty));
    }

    [Test]
    public void CheckAnswer_OutOfOrderRepeatedOrBelowTheQuery_IsRejected()
    {
        var history = History(4);
        Assert.That(Check(Answer(new[] { history[1], history[0] })), Is.EqualTo(RecoveryStatus.OutOfOrder));
        Assert.That(Check(Answer(new[] { history[1], history[1] })), Is.EqualTo(RecoveryStatus.OutOfOrder), "a replayed block");
        Assert.That(Check(Answer(new[] { history[1], history[2] }), after: 2), Is.EqualTo(RecoveryStatus.OutOfOrder), "not above the seq asked for");
    }

    [Test]
    public void CheckAnswer_LinkThatIsNotTheCounterpartysHalf_OrWrongCounts_IsRejected()
    {
        var history = History(3);
        Assert.That(Check(Answer(new[] { (history[0].Proposal.EnvelopeBytes, history[1].Agreement.EnvelopeBytes) })), Is.EqualTo(RecoveryStatus.BadLink));
        var tooMany = History(Asked + 1);
        Assert.That(Check(Answer(tooMany)), Is.EqualTo(RecoveryStatus.TooMany));
        var uneven = ChainCodec.Encode(new ChainQueryAnswer { Blocks = [history[0].Proposal.EnvelopeBytes], Links = [] });
        Assert.That(Check(uneven), Is.EqualTo(RecoveryStatus.Malformed));
        Assert.That(Check([0xc1, 0x00]), Is.EqualTo(RecoveryStatus.Malformed));
        Assert.That(Check(new byte[ChainRecovery.MaxAnswerBytes(Chain, Asked) + 1]), Is.EqualTo(RecoveryStatus.Malformed));
    }

    [Test]
    public void Assemble_MergesAnswersBySeq_AndReportsTwoBlocksAtOneSeq()
    {
        var history = History(4);
        var a = history.Take(2).Select(p => new RecoveredBlock(p.Proposal, p.Agreement));
        var b = history.Skip(1).Select(p => new RecoveredBlock(p.Proposal, null));
        var (chain, problems) = ChainRecovery.Assemble(a.Concat(b));
        Assert.That(chain.Select(r => r.Block.Seq), Is.EqualTo(new ulong[] { 1, 2, 3, 4 }));
        Assert.That(chain[1].Link, Is.Not.Null, "the linked copy is kept");
        Assert.That(problems, Is.Empty);

        var other = History(1, firstLease: 90)[0].Proposal; // another block at seq 1 signed by the asker: its own fork
        (_, problems) = ChainRecovery.Assemble([new RecoveredBlock(history[0].Proposal, null), new RecoveredBlock(other, null)]);
        Assert.That(problems, Is.EqualTo(new ulong[] { 1 }));
    }

    [Test]
    public void Ledger_RecoveredChain_IsServedByTheCounterparty_RestoredAndExtendedAfterTheHighestSeq()
    {
        using var dir = new TempDir();
        var history = History(3);
        // The provider's ledger holds the requester's proposals and its own agreements, as after three payments.
        using var provider = LedgerFactory.Open(dir.Sub("provider"), Provider);
        foreach (var (p, a) in history)
        {
            provider.StoreForeignBlock(p, keep: true, out _);
            provider.AppendOwnBlock(p.Block.ReceiptId, (seq, previous) => Agreement(p, Provider, seq, previous));
        }
        var served = provider.BlocksSignedWith(Requester.PeerId, 0, 10);
        Assert.That(served.Select(r => r.Block), Is.EqualTo(history.Select(h => h.Proposal.EnvelopeBytes)));
        Assert.That(served.All(r => r.Link.Length > 0), Is.True, "each with the provider's agreement");
        Assert.That(provider.BlocksSignedWith(Requester.PeerId, 2, 10), Has.Count.EqualTo(1));
        Assert.That(provider.BlocksSignedWith(Stranger.PeerId, 0, 10), Is.Empty);

        var answer = Answer(served);
        var status = ChainRecovery.CheckAnswer(Requester.PeerId, Provider.PeerId, 0, Asked, answer, Chain, out var blocks, out _);
        Assert.That(status, Is.EqualTo(RecoveryStatus.Valid));

        // The requester's new, empty ledger: recovery begins, ends with the blocks, and the next block follows seq 3.
        using var requester = LedgerFactory.Open(dir.Sub("requester"), Requester);
        Assert.That(requester.Created, Is.True);
        Assert.That(requester.BeginChainRecovery(), Is.True);
        Assert.That(requester.ChainRecoveryPending, Is.True);
        Assert.That(requester.EndChainRecovery(blocks), Is.EqualTo(3));
        Assert.That(requester.ChainRecoveryPending, Is.False);
        Assert.That(requester.ChainHead(), Is.EqualTo((3UL, history[2].Proposal.Hash)));
        var next = MakeReceipt(Lease(77), Requester, Provider);
        var (block, appended) = requester.AppendOwnBlock(next.Receipt.ReceiptId, (seq, previous) => Proposal(next, Requester, seq, previous));
        Assert.That((appended, block.Seq), Is.EqualTo((true, 4UL)));
        Assert.That(history[2].Proposal.Precedes(block), Is.EqualTo(BlockStatus.Valid), "no fork: seq 4 follows the recovered seq 3");

        var audit = ChainAudit.Verify(requester);
        Assert.That(audit.Problems, Has.Count.EqualTo(1), "only the new block's payment, not recorded in this test's ledger");
        Assert.That(audit.Problems[0], Does.StartWith("block 4:"));
        Assert.That(audit.Blocks, Is.EqualTo(4));
        Assert.That(audit.LinkedBlocks, Is.EqualTo(3), "the recovered agreements are kept");
        Assert.That(requester.BeginChainRecovery(), Is.False, "a chain with blocks is not recovered again");
    }
}
