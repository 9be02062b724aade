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
        public override void Schedule(Action<object?> action, object? state) =>
            loop.Post(static s =>
            {
                var (a, st) = ((Action<object?>, object?))s!;
                a(st);
            }, (action, state));
    }
}
