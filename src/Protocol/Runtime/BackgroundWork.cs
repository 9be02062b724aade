using Microsoft.Extensions.Logging;

namespace Potluck.Protocol.Runtime;

/// <summary>
/// The owner of one component's background work (accept loops, per-stream handlers, timers' follow-ups, fire-and-forget
/// sends): each piece is started on the node's <see cref="TaskScheduler"/> (the thread pool in a real node, the
/// simulation's event loop under virtual time), kept until it ends, and its failure classified and logged once
/// (cancellation quiet, a remote's fault at Debug, our bug at Error). <see cref="StopAsync"/> cancels
/// <see cref="Stopping"/> and waits for everything still running. Nothing is left as a bare <c>_ = SomethingAsync()</c>.
/// </summary>
public sealed partial class BackgroundWork : IAsyncDisposable
{
    private readonly string _owner;
    private readonly ILogger _log;
    private readonly TaskScheduler _scheduler;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _gate = new();
    private int _running;
    private TaskCompletionSource? _idle;
    private int _stopped;

    /// <param name="owner">The component, for log lines (e.g. "host", "gossipsub").</param>
    /// <param name="log">Where failures are logged.</param>
    /// <param name="scheduler">Where work starts; <see cref="TaskScheduler.Default"/> when null.</param>
    public BackgroundWork(string owner, ILogger log, TaskScheduler? scheduler = null)
    {
        _owner = owner;
        _log = log;
        _scheduler = scheduler ?? TaskScheduler.Default;
    }

    /// <summary>Cancelled when the owner stops.</summary>
    public CancellationToken Stopping => _stopping.Token;

    /// <summary>Pieces of work still running.</summary>
    public int Running
    {
        get
        {
            lock (_gate)
            {
                return _running;
            }
        }
    }

    /// <summary>Whether <see cref="StopAsync"/> has begun.</summary>
    public bool IsStopping => Volatile.Read(ref _stopped) != 0;

    /// <summary>Starts <paramref name="work"/> with the owner's stop token, fire-and-forget: its failure is logged, never lost.</summary>
    public void Run(string name, Func<CancellationToken, Task> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        Begin(name, static (token, w) => ((Func<CancellationToken, Task>)w!)(token), work, done: null);
    }

    /// <summary>Starts <paramref name="work"/>, which takes no token (it ends by itself, or when what it awaits is closed).</summary>
    public void Run(string name, Func<Task> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        Begin(name, static (_, w) => ((Func<Task>)w!)(), work, done: null);
    }

    /// <summary>
    /// As <see cref="Run(string, Func{CancellationToken, Task})"/>, and returns a task that ends as the work did, once its
    /// failure (if any) has been logged (already observed: awaiting it is optional).
    /// </summary>
    public Task Start(string name, Func<CancellationToken, Task> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        var done = new TaskCompletionSource();
        return Begin(name, static (token, w) => ((Func<CancellationToken, Task>)w!)(token), work, done) ? done.Task : Task.CompletedTask;
    }

    private bool Begin(string name, Func<CancellationToken, object?, Task> work, object? state, TaskCompletionSource? done)
    {
        if (IsStopping)
        {
            return false;
        }
        Enter();
        new Piece(this, name, work, state, done).Queue(_scheduler);
        return true;
    }

    /// <summary>Keeps an already started task until it ends, and logs its failure; returns it.</summary>
    public Task Track(string name, Task task)
    {
        ArgumentNullException.ThrowIfNull(task);
        if (task.IsCompleted)
        {
            Observe(name, task);
            return task;
        }
        Enter();
        new Piece(this, name, null, null, null).Watch(task);
        return task;
    }

    /// <summary>Keeps a <see cref="ValueTask"/> until it ends (see <see cref="Track(string, Task)"/>).</summary>
    public void Track(string name, ValueTask task)
    {
        if (task.IsCompletedSuccessfully)
        {
            return;
        }
        Track(name, task.AsTask());
    }

    /// <summary>
    /// Counts one piece of work that waits as a bare continuation rather than a task of its own (a long-lived stream
    /// handler's tail), so <see cref="Running"/> and <see cref="StopAsync"/> see it, until <see cref="Release"/>.
    /// </summary>
    public void Hold() => Enter();

    /// <summary>Ends what <see cref="Hold"/> counted.</summary>
    public void Release() => Leave();

    private void Enter()
    {
        lock (_gate)
        {
            _running++;
        }
    }

    private void Leave()
    {
        TaskCompletionSource? idle = null;
        lock (_gate)
        {
            if (--_running == 0)
            {
                idle = _idle;
                _idle = null;
            }
        }
        // Outside the lock; whoever waits for idle resumes here, as it did when the last task it waited for completed.
        idle?.TrySetResult();
    }

    private void Observe(string name, Task task)
    {
        if (task.IsCanceled || task.Exception is not { } error)
        {
            return;
        }
        var failure = Failures.Classify(error, _stopping.Token);
        switch (failure.Kind)
        {
            case FailureKind.Cancelled:
                break;
            case FailureKind.Internal:
                LogBug(_owner, name, error.InnerExceptions.Count == 1 ? error.InnerExceptions[0] : error);
                break;
            default:
                LogEnded(_owner, name, failure.Kind, failure.Reason);
                break;
        }
    }

    /// <summary>Completes when no work is running (work started meanwhile is waited for too); cancels nothing.</summary>
    public async Task WhenIdleAsync()
    {
        while (true)
        {
            Task idle;
            lock (_gate)
            {
                if (_running == 0)
                {
                    return;
                }
                idle = (_idle ??= new TaskCompletionSource()).Task;
            }
            await idle;
        }
    }

    /// <summary>Cancels <see cref="Stopping"/> and waits for every piece of work still running (their failures are logged, not thrown).</summary>
    public async Task StopAsync()
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 0)
        {
            // Cancel, not CancelAsync: the callbacks run here, on the owner's scheduler, not on the thread pool.
            _stopping.Cancel();
        }
        await WhenIdleAsync();
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _stopping.Dispose();
    }

    /// <summary>
    /// One piece of background work, as one small object: queued on the owner's scheduler (a work item on the thread
    /// pool, a task on the simulation's loop, so the work's synchronous part sees that scheduler as
    /// <see cref="TaskScheduler.Current"/>), it calls the work, drops the delegate, and registers one continuation on the
    /// work's task that logs its failure and leaves the owner's count. No task is started to start it, none unwraps it
    /// and none continues it (StartNew + Unwrap + ContinueWith held ~290 B per parked piece; this ~180 B in the simulation).
    /// The continuation runs where the work completes when that is the context it was registered on (inline, as an
    /// unwrapped task's continuation ran), else it is posted back to that context.
    /// </summary>
    private sealed class Piece(BackgroundWork owner, string name, Func<CancellationToken, object?, Task>? work, object? state, TaskCompletionSource? done)
    {
        private Func<CancellationToken, object?, Task>? _work = work;
        private object? _state = state;
        private Task? _task;

        public void Queue(TaskScheduler scheduler)
        {
            if (scheduler == TaskScheduler.Default)
            {
                ThreadPool.QueueUserWorkItem(static p => p.Run(), this, preferLocal: false); // flows the execution context (log scopes)
                return;
            }
            Task.Factory.StartNew(static p => ((Piece)p!).Run(), this, CancellationToken.None, TaskCreationOptions.DenyChildAttach, scheduler);
        }

        private void Run()
        {
            var work = _work!;
            var state = _state;
            _work = null; // nothing but the running work holds what it captured
            _state = null;
            Task task;
            try
            {
                task = work(owner._stopping.Token, state) ?? Task.CompletedTask;
            }
            catch (Exception e)
            {
                task = Task.FromException(e); // thrown before its first await: the same failure as a faulted task
            }
            Watch(task);
        }

        public void Watch(Task task)
        {
            if (task.IsCompleted)
            {
                End(task);
                return;
            }
            _task = task;
            task.ConfigureAwait(ConfigureAwaitOptions.ContinueOnCapturedContext | ConfigureAwaitOptions.SuppressThrowing)
                .GetAwaiter().OnCompleted(End);
        }

        private void End()
        {
            var task = _task!;
            _task = null;
            End(task);
        }

        private void End(Task task)
        {
            owner.Observe(name, task);
            if (done is not null)
            {
                // Start's task ends as the work did (an awaiter sees its failure), already observed.
                if (task.IsFaulted)
                {
                    done.TrySetException(task.Exception!.InnerExceptions);
                    _ = done.Task.Exception;
                }
                else if (task.IsCanceled)
                {
                    done.TrySetCanceled();
                }
                else
                {
                    done.TrySetResult();
                }
            }
            owner.Leave();
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "{Owner}: background work {Name} failed")]
    private partial void LogBug(string owner, string name, Exception e);

    [LoggerMessage(Level = LogLevel.Debug, Message = "{Owner}: background work {Name} ended: {Kind}: {Reason}")]
    private partial void LogEnded(string owner, string name, FailureKind kind, string reason);
}
