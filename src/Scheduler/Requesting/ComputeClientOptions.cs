using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Matching;
using Potluck.Scheduler.Verification;

namespace Potluck.Scheduler.Requesting;

/// <summary>How a <see cref="ComputeClient"/> chooses, retries, verifies and pays.</summary>
public sealed record ComputeClientOptions
{
    /// <summary>Leases tried per submission (per replica) before giving up. Default 5.</summary>
    public int MaxAttempts { get; init; } = 5;

    /// <summary>Deadline of a lease, from its request. Default 10 minutes.</summary>
    public TimeSpan LeaseDeadline { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>How long to wait for an advertisement when no provider is known. Default 30 s.</summary>
    public TimeSpan WaitForProviders { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How long a submission waits in all for a core while every provider that fits is busy (a busy refusal is not an
    /// attempt: the provider is asked again once its advertisement says a core is free). Default 1 hour.
    /// </summary>
    public TimeSpan WaitForCapacity { get; init; } = TimeSpan.FromHours(1);

    /// <summary>
    /// Longest wait before a provider that refused a submission as busy is asked again when its advertisement has not
    /// changed (a core taken and freed within its publishing gap leaves it unchanged): 1 s after the first refusal,
    /// doubling up to this; a lease lost on the way (a provider restarted or silent) is asked again after this. Default 2 s.
    /// </summary>
    public TimeSpan BusyRetryInterval { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>How long a receipt delivery may take before it is left for <see cref="ComputeClient.RedeliverReceiptsAsync"/>. Default 30 s.</summary>
    public TimeSpan ReceiptTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How often receipts settled but not acknowledged (a provider away, a broken stream) are sent again while the node
    /// runs, not only at start-up. Default 30 s.
    /// </summary>
    public TimeSpan ReceiptRetryInterval { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How long a newly connected peer gets to answer <c>/potluck/ad/1.0.0</c> with its advertisement. Default 10 s.</summary>
    public TimeSpan AdvertisementFetchTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Lease streams (one per provider) kept open; past this, those no lease is using are closed and a later lease
    /// with that provider opens a new one. Default 256.
    /// </summary>
    public int MaxLeaseChannels { get; init; } = 256;

    public LeaseOptions Lease { get; init; } = new();

    public AdvertisementOptions Advertising { get; init; } = new();

    public SelectorOptions Selector { get; init; } = new();

    public VerificationOptions Verification { get; init; } = new();

    public CreditsOptions Credits { get; init; } = new();
}
