using AssemblyInformationalVersionAttribute = System.Reflection.AssemblyInformationalVersionAttribute;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using Wasmtime;

namespace Potluck.Scheduler.Sandbox;

/// <summary>
/// Runs untrusted WASI preview 1 command modules deterministically
/// (<see href="https://github.com/WebAssembly/WASI/blob/main/legacy/preview1/docs.md"/>), on Wasmtime.
/// One per node: it owns the <see cref="Engine"/> (fuel metering, epoch interruption, NaN
/// canonicalization, deterministic relaxed SIMD, no threads, no memory64), the WASI host
/// (<see cref="WasiPreview1"/>: stdin in, capped stdout/stderr out, argv, no files, network or
/// environment, a virtual clock and a task-seeded random stream) and the compiled-module cache.
/// <para>
/// For a given module (by SHA-256), arguments, stdin and limits, the outcome, exit code, stdout and
/// fuel consumed are the same on every run and every machine with the same Wasmtime version, except
/// for outcomes flagged <see cref="SandboxResult.IsDeterministic"/> = false (a wall-clock timeout, a
/// stack overflow). Deviation from plain WASI: a run that fails (trap or non-zero exit) with its memory
/// within an eighth of the cap is reported as <see cref="SandboxOutcome.MemoryLimitExceeded"/>, since a
/// refused <c>memory.grow</c> only returns -1 to the guest (Wasmtime's C API cannot make it trap).
/// </para>
/// </summary>
public sealed class WasmSandbox : IDisposable
{
    /// <summary>argv[0] of every task.</summary>
    public const string ProgramName = "task.wasm";

    private const long WasmPageSize = 65536;
    private const int PoolKeepResidentBytes = 1 << 20;
    private const int PoolPerModuleCount = 10_000;
    private const int MaxTableElements = 1_000_000;
    private const int MaxTables = 4;
    private const int MaxMemories = 1;

    /// <summary>
    /// The most bytes an instance's own state (its vmctx: imported and exported functions, globals, tables' and memories'
    /// descriptors) may take in the pool; Wasmtime's default is 1 MiB, which a module with tens of thousands of functions
    /// referenced from a table passes, while without the pool nothing bounds it. A bound, not a reservation.
    /// </summary>
    private const int MaxInstanceStateBytes = 64 << 20;
    private const int RunnerThreadStackBytes = 16 * 1024 * 1024;

    private readonly SandboxOptions _options;
    private readonly ILogger<WasmSandbox> _logger;
    private readonly TimeProvider _time;
    private readonly Engine _engine;
    private readonly Linker _linker;
    private readonly ModuleCache _cache;
    private readonly EpochTicker _epochTicker;
    private readonly RunnerThreads _runners = new(RunnerThreadStackBytes, Math.Max(2, Environment.ProcessorCount), "potluck-wasm");
    // One per pooled instance slot (null without a pool): a run holds one from before its first attempt to after its last.
    private readonly SemaphoreSlim? _slots;
    private int _disposed;

    /// <summary>Creates the engine, the WASI host and the module cache, and the epoch ticker (armed only
    /// while a run is in flight).</summary>
    /// <param name="options">Limits; validated and kept (do not change them afterwards).</param>
    /// <param name="logger">Logger for cache problems and run summaries.</param>
    /// <param name="time">Clock for wall-clock deadlines and the epoch ticker; the system clock when null.</param>
    /// <param name="disk">
    /// The node's disk limit, shared with its module store (the compiled cache's entries count against it; the caller calls
    /// <see cref="Storage.DiskQuota.EvictToLimit"/> once every store is built); null bounds the cache folder alone by
    /// <see cref="SandboxOptions.CacheDirectoryMaxBytes"/>.
    /// </param>
    public WasmSandbox(SandboxOptions options, ILogger<WasmSandbox> logger, TimeProvider? time = null, Storage.DiskQuota? disk = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        options.Validate();
        _options = options;
        _logger = logger;
        _time = time ?? TimeProvider.System;

        using (var config = new Config())
        {
            config.WithFuelConsumption(true)
                .WithEpochInterruption(true)
                .WithCraneliftNaNCanonicalization(true)
                .WithRelaxedSIMD(true, deterministic: true)
                .WithWasmThreads(false)
                .WithMemory64(false)
                // Typed references and GC types crash Wasmtime's C API when their types are
                // inspected ("not implemented" panic); none of these proposals is needed by WASI
                // preview 1 commands, so modules using them are refused as invalid.
                .WithGc(false)
                .WithFunctionReferences(false)
                .WithExceptions(false)
                .WithMaximumStackSize(options.MaxWasmStackBytes)
                .WithOptimizationLevel(OptimizationLevel.Speed);
            var slots = SlotsThatFit(options.InstanceSlots, AddressSpaceHeadroom());
            if (slots != options.InstanceSlots)
            {
                SandboxLog.PoolReduced(logger, options.InstanceSlots, slots);
            }
            if (slots > 0)
            {
                // Each slot is sized to the limits every store sets (SetLimits below), so a module instantiates in the pool
                // exactly when it would without it; the slots are as many as the runs let in at once (_slots).
                using var pool = new PoolingAllocationConfig();
                pool.WithMaxCoreInstances((uint)slots);
                pool.WithMaxMemories((uint)(slots * MaxMemories));
                pool.WithMaxTables((uint)(slots * MaxTables));
                // Per module, no bound of the pool's own: it would refuse a module with a second memory when compiling it (an
                // invalid module), where the store's limits refuse it when instantiating (a memory limit), as without the pool.
                pool.WithMaxMemoriesPerModule(PoolPerModuleCount);
                pool.WithMaxTablesPerModule(PoolPerModuleCount);
                pool.WithMaxTableElements(MaxTableElements);
                pool.WithMaxMemorySize((nuint)options.MaxMemoryBytes);
                pool.WithMaxCoreInstanceSize(MaxInstanceStateBytes);
                // No async fibers, components or GC heaps here: none of their pools (Wasmtime reserves 1,000 of each by default,
                // each stack with a guard page: a mapping apiece).
                WithMaxStacks(pool, 0);
                pool.WithTotalComponentInstances(0);
                pool.WithMaxGcHeaps(0);
                // A small task's memory and tables are cleared in place on reuse, not given back to the kernel and faulted in again.
                pool.WithLinearMemoryKeepResidentBytes(PoolKeepResidentBytes);
                pool.WithTableKeepResidentBytes(PoolKeepResidentBytes / 8);
                config.WithPoolingAllocationStrategy(pool);
                _slots = new SemaphoreSlim(slots, slots);
                PooledSlots = slots;
            }
            _engine = new Engine(config);
        }
        CacheFingerprint = ComputeFingerprint(options);

        _linker = new Linker(_engine);
        WasiPreview1.Define(_linker);
        var quota = disk ?? new Storage.DiskQuota(options.CacheDirectoryMaxBytes);
        _cache = new ModuleCache(_engine, CacheFingerprint, options.CacheDirectory, options.ModuleCacheCapacity, logger, quota);
        if (disk is null)
        {
            quota.EvictToLimit();
        }
        _epochTicker = new EpochTicker(_time, options.EpochTick, _engine.IncrementEpoch);
    }

    /// <summary>The options in force.</summary>
    public SandboxOptions Options => _options;

    /// <summary>The clock of its wall-clock deadlines (also what a run's duration is measured on).</summary>
    public TimeProvider Time => _time;

    /// <summary>16 hex digits naming the Wasmtime version, platform and engine settings; compiled
    /// modules are only reused under the same fingerprint.</summary>
    public string CacheFingerprint { get; }

    /// <summary>The first gap between debit-note fences for a slice and an epoch tick (<see cref="FuelFence.FirstSpacing"/>; tests set it).</summary>
    internal Func<ulong, TimeSpan, ulong> FirstFenceSpacing { get; set; } = FuelFence.FirstSpacing;

    /// <summary>Advances the engine's epoch while runs are in flight (for tests).</summary>
    internal EpochTicker EpochTicker => _epochTicker;

    /// <summary>Where the compiled form of a module is cached on disk (null without a cache folder).</summary>
    internal string? CachePathFor(string moduleSha256Hex) => _cache.PathFor(moduleSha256Hex);

    /// <summary>Runs <paramref name="spec"/> on a dedicated runner thread (with a large native stack), reused
    /// from an earlier run when one is idle.</summary>
    /// <exception cref="OperationCanceledException">When <paramref name="cancellationToken"/> fires first.</exception>
    public Task<SandboxResult> ExecuteAsync(TaskSpec spec, ReadOnlyMemory<byte> input, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(spec);
        cancellationToken.ThrowIfCancellationRequested();
        var completion = new TaskCompletionSource<SandboxResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        void Run()
        {
            try
            {
                completion.TrySetResult(Execute(spec, input, cancellationToken));
            }
            catch (OperationCanceledException e)
            {
                completion.TrySetCanceled(e.CancellationToken);
            }
            catch (Exception e)
            {
                completion.TrySetException(e);
            }
        }
        try
        {
            _runners.Run(Run);
        }
        catch (ObjectDisposedException e)
        {
            completion.TrySetException(e); // as before: the run fails, the call does not throw
        }
        return completion.Task;
    }

    /// <summary>Runs <paramref name="spec"/> with <paramref name="input"/> on stdin, on the calling thread.</summary>
    /// <exception cref="OperationCanceledException">When <paramref name="cancellationToken"/> fires first.</exception>
    public SandboxResult Execute(TaskSpec spec, ReadOnlyMemory<byte> input, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        cancellationToken.ThrowIfCancellationRequested();

        var wasm = spec.Module.Span;
        if (wasm.Length > _options.MaxModuleBytes)
        {
            return Refused(string.Empty, $"module is {wasm.Length} bytes; the limit is {_options.MaxModuleBytes}");
        }
        // A module already in the in-memory cache is recognised by its bytes (no re-hashing); any
        // other is hashed, then looked up by hash (memory, disk) or compiled.
        var cached = _cache.TryGetByBytes(wasm);
        var hash = cached?.Sha256Hex ?? Convert.ToHexStringLower(SHA256.HashData(wasm));
        if (spec.ModuleSha256 is { } named && !string.Equals(named, hash, StringComparison.OrdinalIgnoreCase))
        {
            return Refused(hash, "module bytes do not match the named SHA-256");
        }
        if (BuildArgv(spec.Args) is not { } argv)
        {
            return Refused(hash, $"more than {_options.MaxArgs} arguments or {_options.MaxArgBytes} argument bytes");
        }

        var source = ModuleSource.MemoryCache;
        if (cached is null)
        {
            try
            {
                cached = _cache.GetOrCompile(hash, wasm, out source);
            }
            catch (WasmtimeException e)
            {
                return Refused(hash, "not a valid module: " + FirstLine(e.Message));
            }
        }
        var module = cached.Module;
        var memoryLimit = Math.Min(spec.MemoryLimitBytes ?? _options.MaxMemoryBytes, _options.MaxMemoryBytes);
        if (cached.Shape.Problem is { } shapeProblem)
        {
            return Refused(hash, shapeProblem) with { ModuleSource = source };
        }
        if (cached.Shape.MinimumMemoryBytes > memoryLimit)
        {
            return Finish(SandboxOutcome.MemoryLimitExceeded, null, new WasiRunState(default, [], 0, 0, []), 0, null, hash, source, null);
        }

        var fuel = Math.Min(spec.FuelLimit ?? _options.DefaultFuel, _options.DefaultFuel);
        var deadline = spec.Deadline is { } d && d < _options.DefaultDeadline ? d : _options.DefaultDeadline;
        var moduleSha256 = cached.Sha256;
        var args = spec.Args;
        // A pooled slot for this run's instance, held across its attempts (each disposes its store before the next) until
        // the run returns; the deadline counts from when the run has one. Without a pool nothing waits.
        using var slot = PoolSlot.Take(_slots, cancellationToken);
        var started = _time.GetTimestamp();
        var slice = spec.DebitNoteDue is null ? 0 : spec.DebitNoteFuel;
        var nextNote = 0;
        // Debit notes on a loop that makes no call: fences at the slice boundaries (FuelFence; every few slices when a slice
        // is less than a tick's fuel), armed at epoch callbacks. A fence reached before it was armed ends the attempt early
        // (never the result): run again with fences twice as far apart, from the first slice not yet asked for. A trap that
        // does not save the fuel, after a fence was crossed, or an end past an unarmed fence (FuelFence.Lost): run again
        // without fences, for the fuel a plain run reports.
        var spacing = slice > 0 ? FirstFenceSpacing(slice, _options.EpochTick) : 0;
        var fenced = slice > 0 && fuel <= FuelFence.MaxLimit;
        var unarmed = false;
        ulong metered = 0; // the most fuel an earlier attempt was seen to use (its notes were asked for on it)
        for (var attempt = 1; ; attempt++)
        {
            // The first fence one gap in at least: it too must be armed by a tick before the guest reaches it.
            var first = fenced ? UInt128.Max(((UInt128)(ulong)nextNote + 1) * slice, spacing) : 0;
            var fence = fenced && first < fuel ? new FuelFence(fuel, (ulong)first, spacing) : null;
            var run = Attempt(fence, slice);
            if (run.Outcome == SandboxOutcome.WallClockTimeout)
            {
                // An attempt after the first starts past part of the deadline, which counts from the first: stopped early, its
                // own reading (0 for a loop that makes no call, stopped before it saved) is less than what the earlier attempt
                // used and the notes already asked for. A timeout is never paid; it reports at least that.
                run = run with { Consumed = Math.Max(run.Consumed, metered) };
            }
            metered = Math.Max(metered, fence?.LastUsed ?? 0);
            if (fence is not null && run.Outcome == SandboxOutcome.FuelExhausted && fence.IsFalseOutOfFuel)
            {
                unarmed = true;
                spacing = spacing > fuel / 2 ? fuel : spacing * 2;
                fenced = spacing < fuel;
                continue;
            }
            if (fence is { Crossed: true } && run.UnsavedTrap || fence is { Lost: true })
            {
                fenced = false;
                slice = 0; // the notes were asked for as the first attempt ran; the plain run only replays it
                continue;
            }
            return Finish(run.Outcome, run.ExitCode, run.State, run.Consumed, run.Trap, hash, source,
                run.Error) with { MeteringRuns = attempt, MeteringRerunUnarmed = unarmed };
        }

        RunAttempt Attempt(FuelFence? fence, ulong noteSlice)
        {
            var state = new WasiRunState(input, argv, _options.MaxStdoutBytes, _options.MaxStderrBytes,
                () => WasiRunState.DeriveRandomSeed(moduleSha256, args, input.Span)) { Fence = fence };
            using var store = new Store(_engine, state);
            store.Fuel = fence?.InitialStoreFuel ?? fuel;
            store.SetLimits(memorySize: memoryLimit, tableElements: MaxTableElements, instances: 1, tables: MaxTables, memories: MaxMemories);
            store.SetEpochDeadline(1);
            store.SetEpochDeadlineCallback(s =>
            {
                // Wasmtime sets the next deadline from the epoch at the moment this returns, not at the moment it was called:
                // a tick that lands while the clock is read here would be swallowed (the next check waits for the tick after
                // it). With a real clock that only delays the check by a tick; with a clock that stops after its last tick
                // (virtual time), the run would never be checked again. So: note the ticks first, and if one came during the
                // check, ask to be called again at once (delta 0: the next loop back-edge or call) rather than a tick later.
                var ticks = _epochTicker.Ticks;
                if (cancellationToken.IsCancellationRequested)
                {
                    state.Stop = HostStop.Cancelled;
                    throw new SandboxStopException(HostStop.Cancelled);
                }
                if (_time.GetElapsedTime(started) >= deadline)
                {
                    state.Stop = HostStop.Deadline;
                    throw new SandboxStopException(HostStop.Deadline);
                }
                if (noteSlice > 0)
                {
                    // Debit notes: a note for every slice boundary passed (below the limit: the final receipt pays the rest);
                    // the run waits here, on its own thread, until the note is paid, and stops when it is not.
                    ulong used;
                    if (fence is not null)
                    {
                        if (fence.OnEpoch(s.Fuel) is { } arm)
                        {
                            s.Fuel = arm;
                        }
                        used = fence.LastUsed;
                    }
                    else
                    {
                        used = fuel - s.Fuel;
                    }
                    while (((UInt128)(ulong)nextNote + 1UL) * noteSlice is var boundary && boundary <= used && boundary < fuel)
                    {
                        if (!spec.DebitNoteDue!(nextNote))
                        {
                            state.Stop = HostStop.Cancelled;
                            throw new SandboxStopException(HostStop.Cancelled);
                        }
                        nextNote++;
                    }
                }
                return _epochTicker.Ticks == ticks ? 1UL : 0UL;
            });

            Instance? instance = null;
            WasmtimeException? failure = null;
            // The epoch advances (and the deadline and cancellation are checked) only while guest code may run.
            using (_epochTicker.Enter())
            {
                try
                {
                    instance = _linker.Instantiate(store, module);
                    var start = instance.GetAction("_start")
                        ?? throw new InvalidOperationException("_start vanished after the shape check");
                    start();
                }
                catch (WasmtimeException e)
                {
                    failure = e;
                }
            }
            var consumed = fence is null ? fuel - store.Fuel : fence.Consumed(store.Fuel);

            if (state.Stop == HostStop.Cancelled)
            {
                throw new OperationCanceledException("sandboxed run cancelled", cancellationToken);
            }
            var (outcome, exitCode, trap) = Classify(state, failure, instance, memoryLimit);
            if (outcome == SandboxOutcome.FuelExhausted) consumed = fuel;
            return new RunAttempt(outcome, exitCode, trap, state, consumed,
                failure is not null && instance is null && outcome == SandboxOutcome.InvalidModule ? FirstLine(failure.Message) : null,
                // Wasmtime saves the fuel before `unreachable` and at out of fuel, not before a trap of a checked instruction.
                state.Stop == HostStop.None && failure is not null && failure is not TrapException { Type: TrapCode.OutOfFuel or TrapCode.Unreachable });
        }
    }

    /// <summary>
    /// Wasmtime.Dotnet 50.0.1 keeps the pool's stack count internal (it belongs with async support, which it does not expose);
    /// its default, 1,000 stacks with a guard page each, costs ~2,000 memory mappings per engine, and a process of a few dozen
    /// sandboxes ran out of mappings (ENOMEM at engine creation). A missing method fails the first pooled sandbox loudly.
    /// </summary>
    [System.Runtime.CompilerServices.UnsafeAccessor(System.Runtime.CompilerServices.UnsafeAccessorKind.Method, Name = "WithMaxStacks")]
    private static extern PoolingAllocationConfig WithMaxStacks(PoolingAllocationConfig config, uint count);

    /// <summary>The instance slots this sandbox pools (0: none; fewer than asked where the address space is limited).</summary>
    internal int PooledSlots { get; }

    /// <summary>
    /// Address space one pooled slot reserves, counted generously: Wasmtime's 4 GiB reservation for a 32-bit memory (what lets
    /// compiled code skip bounds checks), its guard regions, and the slot's four tables of a million elements.
    /// </summary>
    internal const long AddressSpacePerSlot = (4L << 30) + (512L << 20);

    /// <summary>
    /// How many of <paramref name="asked"/> slots to pool given the process's address-space headroom (null: unlimited). The
    /// pool takes at most half of the headroom (the runtime, its heap and threads need the rest); fewer than two slots are not
    /// worth a pool. Wasmtime aborts the process when it cannot reserve a pool, so this is decided before it tries.
    /// </summary>
    internal static int SlotsThatFit(int asked, long? headroomBytes)
    {
        if (asked <= 0 || headroomBytes is not { } headroom)
        {
            return Math.Max(0, asked);
        }
        var fit = (int)Math.Min(asked, Math.Max(0, headroom / 2) / AddressSpacePerSlot);
        return fit >= 2 ? fit : 0;
    }

    /// <summary>
    /// The user address space of a 64-bit Linux process (47 bits: 128 TiB), which bounds the pools of all the sandboxes in a
    /// process even without a limit of its own.
    /// </summary>
    internal const long UserAddressSpace = 1L << 47;

    /// <summary>
    /// On Linux, what this process may still map: the smaller of its soft limit (<c>ulimit -v</c>) and the user address space,
    /// less what it maps now (other sandboxes' pools included), from /proc; null elsewhere or when /proc is unreadable.
    /// </summary>
    internal static long? AddressSpaceHeadroom()
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }
        try
        {
            var max = UserAddressSpace;
            foreach (var line in File.ReadLines("/proc/self/limits"))
            {
                if (line.StartsWith("Max address space", StringComparison.Ordinal))
                {
                    var soft = line["Max address space".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries)[0];
                    if (long.TryParse(soft, System.Globalization.CultureInfo.InvariantCulture, out var bytes))
                    {
                        max = Math.Min(max, bytes); // "unlimited" does not parse
                    }
                    break;
                }
            }
            foreach (var line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("VmSize:", StringComparison.Ordinal)
                    && long.TryParse(line["VmSize:".Length..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture, out var kib))
                {
                    return Math.Max(0, max - kib * 1024);
                }
            }
            return max;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>A slot of the instance pool held by one run (nothing without a pool).</summary>
    private readonly struct PoolSlot : IDisposable
    {
        private readonly SemaphoreSlim? _slots;

        private PoolSlot(SemaphoreSlim slots) => _slots = slots;

        public static PoolSlot Take(SemaphoreSlim? slots, CancellationToken ct)
        {
            if (slots is null)
            {
                return default;
            }
            slots.Wait(ct);
            return new PoolSlot(slots);
        }

        public void Dispose() => _slots?.Release();
    }

    private readonly record struct RunAttempt(SandboxOutcome Outcome, int? ExitCode, SandboxTrap? Trap, WasiRunState State, ulong Consumed,
        string? Error, bool UnsavedTrap);

    private static (SandboxOutcome Outcome, int? ExitCode, SandboxTrap? Trap) Classify(
        WasiRunState state, WasmtimeException? failure, Instance? instance, long memoryLimit)
    {
        switch (state.Stop)
        {
            case HostStop.Exit when state.ExitCode == 0:
                return (SandboxOutcome.Success, 0, null);
            case HostStop.Exit:
                return (NearMemoryCap(instance, memoryLimit) ? SandboxOutcome.MemoryLimitExceeded : SandboxOutcome.ExitedNonZero, state.ExitCode, null);
            case HostStop.OutputLimit:
                return (SandboxOutcome.OutputLimitExceeded, null, null);
            case HostStop.Deadline:
                return (SandboxOutcome.WallClockTimeout, null, null);
            case HostStop.OutOfFuel:
                return (SandboxOutcome.FuelExhausted, null, null);
        }
        if (failure is null)
        {
            return (SandboxOutcome.Success, 0, null);
        }
        if (instance is null)
        {
            // Instantiation failed: the start section trapped, or a limit or import did not fit.
            if (failure is TrapException { Type: TrapCode.OutOfFuel }) return (SandboxOutcome.FuelExhausted, null, null);
            if (failure is TrapException t0) return (SandboxOutcome.Trapped, null, ToTrap(t0));
            return failure.Message.Contains("memory", StringComparison.OrdinalIgnoreCase) && failure.Message.Contains("limit", StringComparison.OrdinalIgnoreCase)
                ? (SandboxOutcome.MemoryLimitExceeded, null, null)
                : (SandboxOutcome.InvalidModule, null, null);
        }
        if (failure is TrapException { Type: TrapCode.OutOfFuel })
        {
            return (SandboxOutcome.FuelExhausted, null, null);
        }
        // Wasmtime's C API cannot make a refused memory.grow trap; the guest sees -1 (malloc
        // returns NULL) and usually fails soon after. A failed run whose memory ended near the
        // cap is taken as having hit it. Deterministic: the memory size is part of the run's state.
        if (NearMemoryCap(instance, memoryLimit))
        {
            return (SandboxOutcome.MemoryLimitExceeded, null, null);
        }
        return failure is TrapException trap
            ? (SandboxOutcome.Trapped, null, ToTrap(trap))
            : (SandboxOutcome.Trapped, null, new SandboxTrap(SandboxTrapCode.Other, failure.Message));
    }

    private static bool NearMemoryCap(Instance? instance, long memoryLimit)
        => instance?.GetMemory("memory") is { } memory && memory.GetLength() + MemoryLimitSlack(memoryLimit) > memoryLimit;

    /// <summary>How near the cap a failed run's memory must end to count as having hit it:
    /// an eighth of the cap, at least one page.</summary>
    internal static long MemoryLimitSlack(long memoryLimit) => Math.Max(WasmPageSize, memoryLimit / 8);

    private static SandboxTrap ToTrap(TrapException trap) => new(trap.Type switch
    {
        TrapCode.StackOverflow => SandboxTrapCode.StackOverflow,
        TrapCode.MemoryOutOfBounds => SandboxTrapCode.MemoryOutOfBounds,
        TrapCode.HeapMisaligned => SandboxTrapCode.HeapMisaligned,
        TrapCode.TableOutOfBounds => SandboxTrapCode.TableOutOfBounds,
        TrapCode.IndirectCallToNull => SandboxTrapCode.IndirectCallToNull,
        TrapCode.BadSignature => SandboxTrapCode.BadSignature,
        TrapCode.IntegerOverflow => SandboxTrapCode.IntegerOverflow,
        TrapCode.IntegerDivisionByZero => SandboxTrapCode.IntegerDivisionByZero,
        TrapCode.BadConversionToInteger => SandboxTrapCode.BadConversionToInteger,
        TrapCode.Unreachable => SandboxTrapCode.Unreachable,
        _ => SandboxTrapCode.Other,
    }, trap.Message);

    private byte[][]? BuildArgv(IReadOnlyList<string> args)
    {
        if (args.Count > _options.MaxArgs) return null;
        var argv = new byte[args.Count + 1][];
        argv[0] = Encoding.UTF8.GetBytes(ProgramName + "\0");
        long total = 0;
        for (var i = 0; i < args.Count; i++)
        {
            var a = args[i] ?? string.Empty;
            if (a.Contains('\0')) return null;
            argv[i + 1] = Encoding.UTF8.GetBytes(a + "\0");
            total += argv[i + 1].Length;
            if (total > _options.MaxArgBytes) return null;
        }
        return argv;
    }

    private SandboxResult Refused(string hash, string error)
    {
        SandboxLog.RunFinished(_logger, hash, SandboxOutcome.InvalidModule, 0);
        return new SandboxResult
        {
            Outcome = SandboxOutcome.InvalidModule,
            Error = error,
            ModuleSha256 = hash,
            StdoutSha256 = SHA256.HashData([]),
            StderrSha256 = SHA256.HashData([]),
        };
    }

    private SandboxResult Finish(SandboxOutcome outcome, int? exitCode, WasiRunState state, ulong consumed,
        SandboxTrap? trap, string hash, ModuleSource source, string? error)
    {
        SandboxLog.RunFinished(_logger, hash, outcome, consumed);
        var stdout = state.Stdout.ToArray();
        var stderr = state.Stderr.ToArray();
        return new SandboxResult
        {
            Outcome = outcome,
            ExitCode = exitCode,
            Stdout = stdout,
            Stderr = stderr,
            StderrTruncated = state.StderrTruncated,
            FuelConsumed = consumed,
            StdoutSha256 = SHA256.HashData(stdout),
            StderrSha256 = SHA256.HashData(stderr),
            Trap = trap,
            Error = error,
            IsDeterministic = outcome != SandboxOutcome.WallClockTimeout && trap?.IsNonDeterministicPoint != true,
            ModuleSha256 = hash,
            ModuleSource = source,
        };
    }

    private static string FirstLine(string message)
    {
        var end = message.IndexOf('\n');
        return end < 0 ? message : message[..end];
    }

    private static string ComputeFingerprint(SandboxOptions options)
    {
        var assembly = typeof(Engine).Assembly;
        var version = (Attribute.GetCustomAttribute(assembly, typeof(AssemblyInformationalVersionAttribute)) as AssemblyInformationalVersionAttribute)?.InformationalVersion
            ?? assembly.GetName().Version?.ToString() ?? "unknown";
        var os = OperatingSystem.IsLinux() ? "linux" : OperatingSystem.IsWindows() ? "windows" : OperatingSystem.IsMacOS() ? "macos" : "other";
        var description = $"potluck-sandbox-cache/v1;wasmtime={version};arch={RuntimeInformation.ProcessArchitecture};os={os};" +
            $"fuel;epoch;nan-canonicalization;relaxed-simd=deterministic;threads=off;memory64=off;gc=off;function-references=off;exceptions=off;opt=speed;stack={options.MaxWasmStackBytes};hostfuel={WasiPreview1.HostCallFuel}/{WasiPreview1.CopyFuelPerByte}/{WasiPreview1.RandomFuelPerByte}";
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(description)))[..16];
    }

    /// <summary>Stops the epoch ticker and frees the engine. Runs still in flight must have finished.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _runners.Dispose();
        _epochTicker.Dispose();
        _linker.Dispose();
        _engine.Dispose();
    }
}
