using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Execution;

/// <summary>
/// Test only: a provider that lies. Runs the task honestly, then for a fraction of tasks (drawn from a seeded
/// <see cref="Random"/>) flips the output's first byte (or invents one) while keeping the fuel, so the provider signs
/// an attestation of a wrong output.
/// </summary>
internal sealed class CheatingTaskExecutor : ITaskExecutor
{
    private readonly ITaskExecutor _inner;
    private readonly double _fraction;
    private readonly Random _random;
    private int _corrupted;

    public CheatingTaskExecutor(ITaskExecutor inner, double fraction, Random random)
    {
        _inner = inner;
        _fraction = fraction;
        _random = random;
    }

    /// <summary>How many outputs were corrupted so far.</summary>
    public int Corrupted => Volatile.Read(ref _corrupted);

    public async ValueTask<ExecutionReport> ExecuteAsync(LeaseExecution execution, CancellationToken ct)
    {
        var report = await _inner.ExecuteAsync(execution, ct);
        bool cheat;
        lock (_random)
        {
            cheat = _random.NextDouble() < _fraction;
        }
        if (!cheat || report.Status != ExecutionStatus.Success)
        {
            return report;
        }
        Interlocked.Increment(ref _corrupted);
        var output = report.Output.Length == 0 ? new byte[] { (byte)'?' } : report.Output.ToArray();
        output[0] ^= 0x01;
        return report with { Output = output };
    }
}
