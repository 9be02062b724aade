using Potluck.Protocol.Identity;
using Potluck.Scheduler.Accounting;
using static Potluck.Scheduler.Tests.Accounting.ChainBlockTests;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Accounting;

/// <summary>
/// The credit a verified history earns a requester beyond a stranger's: only contribution backed by payers in good standing
/// with this provider counts, at most each payer's surplus here, less spending; a bounded share of it, and arithmetic that
/// saturates instead of overflowing.
/// </summary>
[Category("Adversarial")]
public class HistoryCreditTests
{
    private static readonly ChainOptions Chain = new();
    private static readonly PrivateKey Contributor = Key(40);
    private static readonly PrivateKey Sybil = Key(41);
    private static readonly PeerId Self = Provider.PeerId; // the provider checking the requester

    private static VerifiedPayment Earned(PrivateKey from, long amount, ulong seq = 1) => new(seq, from.PeerId, amount, Earned: true);

    private static VerifiedPayment Spent(PrivateKey to, long amount, ulong seq = 1) => new(seq, to.PeerId, amount, Earned: false);

    /// <summary>The contributor supplied this provider 1,000,000 beyond what it took; anyone else vouches for nothing.</summary>
    private static long Backing(PeerId payer) => payer == Contributor.PeerId ? 1_000_000 : 0;

    [Test]
    public void SignedHistory_OnlyEarningsFromPayersInGoodStandingCount_LessSpending()
    {
        // The requester's chain: paid by the contributor twice and by a Sybil twice (agreements to their proposals), then it
        // pays a stranger once (its proposal, with the stranger's agreement).
        var rows = new List<(SignedBlock Mine, SignedBlock Link)>();
        var previous = SignedBlock.Genesis;
        foreach (var (payer, i) in new[] { Contributor, Sybil, Contributor, Sybil }.Select((p, i) => (p, i)))
        {
            var proposal = Proposal(MakeReceipt(Lease(700 + i), payer, Requester), payer, 1, SignedBlock.Genesis);
            var agreement = Agreement(proposal, Requester, (ulong)rows.Count + 1, previous);
            rows.Add((agreement, proposal));
            previous = agreement.Hash;
        }
        var spend = Proposal(MakeReceipt(Lease(799), Requester, Stranger), Requester, 5, previous);
        rows.Add((spend, Agreement(spend, Stranger, 1, SignedBlock.Genesis)));
        var answer = ChainCodec.Encode(new ChainQueryAnswer { Blocks = [.. rows.Select(r => r.Mine.EnvelopeBytes)], Links = [.. rows.Select(r => r.Link.EnvelopeBytes)] });

        Assert.That(ChainHistoryCheck.Verify(Requester.PeerId, [1, 2, 3, 4, 5], answer, Chain, _ => null, out var payments, out _), Is.EqualTo(HistoryStatus.Valid));
        Assert.That(payments.Select(p => p.Amount).Distinct().Single(), Is.EqualTo(2_500), "each receipt of the fixture pays 2,500");
        // 2 × 2,500 from the contributor, nothing from the Sybil, less the 2,500 paid to the stranger.
        Assert.That(HistoryCredit.Contribution(payments, Self, Backing), Is.EqualTo(2_500));
        Assert.That(HistoryCredit.Contribution(payments.Where(p => p.Counterparty != Contributor.PeerId), Self, Backing), Is.Zero,
            "Sybils paying each other earn nothing, whatever the amounts");
    }

    [Test]
    public void EachPayer_CountsAtMostItsSurplusHere()
    {
        long SmallSurplus(PeerId payer) => payer == Contributor.PeerId ? 3_000 : 0;
        var payments = new[] { Earned(Contributor, 2_500, 1), Earned(Contributor, 2_500, 2), Earned(Sybil, 1_000_000, 3) };
        Assert.That(HistoryCredit.Contribution(payments, Self, SmallSurplus), Is.EqualTo(3_000), "a payer vouches for no more than it supplied here");
        Assert.That(HistoryCredit.Contribution(payments, Self, Backing), Is.EqualTo(5_000));
        Assert.That(HistoryCredit.Contribution(payments, Self, _ => -5), Is.Zero, "a negative backing counts nothing");
    }

    [Test]
    public void PaymentsWithThisProvider_AreLeftOut_TheyAreInTheFirstHandRecord()
    {
        var payments = new[] { new VerifiedPayment(1, Self, 9_000, true), new VerifiedPayment(2, Self, 4_000, false), Earned(Contributor, 5_000, 3) };
        Assert.That(HistoryCredit.Contribution(payments, Self, p => p == Self ? long.MaxValue : Backing(p)), Is.EqualTo(5_000));
    }

    [Test]
    public void SpendingBeyondEarnings_LeavesNothing_NeverANegative()
    {
        var payments = new[] { Earned(Contributor, 5_000, 1), Spent(Stranger, 4_000, 2), Spent(Sybil, 4_000, 3) };
        Assert.That(HistoryCredit.Contribution(payments, Self, Backing), Is.Zero);
    }

    [Test]
    public void Extra_IsTheShareRoundedDown_CappedAndZeroForNothing()
    {
        Assert.That(HistoryCredit.Extra(1_000_000, 0.25, 10_000_000), Is.EqualTo(250_000));
        Assert.That(HistoryCredit.Extra(7, 0.25, 10_000_000), Is.EqualTo(1), "rounded down: never more than the share");
        Assert.That(HistoryCredit.Extra(100_000_000, 0.25, 10_000_000), Is.EqualTo(10_000_000), "capped");
        Assert.That(HistoryCredit.Extra(1_000_000, 0, 10_000_000), Is.Zero, "share 0: off");
        Assert.That(HistoryCredit.Extra(1_000_000, double.NaN, 10_000_000), Is.Zero);
        Assert.That(HistoryCredit.Extra(1_000_000, 0.25, 0), Is.Zero, "cap 0: off");
        Assert.That(HistoryCredit.Extra(0, 1, 10_000_000), Is.Zero);
        Assert.That(HistoryCredit.Extra(-5, 1, 10_000_000), Is.Zero);
        Assert.That(HistoryCredit.Extra(1_000_000, 7, 10_000_000), Is.EqualTo(1_000_000), "a share above 1 is taken as 1");
    }

    [Test]
    public void Arithmetic_SaturatesInsteadOfOverflowing()
    {
        // Amounts a requester signed into its own chain: each is at most long.MaxValue, and their sum must not wrap.
        var huge = new[] { Earned(Contributor, long.MaxValue, 1), Earned(Contributor, long.MaxValue, 2), Earned(Contributor, long.MaxValue, 3) };
        Assert.That(HistoryCredit.Contribution(huge, Self, _ => long.MaxValue), Is.EqualTo(long.MaxValue));
        Assert.That(HistoryCredit.Contribution(huge.Append(Spent(Sybil, long.MaxValue, 4)).Append(Spent(Sybil, long.MaxValue, 5)), Self, _ => long.MaxValue),
            Is.Zero, "spending saturates too, and the difference is taken from saturated sums");
        Assert.That(HistoryCredit.Extra(long.MaxValue, 1, long.MaxValue), Is.EqualTo(long.MaxValue), "128-bit product, no wrap");
        Assert.That(HistoryCredit.Extra(long.MaxValue, 0.5, long.MaxValue), Is.EqualTo(long.MaxValue / 2));
        Assert.That(HistoryCredit.Limit(long.MaxValue, long.MaxValue), Is.EqualTo(long.MaxValue));
        Assert.That(HistoryCredit.Limit(1_000_000, 250_000), Is.EqualTo(1_250_000));
        Assert.That(HistoryCredit.Limit(1_000_000, -7), Is.EqualTo(1_000_000), "never below a stranger's");
    }

    [Test]
    public void OnePayersSurplus_BacksSeveralRequestersOnlyOnce_UntilTheyStopBorrowing()
    {
        var book = new VouchBook(16);
        PeerId a = Key(50).PeerId, b = Key(51).PeerId, c = Key(52).PeerId, payer = Contributor.PeerId;
        var live = new HashSet<PeerId>();
        Assert.That(book.Available(payer, a, 10_000, live.Contains), Is.EqualTo(10_000));
        book.Set(a, new Dictionary<PeerId, long> { [payer] = 7_000 });
        live.Add(a);
        Assert.That(book.Available(payer, b, 10_000, live.Contains), Is.EqualTo(3_000), "what is left of the surplus");
        Assert.That(book.Available(payer, a, 10_000, live.Contains), Is.EqualTo(10_000), "a's own earlier allocation is replaced, not counted twice");

        // Through the contribution: b earned 9,000 from the payer, and 3,000 of it is still backed.
        var counted = new Dictionary<PeerId, long>();
        Assert.That(HistoryCredit.Contribution([Earned(Contributor, 9_000)], Self, p => book.Available(p, b, 10_000, live.Contains), counted), Is.EqualTo(3_000));
        Assert.That(counted, Is.EqualTo(new Dictionary<PeerId, long> { [payer] = 3_000 }));
        book.Set(b, counted);
        live.Add(b);
        Assert.That(book.Available(payer, c, 10_000, live.Contains), Is.Zero, "the whole surplus is lent against");

        live.Remove(a); // a no longer owes here and its verdict has expired
        Assert.That(book.Available(payer, c, 10_000, live.Contains), Is.EqualTo(7_000));
        Assert.That((book.Backs(payer, a), book.Backs(payer, b), book.Count), Is.EqualTo((0L, 3_000L, 1)));
        book.Release(b);
        Assert.That(book.Count, Is.Zero);
        Assert.That(book.Available(payer, c, -5, live.Contains), Is.Zero, "no surplus, nothing to back");
    }

    [Test]
    public void VouchBook_IsBounded_ANewEntryBeyondItBacksNothing()
    {
        var book = new VouchBook(2);
        var payer = Contributor.PeerId;
        book.Set(Key(60).PeerId, new Dictionary<PeerId, long> { [payer] = 1 });
        book.Set(Key(61).PeerId, new Dictionary<PeerId, long> { [payer] = 1 });
        Assert.That(book.Available(payer, Key(62).PeerId, 10, _ => true), Is.Zero, "full");
        Assert.That(book.Available(payer, Key(61).PeerId, 10, _ => true), Is.EqualTo(9), "an entry held is still answered");
        book.Set(Key(62).PeerId, new Dictionary<PeerId, long> { [payer] = 5 });
        Assert.That((book.Count, book.Backs(payer, Key(62).PeerId)), Is.EqualTo((2, 0L)));
    }

    [Test]
    public void VouchBook_InTheLedger_KeepsTheSplitAcrossARestart_SoASurplusIsNotDividedAfresh()
    {
        using var dir = new Potluck.Scheduler.Tests.Ledger.TempDir();
        PeerId a = Key(70).PeerId, b = Key(71).PeerId, c = Key(72).PeerId, payer = Contributor.PeerId;
        var live = new HashSet<PeerId> { a, b };
        using (var ledger = Potluck.Scheduler.Tests.Ledger.LedgerFactory.Open(dir.Path, Provider))
        {
            var book = new VouchBook(16, new LedgerVouchStore(ledger));
            book.Set(a, new Dictionary<PeerId, long> { [payer] = 7_000 });
            book.Set(b, new Dictionary<PeerId, long> { [payer] = 2_000, [Sybil.PeerId] = 500 });
            book.Set(b, new Dictionary<PeerId, long> { [payer] = 1_000 }); // replaced, not added
        }
        using (var ledger = Potluck.Scheduler.Tests.Ledger.LedgerFactory.Open(dir.Path, Provider))
        {
            var book = new VouchBook(16, new LedgerVouchStore(ledger));
            Assert.That((book.Count, book.Backs(payer, a), book.Backs(payer, b), book.Backs(Sybil.PeerId, b)), Is.EqualTo((2, 7_000L, 1_000L, 0L)));
            Assert.That(book.Available(payer, c, 10_000, live.Contains), Is.EqualTo(2_000), "a twin checked after the restart gets what is left");
            book.Release(a);
            live.Remove(b); // b no longer borrows: its entry is dropped as it is met, in the ledger too
            Assert.That(book.Available(payer, c, 10_000, live.Contains), Is.EqualTo(10_000));
        }
        using (var ledger = Potluck.Scheduler.Tests.Ledger.LedgerFactory.Open(dir.Path, Provider))
        {
            Assert.That(ledger.Vouches(16), Is.Empty);
            var book = new VouchBook(1, new LedgerVouchStore(ledger));
            book.Set(a, new Dictionary<PeerId, long> { [payer] = 5, [Sybil.PeerId] = 6 });
            Assert.That(ledger.Vouches(16), Has.Count.EqualTo(1), "bounded as in memory");
            Assert.That(new VouchBook(0, new LedgerVouchStore(ledger)).Count, Is.Zero, "and when read back");
        }
    }

    [Test]
    public void Options_AreRangeChecked_NamingTheKey()
    {
        var problems = new ChainHistoryOptions { CreditShare = 1.5, MaxCredit = -1 }.Validate("compute:accounting:history").ToList();
        Assert.That(problems, Has.Some.Contains("'compute:accounting:history:creditShare' is 1.5"));
        Assert.That(problems, Has.Some.Contains("'compute:accounting:history:maxCredit' is -1"));
        Assert.That(new ChainHistoryOptions { CreditShare = double.NaN }.Validate("h"), Has.Some.Contains("'h:creditShare'"));
        Assert.That(new ChainHistoryOptions().Validate("h"), Is.Empty, "the defaults are valid");
        Assert.That((new ChainHistoryOptions().CreditShare, new ChainHistoryOptions().MaxCredit), Is.EqualTo((0.25, 10_000_000L)));
    }
}
