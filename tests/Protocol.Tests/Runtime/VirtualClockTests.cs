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

    /// <summary>
    /// A peak of armed timers (a mesh's join) that ends leaves the queue compacted once stale entries outnumber armed ones,
    /// not only when it doubles past the peak: timeouts made and disposed afterwards do not pile up behind it.
    /// </summary>
    [Test]
    public void AfterAPeakOfArmedTimers_StaleEntriesNeverOutnumberArmedOnesPastTheMinimum()
    {
        var clock = new VirtualClock();
        var fired = new List<int>();
        var peak = Enumerable.Range(0, 10_000)
            .Select(i => clock.CreateTimer(_ => fired.Add(i), null, TimeSpan.FromMinutes(10) + TimeSpan.FromSeconds(10_000 - i), Timeout.InfiniteTimeSpan))
            .ToList();
        foreach (var timer in peak.Where((_, i) => i % 100 != 0))
        {
            timer.Dispose(); // 100 stay armed
        }
        for (var i = 0; i < 3_000; i++)
        {
            clock.CreateTimer(_ => fired.Add(-1), null, TimeSpan.FromHours(1), Timeout.InfiniteTimeSpan).Dispose(); // a timeout that never fires
        }

        Assert.That(clock.PendingTimers, Is.EqualTo(100));
        Assert.That(clock.QueuedEntries, Is.LessThan(1_024), "stale entries compacted away (the doubling rule alone left 13,000)");
        clock.Advance(TimeSpan.FromHours(4));
        Assert.That(fired, Is.EqualTo(Enumerable.Range(0, 100).Select(k => 9_900 - (100 * k))), "the armed ones fire once each, in deadline order");
        peak.ForEach(t => t.Dispose());
    }

    [Test]
    public void DisposedTimers_ReleaseTheirStateAndLeaveTheQueue_WhileArmedOnesKeepTheirOrder()
    {
        // Timeouts that never fire (a CancellationTokenSource(30 s) disposed at once) used to stay queued until their deadline.
        var clock = new VirtualClock();
        var fired = new List<int>();
        var keep = new List<ITimer>();
        var released = new List<WeakReference>();
        Fill(clock, fired, keep, released);

        Assert.That(clock.QueuedEntries, Is.LessThan(1_024 + 10), "stale entries were compacted away");
        GC.Collect();
        GC.WaitForPendingFinalizers();
        Assert.That(released.Count(w => w.IsAlive), Is.Zero, "a disposed timer holds no reference to its state");
        clock.Advance(TimeSpan.FromHours(1));
        Assert.That(fired, Is.EqualTo(new[] { 4_000, 3_000, 2_000, 1_000, 0 }), "armed timers fire once, in deadline order");
        Assert.That(clock.PendingTimers, Is.Zero);
        keep.ForEach(t => t.Dispose());

        // Not inlined, so no local of the loop outlives it (unoptimised code keeps locals alive to the end of a method).
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
        static void Fill(VirtualClock clock, List<int> fired, List<ITimer> keep, List<WeakReference> released)
        {
            for (var i = 0; i < 5_000; i++)
            {
                var state = new byte[64];
                released.Add(new WeakReference(state));
                clock.CreateTimer(_ => { }, state, TimeSpan.FromMinutes(30), Timeout.InfiniteTimeSpan).Dispose();
                if (i % 1_000 == 0)
                {
                    var n = i;
                    keep.Add(clock.CreateTimer(_ => fired.Add(n), null, TimeSpan.FromSeconds(10 - (i / 1_000)), Timeout.InfiniteTimeSpan));
                }
            }
        }
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
