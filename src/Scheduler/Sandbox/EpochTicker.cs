namespace Potluck.Scheduler.Sandbox;

/// <summary>
/// Advances a Wasmtime engine's epoch every tick while at least one run is in flight, and not at all
/// otherwise: an idle sandbox arms no timer, so an idle node wakes no thread for it. Runs check their
/// wall-clock deadline and cancellation when the epoch advances, so each run holds a
/// <see cref="Enter"/> scope from before its guest code starts until it has returned.
/// </summary>
internal sealed class EpochTicker : IDisposable
{
    private readonly TimeSpan _tick;
    private readonly Action _advance;
    private readonly ITimer _timer;
    private readonly object _gate = new();
    private int _running;
    private bool _disposed;
    private long _ticks;

    /// <param name="time">The clock the timer runs on.</param>
    /// <param name="tick">The period while armed.</param>
    /// <param name="advance">Advances the epoch (called on a timer thread).</param>
    public EpochTicker(TimeProvider time, TimeSpan tick, Action advance)
    {
        _tick = tick;
        _advance = advance;
        _timer = time.CreateTimer(static s => ((EpochTicker)s!).OnTick(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>Raised with true when the timer is armed (first run in) and false when it is disarmed
    /// (last run out), under the ticker's lock; for tests that wait on it without a clock.</summary>
    internal event Action<bool>? ArmedChanged;

    /// <summary>Whether the timer is armed now.</summary>
    public bool IsArmed
    {
        get
        {
            lock (_gate) return _running > 0 && !_disposed;
        }
    }

    /// <summary>How many times the epoch has been advanced.</summary>
    public long Ticks => Interlocked.Read(ref _ticks);

    /// <summary>Marks a run in flight until the returned scope is disposed; arms the timer for the first.</summary>
    public Scope Enter()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_running++ == 0)
            {
                _timer.Change(_tick, _tick);
                ArmedChanged?.Invoke(true);
            }
        }
        return new Scope(this);
    }

    private void Exit()
    {
        lock (_gate)
        {
            if (--_running == 0 && !_disposed)
            {
                _timer.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                ArmedChanged?.Invoke(false);
            }
        }
    }

    private void OnTick()
    {
        if (Volatile.Read(ref _disposed)) return;
        // The epoch first, then the count: a run's deadline callback that sees the count unchanged across its check knows
        // no epoch it has not seen was added meanwhile (see WasmSandbox's callback).
        _advance();
        Interlocked.Increment(ref _ticks);
    }

    /// <summary>Stops the timer for good.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
        }
        _timer.Dispose();
    }

    /// <summary>One run in flight; disposing it ends the run's claim on the ticker.</summary>
    public readonly struct Scope : IDisposable
    {
        private readonly EpochTicker _owner;

        internal Scope(EpochTicker owner) => _owner = owner;

        public void Dispose() => _owner.Exit();
    }
}
