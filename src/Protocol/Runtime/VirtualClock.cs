namespace Potluck.Protocol.Runtime;

/// <summary>
/// Virtual time: a <see cref="TimeProvider"/> whose clock moves only when told, with every timer in one queue ordered
/// by deadline and then by creation, so the same run fires the same timers in the same order. Timers created through
/// it (<c>Task.Delay(d, clock)</c>, <c>new PeriodicTimer(p, clock)</c>, <c>new CancellationTokenSource(d, clock)</c>,
/// <c>task.WaitAsync(d, clock)</c>) fire on the thread that advances the clock: under a <see cref="VirtualTimeDriver"/>
/// that is its event loop. Thread-safe.
/// </summary>
public sealed class VirtualClock : TimeProvider
{
    /// <summary>Where a clock starts unless told otherwise: 2026-01-01 00:00 UTC.</summary>
    public static readonly DateTimeOffset DefaultStart = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private readonly Lock _gate = new();
    private readonly PriorityQueue<VirtualTimer, (long Deadline, long Sequence)> _queue = new();
    private readonly DateTimeOffset _start;
    private long _nowTicks;
    private long _sequence;
    private int _advancing;
    private int _compactAt = MinCompaction;
    private int _armed; // entries in the queue whose timer is armed as them (the rest are stale)

    /// <summary>Queue entries below which stale ones (of timers changed or disposed) are left for <see cref="Prune"/> to meet.</summary>
    private const int MinCompaction = 1024;

    public VirtualClock() : this(DefaultStart)
    {
    }

    public VirtualClock(DateTimeOffset start)
    {
        _start = start;
        _nowTicks = start.UtcTicks;
    }

    public override DateTimeOffset GetUtcNow() => new(Interlocked.Read(ref _nowTicks), TimeSpan.Zero);

    public override TimeZoneInfo LocalTimeZone => TimeZoneInfo.Utc;

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public override long GetTimestamp() => Interlocked.Read(ref _nowTicks) - _start.UtcTicks;

    /// <summary>How much virtual time has passed since the clock was made.</summary>
    public TimeSpan Elapsed => TimeSpan.FromTicks(GetTimestamp());

    /// <summary>Timers armed now.</summary>
    public int PendingTimers
    {
        get
        {
            lock (_gate)
            {
                var count = 0;
                foreach (var (timer, key) in _queue.UnorderedItems)
                {
                    if (timer.IsArmedAs(key.Sequence))
                    {
                        count++;
                    }
                }
                return count;
            }
        }
    }

    /// <summary>The earliest deadline of an armed timer, or null when none is armed.</summary>
    public DateTimeOffset? NextDeadline
    {
        get
        {
            lock (_gate)
            {
                Prune();
                return _queue.TryPeek(out _, out var key) ? new DateTimeOffset(key.Deadline, TimeSpan.Zero) : null;
            }
        }
    }

    /// <summary>Whether an armed timer is due now (at or before the clock's time): while the clock fires an instant's timers, one still to fire.</summary>
    internal bool HasTimerDueNow
    {
        get
        {
            lock (_gate)
            {
                Prune();
                return _queue.TryPeek(out _, out var key) && key.Deadline <= _nowTicks;
            }
        }
    }

    /// <summary>Sees every timer as it fires (a <see cref="VirtualTimeDriver"/>'s <see cref="EventDigest"/>); null by default.</summary>
    internal EventDigest? Digest { get; set; }

    /// <summary>Timers fired so far (for reports and trace hashes).</summary>
    public long TimersFired { get; private set; }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        ArgumentNullException.ThrowIfNull(callback);
        var timer = new VirtualTimer(this, callback, state, ExecutionContext.Capture());
        timer.Change(dueTime, period);
        return timer;
    }

    /// <summary>Moves the clock forward by <paramref name="delta"/>, firing every timer that falls due on the way, in order.</summary>
    public void Advance(TimeSpan delta)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(delta, TimeSpan.Zero);
        AdvanceTo(GetUtcNow() + delta);
    }

    /// <summary>Moves the clock to <paramref name="target"/> (never backwards), firing every timer due by then, in order.</summary>
    public void AdvanceTo(DateTimeOffset target)
    {
        if (Interlocked.Exchange(ref _advancing, 1) != 0)
        {
            throw new InvalidOperationException("the virtual clock is already being advanced (a timer callback tried to advance it)");
        }
        try
        {
            while (true)
            {
                VirtualTimer? due = null;
                lock (_gate)
                {
                    Prune();
                    if (_queue.TryPeek(out var timer, out var key) && key.Deadline <= target.UtcTicks)
                    {
                        _queue.Dequeue();
                        if (key.Deadline > _nowTicks)
                        {
                            Interlocked.Exchange(ref _nowTicks, key.Deadline);
                        }
                        due = timer.TakeDue(key.Sequence);
                    }
                    else
                    {
                        if (target.UtcTicks > _nowTicks)
                        {
                            Interlocked.Exchange(ref _nowTicks, target.UtcTicks);
                        }
                        return;
                    }
                }
                if (due is not null)
                {
                    TimersFired++;
                    due.Fire(Digest);
                }
            }
        }
        finally
        {
            Volatile.Write(ref _advancing, 0);
        }
    }

    /// <summary>Jumps to the earliest armed deadline and fires what is due there; false when no timer is armed.</summary>
    public bool AdvanceToNextTimer()
    {
        if (NextDeadline is not { } next)
        {
            return false;
        }
        AdvanceTo(next);
        return true;
    }

    /// <summary>Drops cancelled entries from the top of the queue (a timer changed or disposed leaves its old entry behind).</summary>
    private void Prune()
    {
        while (_queue.TryPeek(out var timer, out var key) && !timer.IsArmedAs(key.Sequence))
        {
            _queue.Dequeue();
        }
    }

    private void Schedule(VirtualTimer timer, long deadline, out long sequence)
    {
        sequence = ++_sequence;
        _queue.Enqueue(timer, (deadline, sequence));
        _armed++;
        // When the queue doubled since the last compaction, or stale entries outnumber armed ones: a peak of armed timers
        // (a mesh's join) no longer sets the bar for the quieter rest of the run.
        if (_queue.Count >= _compactAt || (_queue.Count >= MinCompaction && _queue.Count > 2 * _armed))
        {
            Compact();
        }
    }

    /// <summary>
    /// Drops every stale entry (a timer changed or disposed before its deadline, such as a timeout that did not fire):
    /// <see cref="Prune"/> only meets them at the top, so a long deadline kept its timer, callback and state alive.
    /// Runs when the queue has doubled since the last compaction or holds more stale entries than armed ones, so it costs
    /// O(1) per timer amortised (each compaction follows at least as many entries made stale or added as it keeps). Order
    /// is kept: entries are keyed by deadline and sequence.
    /// </summary>
    private void Compact()
    {
        var armed = new List<(VirtualTimer, (long, long))>(_queue.Count / 2);
        foreach (var (timer, key) in _queue.UnorderedItems)
        {
            if (timer.IsArmedAs(key.Sequence))
            {
                armed.Add((timer, key));
            }
        }
        _queue.Clear();
        _queue.EnqueueRange(armed);
        _queue.TrimExcess();
        _compactAt = Math.Max(MinCompaction, armed.Count * 2);
    }

    /// <summary>Queue entries, stale ones included (for tests of <see cref="Compact"/>).</summary>
    internal int QueuedEntries
    {
        get
        {
            lock (_gate)
            {
                return _queue.Count;
            }
        }
    }

    private sealed class VirtualTimer(VirtualClock clock, TimerCallback callback, object? state, ExecutionContext? context) : ITimer
    {
        // Released on disposal: a disposed timer's entry may wait in the queue until its deadline or the next compaction.
        private TimerCallback? _callback = callback;
        private object? _state = state;
        private ExecutionContext? _context = context;
        private long _armedSequence; // 0: not armed
        private long _periodTicks;
        private bool _disposed;

        /// <summary>Under the clock's lock: the entry this timer is armed as (if any) becomes stale.</summary>
        private void Disarm()
        {
            if (_armedSequence != 0)
            {
                clock._armed--;
                _armedSequence = 0;
            }
        }

        public bool IsArmedAs(long sequence)
        {
            return !_disposed && _armedSequence == sequence;
        }

        /// <summary>Called under the clock's lock when this timer's entry is popped: re-arms a periodic timer; returns the timer to fire.</summary>
        public VirtualTimer? TakeDue(long sequence)
        {
            if (!IsArmedAs(sequence))
            {
                return null;
            }
            Disarm();
            if (_periodTicks > 0)
            {
                clock.Schedule(this, clock._nowTicks + _periodTicks, out _armedSequence);
            }
            return this;
        }

        public void Fire(EventDigest? digest)
        {
            TimerCallback? callback;
            object? state;
            ExecutionContext? context;
            lock (clock._gate)
            {
                (callback, state, context) = (_callback, _state, _context);
            }
            digest?.OnTimer(callback, state);
            if (callback is null)
            {
                return; // disposed after it fell due, before it fired
            }
            if (context is null)
            {
                callback(state);
            }
            else
            {
                ExecutionContext.Run(context, static s =>
                {
                    var (cb, st) = ((TimerCallback, object?))s!;
                    cb(st);
                }, (callback, state));
            }
        }

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            lock (clock._gate)
            {
                if (_disposed)
                {
                    return false;
                }
                Disarm();
                _periodTicks = period == Timeout.InfiniteTimeSpan || period <= TimeSpan.Zero ? 0 : period.Ticks;
                if (dueTime == Timeout.InfiniteTimeSpan)
                {
                    return true;
                }
                ArgumentOutOfRangeException.ThrowIfLessThan(dueTime, TimeSpan.Zero);
                clock.Schedule(this, clock._nowTicks + dueTime.Ticks, out _armedSequence);
                return true;
            }
        }

        public void Dispose()
        {
            lock (clock._gate)
            {
                if (!_disposed)
                {
                    Disarm();
                }
                _disposed = true;
                _callback = null;
                _state = null;
                _context = null;
            }
        }

        public ValueTask DisposeAsync()
        {
            Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
