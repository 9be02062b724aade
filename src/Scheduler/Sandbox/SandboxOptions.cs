namespace Potluck.Scheduler.Sandbox;

/// <summary>
/// Limits and settings of a <see cref="WasmSandbox"/>. Every limit a remote task can push against
/// has a documented default; a <see cref="TaskSpec"/> may ask for less, never for more.
/// </summary>
public sealed record SandboxOptions
{
    /// <summary>Largest linear memory a task may grow to, in bytes. Default: 256 MiB.</summary>
    public long MaxMemoryBytes { get; init; } = 256L * 1024 * 1024;

    /// <summary>Most bytes a task may write to stdout; one byte more ends it with
    /// <see cref="SandboxOutcome.OutputLimitExceeded"/>. Default: 16 MiB.</summary>
    public int MaxStdoutBytes { get; init; } = 16 * 1024 * 1024;

    /// <summary>Most bytes of stderr kept; the rest is dropped (the task goes on). Default: 64 KiB.</summary>
    public int MaxStderrBytes { get; init; } = 64 * 1024;

    /// <summary>Fuel given to a task that names none; also the most a task may ask for.
    /// Default: 20 billion units (tens of seconds of compute).</summary>
    public ulong DefaultFuel { get; init; } = 20_000_000_000UL;

    /// <summary>Wall-clock deadline of a task that names none; also the most a task may ask for.
    /// Default: 60 s. A run past it ends with <see cref="SandboxOutcome.WallClockTimeout"/>.</summary>
    public TimeSpan DefaultDeadline { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>How often the engine's epoch advances while a task runs (never while none does), which
    /// bounds how late a deadline or a cancellation is noticed. Default: 10 ms.</summary>
    public TimeSpan EpochTick { get; init; } = TimeSpan.FromMilliseconds(10);

    /// <summary>Largest module accepted, in bytes. Default: 32 MiB.</summary>
    public int MaxModuleBytes { get; init; } = 32 * 1024 * 1024;

    /// <summary>Most arguments a task may pass (program name excluded). Default: 256.</summary>
    public int MaxArgs { get; init; } = 256;

    /// <summary>Most bytes of all arguments together (UTF-8, NUL-terminated). Default: 64 KiB.</summary>
    public int MaxArgBytes { get; init; } = 64 * 1024;

    /// <summary>Largest WebAssembly stack, in bytes. Part of the cache fingerprint. Default: 512 KiB.</summary>
    public int MaxWasmStackBytes { get; init; } = 512 * 1024;

    /// <summary>Compiled modules kept in memory (least recently used evicted). Default: 32.</summary>
    public int ModuleCacheCapacity { get; init; } = 32;

    /// <summary>Folder for compiled modules (and the node-local key that signs them); null keeps
    /// compiled modules in memory only. Default: null.</summary>
    public string? CacheDirectory { get; init; }

    /// <summary>
    /// Most bytes of compiled modules kept in <see cref="CacheDirectory"/> by a sandbox used alone; past it the least
    /// recently used entries are deleted to make room for a new one. A node's sandbox counts its entries against the
    /// node's disk limit (<c>compute:provider:diskBytes</c>, with the module store) instead. Default: 1 GiB.
    /// </summary>
    public long CacheDirectoryMaxBytes { get; init; } = 1L << 30;

    /// <summary>
    /// Runs whose instances Wasmtime's pooling allocator holds ready (<see cref="WasmSandbox"/>): each run takes a slot —
    /// its linear memory, tables and instance reserved once, reset rather than mapped and unmapped per run (an unmap of a
    /// run's memory interrupted every core to flush its TLB: a sixth of a no-op task's sandbox CPU). Each slot reserves
    /// ~4 GiB of address space (the same bounds-check-free layout as without the pool), nothing of memory until used. A
    /// run that finds every slot taken waits for one before its wall-clock deadline starts. 0 turns the pool off (memory
    /// mapped per run, as before). Default: 16 or twice the processors, whichever is more.
    /// </summary>
    public int InstanceSlots { get; init; } = Math.Max(16, 2 * Environment.ProcessorCount);

    internal void Validate()
    {
        if (MaxMemoryBytes < 65536) throw new ArgumentOutOfRangeException(nameof(MaxMemoryBytes), "at least one 64 KiB page");
        if (MaxStdoutBytes < 0) throw new ArgumentOutOfRangeException(nameof(MaxStdoutBytes));
        if (MaxStderrBytes < 0) throw new ArgumentOutOfRangeException(nameof(MaxStderrBytes));
        if (DefaultFuel == 0) throw new ArgumentOutOfRangeException(nameof(DefaultFuel));
        if (DefaultDeadline <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(DefaultDeadline));
        if (EpochTick <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(EpochTick));
        if (MaxModuleBytes <= 8) throw new ArgumentOutOfRangeException(nameof(MaxModuleBytes));
        if (MaxArgs < 0) throw new ArgumentOutOfRangeException(nameof(MaxArgs));
        if (MaxArgBytes < 0) throw new ArgumentOutOfRangeException(nameof(MaxArgBytes));
        if (MaxWasmStackBytes < 16 * 1024) throw new ArgumentOutOfRangeException(nameof(MaxWasmStackBytes));
        if (ModuleCacheCapacity < 1) throw new ArgumentOutOfRangeException(nameof(ModuleCacheCapacity));
        if (CacheDirectoryMaxBytes < 1) throw new ArgumentOutOfRangeException(nameof(CacheDirectoryMaxBytes));
        if (InstanceSlots is < 0 or > MaxInstanceSlots) throw new ArgumentOutOfRangeException(nameof(InstanceSlots), $"0 (no pool) to {MaxInstanceSlots}");
    }

    /// <summary>Most slots a pool may have: ~4 GiB of address space each, 4 TiB in all.</summary>
    internal const int MaxInstanceSlots = 1024;
}
