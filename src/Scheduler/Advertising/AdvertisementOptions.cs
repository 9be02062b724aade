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

    /// <summary>
    /// Lifetime the local issuer gives its advertisements. Default 30 minutes: three <see cref="PublishInterval"/>s, so an
    /// advertisement outlives two lost republications (Kademlia's provider records live 48 h and are republished every
    /// 22 h in go-libp2p-kad-dht: about two intervals), within <see cref="MaxLifetime"/> (1 h). A provider that goes away
    /// is not chosen for that long: a requester that cannot dial it hides it after <see cref="UnreachableGrace"/>
    /// (<see cref="AdvertisementBook.MarkUnreachable"/>).
    /// </summary>
    public TimeSpan Lifetime { get; init; } = TimeSpan.FromMinutes(30);

    /// <summary>
    /// How often the local issuer republishes an <em>unchanged</em> advertisement. Default 10 minutes (it was 1 minute).
    /// Every node hears every provider's advertisement (~5 copies each), so N/10 providers republishing every minute cost
    /// every node a message per provider per minute: with 10,000 providers, ~170 advertisements a second reaching every
    /// node, the term that made a simulated node's work grow with the mesh. Kademlia republishes provider records hourly
    /// (the original paper) to every 22 h (go-libp2p-kad-dht); an advertisement also carries capacity, but a change of
    /// content is not held to this interval (it goes out after <see cref="MinPublishGap"/>), so the republication only
    /// refreshes an unchanged offer before it expires (<see cref="Lifetime"/>, three of these). A newcomer does not wait
    /// for it: it asks a few peers for a sample of their books (<see cref="SampleSize"/>).
    /// </summary>
    public TimeSpan PublishInterval { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>The shortest gap between two publications, even when the content keeps changing. Default 2 seconds.</summary>
    public TimeSpan MinPublishGap { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// The shortest gap before a load-only change goes out: the free cores changed and nothing else, and the provider is as
    /// busy or as free as it was (2 of 4 cores free, then 1). Default 1 minute (at least <see cref="MinPublishGap"/>, at
    /// most <see cref="PublishInterval"/>; any other publication carries the count sooner). A requester chooses among
    /// providers by busy or free alone and the provider checks its capacity again when a lease is asked for, so the exact
    /// count need not reach every node on every lease's start and end: each publication reaches every node (~4 copies),
    /// and these were most of a busy mesh's advertisements (146 of 196 at 500 simulated nodes, README "Simulated meshes").
    /// Going busy (no core free) or free again still goes out after <see cref="MinPublishGap"/>.
    /// </summary>
    public TimeSpan LoadChangeGap { get; init; } = TimeSpan.FromMinutes(1);

    /// <summary>
    /// Most advertisements one book sample (<see cref="AdvertisementProtocol.SampleProtocolId"/>) carries, asked and answered.
    /// Default 32: a requester chooses among tens (<see cref="MaxProviders"/> holds 256); an answer beyond it is garbage.
    /// </summary>
    public int SampleSize { get; init; } = 32;

    /// <summary>
    /// Most bytes of envelopes one sample answer carries, checked before each envelope is read (its length prefix
    /// against what is left). Default 64 KiB: 32 envelopes of ~0.3 KiB fit many times over; 32 of
    /// <see cref="MaxEnvelopeBytes"/> would not.
    /// </summary>
    public int SampleMaxBytes { get; init; } = 64 * 1024;

    /// <summary>
    /// A node asks newly connected peers for a sample only while its book holds fewer live advertisements than this.
    /// Default 32 (<see cref="SampleSize"/>): one full answer lifts a newcomer above it.
    /// </summary>
    public int SampleBelow { get; init; } = 32;

    /// <summary>
    /// Peers asked for a sample within <see cref="SampleWindow"/>, at most (those that answer; a peer that does not speak
    /// the protocol, an older node, is not counted). Default 3.
    /// </summary>
    public int SamplePeers { get; init; } = 3;

    /// <summary>The window <see cref="SamplePeers"/> counts over. Default 10 minutes (<see cref="PublishInterval"/>).</summary>
    public TimeSpan SampleWindow { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>
    /// How long after a lease found a provider unreachable (the dial failed) its advertisement may still be chosen; then
    /// the book hides it until the provider publishes a newer one or connects (and a sample never hands it on). Default
    /// 2 minutes: a short outage costs a few dials, a provider gone for good stops being chosen long before its 30-minute
    /// advertisement expires.
    /// </summary>
    public TimeSpan UnreachableGrace { get; init; } = TimeSpan.FromMinutes(2);
}
