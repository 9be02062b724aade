using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Providing;

/// <summary>What a provider offers and charges, and the limits of its protocols.</summary>
public sealed record ProviderOptions
{
    /// <summary>Leases run at once, at most (each holds one core). Default 1.</summary>
    public int Cores { get; init; } = 1;

    /// <summary>Memory offered to all leases together. Default 1 GiB.</summary>
    public long MemoryBytes { get; init; } = 1L << 30;

    /// <summary>
    /// Disk kept for others' work, in bytes: the modules this node was sent and their compiled forms (the sandbox's cache),
    /// together. A lease whose module does not fit is refused ("disk full"), after deleting the least recently used files
    /// no lease in progress needs. Default 1.5 GiB.
    /// </summary>
    public long DiskBytes { get; init; } = 1536L << 20;

    /// <summary>Price in micro-credits (the ledger's unit, a millionth of a credit) per million fuel. Default 10.</summary>
    public long PricePerMegaFuel { get; init; } = 10;

    /// <summary>Speed advertised, fuel per second on one core, and assumed for deadlines until measured. Default 500 million.</summary>
    public long SpeedFuelPerSecond { get; init; } = 500_000_000;

    /// <summary>
    /// A lease's deadline is at most its fuel limit at the provider's measured speed times this (plus the input's grace and
    /// transfer time, at least <see cref="MinRunTime"/>), so a requester cannot hold a core for a day with a tiny task. Default 4.
    /// </summary>
    public double DeadlineSlack { get; init; } = 4;

    /// <summary>The least run time a lease's deadline allows. Default 30 seconds.</summary>
    public TimeSpan MinRunTime { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Most fuel one lease may ask for. Default 2·10^10 (the sandbox's default cap).</summary>
    public long MaxFuel { get; init; } = 20_000_000_000;

    /// <summary>Most memory one lease may ask for. Default 256 MiB (the sandbox's default cap).</summary>
    public long MaxMemoryPerLease { get; init; } = 256L << 20;

    /// <summary>Whether modules not held are fetched from the requester. Default true.</summary>
    public bool AcceptUnknownModules { get; init; } = true;

    /// <summary>Finished leases whose attestation is kept to check the receipt that pays for it. Default 4096.</summary>
    public int MaxRememberedResults { get; init; } = 4096;

    /// <summary>
    /// Messages queued for one lease stream before the stream is reset as too slow. A requester runs all its leases
    /// with this provider on one stream, each with a few messages in flight (offer, heartbeats, result, receipt
    /// acknowledgement), so the bound is per stream, not per lease; what the queue can hold is bounded by the
    /// leases that capacity admits. Default 1024.
    /// </summary>
    public int MaxQueuedMessages { get; init; } = 1024;

    /// <summary>
    /// Receipts from one requester's lease streams (all of them together) waiting to be recorded, besides the one being
    /// recorded. They are answered one at a time in arrival order; while this many wait, a stream that sent one is read no
    /// further, so a requester that floods receipts is held back by its streams' flow control instead of starting ledger
    /// work without bound. Default 16.
    /// </summary>
    public int MaxQueuedReceipts { get; init; } = 16;

    /// <summary>
    /// Most a requester may owe this provider for completed, unpaid leases (micro-credits) before it gets no new lease
    /// until it pays. Default 1,000,000 (one credit): what a stranger can take without paying is bounded by this.
    /// </summary>
    public long CreditLimitPerRequester { get; init; } = 1_000_000;

    /// <summary>
    /// The share of cores requesters without standing here (strangers: no work supplied to this node; debtors: more taken
    /// than supplied) may hold at once, at least one unless 0. They are served only from that idle capacity, at the lowest
    /// priority: a requester in good standing that finds no free core preempts the newest of their leases. Default 0.5; a
    /// private cluster may set 1.
    /// </summary>
    public double StrangerCoreShare { get; init; } = 0.5;

    /// <summary>Leases one requester may hold with this provider at once (offered or running). Default 4.</summary>
    public int MaxLeasesPerRequester { get; init; } = 4;

    public LeaseOptions Lease { get; init; } = new();

    public AdvertisementOptions Advertising { get; init; } = new();

    public CreditsOptions Credits { get; init; } = new();
}
