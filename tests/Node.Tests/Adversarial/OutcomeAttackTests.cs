using System.Text;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Adversaries;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Requesting;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>Every outcome is checked or unpaid: providers that claim timeouts, traps or extra fuel without the work.</summary>
[Category("Adversarial")]
public class OutcomeAttackTests
{
    private static readonly byte[] HashChain = ComputeCluster.Sample("hashchain");

    internal static TaskSubmission HashTask(string seed, int n, long maxPrice = 50) => new()
    {
        Module = HashChain,
        Input = Encoding.UTF8.GetBytes(seed),
        Args = [n.ToString(System.Globalization.CultureInfo.InvariantCulture)],
        Fuel = 200_000_000,
        MemoryBytes = 32L << 20,
        MaxPricePerMegaFuel = maxPrice,
    };

    [Test]
    public void ProviderClaimingAWallClockTimeout_IsNeverPaid_AndTheTaskCompletesElsewhere() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 81);
        var requester = await cluster.AddAsync("requester", provide: false);
        FakeOutcomeExecutor? faker = null;
        // Cheapest, so chosen first: it answers "timed out" at once and claims the whole fuel limit.
        var liar = await cluster.AddAsync("liar", provide: true, price: 5, decorate: _ => faker = new FakeOutcomeExecutor(ExecutionStatus.TimedOut));
        var honest = await cluster.AddAsync("honest", provide: true, price: 10);
        await requester.Client.WaitForProvidersAsync(2, ct);

        for (var i = 0; i < 3; i++)
        {
            var result = await requester.Node.SubmitAsync(HashTask($"t{i}", 100), ct);
            Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
            Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain(Encoding.UTF8.GetBytes($"t{i}"), 100)));
        }
        await requester.Client.WhenReceiptsDeliveredAsync(ct);

        Assert.That(faker!.Answered, Is.GreaterThan(0), "the liar was asked");
        Assert.That(TrustCluster.Spent(requester, liar), Is.Zero, "a wall-clock timeout is never paid");
        Assert.That(TrustCluster.Earned(liar, requester), Is.Zero);
        Assert.That(requester.Client.Reputation.Get(liar.PeerId).Failures, Is.GreaterThan(0), "a timeout counts against the provider");
        Assert.That(TrustCluster.Earned(honest, requester), Is.GreaterThan(0), "the honest provider did the work and was paid");
    });

    [Test]
    public void ProviderClaimingATrapWithoutRunning_IsCaught_Unpaid_AndRefused() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 82);
        var requester = await cluster.AddAsync("requester", provide: false);
        var liar = await cluster.AddAsync("liar", provide: true, price: 5, decorate: _ => new FakeOutcomeExecutor(ExecutionStatus.Trapped));
        var honest = await cluster.AddAsync("honest", provide: true, price: 10);
        await requester.Client.WaitForProvidersAsync(2, ct);

        var result = await requester.Node.SubmitAsync(HashTask("trap", 100), ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);

        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("trap"u8.ToArray(), 100)));
        Assert.That(TrustCluster.Spent(requester, liar), Is.Zero, "an invented trap is not paid");
        Assert.That(TrustCluster.Earned(liar, requester), Is.Zero);
        Assert.That(requester.Client.Reputation.IsRefused(liar.PeerId), Is.True, "a trap a deterministic re-run contradicts is fraud");
        await cluster.Hub.WhenIdleAsync(ct);
        Assert.That(honest.Node.Reputation.IsRefused(liar.PeerId), Is.True, "the fraud proof convinced the other node");
    });

    [Test]
    public void ProviderInflatingFuel_IsCaughtWhenSampled_AndUnpaid() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 83);
        var requester = await cluster.AddAsync("requester", provide: false);
        var liar = await cluster.AddAsync("liar", provide: true, price: 5, decorate: inner => new InflatedFuelExecutor(inner, 1_000_000));
        await cluster.AddAsync("honest", provide: true, price: 10);
        await requester.Client.WaitForProvidersAsync(2, ct);

        var result = await requester.Node.SubmitAsync(HashTask("fuel", 100), ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);

        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        Assert.That(TrustCluster.Spent(requester, liar), Is.Zero, "claimed fuel is compared exactly with the re-run");
        Assert.That(requester.Client.Reputation.IsRefused(liar.PeerId), Is.True);
    });
}

/// <summary>Replicas: agreement among identities that may be one adversary is not verification.</summary>
[Category("Adversarial")]
public class ReplicaAttackTests
{
    [Test]
    public void SybilReplicasAgreeingOnAWrongOutput_AreReRun_CaughtAndUnpaid() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 90);
        var requester = await cluster.AddAsync("requester", provide: false);
        var sybils = new List<TrustCluster.Member>();
        for (var i = 0; i < 3; i++)
        {
            // Three identities of one adversary: each flips the same byte, so they agree exactly.
            sybils.Add(await cluster.AddAsync($"sybil{i}", provide: true, decorate: inner => new WrongOutputExecutor(inner)));
        }
        await requester.Client.WaitForProvidersAsync(3, ct);

        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("sybil", 100) with { Replicas = 3 }, ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);

        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("sybil"u8.ToArray(), 100)),
            "the requester's own re-run, not the agreeing wrong output");
        Assert.That(result.Provider, Is.EqualTo(requester.PeerId));
        foreach (var s in sybils)
        {
            Assert.That(TrustCluster.Spent(requester, s), Is.Zero, $"{s.Name} unpaid");
            Assert.That(requester.Client.Reputation.IsRefused(s.PeerId), Is.True, $"{s.Name} caught");
        }
    });
}
