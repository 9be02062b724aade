namespace Potluck.Scheduler.Advertising;

/// <summary>Every limit a remote advertiser controls, and the local publishing schedule.</summary>
public sealed record AdvertisementOptions
{
    /// <summary>Largest signed envelope accepted, checked before any decoding. Default 4 KiB.</summary>
    public int MaxEnvelopeBytes { get; init; } = 4096;

    /// <summary>Most listen addresses in one advertisement. Default 16.</summary>
    public int MaxListenAddresses { get; init; } = 16;

    /// <summary>Longest runtime or runtime-version string, in characters. Default 64.</summary>
    public int MaxRuntimeLength { get; init; } = 64;

    /// <summary>Most cores one advertisement may claim. Default 1024.</summary>
    public int MaxCores { get; init; } = 1024;

    /// <summary>
    /// Most providers the book holds; beyond it a refused provider's or a random stranger's entry makes way, never one in
    /// good standing for a stranger (<see cref="AdvertisementBook"/>). Default 256 (go-libp2p-kad-dht's provider cache):
    /// a requester chooses among tens.
    /// </summary>
    public int MaxProviders { get; init; } = 256;

    /// <summary>Longest lifetime an advertisement may claim from now. Default 1 hour.</summary>
    public TimeSpan MaxLifetime { get; init; } = TimeSpan.FromHours(1);

    /// <summary>Clock difference tolerated for issue and expiry times. Default 30 seconds.</summary>
    public TimeSpan ClockSkew { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Lifetime the local issuer gives its advertisements. Default 5 minutes.</summary>
    public TimeSpan Lifetime { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>How often the local issuer republishes an unchanged advertisement. Default 1 minute.</summary>
    public TimeSpan PublishInterval { get; init; } = TimeSpan.FromMinutes(1);

    /// <summary>The shortest gap between two publications, even when the content keeps changing. Default 2 seconds.</summary>
    public TimeSpan MinPublishGap { get; init; } = TimeSpan.FromSeconds(2);
}
