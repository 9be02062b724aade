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
    [Explicit("Hangs at the wait for the run after the clock passed the deadline when it runs after AdvertisementCodecTests on a "
        + "quiet machine (passes alone and under load): a race between the virtual clock's ticks and the guest's epoch check, "
        + "not yet understood; kept out of CI until it is (see the closing note of 2026-12-02)")]
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
}
