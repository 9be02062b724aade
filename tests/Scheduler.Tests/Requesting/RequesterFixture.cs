using Potluck.Protocol.Identity;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Requesting;
using Potluck.Scheduler.Tests.Advertising;

namespace Potluck.Scheduler.Tests.Requesting;

/// <summary>The requester tests' parties, settings and advertisements (the core alone and the core in its shell).</summary>
internal static class RequesterFixture
{
    public static readonly DateTimeOffset T0 = Ads.T0;
    public static readonly PrivateKey SelfKey = Ads.Key(1);
    public static readonly PrivateKey AKey = Ads.Key(2);
    public static readonly PrivateKey BKey = Ads.Key(3);
    public static readonly PrivateKey CKey = Ads.Key(4);
    public static readonly PrivateKey DKey = Ads.Key(5);
    public static PeerId Self => SelfKey.PeerId;
    public static PeerId A => AKey.PeerId;
    public static PeerId B => BKey.PeerId;
    public static PeerId C => CKey.PeerId;
    public static PeerId D => DKey.PeerId;

    public static readonly RequesterJobSettings Settings = new()
    {
        MaxAttempts = 3,
        BusyRetryInterval = TimeSpan.FromSeconds(4),
        WaitForCapacity = TimeSpan.FromMinutes(1),
        WaitForProviders = TimeSpan.FromSeconds(30),
        StrangerResults = 10,
    };

    public static VerifiedAdvertisement Ad(PrivateKey key, ulong sequence = 1) =>
        AdvertisementCodec.TryOpen(AdvertisementCodec.Sign(Ads.Make(key, sequence), key), new AdvertisementOptions(), out var opened) == AdVerdict.Accepted
            ? opened! : throw new InvalidOperationException("the test's advertisement does not open");
}
