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
    private readonly HashSet<Task> _running = [];
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
                return _running.Count;
            }
        }
    }

    /// <summary>Whether <see cref="StopAsync"/> has begun.</summary>
    public bool IsStopping => Volatile.Read(ref _stopped) != 0;

    /// <summary>Starts <paramref name="work"/> with the owner's stop token, fire-and-forget: its failure is logged, never lost.</summary>
    public void Run(string name, Func<CancellationToken, Task> work) => Start(name, work);

    /// <summary>Starts <paramref name="work"/>, which takes no token (it ends by itself, or when what it awaits is closed).</summary>
    public void Run(string name, Func<Task> work) => Start(name, _ => work());

    /// <summary>As <see cref="Run(string, Func{CancellationToken, Task})"/>, and returns the task (already observed: awaiting it is optional).</summary>
    public Task Start(string name, Func<CancellationToken, Task> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        if (IsStopping)
        {
            return Task.CompletedTask;
        }
        var token = _stopping.Token;
        var task = Task.Factory.StartNew(() => work(token), CancellationToken.None, TaskCreationOptions.DenyChildAttach, _scheduler).Unwrap();
        return Track(name, task);
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
        lock (_gate)
        {
            _running.Add(task);
        }
        task.ContinueWith((t, state) =>
        {
            lock (_gate)
            {
                _running.Remove(t);
            }
            Observe((string)state!, t);
        }, name, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, _scheduler);
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
            Task[] running;
            lock (_gate)
            {
                running = [.. _running];
            }
            if (running.Length == 0)
            {
                return;
            }
            try
            {
                await Task.WhenAll(running);
            }
            catch
            {
                // Each failure was observed and logged by Track.
            }
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

    [LoggerMessage(Level = LogLevel.Error, Message = "{Owner}: background work {Name} failed")]
    private partial void LogBug(string owner, string name, Exception e);

    [LoggerMessage(Level = LogLevel.Debug, Message = "{Owner}: background work {Name} ended: {Kind}: {Reason}")]
    private partial void LogEnded(string owner, string name, FailureKind kind, string reason);
}
