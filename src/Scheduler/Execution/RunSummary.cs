using System.Security.Cryptography;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Sandbox;

namespace Potluck.Scheduler.Execution;

/// <summary>
/// What a run produced, in the terms an attestation states and a verifier compares: outcome, exit code, output
/// hash and size, and fuel. <see cref="Deterministic"/> is false where another machine may legitimately end
/// differently (a wall-clock timeout, a stack overflow), so such a run is never evidence of fraud.
/// </summary>
public sealed record RunSummary(AttestedOutcome Outcome, int ExitCode, byte[] OutputHash, long OutputSize, long FuelUsed, bool Deterministic)
{
    /// <summary>The stated facts of a signed attestation (its determinism is unknown, so taken as true).</summary>
    public static RunSummary Of(Attestation a) =>
        new(a.Outcome, a.ExitCode, a.OutputHash, a.OutputSize, (long)Math.Min(a.FuelUsed, long.MaxValue), true);

    public static RunSummary Of(SandboxResult r) =>
        new(ExecutionMapping.ToAttested(r.Outcome), r.ExitCode ?? 0, r.StdoutSha256, r.Stdout.Length,
            (long)Math.Min(r.FuelConsumed, long.MaxValue), r.IsDeterministic);

    /// <summary>Same outcome, exit code, output and fuel.</summary>
    public bool SameAs(RunSummary other) =>
        Outcome == other.Outcome && ExitCode == other.ExitCode && OutputSize == other.OutputSize && FuelUsed == other.FuelUsed
        && OutputHash.AsSpan().SequenceEqual(other.OutputHash);
}

/// <summary>Translations between the sandbox's outcomes, the lease result's status and the attested outcome.</summary>
public static class ExecutionMapping
{
    public static AttestedOutcome ToAttested(SandboxOutcome outcome) => outcome switch
    {
        SandboxOutcome.Success or SandboxOutcome.ExitedNonZero => AttestedOutcome.Exited,
        SandboxOutcome.FuelExhausted => AttestedOutcome.OutOfFuel,
        SandboxOutcome.MemoryLimitExceeded => AttestedOutcome.OutOfMemory,
        SandboxOutcome.OutputLimitExceeded => AttestedOutcome.OutputTooLarge,
        SandboxOutcome.WallClockTimeout => AttestedOutcome.TimedOut,
        SandboxOutcome.InvalidModule => AttestedOutcome.InvalidModule,
        _ => AttestedOutcome.Trapped,
    };

    public static ExecutionStatus ToStatus(SandboxOutcome outcome) => outcome switch
    {
        SandboxOutcome.Success => ExecutionStatus.Success,
        SandboxOutcome.FuelExhausted => ExecutionStatus.OutOfFuel,
        SandboxOutcome.MemoryLimitExceeded => ExecutionStatus.OutOfMemory,
        SandboxOutcome.OutputLimitExceeded => ExecutionStatus.OutputTooLarge,
        SandboxOutcome.WallClockTimeout => ExecutionStatus.TimedOut,
        SandboxOutcome.InvalidModule => ExecutionStatus.InvalidModule,
        _ => ExecutionStatus.Trapped,
    };

    /// <summary>
    /// The attested outcome of a lease result: a <see cref="ExecutionStatus.Trapped"/> result with a non-zero exit
    /// code is a module that exited with that code; with exit code 0 it is a trap.
    /// </summary>
    public static AttestedOutcome ToAttested(ExecutionStatus status, int exitCode) => status switch
    {
        ExecutionStatus.Success => AttestedOutcome.Exited,
        ExecutionStatus.Trapped => exitCode != 0 ? AttestedOutcome.Exited : AttestedOutcome.Trapped,
        ExecutionStatus.OutOfFuel => AttestedOutcome.OutOfFuel,
        ExecutionStatus.OutOfMemory => AttestedOutcome.OutOfMemory,
        ExecutionStatus.OutputTooLarge => AttestedOutcome.OutputTooLarge,
        ExecutionStatus.TimedOut => AttestedOutcome.TimedOut,
        _ => AttestedOutcome.InvalidModule,
    };

    /// <summary>A lease result's status from an attested outcome and exit code.</summary>
    public static ExecutionStatus ToStatus(AttestedOutcome outcome, int exitCode) => outcome switch
    {
        AttestedOutcome.Exited => exitCode == 0 ? ExecutionStatus.Success : ExecutionStatus.Trapped,
        AttestedOutcome.Trapped => ExecutionStatus.Trapped,
        AttestedOutcome.OutOfFuel => ExecutionStatus.OutOfFuel,
        AttestedOutcome.OutOfMemory => ExecutionStatus.OutOfMemory,
        AttestedOutcome.OutputTooLarge => ExecutionStatus.OutputTooLarge,
        AttestedOutcome.TimedOut => ExecutionStatus.TimedOut,
        _ => ExecutionStatus.InvalidModule,
    };

    /// <summary>8-byte big-endian lease id of a request id: what attestations, receipts and the ledger name a lease by.</summary>
    public static byte[] LeaseId(ulong requestId)
    {
        var id = new byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(id, requestId);
        return id;
    }

    internal static byte[] Sha256(ReadOnlySpan<byte> data) => SHA256.HashData(data);
}
