using FsCheck;
using FsCheck.Fluent;
using Potluck.Scheduler.Verification;

namespace Potluck.Scheduler.Tests.Verification;

public class VerificationPolicyTests
{
    /// <summary>The decay on its own: one stranger result (the defaults keep ten).</summary>
    private static readonly VerificationPolicy Policy = new(new VerificationOptions { StrangerResults = 1 });

    [TestCase(0, 1.0)]
    [TestCase(1, 0.5)]
    [TestCase(3, 0.25)]
    [TestCase(9, 0.1)]
    [TestCase(19, 0.05)]
    [TestCase(20, 0.05)]
    [TestCase(1_000_000, 0.05)]
    public void Rate_DecaysAsOneOverNPlusOne_ToTheFloor(int verified, double expected) =>
        Assert.That(Policy.Rate(verified), Is.EqualTo(expected).Within(1e-12));

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public Property Rate_IsNeverBelowTheFloorNeverZero_AndNeverRisesWithMoreVerifiedResults() =>
        Prop.ForAll(Gen.Choose(0, 1_000_000).ToArbitrary(), Gen.Choose(1, 1000).ToArbitrary(), (n, floorPermille) =>
        {
            var policy = new VerificationPolicy(new VerificationOptions { Floor = floorPermille / 1000.0, StrangerResults = 1 + n % 20 });
            var rate = policy.Rate(n);
            return rate > 0 && rate >= policy.Options.Floor && rate <= 1 && policy.Rate(n + 1) <= rate;
        });

    [Test]
    public void Stranger_IsAlwaysVerified()
    {
        var random = new Potluck.Protocol.Runtime.SeededSecureRandom(1);
        Assert.That(Enumerable.Range(0, 1000).All(_ => Policy.ShouldVerify(0, null, random)), Is.True);
    }

    [TestCase(4, 0.2)]
    [TestCase(1000, 0.05)]
    public void Sampling_FollowsTheRate(int verified, double rate)
    {
        var random = new Potluck.Protocol.Runtime.SeededSecureRandom(7);
        var checks = Enumerable.Range(0, 20_000).Count(_ => Policy.ShouldVerify(verified, null, random));
        Assert.That(checks / 20_000.0, Is.EqualTo(rate).Within(0.01));
    }

    [Test]
    public void RequestedRate_CanRaiseChecking_ButNeverTurnItOff()
    {
        var random = new Potluck.Protocol.Runtime.SeededSecureRandom(3);
        Assert.That(Enumerable.Range(0, 100).All(_ => Policy.ShouldVerify(1000, 1.0, random)), Is.True, "a requested rate of 1 checks everything");
        var checks = Enumerable.Range(0, 20_000).Count(_ => Policy.ShouldVerify(1000, 0.0, random));
        Assert.That(checks / 20_000.0, Is.EqualTo(0.05).Within(0.01), "a requested rate of 0 is clamped to the floor");
    }

    [Test]
    public void StrangerResults_KeepsCheckingEverythingForThatMany()
    {
        var policy = new VerificationPolicy(new VerificationOptions { StrangerResults = 3 });
        Assert.That(new[] { policy.Rate(0), policy.Rate(1), policy.Rate(2), policy.Rate(3) }, Is.EqualTo(new[] { 1.0, 1.0, 1.0, 0.5 }));
    }

    [TestCase(0.0)]
    [TestCase(-0.1)]
    [TestCase(1.5)]
    [TestCase(double.NaN)]
    public void ZeroOrInvalidFloor_IsRefused(double floor) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new VerificationPolicy(new VerificationOptions { Floor = floor }));

    [Test]
    public void Reputation_StreakDecaysRateAndResetsOnInconclusive_RefusalIsFinal()
    {
        var store = new ReputationStore();
        var peer = Potluck.Protocol.Identity.PrivateKey.FromRandom(new Random(1)).PeerId;
        for (var i = 0; i < 4; i++)
        {
            store.RecordVerified(peer);
        }
        Assert.That(Policy.Rate(store.Get(peer).ConsecutiveVerified), Is.EqualTo(0.2).Within(1e-12));
        store.RecordInconclusive(peer);
        Assert.That(store.Get(peer).ConsecutiveVerified, Is.Zero);
        Assert.That(store.Get(peer).Verified, Is.EqualTo(4));
        var refusals = new List<string>();
        store.Refused += (_, why) => refusals.Add(why);
        Assert.That(store.Refuse(peer, "fraud"), Is.True);
        Assert.That(store.Refuse(peer, "again"), Is.False);
        store.RecordVerified(peer);
        Assert.That(store.IsRefused(peer), Is.True);
        Assert.That(store.Reputation(peer), Is.Zero);
        Assert.That(refusals, Is.EqualTo(new[] { "fraud" }));
    }

    [Test, Category("Adversarial")]
    public void NewIdentity_IsCheckedAtRateOne_ForItsFirstTenResults_SoWhitewashingBuysNothing()
    {
        var policy = new VerificationPolicy(new VerificationOptions());
        var random = new Potluck.Protocol.Runtime.SeededSecureRandom(5);
        for (var verified = 0; verified < 10; verified++)
        {
            Assert.That(policy.Rate(verified), Is.EqualTo(1.0), $"after {verified} verified results");
            Assert.That(Enumerable.Range(0, 200).All(_ => policy.ShouldVerify(verified, null, random)), Is.True);
        }
        Assert.That(policy.Rate(10), Is.EqualTo(0.5), "then the rate decays");
        Assert.That(policy.Rate(28), Is.EqualTo(0.05), "to the floor after 28 verified results (19 before)");
    }
}
