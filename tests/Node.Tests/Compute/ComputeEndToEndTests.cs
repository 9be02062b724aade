using System.Text;
using Potluck.Node.Tests.Adversarial;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Adversaries;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Providing;
using Potluck.Scheduler.Requesting;

using Potluck.Tests;

namespace Potluck.Node.Tests.Compute;

[CancelAfter(120_000)]
public class ComputeEndToEndTests
{
    private static readonly byte[] HashChain = ComputeCluster.Sample("hashchain");

    private static TaskSubmission HashTask(string seed, int n) => new()
    {
        Module = HashChain,
        Input = Encoding.UTF8.GetBytes(seed),
        Args = [n.ToString(System.Globalization.CultureInfo.InvariantCulture)],
        Fuel = 200_000_000,
        MemoryBytes = 32L << 20,
        MaxPricePerMegaFuel = 50,
    };

    /// <summary>A provider whose executor starts tasks and never finishes them: a machine that dies mid-task.</summary>
    private sealed class HangingExecutor : ITaskExecutor
    {
        public TaskCompletionSource Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public async ValueTask<ExecutionReport> ExecuteAsync(LeaseExecution execution, CancellationToken ct)
        {
            Started.TrySetResult();
            await Task.Delay(Timeout.Infinite, ct);
            throw new OperationCanceledException(ct);
        }
    }

    /// <summary>Runs tasks through the real executor, each only once the test lets it.</summary>
    private sealed class GatedExecutor(ITaskExecutor inner) : ITaskExecutor
    {
        public TaskCompletionSource Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public async ValueTask<ExecutionReport> ExecuteAsync(LeaseExecution execution, CancellationToken ct)
        {
            Started.TrySetResult();
            await Release.Task.WaitAsync(ct);
            return await inner.ExecuteAsync(execution, ct);
        }
    }

    /// <summary>A requester and a one-core provider whose runs wait for the gate, advertising at most every 10 s.</summary>
    private static async Task<(ComputeCluster.Member Requester, ComputeCluster.Member Provider, GatedExecutor Gate)> GatedPairAsync(
        ComputeCluster cluster, CancellationToken ct)
    {
        var requester = await cluster.AddAsync("requester", provide: false);
        GatedExecutor? gate = null;
        var provider = await cluster.AddAsync("provider", provide: true, decorate: inner => gate = new GatedExecutor(inner),
            minPublishGap: TimeSpan.FromSeconds(10));
        await requester.Node.Client.WaitForProvidersAsync(1, ct);
        return (requester, provider, gate!);
    }

    /// <summary>
    /// Submits a first task, holds it at the gate, and moves past the publishing gap until the requester holds the provider's
    /// advertisement saying its one core is taken; returns the first task.
    /// </summary>
    private static async Task<Task<SubmissionResult>> FirstUnderABusyAdvertisementAsync(ComputeCluster cluster, ComputeCluster.Member requester,
        ComputeCluster.Member provider, GatedExecutor gate, CancellationToken ct)
    {
        var first = requester.Node.SubmitAsync(HashTask("first", 10), ct);
        await gate.Started.Task.WaitAsync(ct);
        await NextAdvertisementAsync(cluster, requester, provider, ct);
        Assert.That(requester.Node.Client.Providers().Single().IsBusy, Is.True, "the provider's newest advertisement: its one core is taken");
        return first;
    }

    /// <summary>Moves past the provider's publishing gap and waits until the requester holds its next advertisement.</summary>
    private static async Task NextAdvertisementAsync(ComputeCluster cluster, ComputeCluster.Member requester, ComputeCluster.Member provider,
        CancellationToken ct)
    {
        var sequence = requester.Node.Client.Providers().Single().Ad.Sequence;
        cluster.Time.Advance(TimeSpan.FromSeconds(10));
        await requester.Node.Client.WaitForAdvertisementAsync(provider.PeerId, sequence, ct);
    }

    [Test]
    public async Task BusyProvider_WithAStaleAdvertisement_IsWaitedFor_NotCountedAsAFailedAttempt(CancellationToken ct)
    {
        await using var cluster = new ComputeCluster(18);
        // While its first task runs, its advertisement still says it is free.
        var (requester, provider, gate) = await GatedPairAsync(cluster, ct);
        var busyRefusal = new TaskCompletionSource<AttemptRecord>(TaskCreationOptions.RunContinuationsAsynchronously);
        requester.Node.Client.AttemptEnded += a =>
        {
            if (a.Outcome == LeaseOutcomeKind.Rejected)
            {
                busyRefusal.TrySetResult(a);
            }
        };

        var first = requester.Node.SubmitAsync(HashTask("first", 10), ct);
        await gate.Started.Task.WaitAsync(ct);
        var second = requester.Node.SubmitAsync(HashTask("second", 10), ct);
        var refusal = await busyRefusal.Task.WaitAsync(ct);
        Assert.That(refusal.Detail, Does.Contain("busy").IgnoreCase, "the stale advertisement led to a busy refusal");

        // The provider's next advertisement says it is busy; the requester keeps waiting rather than giving up.
        await NextAdvertisementAsync(cluster, requester, provider, ct);
        Assert.That(second.IsCompleted, Is.False, "still waiting for capacity");

        gate.Release.TrySetResult();
        Assert.That((await first).Status, Is.EqualTo(ExecutionStatus.Success));
        cluster.Time.Advance(TimeSpan.FromSeconds(10)); // its next advertisement: free again
        var result = await second.WaitAsync(ct);
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("second"u8.ToArray(), 10)));
        Assert.That(result.Provider, Is.EqualTo(provider.PeerId));
        Assert.That(result.History.Select(h => h.Outcome).Last(), Is.EqualTo(LeaseOutcomeKind.Completed));
        Assert.That(result.History.SkipLast(1).Select(h => h.Outcome), Is.Not.Empty.And.All.EqualTo(LeaseOutcomeKind.Rejected),
            "busy refusals while the core was taken, none counted as a failure");
        await cluster.AssertLedgersConserveAsync();
    }

    [Test]
    public async Task ProviderAdvertisedBusy_WhereThisNodesOwnLeaseHasJustCompleted_IsLeasedAtOnce_NotAfterItsNextAdvertisement(CancellationToken ct)
    {
        await using var cluster = new ComputeCluster(19);
        var (requester, provider, gate) = await GatedPairAsync(cluster, ct);
        var first = await FirstUnderABusyAdvertisementAsync(cluster, requester, provider, gate, ct);

        gate.Release.TrySetResult();
        Assert.That((await first).Status, Is.EqualTo(ExecutionStatus.Success));
        // No time passes: the advertisement saying it is free again is 10 s away. The requester's own lease freed the core.
        var second = await requester.Node.SubmitAsync(HashTask("second", 10), ct);
        Assert.That(second.Status, Is.EqualTo(ExecutionStatus.Success), second.Error);
        Assert.That(second.Provider, Is.EqualTo(provider.PeerId));
        Assert.That(second.History.Select(h => h.Outcome), Is.EqualTo(new[] { LeaseOutcomeKind.Completed }), "not refused: the core was free");
        Assert.That(requester.Node.Client.Providers().Single().IsBusy, Is.True,
            "leased while the newest advertisement still said busy (on main the job waited for the next one: here, forever)");
        await cluster.AssertLedgersConserveAsync();
    }

    [Test]
    public async Task AJobWaitingOnAProviderAdvertisedBusy_IsWokenWhenThisNodesOwnLeaseThereCompletes(CancellationToken ct)
    {
        await using var cluster = new ComputeCluster(22);
        var (requester, provider, gate) = await GatedPairAsync(cluster, ct);
        var first = await FirstUnderABusyAdvertisementAsync(cluster, requester, provider, gate, ct);
        var second = requester.Node.SubmitAsync(HashTask("second", 10), ct);

        // No time passes from here: the advertisement saying it is free again is 10 s away.
        gate.Release.TrySetResult();
        Assert.That((await first).Status, Is.EqualTo(ExecutionStatus.Success));
        var result = await second;
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        Assert.That(result.Provider, Is.EqualTo(provider.PeerId));
        Assert.That(requester.Node.Client.Providers().Single().IsBusy, Is.True,
            "leased while the newest advertisement still said busy: the end of the first lease woke the waiting job");
        await cluster.AssertLedgersConserveAsync();
    }

    [Test]
    public async Task ALeaseWhosePaymentCannotBeReserved_LeavesNoLeaseInItsProvidersWindow(CancellationToken ct)
    {
        await using var cluster = new ComputeCluster(21);
        var requester = await cluster.AddAsync("requester", provide: false);
        var provider = await cluster.AddAsync("provider", provide: true);
        await requester.Node.Client.WaitForProvidersAsync(1, ct);
        // Up to 20,000 credits: more than the grant and the debt this node allows itself.
        var tooDear = HashTask("dear", 10) with { Fuel = 20_000_000_000, MaxPricePerMegaFuel = 1_000_000 };
        var refused = Assert.ThrowsAsync<SubmissionException>(() => requester.Node.SubmitAsync(tooDear, ct));
        Assert.That(refused!.Message, Does.Contain("insufficient credits"));
        Assert.That(requester.Node.Client.LeasesHeldWith(provider.PeerId), Is.Zero,
            "counted in the window when chosen, and out of it again when the reservation failed");
        var result = await requester.Node.SubmitAsync(HashTask("after", 10), ct);
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        Assert.That(requester.Node.Client.LeasesHeldWith(provider.PeerId), Is.Zero);
    }

    // On the VirtualTimeDriver, not the manual clock: the driver moves time only when every node is idle, so the requester's
    // lease expiry and retry timers are always armed before the time they wait for passes (with FakeTimeProvider.Advance
    // the retry timer could be armed after the test had advanced the clock, and the test then waited forever).
    [Test]
    public void OnlyProvider_KilledMidLeaseAndRestarted_IsRedialledAndTheTaskCompletes() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var cluster = new TrustCluster(d, seed: 20);
        var requester = await cluster.AddAsync("requester", provide: false);
        var gates = new List<GatedExecutor>();
        var provider = await cluster.AddAsync("provider", provide: true, decorate: inner =>
        {
            var gate = new GatedExecutor(inner);
            lock (gates)
            {
                gates.Add(gate);
            }
            return gate;
        });
        await requester.Client.WaitForProvidersAsync(1, ct);
        var lost = new TaskCompletionSource<AttemptRecord>(TaskCreationOptions.RunContinuationsAsynchronously);
        requester.Client.AttemptEnded += a =>
        {
            if (a.Outcome is LeaseOutcomeKind.Expired or LeaseOutcomeKind.Cancelled)
            {
                lost.TrySetResult(a);
            }
        };

        var submission = requester.Node.SubmitAsync(HashTask("restart", 200), ct);
        await gates[0].Started.Task;
        var before = requester.Client.Providers().Single().Ad.Sequence;
        await cluster.StopAsync(provider); // its host first: no goodbye reaches the requester
        await Task.Delay(TimeSpan.FromSeconds(1), cluster.Time); // a restart takes a moment (its advertisements' sequences are times)
        var restarted = await cluster.RestartAsync(provider); // same identity and data directory
        lock (gates)
        {
            gates[^1].Release.TrySetResult();
        }
        await requester.Client.WaitForAdvertisementAsync(provider.PeerId, before, ct); // the restarted one's
        var ended = await lost.Task; // the driver runs the lease's heartbeat expiry, then the retry
        var result = await submission;

        Assert.That(ended.Provider, Is.EqualTo(provider.PeerId));
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("restart"u8.ToArray(), 200)));
        Assert.That(result.Provider, Is.EqualTo(restarted.PeerId), "the same provider, redialled after its restart");
        Assert.That(result.History.Select(h => h.Outcome).Last(), Is.EqualTo(LeaseOutcomeKind.Completed));
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        Assert.That(requester.Ledger.Reservations(PaymentState.Delivered), Has.Count.EqualTo(1), "the completed lease is paid once, and acknowledged");
        Assert.That(requester.Ledger.Reservations(PaymentState.Reserved), Is.Empty, "the cut lease's reservation was released");
        Assert.That(TrustCluster.Spent(requester, restarted), Is.EqualTo(result.Cost).And.GreaterThan(0));
        Assert.That(TrustCluster.Earned(restarted, requester), Is.EqualTo(result.Cost), "what the requester paid, the provider earned, once");
    });

    [Test]
    public async Task BusyProvider_FreedBetweenTwoAdvertisements_IsAskedAgainWithoutWaitingForTheNextOne(CancellationToken ct)
    {
        await using var cluster = new ComputeCluster(19);
        var requester = await cluster.AddAsync("requester", provide: false);
        GatedExecutor? gate = null;
        // One core and advertisements at most every 10 s: its core is taken and freed again before it may advertise.
        var provider = await cluster.AddAsync("provider", provide: true, decorate: inner => gate = new GatedExecutor(inner),
            minPublishGap: TimeSpan.FromSeconds(10));
        await requester.Node.Client.WaitForProvidersAsync(1, ct);
        var busyRefusal = new TaskCompletionSource<AttemptRecord>(TaskCreationOptions.RunContinuationsAsynchronously);
        requester.Node.Client.AttemptEnded += a =>
        {
            if (a.Outcome == LeaseOutcomeKind.Rejected)
            {
                busyRefusal.TrySetResult(a);
            }
        };
        var sequence = requester.Node.Client.Providers().Single().Ad.Sequence;
        var started = cluster.Time.GetUtcNow();

        var first = requester.Node.SubmitAsync(HashTask("first", 10), ct);
        await gate!.Started.Task.WaitAsync(ct);
        var second = requester.Node.SubmitAsync(HashTask("second", 10), ct);
        await busyRefusal.Task.WaitAsync(ct);
        gate.Release.TrySetResult();
        Assert.That((await first).Status, Is.EqualTo(ExecutionStatus.Success));

        cluster.Time.Advance(TimeSpan.FromSeconds(2)); // the busy retry interval; the provider may not advertise for 8 s more
        var result = await second.WaitAsync(ct);

        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("second"u8.ToArray(), 10)));
        Assert.That(requester.Node.Client.Providers().Single().Ad.Sequence, Is.EqualTo(sequence), "served on the same (stale) advertisement");
        Assert.That(cluster.Time.GetUtcNow() - started, Is.LessThan(TimeSpan.FromSeconds(10)));
        Assert.That(result.History.Select(h => h.Outcome), Is.EqualTo(new[] { LeaseOutcomeKind.Rejected, LeaseOutcomeKind.Completed }));
        await cluster.AssertLedgersConserveAsync();
    }

    [Test]
    public async Task Cheater_AmongThreeProviders_IsCaughtUnpaidAndRefusedEverywhere_AndEveryOutputIsCorrect(CancellationToken ct)
    {
        const int seed = 11;
        await using var cluster = new ComputeCluster(seed);
        // The cheater corrupts half its outputs; this seed makes its very first output a corrupt one, and as the cheapest
        // provider it is chosen first, where a stranger is always verified.
        var cheaterSeed = Enumerable.Range(0, 100).First(s => new Random(s).NextDouble() < 0.5);
        WrongOutputExecutor? cheat = null;
        var cheaterRandom = new Random(cheaterSeed);
        var requester = await cluster.AddAsync("requester", provide: false);
        var cheater = await cluster.AddAsync("cheater", provide: true, price: 5,
            decorate: inner => cheat = new WrongOutputExecutor(inner, _ =>
            {
                lock (cheaterRandom)
                {
                    return cheaterRandom.NextDouble() < 0.5;
                }
            }));
        var honest1 = await cluster.AddAsync("honest1", provide: true, price: 10);
        var honest2 = await cluster.AddAsync("honest2", provide: true, price: 10);
        await requester.Node.Client.WaitForProvidersAsync(3, ct);
        using var requesterMetrics = new MetricRecorder(requester.Potluck.ComputeMetrics.Meter);
        var otherMetrics = new[] { honest1, honest2 }.ToDictionary(m => m, m => new MetricRecorder(m.Potluck.ComputeMetrics.Meter));

        var results = new List<SubmissionResult>();
        for (var i = 0; i < 8; i++)
        {
            var input = $"task {i}";
            var result = await requester.Node.SubmitAsync(HashTask(input, 500 + i), ct);
            results.Add(result);
            Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), $"seed {seed}, task {i}: {result.Error}");
            Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain(Encoding.UTF8.GetBytes(input), 500 + i)),
                $"seed {seed}, task {i}: the final output is the correct one");
        }
        await cluster.Hub.WhenIdleAsync(ct);
        await requester.Node.Client.WhenReceiptsDeliveredAsync(ct);

        Assert.That(cheat!.Corrupted, Is.GreaterThanOrEqualTo(1), $"seed {seed}: the cheater cheated");
        Assert.That(requester.Node.Reputation.IsRefused(cheater.PeerId), Is.True, "the requester refuses the cheater");
        var caught = results.SelectMany(r => r.History).Where(h => h.Provider == cheater.PeerId && h.Detail.StartsWith("fraud", StringComparison.Ordinal)).ToList();
        Assert.That(caught, Has.Count.EqualTo(1), "caught once, never leased to again");
        Assert.That(caught[0].Paid, Is.Zero, "the cheater is not paid for the wrong result");
        foreach (var other in new[] { honest1, honest2 })
        {
            Assert.That(other.Node.Reputation.IsRefused(cheater.PeerId), Is.True, $"{other.Name} checked the fraud proof by re-running it and refuses the cheater");
            Assert.That(otherMetrics[other].Sum("potluck.fraud.proofs", "outcome=confirmed"), Is.EqualTo(1), $"{other.Name} confirmed the proof");
            otherMetrics[other].Dispose();
            Assert.That(other.Node.Reputation.IsRefused(requester.PeerId) || other.Node.Reputation.IsRefused(honest1.PeerId), Is.False);
        }
        var cheaterEarned = cheater.Node.Ledger.Recent(100).Where(e => e.Kind == LedgerEntryKind.Earned).Sum(e => e.Amount);
        var paidToCheater = results.SelectMany(r => r.History).Where(h => h.Provider == cheater.PeerId).Sum(h => h.Paid);
        Assert.That(cheaterEarned, Is.EqualTo(paidToCheater), "the cheater earned exactly what it was paid for honest results");
        Assert.That(requester.Node.Ledger.Reservations(PaymentState.Released), Has.Count.GreaterThanOrEqualTo(1), "the fraudulent lease was released unpaid");
        Assert.That(results.Sum(r => r.Cost), Is.EqualTo(ComputeCluster.Grant - requester.Node.Ledger.Balance()));
        Assert.That(requesterMetrics.Sum("potluck.verifications", "verdict=mismatch"), Is.EqualTo(1), "one re-run contradicted the cheater");
        Assert.That(requesterMetrics.Sum("potluck.fraud.proofs", "outcome=published"), Is.EqualTo(1));
        Assert.That(requesterMetrics.Sum("potluck.credits.spent"), Is.EqualTo(results.Sum(r => r.Cost)), "spent credits are what the results cost");
        Assert.That(results[0].Verified, Is.True, "a stranger's first result is verified");
        await cluster.AssertLedgersConserveAsync();
        foreach (var p in new[] { cheater, honest1, honest2 })
        {
            Assert.That(p.Node.Provider!.Capacity.PeakCoresInUse, Is.LessThanOrEqualTo(1), "never more leases at once than advertised cores");
        }

        var verifiedBefore = requester.Node.Reputation.Get(honest1.PeerId);
        var restarted = await cluster.RestartComputeAsync(requester);
        Assert.That(restarted.Node.Reputation.IsRefused(cheater.PeerId), Is.True, "a restarted requester still refuses the cheater (reputation.db)");
        Assert.That(restarted.Node.Reputation.Get(honest1.PeerId), Is.EqualTo(verifiedBefore), "and remembers the honest providers' records");
    }

    [Test]
    public async Task ProviderKilledMidTask_LeaseExpiresAfterGraceWindow_TaskCompletesElsewhere_NoReceiptLostOrDoubled(CancellationToken ct)
    {
        const int seed = 12;
        await using var cluster = new ComputeCluster(seed);
        var hang = new HangingExecutor();
        var requester = await cluster.AddAsync("requester", provide: false);
        var doomed = await cluster.AddAsync("doomed", provide: true, price: 5, decorate: _ => hang);
        await cluster.AddAsync("backup1", provide: true, price: 10);
        await cluster.AddAsync("backup2", provide: true, price: 10);
        await requester.Node.Client.WaitForProvidersAsync(3, ct);
        var expired = new TaskCompletionSource<AttemptRecord>(TaskCreationOptions.RunContinuationsAsynchronously);
        requester.Node.Client.AttemptEnded += a =>
        {
            if (a.Outcome == LeaseOutcomeKind.Expired)
            {
                expired.TrySetResult(a);
            }
        };

        var submission = requester.Node.SubmitAsync(HashTask("survive", 300), ct);
        await hang.Started.Task.WaitAsync(ct);
        await cluster.KillAsync(doomed);
        var lease = new LeaseOptions();
        var grace = lease.HeartbeatInterval * lease.MissedHeartbeatsBeforeExpiry;
        cluster.Time.Advance(grace - TimeSpan.FromSeconds(1));
        Assert.That(expired.Task.IsCompleted, Is.False, "not expired inside the grace window");
        cluster.Time.Advance(TimeSpan.FromSeconds(2));
        var ended = await expired.Task.WaitAsync(ct);
        var result = await submission;

        Assert.That(ended.Provider, Is.EqualTo(doomed.PeerId));
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("survive"u8.ToArray(), 300)));
        Assert.That(result.Attempts, Is.EqualTo(2));
        Assert.That(result.Provider, Is.Not.EqualTo(doomed.PeerId));
        Assert.That(result.History[0].Paid, Is.Zero);
        Assert.That(result.Cost, Is.GreaterThan(0));
        await requester.Node.Client.WhenReceiptsDeliveredAsync(ct);
        var winner = cluster.Members.Single(m => m.PeerId == result.Provider);
        Assert.That(requester.Node.Ledger.Reservations(PaymentState.Released), Has.Count.EqualTo(1), "the expired lease is released");
        Assert.That(requester.Node.Ledger.Reservations(PaymentState.Delivered), Has.Count.EqualTo(1), "the completed lease is paid and acknowledged");

        // Sending the receipt again (as after a crash) is acknowledged and counted once.
        var receipt = requester.Node.Ledger.Reservations(PaymentState.Delivered)[0].Receipt!;
        await using (var stream = await requester.Host.NewStreamAsync(winner.PeerId, [ReceiptProtocol.Id], ct))
        {
            var ack = await ReceiptProtocol.SendAsync(stream, receipt, ct);
            Assert.That(ack.Status, Is.EqualTo(ReceiptAckStatus.AlreadyRecorded));
        }
        Assert.That(await requester.Node.Client.RedeliverReceiptsAsync(ct), Is.Zero, "nothing left to redeliver");
        Assert.That(winner.Node.Ledger.Balance(), Is.EqualTo(ComputeCluster.Grant + result.Cost));
        Assert.That(cluster.Balance(doomed), Is.EqualTo(ComputeCluster.Grant), "the killed provider earned nothing");
        await cluster.AssertLedgersConserveAsync();
    }

    [TestCase("malformed", ExecutionStatus.InvalidModule, 50_000_000)]
    [TestCase("loop", ExecutionStatus.OutOfFuel, 50_000_000)]
    [TestCase("grow", ExecutionStatus.OutOfMemory, 500_000_000)]
    [TestCase("spew", ExecutionStatus.OutputTooLarge, 2_000_000_000)]
    public async Task HostileTask_EndsWithClearError_AndProviderKeepsServing(string module, ExecutionStatus expected, long fuel)
    {
        using var cts = new CancellationTokenSource();
        var ct = cts.Token;
        await using var cluster = new ComputeCluster(13);
        var requester = await cluster.AddAsync("requester", provide: false);
        var provider = await cluster.AddAsync("provider", provide: true);
        await requester.Node.Client.WaitForProvidersAsync(1, ct);
        var bytes = module == "malformed" ? "\0asm this is not WebAssembly"u8.ToArray() : ComputeCluster.Sample(module, "testmods");

        var hostile = await requester.Node.SubmitAsync(new TaskSubmission
        {
            Module = bytes,
            Fuel = fuel,
            MemoryBytes = 16L << 20,
            MaxPricePerMegaFuel = 50,
        }, ct);
        var after = await requester.Node.SubmitAsync(HashTask("still here", 100), ct);

        Assert.That(hostile.Status, Is.EqualTo(expected), hostile.Error);
        Assert.That(hostile.Error, Is.Not.Null.And.Not.Empty);
        Assert.That(hostile.Verified, Is.True, "the stranger's error result was re-run and agreed with");
        Assert.That(hostile.Provider, Is.EqualTo(provider.PeerId));
        Assert.That(after.Status, Is.EqualTo(ExecutionStatus.Success), after.Error);
        Assert.That(after.Provider, Is.EqualTo(provider.PeerId), "the same provider keeps serving");
        Assert.That(Encoding.ASCII.GetString(after.Output.Span), Is.EqualTo(ComputeCluster.HashChain("still here"u8.ToArray(), 100)));
        Assert.That(provider.Node.Provider!.Capacity.CoresInUse, Is.Zero);
        if (expected == ExecutionStatus.OutOfFuel)
        {
            Assert.That(hostile.Fuel, Is.EqualTo(fuel), "fuel exhaustion is an outcome: the whole budget is used and paid");
        }
        await cluster.AssertLedgersConserveAsync();
    }

    [Test]
    public async Task Leases_ToOneProvider_ShareOneLeaseStream_AndAClosedConnectionOnlyMeansANewOne(CancellationToken ct)
    {
        await using var cluster = new ComputeCluster(15);
        var requester = await cluster.AddAsync("requester", provide: false);
        var provider = await cluster.AddAsync("provider", provide: true);
        await requester.Node.Client.WaitForProvidersAsync(1, ct);
        using var providerMetrics = new MetricRecorder(provider.Potluck.ComputeMetrics.Meter);

        for (var i = 0; i < 4; i++)
        {
            var result = await requester.Node.SubmitAsync(HashTask($"shared {i}", 100 + i), ct);
            Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
            Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain(Encoding.UTF8.GetBytes($"shared {i}"), 100 + i)));
        }
        await requester.Node.Client.WhenReceiptsDeliveredAsync(ct);
        Assert.That(requester.Node.Client.LeaseStreamsOpened(provider.PeerId), Is.EqualTo(1), "four leases, one stream");

        foreach (var connection in requester.Host.Connections.Where(c => c.RemotePeer == provider.PeerId).ToList())
        {
            await connection.CloseAsync();
        }
        var after = await requester.Node.SubmitAsync(HashTask("after", 120), ct);
        Assert.That(after.Status, Is.EqualTo(ExecutionStatus.Success), after.Error);
        Assert.That(Encoding.ASCII.GetString(after.Output.Span), Is.EqualTo(ComputeCluster.HashChain("after"u8.ToArray(), 120)));
        Assert.That(after.History, Has.Count.EqualTo(1), "the lease did not need a second attempt");
        Assert.That(requester.Node.Client.LeaseStreamsOpened(provider.PeerId), Is.EqualTo(2), "the broken stream was replaced by a new one");
        await requester.Node.Client.WhenReceiptsDeliveredAsync(ct);
        Assert.That(providerMetrics.Sum("potluck.receipts", "path=lease_stream", "outcome=recorded"), Is.EqualTo(5),
            "every lease paid, every receipt on the lease stream");
        Assert.That(providerMetrics.Sum("potluck.receipts", "path=receipt_stream"), Is.Zero);
        Assert.That(providerMetrics.Sum("potluck.leases.ended", "role=provider", "outcome=completed"), Is.EqualTo(5));
        Assert.That(requester.Node.Ledger.Reservations(PaymentState.Delivered), Has.Count.EqualTo(5), "and was acknowledged there");
        await cluster.AssertLedgersConserveAsync();
    }

    [Test]
    public async Task LeaseChannels_PastTheCap_IdleOnesAreClosed_AndALaterLeaseOpensANewOne(CancellationToken ct)
    {
        await using var cluster = new ComputeCluster(17);
        var requester = await cluster.AddAsync("requester", provide: false, client: c => c.MaxLeaseChannels = 1);
        var first = await cluster.AddAsync("first", provide: true, price: 10);
        await requester.Node.Client.WaitForProvidersAsync(1, ct);
        var one = await requester.Node.SubmitAsync(HashTask("one", 10), ct);
        Assert.That(one.Provider, Is.EqualTo(first.PeerId), one.Error);
        await requester.Node.Client.WhenReceiptsDeliveredAsync(ct);
        Assert.That(requester.Node.Client.LeaseStreamsOpened(first.PeerId), Is.EqualTo(1));

        // Only a cheaper second provider fits the next task: its channel is the second, past the cap of one.
        var second = await cluster.AddAsync("second", provide: true, price: 5);
        await requester.Node.Client.WaitForProvidersAsync(2, ct);
        var two = await requester.Node.SubmitAsync(HashTask("two", 10) with { MaxPricePerMegaFuel = 5 }, ct);
        Assert.That(two.Status, Is.EqualTo(ExecutionStatus.Success), two.Error);
        Assert.That(two.Provider, Is.EqualTo(second.PeerId));
        Assert.That(requester.Node.Client.LeaseStreamsOpened(first.PeerId), Is.Zero, "the idle channel to the first provider was closed");
        Assert.That(requester.Node.Client.LeaseStreamsOpened(second.PeerId), Is.EqualTo(1));
        await cluster.AssertLedgersConserveAsync();
    }

    [Test]
    public async Task Provider_SpeakingOnlyLease10_IsPaidOverTheReceiptProtocol(CancellationToken ct)
    {
        await using var cluster = new ComputeCluster(16);
        var requester = await cluster.AddAsync("requester", provide: false);
        var provider = await cluster.AddAsync("provider", provide: true);
        provider.Host.RemoveStreamHandler(LeaseProtocol.IdWithReceipts);
        await requester.Node.Client.WaitForProvidersAsync(1, ct);
        using var providerMetrics = new MetricRecorder(provider.Potluck.ComputeMetrics.Meter);

        for (var i = 0; i < 2; i++)
        {
            var result = await requester.Node.SubmitAsync(HashTask($"old {i}", 100 + i), ct);
            Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
            Assert.That(result.History, Has.Count.EqualTo(1));
        }
        await requester.Node.Client.WhenReceiptsDeliveredAsync(ct);
        Assert.That(providerMetrics.Sum("potluck.receipts", "path=receipt_stream", "outcome=recorded"), Is.EqualTo(2),
            "both leases paid, on receipt streams, as a 1.0.0 provider takes them");
        Assert.That(providerMetrics.Sum("potluck.receipts", "path=lease_stream"), Is.Zero);
        Assert.That(requester.Node.Ledger.Reservations(PaymentState.Delivered), Has.Count.EqualTo(2));
        Assert.That(requester.Node.Client.LeaseStreamsOpened(provider.PeerId), Is.EqualTo(1));
        await cluster.AssertLedgersConserveAsync();
    }

    [Test]
    public async Task Replicas_RunOnDistinctProvidersAtOnce_AgreeingResultIsVerifiedAndEachIsPaid(CancellationToken ct)
    {
        await using var cluster = new ComputeCluster(14);
        var requester = await cluster.AddAsync("requester", provide: false);
        var providers = new[]
        {
            await cluster.AddAsync("p1", provide: true), await cluster.AddAsync("p2", provide: true), await cluster.AddAsync("p3", provide: true),
        };
        await requester.Node.Client.WaitForProvidersAsync(3, ct);

        var result = await requester.Node.SubmitAsync(HashTask("valuable", 400) with { Replicas = 3 }, ct);

        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("valuable"u8.ToArray(), 400)));
        Assert.That(result.Verified, Is.True);
        Assert.That(result.History.Where(h => h.Paid > 0).Select(h => h.Provider).Distinct().Count(), Is.EqualTo(3), "three distinct providers, each paid");
        Assert.That(result.Cost, Is.EqualTo(result.History.Sum(h => h.Paid)));
        await requester.Node.Client.WhenReceiptsDeliveredAsync(ct);
        Assert.That(providers.All(p => p.Node.Ledger.Balance() > ComputeCluster.Grant), Is.True);
        await cluster.AssertLedgersConserveAsync();
    }
}
