using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Mdns;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Multistream;
using Potluck.Protocol.Noise;
using Potluck.Protocol.Perf;
using Potluck.Protocol.Ping;
using Potluck.Protocol.Transport.Tcp;
using Potluck.Protocol.Yamux;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Providing;
using Potluck.Scheduler.Requesting;
using Potluck.Scheduler.Sandbox;
using Potluck.Scheduler.Verification;

namespace Potluck.Node.Hosting;

/// <summary>
/// Everything that shapes one node, bound from configuration (DESIGN §10): the embedded defaults, then
/// <c>potluck.json</c> in the data directory, then environment variables (<c>POTLUCK__…</c>, e.g.
/// <c>POTLUCK__COMPUTE__PROVIDER__CORES=2</c>), then command-line flags, each overriding the last. Keys are the property
/// names in camelCase, nested by section (<c>{"compute": {"provider": {"cores": 2}}}</c>). Immutable: code that needs
/// another value makes a copy with <c>with</c>. Checked at start by <see cref="PotluckOptionsValidator"/>.
/// What is not configuration (the identity key, the clock, randomness, the transports) is given to the builder.
/// </summary>
public sealed record PotluckOptions
{
    /// <summary>
    /// Where the identity key, <c>potluck.json</c>, the peer store, the ledger and the module store live. Null: nothing
    /// is persisted and the identity is new each start (tests, short-lived tools). Not read from <c>potluck.json</c>,
    /// which lives in it.
    /// </summary>
    public string? DataDir { get; init; }

    /// <summary>Addresses to listen on. Empty: a client that only dials (the DHT then runs in client mode). `potluck run`: /ip4/0.0.0.0/tcp/4100.</summary>
    public IReadOnlyList<Multiaddr> Listen { get; init; } = [];

    /// <summary>Peers to dial at start and whenever the routing table runs empty; each must end in /p2p/&lt;peer id&gt;.</summary>
    public IReadOnlyList<Multiaddr> Bootstrap { get; init; } = [];

    /// <summary>A swarm.key file: when set, the node joins that private network only (libp2p pnet). Relative paths are from the data directory.</summary>
    public string? SwarmKey { get; init; }

    /// <summary>Gossip topics the node stays in from the start (as well as those it had joined before a restart).</summary>
    public IReadOnlyList<string> Topics { get; init; } = [];

    /// <summary>Which protocols the node runs beside the host itself.</summary>
    public ProtocolsOptions Protocols { get; init; } = new();

    public DiscoveryOptions Discovery { get; init; } = new();

    public HostOptions Host { get; init; } = new();

    public TcpTransportOptions Tcp { get; init; } = new();

    public NoiseOptions Noise { get; init; } = new();

    public YamuxOptions Yamux { get; init; } = new();

    public MultistreamOptions Multistream { get; init; } = new();

    public IdentifyOptions Identify { get; init; } = new();

    public PingOptions Ping { get; init; } = new();

    public PerfOptions Perf { get; init; } = new();

    /// <summary>Circuit relay v2: serving hop (<c>relay:hop</c>), accepting relayed connections, and the relay's limits.</summary>
    public Potluck.Protocol.Relay.RelayOptions Relay { get; init; } = new();

    /// <summary>DCUtR hole punching over relayed connections (<c>protocols:dcutr</c>): attempts, timeouts, bounds.</summary>
    public Potluck.Protocol.Dcutr.DcutrOptions Dcutr { get; init; } = new();

    /// <summary>AutoNAT v2: serving dial requests, testing our own addresses, and the bounds of both (<c>autoNat:*</c>).</summary>
    public Potluck.Protocol.AutoNat.AutoNatOptions AutoNat { get; init; } = new();

    /// <summary>
    /// Gossipsub. A node's defaults are the spec's except D = 5 (spec 6) and D_hi = 6 (spec 12): each node receives a
    /// message about (mean mesh size − 2) times over, and inbound grafts fill a mesh up to D_hi (nodes' heartbeats are out
    /// of step and the mesh grows as nodes join), so D_hi, not D, sets the copies: with D_hi 12 each node of a 1,000-node
    /// mesh received about 7 copies, with D_hi 7 about 4 (meshes ≈ 6), with D_hi 6 about 3.4, every message still reaching
    /// every node (potluck sim; scripts/bench/sim.sh gossip; README "Gossip efficiency"). D_lo (4), D_out (2) and flood
    /// publishing stay the spec's. <c>gossip:d</c> and <c>gossip:dHigh</c> set them back.
    /// </summary>
    public GossipsubOptions Gossip { get; init; } = new() { D = 5, DHigh = 6 };

    /// <summary>DHT options; the mode is chosen by the node (server when it listens, client otherwise) unless set here.</summary>
    public KademliaOptions Kademlia { get; init; } = new();

    public MdnsOptions Mdns { get; init; } = new();

    public ComputeOptions Compute { get; init; } = new();

    /// <summary>The operator's preferences: when the node works for others (idle, hours, battery), what running tasks do when it stops, peers allowed or refused.</summary>
    public Home.PreferencesOptions Preferences { get; init; } = new();

    /// <summary>The local control API of `potluck run` (status, config, metrics).</summary>
    public ControlApiOptions Control { get; init; } = new();
}

/// <summary>Where `potluck run` serves its control API and /metrics.</summary>
public sealed record ControlApiOptions
{
    /// <summary>A loopback address and port, e.g. 127.0.0.1:4101 (port 0: any free port). Default 127.0.0.1:4101.</summary>
    public string Listen { get; init; } = "127.0.0.1:" + Control.ControlOptions.DefaultPort;

    /// <summary>Serve /metrics without the token (for a Prometheus that cannot read the owner-only token file). Default false.</summary>
    public bool OpenMetrics { get; init; }

    /// <summary>The listen address parsed; null when it is not a loopback address and port.</summary>
    public System.Net.IPEndPoint? Endpoint => System.Net.IPEndPoint.TryParse(Listen, out var e) && System.Net.IPAddress.IsLoopback(e.Address) ? e : null;
}

/// <summary>
/// Which protocols run on the host. All on for a node; a benchmark of bare handshakes turns them off (as go-libp2p's
/// options build a host without its services). Gossipsub and the DHT carry discovery and compute: turning either off
/// turns off what needs it (topics, bootstrap, compute's advertisements).
/// </summary>
public sealed record ProtocolsOptions
{
    /// <summary><c>/ipfs/id/1.0.0</c> and push. Default on.</summary>
    public bool Identify { get; init; } = true;

    /// <summary><c>/ipfs/ping/1.0.0</c>. Default on.</summary>
    public bool Ping { get; init; } = true;

    /// <summary><c>/perf/1.0.0</c>. Default on.</summary>
    public bool Perf { get; init; } = true;

    /// <summary>Circuit relay v2 client: dial <c>…/p2p-circuit/p2p/…</c> addresses and answer <c>/stop</c>. Default on.</summary>
    public bool Relay { get; init; } = true;

    /// <summary><c>/libp2p/dcutr</c>: upgrade relayed connections to direct ones by hole punching. Default on (needs relay).</summary>
    public bool Dcutr { get; init; } = true;

    /// <summary>Gossipsub v1.1. Default on.</summary>
    public bool Gossipsub { get; init; } = true;

    /// <summary>The Kademlia DHT. Default on.</summary>
    public bool Kademlia { get; init; } = true;

    /// <summary>Only the host: no identify, ping, perf, gossipsub or DHT.</summary>
    public static ProtocolsOptions HostOnly { get; } = new() { Identify = false, Ping = false, Perf = false, Relay = false, Dcutr = false, Gossipsub = false, Kademlia = false };
}

/// <summary>How the node finds and keeps peers across restarts.</summary>
public sealed record DiscoveryOptions
{
    /// <summary>Announce and discover peers on the local link by mDNS (real UDP multicast). Default off for a library node; on for `potluck run`.</summary>
    public bool Mdns { get; init; }

    /// <summary>How often the routing table is checked and, when empty, the node bootstraps again. Default 30 s.</summary>
    public TimeSpan RebootstrapInterval { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>After a start-up join that reached nobody, the first retry comes after this long, each next one after twice the last. Default 1 s.</summary>
    public TimeSpan JoinRetryDelay { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Retries of a failed start-up join (1, 2, 4, 8, 16 s by default) before <see cref="RebootstrapInterval"/> takes over; 0 waits for it. Default 5.</summary>
    public int JoinRetries { get; init; } = 5;

    /// <summary>How often the peer store is written to the data directory (also on shutdown). Default 1 min.</summary>
    public TimeSpan SaveInterval { get; init; } = TimeSpan.FromMinutes(1);

    /// <summary>Known peers re-dialed at start, most recently seen first. Default 16.</summary>
    public int MaxRedialPeers { get; init; } = 16;

    /// <summary>Peers written to the data directory, most recently seen first. Default 1,000.</summary>
    public int MaxPersistedPeers { get; init; } = 1000;

    /// <summary>Addresses written per peer. Default 8.</summary>
    public int MaxPersistedAddressesPerPeer { get; init; } = 8;

    /// <summary>Gossip topics remembered across restarts. Default 64.</summary>
    public int MaxPersistedTopics { get; init; } = 64;

    /// <summary>Ping each new connection once so `potluck peers` can show latency. Default on.</summary>
    public bool PingNewConnections { get; init; } = true;
}

/// <summary>Whether and how the node takes part in compute.</summary>
public sealed record ComputeOptions
{
    /// <summary>Run the compute layer (ledger, sandbox, requester, and provider when <see cref="Provide"/>). Needs a data directory. Default off for a library node; on for `potluck run` and `potluck submit`.</summary>
    public bool Enabled { get; init; }

    /// <summary>Serve leases and publish advertisements. Default true (when compute is enabled).</summary>
    public bool Provide { get; init; } = true;

    /// <summary>Cores, memory and price offered, and the provider's protocol limits.</summary>
    public ProviderOptions Provider { get; init; } = new();

    public ComputeClientOptions Client { get; init; } = new();

    public FraudOptions Fraud { get; init; } = new();

    public CreditsOptions Credits { get; init; } = new();

    /// <summary>The bilateral accounting chain (TrustChain half-blocks for every payment) and fork proofs.</summary>
    public Potluck.Scheduler.Accounting.AccountingOptions Accounting { get; init; } = new();

    /// <summary>Sandbox limits. The compiled-module cache defaults to <c>{DataDir}/cache</c>; stdout is always capped so every node's results compare.</summary>
    public SandboxOptions Sandbox { get; init; } = new();
}
