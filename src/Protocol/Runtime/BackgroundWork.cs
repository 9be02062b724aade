using System.Runtime.CompilerServices;
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
    public void Run(string name, Func<CancellationToken, Task> work) => Start(name, work);

    /// <summary>Starts <paramref name="work"/>, which takes no token (it ends by itself, or when what it awaits is closed).</summary>
    public void Run(string name, Func<Task> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        Start(name, static (_, w) => ((Func<Task>)w!)(), work);
    }

    /// <summary>
    /// As <see cref="Run(string, Func{CancellationToken, Task})"/>, and returns a task that completes once the work has
    /// ended and its failure (if any) has been logged: it never faults, so awaiting it is optional.
    /// </summary>
    public Task Start(string name, Func<CancellationToken, Task> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        return Start(name, static (token, w) => ((Func<CancellationToken, Task>)w!)(token), work);
    }

    /// <summary>
    /// One piece of work is one state machine (<see cref="PieceAsync"/>): it moves onto the scheduler, runs the work
    /// there, awaits it without throwing, logs its failure and leaves the count. No task is started to start it, none
    /// unwraps it and none continues it.
    /// </summary>
    private Task Start(string name, Func<CancellationToken, object?, Task> work, object? state)
    {
        if (IsStopping)
        {
            return Task.CompletedTask;
        }
        Enter();
        return PieceAsync(name, work, state, _stopping.Token);
    }

    private async Task PieceAsync(string name, Func<CancellationToken, object?, Task> work, object? state, CancellationToken token)
    {
        await new StartOn(_scheduler);
        Task task;
        try
        {
            task = work(token, state) ?? Task.CompletedTask;
        }
        catch (Exception e)
        {
            task = Task.FromException(e); // thrown before its first await: the same failure as a faulted task
        }
        // On the captured context: inline when the work completes on the owner's loop (as an unwrapped task's
        // continuation ran), posted back to it when the work completes elsewhere; inline on the thread pool.
        await task.ConfigureAwait(ConfigureAwaitOptions.ContinueOnCapturedContext | ConfigureAwaitOptions.SuppressThrowing);
        Observe(name, task);
        Leave();
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
        _ = WatchAsync(name, task);
        return task;
    }

    private async Task WatchAsync(string name, Task task)
    {
        await task.ConfigureAwait(ConfigureAwaitOptions.ContinueOnCapturedContext | ConfigureAwaitOptions.SuppressThrowing);
        Observe(name, task);
        Leave();
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
        // Asynchronously: whoever waits for idle resumes after this piece's own task has completed, not inside it.
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
                idle = (_idle ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
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
    /// Moves an async method onto <paramref name="scheduler"/>: the thread pool takes the method's own continuation
    /// (no task); any other scheduler (the simulation's event loop) runs it as a task, so the work's synchronous part
    /// sees that scheduler as <see cref="TaskScheduler.Current"/> exactly as a task started there did. Always yields,
    /// so the caller's code runs on before the work does.
    /// </summary>
    private readonly struct StartOn(TaskScheduler scheduler) : ICriticalNotifyCompletion
    {
        public StartOn GetAwaiter() => this;

        public bool IsCompleted => false;

        public void GetResult()
        {
        }

        public void OnCompleted(Action continuation) => Queue(continuation, flowContext: true);

        public void UnsafeOnCompleted(Action continuation) => Queue(continuation, flowContext: false);

        private void Queue(Action continuation, bool flowContext)
        {
            if (scheduler == TaskScheduler.Default)
            {
                if (flowContext)
                {
                    ThreadPool.QueueUserWorkItem(static c => c(), continuation, preferLocal: false);
                }
                else
                {
                    ThreadPool.UnsafeQueueUserWorkItem(static c => c(), continuation, preferLocal: false);
                }
                return;
            }
            Task.Factory.StartNew(continuation, CancellationToken.None, TaskCreationOptions.DenyChildAttach, scheduler);
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "{Owner}: background work {Name} failed")]
    private partial void LogBug(string owner, string name, Exception e);

    [LoggerMessage(Level = LogLevel.Debug, Message = "{Owner}: background work {Name} ended: {Kind}: {Reason}")]
    private partial void LogEnded(string owner, string name, FailureKind kind, string reason);
}
