using System.Security.Cryptography;
using Potluck.Scheduler.Verification;

namespace Potluck.Scheduler.Tests.Verification;

public class LeaseAuditTests
{
    private static byte[] Bytes(Random random, int n)
    {
        var b = new byte[n];
        random.NextBytes(b);
        return b;
    }

    [Test]
    public void Selected_FollowsTheDeclaredRate()
    {
        var random = new Random(7);
        foreach (var ppm in new[] { 50_000, 250_000, 500_000 })
        {
            var selected = 0;
            const int n = 20_000;
            for (var i = 0; i < n; i++)
            {
                selected += LeaseAudit.Selected(Bytes(random, 32), Bytes(random, 32), ppm) ? 1 : 0;
            }
            var p = ppm / 1e6;
            var sigma = Math.Sqrt(n * p * (1 - p));
            Assert.That(selected, Is.EqualTo(n * p).Within(5 * sigma), $"rate {p}");
        }
        Assert.That(LeaseAudit.Selected(new byte[32], new byte[32], LeaseAudit.AlwaysPpm), Is.True);
        Assert.That(LeaseAudit.Selected(new byte[32], new byte[32], 0), Is.False);
    }

    [Test]
    public void Decision_DependsOnTheAttestation_SoItIsFixedOnlyOnceTheResultIsSigned()
    {
        // The same secret decides differently for different attestations: nothing decides before the result exists.
        var random = new Random(8);
        var secret = Bytes(random, 32);
        var decisions = Enumerable.Range(0, 200).Select(_ => LeaseAudit.Selected(secret, Bytes(random, 32), 500_000)).ToList();
        Assert.That(decisions, Has.Some.True.And.Some.False);
    }

    [Test]
    public void AProviderHoldingOnlyTheCommitment_PredictsTheDecisionNoBetterThanChance()
    {
        // The provider knows the commitment, the rate and its own attestation; its best computable guesses agree with the
        // requester's decision about half the time at rate 1/2, as a coin would.
        var random = new Random(9);
        const int n = 4000;
        var agreeCommit = 0;
        var agreeHash = 0;
        for (var i = 0; i < n; i++)
        {
            var secret = Bytes(random, 32);
            var commitment = LeaseAudit.Commit(secret);
            var attestation = Bytes(random, 32);
            var decision = LeaseAudit.Selected(secret, attestation, 500_000);
            agreeCommit += LeaseAudit.Selected(commitment, attestation, 500_000) == decision ? 1 : 0;
            agreeHash += (SHA256.HashData([.. commitment, .. attestation])[0] < 128) == decision ? 1 : 0;
        }
        var sigma = Math.Sqrt(n * 0.25);
        Assert.That(agreeCommit, Is.EqualTo(n / 2.0).Within(5 * sigma));
        Assert.That(agreeHash, Is.EqualTo(n / 2.0).Within(5 * sigma));
    }

    [Test]
    public void Verify_CatchesAWrongOrMissingSecret_AndACheckNotDeclared()
    {
        var random = new Random(10);
        var secret = Bytes(random, 32);
        var commitment = LeaseAudit.Commit(secret);
        byte[] attestation;
        do
        {
            attestation = Bytes(random, 32);
        }
        while (LeaseAudit.Selected(secret, attestation, 100_000));

        Assert.That(LeaseAudit.Verify(commitment, 100_000, attestation, secret, claimsChecked: false), Is.EqualTo(AuditVerdict.Followed));
        Assert.That(LeaseAudit.Verify(commitment, 100_000, attestation, secret, claimsChecked: true), Is.EqualTo(AuditVerdict.CheckedMoreThanDeclared));
        Assert.That(LeaseAudit.Verify(commitment, 100_000, attestation, Bytes(random, 32), claimsChecked: false), Is.EqualTo(AuditVerdict.WrongSecret));
        Assert.That(LeaseAudit.Verify(commitment, 100_000, attestation, [], claimsChecked: false), Is.EqualTo(AuditVerdict.MissingSecret));
        Assert.That(LeaseAudit.Verify(commitment, 100_000, attestation, secret[..16], claimsChecked: false), Is.EqualTo(AuditVerdict.WrongSecret));
        Assert.That(LeaseAudit.Verify([], 100_000, attestation, [], claimsChecked: true), Is.EqualTo(AuditVerdict.NotDeclared));
        Assert.That(LeaseAudit.Verify(commitment, LeaseAudit.AlwaysPpm, attestation, secret, claimsChecked: false), Is.EqualTo(AuditVerdict.CheckSkipped));
        Assert.That(LeaseAudit.IsViolation(AuditVerdict.CheckSkipped), Is.False, "a requester without a sandbox may skip a check: harmless to the provider");
    }
}
