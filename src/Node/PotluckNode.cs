using Microsoft.Extensions.Logging;
using Potluck.Node.Persistence;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Mdns;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Perf;
using Potluck.Protocol.Ping;
using Potluck.Protocol.Pnet;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport.Tcp;

namespace Potluck.Node;

/// <summary>
/// A running Potluck node: the libp2p host with identify, ping, perf, gossipsub, the Kademlia DHT (server mode when
/// it listens) and, when asked, mDNS. The one place that chooses the transport (TCP for real nodes, the in-memory
/// network for simulations) and the clock. Discovery: peers heard on mDNS are dialed; the bootstrap list is dialed
/// and the DHT bootstrapped at start, and again whenever the routing table runs empty. With a data directory the
/// peer store and joined topics survive restarts: a restarted node re-dials the peers it knew (most recently seen
/// first, bounded) and rejoins its topics. It never dials or remembers itself.
/// </summary>
public sealed partial class PotluckNode : IAsyncDisposable
{
    private readonly NodeOptions _options;
    private readonly ILogger<PotluckNode> _log;
    private readonly PeerDatabase? _database;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, GossipSubscription> _topics = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _loops = [];
    private IReadOnlyList<PersistedPeer> _remembered = [];
    private int _disposed;

    private PotluckNode(NodeOptions options, Libp2pHost host, PeerDatabase? database, NodeRuntime runtime, ILoggerFactory loggers)
    {
        _options = options;
        _log = loggers.CreateLogger<PotluckNode>();
        _database = database;
        Host = host;
        Identify = new IdentifyService(host, new IdentifyOptions(), runtime, loggers);
        Ping = new PingService(host, new PingOptions(), runtime, loggers);
        Perf = new PerfService(host, new PerfOptions(), runtime, loggers);
        Gossip = new GossipsubService(host, options.Gossip, runtime, loggers);
        Dht = new KademliaService(host, options.Kademlia with { Mode = options.Listen.Count > 0 ? KademliaMode.Server : KademliaMode.Client },
            runtime, loggers);
        if (options.EnableMdns)
        {
            Mdns = new MdnsService(host, options.Mdns, runtime, loggers);
            Mdns.PeerDiscovered += OnMdnsPeer;
        }
        if (options.Discovery.PingNewConnections)
        {
            host.Connected += OnConnected;
        }
    }

    public Libp2pHost Host { get; }

    public IdentifyService Identify { get; }

    public PingService Ping { get; }

    public PerfService Perf { get; }

    public GossipsubService Gossip { get; }

    /// <summary>The compute layer, when <see cref="NodeOptions.Compute"/> asked for it.</summary>
    public Potluck.Node.Compute.ComputeNode? Compute { get; private set; }

    public KademliaService Dht { get; }

    /// <summary>mDNS discovery; null when <see cref="NodeOptions.EnableMdns"/> is off or the socket could not be opened.</summary>
    public MdnsService? Mdns { get; private set; }

    public PeerId PeerId => Host.PeerId;

    public NodeOptions Options => _options;

    /// <summary>Listen addresses with the /p2p/&lt;peer id&gt; suffix, ready to give to another node.</summary>
    public IReadOnlyList<Multiaddr> FullAddresses => Host.ListenAddresses.Select(a => a.WithPeer(PeerId)).ToArray();

    /// <summary>Completes when the start-up join is done: remembered peers and the bootstrap list dialed, the DHT bootstrapped.</summary>
    public Task Joined { get; private set; } = Task.CompletedTask;

    /// <summary>Topics the node stays in (and rejoins after a restart).</summary>
    public IReadOnlyList<string> JoinedTopics
    {
        get
        {
            lock (_gate)
            {
                return _topics.Keys.Order(StringComparer.Ordinal).ToArray();
            }
        }
    }

    /// <summary>Creates a node on real TCP sockets and the system clock, with no discovery or persistence (client commands, benchmarks).</summary>
    public static Task<PotluckNode> StartTcpAsync(PrivateKey key, IEnumerable<Multiaddr> listen, SwarmKey? swarmKey, ILoggerFactory loggers, CancellationToken ct) =>
        StartAsync(new NodeOptions { Key = key, Listen = listen.ToArray(), SwarmKey = swarmKey }, loggers, ct);

    /// <summary>Creates and starts a node as <paramref name="options"/> say; discovery continues in the background (see <see cref="Joined"/>).</summary>
    public static async Task<PotluckNode> StartAsync(NodeOptions options, ILoggerFactory loggers, CancellationToken ct)
    {
        var settings = options.HostSettings with { SwarmKey = options.SwarmKey ?? options.HostSettings.SwarmKey };
        var runtime = options.Runtime ?? NodeRuntime.WithTime(options.Time, options.Random?.NextInt64());
        var transports = options.Transports ?? [new TcpTransport(new TcpTransportOptions(), runtime)];
        var host = Libp2pHost.Create(options.Key, transports, settings, runtime, loggers);
        PeerDatabase? database = null;
        PotluckNode? node = null;
        try
        {
            database = options.DataDir is { } dir ? PeerDatabase.Open(dir) : null;
            node = new PotluckNode(options, host, database, runtime, loggers);
            if (database?.RecoveredFromCorruption == true)
            {
                node.LogDatabaseRecovered(database.Path);
            }
            await host.StartAsync(options.Listen, ct);
            node.Start();
            if (options.Compute is { } compute)
            {
                node.Compute = Potluck.Node.Compute.ComputeNode.Start(host, new Potluck.Node.Compute.GossipTopicBus(node.Gossip, loggers.CreateLogger<Potluck.Node.Compute.GossipTopicBus>()),
                    compute, loggers, options.Time);
            }
            return node;
        }
        catch
        {
            if (node is not null)
            {
                await node.DisposeAsync();
            }
            else
            {
                database?.Dispose();
                await host.DisposeAsync();
            }
            throw;
        }
    }

    private void Start()
    {
        var state = _database?.Load(_options.Discovery.MaxPersistedPeers, _options.Discovery.MaxPersistedAddressesPerPeer,
            Host.Options.PeerStore.MaxProtocolsPerPeer, _options.Discovery.MaxPersistedTopics) ?? PersistedState.Empty;
        _remembered = Remember(state.Peers);
        foreach (var topic in _options.Topics.Concat(state.Topics))
        {
            KeepTopic(topic);
        }
        Dht.Start();
        if (Mdns is not null)
        {
            try
            {
                Mdns.Start();
            }
            catch (System.Net.Sockets.SocketException e)
            {
                LogMdnsUnavailable(e.Message);
                Mdns.PeerDiscovered -= OnMdnsPeer;
                _ = Mdns.DisposeAsync().AsTask();
                Mdns = null;
            }
        }
        Joined = Task.Run(() => JoinAsync(_stop.Token));
        lock (_gate)
        {
            _loops.Add(Joined);
            // Timers are created here, not in the loops, so virtual time advanced right after start is seen.
            var rebootstrap = new PeriodicTimer(_options.Discovery.RebootstrapInterval, _options.Time);
            _loops.Add(Task.Run(() => RebootstrapLoopAsync(rebootstrap, _stop.Token)));
            if (_database is not null)
            {
                var save = new PeriodicTimer(_options.Discovery.SaveInterval, _options.Time);
                _loops.Add(Task.Run(() => SaveLoopAsync(save, _stop.Token)));
            }
        }
    }

    /// <summary>Puts remembered peers back into the peer store (never ourselves or our own addresses); returns them.</summary>
    private IReadOnlyList<PersistedPeer> Remember(IReadOnlyList<PersistedPeer> peers)
    {
        var kept = new List<PersistedPeer>();
        foreach (var peer in peers)
        {
            var addresses = peer.Addresses.Where(a => !IsOwnAddress(a)).Select(a => a.WithoutPeer()).Distinct().ToArray();
            if (peer.Id == PeerId || addresses.Length == 0)
            {
                continue;
            }
            if (peer.Protocols.Count > 0)
            {
                Host.Peers.SetProtocols(peer.Id, peer.Protocols);
            }
            Host.Peers.AddAddresses(peer.Id, addresses, AddressSource.Discovery);
            kept.Add(peer with { Addresses = addresses });
        }
        return kept;
    }

    private bool IsOwnAddress(Multiaddr address)
    {
        if (address.PeerId is { } id && id == PeerId)
        {
            return true;
        }
        var bare = address.WithoutPeer();
        return Host.ListenAddresses.Contains(bare);
    }

    // ------------------------------------------------------------------ topics

    /// <summary>Joins <paramref name="topic"/> for good (it is remembered across restarts) and returns a subscription to its messages.</summary>
    public GossipSubscription JoinTopic(string topic)
    {
        KeepTopic(topic);
        return Gossip.Subscribe(topic);
    }

    /// <summary>Stops staying in <paramref name="topic"/> (other live subscriptions to it keep it joined until disposed).</summary>
    public void LeaveTopic(string topic)
    {
        GossipSubscription? held;
        lock (_gate)
        {
            _topics.Remove(topic, out held);
        }
        held?.Dispose();
    }

    private void KeepTopic(string topic)
    {
        ArgumentException.ThrowIfNullOrEmpty(topic);
        lock (_gate)
        {
            if (_topics.ContainsKey(topic) || _disposed != 0)
            {
                return;
            }
            var held = Gossip.Subscribe(topic);
            _topics[topic] = held;
            // The node's own subscription only keeps the topic joined; its copy of each message is discarded.
            _loops.Add(Task.Run(async () =>
            {
                try
                {
                    await foreach (var _ in held.Messages.ReadAllAsync(_stop.Token))
                    {
                    }
                }
                catch (OperationCanceledException)
                {
                }
            }));
        }
    }

    // ------------------------------------------------------------------ discovery

    private async Task JoinAsync(CancellationToken ct)
    {
        await Task.Yield();
        var remembered = _remembered.Take(_options.Discovery.MaxRedialPeers).ToArray();
        if (remembered.Length > 0)
        {
            LogRedialing(remembered.Length);
        }
        await ReconnectAsync(remembered, ct);
        await BootstrapDhtAsync(ct);
        // Remember the first peers now, not only at the first periodic save: a node killed early still rejoins.
        Save();
    }

    /// <summary>Dials the bootstrap list and the given remembered peers, concurrently; failures are logged, not thrown.</summary>
    private async Task ReconnectAsync(IReadOnlyList<PersistedPeer> remembered, CancellationToken ct)
    {
        var dials = _options.Bootstrap.Where(a => !IsOwnAddress(a)).Select(a => DialAsync(a.ToString(), () => Host.ConnectAsync(a, ct)))
            .Concat(remembered.Select(p => DialAsync(p.Id.ToString(), () => Host.ConnectAsync(p.Id, ct))));
        await Task.WhenAll(dials);
    }

    private async Task DialAsync(string what, Func<ValueTask<IConnection>> dial)
    {
        try
        {
            await dial();
        }
        catch (Exception e) when (e is DialException or IOException or OperationCanceledException or ObjectDisposedException)
        {
            LogDialFailed(what, e.Message);
        }
    }

    private async Task BootstrapDhtAsync(CancellationToken ct)
    {
        var seeds = _options.Bootstrap.Where(a => a.PeerId is { } id && id != PeerId).ToArray();
        var hasKnownServers = Host.Peers.Snapshot().Any(p => p.Id != PeerId && p.Protocols.Contains(Dht.ProtocolId, StringComparer.Ordinal));
        if (seeds.Length == 0 && !hasKnownServers)
        {
            return;
        }
        try
        {
            var size = await Dht.BootstrapAsync(seeds, ct);
            LogBootstrapped(size);
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
        {
        }
    }

    /// <summary>Runs one re-bootstrap check now (what the periodic timer runs): when the routing table is empty, dial and bootstrap again.</summary>
    public async Task RebootstrapIfEmptyAsync(CancellationToken ct)
    {
        if (Dht.RoutingTableSize > 0)
        {
            return;
        }
        await ReconnectAsync(_remembered.Take(_options.Discovery.MaxRedialPeers).ToArray(), ct);
        await BootstrapDhtAsync(ct);
    }

    private async Task RebootstrapLoopAsync(PeriodicTimer timer, CancellationToken ct)
    {
        using var _ = timer;
        try
        {
            await Joined;
            while (await timer.WaitForNextTickAsync(ct))
            {
                await RebootstrapIfEmptyAsync(ct);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
        }
    }

    private async Task SaveLoopAsync(PeriodicTimer timer, CancellationToken ct)
    {
        using var _ = timer;
        try
        {
            while (await timer.WaitForNextTickAsync(ct))
            {
                Save();
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
        }
    }

    private void OnMdnsPeer(MdnsPeer peer)
    {
        if (peer.Peer == PeerId || _disposed != 0 || Host.Connections.Any(c => c.RemotePeer == peer.Peer && !c.IsClosed))
        {
            return;
        }
        _ = DialAsync(peer.Peer.ToString(), () => Host.ConnectAsync(peer.Peer, _stop.Token));
    }

    private void OnConnected(IConnection connection) => _ = MeasureLatencyAsync(connection.RemotePeer);

    /// <summary>Pings the peer once (bounded by the host's dial timeout) so its latency is known; returns whether it answered.</summary>
    public async Task<bool> MeasureLatencyAsync(PeerId peer, CancellationToken ct = default)
    {
        using var timeout = new CancellationTokenSource(Host.Options.DialTimeout, _options.Time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, _stop.Token, ct);
        try
        {
            await Ping.PingAsync(peer, 1, linked.Token);
            return true;
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException or InvalidOperationException
                                      or Protocol.ProtocolViolationException or Protocol.ProtocolNotSupportedException)
        {
            return false;
        }
    }

    // ------------------------------------------------------------------ persistence

    /// <summary>What would be persisted now: peers we have completed a handshake with, never ourselves or our own addresses.</summary>
    public PersistedState CaptureState()
    {
        var now = _options.Time.GetUtcNow();
        var connected = Host.Connections.Where(c => !c.IsClosed).Select(c => c.RemotePeer).ToHashSet();
        var peers = Host.Peers.Snapshot()
            .Where(p => p.Id != PeerId && p.PublicKey is not null)
            .Select(p => new PersistedPeer(
                p.Id,
                p.Addresses.Where(a => !IsOwnAddress(a)).Take(_options.Discovery.MaxPersistedAddressesPerPeer).ToArray(),
                p.Protocols,
                connected.Contains(p.Id) ? now : p.LastSeen))
            .Where(p => p.Addresses.Count > 0)
            .OrderByDescending(p => p.LastSeen)
            .Take(_options.Discovery.MaxPersistedPeers)
            .ToArray();
        return new PersistedState(peers, JoinedTopics.Take(_options.Discovery.MaxPersistedTopics).ToArray());
    }

    /// <summary>Writes the peer store and joined topics to the data directory now (also done periodically and on shutdown).</summary>
    public void Save()
    {
        if (_database is null)
        {
            return;
        }
        try
        {
            _database.Save(CaptureState());
        }
        catch (Exception e) when (e is Microsoft.Data.Sqlite.SqliteException or IOException or UnauthorizedAccessException or ObjectDisposedException)
        {
            LogSaveFailed(e.Message);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        Host.Connected -= OnConnected;
        if (Compute is not null)
        {
            await Compute.DisposeAsync();
        }
        await _stop.CancelAsync();
        Task[] loops;
        lock (_gate)
        {
            loops = [.. _loops];
        }
        try
        {
            await Task.WhenAll(loops);
        }
        catch (OperationCanceledException)
        {
        }
        catch (Exception e)
        {
            LogLoopFailed(e);
        }
        Save();
        if (Mdns is not null)
        {
            Mdns.PeerDiscovered -= OnMdnsPeer;
            await Mdns.DisposeAsync();
        }
        await Gossip.DisposeAsync();
        await Dht.DisposeAsync();
        await Identify.DisposeAsync();
        await Host.DisposeAsync();
        _database?.Dispose();
        _stop.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "A discovery loop failed")]
    private partial void LogLoopFailed(Exception e);

    [LoggerMessage(Level = LogLevel.Information, Message = "Re-dialing {Count} remembered peers")]
    private partial void LogRedialing(int count);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Could not dial {Target}: {Reason}")]
    private partial void LogDialFailed(string target, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "DHT bootstrapped: {Size} peers in the routing table")]
    private partial void LogBootstrapped(int size);

    [LoggerMessage(Level = LogLevel.Warning, Message = "mDNS is unavailable ({Reason}); continuing without local discovery")]
    private partial void LogMdnsUnavailable(string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not save the peer store: {Reason}")]
    private partial void LogSaveFailed(string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The peer database {Path} was damaged; it was set aside and the node starts with no remembered peers")]
    private partial void LogDatabaseRecovered(string path);
}
