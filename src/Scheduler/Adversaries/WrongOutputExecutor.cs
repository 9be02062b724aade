using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Adversaries;

/// <summary>
/// An adversarial provider (simulations and attack tests): runs the task honestly, then for each task <see cref="Cheat"/>
/// picks, flips the output's first byte (or invents one) and keeps the fuel, so it signs an attestation of a wrong output.
/// </summary>
public sealed class WrongOutputExecutor(ITaskExecutor inner, Func<LeaseExecution, bool> cheat) : ITaskExecutor
{
    private int _corrupted;

    /// <summary>Every task.</summary>
    public WrongOutputExecutor(ITaskExecutor inner) : this(inner, _ => true)
    {
    }

    public Func<LeaseExecution, bool> Cheat { get; } = cheat;

    /// <summary>Outputs corrupted so far.</summary>
    public int Corrupted => Volatile.Read(ref _corrupted);

    public async ValueTask<ExecutionReport> ExecuteAsync(LeaseExecution execution, CancellationToken ct)
    {
        var report = await inner.ExecuteAsync(execution, ct);
        if (report.Status != ExecutionStatus.Success || !Cheat(execution))
        {
            return report;
        }
        Interlocked.Increment(ref _corrupted);
        var output = report.Output.Length == 0 ? new byte[] { (byte)'?' } : report.Output.ToArray();
        output[0] ^= 0x01;
        return report with { Output = output };
    }
}
