using Potluck.Protocol.Identity;
using Potluck.Scheduler.Advertising;

namespace Potluck.Scheduler.Matching;

/// <summary>What a requester needs from a provider. Zero or null means "no requirement".</summary>
public sealed record Requirements
{
    /// <summary>Memory the task needs, in bytes.</summary>
    public long MinMemoryBytes { get; init; }

    /// <summary>Highest price acceptable, in credits per million fuel; null for any.</summary>
    public long? MaxPricePerMegaFuel { get; init; }

    /// <summary>Slowest acceptable measured speed, in fuel per second.</summary>
    public long MinSpeedFuelPerSecond { get; init; }

    /// <summary>Providers not to use (already tried, distrusted, ourselves).</summary>
    public IReadOnlySet<PeerId> ExcludedPeers { get; init; } = new HashSet<PeerId>();

    /// <summary>
    /// Providers whose advertisement says every core is taken but where this node's own leases have completed since it
    /// arrived: a core is free for this node (<c>LeaseWindows.Freed</c>), so they are not busy here.
    /// </summary>
    public IReadOnlySet<PeerId>? FreedHere { get; init; }

    public string Runtime { get; init; } = AdvertisementProtocol.WasiPreview1;

    /// <summary>The exact runtime version required (fuel costs depend on it); null for any.</summary>
    public string? RuntimeVersion { get; init; }

    /// <summary>Policy flags the provider must all advertise.</summary>
    public ProviderPolicyFlags RequiredPolicy { get; init; }

    /// <summary>How many ranked providers to return at most. Default 8.</summary>
    public int MaxResults { get; init; } = 8;
}

/// <summary>Why a provider did not fit; each provider counts under the first reason that applies, in this order.</summary>
public enum MismatchReason
{
    Excluded,
    Expired,
    WrongRuntime,
    MissingPolicy,
    TooLittleMemory,
    TooSlow,
    TooExpensive,
    Busy,
}
