using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Metrics;
using Potluck.Scheduler.Sandbox;

namespace Potluck.Scheduler.Execution;

/// <summary>
/// Runs leased tasks in the <see cref="WasmSandbox"/>: the module from the lease (then kept in the
/// <see cref="ModuleStore"/>) or from the store, the input decoded as a <see cref="TaskPayload"/>, and the terms'
/// fuel and memory limits. Also re-runs tasks for verification (<see cref="RunAsync"/>).
/// </summary>
public sealed class SandboxTaskExecutor : ITaskExecutor
{
    private readonly WasmSandbox _sandbox;
    private readonly ModuleStore _modules;
    private readonly CancellationTokenSource _closing = new();
    private readonly HashSet<Task> _running = [];
    private readonly NodeRuntime _runtime;
    private readonly ComputeInstruments _instruments;

    /// <param name="runtime">Told about each run on a sandbox thread, so virtual time does not move while one is in flight.</param>
    /// <param name="instruments">The node's metrics (every run's outcome, fuel and time); null counts into instruments of its own.</param>
    public SandboxTaskExecutor(WasmSandbox sandbox, ModuleStore modules, NodeRuntime? runtime = null, ComputeInstruments? instruments = null)
    {
        _sandbox = sandbox;
        _modules = modules;
        _runtime = runtime ?? NodeRuntime.System;
        _instruments = instruments ?? ComputeInstruments.Detached();
    }

    public WasmSandbox Sandbox => _sandbox;

    public ModuleStore Modules => _modules;

    public async ValueTask<ExecutionReport> ExecuteAsync(LeaseExecution execution, CancellationToken ct)
    {
        ReadOnlyMemory<byte> module;
        using var pin = _modules.Pin(execution.ModuleHash.Span);
        if (execution.Module is { } sent)
        {
            // Kept only once checked: below, after it ran (a module Wasmtime refuses, or bytes that are not the agreed hash, are never stored).
            module = sent;
        }
        else if (_modules.TryGet(execution.ModuleHash.Span) is { } held)
        {
            module = held;
        }
        else
        {
            return new ExecutionReport(ExecutionStatus.InvalidModule, 0, 0, ReadOnlyMemory<byte>.Empty);
        }
        var result = await RunAsync(module, execution.Input, execution.Terms.FuelLimit, execution.Terms.MemoryLimitBytes, ct,
            execution.Terms.DebitNoteFuel > 0 ? execution.DebitNoteDue : null, (ulong)Math.Max(0, execution.Terms.DebitNoteFuel));
        if (execution.Module is not null && result.Outcome != SandboxOutcome.InvalidModule)
        {
            _modules.Put(module, execution.ModuleHash.Span);
        }
        return new ExecutionReport(ExecutionMapping.ToStatus(result.Outcome), (long)Math.Min(result.FuelConsumed, long.MaxValue),
            result.ExitCode ?? 0, result.Stdout) { Stderr = result.Stderr };
    }

    /// <summary>
    /// Runs <paramref name="module"/> on a lease input (a <see cref="TaskPayload"/>) with these limits. An input that
    /// is not a payload ends as <see cref="SandboxOutcome.InvalidModule"/>, as does a module the runtime refuses.
    /// </summary>
    /// <param name="debitNoteDue">Debit notes (<see cref="LeaseExecution.DebitNoteDue"/>): called at each slice of <paramref name="debitNoteFuel"/>.</param>
    public Task<SandboxResult> RunAsync(ReadOnlyMemory<byte> module, ReadOnlyMemory<byte> input, long fuelLimit, long memoryLimitBytes, CancellationToken ct,
        Func<int, Task<bool>>? debitNoteDue = null, ulong debitNoteFuel = 0)
    {
        if (!TaskPayload.TryDecode(input, out var payload))
        {
            return Task.FromResult(new SandboxResult
            {
                Outcome = SandboxOutcome.InvalidModule,
                Error = "the lease input is not a task payload (arguments and stdin)",
                ModuleSha256 = Convert.ToHexStringLower(ExecutionMapping.Sha256(module.Span)),
                StdoutSha256 = ExecutionMapping.Sha256([]),
                StderrSha256 = ExecutionMapping.Sha256([]),
            });
        }
        var spec = new TaskSpec
        {
            Module = module,
            Args = payload.Args,
            FuelLimit = (ulong)Math.Max(1, fuelLimit),
            MemoryLimitBytes = memoryLimitBytes,
        };
        if (debitNoteDue is not null && debitNoteFuel > 0)
        {
            // The gate holds the run's external-work mark itself, and lets it go while the run waits for a payment, so that
            // virtual time (and the payment's way over a simulated network) moves meanwhile.
            var gate = new DebitNoteGate(_runtime, debitNoteDue);
            return TrackAsync(spec with { DebitNoteFuel = debitNoteFuel, DebitNoteDue = index => gate.Pass(index, ct) }, payload.Stdin, ct, gate);
        }
        return TrackAsync(spec, payload.Stdin, ct);
    }

    private Task<SandboxResult> TrackAsync(TaskSpec spec, ReadOnlyMemory<byte> stdin, CancellationToken ct, DebitNoteGate? gate = null)
    {
        lock (_running)
        {
            if (_closing.IsCancellationRequested)
            {
                gate?.Dispose();
                return Task.FromCanceled<SandboxResult>(_closing.Token);
            }
            var run = RunTrackedAsync(spec, stdin, ct, gate);
            _running.Add(run);
            return run;
        }
    }

    private async Task<SandboxResult> RunTrackedAsync(TaskSpec spec, ReadOnlyMemory<byte> stdin, CancellationToken ct, DebitNoteGate? gate)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, _closing.Token);
        // The run completes on a sandbox thread and posts back: until then the node is not idle.
        using var external = gate ?? _runtime.BeginExternalWork();
        var started = _sandbox.Time.GetTimestamp();
        try
        {
            // Under virtual time the result comes in when nothing else runs off the loop, in the order runs began: a run
            // that finished before this await looked would otherwise continue inline, one that finished after would post
            // back amid the instant's other events (a few events more or fewer with the same seed).
            var result = await _runtime.Settle(_sandbox.ExecuteAsync(spec, stdin, linked.Token));
            _instruments.TaskRun(result.Outcome, result.FuelConsumed, _sandbox.Time.GetElapsedTime(started));
            _instruments.MeteringRuns(result.MeteringRuns, result.MeteringRerunUnarmed);
            return result;
        }
        finally
        {
            lock (_running)
            {
                _running.RemoveWhere(t => t.IsCompleted);
            }
        }
    }

    /// <summary>Cancels every run in flight and waits for them to stop, so the sandbox can be disposed.</summary>
    public async Task CloseAsync()
    {
        Task[] running;
        lock (_running)
        {
            _closing.Cancel();
            running = [.. _running];
        }
        try
        {
            await Task.WhenAll(running);
        }
        catch (Exception e) when (e is OperationCanceledException or AggregateException)
        {
        }
    }

    /// <summary>True when this sandbox applies exactly these limits (not capped lower), so a re-run is comparable.</summary>
    public bool CanReproduce(long fuelLimit, long memoryLimitBytes) =>
        (ulong)Math.Max(1, fuelLimit) <= _sandbox.Options.DefaultFuel && memoryLimitBytes <= _sandbox.Options.MaxMemoryBytes
        && _sandbox.Options.MaxStdoutBytes == ComputeRuntime.MaxOutputBytes;
}
