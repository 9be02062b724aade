using System.Runtime.ExceptionServices;

namespace Potluck.Protocol.Runtime;

/// <summary>Bounds of a <see cref="VirtualTimeDriver"/> run; both only catch bugs (a test waiting for something that never happens).</summary>
public sealed record VirtualTimeLimits
{
    /// <summary>Virtual time a run may cover before it is declared stuck. Default 7 days.</summary>
    public TimeSpan MaxVirtualTime { get; init; } = TimeSpan.FromDays(7);

    /// <summary>
    /// Wall-clock time the loop may wait, with nothing queued, for external work (a sandbox run) to post back before the
    /// run is declared stuck. Not a pace: the driver never waits on the wall clock otherwise. Default 2 min.
    /// </summary>
    public TimeSpan MaxExternalWait { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>How long a run that looks stuck waits (wall clock) for escaped work to post back before failing. Default 2 s.</summary>
    public TimeSpan EscapeGrace { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Fail a run in which work escaped the loop (see <see cref="EventLoop.Escapes"/>). Default true.</summary>
    public bool FailOnEscape { get; init; } = true;
}

/// <summary>The run cannot finish: nothing is queued, no timer is armed and nothing runs elsewhere, or a limit passed.</summary>
public sealed class VirtualTimeStuckException(string message) : Exception(message);

/// <summary>
/// Owns virtual time for a test or a simulation (DESIGN §8): one <see cref="VirtualClock"/> and one <see cref="EventLoop"/>.
/// It runs the loop until idle, then jumps the clock to the next timer, and repeats until the awaited task ends, so a
/// test never sleeps and never guesses how long to wait: <c>await Task.Delay(TimeSpan.FromMinutes(5), clock)</c> inside a run
/// costs no wall time. A run that can never finish (idle, no timers) fails at once with a message instead of hanging.
/// </summary>
public sealed class VirtualTimeDriver
{
    private readonly List<TaskCompletionSource> _idleWaiters = [];
    private readonly Lock _gate = new();

    public VirtualTimeDriver(VirtualClock? clock = null, VirtualTimeLimits? limits = null)
    {
        Clock = clock ?? new VirtualClock();
        Loop = new EventLoop();
        Limits = limits ?? new VirtualTimeLimits();
    }

    public VirtualClock Clock { get; }

    public EventLoop Loop { get; }

    public VirtualTimeLimits Limits { get; }

    /// <summary>Wall-clock time the driver spent waiting for external work (sandbox runs) to post back.</summary>
    public TimeSpan ExternalWaitTime { get; private set; }

    /// <summary>Times the driver found the loop idle and moved the clock.</summary>
    public long Jumps { get; private set; }

    /// <summary>The digest of every event from <see cref="DigestEvents"/> on; null until then.</summary>
    public EventDigest? Digest { get; private set; }

    /// <summary>
    /// Folds every event from now on (each loop item, each timer) into <see cref="Digest"/>, and writes one line per event
    /// to <paramref name="log"/> when given (slow: to diff two runs). Call before the run, from outside the loop.
    /// </summary>
    public EventDigest DigestEvents(TextWriter? log = null)
    {
        var digest = new EventDigest(Clock, log);
        Digest = digest;
        Loop.Digest = digest;
        Clock.Digest = digest;
        return digest;
    }

    /// <summary>A node runtime on this driver's clock and loop, with replayable randomness from <paramref name="seed"/>.</summary>
    public NodeRuntime CreateRuntime(long seed) => NodeRuntime.Simulated(Clock, Loop, seed);

    /// <summary>Runs <paramref name="body"/> on a fresh driver until it completes; rethrows its exception.</summary>
    public static void Run(Func<VirtualTimeDriver, Task> body, VirtualTimeLimits? limits = null)
    {
        var driver = new VirtualTimeDriver(limits: limits);
        driver.RunUntilComplete(body);
    }

    /// <summary>Runs <paramref name="body"/> on a fresh driver until it completes and returns its result.</summary>
    public static T Run<T>(Func<VirtualTimeDriver, Task<T>> body, VirtualTimeLimits? limits = null)
    {
        var driver = new VirtualTimeDriver(limits: limits);
        Task<T>? task = null;
        driver.RunUntilComplete(d => task = body(d));
        return task!.Result;
    }

    /// <summary>Starts <paramref name="body"/> on the loop and drives the loop and the clock until it completes.</summary>
    public void RunUntilComplete(Func<VirtualTimeDriver, Task> body) => RunUntilComplete(body, CancellationToken.None);

    /// <summary>
    /// Starts <paramref name="body"/> on the loop and drives the loop and the clock until it completes, or until
    /// <paramref name="cancel"/> is cancelled: then the driver stops between two moments of virtual time (what was queued
    /// for the current one runs first) and throws <see cref="OperationCanceledException"/>, leaving the run where it was
    /// (for a command stopped by Ctrl-C or SIGTERM; nothing on the loop runs afterwards).
    /// </summary>
    public void RunUntilComplete(Func<VirtualTimeDriver, Task> body, CancellationToken cancel)
    {
        ArgumentNullException.ThrowIfNull(body);
        Task? task = null;
        Loop.Post(_ => task = body(this), null);
        Loop.RunUntilIdle();
        Drive(() => task is { IsCompleted: true }, cancel: cancel);
        ThrowFaults();
        task!.GetAwaiter().GetResult();
    }

    /// <summary>Drives the loop and the clock until <paramref name="task"/> completes (call from outside the loop).</summary>
    public void RunUntil(Task task)
    {
        Drive(() => task.IsCompleted);
        ThrowFaults();
    }

    /// <summary>Drives the loop and the clock for <paramref name="span"/> of virtual time, then runs until idle.</summary>
    public void RunFor(TimeSpan span)
    {
        var until = Clock.GetUtcNow() + span;
        Drive(() => false, until);
        JumpTo(until);
        RunUntilIdle();
        ThrowFaults();
    }

    /// <summary>Runs the loop until it is idle, without moving the clock (waits for external work to post back).</summary>
    public void RunUntilIdle()
    {
        while (true)
        {
            Loop.RunUntilIdle();
            if (Loop.ExternalRunning > 0)
            {
                WaitExternal();
                continue;
            }
            // Every sandbox run has finished (or waits for the loop): their results come in, in the order they began.
            if (Loop.AdmitSettled() > 0)
            {
                continue;
            }
            if (!ReleaseIdleWaiters())
            {
                return;
            }
        }
    }

    /// <summary>
    /// Completes when the loop is next idle (nothing queued, nothing external) before the clock moves: inside a run,
    /// <c>await driver.IdleAsync()</c> lets everything already set in motion finish without any time passing.
    /// </summary>
    public Task IdleAsync()
    {
        var waiter = new TaskCompletionSource();
        lock (_gate)
        {
            _idleWaiters.Add(waiter);
        }
        return waiter.Task;
    }

    private void Drive(Func<bool> done, DateTimeOffset? until = null, CancellationToken cancel = default)
    {
        var limit = Clock.GetUtcNow() + Limits.MaxVirtualTime;
        while (true)
        {
            RunUntilIdle();
            if (done())
            {
                return;
            }
            cancel.ThrowIfCancellationRequested();
            var next = Clock.NextDeadline;
            if (next is null)
            {
                if (until is not null)
                {
                    return;
                }
                // Before declaring the run stuck, give work that escaped to the thread pool a moment to post back: it is
                // then reported as the escape it is (a failure path only; a correct run never waits here).
                if (Loop.WaitForWork(Limits.EscapeGrace))
                {
                    continue;
                }
                ThrowFaults();
                throw new VirtualTimeStuckException(
                    $"nothing can happen any more: the loop is idle, no timer is armed and no external work runs, at virtual {Clock.Elapsed} " +
                    $"({Loop.ItemsRun} items run, {Clock.TimersFired} timers fired): the awaited task waits for something that never comes");
            }
            if (until is { } u && next.Value > u)
            {
                return;
            }
            if (next.Value > limit)
            {
                throw new VirtualTimeStuckException(
                    $"virtual time would pass {Limits.MaxVirtualTime} (next timer at {next.Value:O}) without the awaited task completing");
            }
            BetweenMoments?.Invoke();
            Jumps++;
            JumpTo(next.Value);
        }
    }

    /// <summary>
    /// Called on the loop's thread each time the driver is about to move the clock: the loop is idle (everything of the
    /// current moment has run) and nothing of the next has. For the harness's housekeeping that must not fall inside a
    /// moment (<c>potluck sim</c>'s heap policy); what it does must not post, arm timers or touch a node, so the run is
    /// the same with it and without it. Default none.
    /// </summary>
    public Action? BetweenMoments { get; set; }

    /// <summary>
    /// Moves the clock, firing what falls due, on the loop's thread with the loop as context, like any item, but not as an
    /// item of its own: the loop is idle here (nothing queued), so it runs exactly where the one item it used to be ran,
    /// and each timer it fires is the event. What the timers post runs next, in order, as before.
    /// </summary>
    private void JumpTo(DateTimeOffset target)
    {
        _jumpTarget = target;
        Loop.RunInline(Jump, this);
    }

    private DateTimeOffset _jumpTarget;

    private static readonly Action<object?> Jump = static s =>
    {
        var driver = (VirtualTimeDriver)s!;
        driver.Clock.AdvanceTo(driver._jumpTarget);
    };

    private bool ReleaseIdleWaiters()
    {
        TaskCompletionSource[] waiters;
        lock (_gate)
        {
            if (_idleWaiters.Count == 0)
            {
                return false;
            }
            waiters = [.. _idleWaiters];
            _idleWaiters.Clear();
        }
        Loop.Post(_ =>
        {
            foreach (var w in waiters)
            {
                w.TrySetResult();
            }
        }, null);
        return true;
    }

    private void WaitExternal()
    {
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        var posted = Loop.WaitForWork(Limits.MaxExternalWait);
        ExternalWaitTime += System.Diagnostics.Stopwatch.GetElapsedTime(started);
        if (!posted)
        {
            throw new VirtualTimeStuckException(
                $"{Loop.ExternalWorkCount} piece(s) of external work did not post back within {Limits.MaxExternalWait} of wall-clock time");
        }
    }

    private void ThrowFaults()
    {
        if (Limits.FailOnEscape && Loop.Escapes > 0)
        {
            throw new VirtualTimeStuckException(
                $"work escaped the event loop {Loop.Escapes} time(s): something ran on the thread pool and posted back, so the run is not " +
                $"repeatable (look for ConfigureAwait(false), Task.Run, ContinueWith on TaskScheduler.Default, ChannelReader.ReadAllAsync, CancellationTokenSource.CancelAsync). " +
                $"First posted from:{Environment.NewLine}{Loop.FirstEscape}");
        }
        var faults = Loop.TakeFaults();
        if (faults.Count == 1)
        {
            ExceptionDispatchInfo.Capture(faults[0]).Throw();
        }
        if (faults.Count > 1)
        {
            throw new AggregateException("work items on the event loop threw", faults);
        }
    }
}
