using Potluck.Protocol.Identity;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;
using static Potluck.Scheduler.Tests.Accounting.ChainBlockTests;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Accounting;

/// <summary>
/// A provider checking the chain a requester presents before serving it beyond a stranger's terms: forged agreements,
/// payments among Sybils and replayed blocks earn nothing.
/// </summary>
[Category("Adversarial")]
public class ChainHistoryCheckTests
{
    private static readonly ChainOptions Chain = new();
    private static readonly PrivateKey Contributor = Key(40);
    private static readonly PrivateKey Sybil = Key(41);

    /// <summary>The requester's chain: at each seq an agreement to a proposal by one of <paramref name="payers"/> (it was paid for work).</summary>
    private static List<(SignedBlock Mine, SignedBlock Link)> Earnings(params PrivateKey[] payers)
    {
        var list = new List<(SignedBlock, SignedBlock)>();
        var previous = SignedBlock.Genesis;
        for (var i = 0; i < payers.Length; i++)
        {
            // The payer pays the requester (acting as provider): the payer's proposal, the requester's agreement.
            var proposal = Proposal(MakeReceipt(Lease(300 + i), payers[i], Requester), payers[i], 1, SignedBlock.Genesis);
            var agreement = Agreement(proposal, Requester, (ulong)i + 1, previous);
            list.Add((agreement, proposal));
            previous = agreement.Hash;
        }
        return list;
    }

    private static byte[] Answer(IEnumerable<(byte[] Block, byte[] Link)> rows)
    {
        var list = rows.ToList();
        return ChainCodec.Encode(new ChainQueryAnswer { Blocks = [.. list.Select(r => r.Block)], Links = [.. list.Select(r => r.Link)] });
    }

    private static byte[] Answer(IEnumerable<(SignedBlock Mine, SignedBlock Link)> rows) =>
        Answer(rows.Select(r => (r.Mine.EnvelopeBytes, r.Link.EnvelopeBytes)));

    private static HistoryStatus Verify(byte[] answer, ulong[] asked, out List<VerifiedPayment> payments, Func<ulong, byte[]?>? held = null) =>
        ChainHistoryCheck.Verify(Requester.PeerId, asked, answer, Chain, held ?? (_ => null), out payments, out _);

    private static bool BackedByContributor(PeerId payer) => payer == Contributor.PeerId;

    [Test]
    public void HonestHistory_EarningsFromPayersInGoodStandingCount_AndTheSampleIsFromTheChain()
    {
        var chain = Earnings(Contributor, Contributor, Contributor);
        Assert.That(Verify(Answer(chain), [1, 2, 3], out var payments), Is.EqualTo(HistoryStatus.Valid));
        Assert.That(payments.Select(p => (p.Seq, p.Earned)), Is.EqualTo(new[] { (1UL, true), (2UL, true), (3UL, true) }));
        Assert.That(ChainHistoryCheck.VerifiedEarnings(payments, BackedByContributor), Is.EqualTo(3 * 2_500));

        var random = new Random(5);
        var sample = ChainHistoryCheck.Sample(1_000, 16, n => (ulong)random.NextInt64((long)n));
        Assert.That(sample, Has.Count.EqualTo(17).And.Contains(1_000UL).And.Ordered.And.Unique);
        Assert.That(sample.All(s => s is >= 1 and <= 1_000), Is.True);
        Assert.That(ChainHistoryCheck.Sample(3, 16, _ => 0), Is.EqualTo(new ulong[] { 1, 2, 3 }), "a short chain is asked whole");
        Assert.That(ChainHistoryCheck.Sample(0, 16, _ => 0), Is.Empty);
    }

    [Test]
    public void SybilPayers_WithNoStandingOfTheirOwn_CountNothing()
    {
        // The requester and its Sybil sign payments to each other: genuine signatures, linked, and worthless here.
        var chain = Earnings(Sybil, Sybil, Sybil, Contributor);
        Assert.That(Verify(Answer(chain), [1, 2, 3, 4], out var payments), Is.EqualTo(HistoryStatus.Valid));
        Assert.That(ChainHistoryCheck.VerifiedEarnings(payments, BackedByContributor), Is.EqualTo(2_500), "only the contributor's payment");
        Assert.That(ChainHistoryCheck.VerifiedEarnings(payments.Take(3), BackedByContributor), Is.Zero);
    }

    [Test]
    public void ForgedAgreements_AreRefused()
    {
        var chain = Earnings(Contributor, Contributor);
        // The contributor's proposal re-signed by the requester: a "payment" the contributor never signed.
        var forgedLink = SignedEnvelope.Seal(Requester, SignedBlock.Domain, chain[0].Link.Payload).Encode();
        Assert.That(Verify(Answer(new[] { (chain[0].Mine.EnvelopeBytes, forgedLink) }), [1], out _), Is.EqualTo(HistoryStatus.BadBlock));
        // A genuine proposal of the contributor's, shown as the link of another agreement.
        Assert.That(Verify(Answer(new[] { (chain[0].Mine.EnvelopeBytes, chain[1].Link.EnvelopeBytes) }), [1], out _), Is.EqualTo(HistoryStatus.BadLink));
        // An agreement the requester signed to a proposal it made itself.
        var own = Proposal(MakeReceipt(Lease(900), Requester, Provider), Requester, 1, SignedBlock.Genesis);
        Assert.That(Verify(Answer(new[] { (chain[0].Mine.EnvelopeBytes, own.EnvelopeBytes) }), [1], out _), Is.EqualTo(HistoryStatus.BadLink));
        var flipped = (byte[])chain[0].Mine.EnvelopeBytes.Clone();
        flipped[^1] ^= 1;
        Assert.That(Verify(Answer(new[] { (flipped, chain[0].Link.EnvelopeBytes) }), [1], out _), Is.EqualTo(HistoryStatus.BadBlock));
    }

    [Test]
    public void ReplayedOrBorrowedBlocks_AreRefused()
    {
        var chain = Earnings(Contributor, Contributor, Contributor);
        Assert.That(Verify(Answer([chain[0], chain[0]]), [1, 2], out _), Is.EqualTo(HistoryStatus.NotAsked), "one seq answered twice");
        Assert.That(Verify(Answer([chain[2]]), [1, 2], out _), Is.EqualTo(HistoryStatus.NotAsked), "a seq not asked for");
        // Another identity's genuine history (the contributor's own blocks) shown as the requester's.
        var theirs = Proposal(MakeReceipt(Lease(901), Contributor, Provider), Contributor, 1, SignedBlock.Genesis);
        Assert.That(Verify(Answer(new[] { (theirs.EnvelopeBytes, Array.Empty<byte>()) }), [1], out _), Is.EqualTo(HistoryStatus.OtherAuthor));
        // A block that differs from the requester's block this provider holds at that seq: another branch (a fork).
        var other = Earnings(Sybil)[0].Mine;
        Assert.That(Verify(Answer([chain[0]]), [1], out _, held: s => s == 1 ? other.EnvelopeBytes : null), Is.EqualTo(HistoryStatus.Conflict));
        Assert.That(Verify(Answer([chain[0]]), [1], out _, held: s => s == 1 ? chain[0].Mine.EnvelopeBytes : null), Is.EqualTo(HistoryStatus.Valid));
        Assert.That(Verify([0xc1], [1], out _), Is.EqualTo(HistoryStatus.Malformed));
    }

    [Test]
    public void MissingLinks_CountNothing_ButAreNotALie()
    {
        var chain = Earnings(Contributor);
        Assert.That(Verify(Answer(new[] { (chain[0].Mine.EnvelopeBytes, Array.Empty<byte>()) }), [1], out var payments), Is.EqualTo(HistoryStatus.Valid));
        Assert.That(payments, Is.Empty);
    }
}
