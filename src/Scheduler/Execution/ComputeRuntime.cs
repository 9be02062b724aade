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

    /// <summary>"wasmtime &lt;version&gt;", from the Wasmtime assembly this node runs.</summary>
    public static string Version { get; } = "wasmtime " + (typeof(Wasmtime.Engine).Assembly
        .GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion?.Split('+')[0]
        ?? typeof(Wasmtime.Engine).Assembly.GetName().Version?.ToString(3) ?? "unknown");
}
