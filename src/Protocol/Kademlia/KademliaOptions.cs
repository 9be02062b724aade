namespace Potluck.Protocol.Kademlia;

public enum KademliaMode
{
    /// <summary>Queries others; registers no handler and does not advertise the protocol, so nobody adds us.</summary>
    Client,
    /// <summary>Answers queries and advertises the protocol.</summary>
    Server,
}

/// <summary>Parameters and limits of the DHT; every limit a remote controls has a documented default.</summary>
public sealed record KademliaOptions
{
    /// <summary>
    /// Protocol id. Default <see cref="KademliaService.DefaultProtocolId"/> (<c>/potluck/kad/1.0.0</c>) so Potluck nodes
    /// form their own DHT; <see cref="KademliaService.IpfsProtocolId"/> joins the public one.
    /// </summary>
    public string ProtocolId { get; init; } = KademliaService.DefaultProtocolId;

    public KademliaMode Mode { get; init; } = KademliaMode.Server;

    /// <summary>
    /// The node follows AutoNAT's verdict (go-libp2p's ModeAuto): a listening node found private switches to client mode
    /// (it stops advertising the protocol, so peers drop it from their tables instead of timing out on it) and back to
    /// server mode when found public; while unknown it keeps its mode. Used by the node (the service itself only offers
    /// <see cref="KademliaService.SetMode"/>). Default false: a DHT client is in nobody's routing table, and today a
    /// requester whose neighbours run no compute finds a private provider only through the DHT (see the README,
    /// "Behind NAT").
    /// </summary>
    public bool FollowReachability { get; init; }

    /// <summary>k: bucket size, peers returned per response, replication factor. Default 20 (spec).</summary>
    public int K { get; init; } = 20;

    /// <summary>α: concurrent requests per lookup. Default 3 (spec).</summary>
    public int Alpha { get; init; } = 3;

    /// <summary>Peers waiting per bucket to replace unresponsive ones. Default 5.</summary>
    public int ReplacementCacheSize { get; init; } = 5;

    /// <summary>Largest message read (length prefix checked before allocating). Default 1 MiB (go-libp2p allows 4 MiB).</summary>
    public int MaxMessageSize { get; init; } = 1 << 20;

    /// <summary>Longest key accepted in any request or record. Default 1 KiB.</summary>
    public int MaxKeySize { get; init; } = 1024;

    /// <summary>Largest record value stored or accepted. Default 16 KiB (IPNS records are capped at 10 KiB).</summary>
    public int MaxRecordSize { get; init; } = 16 * 1024;

    /// <summary>closerPeers + providerPeers entries accepted in one message. Default 100 (k·5).</summary>
    public int MaxPeersPerMessage { get; init; } = 100;

    /// <summary>Addresses read per peer entry; the rest are ignored. Default 16.</summary>
    public int MaxAddressesPerPeer { get; init; } = 16;

    /// <summary>Requests answered on one inbound stream before it is closed. Default 32.</summary>
    public int MaxRequestsPerStream { get; init; } = 32;

    /// <summary>Records stored for others and ourselves. Default 1,024.</summary>
    public int MaxRecords { get; init; } = 1024;

    /// <summary>Keys with provider records. Default 10,000.</summary>
    public int MaxProviderKeys { get; init; } = 10_000;

    /// <summary>Providers kept per key (and returned per response). Default 20.</summary>
    public int MaxProvidersPerKey { get; init; } = 20;

    /// <summary>Per-request timeout (dial, stream, response). Default 10 s.</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Whole-lookup timeout. Default 60 s.</summary>
    public TimeSpan LookupTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>An inbound stream idle for this long is closed. Default 60 s.</summary>
    public TimeSpan InboundIdleTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// A peer that closed its connection to us (it trims: it is full) is not dialled again for a lookup's query for this
    /// long while the routing table holds at least 2·k peers (the lookup asks another; a small table asks anyway), and a
    /// full bucket keeps such a peer or a connected one without a liveness probe. Zero: off. Default 30 s (the host's
    /// trim grace period is 20 s).
    /// </summary>
    public TimeSpan RedialBackoff { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// When a lookup of the routing table's own (the join's self-lookup, a bucket refresh) ends while connections are scarce (fewer free than k under the host's limits), close the
    /// connections it dialled that carry nothing but background streams (<see cref="BackgroundProtocols"/>) and whose peer
    /// is unprotected and untagged, instead of leaving them for the host to trim when the next connection arrives (which
    /// may close one in use). It never applies to a host with room to spare. Default off: at 100 simulated nodes capped
    /// at 32 it cut trims by 85 % and events by 7–9 %, but one seed's slowest lease of 40 took 1.36× main's (README,
    /// "Simulated meshes").
    /// </summary>
    public bool CloseAfterLookup { get; init; }

    /// <summary>
    /// Protocol prefixes whose open streams do not keep a lookup's connection (<see cref="CloseAfterLookup"/>): ones every
    /// connection carries (gossip to a peer outside our mesh, identify, ping). An open DHT stream keeps it: the lookup's
    /// own requests are over when it ends, so one still open is another lookup's or the peer's request to us. Default
    /// the host's, <see cref="Host.HostOptions.DefaultBackgroundProtocols"/>.
    /// </summary>
    public IReadOnlyList<string> BackgroundProtocols { get; init; } = Host.HostOptions.DefaultBackgroundProtocols;

    /// <summary>Candidates one lookup remembers. Default 200 (10·k).</summary>
    public int MaxLookupCandidates { get; init; } = 200;

    /// <summary>How often maintenance (expiry, refresh, republish) runs. Default 1 min.</summary>
    public TimeSpan MaintenanceInterval { get; init; } = TimeSpan.FromMinutes(1);

    /// <summary>A bucket with no lookup for this long is refreshed. Default 10 min (go-libp2p-kad-dht).</summary>
    public TimeSpan BucketRefreshInterval { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>
    /// Time over which a join's bucket refreshes are spread, after its self-lookup: the j-th of the m buckets it did not
    /// cover becomes due for the periodic refresh (<see cref="MaintenanceInterval"/>) at (j + 1)/m of it, and is looked
    /// up then only if no lookup for a key in it ran meanwhile (go-libp2p-kad-dht refreshes a bucket only when no query
    /// used it within <see cref="BucketRefreshInterval"/>); a full one counts as refreshed at the join. So a node's
    /// refreshes, then and every interval after, come one or two at a time instead of all at once, and a thousand nodes
    /// that join together do not each dial for every bucket in their first seconds. Zero: every due bucket at once,
    /// before <see cref="KademliaService.BootstrapAsync"/> returns (before 2026-12-04). At most
    /// <see cref="BucketRefreshInterval"/>. Default 10 min (the refresh interval).
    /// </summary>
    public TimeSpan JoinRefreshSpread { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>Highest bucket (common prefix length) refreshed. Default 15, as go-libp2p-kad-dht.</summary>
    public int MaxRefreshBucket { get; init; } = 15;

    /// <summary>Records received from others are dropped after this. Default 36 h (go's maxRecordAge).</summary>
    public TimeSpan RecordTtl { get; init; } = TimeSpan.FromHours(36);

    /// <summary>Our own records are stored again at the closest peers this often. Default 22 h.</summary>
    public TimeSpan RecordRepublishInterval { get; init; } = TimeSpan.FromHours(22);

    /// <summary>Provider records expire after this. Default 48 h (go's ProvideValidity).</summary>
    public TimeSpan ProviderTtl { get; init; } = TimeSpan.FromHours(48);

    /// <summary>What we provide is announced again this often. Default 22 h (go's reprovide interval).</summary>
    public TimeSpan ProviderRepublishInterval { get; init; } = TimeSpan.FromHours(22);

    /// <summary>Validators by key namespace; records without one are refused. Default: <c>/pk/</c> only.</summary>
    public RecordValidatorRegistry Validators { get; init; } = RecordValidatorRegistry.CreateDefault();

    internal LookupOptions LookupOptions => new() { K = K, Alpha = Alpha, PeerTimeout = RequestTimeout, MaxCandidates = Math.Max(MaxLookupCandidates, K), StayWithinK = true };
}
