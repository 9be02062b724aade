using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Runtime;

public class VirtualClockTests
{
    [Test]
    public void Timers_FireInDeadlineOrder_ThenCreationOrder()
    {
        var clock = new VirtualClock();
        var fired = new List<string>();
        using var late = clock.CreateTimer(_ => fired.Add("late"), null, TimeSpan.FromSeconds(2), Timeout.InfiniteTimeSpan);
        using var first = clock.CreateTimer(_ => fired.Add("first"), null, TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);
        using var second = clock.CreateTimer(_ => fired.Add("second"), null, TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);

        clock.Advance(TimeSpan.FromMilliseconds(999));
        Assert.That(fired, Is.Empty);
        clock.Advance(TimeSpan.FromSeconds(5));

        Assert.That(fired, Is.EqualTo(new[] { "first", "second", "late" }));
        Assert.That(clock.Elapsed, Is.EqualTo(TimeSpan.FromMilliseconds(5999)));
    }

    [Test]
    public void Timer_SeesTheClockAtItsOwnDeadline()
    {
        var clock = new VirtualClock();
        var seen = new List<TimeSpan>();
        using var timer = clock.CreateTimer(_ => seen.Add(clock.Elapsed), null, TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(2));

        clock.Advance(TimeSpan.FromSeconds(8));

        Assert.That(seen, Is.EqualTo(new[] { TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(7) }));
        Assert.That(clock.NextDeadline, Is.EqualTo(VirtualClock.DefaultStart + TimeSpan.FromSeconds(9)));
    }

    [Test]
    public void ChangedAndDisposedTimers_DoNotFire_AndLeaveNoDeadline()
    {
        var clock = new VirtualClock();
        var fired = 0;
        var moved = clock.CreateTimer(_ => fired++, null, TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);
        var gone = clock.CreateTimer(_ => fired += 100, null, TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);
        moved.Change(TimeSpan.FromSeconds(10), Timeout.InfiniteTimeSpan);
        gone.Dispose();

        Assert.That(clock.PendingTimers, Is.EqualTo(1));
        clock.Advance(TimeSpan.FromSeconds(5));
        Assert.That(fired, Is.Zero);
        clock.Advance(TimeSpan.FromSeconds(5));
        Assert.That(fired, Is.EqualTo(1));
        Assert.That(clock.NextDeadline, Is.Null);
        moved.Dispose();
    }

    [Test]
    public void AdvanceToNextTimer_JumpsExactlyToTheEarliestDeadline()
    {
        var clock = new VirtualClock();
        var delay = Task.Delay(TimeSpan.FromMinutes(7), clock);

        Assert.That(clock.AdvanceToNextTimer(), Is.True);

        Assert.That(delay.IsCompletedSuccessfully, Is.True);
        Assert.That(clock.Elapsed, Is.EqualTo(TimeSpan.FromMinutes(7)));
        Assert.That(clock.AdvanceToNextTimer(), Is.False);
    }

    [Test]
    public void CancellationTokenSource_OnTheClock_CancelsAtItsDeadline()
    {
        var clock = new VirtualClock();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30), clock);

        clock.Advance(TimeSpan.FromSeconds(29));
        Assert.That(cts.IsCancellationRequested, Is.False);
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.That(cts.IsCancellationRequested, Is.True);
    }

    [Test]
    public void Advance_FromInsideATimerCallback_IsRefused()
    {
        var clock = new VirtualClock();
        Exception? error = null;
        using var timer = clock.CreateTimer(_ =>
        {
            try
            {
                clock.Advance(TimeSpan.FromSeconds(1));
            }
            catch (InvalidOperationException e)
            {
                error = e;
            }
        }, null, TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);

        clock.Advance(TimeSpan.FromSeconds(2));

        Assert.That(error, Is.Not.Null);
        Assert.That(clock.Elapsed, Is.EqualTo(TimeSpan.FromSeconds(2)));
    }
}
