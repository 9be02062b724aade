using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Scheduler.Advertising;

namespace Potluck.Scheduler.Tests.Advertising;

internal static class Ads
{
    public static readonly DateTimeOffset T0 = new(2030, 1, 1, 12, 0, 0, TimeSpan.Zero);

    public static PrivateKey Key(int seed) => PrivateKey.FromRandom(new Random(seed));

    public static Advertisement Make(PrivateKey key, ulong sequence = 1, DateTimeOffset? issued = null, TimeSpan? lifetime = null,
        long price = 10, int cores = 4, int available = 4, long memory = 1L << 30, long speed = 1_000_000) => new()
    {
        PeerId = key.PeerId.ToBytes(),
        ListenAddresses = [Multiaddr.Parse("/ip4/127.0.0.1/tcp/4001").ToBytes()],
        Sequence = sequence,
        IssuedAtUnixMs = (issued ?? T0).ToUnixTimeMilliseconds(),
        ExpiresAtUnixMs = ((issued ?? T0) + (lifetime ?? TimeSpan.FromMinutes(5))).ToUnixTimeMilliseconds(),
        Cores = cores,
        AvailableCores = available,
        MemoryBytes = memory,
        SpeedFuelPerSecond = speed,
        PricePerMegaFuel = price,
        RuntimeVersion = "wasmtime 50.0.1",
        Policy = ProviderPolicyFlags.AcceptsUnknownModules,
    };

    public static byte[] Signed(PrivateKey key, ulong sequence = 1, DateTimeOffset? issued = null, TimeSpan? lifetime = null) =>
        AdvertisementCodec.Sign(Make(key, sequence, issued, lifetime), key);
}
