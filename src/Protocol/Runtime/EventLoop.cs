using System.IO.Pipelines;

namespace Potluck.Protocol.Runtime;

/// <summary>
/// A single-threaded event loop: a <see cref="SynchronizationContext"/>, a <see cref="System.Threading.Tasks.TaskScheduler"/> and a
/// <see cref="System.IO.Pipelines.PipeScheduler"/> that all queue onto one FIFO run by whoever calls <see cref="RunUntilIdle"/>. Code that
/// awaits without <c>ConfigureAwait(false)</c>, starts work through <see cref="BackgroundWork"/> and builds pipes with the
/// node's pipe scheduler never leaves it, so a run is repeatable and "idle" has a precise meaning: the queue is empty
/// and no work announced with <see cref="BeginExternalWork"/> (a sandbox run on its own thread) is outstanding.
/// </summary>
public sealed class EventLoop : SynchronizationContext
{
    private readonly Lock _gate = new();
    private readonly Queue<(SendOrPostCallback Callback, object? State)> _queue = new();
    private readonly SemaphoreSlim _signal = new(0);
    private readonly List<Exception> _faults = [];
    private int _external;
    private Thread? _runner;
    private Thread? _owner;
    private long _escapes;
    private string? _firstEscape;

    public EventLoop()
    {
        TaskScheduler = new LoopTaskScheduler(this);
        PipeScheduler = new LoopPipeScheduler(this);
    }

    /// <summary>Runs tasks on the loop (give it to <see cref="BackgroundWork"/> and <c>Task.Factory.StartNew</c>).</summary>
    public TaskScheduler TaskScheduler { get; }

    /// <summary>Runs pipe continuations on the loop.</summary>
    public PipeScheduler PipeScheduler { get; }

    /// <summary>Sees every item before it runs (a <see cref="VirtualTimeDriver"/>'s <see cref="EventDigest"/>); null by default.</summary>
    internal EventDigest? Digest { get; set; }

    /// <summary>Work items run so far.</summary>
    public long ItemsRun { get; private set; }

    /// <summary>Items waiting to run.</summary>
    public int Queued
    {
        get
        {
            lock (_gate)
            {
                return _queue.Count;
            }
        }
    }

    /// <summary>Work announced by <see cref="BeginExternalWork"/> that has not ended.</summary>
    public int ExternalWorkCount => Volatile.Read(ref _external);

    /// <summary>Whether the calling thread is the one running the loop now.</summary>
    public bool IsRunningOnThisThread => _runner == Thread.CurrentThread;

    /// <summary>
    /// Items posted from a thread other than the loop's while no external work was announced: something ran on the
    /// thread pool (a <c>ConfigureAwait(false)</c>, a <c>Task.Run</c>, a library's own continuation) and came back.
    /// A run with escapes is not repeatable and the driver may have moved the clock under it.
    /// </summary>
    public long Escapes => Interlocked.Read(ref _escapes);

    /// <summary>Where the first escape was posted from (a stack trace), for the failure message.</summary>
    public string? FirstEscape => _firstEscape;

    public override void Post(SendOrPostCallback d, object? state)
    {
        ArgumentNullException.ThrowIfNull(d);
        var owner = _owner;
        if (owner is not null && Thread.CurrentThread != owner && Volatile.Read(ref _external) == 0
            && Interlocked.Increment(ref _escapes) == 1)
        {
            _firstEscape = Environment.StackTrace;
        }
        lock (_gate)
        {
            _queue.Enqueue((d, state));
        }
        _signal.Release();
    }

    public override void Send(SendOrPostCallback d, object? state)
    {
        if (IsRunningOnThisThread)
        {
            d(state);
            return;
        }
        using var done = new ManualResetEventSlim();
        Exception? error = null;
        Post(_ =>
        {
            try
            {
                d(state);
            }
            catch (Exception e)
            {
                error = e;
            }
            finally
            {
                done.Set();
            }
        }, null);
        done.Wait();
        if (error is not null)
        {
            throw new AggregateException(error);
        }
    }

    public override SynchronizationContext CreateCopy() => this;

    /// <summary>
    /// Announces work running on another thread whose completion will post back to the loop (a sandbox run): the loop
    /// is not idle until the returned handle is disposed.
    /// </summary>
    public IDisposable BeginExternalWork()
    {
        Interlocked.Increment(ref _external);
        return new ExternalWorkHandle(this);
    }

    /// <summary>
    /// The task of work running on another thread (a sandbox run) as the loop should see it: completed by a loop item that
    /// <see cref="AdmitSettled"/> posts once nothing external is running any more, in the order the work was handed here,
    /// never by the work's own thread at whatever moment it finished. Without it a run that ends before its awaiter looks
    /// continues inline and one that ends after posts back mid-way through the other items of the same virtual instant:
    /// the same seed gave a few events more or fewer, in another order. The work must hold an external-work mark
    /// (<see cref="BeginExternalWork"/>) from before this call until its awaiter resumes, as the sandbox executor's does;
    /// call on the loop.
    /// </summary>
    public Task<T> Settle<T>(Task<T> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        var job = new SettledWork<T>(this, work);
        lock (_gate)
        {
            _settling.Add(job);
        }
        // Counts it done and wakes the driver, from whichever thread completes it (inline when it is complete already);
        // nothing is posted from there.
        work.ContinueWith(static (_, s) => ((SettledWorkBase)s!).OnDone(), job, CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        return job.Task;
    }

    private readonly List<SettledWorkBase> _settling = [];
    private int _settledDone;

    /// <summary>
    /// External work still under way: marks held (<see cref="BeginExternalWork"/>) beyond those of work handed to
    /// <see cref="Settle{T}"/> that has finished and waits to be admitted. Zero means every piece has finished or waits
    /// for the loop (a run parked on a payment lets its mark go), so what <see cref="AdmitSettled"/> admits is the same
    /// in every run.
    /// </summary>
    public int ExternalRunning
    {
        get
        {
            // Marks first: a piece that finishes between the two reads is counted done, not running.
            var marks = Volatile.Read(ref _external);
            return Math.Max(0, marks - Volatile.Read(ref _settledDone));
        }
    }

    /// <summary>
    /// Posts, in the order they were handed to <see cref="Settle{T}"/>, one item per piece of work that has finished,
    /// completing its task; returns how many. Call when the loop is idle and <see cref="ExternalRunning"/> is zero.
    /// </summary>
    public int AdmitSettled()
    {
        List<SettledWorkBase>? admitted = null;
        lock (_gate)
        {
            for (var i = 0; i < _settling.Count; i++)
            {
                if (_settling[i].IsDone)
                {
                    (admitted ??= []).Add(_settling[i]);
                }
            }
            if (admitted is null)
            {
                return 0;
            }
            _settling.RemoveAll(j => j.IsDone);
        }
        Interlocked.Add(ref _settledDone, -admitted.Count);
        foreach (var job in admitted)
        {
            Post(static s => ((SettledWorkBase)s!).Complete(), job);
        }
        return admitted.Count;
    }

    private abstract class SettledWorkBase(EventLoop loop)
    {
        private int _done;

        public bool IsDone => Volatile.Read(ref _done) != 0;

        public void OnDone()
        {
            if (Interlocked.Exchange(ref _done, 1) == 0)
            {
                Interlocked.Increment(ref loop._settledDone);
                loop._signal.Release();
            }
        }

        public abstract void Complete();
    }

    private sealed class SettledWork<T>(EventLoop loop, Task<T> work) : SettledWorkBase(loop)
    {
        // Completed on the loop, so its awaiter (on the loop) continues inline within this one item.
        private readonly TaskCompletionSource<T> _completion = new();

        public Task<T> Task => _completion.Task;

        public override void Complete()
        {
            if (work.IsCompletedSuccessfully)
            {
                _completion.TrySetResult(work.Result);
            }
            else if (work.IsCanceled)
            {
                try
                {
                    work.GetAwaiter().GetResult();
                }
                catch (OperationCanceledException e)
                {
                    _completion.TrySetCanceled(e.CancellationToken);
                }
            }
            else
            {
                _completion.TrySetException(work.Exception!.InnerExceptions);
            }
        }
    }

    /// <summary>
    /// Runs queued items on the calling thread, with this loop as its synchronization context, until the queue is empty
    /// (work posted meanwhile runs too). Returns the number of items run. Does not wait for external work.
    /// </summary>
    public int RunUntilIdle()
    {
        var previous = Current;
        var previousRunner = _runner;
        SetSynchronizationContext(this);
        _runner = Thread.CurrentThread;
        _owner ??= Thread.CurrentThread;
        var count = 0;
        try
        {
            while (true)
            {
                (SendOrPostCallback Callback, object? State) item;
                lock (_gate)
                {
                    if (!_queue.TryDequeue(out item))
                    {
                        return count;
                    }
                }
                _signal.Wait(0);
                count++;
                ItemsRun++;
                Digest?.OnItem(item.Callback, item.State);
                try
                {
                    item.Callback(item.State);
                }
                catch (Exception e)
                {
                    lock (_gate)
                    {
                        _faults.Add(e);
                    }
                }
            }
        }
        finally
        {
            _runner = previousRunner;
            SetSynchronizationContext(previous);
        }
    }

    /// <summary>
    /// Runs <paramref name="callback"/> now, on the calling thread, as the loop runs an item (this loop as the synchronization
    /// context and the calling thread as its runner; an exception is kept as a fault, as an item's is) but without queuing it:
    /// it is not an item of its own (not counted in <see cref="ItemsRun"/>, not seen by the digest). For work that belongs to
    /// an event already running or about to run: the driver's clock jump (the timers it fires are the events), and a
    /// simulated link handing its due bytes straight to a reader that waits for them (within the link timer's event).
    /// Called from inside an item it runs nested, at once.
    /// </summary>
    internal void RunInline(Action<object?> callback, object? state)
    {
        if (IsRunningOnThisThread)
        {
            Invoke(callback, state);
            return;
        }
        var previous = Current;
        var previousRunner = _runner;
        SetSynchronizationContext(this);
        _runner = Thread.CurrentThread;
        _owner ??= Thread.CurrentThread;
        try
        {
            Invoke(callback, state);
        }
        finally
        {
            _runner = previousRunner;
            SetSynchronizationContext(previous);
        }

        void Invoke(Action<object?> run, object? s)
        {
            try
            {
                run(s);
            }
            catch (Exception e)
            {
                lock (_gate)
                {
                    _faults.Add(e);
                }
            }
        }
    }

    /// <summary>The loop whose <see cref="PipeScheduler"/> <paramref name="scheduler"/> is; null for any other scheduler.</summary>
    internal static EventLoop? Of(PipeScheduler? scheduler) => (scheduler as LoopPipeScheduler)?.Loop;

    /// <summary>Blocks until an item is posted or external work ends, or <paramref name="timeout"/> passes (wall clock); true if woken.</summary>
    public bool WaitForWork(TimeSpan timeout) => _signal.Wait(timeout);

    /// <summary>Exceptions thrown by items (an <c>async void</c> method or a timer callback that threw); taken once.</summary>
    public IReadOnlyList<Exception> TakeFaults()
    {
        lock (_gate)
        {
            var faults = _faults.ToArray();
            _faults.Clear();
            return faults;
        }
    }

    private sealed class ExternalWorkHandle(EventLoop loop) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                Interlocked.Decrement(ref loop._external);
                loop._signal.Release();
            }
        }
    }

    private sealed class LoopTaskScheduler(EventLoop loop) : TaskScheduler
    {
        private readonly Lock _gate = new();
        private readonly HashSet<Task> _queued = [];

        public override int MaximumConcurrencyLevel => 1;

        protected override void QueueTask(Task task)
        {
            lock (_gate)
            {
                _queued.Add(task);
            }
            loop.Post(static state =>
            {
                var (scheduler, t) = ((LoopTaskScheduler, Task))state!;
                lock (scheduler._gate)
                {
                    scheduler._queued.Remove(t);
                }
                scheduler.TryExecuteTask(t);
            }, (this, task));
        }

        protected override bool TryExecuteTaskInline(Task task, bool taskWasPreviouslyQueued) =>
            loop.IsRunningOnThisThread && !taskWasPreviouslyQueued && TryExecuteTask(task);

        protected override IEnumerable<Task> GetScheduledTasks()
        {
            lock (_gate)
            {
                return [.. _queued];
            }
        }
    }

    private sealed class LoopPipeScheduler(EventLoop loop) : PipeScheduler
    {
        public EventLoop Loop => loop;

        public override void Schedule(Action<object?> action, object? state) =>
            loop.Post(static s =>
            {
                var (a, st) = ((Action<object?>, object?))s!;
                a(st);
            }, (action, state));
    }
}
