using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Adversaries;

/// <summary>
/// An adversarial provider (simulations and attack tests): accepts tasks, keeps the lease alive with heartbeats, and
/// never answers, so that a requester waits until the lease's deadline for nothing.
/// </summary>
public sealed class StallingExecutor : ITaskExecutor
{
    private int _stalled;

    /// <summary>Tasks taken and never answered.</summary>
    public int Stalled => Volatile.Read(ref _stalled);

    public async ValueTask<ExecutionReport> ExecuteAsync(LeaseExecution execution, CancellationToken ct)
    {
        Interlocked.Increment(ref _stalled);
        await Task.Delay(Timeout.Infinite, ct);
        throw new OperationCanceledException(ct);
    }
}
