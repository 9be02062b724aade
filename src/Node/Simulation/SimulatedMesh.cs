using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Node.Hosting;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport.Memory;
using Potluck.Scheduler.Adversaries;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Providing;
using Potluck.Scheduler.Requesting;
using Potluck.Scheduler.Sandbox;
using Potluck.Scheduler.Verification;

namespace Potluck.Node.Simulation;

/// <summary>What a simulated node is for.</summary>
public enum SimRole
{
    /// <summary>Submits tasks; runs no provider (but keeps a sandbox to verify results).</summary>
    Requester,

    /// <summary>Serves leases and advertises; also verifies and can submit.</summary>
    Provider,
}

/// <summary>An adversary behaviour mixed into a run.</summary>
public enum AdversaryKind
{
    /// <summary>Honest.</summary>
    None,

    /// <summary>A provider that returns a wrong output (signed, with the honest fuel) for every task.</summary>
    Cheater,

    /// <summary>A provider that returns a wrong output for a share (<see cref="MeshOptions.CheatRate"/>) of its tasks.</summary>
    SelectiveCheater,

    /// <summary>A provider that runs tasks honestly and claims more fuel than it used (issue 8's <c>InflatedFuelExecutor</c>).</summary>
    FuelInflater,

    /// <summary>A provider that answers every task at once with a false timeout, claiming the whole fuel limit (<c>FakeOutcomeExecutor</c>).</summary>
    FalseTimeout,

    /// <summary>A requester that takes leases and never pays (<c>FreeloadingRequester</c>).</summary>
    Freeloader,

    /// <summary>A requester that sends providers receipts it made up, for leases that never were or for overflowing amounts.</summary>
    ReceiptForger,

    /// <summary>A requester that takes leases and never sends their input, only heartbeats (<c>SquattingRequester</c>).</summary>
    Squatter,

    /// <summary>A node that publishes fraud proofs of leases between identities it holds both keys of (<c>ProofForger</c>).</summary>
    ProofSpammer,

    /// <summary>A node that floods the advertisement topic with junk.</summary>
    GossipSpammer,

    /// <summary>
    /// A Sybil swarm of colluding replicas: providers that undercut every honest price (1 credit per million fuel) and all
    /// return the same wrong output for the same task.
    /// </summary>
    Sybil,

    /// <summary>A provider that cheats on every task and, each time someone refuses it, comes back under a new identity with a fresh ledger.</summary>
    Whitewasher,

    /// <summary>
    /// A provider (serving honestly) that also submits tasks and pays for them, then forks its TrustChain: it signs a second,
    /// different half-block at a seq it used already (issue 8's <c>ChainForker</c>) and shows it to a provider it paid.
    /// </summary>
    Forker,
}

/// <summary>How a <see cref="SimulatedMesh"/> is made up. Every value has a documented default.</summary>
public sealed record MeshOptions
{
    /// <summary>Nodes in the mesh. Default 20.</summary>
    public int Nodes { get; init; } = 20;

    /// <summary>How many of them provide (the first nodes after the bootstrap nodes are not special). Default 5.</summary>
    public int Providers { get; init; } = 5;

    /// <summary>Seed of everything: keys, node seeds, latencies, loss, adversaries, workload. Default 1.</summary>
    public long Seed { get; init; } = 1;

    /// <summary>
    /// Share of providers that are adversaries, of <see cref="Adversary"/>'s kind; for a requester-side kind (freeloader,
    /// receipt forger, squatter, proof or gossip spammer) the share of the requesting nodes, at least one of which stays honest. Default 0.
    /// </summary>
    public double CheaterShare { get; init; }

    /// <summary>The kind of the adversaries. Default <see cref="AdversaryKind.Cheater"/>.</summary>
    public AdversaryKind Adversary { get; init; } = AdversaryKind.Cheater;

    /// <summary>Fuel a <see cref="AdversaryKind.FuelInflater"/> adds to each claim. Default 1,000,000.</summary>
    public long InflatedFuel { get; init; } = 1_000_000;

    /// <summary>Share of tasks a <see cref="AdversaryKind.SelectiveCheater"/> corrupts. Default 0.2.</summary>
    public double CheatRate { get; init; } = 0.2;

    /// <summary>The network. Default: <see cref="NetworkModel"/>'s defaults.</summary>
    public NetworkModel Network { get; init; } = new();

    /// <summary>Peers each node bootstraps from (drawn among the nodes started before it). Default 3.</summary>
    public int BootstrapPeers { get; init; } = 3;

    /// <summary>Where the nodes' data directories go (one per node); a fresh temporary folder when null, deleted at the end.</summary>
    public string? DataRoot { get; init; }

    /// <summary>Credits each node starts with. Default 1,000,000.</summary>
    public long InitialGrant { get; init; } = 1_000_000;

    /// <summary>A provider's price in credits per million fuel. Default 10.</summary>
    public long PricePerMegaFuel { get; init; } = 10;

    /// <summary>Credits a provider lets a requester owe before refusing it new leases; null keeps the provider default.</summary>
    public long? CreditLimitPerRequester { get; init; }

    /// <summary>Cores each provider offers. Default 2.</summary>
    public int ProviderCores { get; init; } = 2;

    /// <summary>Logs of every node (none by default: a thousand nodes logging is a benchmark of the logger).</summary>
    public ILoggerFactory? Loggers { get; init; }

    /// <summary>Cheaper parts in place of real ones, for scale (none by default: every node is complete). A report names each.</summary>
    public MeshStandIns StandIns { get; init; } = new();

    /// <summary>
    /// Whether the nodes keep one instance of equal immutable decoded values (<see cref="Potluck.Protocol.Runtime.SharedValues"/>:
    /// advertisements, peer ids' bytes, public keys, addresses) instead of a copy each. Not a stand-in: every node still decodes and checks
    /// all it did (every signature), and nothing it decides changes; only memory does. A report says whether it is on.
    /// Default true.
    /// </summary>
    public bool ShareValues { get; init; } = true;

    /// <summary>
    /// Connections each node keeps (its host's high watermark; trimmed back to three quarters of it; inbound ones past
    /// twice it are refused). Each costs a few KiB, and a daemon's default (trim above 320) lets a node of a big mesh hold
    /// hundreds. Null (the default) keeps the daemon's limits; at least 16.
    /// </summary>
    public int? MaxConnectionsPerNode { get; init; }

    /// <summary>
    /// Changes every node's host options after <see cref="MaxConnectionsPerNode"/> applied (a test's knob, e.g.
    /// <see cref="Potluck.Protocol.Host.HostOptions.TrimIdle"/> off or a lower <see cref="Potluck.Protocol.Host.HostOptions.IdleTrimFloor"/>).
    /// Null (the default): the daemon's options.
    /// </summary>
    public Func<Potluck.Protocol.Host.HostOptions, Potluck.Protocol.Host.HostOptions>? ConfigureHost { get; init; }

    /// <summary>
    /// Changes every node's gossipsub options (a test's knob, e.g. a mesh degree other than the node's default).
    /// Null (the default): the daemon's options.
    /// </summary>
    public Func<Potluck.Protocol.Gossipsub.GossipsubOptions, Potluck.Protocol.Gossipsub.GossipsubOptions>? ConfigureGossip { get; init; }

    /// <summary>Changes the providers' advertising options (the publishing cadence) from the defaults; null keeps them.</summary>
    public Func<Scheduler.Advertising.AdvertisementOptions, Scheduler.Advertising.AdvertisementOptions>? ConfigureAdvertising { get; init; }

    /// <summary>
    /// Virtual time over which the nodes join, one after another at even gaps, each bootstrapping from nodes already up:
    /// a real network never has a thousand nodes boot in the same millisecond, and a node that joins a formed mesh finds
    /// its neighbours in a few hops instead of dialling through a thousand empty routing tables. Null (the default):
    /// <see cref="DefaultJoinGap"/> per node (1,000 nodes over 20 s, 20 over 0.4 s); zero: all at the same instant.
    /// </summary>
    public TimeSpan? JoinOver { get; init; }

    /// <summary>The gap between two nodes' starts when <see cref="JoinOver"/> is not set: 20 ms (50 joins per virtual second).</summary>
    public static readonly TimeSpan DefaultJoinGap = TimeSpan.FromMilliseconds(20);

    /// <summary>The window the nodes join over: <see cref="JoinOver"/>, or <see cref="DefaultJoinGap"/> per gap between two nodes.</summary>
    public TimeSpan JoinWindow => JoinOver ?? DefaultJoinGap * (Nodes - 1);

    /// <summary>
    /// The process's limit on open file descriptors that <see cref="SimulatedMesh.StartAsync"/> checks a mesh of nodes with
    /// files against (<see cref="SimulatedMesh.FileDescriptorsNeeded"/>). Null (the default): the process's own soft limit
    /// (<c>/proc/self/limits</c>; not checked where that cannot be read).
    /// </summary>
    public long? FileDescriptorLimit { get; init; }

    /// <summary>Size of the simulated pipes' pooled segments. Default 4 KiB (the network's own default, 16 KiB, sized for bulk transfers, left most of each segment of a small message unused).</summary>
    public int PipeSegmentSize { get; init; } = 4 * 1024;

    internal void Validate()
    {
        if (Nodes < 2)
        {
            throw new ArgumentOutOfRangeException(nameof(Nodes), Nodes, "a mesh needs at least 2 nodes");
        }
        if (Providers < 1 || Providers >= Nodes)
        {
            throw new ArgumentOutOfRangeException(nameof(Providers), Providers, $"must be 1 to {Nodes - 1} (at least one node requests)");
        }
        if (!(CheaterShare >= 0 && CheaterShare <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(CheaterShare), CheaterShare, "must be in [0, 1]");
        }
        if (!(CheatRate > 0 && CheatRate <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(CheatRate), CheatRate, "must be in (0, 1]");
        }
        if (MaxConnectionsPerNode is < 16)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxConnectionsPerNode), MaxConnectionsPerNode, "must be at least 16 (or null: the daemon's limits)");
        }
        if (PipeSegmentSize is < 256 or > 1 << 20)
        {
            throw new ArgumentOutOfRangeException(nameof(PipeSegmentSize), PipeSegmentSize, "must be 256 bytes to 1 MiB");
        }
        if (JoinOver is { } over && (over < TimeSpan.Zero || over > TimeSpan.FromHours(1)))
        {
            throw new ArgumentOutOfRangeException(nameof(JoinOver), over, "must be 0 (all at once) to 1 hour");
        }
        if (FileDescriptorLimit is < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(FileDescriptorLimit), FileDescriptorLimit, "must be at least 1 (or null: the process's own)");
        }
        if (BootstrapPeers < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(BootstrapPeers), BootstrapPeers, "must be at least 1");
        }
        Network.Validate();
    }
}

/// <summary>
/// The stand-ins a <see cref="SimulatedMesh"/> may use so thousands of nodes fit in one process (see
/// <see cref="NodeStandIns"/>): each replaces one real part for every node, and the run's report lists them.
/// </summary>
public sealed record MeshStandIns
{
    /// <summary>plaintext-sim instead of Noise: public keys exchanged in the clear, no handshake crypto, no encryption.</summary>
    public bool PlaintextSecurity { get; init; }

    /// <summary>One Wasmtime sandbox (engine, compiled modules, runner threads) for all nodes instead of one each.</summary>
    public bool SharedSandbox { get; init; }

    /// <summary>Ledgers, reputation and peer databases in in-memory SQLite (kept across a node's crash and restart).</summary>
    public bool InMemoryStorage { get; init; }

    /// <summary>One set of counters and histograms for all nodes instead of one each (<see cref="NodeStandIns.SharedCounters"/>).</summary>
    public bool SharedCounters { get; init; }

    /// <summary>All of them.</summary>
    public static MeshStandIns All { get; } = new() { PlaintextSecurity = true, SharedSandbox = true, InMemoryStorage = true, SharedCounters = true };

    public bool Any => PlaintextSecurity || SharedSandbox || InMemoryStorage || SharedCounters;
}

/// <summary>One node of a <see cref="SimulatedMesh"/>: identity, role, behaviour and, while up, the running node.</summary>
public sealed class SimNode
{
    internal SimNode(int index, PrivateKey key, SimRole role, AdversaryKind adversary, Multiaddr address, string dataDir, long seed)
    {
        Index = index;
        Key = key;
        Role = role;
        Adversary = adversary;
        Address = address;
        DataDir = dataDir;
        Seed = seed;
    }

    public int Index { get; }

    /// <summary>Its identity now (a whitewasher changes it).</summary>
    public PrivateKey Key { get; internal set; }

    /// <summary>Identities it held before (a whitewasher's), each with its data directory.</summary>
    public List<(PrivateKey Key, string DataDir)> PastIdentities { get; } = [];

    /// <summary>Whether <paramref name="peer"/> is or was this node.</summary>
    public bool Owns(PeerId peer) => peer == PeerId || PastIdentities.Any(p => p.Key.PeerId == peer);

    public PeerId PeerId => Key.PeerId;

    public SimRole Role { get; }

    public AdversaryKind Adversary { get; }

    public bool IsAdversary => Adversary != AdversaryKind.None;

    /// <summary>Its fixed listen address (kept across restarts).</summary>
    public Multiaddr Address { get; }

    public string DataDir { get; internal set; }

    internal long Seed { get; }

    /// <summary>The running node; null while crashed.</summary>
    public PotluckNode? Node { get; internal set; }

    public bool IsUp => Node is not null;

    /// <summary>Times it restarted.</summary>
    public int Restarts { get; internal set; }

    /// <summary>Outputs its cheating executor corrupted (all incarnations).</summary>
    public int Corrupted { get; internal set; }

    /// <summary>Outputs the current incarnation's adversarial executor corrupted or faked so far.</summary>
    internal Func<int>? Cheat { get; set; }

    /// <summary>Gossip counters of earlier incarnations (a crash loses the router's).</summary>
    internal long PastGossipDelivered { get; set; }

    internal long PastGossipDuplicates { get; set; }

    /// <summary>First deliveries and duplicate copies its gossip routers counted, all incarnations.</summary>
    public (long Delivered, long Duplicates) GossipCounters()
    {
        long delivered = PastGossipDelivered, duplicates = PastGossipDuplicates;
        if (Node is { } node)
        {
            var c = node.Gossip.Counters;
            delivered += c.Delivered;
            duplicates += c.Duplicates;
        }
        return (delivered, duplicates);
    }

    public override string ToString() => $"n{Index}";
}

/// <summary>
/// N complete Potluck nodes in one process (DESIGN §1: the simulated mesh lives in Node): each built by
/// <see cref="PotluckNodeBuilder"/> exactly as the daemon is — real hosts (Noise, Yamux), identify, gossipsub,
/// Kademlia, the compute layer with its SQLite ledger, reputation store and Wasmtime sandbox — over one
/// <see cref="SimulatedNetwork"/> with a seeded <see cref="NetworkModel"/>, on one <see cref="VirtualTimeDriver"/>'s clock
/// and event loop. The harness records what happens into a trace (virtual time and event, one line each) whose
/// SHA-256 is <see cref="TraceHash"/>: the same options and seed give the same hash.
/// <code>
/// VirtualTimeDriver.Run(async driver =>
/// {
///     await using var mesh = await SimulatedMesh.StartAsync(driver, new MeshOptions { Nodes = 50, Providers = 10, Seed = 7 });
///     await mesh.SettleAsync(TimeSpan.FromSeconds(10));           // meshes form, advertisements spread
///     var outcome = await mesh.SubmitAsync(mesh.Requesters[0], SimulatedMesh.HashChainTask(mesh.Random, 100));
///     mesh.Partition(mesh.Nodes.Take(25), mesh.Nodes.Skip(25)); // faults: Partition/Heal, CrashAsync/RestartAsync, SetConditions
///     Console.WriteLine(mesh.TraceHash);
/// });
/// </code>
/// </summary>
public sealed class SimulatedMesh : IAsyncDisposable
{
    private readonly VirtualTimeDriver _driver;
    private readonly MeshOptions _options;
    private readonly IncrementalHash _trace = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private readonly List<SimNode> _nodes = [];
    private readonly string _root;
    private readonly bool _ownsRoot;
    private readonly DateTimeOffset _start;
    private readonly List<TaskRecord> _tasks = [];
    private readonly Dictionary<int, List<TaskRecord>> _inFlight = [];
    private readonly List<MeshEvent> _events = [];
    private readonly List<IDisposable> _memoryKeepers = [];
    private readonly Dictionary<int, IDisposable[]> _downKeepers = [];
    private readonly NodeStandIns _standIns;
    private readonly WasmSandbox? _sharedSandbox;
    private readonly SharedMeterFactory? _sharedCounters;
    private readonly SharedValues _sharedValues;
    private long _traceLines;
    private bool _disposed;

    private SimulatedMesh(VirtualTimeDriver driver, MeshOptions options)
    {
        _driver = driver;
        _options = options;
        Random = new Random(unchecked((int)(options.Seed ^ (options.Seed >> 32))));
        Network = new SimulatedNetwork(driver.Clock, new SimulatedNetworkOptions { Seed = options.Seed, SegmentSize = options.PipeSegmentSize }, driver.Loop.PipeScheduler);
        _ownsRoot = options.DataRoot is null;
        _root = options.DataRoot ?? Path.Combine(Path.GetTempPath(), "potluck-sim-" + Guid.NewGuid().ToString("N"));
        _start = driver.Clock.GetUtcNow();
        var standIns = options.StandIns;
        if (standIns.SharedSandbox)
        {
            _sharedSandbox = new WasmSandbox(
                Compute.ComputeNode.SandboxOptionsFor(new Hosting.ComputeOptions { Sandbox = NodeSandboxOptions }, Path.Combine(_root, "shared")),
                NullLogger<WasmSandbox>.Instance);
        }
        _sharedCounters = standIns.SharedCounters ? new SharedMeterFactory() : null;
        _sharedValues = options.ShareValues ? SharedValues.Create() : SharedValues.None;
        _standIns = new NodeStandIns
        {
            PlaintextSecurity = standIns.PlaintextSecurity,
            SharedSandbox = _sharedSandbox,
            InMemoryStorage = standIns.InMemoryStorage,
            SharedCounters = _sharedCounters,
        };
    }

    /// <summary>The sandbox limits of every node (the same with or without a shared sandbox).</summary>
    private static SandboxOptions NodeSandboxOptions => new() { MaxMemoryBytes = 64L << 20 };

    /// <summary>What stands in for real parts in this mesh, one phrase each (empty: every node is complete).</summary>
    public IReadOnlyList<string> StandIns => _standIns.Names;

    /// <summary>The immutable values this mesh's nodes share (<see cref="SharedValues.None"/> when <see cref="MeshOptions.ShareValues"/> is off).</summary>
    public SharedValues SharedValues => _sharedValues;

    public MeshOptions Options => _options;

    public VirtualTimeDriver Driver => _driver;

    public VirtualClock Clock => _driver.Clock;

    public SimulatedNetwork Network { get; }

    /// <summary>The harness's own seeded generator (workload, churn choices): draw from it only on the loop.</summary>
    public Random Random { get; }

    public IReadOnlyList<SimNode> Nodes => _nodes;

    public IEnumerable<SimNode> Providers => _nodes.Where(n => n.Role == SimRole.Provider);

    public IEnumerable<SimNode> Requesters => _nodes.Where(n => n.Role == SimRole.Requester);

    /// <summary>Virtual time since the mesh started.</summary>
    public TimeSpan Elapsed => Clock.GetUtcNow() - _start;

    /// <summary>Every task submitted through <see cref="SubmitAsync"/>, in order of submission.</summary>
    public IReadOnlyList<TaskRecord> Tasks => _tasks;

    /// <summary>Refusals, faults and other events, in order.</summary>
    public IReadOnlyList<MeshEvent> Events => _events;

    /// <summary>Connections the nodes opened so far (dials that ended in a registered connection; each counted once, at its dialer).</summary>
    public long ConnectionsOpened { get; private set; }

    /// <summary>
    /// Advertisements the providers up now issued, by reason (<see cref="Scheduler.Advertising.IssuerCounts.Names"/>' order),
    /// and how many providers were counted. Read, not traced.
    /// </summary>
    public (long[] Counts, int Providers) AdPublicationTotals()
    {
        var sum = new long[Scheduler.Advertising.IssuerCounts.Names.Length];
        var providers = 0;
        foreach (var node in _nodes)
        {
            if (node.Node?.Compute?.Provider is { } provider)
            {
                providers++;
                var c = provider.PublicationCounts();
                for (var i = 0; i < c.Length; i++)
                {
                    sum[i] += c[i];
                }
            }
        }
        return (sum, providers);
    }

    /// <summary>
    /// The connection ends the nodes that are up hold now (a connection between two nodes is two ends), with the largest
    /// count one node holds, how many of the ends are still in their node's trim grace period, how many lead to a peer
    /// the node protects, and how many nodes hold more than their high watermark. Read, not traced: the trace stays where
    /// the nodes' behaviour stays.
    /// </summary>
    /// <summary>
    /// Gossip counters per topic summed over the nodes up (<see cref="Protocol.Gossipsub.TopicCounters.Names"/>' order). Read,
    /// not traced: the trace stays the same.
    /// </summary>
    public SortedDictionary<string, long[]> GossipTopicTotals()
    {
        var totals = new SortedDictionary<string, long[]>(StringComparer.Ordinal);
        foreach (var node in _nodes)
        {
            if (node.Node is not { } running || !running.Options.Protocols.Gossipsub)
            {
                continue;
            }
            foreach (var (topic, c) in running.Gossip.Counters.ByTopic)
            {
                if (!totals.TryGetValue(topic, out var sum))
                {
                    totals[topic] = sum = new long[Protocol.Gossipsub.TopicCounters.Names.Length];
                }
                var a = c.ToArray();
                for (var i = 0; i < a.Length; i++)
                {
                    sum[i] += a[i];
                }
            }
        }
        return totals;
    }

    /// <summary>
    /// Each topic's meshes over the nodes up: how many nodes hold one, the histogram of mesh sizes, the mean, and the
    /// one-way edges (a node has a peer in its mesh that does not have the node in its own). Read, not traced.
    /// </summary>
    public IEnumerable<string> DescribeGossipMeshes()
    {
        var byPeer = new Dictionary<PeerId, PotluckNode>();
        foreach (var node in _nodes)
        {
            if (node.Node is { } running && running.Options.Protocols.Gossipsub)
            {
                byPeer[node.PeerId] = running;
            }
        }
        var topics = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var running in byPeer.Values)
        {
            topics.UnionWith(running.Gossip.Subscriptions);
        }
        foreach (var topic in topics)
        {
            var sizes = new SortedDictionary<int, int>();
            long members = 0, oneWay = 0, nodes = 0;
            foreach (var (peer, running) in byPeer)
            {
                if (!running.Gossip.Subscriptions.Contains(topic))
                {
                    continue;
                }
                var mesh = running.Gossip.MeshPeers(topic);
                nodes++;
                members += mesh.Count;
                sizes[mesh.Count] = sizes.GetValueOrDefault(mesh.Count) + 1;
                foreach (var p in mesh)
                {
                    if (!byPeer.TryGetValue(p, out var other) || !other.Gossip.MeshPeers(topic).Contains(peer))
                    {
                        oneWay++;
                    }
                }
            }
            yield return string.Create(CultureInfo.InvariantCulture,
                $"gossip mesh {topic}: {nodes} nodes, mean size {(nodes == 0 ? 0 : (double)members / nodes):F2}, one-way edges {oneWay} of {members}, sizes {string.Join(' ', sizes.Select(kv => $"{kv.Key}:{kv.Value}"))}");
        }
    }

    public ConnectionEndCensus CountConnectionEnds()
    {
        var now = Clock.GetUtcNow();
        int nodes = 0, max = 0, overCap = 0;
        long ends = 0, young = 0, protectedEnds = 0, meshTopics = 0, meshMemberships = 0, meshPeers = 0, meshPeersInOne = 0;
        foreach (var node in _nodes)
        {
            if (node.Node is not { } running || !node.IsUp)
            {
                continue;
            }
            var host = running.Options.Host;
            var manager = running.Host.ConnectionManager;
            var open = 0;
            foreach (var c in manager.Connections)
            {
                if (c.IsClosed)
                {
                    continue;
                }
                open++;
                young += now - c.Opened < host.TrimGracePeriod ? 1 : 0;
                protectedEnds += manager.IsProtected(c.RemotePeer) ? 1 : 0;
            }
            if (running.Options.Protocols.Gossipsub)
            {
                var meshes = running.Gossip.CountMeshes();
                meshTopics += meshes.Topics;
                meshMemberships += meshes.Memberships;
                meshPeers += meshes.Distinct;
                meshPeersInOne += meshes.InOneMesh;
            }
            nodes++;
            ends += open;
            max = Math.Max(max, open);
            overCap += host.HighWater > 0 && open > host.HighWater ? 1 : 0;
        }
        return new ConnectionEndCensus(nodes, ends, max, young, protectedEnds, overCap, meshTopics, meshMemberships, meshPeers, meshPeersInOne);
    }

    /// <summary>
    /// What the nodes that are up remember of other peers now (<see cref="PerPeerCensus"/>). Read, not traced, and reads
    /// nothing that sweeps or expires: the trace stays the same.
    /// </summary>
    public PerPeerCensus CountPerPeerState()
    {
        int nodes = 0, storeMax = 0, tableMax = 0, adsMax = 0;
        long store = 0, keys = 0, table = 0, scores = 0, budgets = 0, gossipPeers = 0, ads = 0;
        foreach (var node in _nodes)
        {
            if (node.Node is not { } running || !node.IsUp)
            {
                continue;
            }
            nodes++;
            var snapshot = running.Host.Peers.Snapshot();
            store += snapshot.Count;
            storeMax = Math.Max(storeMax, snapshot.Count);
            keys += snapshot.Count(p => p.PublicKey is not null);
            budgets += running.Host.Budgets.TrackedPeers;
            if (running.Options.Protocols.Kademlia)
            {
                var size = running.Dht.RoutingTableSize;
                table += size;
                tableMax = Math.Max(tableMax, size);
            }
            if (running.Options.Protocols.Gossipsub)
            {
                scores += running.Gossip.ScoredPeers;
                gossipPeers += running.Gossip.GossipPeers.Count;
            }
            if (running.Compute is { } compute)
            {
                var held = compute.Client.HeldAdvertisements;
                ads += held;
                adsMax = Math.Max(adsMax, held);
            }
        }
        return new PerPeerCensus(nodes, store, storeMax, keys, table, tableMax, scores, budgets, gossipPeers, ads, adsMax);
    }

    private readonly long[] _pastDials = new long[Protocol.Host.DialReason.All.Count];
    private readonly long[] _pastClosed = new long[Protocol.Metrics.ProtocolInstruments.CloseReasons.Count];
    private readonly long[] _pastQueries = new long[4];

    /// <summary>DHT requests the nodes made so far: answered, failed, backed off (skipped), cancelled.</summary>
    public long[] DhtQueryTotals() => SumTotals(_pastQueries, m => m.DhtQueryTotals());

    /// <summary>Dials the nodes started so far by reason (<c>potluck.dials</c> summed over nodes, crashed ones included), in <see cref="Protocol.Host.DialReason.All"/>'s order.</summary>
    public long[] DialTotals() => SumTotals(_pastDials, m => m.DialTotals());

    /// <summary>Connections the nodes saw close so far by reason, in <see cref="Protocol.Metrics.ProtocolInstruments.CloseReasons"/>' order.</summary>
    public long[] ClosedTotals() => SumTotals(_pastClosed, m => m.ClosedTotals());

    private long[] SumTotals(long[] past, Func<Protocol.Metrics.ProtocolInstruments, long[]> read)
    {
        var sum = (long[])past.Clone();
        foreach (var node in _nodes)
        {
            if (node.Node is { } running)
            {
                var totals = read(running.ProtocolMetrics);
                for (var i = 0; i < sum.Length; i++)
                {
                    sum[i] += totals[i];
                }
            }
        }
        return sum;
    }

    /// <summary>Lines recorded into the trace so far.</summary>
    public long TraceLines => _traceLines;

    /// <summary>SHA-256 (hex) of the trace so far: virtual time and event, one line each.</summary>
    public string TraceHash => Convert.ToHexStringLower(_trace.GetCurrentHash());

    /// <summary>Builds and starts the mesh's nodes one after another (each bootstraps from nodes started before it).</summary>
    public static async Task<SimulatedMesh> StartAsync(VirtualTimeDriver driver, MeshOptions options, IProgress<int>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(driver);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        CheckFileDescriptors(options);
        var mesh = new SimulatedMesh(driver, options);
        try
        {
            await mesh.StartNodesAsync(progress);
        }
        catch
        {
            await mesh.DisposeAsync();
            throw;
        }
        return mesh;
    }

    /// <summary>
    /// File descriptors a node with files (no <see cref="MeshStandIns.InMemoryStorage"/>) holds open while it is up, all of
    /// them its databases': the ledger's database twice (writer and reader connections), its write-ahead log three times
    /// (both connections and the ledger's own handle that flushes it) and its shared-memory index once, reputation's
    /// database, log and index, and the peers database. Measured on Linux (10,000 of them at
    /// 1,000 nodes; <c>SimFileDescriptorTests</c> checks it).
    /// </summary>
    public const int FileDescriptorsPerStoredNode = 10;

    /// <summary>Descriptors left to the rest of the process (the runtime's files and pipes, a provider's module files while it writes them).</summary>
    public const int FileDescriptorReserve = 512;

    /// <summary>
    /// The file descriptors a mesh of <paramref name="options"/> needs at most: <see cref="FileDescriptorReserve"/>, plus
    /// <see cref="FileDescriptorsPerStoredNode"/> per node unless its storage stands in memory, plus one per provider
    /// with a sandbox of its own (Wasmtime's memory image of the module it has loaded, a <c>memfd</c>; the mesh's
    /// workload is one module).
    /// </summary>
    public static long FileDescriptorsNeeded(MeshOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return FileDescriptorReserve
            + (options.StandIns.InMemoryStorage ? 0 : (long)options.Nodes * FileDescriptorsPerStoredNode)
            + (options.StandIns.SharedSandbox ? 0 : options.Providers);
    }

    /// <summary>
    /// Refuses a mesh whose nodes' files would run the process out of descriptors: past the limit SQLite cannot open a
    /// node's files and the runtime itself aborts ("Internal CLR error" while throwing; no report, the data folder left
    /// behind), minutes into the run. Refused before anything starts, with what to change.
    /// </summary>
    /// <exception cref="NodeStartException">The mesh needs more descriptors than the limit.</exception>
    private static void CheckFileDescriptors(MeshOptions options)
    {
        var need = FileDescriptorsNeeded(options);
        if ((options.FileDescriptorLimit ?? ProcessFileDescriptorLimit()) is { } limit && need > limit)
        {
            var inv = CultureInfo.InvariantCulture;
            throw new NodeStartException(string.Format(inv,
                "{0:N0} nodes need about {1:N0} open file descriptors ({2} per node for its SQLite files, the rest for the runtime and sandboxes), " +
                "more than this process's limit of {3:N0}: raise it (ulimit -n) or keep the nodes' storage in memory (--stand-ins memory-store)",
                options.Nodes, need, FileDescriptorsPerStoredNode, limit));
        }
    }

    /// <summary>The process's soft limit on open files, from <c>/proc/self/limits</c>; null where unknown or unlimited.</summary>
    internal static long? ProcessFileDescriptorLimit()
    {
        try
        {
            return File.Exists("/proc/self/limits") ? ParseOpenFilesLimit(File.ReadAllText("/proc/self/limits")) : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>The soft limit of the "Max open files" line of a <c>/proc/&lt;pid&gt;/limits</c> text; null without one, or "unlimited".</summary>
    internal static long? ParseOpenFilesLimit(string limits)
    {
        ArgumentNullException.ThrowIfNull(limits);
        const string Name = "Max open files";
        foreach (var line in limits.Split('\n'))
        {
            if (line.StartsWith(Name, StringComparison.Ordinal))
            {
                var fields = line[Name.Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return fields.Length > 0 && long.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out var soft) ? soft : null;
            }
        }
        return null;
    }

    private async Task StartNodesAsync(IProgress<int>? progress)
    {
        Directory.CreateDirectory(_root);
        var n = _options.Nodes;
        // Roles and behaviours are drawn first, so they do not depend on how start-up interleaves.
        var providerIndices = Enumerable.Range(0, n).OrderBy(_ => Random.Next()).Take(_options.Providers).ToHashSet();
        HashSet<int> adversaries;
        if (SimAttacks.IsRequesterSide(_options.Adversary))
        {
            var requesting = Enumerable.Range(0, n).Where(i => !providerIndices.Contains(i)).ToList();
            var count = Math.Min(requesting.Count - 1, (int)Math.Round(requesting.Count * _options.CheaterShare));
            adversaries = requesting.OrderBy(_ => Random.Next()).Take(count).ToHashSet();
        }
        else
        {
            var adversaryCount = (int)Math.Round(_options.Providers * _options.CheaterShare);
            adversaries = providerIndices.Order().OrderBy(_ => Random.Next()).Take(adversaryCount).ToHashSet();
        }
        for (var i = 0; i < n; i++)
        {
            var key = PrivateKey.FromRandom(Random);
            var role = providerIndices.Contains(i) ? SimRole.Provider : SimRole.Requester;
            var adversary = adversaries.Contains(i) ? _options.Adversary : AdversaryKind.None;
            var address = Multiaddr.Parse($"/memory/{i + 1}");
            var node = new SimNode(i, key, role, adversary, address, Path.Combine(_root, $"n{i}"), Random.NextInt64());
            Network.SetEndpoint(address, _options.Network.Draw(Random));
            _nodes.Add(node);
            _byPeer[node.PeerId] = node;
        }
        for (var i = 0; i < n; i++)
        {
            var node = _nodes[i];
            var bootstrap = new List<Multiaddr>();
            if (i > 0)
            {
                var count = Math.Min(i, _options.BootstrapPeers);
                foreach (var j in Enumerable.Range(0, i).OrderBy(_ => Random.Next()).Take(count).Order())
                {
                    bootstrap.Add(_nodes[j].Address.WithPeer(_nodes[j].PeerId));
                }
            }
            // Node i joins at window × i / (n − 1), on the mesh's clock.
            var joinAt = TimeSpan.FromTicks(n > 1 ? _options.JoinWindow.Ticks * i / (n - 1) : 0);
            if (joinAt > Elapsed)
            {
                await Task.Delay(joinAt - Elapsed, Clock);
            }
            RecordJoinSecond();
            await StartNodeAsync(node, bootstrap);
            progress?.Report(i + 1);
        }
        RecordJoinSecond(last: true);
    }

    private readonly List<long[]> _joinDialsPerSecond = [];
    private long[]? _joinDialsBefore;

    /// <summary>
    /// Dials by reason in each whole virtual second of a staggered join (in <see cref="Protocol.Host.DialReason.All"/>'s
    /// order; empty when all nodes start at once), the last entry ending when the last node started.
    /// </summary>
    public IReadOnlyList<long[]> JoinDialsPerSecond => _joinDialsPerSecond;

    private void RecordJoinSecond(bool last = false)
    {
        if (_options.JoinWindow <= TimeSpan.Zero)
        {
            return;
        }
        var second = (int)Elapsed.TotalSeconds;
        if (!last && second <= _joinDialsPerSecond.Count)
        {
            return;
        }
        var totals = DialTotals();
        var before = _joinDialsBefore ?? new long[totals.Length];
        _joinDialsPerSecond.Add(totals.Zip(before, (a, b) => a - b).ToArray());
        _joinDialsBefore = totals;
    }

    private Potluck.Protocol.Host.HostOptions ConfigureHost(Potluck.Protocol.Host.HostOptions host) =>
        _options.ConfigureHost?.Invoke(host) ?? host;

    private async Task StartNodeAsync(SimNode node, IReadOnlyList<Multiaddr> bootstrap)
    {
        var incarnation = node.Restarts;
        var builder = PotluckNode.CreateBuilder()
            .UseSimulatedNetwork(Network)
            .UseRuntime(_driver.CreateRuntime(node.Seed + incarnation).WithSharedValues(_sharedValues))
            .UseKey(node.Key)
            .UseLoggerFactory(_options.Loggers ?? NullLoggerFactory.Instance)
            .UseStandIns(_standIns)
            .ReleaseServicesAfterStart()
            .Configure(o => o with
            {
                Listen = [node.Address],
                Bootstrap = bootstrap.Count > 0 ? bootstrap : o.Bootstrap,
                DataDir = node.DataDir,
                Discovery = o.Discovery with { PingNewConnections = false },
                Gossip = _options.ConfigureGossip?.Invoke(o.Gossip) ?? o.Gossip,
                Host = ConfigureHost(_options.MaxConnectionsPerNode is { } cap
                    ? o.Host with { HighWater = cap, LowWater = cap * 3 / 4, MaxConnections = cap * 2 }
                    : o.Host),
                Compute = o.Compute with
                {
                    Enabled = true,
                    Provide = node.Role == SimRole.Provider,
                    Provider = new ProviderOptions
                    {
                        Cores = _options.ProviderCores,
                        MemoryBytes = 256L << 20,
                        MaxMemoryPerLease = 64L << 20,
                        PricePerMegaFuel = PriceOf(node),
                        CreditLimitPerRequester = _options.CreditLimitPerRequester ?? new ProviderOptions().CreditLimitPerRequester,
                        Advertising = _options.ConfigureAdvertising?.Invoke(new Scheduler.Advertising.AdvertisementOptions()) ?? new Scheduler.Advertising.AdvertisementOptions(),
                    },
                    Credits = new CreditsOptions { InitialGrant = _options.InitialGrant },
                    // A node's own sandbox maps each run's memory as it goes: thousands of pools of ~4 GiB slots would not fit
                    // the process's address space (the shared sandbox stand-in keeps its pool).
                    Sandbox = NodeSandboxOptions with { InstanceSlots = 0 },
                },
            });
        // A simulated node's machine is simulated too: idle, on the mesh's clock (the host's /proc is not N machines).
        builder.Services.AddSingleton<Potluck.Node.Home.IMachineProbe>(new SimulatedMachineProbe(Clock));
        if (node.IsAdversary)
        {
            // The attack behaviours are issue 8's product code (src/Scheduler/Adversaries), decorating the real executor.
            var random = new Random(unchecked((int)node.Seed + incarnation));
            var rate = _options.CheatRate;
            builder.DecorateProviderExecutor(inner =>
            {
                switch (node.Adversary)
                {
                    case AdversaryKind.Cheater or AdversaryKind.Sybil or AdversaryKind.Whitewasher:
                    {
                        var wrong = new WrongOutputExecutor(inner);
                        node.Cheat = () => wrong.Corrupted;
                        return wrong;
                    }
                    case AdversaryKind.SelectiveCheater:
                    {
                        var wrong = new WrongOutputExecutor(inner, _ => random.NextDouble() < rate);
                        node.Cheat = () => wrong.Corrupted;
                        return wrong;
                    }
                    case AdversaryKind.FuelInflater:
                        return new InflatedFuelExecutor(inner, _options.InflatedFuel);
                    case AdversaryKind.FalseTimeout:
                    {
                        var fake = new FakeOutcomeExecutor(ExecutionStatus.TimedOut);
                        node.Cheat = () => fake.Answered;
                        return fake;
                    }
                    default:
                        return inner;
                }
            });
        }
        var started = await builder.StartAsync();
        node.Node = started;
        ReleaseKeepers(node);
        Record($"{node} up {node.PeerId}{(node.IsAdversary ? " adversary " + node.Adversary : "")}");
        started.Host.Connected += c =>
        {
            if (c.Direction == Protocol.Host.Direction.Outbound)
            {
                ConnectionsOpened++;
            }
            Record($"{node} connected {c.RemotePeer} {c.Direction}");
            if (NodeOf(c.RemotePeer) is { Role: SimRole.Provider } provider)
            {
                Step(node, $"connected to {provider} ({c.Direction})");
            }
        };
        started.Host.Disconnected += c =>
        {
            if (NodeOf(c.RemotePeer) is { Role: SimRole.Provider } provider)
            {
                Step(node, $"disconnected from {provider} ({c.Direction})");
            }
        };
        if (started.Compute is { } compute)
        {
            compute.Reputation.Refused += (peer, reason) => OnRefused(node, peer, reason);
            compute.Client.AttemptEnded += a =>
                Step(node, $"{NodeOf(a.Provider)?.ToString() ?? a.Provider.ToString()} {a.Outcome}: {a.Detail}{(a.Paid > 0 ? $", paid {a.Paid}" : "")}");
        }
    }

    /// <summary>
    /// Adds a step to the timeline of each task <paramref name="requester"/> has in flight (not to the trace: the trace
    /// hash stays what it was); with more than one in flight, each gets the step and is marked as sharing its steps.
    /// </summary>
    private void Step(SimNode requester, string what)
    {
        if (!_inFlight.TryGetValue(requester.Index, out var tasks))
        {
            return;
        }
        foreach (var t in tasks)
        {
            t.AddStep(Elapsed, what, shared: tasks.Count > 1);
        }
    }

    private void OnRefused(SimNode by, PeerId provider, string reason)
    {
        var target = NodeOf(provider);
        Record($"{by} refuses {provider}: {reason}");
        _events.Add(new MeshEvent(Elapsed, MeshEventKind.Refused, by.Index, target?.Index ?? -1, reason));
        if (target is { Adversary: AdversaryKind.Whitewasher } washer && washer.PeerId == provider && _washing.Add(washer.Index))
        {
            _pending.Add(WhitewashAsync(washer));
        }
    }

    private readonly Dictionary<PeerId, SimNode> _byPeer = [];
    private readonly HashSet<int> _washing = [];
    private readonly List<Task> _pending = [];

    /// <summary>The node that is or was <paramref name="peer"/>, or null.</summary>
    public SimNode? NodeOf(PeerId peer) => _byPeer.GetValueOrDefault(peer);

    /// <summary>Whitewashes still under way (the runner awaits them before it measures).</summary>
    internal Task WhenQuietAsync() => Task.WhenAll(_pending.ToArray());

    /// <summary>Raised when a whitewasher is back under its new identity (on the loop).</summary>
    public event Action<SimNode>? Whitewashed;

    /// <summary>Fresh identities whitewashers took (each came with a fresh ledger and its grant).</summary>
    public int Whitewashes { get; private set; }

    /// <summary>A caught whitewasher leaves and comes back as a stranger: a new key, an empty data directory, a new grant.</summary>
    private async Task WhitewashAsync(SimNode node)
    {
        try
        {
            await Task.Delay(TimeSpan.FromSeconds(1), Clock);
            if (!node.IsUp || _disposed)
            {
                return;
            }
            await CrashAsync(node);
            node.PastIdentities.Add((node.Key, node.DataDir));
            node.Key = PrivateKey.FromRandom(Random);
            node.DataDir = Path.Combine(_root, $"n{node.Index}-id{node.PastIdentities.Count}");
            _byPeer[node.PeerId] = node;
            Whitewashes++;
            // The dropped identity's databases stay for the report (what the whitewasher earned under it).
            if (_downKeepers.Remove(node.Index, out var past))
            {
                _memoryKeepers.AddRange(past);
            }
            Record($"{node} whitewash {node.PeerId}");
            _events.Add(new MeshEvent(Elapsed, MeshEventKind.Whitewash, node.Index, -1, node.PeerId.ToString()));
            await RestartAsync(node);
            Whitewashed?.Invoke(node);
        }
        finally
        {
            _washing.Remove(node.Index);
        }
    }

    /// <summary>
    /// With the in-memory storage stand-in, a node's store (its ledger, reputation and peer tables in one database, and
    /// what it keeps managed) outlives its crashes as files would: while it is down, a hold keeps it (taken before its own
    /// close, released once it is up again with its own), opening no connection: a store that has one keeps it, one that
    /// has none (nothing written yet) stays without.
    /// </summary>
    private void KeepWhileDown(SimNode node)
    {
        if (_standIns.InMemoryStorage && !_downKeepers.ContainsKey(node.Index))
        {
            _downKeepers[node.Index] = [Scheduler.Storage.SqliteMemory.Hold(Path.Combine(node.DataDir, CreditLedger.FileName))];
        }
    }

    /// <summary>Releases the holds that kept a node's store while it was down (it holds its own now).</summary>
    private void ReleaseKeepers(SimNode node)
    {
        if (_downKeepers.Remove(node.Index, out var keepers))
        {
            foreach (var keeper in keepers)
            {
                keeper.Dispose();
            }
        }
    }

    /// <summary>Holds kept on the stores of nodes that are down or identities dropped (in-memory storage stand-in).</summary>
    internal int MemoryKeepers => _memoryKeepers.Count + _downKeepers.Values.Sum(k => k.Length);

    /// <summary>Appends one line to the trace, stamped with the virtual time.</summary>
    public void Record(string line)
    {
        if (_disposed)
        {
            return;
        }
        _trace.AppendData(Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture, $"{Elapsed.Ticks} {line}\n")));
        _traceLines++;
    }

    /// <summary>Lets virtual time pass (meshes form, heartbeats, advertisements spread).</summary>
    public Task SettleAsync(TimeSpan span) => Task.Delay(span, Clock);

    // ------------------------------------------------------------------ faults

    /// <summary>Kills a node abruptly: its host goes first (no goodbye reaches anyone), then its services. Its data directory stays.</summary>
    public async Task CrashAsync(SimNode node)
    {
        ArgumentNullException.ThrowIfNull(node);
        if (node.Node is not { } running)
        {
            return;
        }
        var (delivered, duplicates) = node.GossipCounters();
        node.PastGossipDelivered = delivered;
        node.PastGossipDuplicates = duplicates;
        Accumulate(_pastDials, running.ProtocolMetrics.DialTotals());
        Accumulate(_pastClosed, running.ProtocolMetrics.ClosedTotals());
        Accumulate(_pastQueries, running.ProtocolMetrics.DhtQueryTotals());
        node.Node = null;
        node.Corrupted += node.Cheat?.Invoke() ?? 0;
        node.Cheat = null;
        Record($"{node} crash");
        _events.Add(new MeshEvent(Elapsed, MeshEventKind.Crash, node.Index, -1, ""));
        KeepWhileDown(node);
        await running.Host.DisposeAsync();
        await running.DisposeAsync();
    }

    private static void Accumulate(long[] into, long[] add)
    {
        for (var i = 0; i < into.Length; i++)
        {
            into[i] += add[i];
        }
    }

    /// <summary>Starts a crashed node again with the same identity, address and data directory (ledger, peers, reputation).</summary>
    public async Task RestartAsync(SimNode node)
    {
        ArgumentNullException.ThrowIfNull(node);
        if (node.IsUp)
        {
            return;
        }
        node.Restarts++;
        Record($"{node} restart");
        _events.Add(new MeshEvent(Elapsed, MeshEventKind.Restart, node.Index, -1, ""));
        // Its peers.db re-dials those it knew; two live nodes as bootstrap in case none of them is up.
        var bootstrap = _nodes.Where(n => n.IsUp && n != node).OrderBy(_ => Random.Next()).Take(_options.BootstrapPeers)
            .Select(n => n.Address.WithPeer(n.PeerId)).ToList();
        await StartNodeAsync(node, bootstrap);
    }

    /// <summary>Cuts every node of <paramref name="side"/> off from every node of <paramref name="other"/>.</summary>
    public void Partition(IEnumerable<SimNode> side, IEnumerable<SimNode> other)
    {
        var a = side.ToList();
        var b = other.ToList();
        foreach (var x in a)
        {
            foreach (var y in b)
            {
                Network.Partition(x.Address, y.Address);
            }
        }
        Record($"partition {a.Count} from {b.Count}");
        _events.Add(new MeshEvent(Elapsed, MeshEventKind.Partition, a.Count, b.Count, ""));
    }

    /// <summary>Ends a <see cref="Partition"/> between the two sides (nodes re-dial as they need to).</summary>
    public void Heal(IEnumerable<SimNode> side, IEnumerable<SimNode> other)
    {
        var a = side.ToList();
        var b = other.ToList();
        foreach (var x in a)
        {
            foreach (var y in b)
            {
                Network.Heal(x.Address, y.Address);
            }
        }
        Record($"heal {a.Count} from {b.Count}");
        _events.Add(new MeshEvent(Elapsed, MeshEventKind.Heal, a.Count, b.Count, ""));
    }

    /// <summary>A slow or lossy node: its access link's conditions for connections opened from now on.</summary>
    public void SetConditions(SimNode node, LinkConditions conditions)
    {
        ArgumentNullException.ThrowIfNull(node);
        Network.SetEndpoint(node.Address, conditions);
        Record($"{node} conditions latency {conditions.Latency.Ticks} bandwidth {conditions.BandwidthBytesPerSecond} loss {conditions.Loss.ToString("R", CultureInfo.InvariantCulture)}");
    }

    // ------------------------------------------------------------------ work

    /// <summary>The hashchain sample (SHA-256 applied <paramref name="rounds"/> times to a random seed) with its expected output.</summary>
    public static SimTask HashChainTask(Random random, int rounds)
    {
        ArgumentNullException.ThrowIfNull(random);
        var seed = new byte[16];
        random.NextBytes(seed);
        var h = SHA256.HashData(seed);
        for (var i = 1; i < rounds; i++)
        {
            h = SHA256.HashData(h);
        }
        var expected = Encoding.ASCII.GetBytes(Convert.ToHexStringLower(h) + "\n");
        return new SimTask(new TaskSubmission
        {
            Module = HashChainModule.Value,
            Input = seed,
            Args = [rounds.ToString(CultureInfo.InvariantCulture)],
            Fuel = 50_000_000,
            MemoryBytes = 16L << 20,
        }, expected);
    }

    private static readonly Lazy<byte[]> HashChainModule = new(() => SampleModules.Load("hashchain"));

    /// <summary>The hashchain sample module.</summary>
    internal static byte[] HashChainModuleBytes => HashChainModule.Value;

    /// <summary>A provider's price: a Sybil undercuts everyone.</summary>
    public long PriceOf(SimNode node) => node.Adversary == AdversaryKind.Sybil ? 1 : _options.PricePerMegaFuel;

    /// <summary>
    /// Submits <paramref name="task"/> from <paramref name="requester"/> and records how it ended: the provider, fuel,
    /// whether it was verified, and whether its output is the expected one (a wrong result accepted).
    /// </summary>
    public async Task<TaskRecord> SubmitAsync(SimNode requester, SimTask task)
    {
        ArgumentNullException.ThrowIfNull(requester);
        ArgumentNullException.ThrowIfNull(task);
        var record = new TaskRecord(_tasks.Count, requester.Index, Elapsed);
        _tasks.Add(record);
        Record($"task {record.Id} submitted by {requester}");
        if (requester.Node?.Compute is not { } compute)
        {
            record.Finish(Elapsed, null, "the requester is down");
            Record($"task {record.Id} failed: requester down");
            return record;
        }
        if (!_inFlight.TryGetValue(requester.Index, out var inFlight))
        {
            _inFlight[requester.Index] = inFlight = [];
        }
        inFlight.Add(record);
        record.ProvidersKnown = compute.Client.LiveAdvertisements; // a read: evicts nothing, not traced
        try
        {
            var result = await compute.SubmitAsync(task.Submission, CancellationToken.None);
            var provider = NodeOf(result.Provider);
            record.Finish(Elapsed, result, null);
            record.ProviderIndex = provider?.Index ?? -1;
            record.Correct = result.Succeeded && result.Output.Span.SequenceEqual(task.ExpectedOutput);
            Record($"task {record.Id} done by {provider?.ToString() ?? result.Provider.ToString()} fuel {result.Fuel} cost {result.Cost} "
                + $"verified {result.Verified} correct {record.Correct} attempts {result.Attempts}");
        }
        catch (Exception e) when (e is SubmissionException or OperationCanceledException or InvalidOperationException or ObjectDisposedException)
        {
            record.Finish(Elapsed, null, e.Message);
            if (e is SubmissionException se)
            {
                record.History = se.Attempts;
            }
            Record($"task {record.Id} failed: {e.GetType().Name}");
        }
        finally
        {
            inFlight.Remove(record);
            if (inFlight.Count == 0)
            {
                _inFlight.Remove(requester.Index);
            }
        }
        return record;
    }

    /// <summary>
    /// Called after each node is disposed in <see cref="DisposeAsync"/>: the teardown runs within one moment of virtual
    /// time, so <see cref="VirtualTimeDriver.BetweenMoments"/> (where <c>potluck sim</c> holds gen2 to its cap) does not run
    /// meanwhile, and at 10,000 nodes what the nodes left behind (each saves its peer store on stop) grew gen2 by ~1 GiB,
    /// raising the process's peak 3,683 -> 4,053 MiB (stop 40). The harness puts its heap check here.
    /// </summary>
    public Action? TeardownCheck { get; set; }

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }
        foreach (var node in _nodes)
        {
            if (node.Node is { } running)
            {
                node.Corrupted += node.Cheat?.Invoke() ?? 0;
                node.Cheat = null;
                node.Node = null;
                await running.DisposeAsync();
                TeardownCheck?.Invoke();
            }
        }
        _disposed = true;
        _trace.Dispose();
        _sharedSandbox?.Dispose();
        _sharedCounters?.Dispose();
        _sharedValues.Dispose(); // frees the tables' GC handles (None: nothing)
        foreach (var keeper in _memoryKeepers.Concat(_downKeepers.Values.SelectMany(k => k)))
        {
            keeper.Dispose();
        }
        if (_ownsRoot)
        {
            try
            {
                Directory.Delete(_root, recursive: true);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
    }

    /// <summary>
    /// What SQLite holds for the nodes that are up now (their ledger, reputation and peer connections; a crashed node's
    /// keeper is not among them), and over how many nodes. Read, not traced: the trace stays the same.
    /// </summary>
    public (int Nodes, Scheduler.Storage.SqliteFootprint Footprint) CountStorage()
    {
        var nodes = 0;
        var sum = default(Scheduler.Storage.SqliteFootprint);
        foreach (var node in _nodes)
        {
            if (node.Node is not { } running || !node.IsUp)
            {
                continue;
            }
            nodes++;
            if (running.Services.GetService(typeof(Hosting.PeerPersistence)) is Hosting.PeerPersistence { Database: { } peers })
            {
                sum += peers.Footprint();
            }
            if (running.Compute is { } compute)
            {
                sum += compute.StorageFootprint();
            }
        }
        return (nodes, sum);
    }
}

/// <summary>A task and the output an honest run gives.</summary>
public sealed record SimTask(TaskSubmission Submission, byte[] ExpectedOutput);

public enum MeshEventKind
{
    Refused,
    Crash,
    Restart,
    Partition,
    Heal,
    Whitewash,
}

/// <summary>Something that happened in a mesh: <paramref name="Node"/> and <paramref name="Other"/> are indices (or counts for partitions).</summary>
public sealed record MeshEvent(TimeSpan At, MeshEventKind Kind, int Node, int Other, string Detail);

/// <summary>One step of a task's timeline (<see cref="TaskRecord.Steps"/>), at virtual time <paramref name="At"/>.</summary>
public sealed record TaskStep(TimeSpan At, string What);

/// <summary>One submitted task and how it ended.</summary>
public sealed class TaskRecord
{
    internal TaskRecord(int id, int requester, TimeSpan submitted)
    {
        Id = id;
        RequesterIndex = requester;
        Submitted = submitted;
    }

    public int Id { get; }

    public int RequesterIndex { get; }

    public TimeSpan Submitted { get; }

    public TimeSpan? Finished { get; private set; }

    public SubmissionResult? Result { get; private set; }

    public string? Error { get; private set; }

    public int ProviderIndex { get; internal set; } = -1;

    /// <summary>Live advertisements the requester's book held when it submitted (-1: the requester was down).</summary>
    public int ProvidersKnown { get; internal set; } = -1;

    /// <summary>Succeeded with exactly the expected output.</summary>
    public bool Correct { get; internal set; }

    public IReadOnlyList<AttemptRecord> History { get; internal set; } = [];

    public bool Completed => Result is { Succeeded: true };

    public TimeSpan? Latency => Finished - Submitted;

    private readonly List<TaskStep> _steps = [];

    /// <summary>
    /// What happened to it on its requester while it was in flight, at virtual times: connections to and from providers
    /// opened and closed, and each attempt's end (a provider's refusal, a lost lease, a result) as the requester recorded it.
    /// </summary>
    public IReadOnlyList<TaskStep> Steps => _steps;

    /// <summary>Whether its requester had other tasks in flight at one of <see cref="Steps"/>: those steps may be theirs.</summary>
    public bool StepsShared { get; private set; }

    internal void AddStep(TimeSpan at, string what, bool shared)
    {
        if (_steps.Count < MaxSteps)
        {
            _steps.Add(new TaskStep(at, what));
        }
        StepsShared |= shared;
    }

    /// <summary>Steps kept per task (a task retried for long keeps its first ones).</summary>
    public const int MaxSteps = 64;

    internal void Finish(TimeSpan at, SubmissionResult? result, string? error)
    {
        Finished = at;
        Result = result;
        Error = error;
        if (result is not null)
        {
            History = result.History;
        }
    }
}

/// <summary>The sample modules embedded in this assembly (see Node.csproj).</summary>
internal static class SampleModules
{
    public static byte[] Load(string name)
    {
        using var stream = typeof(SampleModules).Assembly.GetManifestResourceStream($"samples/{name}.wasm")
            ?? throw new FileNotFoundException($"samples/{name}.wasm is not embedded in {typeof(SampleModules).Assembly.GetName().Name}");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }
}
