using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Adversaries;

/// <summary>
/// An adversarial provider (simulations and attack tests): answers every task at once with <see cref="Claimed"/>
/// (a wall-clock timeout or a trap) and claims the whole fuel limit, without running anything. Against a requester that
/// pays such outcomes unchecked it earns the most a lease can pay for no work.
/// </summary>
public sealed class FakeOutcomeExecutor(ExecutionStatus claimed) : ITaskExecutor
{
    private int _answered;

    /// <summary>The outcome it claims: <see cref="ExecutionStatus.TimedOut"/> or <see cref="ExecutionStatus.Trapped"/> make sense.</summary>
    public ExecutionStatus Claimed { get; } = claimed;

    /// <summary>Tasks answered without running them.</summary>
    public int Answered => Volatile.Read(ref _answered);

    public ValueTask<ExecutionReport> ExecuteAsync(LeaseExecution execution, CancellationToken ct)
    {
        Interlocked.Increment(ref _answered);
        return ValueTask.FromResult(new ExecutionReport(Claimed, execution.Terms.FuelLimit, 0, ReadOnlyMemory<byte>.Empty));
    }
}
