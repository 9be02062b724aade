using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Mdns;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Pnet;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport;

namespace Potluck.Node;

/// <summary>
/// Everything that shapes one <see cref="PotluckNode"/>. The defaults build a node that listens nowhere, on the
/// system clock, with no discovery and no persistence; `potluck run` fills in TCP, mDNS and a data directory,
/// tests and the simulator fill in the in-memory transport and virtual time.
/// </summary>
public sealed record NodeOptions
{
    /// <summary>The node's identity.</summary>
    public required PrivateKey Key { get; init; }

    /// <summary>Addresses to listen on. Empty: a client that only dials (the DHT then runs in client mode).</summary>
    public IReadOnlyList<Multiaddr> Listen { get; init; } = [];

    /// <summary>Peers to dial at start, and whenever the routing table runs empty (addresses ending in /p2p/…).</summary>
    public IReadOnlyList<Multiaddr> Bootstrap { get; init; } = [];

    /// <summary>Announce and discover peers on the local link by mDNS (real UDP multicast). Default off here; on for `potluck run`.</summary>
    public bool EnableMdns { get; init; }

    /// <summary>Join only the private network of this key (libp2p pnet).</summary>
    public SwarmKey? SwarmKey { get; init; }

    /// <summary>Where the peer store is persisted (<c>peers.db</c>). Null: nothing is persisted.</summary>
    public string? DataDir { get; init; }

    /// <summary>Gossip topics the node stays in from the start (as well as those it had joined before a restart).</summary>
    public IReadOnlyList<string> Topics { get; init; } = [];

    /// <summary>Transports; null means TCP. The simulator passes its memory transport.</summary>
    public IReadOnlyList<ITransport>? Transports { get; init; }

    /// <summary>The clock every component runs on.</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;

    /// <summary>Randomness for gossip, the DHT and mDNS; null seeds one from the OS. Tests pass a seeded one.</summary>
    public Random? Random { get; init; }

    /// <summary>
    /// What every component runs on (clock, schedulers, randomness). Null builds one from <see cref="Time"/> and a seed
    /// drawn from <see cref="Random"/> on the thread pool; a simulation under virtual time passes its driver's runtime.
    /// </summary>
    public NodeRuntime? Runtime { get; init; }

    public Libp2pHostSettings HostSettings { get; init; } = new();

    public GossipsubOptions Gossip { get; init; } = new();

    /// <summary>DHT options; the mode is chosen by the node (server when it listens, client otherwise).</summary>
    public KademliaOptions Kademlia { get; init; } = new();

    public MdnsOptions Mdns { get; init; } = new();

    public DiscoveryOptions Discovery { get; init; } = new();

    /// <summary>
    /// The compute layer (provider, requester, ledger, sandbox) when set; null runs a bare libp2p node.
    /// Its data directory holds the ledger, modules and compiled-module cache.
    /// </summary>
    public Compute.ComputeNodeOptions? Compute { get; init; }
}

/// <summary>How the node finds and keeps peers across restarts.</summary>
public sealed class DiscoveryOptions
{
    /// <summary>How often the routing table is checked and, when empty, the node bootstraps again. Default 30 s.</summary>
    public TimeSpan RebootstrapInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How often the peer store is written to the data directory (also on shutdown). Default 1 min.</summary>
    public TimeSpan SaveInterval { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>Known peers re-dialed at start, most recently seen first. Default 16.</summary>
    public int MaxRedialPeers { get; set; } = 16;

    /// <summary>Peers written to the data directory, most recently seen first. Default 1,000.</summary>
    public int MaxPersistedPeers { get; set; } = 1000;

    /// <summary>Addresses written per peer. Default 8.</summary>
    public int MaxPersistedAddressesPerPeer { get; set; } = 8;

    /// <summary>Gossip topics remembered across restarts. Default 64.</summary>
    public int MaxPersistedTopics { get; set; } = 64;

    /// <summary>Ping each new connection once so `potluck peers` can show latency. Default on.</summary>
    public bool PingNewConnections { get; set; } = true;
}
