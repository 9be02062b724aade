using System.Buffers.Binary;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Adversaries;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Providing;
using Potluck.Scheduler.Verification;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// The commit-reveal audit of the decision to re-run: a provider cannot learn the decision before it answers, and a
/// requester that lies about it (a secret other than the one committed to, a check it did not declare) is caught by the
/// provider from its own signed receipt.
/// </summary>
[Category("Adversarial")]
public class AuditAttackTests
{
    private static readonly byte[] HashChain = ComputeCluster.Sample("hashchain");

    /// <summary>
    /// The best a provider can do without the secret: a function of everything it holds when it answers (the terms: the
    /// commitment, the declared rate, the request id), here the decision rule applied with the commitment in the secret's place.
    /// </summary>
    private static bool ProviderGuessesACheck(LeaseTerms terms)
    {
        var id = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(id, terms.RequestId);
        return LeaseAudit.Selected(terms.AuditCommitment, id, terms.AuditRatePpm);
    }

    [Test]
    public void ProviderThatCheatsWhenItGuessesNoCheck_CannotPredictTheDecision_AndIsCaught() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 91);
        var requester = await cluster.AddAsync("requester", provide: false);
        WrongOutputExecutor? guesser = null;
        var guessedChecks = 0;
        // Cheapest, so chosen first: it runs honestly when it guesses a check is coming and invents the output otherwise.
        var cheat = await cluster.AddAsync("guesser", provide: true, price: 5, decorate: inner => guesser = new WrongOutputExecutor(inner, e =>
        {
            var check = ProviderGuessesACheck(e.Terms);
            guessedChecks += check ? 1 : 0;
            return !check;
        }));
        var honest = await cluster.AddAsync("honest", provide: true, price: 10);
        await requester.Client.WaitForProvidersAsync(2, ct);

        var inventedPaid = 0;
        var tasks = 0;
        for (var i = 0; i < 30 && !requester.Client.Reputation.IsRefused(cheat.PeerId); i++)
        {
            var submission = OutcomeAttackTests.HashTask($"g{i}", 50) with { VerifyRate = 0.5 };
            var result = await requester.Node.SubmitAsync(submission, ct);
            tasks++;
            var right = ComputeCluster.HashChain(Encoding.UTF8.GetBytes($"g{i}"), 50);
            inventedPaid += result.Provider == cheat.PeerId && Encoding.ASCII.GetString(result.Output.Span) != right ? 1 : 0;
        }
        await requester.Client.WhenReceiptsDeliveredAsync(ct);

        Assert.That(guesser!.Corrupted, Is.GreaterThan(0), "the guesser cheated whenever it guessed no check");
        Assert.That(guessedChecks, Is.GreaterThan(0), "and ran honestly when it guessed one");
        Assert.That(requester.Client.Reputation.IsRefused(cheat.PeerId), Is.True,
            $"caught after {tasks} tasks: its guesses tell it nothing about the decision (seed {cluster.Seed})");
        Assert.That(inventedPaid, Is.LessThan(guesser.Corrupted), "the invented output that was checked was not paid");
        Assert.That(inventedPaid, Is.LessThanOrEqualTo(4), "at rate 0.5 a cheat is caught within a few tries, not after 32 of 40");
        Assert.That(cheat.Provider.AuditViolations + honest.Provider.AuditViolations, Is.Zero,
            "an honest requester's reveals match its commitments and its declared rate");
        Assert.That(TrustCluster.Earned(honest, requester), Is.GreaterThan(0), "the honest provider took over and was paid");
    });

    private static LeaseWork Work(TrustCluster cluster, string seed, byte[] secret, int ratePpm) => new()
    {
        Module = HashChain,
        Input = new TaskPayload(["50"], Encoding.UTF8.GetBytes(seed)).Encode(),
        FuelLimit = 200_000_000,
        MemoryLimitBytes = 32L << 20,
        Deadline = cluster.Time.GetUtcNow() + TimeSpan.FromMinutes(5),
        MaxPricePerMegaFuel = 50,
        AuditCommitment = LeaseAudit.Commit(secret),
        AuditRatePpm = ratePpm,
    };

    private static bool Selected(LeaseOutcome outcome, byte[] secret, int ratePpm) =>
        LeaseAudit.Selected(secret, SignedAttestation.Decode(outcome.Result!.Attestation, new CreditsOptions()).Value!.Hash, ratePpm);

    private static AuditVerdict Audit(LeaseOutcome outcome, byte[] receipt) =>
        LeaseAudit.Verify(LeaseCodec.SerializeSignedTerms(outcome.Terms!), outcome.Result!.Attestation, receipt, new LeaseOptions(), new CreditsOptions());

    [Test]
    public void RequesterThatRevealsAnotherSecret_OrChecksMoreThanDeclared_IsCaughtByTheProvider_AndRefused() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 92);
        var provider = await cluster.AddAsync("provider", provide: true, price: 10);
        var random = new Random(cluster.Seed);
        byte[] Secret()
        {
            var s = new byte[LeaseAudit.SecretLength];
            random.NextBytes(s);
            return s;
        }
        const int rate = 50_000; // 5 %
        async Task<(TrustCluster.Member Node, FreeloadingRequester Requester)> Join(string name)
        {
            var node = await cluster.AddAsync(name, provide: false);
            await node.Client.WaitForProvidersAsync(1, ct);
            return (node, new FreeloadingRequester(node.Potluck.Host, node.Key, node.Potluck.Runtime, NullLogger.Instance));
        }
        var providerKey = (await Join("probe")).Node.Client.Providers().Single().Key;
        var (wrongNode, wrongSecret) = await Join("wrong-secret");
        var (overNode, overChecker) = await Join("over-checker");
        var (honestNode, honest) = await Join("honest");
        await using var _1 = wrongSecret;
        await using var _2 = overChecker;
        await using var _3 = honest;
        var now = cluster.Time.GetUtcNow();

        // Reveals a secret other than the one it committed to.
        var committed = Secret();
        var leaseA = await wrongSecret.LeaseAsync(providerKey, Work(cluster, "a", committed, rate), ct);
        Assert.That(leaseA.Kind, Is.EqualTo(LeaseOutcomeKind.Completed), leaseA.Detail);
        var lieA = wrongSecret.PayReceipt(leaseA, Secret(), Selected(leaseA, committed, rate), now);
        var ackA = await wrongSecret.SendReceiptAsync(provider.PeerId, lieA, ct);

        // Claims a check its committed decision did not select: it re-runs more than it declared.
        LeaseOutcome leaseB;
        byte[] secretB;
        var tries = 0;
        do
        {
            secretB = Secret();
            leaseB = await overChecker.LeaseAsync(providerKey, Work(cluster, $"b{tries++}", secretB, rate), ct);
            Assert.That(leaseB.Kind, Is.EqualTo(LeaseOutcomeKind.Completed), leaseB.Detail);
            if (Selected(leaseB, secretB, rate))
            {
                // Selected: checking is what it declared; pay honestly and try again.
                await overChecker.SendReceiptAsync(provider.PeerId, overChecker.PayReceipt(leaseB, secretB, true, now), ct);
            }
        }
        while (Selected(leaseB, secretB, rate) && tries < 4);
        var lieB = overChecker.PayReceipt(leaseB, secretB, @checked: true, now);
        var ackB = await overChecker.SendReceiptAsync(provider.PeerId, lieB, ct);

        // The control: reveals the committed secret and checks exactly when the decision says so.
        var secretC = Secret();
        var leaseC = await honest.LeaseAsync(providerKey, Work(cluster, "c", secretC, rate), ct);
        var truthC = honest.PayReceipt(leaseC, secretC, Selected(leaseC, secretC, rate), now);
        var ackC = await honest.SendReceiptAsync(provider.PeerId, truthC, ct);

        Assert.That(new[] { ackA.Status, ackB.Status, ackC.Status }, Is.All.EqualTo(ReceiptAckStatus.Recorded), "payment itself is accepted");
        Assert.That(provider.Provider.AuditViolations, Is.EqualTo(2), "both lies caught, the honest receipt not");
        Assert.That(provider.Ledger.Requester(wrongNode.PeerId).Violations, Is.EqualTo(1));
        Assert.That(provider.Ledger.Requester(overNode.PeerId).Violations, Is.EqualTo(1));
        Assert.That(provider.Ledger.Requester(honestNode.PeerId).Violations, Is.Zero);

        // Anyone holding the signed terms, attestation and receipt reaches the same verdicts.
        Assert.That(Audit(leaseA, lieA), Is.EqualTo(AuditVerdict.WrongSecret));
        Assert.That(Audit(leaseB, lieB), Is.EqualTo(AuditVerdict.CheckedMoreThanDeclared));
        Assert.That(Audit(leaseC, truthC), Is.EqualTo(AuditVerdict.Followed));
        Assert.That(Audit(leaseC, lieA), Is.EqualTo(AuditVerdict.Mismatched), "documents of different leases do not audit");

        // The provider lowers the liars' standing: no new lease; the honest requester is still served.
        var nextA = await wrongSecret.LeaseAsync(providerKey, Work(cluster, "a2", Secret(), rate), ct);
        var nextB = await overChecker.LeaseAsync(providerKey, Work(cluster, "b2", Secret(), rate), ct);
        var nextC = await honest.LeaseAsync(providerKey, Work(cluster, "c2", Secret(), rate), ct);
        Assert.That(nextA.Kind, Is.EqualTo(LeaseOutcomeKind.Rejected));
        Assert.That(nextA.Detail, Does.Contain("audit commitment"));
        Assert.That(nextB.Kind, Is.EqualTo(LeaseOutcomeKind.Rejected));
        Assert.That(nextC.Kind, Is.EqualTo(LeaseOutcomeKind.Completed), nextC.Detail);

        // Recorded durably: a restarted provider still refuses the liar.
        await cluster.StopAsync(provider);
        provider = await cluster.RestartAsync(provider);
        Assert.That(provider.Ledger.Requester(wrongNode.PeerId).Violations, Is.EqualTo(1), "the evidence survives a restart");
    });
}
