namespace Potluck.Scheduler.Sandbox;

/// <summary>
/// Dedicated threads with a large native stack for sandboxed runs, kept for the next run instead of
/// started per run (starting a thread with a 16 MiB stack cost about half a millisecond, more than
/// a small task's whole run). Work is never queued: a run takes an idle thread or starts a new one,
/// so concurrency is unbounded as with a thread per run. At most <c>maxIdle</c> threads wait for
/// work; the others end after their run. The caller's execution context flows to the run.
/// </summary>
internal sealed class RunnerThreads : IDisposable
{
    private readonly int _stackBytes;
    private readonly int _maxIdle;
    private readonly string _name;
    private readonly object _gate = new();
    private readonly Stack<Runner> _idle = new();
    private bool _disposed;

    public RunnerThreads(int stackBytes, int maxIdle, string name)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxIdle);
        _stackBytes = stackBytes;
        _maxIdle = maxIdle;
        _name = name;
    }

    /// <summary>Threads started so far (for tests and diagnostics).</summary>
    public int Started { get; private set; }

    /// <summary>Threads now waiting for work.</summary>
    public int Idle
    {
        get
        {
            lock (_gate) return _idle.Count;
        }
    }

    /// <summary>
    /// Blocks (no spinning) until exactly <paramref name="count"/> threads wait for work, or <paramref name="timeout"/>
    /// passes; true when they do. For tests: a run's thread parks only after its work item has returned.
    /// </summary>
    internal bool WaitUntilIdle(int count, TimeSpan timeout)
    {
        var deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        lock (_gate)
        {
            while (_idle.Count != count)
            {
                var left = deadline - Environment.TickCount64;
                if (left <= 0 || !Monitor.Wait(_gate, TimeSpan.FromMilliseconds(left)))
                {
                    return _idle.Count == count;
                }
            }
            return true;
        }
    }

    /// <summary>Runs <paramref name="work"/> on a runner thread. <paramref name="work"/> must not throw.</summary>
    public void Run(Action work)
    {
        ArgumentNullException.ThrowIfNull(work);
        var context = ExecutionContext.Capture();
        Action item = context is null ? work : () => ExecutionContext.Run(context, static w => ((Action)w!)(), work);
        Runner? runner;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_idle.TryPop(out runner))
            {
                Started++;
            }
        }
        if (runner is not null)
        {
            runner.Give(item);
            return;
        }
        runner = new Runner(this);
        runner.Give(item);
        new Thread(runner.Loop, _stackBytes) { IsBackground = true, Name = _name }.Start();
    }

    /// <summary>True when the runner should wait for more work; false when it should end.</summary>
    private bool TryPark(Runner runner)
    {
        lock (_gate)
        {
            if (_disposed || _idle.Count >= _maxIdle) return false;
            _idle.Push(runner);
            Monitor.PulseAll(_gate);
            return true;
        }
    }

    /// <summary>Ends the idle threads; busy ones end after their run.</summary>
    public void Dispose()
    {
        Runner[] idle;
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            idle = [.. _idle];
            _idle.Clear();
        }
        foreach (var runner in idle) runner.Give(null);
    }

    private sealed class Runner(RunnerThreads owner)
    {
        private readonly object _gate = new();
        private Action? _work;
        private bool _given;

        /// <summary>Hands the runner its next work item; null ends it.</summary>
        public void Give(Action? work)
        {
            lock (_gate)
            {
                _work = work;
                _given = true;
                Monitor.Pulse(_gate);
            }
        }

        public void Loop()
        {
            while (true)
            {
                Action? work;
                lock (_gate)
                {
                    // A blocking wait, no spinning: cores are shared with the runs themselves.
                    while (!_given) Monitor.Wait(_gate);
                    _given = false;
                    work = _work;
                    _work = null;
                }
                if (work is null) return;
                work();
                if (!owner.TryPark(this)) return;
            }
        }
    }
}
