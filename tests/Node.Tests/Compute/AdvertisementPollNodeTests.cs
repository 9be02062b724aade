using Potluck.Node.Tests.Adversarial;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;

namespace Potluck.Node.Tests.Compute;

/// <summary>
/// A lease's start and end change the provider's free cores and nothing else. While such a load-only change waits for the
/// load gap (<c>AdvertisementOptions.LoadChangeGap</c>, 1 minute) no poll of the issuer could publish, so a provider that
/// stays as free as it last published polls for none of them; going busy (or free again) still goes out at once.
/// </summary>
public class AdvertisementPollNodeTests
{
    /// <summary>Runs tasks through the real executor, each once <see cref="Release"/> is set (set at first).</summary>
    private sealed class GatedExecutor(ITaskExecutor inner) : ITaskExecutor
    {
        public TaskCompletionSource Release { get; set; } = Completed();

        public TaskCompletionSource TwoStarted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        private int _held;

        public static TaskCompletionSource Completed()
        {
            var done = new TaskCompletionSource();
            done.SetResult();
            return done;
        }

        public async ValueTask<ExecutionReport> ExecuteAsync(LeaseExecution execution, CancellationToken ct)
        {
            var release = Release;
            if (!release.Task.IsCompleted && Interlocked.Increment(ref _held) == 2)
            {
                TwoStarted.TrySetResult();
            }
            await release.Task; // not WaitAsync(ct): its cancellation promise completes on the thread pool, off the virtual loop
            return await inner.ExecuteAsync(execution, ct);
        }
    }

    [Test]
    public void LeasesStartingAndEndingInsideTheLoadGap_CostNoPoll_WhileGoingBusyStillPublishesAtOnce() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 317);
        GatedExecutor gate = null!;
        var (provider, requester) = await cluster.ProviderAndRequesterAsync(cores: 2, decorate: inner => gate = new GatedExecutor(inner));
        var started = cluster.Time.GetUtcNow();

        // One task at a time: one of the two cores taken, then free again — never busy.
        var before = provider.Provider.AdvertisementPolls;
        for (var i = 0; i < 6; i++)
        {
            var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask($"one at a time {i}", 10), ct);
            Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        }
        var polls = provider.Provider.AdvertisementPolls - before;
        TestContext.Out.WriteLine($"{polls} polls for 6 leases one at a time, {(cluster.Time.GetUtcNow() - started).TotalMilliseconds} ms of virtual time");
        Assert.That(cluster.Time.GetUtcNow() - started, Is.LessThan(TimeSpan.FromMinutes(1)), "all of it inside the load gap");
        Assert.That(polls, Is.LessThanOrEqualTo(2),
            "the first load-only change polls and starts the load gap; the rest cannot publish before its end and are not polled " +
            "(without the skip every start and end polled: 12 for these six)");

        // Two at once: both cores taken, the provider busy — a change that matters, published without waiting for the load gap.
        var sequence = requester.Client.Providers().Single().Ad.Sequence;
        gate.Release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var both = Enumerable.Range(0, 2).Select(i => requester.Node.SubmitAsync(OutcomeAttackTests.HashTask($"two at once {i}", 10), ct)).ToArray();
        await gate.TwoStarted.Task;
        await requester.Client.WaitForAdvertisementAsync(provider.PeerId, sequence, ct);
        Assert.That(requester.Client.Providers().Single().IsBusy, Is.True, "the advertisement that followed says busy");
        Assert.That(cluster.Time.GetUtcNow() - started, Is.LessThan(TimeSpan.FromMinutes(1)), "published inside the load gap");
        gate.Release.TrySetResult();
        foreach (var r in await Task.WhenAll(both))
        {
            Assert.That(r.Status, Is.EqualTo(ExecutionStatus.Success), r.Error);
        }
    });
}
