namespace Potluck.Scheduler.Requesting;

/// <summary>
/// A one-holder async lock whose waiters resume on their own context. <see cref="SemaphoreSlim.WaitAsync(CancellationToken)"/>
/// with a cancellable token completes its waiters through the thread pool, which leaves a virtual-time event loop and
/// makes a run unrepeatable; this gate completes a waiter's task directly, so its continuation is posted to the
/// waiter's own synchronisation context.
/// </summary>
internal sealed class AsyncGate
{
    private readonly Queue<TaskCompletionSource> _waiters = new();
    private bool _held;

    /// <summary>Takes the gate, waiting for the holder to release it; cancelled waits end with <see cref="OperationCanceledException"/>.</summary>
    public Task WaitAsync(CancellationToken ct)
    {
        TaskCompletionSource waiter;
        lock (_waiters)
        {
            ct.ThrowIfCancellationRequested();
            if (!_held)
            {
                _held = true;
                return Task.CompletedTask;
            }
            waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Enqueue(waiter);
        }
        if (ct.CanBeCanceled)
        {
            var registration = ct.Register(() => waiter.TrySetCanceled(ct));
            _ = waiter.Task.ContinueWith(_ => registration.Dispose(), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Current);
        }
        return waiter.Task;
    }

    /// <summary>Hands the gate to the next waiter still waiting, or frees it.</summary>
    public void Release()
    {
        lock (_waiters)
        {
            while (_waiters.TryDequeue(out var next))
            {
                if (next.TrySetResult())
                {
                    return;
                }
            }
            _held = false;
        }
    }
}
