using Potluck.Protocol.Identity;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Requesting;

/// <summary>A task to run somewhere on the network: a WASI preview 1 command module, its stdin and arguments, and limits.</summary>
public sealed record TaskSubmission
{
    /// <summary>The module's bytes (binary WebAssembly). Sent to a provider only when it does not hold it already.</summary>
    public required ReadOnlyMemory<byte> Module { get; init; }

    /// <summary>Bytes given to the task on stdin.</summary>
    public ReadOnlyMemory<byte> Input { get; init; }

    /// <summary>argv[1..]; argv[0] is always "task.wasm".</summary>
    public IReadOnlyList<string> Args { get; init; } = [];

    /// <summary>Fuel budget; a task that needs more ends <see cref="ExecutionStatus.OutOfFuel"/> (and is paid in full). Default 10^9.</summary>
    public long Fuel { get; init; } = 1_000_000_000;

    /// <summary>Memory cap. Default 64 MiB.</summary>
    public long MemoryBytes { get; init; } = 64L << 20;

    /// <summary>The most paid per million fuel. Default 100.</summary>
    public long MaxPricePerMegaFuel { get; init; } = 100;

    /// <summary>Probability of re-checking the result, clamped to [floor, 1]; null uses the provider's adaptive rate.</summary>
    public double? VerifyRate { get; init; }

    /// <summary>
    /// Providers to run the task on at once, for high-value tasks (k-way replication). 1 runs it once and checks a
    /// sample. Default 1.
    /// </summary>
    public int Replicas { get; init; } = 1;

    /// <summary>How long each lease may take; null uses <see cref="ComputeClientOptions.LeaseDeadline"/>.</summary>
    public TimeSpan? Deadline { get; init; }
}

/// <summary>One lease tried for a submission.</summary>
/// <param name="Provider">Who was asked.</param>
/// <param name="Outcome">How the lease ended.</param>
/// <param name="Detail">Why, in words ("fraud: output differs from a re-run", "provider fell silent", ...).</param>
/// <param name="Paid">Micro-credits paid for it (0 when not paid).</param>
public sealed record AttemptRecord(PeerId Provider, LeaseOutcomeKind Outcome, string Detail, long Paid);

/// <summary>What came of a submission.</summary>
public sealed record SubmissionResult
{
    /// <summary>How the task itself ended: anything but Success comes with <see cref="Error"/>.</summary>
    public required ExecutionStatus Status { get; init; }

    public int ExitCode { get; init; }

    /// <summary>The task's stdout (capped at 1 MiB: more ends as <see cref="ExecutionStatus.OutputTooLarge"/>).</summary>
    public ReadOnlyMemory<byte> Output { get; init; }

    /// <summary>
    /// The task's stderr as its provider reported it (at most 64 KiB, <see cref="Leasing.LeaseOptions.MaxStderrBytes"/>):
    /// a diagnostic, not attested or verified.
    /// </summary>
    public ReadOnlyMemory<byte> Stderr { get; init; }

    /// <summary>The provider whose result this is (this node itself when only its own re-run could be trusted).</summary>
    public required PeerId Provider { get; init; }

    /// <summary>Fuel the task used.</summary>
    public long Fuel { get; init; }

    /// <summary>Micro-credits paid in all, over every attempt.</summary>
    public long Cost { get; init; }

    /// <summary>True when the result was confirmed by a re-run or by agreeing replicas.</summary>
    public bool Verified { get; init; }

    /// <summary>
    /// Set when a checker in good standing contradicted the result and no third opinion resolved it: nobody was convicted,
    /// nobody paid as verified, and the result (the sampled provider's) is unverified.
    /// </summary>
    public UnresolvedReason? Unresolved { get; init; }

    /// <summary>Leases tried (including rejected and failed ones).</summary>
    public int Attempts => History.Count;

    public IReadOnlyList<AttemptRecord> History { get; init; } = [];

    /// <summary>A clear explanation when <see cref="Status"/> is not Success.</summary>
    public string? Error { get; init; }

    public bool Succeeded => Status == ExecutionStatus.Success;
}

/// <summary>A submission that produced no result: no provider fits, credits ran out, or every attempt failed.</summary>
public sealed class SubmissionException : Exception
{
    public SubmissionException(string message, IReadOnlyList<AttemptRecord> attempts) : base(message)
    {
        Attempts = attempts;
    }

    public IReadOnlyList<AttemptRecord> Attempts { get; }

    /// <summary>When no provider fits: each reason with how many providers it kept out (e.g. "busy": 2, "refused: fuel limit over 100": 1).</summary>
    public IReadOnlyDictionary<string, int> Reasons { get; init; } = new Dictionary<string, int>();
}
