using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;

namespace Potluck.Scheduler.Verification;

/// <summary>What comparing a claimed result with a re-run found.</summary>
public enum CheckVerdict
{
    /// <summary>The re-run agrees in outcome, exit code, output and fuel.</summary>
    Match,
    /// <summary>Both are deterministic and they differ: the claim is false.</summary>
    Mismatch,
    /// <summary>They differ, but one side may legitimately differ between machines (stack overflow, wall clock, a claimed trap).</summary>
    Inconclusive,
}

/// <summary>
/// Re-runs the task of a fraud proof within the terms' fuel limit and decides it. Also the one rule by which
/// requesters compare a provider's attested result with a re-run (<see cref="Compare"/>), so a requester never
/// publishes a proof the rest of the network would refute.
/// </summary>
public sealed class FraudChecker
{
    private readonly SandboxTaskExecutor _executor;
    private readonly FraudOptions _options;

    public FraudChecker(SandboxTaskExecutor executor, FraudOptions options)
    {
        _executor = executor;
        _options = options;
    }

    /// <summary>
    /// Fraud is a mismatch where our re-run is deterministic and the claim is not a wall-clock timeout (which is
    /// never paid, so never worth proving). Exit codes, traps, fuel exhaustion and memory limits are outcomes, compared
    /// exactly like outputs and fuel: a claimed trap that a deterministic re-run does not reproduce is invented. A re-run
    /// that is not deterministic (a stack overflow, a wall clock here) proves nothing either way.
    /// </summary>
    public static CheckVerdict Compare(RunSummary claimed, RunSummary rerun)
    {
        if (claimed.SameAs(rerun))
        {
            return CheckVerdict.Match;
        }
        if (!rerun.Deterministic || !claimed.Deterministic || claimed.Outcome is AttestedOutcome.TimedOut)
        {
            return CheckVerdict.Inconclusive;
        }
        return CheckVerdict.Mismatch;
    }

    /// <summary>Inspects and re-runs a proof: <see cref="CheckVerdict.Mismatch"/> means the proof stands.</summary>
    public async Task<(FraudProofCheck Check, CheckVerdict? Verdict)> CheckAsync(FraudProof proof, CancellationToken ct)
    {
        var check = proof.Inspect(_options);
        if (check.Status != FraudProofStatus.Plausible)
        {
            return (check, null);
        }
        var claimed = RunSummary.Of(check.Attestation!.Attestation);
        if (claimed.FuelUsed > check.Terms!.FuelLimit)
        {
            return (check, CheckVerdict.Mismatch);
        }
        if (!_executor.CanReproduce(check.Terms.FuelLimit, check.Terms.MemoryLimitBytes))
        {
            return (check with { Status = FraudProofStatus.TooCostly, Detail = "limits beyond this node's sandbox" }, null);
        }
        var result = await _executor.RunAsync(proof.Module, proof.Input, check.Terms.FuelLimit, check.Terms.MemoryLimitBytes, ct);
        return (check, Compare(claimed, RunSummary.Of(result)));
    }
}
