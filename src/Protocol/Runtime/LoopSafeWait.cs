namespace Potluck.Protocol.Runtime;

/// <summary>
/// <see cref="Task.WaitAsync(CancellationToken)"/> that keeps its continuation on the caller's synchronization context.
/// The framework's <c>WaitAsync</c> registers a completion action on the task; when that task was made with
/// <see cref="TaskCreationOptions.RunContinuationsAsynchronously"/> the action is queued to the thread pool, and the
/// caller then resumes from there: under a <see cref="VirtualTimeDriver"/> that is an escape (the run stops being
/// repeatable). Here the task is awaited as any <c>await</c> is (posted to the captured context), and the timeout runs
/// on the given <see cref="TimeProvider"/>.
/// </summary>
public static class LoopSafeWait
{
    /// <summary>Completes as <paramref name="task"/> does, or cancelled when <paramref name="ct"/> is.</summary>
    public static Task WaitAsync(Task task, CancellationToken ct) => WaitAsync(task, Timeout.InfiniteTimeSpan, TimeProvider.System, ct);

    /// <summary>Completes as <paramref name="task"/> does, with a <see cref="TimeoutException"/> after <paramref name="timeout"/>, or cancelled.</summary>
    public static async Task WaitAsync(Task task, TimeSpan timeout, TimeProvider time, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(task);
        await WaitAsync(Wrap(task), timeout, time, ct);
    }

    /// <summary>Completes as <paramref name="task"/> does, or cancelled when <paramref name="ct"/> is.</summary>
    public static Task<T> WaitAsync<T>(Task<T> task, CancellationToken ct) => WaitAsync(task, Timeout.InfiniteTimeSpan, TimeProvider.System, ct);

    /// <summary>Completes as <paramref name="task"/> does, with a <see cref="TimeoutException"/> after <paramref name="timeout"/>, or cancelled.</summary>
    public static async Task<T> WaitAsync<T>(Task<T> task, TimeSpan timeout, TimeProvider time, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(task);
        ArgumentNullException.ThrowIfNull(time);
        if (task.IsCompleted || (!ct.CanBeCanceled && timeout == Timeout.InfiniteTimeSpan))
        {
            return await task;
        }
        ct.ThrowIfCancellationRequested();
        // Completed on whichever thread ends the wait first; the caller's await below posts back to its own context.
        var gate = new TaskCompletionSource<T>();
        using var registration = ct.Register(static s => ((TaskCompletionSource<T>)s!).TrySetCanceled(), gate);
        using var timer = timeout == Timeout.InfiniteTimeSpan
            ? null
            : time.CreateTimer(static s => ((TaskCompletionSource<T>)s!).TrySetException(new TimeoutException()), gate, timeout, Timeout.InfiniteTimeSpan);
        var awaiter = task.ConfigureAwait(true).GetAwaiter();
        awaiter.UnsafeOnCompleted(() =>
        {
            try
            {
                gate.TrySetResult(awaiter.GetResult());
            }
            catch (OperationCanceledException e)
            {
                gate.TrySetCanceled(e.CancellationToken);
            }
            catch (Exception e)
            {
                gate.TrySetException(e);
            }
        });
        return await gate.Task;
    }

    /// <summary>
    /// <see cref="SemaphoreSlim.WaitAsync(CancellationToken)"/> without its thread-pool hop: a cancellable wait on a
    /// semaphore completes through the framework's <c>WaitAsync</c> and resumes on the thread pool. Here the semaphore is
    /// waited for without a token, and a wait given up on cancellation hands its slot straight back when it comes.
    /// </summary>
    public static async Task EnterAsync(SemaphoreSlim gate, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(gate);
        ct.ThrowIfCancellationRequested();
        if (gate.Wait(0))
        {
            return;
        }
        var entering = gate.WaitAsync();
        try
        {
            await WaitAsync(entering, ct);
        }
        catch (OperationCanceledException)
        {
            var awaiter = entering.ConfigureAwait(true).GetAwaiter();
            awaiter.UnsafeOnCompleted(() => gate.Release());
            throw;
        }
    }

    private static async Task<bool> Wrap(Task task)
    {
        await task;
        return true;
    }
}
