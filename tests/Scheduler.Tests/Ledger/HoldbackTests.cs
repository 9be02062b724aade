using Microsoft.Extensions.Time.Testing;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Verification;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Ledger;

/// <summary>
/// Earnings held back and forfeited on fraud (<see cref="CreditsOptions.Holdback"/>): a payment counts in the provider's
/// standing here only once it is older than the holdback, and a proof of fraud forfeits what is still held, once, durably.
/// </summary>
public class HoldbackTests
{
    private static readonly CreditsOptions HoldOneHour = Options with { Holdback = TimeSpan.FromHours(1) };
    private const long Payment = 2_500; // 2,500,000 fuel at 1,000 µcredits per million fuel

    private TempDir _dir = null!;
    private FakeTimeProvider _time = null!;

    [SetUp]
    public void SetUp()
    {
        _dir = new TempDir();
        _time = new FakeTimeProvider(Epoch);
    }

    [TearDown]
    public void TearDown() => _dir.Dispose();

    private CreditLedger Open(CreditsOptions? options = null) => LedgerFactory.Open(_dir.Sub("requester"), Requester, options ?? HoldOneHour, _time);

    private static void Pay(CreditLedger ledger, int lease, Potluck.Protocol.Identity.PrivateKey? provider = null)
    {
        provider ??= Provider;
        Assert.That(ledger.ReservePayment(Lease(lease), provider.PeerId, 10_000), Is.EqualTo(LedgerResult.Reserved));
        Assert.That(ledger.Settle(MakeReceipt(Lease(lease), Requester, provider)), Is.EqualTo(LedgerResult.Recorded));
    }

    [Test]
    public void Payment_IsHeldForTheHoldback_ThenCountsInTheProvidersStanding()
    {
        using var ledger = Open();
        Pay(ledger, 1);

        Assert.That(ledger.Held(Provider.PeerId), Is.EqualTo(Payment));
        Assert.That(ledger.Requester(Provider.PeerId).Supplied, Is.Zero, "held: no standing yet");
        _time.Advance(TimeSpan.FromMinutes(59));
        Assert.That(ledger.Requester(Provider.PeerId).Supplied, Is.Zero, "still held a minute before the end");
        _time.Advance(TimeSpan.FromMinutes(1) + TimeSpan.FromMilliseconds(1));
        Assert.That(ledger.Held(Provider.PeerId), Is.Zero);
        Assert.That(ledger.Requester(Provider.PeerId).Supplied, Is.EqualTo(Payment), "released once the hour has passed");
        Assert.That(ledger.Requester(Provider.PeerId).Debt, Is.EqualTo(-Payment));
    }

    [Test]
    public void Forfeit_TakesWhatIsStillHeld_NeverWhatWasReleased_AndThePaymentsStand()
    {
        using var ledger = Open();
        Pay(ledger, 1);
        _time.Advance(TimeSpan.FromHours(2));
        Pay(ledger, 2);
        Pay(ledger, 3);
        var balance = ledger.Balance();

        var result = ledger.Forfeit(Provider.PeerId, "proof A"u8);

        Assert.That(result, Is.EqualTo(new ForfeitResult(2 * Payment, 2, AlreadyRecorded: false)));
        Assert.That(ledger.Held(Provider.PeerId), Is.Zero);
        Assert.That(ledger.Forfeited(Provider.PeerId), Is.EqualTo(2 * Payment));
        Assert.That(ledger.Balance(), Is.EqualTo(balance), "the payments were made and stay made: only the standing they buy is lost");
        _time.Advance(TimeSpan.FromHours(5));
        Assert.That(ledger.Requester(Provider.PeerId).Supplied, Is.EqualTo(Payment), "the forfeited payments never count, however old");
    }

    [Test]
    public void Forfeit_SameProofTwice_ActsOnce_ADifferentProofTakesOnlyWhatIsHeldSince()
    {
        using var ledger = Open();
        Pay(ledger, 1);
        Assert.That(ledger.Forfeit(Provider.PeerId, "proof A"u8).Amount, Is.EqualTo(Payment));
        Pay(ledger, 2);

        var again = ledger.Forfeit(Provider.PeerId, "proof A"u8);
        Assert.That(again, Is.EqualTo(new ForfeitResult(Payment, 0, AlreadyRecorded: true)), "a proof acts once");
        Assert.That(ledger.Held(Provider.PeerId), Is.EqualTo(Payment), "the later payment is not taken by the old proof");
        Assert.That(ledger.Forfeited(Provider.PeerId), Is.EqualTo(Payment));

        var other = ledger.Forfeit(Provider.PeerId, "proof B"u8);
        Assert.That(other, Is.EqualTo(new ForfeitResult(Payment, 1, AlreadyRecorded: false)), "no payment is forfeited twice");
        Assert.That(ledger.Forfeited(Provider.PeerId), Is.EqualTo(2 * Payment));
    }

    [Test]
    public void Forfeit_OnlyTouchesTheAccusedProvider()
    {
        using var ledger = Open();
        Pay(ledger, 1);
        Pay(ledger, 2, Stranger);

        ledger.Forfeit(Provider.PeerId, Forfeiture.ProofKey(Provider.PeerId, Lease(1)));

        Assert.That(ledger.Held(Stranger.PeerId), Is.EqualTo(Payment));
        Assert.That(ledger.Forfeited(Stranger.PeerId), Is.Zero);
        _time.Advance(TimeSpan.FromHours(1) + TimeSpan.FromSeconds(1));
        Assert.That(ledger.Requester(Stranger.PeerId).Supplied, Is.EqualTo(Payment));
        Assert.That(ledger.Requester(Provider.PeerId).Supplied, Is.Zero);
    }

    [Test]
    public void Forfeit_SurvivesRestart_AndIsStillIdempotent()
    {
        var key = Forfeiture.ProofKey(Provider.PeerId, Lease(9));
        using (var ledger = Open())
        {
            Pay(ledger, 1);
            Pay(ledger, 2);
            Assert.That(ledger.Forfeit(Provider.PeerId, key).Amount, Is.EqualTo(2 * Payment));
        }
        _time.Advance(TimeSpan.FromDays(1));
        using var reopened = Open();

        Assert.That(reopened.Forfeited(Provider.PeerId), Is.EqualTo(2 * Payment));
        Assert.That(reopened.Requester(Provider.PeerId).Supplied, Is.Zero, "forfeited payments stay out of the standing after a restart");
        Assert.That(reopened.Forfeit(Provider.PeerId, key).AlreadyRecorded, Is.True);
        Assert.That(reopened.Forfeited(Provider.PeerId), Is.EqualTo(2 * Payment));
    }

    [Test]
    public void HoldbackZero_CountsAtOnce_AndAProofForfeitsNothing()
    {
        using var ledger = Open(Options with { Holdback = TimeSpan.Zero });
        Pay(ledger, 1);

        Assert.That(ledger.Requester(Provider.PeerId).Supplied, Is.EqualTo(Payment));
        Assert.That(ledger.Forfeit(Provider.PeerId, "proof"u8), Is.EqualTo(new ForfeitResult(0, 0, AlreadyRecorded: false)));
        Assert.That(ledger.Requester(Provider.PeerId).Supplied, Is.EqualTo(Payment));
    }

    [Test]
    public void Forfeit_BadProofKey_Throws()
    {
        using var ledger = Open();
        Assert.Throws<ArgumentException>(() => ledger.Forfeit(Provider.PeerId, ReadOnlySpan<byte>.Empty));
        Assert.Throws<ArgumentException>(() => ledger.Forfeit(Provider.PeerId, new byte[CreditLedger.MaxProofKeyLength + 1]));
    }

    [Test]
    public void ProofKey_DiffersByProviderAndLease()
    {
        var a = Forfeiture.ProofKey(Provider.PeerId, Lease(1));
        Assert.That(Forfeiture.ProofKey(Provider.PeerId, Lease(1)), Is.EqualTo(a));
        Assert.That(Forfeiture.ProofKey(Provider.PeerId, Lease(2)), Is.Not.EqualTo(a));
        Assert.That(Forfeiture.ProofKey(Stranger.PeerId, Lease(1)), Is.Not.EqualTo(a));
    }
}
