using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Potluck.Node.Persistence;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Mdns;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Ping;
using Potluck.Protocol.Runtime;

namespace Potluck.Node.Hosting;

/// <summary>
/// How a node finds and keeps peers: peers heard on mDNS are dialed; the bootstrap list is dialed and the DHT bootstrapped
/// at start, and again whenever the routing table runs empty. A start-up join that reached nobody (no dial answered, or
/// the DHT's routing table still empty) is retried after 1, 2, 4, 8 and 16 s (<see cref="DiscoveryOptions.JoinRetryDelay"/>,
/// doubling, <see cref="DiscoveryOptions.JoinRetries"/> times) before the regular interval takes over. With a data directory the peer store and joined topics
/// survive restarts: a restarted node re-dials the peers it knew (most recently seen first, bounded) and rejoins its
/// topics. It never dials or remembers itself. Each new connection is pinged once so its latency is known.
/// </summary>
public sealed partial class DiscoveryService : IHostedService
{
    private IServiceProvider? _services; // until started: nothing is resolved after, and a node may let its provider go
    private readonly PotluckOptions _options;
    private readonly NodeRuntime _runtime;
    private readonly ILogger<DiscoveryService> _log;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, GossipSubscription> _topics = new(StringComparer.Ordinal);
    private readonly BackgroundWork _work;
    private IReadOnlyList<PersistedPeer> _remembered = [];
    private Potluck.Protocol.Host.IHost _host = null!;
    private GossipsubService? _gossip;
    private KademliaService? _dht;
    private PingService? _ping;
    private PeerDatabase? _database;
    private MdnsDiscovery? _mdns;
    private int _stopped;
    private bool _joinFailed;

    public DiscoveryService(IServiceProvider services, PotluckOptions options, NodeRuntime runtime, ILogger<DiscoveryService> log)
    {
        _services = services;
        _options = options;
        _runtime = runtime;
        _log = log;
        _work = runtime.CreateBackgroundWork("discovery", log);
    }

    /// <summary>Completes when the start-up join is done: remembered peers and the bootstrap list dialed, the DHT bootstrapped.</summary>
    public Task Joined { get; private set; } = Task.CompletedTask;

    /// <summary>mDNS discovery; null when off or when its socket could not be opened.</summary>
    public MdnsService? Mdns => _mdns?.Service;

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

    private PeerId PeerId => _host.PeerId;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var services = _services ?? throw new InvalidOperationException("discovery was already started");
        _services = null;
        _host = services.GetRequiredService<Potluck.Protocol.Host.IHost>();
        var protocols = _options.Protocols;
        _gossip = protocols.Gossipsub ? services.GetRequiredService<GossipsubService>() : null;
        _dht = protocols.Kademlia ? services.GetRequiredService<KademliaService>() : null;
        _ping = protocols.Ping ? services.GetRequiredService<PingService>() : null;
        _database = services.GetRequiredService<PeerPersistence>().Database;
        _mdns = services.GetRequiredService<MdnsDiscovery>();
        if (_database?.RecoveredFromCorruption == true)
        {
            LogDatabaseRecovered(_database.Path);
        }
        var state = _database?.Load(_options.Discovery.MaxPersistedPeers, _options.Discovery.MaxPersistedAddressesPerPeer,
            _options.Host.PeerStore.MaxProtocolsPerPeer, _options.Discovery.MaxPersistedTopics) ?? PersistedState.Empty;
        _remembered = Remember(state.Peers);
        foreach (var topic in _options.Topics.Concat(state.Topics))
        {
            KeepTopic(topic);
        }
        _dht?.Start();
        if (_mdns.Service is { } mdns)
        {
            mdns.PeerDiscovered += OnMdnsPeer;
            try
            {
                mdns.Start();
            }
            catch (System.Net.Sockets.SocketException e)
            {
                LogMdnsUnavailable(e.Message);
                mdns.PeerDiscovered -= OnMdnsPeer;
                _work.Track("mdns dispose", mdns.DisposeAsync());
                _mdns.Service = null;
            }
        }
        if (_options.Discovery.PingNewConnections && _ping is not null)
        {
            _host.Connected += OnConnected;
        }
        Joined = _work.Start("join", JoinAsync);
        // Timers are created here, not in the loops, so virtual time advanced right after start is seen.
        var rebootstrap = new PeriodicTimer(_options.Discovery.RebootstrapInterval, _runtime.Time);
        _work.Run("rebootstrap", ct => RebootstrapLoopAsync(rebootstrap, ct));
        if (_database is not null)
        {
            var save = new PeriodicTimer(_options.Discovery.SaveInterval, _runtime.Time);
            _work.Run("save peers", ct => SaveLoopAsync(save, ct));
        }
        return Task.CompletedTask;
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
                _host.Peers.SetProtocols(peer.Id, peer.Protocols);
            }
            // Kept (not the discovery TTL): peers.db is bounded by 'discovery:maxPersistedPeers', and a node that comes
            // back while its network is down must not forget every peer it knew before it can reach one.
            if (_host.Peers is PeerStore store)
            {
                store.AddAddresses(peer.Id, addresses, AddressSource.Discovery, Timeout.InfiniteTimeSpan);
            }
            else
            {
                _host.Peers.AddAddresses(peer.Id, addresses, AddressSource.Discovery);
            }
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
        return _host.ListenAddresses.Contains(address.WithoutPeer());
    }

    // ------------------------------------------------------------------ topics

    /// <summary>Joins <paramref name="topic"/> for good (it is remembered across restarts) and returns a subscription to its messages.</summary>
    public GossipSubscription JoinTopic(string topic)
    {
        var gossip = _gossip ?? throw new InvalidOperationException("gossipsub is off on this node ('protocols:gossipsub')");
        KeepTopic(topic);
        return gossip.Subscribe(topic);
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
            if (_topics.ContainsKey(topic) || _stopped != 0 || _gossip is null)
            {
                return;
            }
            // The node's own membership only keeps the topic joined: nothing is delivered to it (no buffer, no reader).
            _topics[topic] = _gossip.Join(topic);
        }
    }

    // ------------------------------------------------------------------ discovery

    private async Task JoinAsync(CancellationToken ct)
    {
        var remembered = _remembered.Take(_options.Discovery.MaxRedialPeers).ToArray();
        if (remembered.Length > 0)
        {
            LogRedialing(remembered.Length);
        }
        _joinFailed = !await TryJoinAsync(remembered, ct);
        // Remember the first peers now, not only at the first periodic save: a node killed early still rejoins.
        Save();
    }

    /// <summary>
    /// Dials the bootstrap list and <paramref name="remembered"/> and bootstraps the DHT; false when there was someone to
    /// reach and the join reached nobody: no dial answered, or the DHT is on and its routing table is still empty.
    /// </summary>
    private async Task<bool> TryJoinAsync(IReadOnlyList<PersistedPeer> remembered, CancellationToken ct)
    {
        var (tried, answered) = await ReconnectAsync(remembered, ct);
        await BootstrapDhtAsync(ct);
        return tried == 0 || (answered > 0 && (_dht is null || _dht.RoutingTableSize > 0));
    }

    /// <summary>After a failed start-up join: tries again after the first delay, doubling (never past the regular interval), until one reaches someone or the retries are spent.</summary>
    private async Task RetryJoinAsync(CancellationToken ct)
    {
        var interval = _options.Discovery.RebootstrapInterval;
        var delay = _options.Discovery.JoinRetryDelay < interval ? _options.Discovery.JoinRetryDelay : interval;
        for (var attempt = 1; attempt <= _options.Discovery.JoinRetries; attempt++, delay = delay < interval / 2 ? delay * 2 : interval)
        {
            LogJoinRetry(attempt, delay.TotalSeconds);
            await Task.Delay(delay, _runtime.Time, ct);
            if (await TryJoinAsync(_remembered.Take(_options.Discovery.MaxRedialPeers).ToArray(), ct))
            {
                Save();
                return;
            }
        }
    }

    /// <summary>Dials the bootstrap list and the given remembered peers, concurrently; failures are logged, not thrown. Returns how many were dialed and how many answered.</summary>
    private async Task<(int Tried, int Answered)> ReconnectAsync(IReadOnlyList<PersistedPeer> remembered, CancellationToken ct)
    {
        var dials = _options.Bootstrap.Where(a => !IsOwnAddress(a)).Select(a => DialAsync(a.ToString(), () => _host.ConnectAsync(a, ct), ct, DialReason.Bootstrap))
            .Concat(remembered.Select(p => DialAsync(p.Id.ToString(), () => _host.ConnectAsync(p.Id, ct), ct, DialReason.Discovery)))
            .ToArray();
        var answered = await Task.WhenAll(dials);
        return (answered.Length, answered.Count(a => a));
    }

    private async Task<bool> DialAsync(string what, Func<ValueTask<IConnection>> dial, CancellationToken ct, string reason)
    {
        using var dialReason = DialReason.Use(reason);
        try
        {
            await dial();
            return true;
        }
        catch (Exception e) when (Failures.IsExpected(e, ct))
        {
            LogDialFailed(what, e.Message);
            return false;
        }
    }

    private async Task BootstrapDhtAsync(CancellationToken ct)
    {
        if (_dht is null)
        {
            return;
        }
        var seeds = _options.Bootstrap.Where(a => a.PeerId is { } id && id != PeerId).ToArray();
        var hasKnownServers = _host.Peers.Snapshot().Any(p => p.Id != PeerId && p.Protocols.Contains(_dht.ProtocolId, StringComparer.Ordinal));
        if (seeds.Length == 0 && !hasKnownServers)
        {
            return;
        }
        try
        {
            var size = await _dht.BootstrapAsync(seeds, ct);
            LogBootstrapped(size);
        }
        catch (Exception e) when (Failures.Classify(e, ct).Kind == FailureKind.Cancelled)
        {
        }
    }

    /// <summary>Runs one re-bootstrap check now (what the periodic timer runs): when the routing table is empty, dial and bootstrap again.</summary>
    public async Task RebootstrapIfEmptyAsync(CancellationToken ct)
    {
        if (_dht is null || _dht.RoutingTableSize > 0)
        {
            return;
        }
        await ReconnectAsync(_remembered.Take(_options.Discovery.MaxRedialPeers).ToArray(), ct);
        await BootstrapDhtAsync(ct);
    }

    private async Task RebootstrapLoopAsync(PeriodicTimer timer, CancellationToken ct)
    {
        using var _ = timer;
        await Joined;
        if (_joinFailed)
        {
            await RetryJoinAsync(ct);
        }
        while (await timer.WaitForNextTickAsync(ct))
        {
            await RebootstrapIfEmptyAsync(ct);
        }
    }

    private async Task SaveLoopAsync(PeriodicTimer timer, CancellationToken ct)
    {
        using var _ = timer;
        while (await timer.WaitForNextTickAsync(ct))
        {
            Save();
        }
    }

    private void OnMdnsPeer(MdnsPeer peer)
    {
        if (peer.Peer == PeerId || _stopped != 0 || _host.ConnectionManager.IsConnected(peer.Peer))
        {
            return;
        }
        _work.Run($"mdns dial {peer.Peer}", ct => DialAsync(peer.Peer.ToString(), () => _host.ConnectAsync(peer.Peer, ct), ct, DialReason.Discovery));
    }

    private void OnConnected(IConnection connection) =>
        _work.Run($"ping {connection.RemotePeer}", ct => MeasureLatencyAsync(connection.RemotePeer, ct));

    /// <summary>Pings the peer once (bounded by the host's dial timeout) so its latency is known; returns whether it answered.</summary>
    public async Task<bool> MeasureLatencyAsync(PeerId peer, CancellationToken ct = default)
    {
        if (_ping is null)
        {
            return false;
        }
        using var timeout = new CancellationTokenSource(_options.Host.DialTimeout, _runtime.Time);
        using var linked = _work.Link(timeout.Token, ct);
        try
        {
            await _ping.PingAsync(peer, 1, linked.Token);
            return true;
        }
        catch (Exception e) when (Failures.IsExpected(e, linked.Token))
        {
            return false;
        }
    }

    // ------------------------------------------------------------------ persistence

    /// <summary>What would be persisted now: peers we have completed a handshake with, never ourselves or our own addresses.</summary>
    public PersistedState CaptureState()
    {
        var now = _runtime.Time.GetUtcNow();
        var connected = _host.Connections.Where(c => !c.IsClosed).Select(c => c.RemotePeer).ToHashSet();
        var peers = _host.Peers.Snapshot()
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

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _stopped, 1) != 0 || _host is null)
        {
            return;
        }
        _host.Connected -= OnConnected;
        await _work.StopAsync();
        Save();
        GossipSubscription[] held;
        lock (_gate)
        {
            held = [.. _topics.Values];
            _topics.Clear();
        }
        foreach (var subscription in held)
        {
            subscription.Dispose();
        }
        if (_mdns?.Service is { } mdns)
        {
            mdns.PeerDiscovered -= OnMdnsPeer;
            await mdns.DisposeAsync();
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Re-dialing {Count} remembered peers")]
    private partial void LogRedialing(int count);

    [LoggerMessage(Level = LogLevel.Information, Message = "Joining the network reached nobody; attempt {Attempt} in {Seconds} s")]
    private partial void LogJoinRetry(int attempt, double seconds);

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
