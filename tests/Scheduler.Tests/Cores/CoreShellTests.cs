using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Cores;

namespace Potluck.Scheduler.Tests.Cores;

/// <summary>The shell both sides' cores run in: order, timers on the injected clock only, failed effects as events, the bound, stopping.</summary>
public class CoreShellTests
{
    private static readonly DateTimeOffset T0 = new(2030, 1, 1, 12, 0, 0, TimeSpan.Zero);

    internal sealed record Step(string Name, CoreWake Wake = default);

    /// <summary>A core and its effects for the tests: records what it was asked, in order.</summary>
    private sealed class Recorder : ICoreEffects<Step>
    {
        public List<string> Log { get; } = [];

        public Dictionary<string, TaskCompletionSource> Blocked { get; } = [];

        public HashSet<string> Throws { get; } = [];

        public List<(string Step, Exception Error, DateTimeOffset Now)> Failures { get; } = [];

        public Func<DateTimeOffset, Step> Timer { get; set; } = now => new Step($"timer@{(now - T0).TotalSeconds}");

        public Func<Step, Exception, Step> Failed { get; set; } = (step, _) => new Step($"recovered {step.Name}");

        public CoreWake WakeOf(Step step) => step.Wake;

        public ValueTask PerformAsync(Step step, CancellationToken ct)
        {
            Log.Add("perform " + step.Name);
            if (Throws.Contains(step.Name))
            {
                throw new InvalidOperationException("effect of " + step.Name + " failed");
            }
            return Blocked.TryGetValue(step.Name, out var gate) ? new ValueTask(gate.Task.WaitAsync(ct)) : ValueTask.CompletedTask;
        }

        public Step OnTimer(DateTimeOffset now) => Timer(now);

        public Step OnEffectFailed(Step step, Exception error, DateTimeOffset now)
        {
            Failures.Add((step.Name, error, now));
            return Failed(step, error);
        }

        public Func<DateTimeOffset, Step> Event(string name, CoreWake wake = default) => now =>
        {
            Log.Add($"decide {name}@{(now - T0).TotalSeconds}");
            return new Step(name, wake);
        };
    }

    [Test]
    public async Task Events_AreTakenInTheOrderQueued_EachStepsEffectsCompleteBeforeTheNextEvent()
    {
        var time = new VirtualClock(T0);
        var core = new Recorder();
        core.Blocked["a"] = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var shell = new CoreShell<Step>(core, time);

        var running = shell.Post(core.Event("a"));
        _ = shell.Post(core.Event("b"));
        _ = shell.Post(core.Event("c"));

        Assert.That(core.Log, Is.EqualTo(new[] { "decide a@0", "perform a" }), "b and c wait while a's effect is in flight");
        Assert.That(shell.Pending, Is.EqualTo(2));
        core.Blocked["a"].SetResult();
        await running;
        Assert.That(core.Log, Is.EqualTo(new[] { "decide a@0", "perform a", "decide b@0", "perform b", "decide c@0", "perform c" }));
        Assert.That(shell.Pending, Is.Zero);
    }

    [Test]
    public void Events_QueuedUnderACallersLock_KeepTheCoresOrder_AndRunOnlyWhenPumped()
    {
        var core = new Recorder();
        var shell = new CoreShell<Step>(core, new VirtualClock(T0));

        Assert.That(shell.TryEnqueue(new Step("decided 1")), Is.EqualTo(CorePost.Accepted));
        Assert.That(shell.TryEnqueue(core.Event("event 2")), Is.EqualTo(CorePost.Accepted));
        Assert.That(shell.TryEnqueue(new Step("decided 3")), Is.EqualTo(CorePost.Accepted));
        Assert.That(core.Log, Is.Empty, "nothing runs under the caller's lock");

        Assert.That(shell.Pump().IsCompletedSuccessfully, Is.True, "synchronous effects run on the pumping thread");
        Assert.That(core.Log, Is.EqualTo(new[] { "perform decided 1", "decide event 2@0", "perform event 2", "perform decided 3" }));
    }

    [Test]
    public void Timer_ComesDueOnlyWhenTheInjectedClockReachesIt_WithThatNow()
    {
        var time = new VirtualClock(T0);
        var core = new Recorder();
        var shell = new CoreShell<Step>(core, time);

        shell.Post(core.Event("arm", CoreWake.WakeAt(T0 + TimeSpan.FromSeconds(5))));
        time.Advance(TimeSpan.FromSeconds(5) - TimeSpan.FromTicks(1));
        Assert.That(core.Log, Has.None.StartsWith("perform timer"), "not a tick early");

        time.Advance(TimeSpan.FromTicks(1));
        Assert.That(core.Log.Where(l => l.StartsWith("perform timer", StringComparison.Ordinal)), Is.EqualTo(new[] { "perform timer@5" }));

        time.Advance(TimeSpan.FromHours(1));
        Assert.That(core.Log.Count(l => l.StartsWith("perform timer", StringComparison.Ordinal)), Is.EqualTo(1), "a timer fires once; the core re-arms it if it wants");
    }

    [Test]
    public void Timer_IsReplacedByALaterStepsTime_KeptByKeep_AndDisarmedByDisarm()
    {
        var time = new VirtualClock(T0);
        var core = new Recorder { Timer = now => new Step($"timer@{(now - T0).TotalSeconds}", CoreWake.Keep) };
        var shell = new CoreShell<Step>(core, time);

        shell.Post(core.Event("far", CoreWake.WakeAt(T0 + TimeSpan.FromSeconds(10))));
        shell.Post(core.Event("near", CoreWake.WakeAt(T0 + TimeSpan.FromSeconds(3))));
        shell.Post(core.Event("keep", CoreWake.Keep));
        time.Advance(TimeSpan.FromSeconds(20));
        Assert.That(core.Log.Where(l => l.StartsWith("perform timer", StringComparison.Ordinal)), Is.EqualTo(new[] { "perform timer@3" }),
            "the later step's time replaced the earlier; Keep left it");

        shell.Post(core.Event("again", CoreWake.WakeAt(time.GetUtcNow() + TimeSpan.FromSeconds(1))));
        shell.Post(core.Event("off", CoreWake.Disarm));
        time.Advance(TimeSpan.FromMinutes(1));
        Assert.That(core.Log.Count(l => l.StartsWith("perform timer", StringComparison.Ordinal)), Is.EqualTo(1), "disarmed");
    }

    [Test]
    public void EffectThatThrows_BecomesTheCoresFailureEvent_AndTheLoopGoesOn()
    {
        var time = new VirtualClock(T0);
        var core = new Recorder();
        core.Throws.Add("send");
        var shell = new CoreShell<Step>(core, time);

        time.Advance(TimeSpan.FromSeconds(2));
        shell.Post(core.Event("send"));
        shell.Post(core.Event("next"));

        Assert.That(core.Failures.Select(f => (f.Step, f.Error.Message, f.Now)), Is.EqualTo(new[] { ("send", "effect of send failed", T0 + TimeSpan.FromSeconds(2)) }));
        Assert.That(core.Log, Is.EqualTo(new[] { "decide send@2", "perform send", "perform recovered send", "decide next@2", "perform next" }));
        Assert.That(shell.EffectFailures, Is.EqualTo(1));
        Assert.That(shell.Completion.IsCompleted, Is.False);
    }

    [Test]
    public void FailureStepThatThrowsToo_StopsTheShellWithTheError_NeverALoop()
    {
        var core = new Recorder();
        core.Throws.Add("send");
        core.Throws.Add("recovered send");
        var shell = new CoreShell<Step>(core, new VirtualClock(T0));

        shell.Post(core.Event("send"));

        Assert.That(core.Failures, Has.Count.EqualTo(1), "the failure's own failure is not fed back");
        Assert.That(shell.Completion.IsFaulted, Is.True);
        Assert.That(shell.Completion.Exception!.InnerException!.Message, Is.EqualTo("effect of recovered send failed"));
        Assert.That(shell.TryEnqueue(core.Event("later")), Is.EqualTo(CorePost.Stopped));
    }

    [Test]
    public void TransitionThatThrows_StopsTheShellWithTheError()
    {
        var core = new Recorder();
        var shell = new CoreShell<Step>(core, new VirtualClock(T0));

        Assert.DoesNotThrow(() => shell.Post(_ => throw new InvalidOperationException("core bug")));

        Assert.That(shell.Completion.Exception!.InnerException!.Message, Is.EqualTo("core bug"));
        Assert.That(shell.IsEnded, Is.True);
    }

    [Test]
    public async Task FullQueue_RefusesWithATypedError_AndTakesEventsAgainOnceDrained()
    {
        var core = new Recorder();
        core.Blocked["slow"] = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var shell = new CoreShell<Step>(core, new VirtualClock(T0), new CoreShellOptions { Capacity = 2, Name = "test core" });

        var running = shell.Post(core.Event("slow"));
        Assert.That(shell.TryEnqueue(core.Event("1")), Is.EqualTo(CorePost.Accepted));
        Assert.That(shell.TryEnqueue(core.Event("2")), Is.EqualTo(CorePost.Accepted));
        Assert.That(shell.TryEnqueue(core.Event("3")), Is.EqualTo(CorePost.QueueFull));
        var refused = Assert.Throws<CoreQueueFullException>(() => shell.Post(core.Event("4")));
        Assert.That(refused!.Capacity, Is.EqualTo(2));
        Assert.That(refused.Message, Does.Contain("test core"));

        core.Blocked["slow"].SetResult();
        await running;
        Assert.That(core.Log.Where(l => l.StartsWith("perform", StringComparison.Ordinal)), Is.EqualTo(new[] { "perform slow", "perform 1", "perform 2" }));
        Assert.That(shell.TryEnqueue(core.Event("5")), Is.EqualTo(CorePost.Accepted));
    }

    [Test]
    public void EndedCore_RefusesLaterEvents_AndItsTimerNeverFires()
    {
        var time = new VirtualClock(T0);
        var core = new Recorder();
        var shell = new CoreShell<Step>(core, time);

        shell.Post(core.Event("arm", CoreWake.WakeAt(T0 + TimeSpan.FromSeconds(1))));
        shell.Post(core.Event("end", CoreWake.Ended));
        time.Advance(TimeSpan.FromMinutes(1));

        Assert.That(shell.Completion.IsCompletedSuccessfully, Is.True);
        Assert.That(shell.TryEnqueue(core.Event("late")), Is.EqualTo(CorePost.Stopped));
        Assert.That(core.Log, Has.None.Contains("timer"));
    }

    [Test]
    public async Task Stop_CancelsTheEffectInFlight_DropsWaitingEvents_AndIsNoFailure()
    {
        var core = new Recorder();
        core.Blocked["slow"] = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var shell = new CoreShell<Step>(core, new VirtualClock(T0));

        var running = shell.Post(core.Event("slow"));
        _ = shell.Post(core.Event("waiting"));
        shell.Stop();
        await running;

        Assert.That(core.Log, Is.EqualTo(new[] { "decide slow@0", "perform slow" }));
        Assert.That(core.Failures, Is.Empty, "a cancelled effect is not a failure");
        Assert.That(shell.Completion.IsCompletedSuccessfully, Is.True);
        Assert.That(shell.TryEnqueue(core.Event("after")), Is.EqualTo(CorePost.Stopped));
    }
}
