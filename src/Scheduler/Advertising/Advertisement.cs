using MessagePack;

namespace Potluck.Scheduler.Advertising;

/// <summary>What a provider promises beyond capacity and price. Unknown bits are kept, never rejected.</summary>
[Flags]
public enum ProviderPolicyFlags : uint
{
    None = 0,
    /// <summary>Fetches modules it has not cached (otherwise it only runs modules it already holds).</summary>
    AcceptsUnknownModules = 1,
    /// <summary>Returns an attestation with every result.</summary>
    Attests = 2,
    /// <summary>Runs without clocks or randomness, so a result can be re-run and compared.</summary>
    Deterministic = 4,
}

/// <summary>
/// A provider's signed offer of compute, published on gossip topic <see cref="AdvertisementProtocol.Topic"/>
/// at an interval and whenever it changes. Potluck's own message: MessagePack with integer keys, carried inside a
/// signed envelope (<see cref="AdvertisementCodec"/>) whose payload is these exact bytes.
/// Times are Unix milliseconds; prices are credits per million fuel.
/// </summary>
[MessagePackObject]
public sealed record Advertisement
{
    /// <summary>The provider's peer id bytes; must be the signer's.</summary>
    [Key(0)] public byte[] PeerId { get; init; } = [];

    /// <summary>Binary multiaddrs the provider listens on.</summary>
    [Key(1)] public byte[][] ListenAddresses { get; init; } = [];

    /// <summary>Strictly increasing per provider; a receiver keeps only the highest.</summary>
    [Key(2)] public ulong Sequence { get; init; }

    [Key(3)] public long IssuedAtUnixMs { get; init; }

    [Key(4)] public long ExpiresAtUnixMs { get; init; }

    /// <summary>Leases the provider runs at once, at most.</summary>
    [Key(5)] public int Cores { get; init; }

    /// <summary>Cores free when this was issued: zero means busy.</summary>
    [Key(6)] public int AvailableCores { get; init; }

    /// <summary>Memory offered to all leases together, in bytes.</summary>
    [Key(7)] public long MemoryBytes { get; init; }

    /// <summary>Measured speed in fuel per second on one core.</summary>
    [Key(8)] public long SpeedFuelPerSecond { get; init; }

    /// <summary>Price in credits per million fuel.</summary>
    [Key(9)] public long PricePerMegaFuel { get; init; }

    /// <summary>The execution target, <see cref="AdvertisementProtocol.WasiPreview1"/>.</summary>
    [Key(10)] public string Runtime { get; init; } = AdvertisementProtocol.WasiPreview1;

    /// <summary>The exact runtime, e.g. "wasmtime 50.0.1": fuel costs depend on it.</summary>
    [Key(11)] public string RuntimeVersion { get; init; } = "";

    [Key(12)] public ProviderPolicyFlags Policy { get; init; }
}

/// <summary>Names and constants of the advertisement protocol.</summary>
public static class AdvertisementProtocol
{
    /// <summary>
    /// Request/response protocol for a provider's current signed advertisement: the requester opens a stream and
    /// reads one length-prefixed envelope. Lets a node that just joined learn providers without waiting for the
    /// next gossip round.
    /// </summary>
    public const string FetchProtocolId = "/potluck/ad/1.0.0";

    /// <summary>
    /// Request/response protocol for a sample of the advertisements a peer holds, so a node that just joined knows
    /// providers it is not connected to without waiting for their next republication
    /// (<see cref="AdvertisementOptions.PublishInterval"/>). The asker writes one length-prefixed request of two unsigned
    /// varints, the most advertisements and the most envelope bytes it takes, and closes its side; the answerer writes up to
    /// that many live advertisements it holds (<see cref="AdvertisementOptions.SampleSize"/>, chosen at random), each as
    /// one length-prefixed signed envelope exactly as its provider signed it, and closes. The asker checks every envelope as
    /// if its provider had sent it; more than it asked for, more bytes, or an envelope that does not open is a violation:
    /// the stream is reset and the peer's score lowered. A peer that does not speak it (an older node) answers "na".
    /// </summary>
    public const string SampleProtocolId = "/potluck/ads/sample/1.0.0";

    /// <summary>The gossipsub topic advertisements travel on.</summary>
    public const string Topic = "potluck/ads/1";

    /// <summary>The only runtime Potluck speaks today.</summary>
    public const string WasiPreview1 = "wasm32-wasi-preview1";

    /// <summary>Prepended to the payload before signing, so an ad signature is never valid for anything else.</summary>
    public const string SignatureDomain = "potluck-ad:";
}
