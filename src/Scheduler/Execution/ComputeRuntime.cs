using System.Reflection;

namespace Potluck.Scheduler.Execution;

/// <summary>
/// Constants every node must agree on for results to be comparable: the runtime version named in ads and lease
/// terms (fuel costs depend on it) and the output cap (a task writing more ends with
/// <see cref="Leasing.ExecutionStatus.OutputTooLarge"/> everywhere, and what it wrote fits one lease result).
/// </summary>
public static class ComputeRuntime
{
    /// <summary>Most bytes of stdout a task may write: 1 MiB, the lease protocol's inline output limit.</summary>
    public const int MaxOutputBytes = 1 << 20;

    /// <summary>
    /// Version of Potluck's fuel schedule for host calls (<c>Sandbox.WasiPreview1</c>): 2 charges fuel per byte that
    /// <c>random_get</c>, <c>fd_read</c>, <c>fd_write</c> and <c>args_get</c> touch. Results of different schedules differ
    /// in fuel, so nodes on different schedules never compare results.
    /// </summary>
    public const int HostFuelSchedule = 2;

    /// <summary>"wasmtime &lt;version&gt; fuel/&lt;schedule&gt;", from the Wasmtime assembly this node runs and <see cref="HostFuelSchedule"/>.</summary>
    public static string Version { get; } = "wasmtime " + (typeof(Wasmtime.Engine).Assembly
        .GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion?.Split('+')[0]
        ?? typeof(Wasmtime.Engine).Assembly.GetName().Version?.ToString(3) ?? "unknown") + $" fuel/{HostFuelSchedule}";
}
