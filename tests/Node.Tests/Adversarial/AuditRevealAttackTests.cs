using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Adversaries;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Topics;
using Potluck.Scheduler.Verification;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// The audit reveal in fraud proofs: a requester that convicts does not pay, so no receipt shows its secret; the proof
/// carries it, and every node checks it against the commitment in the signed terms before any re-run.
/// </summary>
[Category("Adversarial")]
public class AuditRevealAttackTests
{
    private static readonly byte[] HashChain = ComputeCluster.Sample("hashchain");

    /// <summary>Every fraud proof published on the hub, as decoded by an extra subscriber that accepts everything.</summary>
    private static List<FraudProof> Spy(TrustCluster cluster)
    {
        var seen = new List<FraudProof>();
        var spy = cluster.Hub.Join(Potluck.Protocol.Identity.PrivateKey.FromRandom(new Random(cluster.Seed + 1_000)).PeerId);
        spy.Subscribe(FraudProtocol.Topic, m =>
        {
            if (FraudProof.TryDecode(m.Data, new FraudOptions(), out var proof))
            {
                seen.Add(proof);
            }
            return TopicVerdict.Ignore;
        }, (_, _) => ValueTask.CompletedTask);
        return seen;
    }

    [Test]
    public void HonestConviction_ItsProofCarriesTheReveal_WhichChecks_AndWitnessesUpholdIt() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 191);
        var requester = await cluster.AddAsync("requester", provide: false);
        var witness = await cluster.AddAsync("witness", provide: false);
        var cheater = await cluster.AddAsync("cheater", provide: true, price: 5, decorate: inner => new WrongOutputExecutor(inner));
        var honest = await cluster.AddAsync("honest", provide: true, price: 6);
        await requester.Client.WaitForProvidersAsync(2, ct);
        await witness.Client.WaitForProvidersAsync(2, ct);
        var proofs = Spy(cluster);
        var upheld = new List<bool>();
        witness.Node.Fraud.Checked += (_, stands) => upheld.Add(stands);

        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("reveal", 50), ct);
        await cluster.Hub.WhenIdleAsync(ct);

        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("reveal"u8.ToArray(), 50)));
        Assert.That(requester.Client.Reputation.IsRefused(cheater.PeerId), Is.True, "convicted by the requester's re-run");
        var proof = proofs.Single();
        Assert.That(proof.AuditSecret, Has.Length.EqualTo(LeaseAudit.SecretLength), "the reveal is in the proof");
        var check = proof.Inspect(new FraudOptions());
        Assert.That(check.Status, Is.EqualTo(FraudProofStatus.Plausible), check.Detail);
        Assert.That(check.Terms!.AuditCommitment, Has.Length.EqualTo(LeaseAudit.CommitmentLength), "and the terms committed to it");
        Assert.That(LeaseAudit.Verify(check.Terms.AuditCommitment, check.Terms.AuditRatePpm, check.Attestation!.Hash, proof.AuditSecret, claimsChecked: true),
            Is.EqualTo(AuditVerdict.Followed), "the check was the one the declared rate selected");
        Assert.That(upheld, Is.EqualTo(new[] { true }), "the witness re-ran it once, after the reveal checked, and upheld it");
        Assert.That(witness.Node.Reputation.IsRefused(cheater.PeerId), Is.True);
        Assert.That(witness.Node.Reputation.IsRefused(requester.PeerId), Is.False, "its publisher keeps its standing");
    });

    [Test]
    public void ProofWithAWrongOrMissingReveal_IsRefutedUnrun_CostsItsPublisher_AndTheAccusedRecordsAViolation() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 192);
        var provider = await cluster.AddAsync("provider", provide: true);
        var witness = await cluster.AddAsync("witness", provide: true);
        var accuser = await cluster.AddAsync("accuser", provide: false);
        var silent = await cluster.AddAsync("silent", provide: false);
        await accuser.Client.WaitForProvidersAsync(2, ct);
        await silent.Client.WaitForProvidersAsync(2, ct);
        await witness.Client.WaitForProvidersAsync(1, ct);
        var reRuns = 0;
        witness.Node.Fraud.Checked += (_, _) => reRuns++;
        provider.Node.Fraud.Checked += (_, _) => reRuns++;

        // Each leases honest work from the provider committing to a secret at rate one (every result checked), then accuses
        // the provider: the accuser revealing another secret than the one it committed to, the silent one revealing none.
        async Task<LeaseOutcome> LeaseAsync(TrustCluster.Member who, byte[] secret, string tag)
        {
            await using var lessee = new FreeloadingRequester(who.Potluck.Host, who.Key, who.Potluck.Runtime, NullLogger.Instance);
            var key = who.Client.Providers().Single(a => a.Provider == provider.PeerId).Key;
            var outcome = await lessee.LeaseAsync(key, new LeaseWork
            {
                Module = HashChain, Input = new TaskPayload(["100"], Encoding.UTF8.GetBytes(tag)).Encode(), FuelLimit = 200_000_000,
                MemoryLimitBytes = 32L << 20, Deadline = cluster.Time.GetUtcNow() + TimeSpan.FromMinutes(5), MaxPricePerMegaFuel = 50,
                AuditCommitment = LeaseAudit.Commit(secret), AuditRatePpm = LeaseAudit.AlwaysPpm,
            }, ct);
            Assert.That(outcome.Kind, Is.EqualTo(LeaseOutcomeKind.Completed), outcome.Detail);
            return outcome;
        }
        var secret = Enumerable.Repeat((byte)7, LeaseAudit.SecretLength).ToArray();
        var other = Enumerable.Repeat((byte)8, LeaseAudit.SecretLength).ToArray();
        var accused = await LeaseAsync(accuser, secret, "wrong reveal");
        var unrevealed = await LeaseAsync(silent, secret, "no reveal");
        Assert.That(await accuser.Node.Fraud.PublishAsync(ProofForger.OfHonestLease(accused, HashChain,
            new TaskPayload(["100"], "wrong reveal"u8.ToArray()).Encode(), other), ct), Is.True);
        Assert.That(await silent.Node.Fraud.PublishAsync(ProofForger.OfHonestLease(unrevealed, HashChain,
            new TaskPayload(["100"], "no reveal"u8.ToArray()).Encode()), ct), Is.True);
        await cluster.Hub.WhenIdleAsync(ct);

        Assert.That(reRuns, Is.Zero, "refuted before any re-run: nobody spent fuel on them");
        foreach (var publisher in new[] { accuser, silent })
        {
            Assert.That(witness.Node.Reputation.IsRefused(publisher.PeerId), Is.True, $"{publisher.Name} loses its standing, as for a refuted proof");
            Assert.That(witness.Potluck.Host.Budgets.ScoreOf(publisher.PeerId), Is.EqualTo(-witness.Potluck.Host.Budgets.Options.RefusedProofPenalty).Within(0.5),
                "and its peer score");
            Assert.That(provider.Ledger.Requester(publisher.PeerId).Violations, Is.EqualTo(1), $"the accused provider records {publisher.Name}'s broken commitment");
        }
        Assert.That(witness.Node.Reputation.IsRefused(provider.PeerId), Is.False, "the honest provider keeps its standing");

        // The accused refuses the liar from then on (an audit violation, as for a lying receipt).
        silent.Client.Reputation.Refuse(witness.PeerId, "test: only the accused provider");
        string? refusal = null;
        try
        {
            await silent.Node.SubmitAsync(OutcomeAttackTests.HashTask("after", 20), ct);
        }
        catch (Potluck.Scheduler.Requesting.SubmissionException e)
        {
            refusal = string.Join("; ", e.Attempts.Select(a => a.Detail));
        }
        Assert.That(refusal, Does.Contain("audit commitment"));
    });
}
