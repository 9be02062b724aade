using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Adversaries;

/// <summary>
/// An adversarial provider (simulations and attack tests): runs the task honestly and claims <see cref="Extra"/> more fuel
/// than it used (never more than the limit), so it is paid for work it did not do.
/// </summary>
public sealed class InflatedFuelExecutor(ITaskExecutor inner, long extra) : ITaskExecutor
{
    public long Extra { get; } = extra;

    public async ValueTask<ExecutionReport> ExecuteAsync(LeaseExecution execution, CancellationToken ct)
    {
        var report = await inner.ExecuteAsync(execution, ct);
        return report with { FuelUsed = Math.Min(execution.Terms.FuelLimit, report.FuelUsed + Extra) };
    }
}
