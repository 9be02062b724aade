namespace Potluck.Scheduler.Requesting;

/// <summary>
/// <see cref="Task.WaitAsync(CancellationToken)"/> that resumes on the caller's synchronisation context. The framework's
/// version completes its promise on the thread pool when the awaited task runs its continuations asynchronously, which
/// leaves a virtual-time event loop; here the awaited task is awaited on the caller's context instead.
/// </summary>
internal static class ContextWait
{
    public static async Task<T> WaitAsync<T>(Task<T> task, CancellationToken ct)
    {
        if (task.IsCompleted || !ct.CanBeCanceled)
        {
            return await task;
        }
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        _ = ForwardAsync(task, done);
        await using var registration = ct.Register(() => done.TrySetCanceled(ct));
        return await done.Task;
    }

    public static Task WaitAsync(Task task, CancellationToken ct) => WaitAsync(Unit(task), ct);

    /// <summary>Waits at most <paramref name="timeout"/> on <paramref name="time"/>; <see cref="TimeoutException"/> after it.</summary>
    public static async Task WaitAsync(Task task, TimeSpan timeout, TimeProvider time, CancellationToken ct)
    {
        if (task.IsCompleted)
        {
            await task;
            return;
        }
        var done = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        _ = ForwardAsync(Unit(task), done);
        await using var registration = ct.Register(() => done.TrySetCanceled(ct));
        await using var timer = time.CreateTimer(_ => done.TrySetException(new TimeoutException()), null, timeout, Timeout.InfiniteTimeSpan);
        await done.Task;
    }

    private static async Task<bool> Unit(Task task)
    {
        await task;
        return true;
    }

    private static async Task ForwardAsync<T>(Task<T> task, TaskCompletionSource<T> done)
    {
        try
        {
            done.TrySetResult(await task);
        }
        catch (OperationCanceledException e)
        {
            done.TrySetCanceled(e.CancellationToken);
        }
        catch (Exception e)
        {
            done.TrySetException(e);
        }
    }
}
