using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Credits;

using Potluck.Scheduler.Providing;
using Potluck.Scheduler.Requesting;
using Potluck.Scheduler.Sandbox;
using Potluck.Scheduler.Verification;

namespace Potluck.Node.Compute;

/// <summary>How a node takes part in compute: whether it provides, what it offers, how it requests.</summary>
public sealed class ComputeNodeOptions
{
    /// <summary>Where the ledger (<c>ledger.db</c>), the module store (<c>modules/</c>) and compiled modules (<c>cache/</c>) live.</summary>
    public required string DataDir { get; init; }

    /// <summary>Serve leases and publish advertisements. Default true.</summary>
    public bool Provide { get; init; } = true;

    /// <summary>Cores, memory and price offered, and the provider's protocol limits.</summary>
    public ProviderOptions Provider { get; init; } = new();

    public ComputeClientOptions Client { get; init; } = new();

    public FraudOptions Fraud { get; init; } = new();

    public CreditsOptions Credits { get; init; } = new();

    /// <summary>
    /// Sandbox limits. The cache folder defaults to <c>{DataDir}/cache</c>; stdout is always capped at
    /// <see cref="Scheduler.Execution.ComputeRuntime.MaxOutputBytes"/> so that every node's results compare.
    /// </summary>
    public SandboxOptions Sandbox { get; init; } = new();

    /// <summary>Seed of the node's <see cref="Random"/> (request ids, ranking, sampling); null draws one.</summary>
    public int? Seed { get; init; }

    /// <summary>The sandbox's clock for wall-clock limits and cancellation; the system clock when null (even under virtual time).</summary>
    public TimeProvider? SandboxTime { get; init; }

    /// <summary>Test hook: wraps the provider's executor (a cheating or hanging provider).</summary>
    internal Func<ITaskExecutor, ITaskExecutor>? ExecutorDecorator { get; init; }
}
