namespace Potluck.Scheduler.Leasing;

/// <summary>A task a provider has agreed to run: terms, the module (or its hash when cached) and the input.</summary>
public sealed record LeaseExecution(
    SignedLeaseTerms SignedTerms,
    LeaseTerms Terms,
    ReadOnlyMemory<byte> ModuleHash,
    ReadOnlyMemory<byte>? Module,
    ReadOnlyMemory<byte> Input)
{
    /// <summary>
    /// On a lease paid as it goes (<see cref="LeaseTerms.DebitNoteFuel"/>): called by the executor with the slice index each
    /// time the fuel used reaches the next multiple of the slice below the limit; the task goes on only once the task
    /// completes true (the note was paid), and stops when false. Null: the executor never stops for payment.
    /// </summary>
    public Func<int, Task<bool>>? DebitNoteDue { get; init; }
}

/// <summary>What came of running a task.</summary>
public sealed record ExecutionReport(ExecutionStatus Status, long FuelUsed, int ExitCode, ReadOnlyMemory<byte> Output)
{
    /// <summary>Opaque evidence about the run, from the ledger's attester; empty when none.</summary>
    public ReadOnlyMemory<byte> Attestation { get; init; }

    /// <summary>What the task wrote to stderr (capped by the sandbox); a diagnostic for the requester, not attested.</summary>
    public ReadOnlyMemory<byte> Stderr { get; init; }
}

/// <summary>Something that runs a leased task (the WASM sandbox), used by the provider's shell.</summary>
public interface ITaskExecutor
{
    /// <summary>Runs within the terms' fuel and memory limits; cancelled on abort or deadline.</summary>
    ValueTask<ExecutionReport> ExecuteAsync(LeaseExecution execution, CancellationToken ct);
}

/// <summary>The provider's content-addressed module store, consulted when a request arrives.</summary>
public interface IModuleCache
{
    /// <summary>True when a module with this SHA-256 is held (the requester then need not send it).</summary>
    bool Contains(ReadOnlySpan<byte> sha256);

    /// <summary>
    /// Holds what a lease of this module needs on disk from its offer to its end: the module kept when held, else room
    /// for its <paramref name="moduleSize"/> bytes. Null when there is no room now (what leases in progress hold fills the
    /// disk limit). By default nothing is held and there is no limit.
    /// </summary>
    ModuleHold? TryHold(ReadOnlySpan<byte> sha256, long moduleSize) => new(Contains(sha256), ModuleHold.Nothing);

    /// <summary>The most bytes a module may need on disk here (the disk limit); a larger one is refused.</summary>
    long DiskLimitBytes => long.MaxValue;
}

/// <summary>What a lease holds of the provider's module store: whether the module was held, and the hold to release at its end.</summary>
public sealed record ModuleHold(bool Held, IDisposable Release)
{
    /// <summary>A hold of nothing.</summary>
    public static IDisposable Nothing { get; } = new None();

    private sealed class None : IDisposable
    {
        public void Dispose()
        {
        }
    }
}

/// <summary>Something that records payment for a finished lease (the ledger), used by both shells.</summary>
public interface ILeasePaymentRecorder
{
    /// <summary>Records what <paramref name="terms"/> owe for <paramref name="result"/>; fuel × price, capped by the terms.</summary>
    ValueTask RecordAsync(SignedLeaseTerms terms, LeaseResult result, CancellationToken ct);
}
