using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;

namespace Potluck.Node.Hosting;

/// <summary>
/// Start-up range checks of <c>compute:accounting:*</c> and <c>compute:credits:holdback</c>, run by
/// <see cref="PotluckOptionsValidator"/>; each message names the key and what would be right.
/// </summary>
internal static class TrustOptionsChecks
{
    /// <summary>Longest holdback accepted: 30 days (a provider's earnings held longer than that are no incentive).</summary>
    public static readonly TimeSpan MaxHoldback = TimeSpan.FromDays(30);

    public static IEnumerable<string> Validate(AccountingOptions a, CreditsOptions credits, string prefix = "compute")
    {
        if (credits.Holdback < TimeSpan.Zero || credits.Holdback > MaxHoldback)
        {
            yield return $"'{prefix}:credits:holdback' is {credits.Holdback}; it must be from 00:00:00 (off) to {MaxHoldback.TotalDays:0}.00:00:00, such as 01:00:00";
        }
        var key = prefix + ":accounting";
        if (a.ExchangeTimeout <= TimeSpan.Zero || a.ExchangeTimeout > TimeSpan.FromMinutes(10))
        {
            yield return $"'{key}:exchangeTimeout' is {a.ExchangeTimeout}; it must be a positive duration of at most 00:10:00, such as 00:00:10";
        }
        if (a.RetryInterval < TimeSpan.FromSeconds(1) || a.RetryInterval > TimeSpan.FromDays(1))
        {
            yield return $"'{key}:retryInterval' is {a.RetryInterval}; it must be from 00:00:01 to 1.00:00:00, such as 00:00:30";
        }
        if (a.ProposeDelay < TimeSpan.Zero || a.ProposeDelay > TimeSpan.FromMinutes(1))
        {
            yield return $"'{key}:proposeDelay' is {a.ProposeDelay}; it must be from 00:00:00 to 00:01:00, such as 00:00:00.2";
        }
        if (a.MaxRetriesPerRound is < 1 or > 100_000)
        {
            yield return $"'{key}:maxRetriesPerRound' is {a.MaxRetriesPerRound}; it must be from 1 to 100000, such as 64";
        }
        // An honest half-block is about 420 bytes (its payload under 256): smaller limits would refuse honest peers.
        if (a.Chain.MaxBlockBytes is < 512 or > 64 * 1024)
        {
            yield return $"'{key}:chain:maxBlockBytes' is {a.Chain.MaxBlockBytes}; it must be from 512 to 65536, such as 7168";
        }
        if (a.Chain.MaxPayloadBytes < 256 || a.Chain.MaxPayloadBytes > a.Chain.MaxBlockBytes)
        {
            yield return $"'{key}:chain:maxPayloadBytes' is {a.Chain.MaxPayloadBytes}; it must be from 256 to 'compute:accounting:chain:maxBlockBytes' ({a.Chain.MaxBlockBytes}), such as 6912";
        }
    }
}
