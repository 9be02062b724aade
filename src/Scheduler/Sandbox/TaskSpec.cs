namespace Potluck.Scheduler.Sandbox;

/// <summary>
/// One task for the sandbox: a WASI preview 1 command module, its arguments and its limits.
/// Stdin is given separately to <see cref="WasmSandbox.Execute"/>. A task is identified by
/// the SHA-256 of <see cref="Module"/>: fuel depends on the exact module bytes.
/// </summary>
public sealed record TaskSpec
{
    /// <summary>The module's bytes (binary WebAssembly).</summary>
    public required ReadOnlyMemory<byte> Module { get; init; }

    /// <summary>The module's SHA-256 as 64 hex digits, when the sender named it; a mismatch makes
    /// the run <see cref="SandboxOutcome.InvalidModule"/>. Null: computed from <see cref="Module"/>.</summary>
    public string? ModuleSha256 { get; init; }

    /// <summary>Arguments after the program name (argv[1..]); argv[0] is always <see cref="WasmSandbox.ProgramName"/>.</summary>
    public IReadOnlyList<string> Args { get; init; } = [];

    /// <summary>Fuel budget; null takes <see cref="SandboxOptions.DefaultFuel"/>, which also caps it.</summary>
    public ulong? FuelLimit { get; init; }

    /// <summary>Memory cap in bytes; null takes <see cref="SandboxOptions.MaxMemoryBytes"/>, which also caps it.</summary>
    public long? MemoryLimitBytes { get; init; }

    /// <summary>Wall-clock deadline; null takes <see cref="SandboxOptions.DefaultDeadline"/>, which also caps it.</summary>
    public TimeSpan? Deadline { get; init; }

    /// <summary>
    /// Debit notes (<see cref="Leasing.DebitNoteSlicing"/>): each time the fuel used reaches a multiple of
    /// <see cref="DebitNoteFuel"/> below the limit (checked at every epoch tick), the run calls <see cref="DebitNoteDue"/> with
    /// the slice index on its own thread and goes on only when it returns true; false stops it as cancelled. 0: never.
    /// </summary>
    public ulong DebitNoteFuel { get; init; }

    /// <inheritdoc cref="DebitNoteFuel"/>
    public Func<int, bool>? DebitNoteDue { get; init; }
}
