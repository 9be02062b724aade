using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Sandbox;

namespace Potluck.Scheduler.Tests.Sandbox;

/// <summary>The epoch ticker runs only while a task does: an idle sandbox arms no timer (issue 7, item 11).</summary>
public class EpochTickerTests
{
    private static readonly TimeSpan Tick = TimeSpan.FromMilliseconds(10);

    private SandboxFixture _fixture = null!;
    private VirtualClock _time = null!;
    private WasmSandbox _sandbox = null!;

    [SetUp]
    public void SetUp()
    {
        _fixture = new SandboxFixture();
        _time = new VirtualClock();
        _sandbox = _fixture.Create(o => o with
        {
            EpochTick = Tick,
            DefaultFuel = ulong.MaxValue,
        }, diskCache: false, time: _time);
    }

    [TearDown]
    public void TearDown() => _fixture.Dispose();

    [Test]
    public void IdleSandbox_ArmsNoTimer_AndNeverAdvancesTheEpoch()
    {
        Assert.That(_sandbox.EpochTicker.IsArmed, Is.False);

        _time.Advance(TimeSpan.FromHours(1));

        Assert.That(_sandbox.EpochTicker.Ticks, Is.Zero);
    }

    [Test]
    public void FinishedRun_LeavesTheTimerDisarmed()
    {
        var result = _sandbox.Execute(new TaskSpec { Module = Samples.Load("hashchain"), Args = ["10"] }, "x"u8.ToArray());
        _time.Advance(TimeSpan.FromHours(1));

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.Success));
        Assert.That(_sandbox.EpochTicker.IsArmed, Is.False);
        Assert.That(_sandbox.EpochTicker.Ticks, Is.Zero);
    }

    [Test]
    [CancelAfter(60_000)]
    public async Task RunningTask_ArmsTheTimer_WhichEnforcesTheDeadline_ThenDisarmsIt(CancellationToken hang)
    {
        var armed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _sandbox.EpochTicker.ArmedChanged += on =>
        {
            if (on) armed.TrySetResult();
        };
        var spec = new TaskSpec { Module = Samples.TestModule("loop"), FuelLimit = ulong.MaxValue, Deadline = TimeSpan.FromSeconds(1) };

        var run = _sandbox.ExecuteAsync(spec, default);
        await armed.Task.WaitAsync(hang);

        Assert.That(_sandbox.EpochTicker.IsArmed, Is.True);
        _time.Advance(TimeSpan.FromMilliseconds(500)); // 50 ticks, before the deadline: the task runs on
        Assert.That(_sandbox.EpochTicker.Ticks, Is.EqualTo(50));
        Assert.That(run.IsCompleted, Is.False);

        _time.Advance(TimeSpan.FromSeconds(1)); // past the deadline: the next epoch check ends the run
        var result = await run.WaitAsync(hang);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.WallClockTimeout));
        Assert.That(_sandbox.EpochTicker.IsArmed, Is.False);
        var ticks = _sandbox.EpochTicker.Ticks;
        _time.Advance(TimeSpan.FromHours(1));
        Assert.That(_sandbox.EpochTicker.Ticks, Is.EqualTo(ticks));
    }

    [Test]
    [CancelAfter(60_000)]
    public async Task Cancellation_IsNoticedByTheArmedTimer(CancellationToken hang)
    {
        var armed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _sandbox.EpochTicker.ArmedChanged += on =>
        {
            if (on) armed.TrySetResult();
        };
        using var cts = new CancellationTokenSource();
        var spec = new TaskSpec { Module = Samples.TestModule("loop"), FuelLimit = ulong.MaxValue };

        var run = _sandbox.ExecuteAsync(spec, default, cts.Token);
        await armed.Task.WaitAsync(hang);
        cts.Cancel();
        _time.Advance(Tick);

        Assert.That(async () => await run.WaitAsync(hang),
            Throws.InstanceOf<OperationCanceledException>().With.Property(nameof(OperationCanceledException.CancellationToken)).EqualTo(cts.Token));
        Assert.That(_sandbox.EpochTicker.IsArmed, Is.False);
    }

    /// <summary>
    /// A clock whose next reading, once armed, is taken and then held until the test lets it go: the test can move time
    /// (and fire the ticker's ticks) while a run's deadline check is between reading the clock and returning.
    /// </summary>
    private sealed class RacingClock(VirtualClock inner) : TimeProvider
    {
        private int _armed;
        private readonly ManualResetEventSlim _release = new();

        public TaskCompletionSource Reading { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Arm() => Volatile.Write(ref _armed, 1);

        public void Release() => _release.Set();

        public override long TimestampFrequency => inner.TimestampFrequency;

        public override DateTimeOffset GetUtcNow() => inner.GetUtcNow();

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) =>
            inner.CreateTimer(callback, state, dueTime, period);

        public override long GetTimestamp()
        {
            var now = inner.GetTimestamp();
            if (Interlocked.Exchange(ref _armed, 0) == 1)
            {
                Reading.TrySetResult();
                _release.Wait(TimeSpan.FromSeconds(60)); // the test releases it at once; bounded so a broken test cannot hang here
            }
            return now;
        }
    }

    [Test]
    [CancelAfter(60_000)]
    public async Task DeadlineCheck_ThatReadsTheClockJustBeforeTheLastTicks_StillEndsTheRun(CancellationToken hang)
    {
        // The cause of the hang RunningTask_ArmsTheTimer_… showed now and then on a quiet machine: the guest's deadline
        // check read the clock (before the deadline), the last ticks landed while it was deciding, and Wasmtime set the
        // next check one tick after the epoch at its return, a tick that never came once the clock stopped.
        var clock = new RacingClock(_time);
        var sandbox = _fixture.Create(o => o with { EpochTick = Tick, DefaultFuel = ulong.MaxValue }, diskCache: false, time: clock);
        var armed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        sandbox.EpochTicker.ArmedChanged += on =>
        {
            if (on) armed.TrySetResult();
        };
        var run = sandbox.ExecuteAsync(new TaskSpec { Module = Samples.TestModule("loop"), FuelLimit = ulong.MaxValue, Deadline = TimeSpan.FromSeconds(1) }, default);
        await armed.Task.WaitAsync(hang);

        clock.Arm();
        _time.Advance(Tick);                     // one tick: the guest checks, reads 10 ms, and is held there
        await clock.Reading.Task.WaitAsync(hang);
        _time.Advance(TimeSpan.FromSeconds(2));  // every tick left, while the check is under way; none after
        clock.Release();
        var result = await run.WaitAsync(hang);

        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.WallClockTimeout));
        Assert.That(sandbox.EpochTicker.IsArmed, Is.False);
    }
}
