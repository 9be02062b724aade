using Potluck.Protocol.Runtime;

namespace Potluck.Scheduler.Verification;

/// <summary>How often results are re-checked.</summary>
public sealed record VerificationOptions
{
    /// <summary>
    /// The lowest verification probability, however long a provider's record: never zero, so cheating always risks
    /// being caught. Default 0.05.
    /// </summary>
    public double Floor { get; init; } = 0.05;

    /// <summary>
    /// Results from a provider that are verified with certainty before its rate starts to decay: a new identity is
    /// checked at rate 1 for its first this many results (BOINC asks for 10 consecutive valid results), so a caught
    /// cheater that starts over under a fresh identity gains nothing before it has done this much honest work. Default
    /// 10: then the rate is max(floor, 1/(n+1)) for the n-th verified result after those.
    /// </summary>
    public int StrangerResults { get; init; } = 10;

    /// <summary>Most replicas a high-value task may ask for. Default 5.</summary>
    public int MaxReplicas { get; init; } = 5;

    internal void Validate()
    {
        if (!(Floor > 0 && Floor <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(Floor), Floor, "the floor must be in (0, 1]");
        }
        ArgumentOutOfRangeException.ThrowIfNegative(StrangerResults);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(MaxReplicas);
    }
}

/// <summary>
/// The adaptive sampling rate of result verification, in the spirit of BOINC's adaptive replication: a provider
/// is always checked for its first <see cref="VerificationOptions.StrangerResults"/> results; each consecutive verified
/// result after those lowers its rate as 1/(n+1), down to
/// <see cref="VerificationOptions.Floor"/>, never to zero; a failed or inconclusive check starts it over. Pure:
/// the caller brings the record and the security generator (a provider must not be able to predict a check).
/// </summary>
public sealed class VerificationPolicy
{
    private readonly VerificationOptions _options;

    public VerificationPolicy(VerificationOptions options)
    {
        options.Validate();
        _options = options;
    }

    public VerificationOptions Options => _options;

    /// <summary>The probability of checking the next result of a provider with <paramref name="consecutiveVerified"/> verified results in a row.</summary>
    public double Rate(int consecutiveVerified)
    {
        var n = Math.Max(0, consecutiveVerified - (_options.StrangerResults - 1));
        if (consecutiveVerified < _options.StrangerResults)
        {
            return 1.0;
        }
        return Math.Max(_options.Floor, 1.0 / (n + 1));
    }

    /// <summary>
    /// Whether to check this result: drawn at <see cref="Rate"/>, or at <paramref name="requested"/> when the
    /// submission names a rate (clamped to [floor, 1]: a caller can ask for more checking, never for none).
    /// </summary>
    public bool ShouldVerify(int consecutiveVerified, double? requested, ISecureRandom random)
    {
        var rate = DeclaredRate(consecutiveVerified, requested);
        return rate >= 1.0 || random.NextDouble() < rate;
    }

    /// <summary>
    /// The rate a requester declares in a lease's terms (<see cref="LeaseAudit"/>): <see cref="Rate"/>, or
    /// <paramref name="requested"/> clamped to [floor, 1].
    /// </summary>
    public double DeclaredRate(int consecutiveVerified, double? requested) =>
        requested is { } r && !double.IsNaN(r) ? Math.Clamp(r, _options.Floor, 1.0) : Rate(consecutiveVerified);
}
