using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Adversaries;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Verification;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>Fraud proofs without amplification: a proof cannot buy a re-run on every node.</summary>
[Category("Adversarial")]
public class FraudProofAttackTests
{
    private static readonly byte[] HashChain = ComputeCluster.Sample("hashchain");

    [Test]
    public void ProofsOfLeasesBetweenThrowawayIdentities_CostTheOtherNodesNoReRun() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 88);
        var honest = await cluster.AddAsync("honest", provide: true);
        var bystander = await cluster.AddAsync("bystander", provide: false);
        var attacker = await cluster.AddAsync("attacker", provide: false);
        var reRuns = 0;
        honest.Node.Fraud.Checked += (_, _) => reRuns++;
        bystander.Node.Fraud.Checked += (_, _) => reRuns++;
        var random = new Random(88);

        for (var i = 0; i < 20; i++)
        {
            var input = new TaskPayload(["20000"], Encoding.UTF8.GetBytes($"waste {i}")).Encode();
            var proof = ProofForger.SelfDealt(attacker.Key, PrivateKey.FromRandom(random), HashChain, input, 200_000_000, (ulong)i + 1, cluster.Time.GetUtcNow());
            Assert.That(await attacker.Node.Fraud.PublishAsync(proof, ct), Is.True);
        }
        await cluster.Hub.WhenIdleAsync(ct);

        Assert.That(reRuns, Is.Zero, "no node re-ran a task for a provider nobody uses");
    });

    [Test]
    public void RequesterRepeatingAFalseAccusation_IsCheckedOnce_RefutedAndLosesItsStanding() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 89);
        var provider = await cluster.AddAsync("provider", provide: true);
        var checker = await cluster.AddAsync("checker", provide: true);
        var accuser = await cluster.AddAsync("accuser", provide: false);
        await accuser.Client.WaitForProvidersAsync(2, ct);
        await checker.Client.WaitForProvidersAsync(1, ct);
        var providerKey = accuser.Client.Providers().Single(a => a.Provider == provider.PeerId).Key;
        await using var lessee = new FreeloadingRequester(accuser.Potluck.Host, accuser.Key, accuser.Potluck.Runtime, NullLogger.Instance);
        var input = new TaskPayload(["100"], "honest work"u8.ToArray()).Encode();
        var outcome = await lessee.LeaseAsync(providerKey, new LeaseWork
        {
            Module = HashChain, Input = input, FuelLimit = 200_000_000, MemoryLimitBytes = 32L << 20,
            Deadline = cluster.Time.GetUtcNow() + TimeSpan.FromMinutes(5), MaxPricePerMegaFuel = 50,
        }, ct);
        Assert.That(outcome.Kind, Is.EqualTo(LeaseOutcomeKind.Completed), outcome.Detail);
        var verdicts = new List<bool>();
        checker.Node.Fraud.Checked += (_, stands) => verdicts.Add(stands);

        var proof = ProofForger.OfHonestLease(outcome, HashChain, input);
        for (var i = 0; i < 10; i++)
        {
            await accuser.Node.Fraud.PublishAsync(proof, ct);
        }
        await cluster.Hub.WhenIdleAsync(ct);

        Assert.That(verdicts, Is.EqualTo(new[] { false }), "re-run once, and refuted");
        Assert.That(checker.Node.Reputation.IsRefused(provider.PeerId), Is.False, "the honest provider keeps its standing");
        Assert.That(checker.Node.Reputation.IsRefused(accuser.PeerId), Is.True, "the false accuser loses its own");
        Assert.That(checker.Potluck.Host.Budgets.ScoreOf(accuser.PeerId), Is.EqualTo(-checker.Potluck.Host.Budgets.Options.RefusedProofPenalty).Within(0.5),
            "and its peer score: a second refuted proof reaches the ban threshold");
    });

    [Test]
    public void ProofsAreCheckedByPriority_AProviderThisNodeUsesFirst_NotInArrivalOrder() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 90);
        var used = await cluster.AddAsync("used", provide: true);
        var checker = await cluster.AddAsync("checker", provide: false);
        await checker.Client.WaitForProvidersAsync(1, ct);
        var work = await checker.Node.SubmitAsync(OutcomeAttackTests.HashTask("uses it", 100), ct);
        Assert.That(work.Status, Is.EqualTo(ExecutionStatus.Success), work.Error);
        var strangerA = await cluster.AddAsync("strangerA", provide: true, decorate: inner => new WrongOutputExecutor(inner));
        var strangerB = await cluster.AddAsync("strangerB", provide: true, decorate: inner => new WrongOutputExecutor(inner));
        var accuser = await cluster.AddAsync("accuser", provide: false);
        await checker.Client.WaitForProvidersAsync(3, ct);
        await accuser.Client.WaitForProvidersAsync(3, ct);
        await using var lessee = new FreeloadingRequester(accuser.Potluck.Host, accuser.Key, accuser.Potluck.Runtime, NullLogger.Instance);
        var input = new TaskPayload(["100"], "order"u8.ToArray()).Encode();
        async Task<FraudProof> ProofAgainst(TrustCluster.Member provider)
        {
            var key = accuser.Client.Providers().Single(a => a.Provider == provider.PeerId).Key;
            var outcome = await lessee.LeaseAsync(key, new LeaseWork
            {
                Module = HashChain, Input = input, FuelLimit = 200_000_000, MemoryLimitBytes = 32L << 20,
                Deadline = cluster.Time.GetUtcNow() + TimeSpan.FromMinutes(5), MaxPricePerMegaFuel = 50,
            }, ct);
            Assert.That(outcome.Kind, Is.EqualTo(LeaseOutcomeKind.Completed), outcome.Detail);
            return ProofForger.OfHonestLease(outcome, HashChain, input);
        }
        var proofs = new[] { await ProofAgainst(strangerA), await ProofAgainst(strangerB), await ProofAgainst(used) };
        var order = new List<PeerId>();
        checker.Node.Fraud.Checked += (provider, _) => order.Add(provider);

        foreach (var proof in proofs)
        {
            await accuser.Node.Fraud.PublishAsync(proof, ct);
        }
        await cluster.Hub.WhenIdleAsync(ct);

        Assert.That(order, Is.EqualTo(new[] { used.PeerId, strangerA.PeerId, strangerB.PeerId }),
            "the provider this node has leased from is checked first, though its proof arrived last");
        Assert.That(checker.Node.Reputation.IsRefused(strangerA.PeerId) && checker.Node.Reputation.IsRefused(strangerB.PeerId), Is.True,
            "the cheaters are still caught");
    });
}
