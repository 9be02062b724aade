namespace Potluck.Scheduler.Sandbox;

/// <summary>How a sandboxed run ended.</summary>
public enum SandboxOutcome
{
    /// <summary>The module returned from <c>_start</c> or called <c>proc_exit(0)</c>.</summary>
    Success,
    /// <summary>The module called <c>proc_exit</c> with a non-zero code.</summary>
    ExitedNonZero,
    /// <summary>The fuel budget ran out.</summary>
    FuelExhausted,
    /// <summary>The memory cap was hit: instantiation needed more than the cap, or the run failed
    /// (trap or non-zero exit) with its memory within an eighth of the cap (a refused
    /// <c>memory.grow</c> only returns -1 to the guest, whose malloc then fails).</summary>
    MemoryLimitExceeded,
    /// <summary>The module wrote more to stdout than the cap allows.</summary>
    OutputLimitExceeded,
    /// <summary>A WebAssembly trap; see <see cref="SandboxResult.Trap"/>.</summary>
    Trapped,
    /// <summary>The wall-clock deadline passed. Not deterministic: another machine may finish.</summary>
    WallClockTimeout,
    /// <summary>The bytes are not a valid module, the hash does not match, or the module imports
    /// something other than WASI preview 1 functions or lacks <c>_start</c>/<c>memory</c>.</summary>
    InvalidModule,
}

/// <summary>Which trap ended a run.</summary>
public enum SandboxTrapCode
{
    /// <summary>A trap Wasmtime gave no known code for.</summary>
    Other,
    /// <summary>The WebAssembly stack overflowed. Where this happens depends on the engine, so the
    /// fuel consumed at that point is not deterministic.</summary>
    StackOverflow,
    /// <summary>Out-of-bounds memory access.</summary>
    MemoryOutOfBounds,
    /// <summary>Misaligned atomic access.</summary>
    HeapMisaligned,
    /// <summary>Out-of-bounds table access.</summary>
    TableOutOfBounds,
    /// <summary>call_indirect to a null entry.</summary>
    IndirectCallToNull,
    /// <summary>call_indirect signature mismatch.</summary>
    BadSignature,
    /// <summary>Integer overflow (e.g. INT_MIN / -1).</summary>
    IntegerOverflow,
    /// <summary>Integer division by zero.</summary>
    IntegerDivisionByZero,
    /// <summary>Float to integer conversion out of range.</summary>
    BadConversionToInteger,
    /// <summary>The <c>unreachable</c> instruction (C's abort()).</summary>
    Unreachable,
}

/// <summary>A trap: its code and Wasmtime's description.</summary>
/// <param name="Code">The trap's kind.</param>
/// <param name="Description">Wasmtime's message (with a backtrace where it has one).</param>
public sealed record SandboxTrap(SandboxTrapCode Code, string Description)
{
    /// <summary>True where the point of the trap depends on the engine (stack overflow).</summary>
    public bool IsNonDeterministicPoint => Code == SandboxTrapCode.StackOverflow;
}

/// <summary>Where the compiled module came from.</summary>
public enum ModuleSource
{
    /// <summary>Compiled from the module's bytes in this run (or never compiled: invalid).</summary>
    Compiled,
    /// <summary>Loaded from this node's signed on-disk cache.</summary>
    DiskCache,
    /// <summary>Found in the in-memory cache.</summary>
    MemoryCache,
}

/// <summary>
/// The result of one run. <see cref="Stdout"/>, <see cref="ExitCode"/>, <see cref="Outcome"/> and
/// <see cref="FuelConsumed"/> are bit-for-bit reproducible for the same module, arguments, stdin and
/// limits whenever <see cref="IsDeterministic"/> is true.
/// </summary>
public sealed record SandboxResult
{
    /// <summary>How the run ended.</summary>
    public required SandboxOutcome Outcome { get; init; }

    /// <summary>The exit code: 0 on success, the <c>proc_exit</c> code, or null when the run did not exit.</summary>
    public int? ExitCode { get; init; }

    /// <summary>Everything written to stdout (on <see cref="SandboxOutcome.OutputLimitExceeded"/>: the first cap's worth).</summary>
    public ReadOnlyMemory<byte> Stdout { get; init; }

    /// <summary>What was written to stderr, up to <see cref="SandboxOptions.MaxStderrBytes"/>.</summary>
    public ReadOnlyMemory<byte> Stderr { get; init; }

    /// <summary>True when stderr held more than was kept.</summary>
    public bool StderrTruncated { get; init; }

    /// <summary>Fuel consumed, exactly (the whole budget on <see cref="SandboxOutcome.FuelExhausted"/>).</summary>
    public ulong FuelConsumed { get; init; }

    /// <summary>SHA-256 of <see cref="Stdout"/>.</summary>
    public required byte[] StdoutSha256 { get; init; }

    /// <summary>SHA-256 of <see cref="Stderr"/> (as kept).</summary>
    public required byte[] StderrSha256 { get; init; }

    /// <summary>The trap, when <see cref="Outcome"/> is <see cref="SandboxOutcome.Trapped"/>.</summary>
    public SandboxTrap? Trap { get; init; }

    /// <summary>Why the module was refused, when <see cref="Outcome"/> is <see cref="SandboxOutcome.InvalidModule"/>.</summary>
    public string? Error { get; init; }

    /// <summary>False for outcomes another run could end differently: a wall-clock timeout or a stack overflow.</summary>
    public bool IsDeterministic { get; init; } = true;

    /// <summary>The module's SHA-256 as lowercase hex: the task's identity.</summary>
    public required string ModuleSha256 { get; init; }

    /// <summary>Where the compiled module came from (diagnostic; not part of the result's identity).</summary>
    public ModuleSource ModuleSource { get; init; }

    /// <summary>
    /// How many times the task ran to get this result (diagnostic; not part of the result's identity): 1, or more when a
    /// debit-note fence was reached before it was armed, or a trap after a fence needed a plain run's fuel (FuelFence).
    /// </summary>
    public int MeteringRuns { get; init; } = 1;

    /// <summary>Whether a fence reached unarmed caused a rerun (else, with <see cref="MeteringRuns"/> above 1, a trap after a fence did).</summary>
    public bool MeteringRerunUnarmed { get; init; }
}
