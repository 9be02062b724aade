using System.Text;
using Potluck.Node.Tests.Adversarial;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Requesting;

namespace Potluck.Node.Tests.Compute;

/// <summary>
/// More work in flight than the providers have cores: a busy provider means "wait and retry", never "excluded"; and when
/// no provider fits, the message names each provider's own reason.
/// </summary>
public class CapacityTests
{
    /// <summary>Runs each task through the real executor after <paramref name="duration"/> of (virtual) time: a long task.</summary>
    private sealed class SlowExecutor(ITaskExecutor inner, TimeProvider time, TimeSpan duration) : ITaskExecutor
    {
        public int Running;
        public int MostAtOnce;

        public async ValueTask<ExecutionReport> ExecuteAsync(LeaseExecution execution, CancellationToken ct)
        {
            var now = Interlocked.Increment(ref Running);
            MostAtOnce = Math.Max(MostAtOnce, now);
            try
            {
                await Task.Delay(duration, time, ct);
                return await inner.ExecuteAsync(execution, ct);
            }
            finally
            {
                Interlocked.Decrement(ref Running);
            }
        }
    }

    /// <summary>Awaits (never blocks the driver's loop, as Assert.ThrowsAsync would) and returns the SubmissionException thrown.</summary>
    private static async Task<SubmissionException> ThrowsAsync(Func<Task> code)
    {
        try
        {
            await code();
        }
        catch (SubmissionException e)
        {
            return e;
        }
        Assert.Fail("expected a SubmissionException, nothing was thrown");
        return null!;
    }

    private static void AssertHash(SubmissionResult result, string seed, int n)
    {
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain(Encoding.UTF8.GetBytes(seed), n)));
    }

    [Test]
    public void Batch_WithThreeTimesMoreInFlightThanCores_CompletesEveryInput_AndPaysEachOnce() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 101);
        var requester = await cluster.AddAsync("requester", provide: false);
        var slow = new List<SlowExecutor>();
        for (var i = 0; i < 3; i++)
        {
            // One core each; every task takes 25 s (under the providers' 30 s minimum lease run time), so the last of a
            // provider's queue of three waits 50 s for its core, past compute:client:waitForProviders (30 s).
            await cluster.AddAsync($"provider{i}", provide: true, decorate: inner =>
            {
                var s = new SlowExecutor(inner, cluster.Time, TimeSpan.FromSeconds(25));
                slow.Add(s);
                return s;
            });
        }
        await requester.Client.WaitForProvidersAsync(3, ct);
        var started = cluster.Time.GetUtcNow();

        // 9 in flight on 3 cores, as `submit --batch --parallel 9` runs them.
        var inputs = Enumerable.Range(0, 9).Select(i => $"input {i}").ToArray();
        var results = await Task.WhenAll(inputs.Select(seed => requester.Node.SubmitAsync(OutcomeAttackTests.HashTask(seed, 100), ct)));

        for (var i = 0; i < inputs.Length; i++)
        {
            AssertHash(results[i], inputs[i], 100);
            Assert.That(results[i].History.Count(h => h.Outcome != LeaseOutcomeKind.Completed && !h.Detail.Contains("busy", StringComparison.OrdinalIgnoreCase)),
                Is.Zero, $"input {i}: every attempt that did not complete was a busy refusal: {string.Join("; ", results[i].History.Select(h => h.Detail))}");
        }
        Assert.That(slow.Max(s => s.MostAtOnce), Is.EqualTo(1), "no provider ran more than its one core");
        Assert.That(cluster.Time.GetUtcNow() - started, Is.GreaterThanOrEqualTo(TimeSpan.FromSeconds(75)), "three rounds of 25 s: the later ones waited");
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        var paid = results.Sum(r => r.Cost);
        Assert.That(cluster.Members.Where(m => m != requester).Sum(p => TrustCluster.Earned(p, requester)), Is.EqualTo(paid).And.GreaterThan(0),
            "the providers earned exactly what the requester paid: nothing twice, nothing lost");
        Assert.That(requester.Ledger.Reservations(Potluck.Scheduler.Credits.PaymentState.Reserved), Is.Empty, "no reservation left open");
    });

    [Test]
    public void FourParallelSubmits_FromOneRequester_OnOneCore_AllSucceed() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 102);
        var requester = await cluster.AddAsync("requester", provide: false);
        var provider = await cluster.AddAsync("provider", provide: true,
            decorate: inner => new SlowExecutor(inner, cluster.Time, TimeSpan.FromSeconds(25)));
        await requester.Client.WaitForProvidersAsync(1, ct);

        var results = await Task.WhenAll(Enumerable.Range(0, 4).Select(i => requester.Node.SubmitAsync(OutcomeAttackTests.HashTask($"p{i}", 50), ct)));

        for (var i = 0; i < 4; i++)
        {
            AssertHash(results[i], $"p{i}", 50);
        }
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        Assert.That(TrustCluster.Earned(provider, requester), Is.EqualTo(results.Sum(r => r.Cost)).And.GreaterThan(0), "all four paid, once each");
    });

    [Test]
    public void ProviderBusyForLongerThanWaitForCapacity_EndsTheWait_NamingBusyAsTheReason() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 103);
        var other = await cluster.AddAsync("other", provide: false);
        var requester = await cluster.AddAsync("requester", provide: false,
            configure: c => c with { Client = c.Client with { WaitForCapacity = TimeSpan.FromSeconds(10) } });
        await cluster.AddAsync("provider", provide: true, decorate: inner => new SlowExecutor(inner, cluster.Time, TimeSpan.FromSeconds(25)));
        await other.Client.WaitForProvidersAsync(1, ct);
        await requester.Client.WaitForProvidersAsync(1, ct);

        var holding = other.Node.SubmitAsync(OutcomeAttackTests.HashTask("long", 50), ct);
        await requester.Client.WaitForAdvertisementAsync(requester.Client.Providers().Single().Provider, requester.Client.Providers().Single().Ad.Sequence, ct);
        var started = cluster.Time.GetUtcNow();
        var e = await ThrowsAsync(() => requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("waits", 50), ct));

        Assert.That(e.Message, Does.Contain("1 provider seen: 1 busy").And.Contains("waitForCapacity"), e.Message);
        Assert.That(e.Reasons, Is.EquivalentTo(new Dictionary<string, int> { ["busy"] = 1 }));
        Assert.That(cluster.Time.GetUtcNow() - started, Is.EqualTo(TimeSpan.FromSeconds(10)).Within(TimeSpan.FromSeconds(1)), "waited WaitForCapacity, no more");
        AssertHash(await holding, "long", 50);
    });

    [Test]
    public void NoProviderFits_NamesEachExcludedProvidersReason_InTheMessageAndTheReasons() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 104);
        var requester = await cluster.AddAsync("requester", provide: false);
        await cluster.AddAsync("capped", provide: true, configure: c => c with { Provider = c.Provider with { MaxFuel = 1_000_000 } });
        await cluster.AddAsync("ok", provide: true);
        await cluster.AddAsync("dear", provide: true, price: 1_000);
        await requester.Client.WaitForProvidersAsync(3, ct);

        // Two replicas wanted: "ok" runs one, "capped" refuses the fuel limit, "dear" is over the price.
        var e = await ThrowsAsync(() =>
            requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("r", 50) with { Replicas = 2 }, ct));

        Assert.That(e.Message, Does.StartWith("no provider fits: 3 providers seen: "), e.Message);
        Assert.That(e.Message, Does.Contain("1 refused: fuel limit over 1000000").And.Contains("1 too expensive")
            .And.Contains("too few providers for --replicas 2").And.Not.Contains("excluded"), e.Message);
        Assert.That(e.Reasons.Keys, Is.EquivalentTo(new[] { "refused: fuel limit over 1000000", "too expensive", ComputeClientReasons.RanAlreadyOrRunning(e.Reasons) }));
    });
}

/// <summary>The reason a provider already holding one of this task's replicas is given (whichever phase it was in).</summary>
internal static class ComputeClientReasons
{
    public static string RanAlreadyOrRunning(IReadOnlyDictionary<string, int> reasons) =>
        reasons.Keys.Single(k => k is "ran this task already" or "already running this task");
}

/// <summary>The task's stderr reaches the submitter, capped; an exit code stays an exit code.</summary>
public class TaskStderrTests
{
    private static readonly byte[] ExitCode = ComputeCluster.Sample("exitcode", "testmods");

    /// <summary>A provider whose task writes 200 KiB to stderr (the sandbox keeps 64 KiB; this one claims more).</summary>
    private sealed class NoisyExecutor(ITaskExecutor inner) : ITaskExecutor
    {
        public async ValueTask<ExecutionReport> ExecuteAsync(LeaseExecution execution, CancellationToken ct) =>
            await inner.ExecuteAsync(execution, ct) with { Stderr = new byte[200 << 10] };
    }

    [Test]
    public void TaskExitingWithACode_ReturnsItsStderrAndExitCode_NotATrap() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 105);
        var requester = await cluster.AddAsync("requester", provide: false);
        await cluster.AddAsync("provider", provide: true);
        await requester.Client.WaitForProvidersAsync(1, ct);

        var result = await requester.Node.SubmitAsync(new TaskSubmission
        {
            Module = ExitCode, Input = "hi"u8.ToArray(), Args = ["7"], Fuel = 50_000_000, MemoryBytes = 32L << 20, MaxPricePerMegaFuel = 50,
        }, ct);

        Assert.That(result.ExitCode, Is.EqualTo(7));
        Assert.That(result.Error, Is.EqualTo("the task exited with code 7"));
        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo("hi"));
        Assert.That(Encoding.ASCII.GetString(result.Stderr.Span), Is.EqualTo("argc=2\n"), "the task's stderr, as written");
        Assert.That(Potluck.Node.Cli.ComputeCommands.SubmitCommand.ExitCodeOf(result), Is.EqualTo(7), "potluck submit exits with the task's code");
    });

    [Test]
    public void ProviderSendingMoreStderrThanTheCap_IsCutToTheCap() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 106);
        var requester = await cluster.AddAsync("requester", provide: false);
        await cluster.AddAsync("provider", provide: true, decorate: inner => new NoisyExecutor(inner));
        await requester.Client.WaitForProvidersAsync(1, ct);

        var result = await requester.Node.SubmitAsync(Adversarial.OutcomeAttackTests.HashTask("noisy", 10), ct);

        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        Assert.That(result.Stderr.Length, Is.EqualTo(64 << 10), "at most LeaseOptions.MaxStderrBytes reaches the requester");
    });
}
