using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Metrics;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Multistream;
using Potluck.Protocol.Muxing;
using Potluck.Protocol.Pnet;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Security;
using Potluck.Protocol.Transport;

namespace Potluck.Protocol.Host;

/// <summary>
/// The libp2p host (go-libp2p's <c>basichost</c>): listens, dials, and composes the parts that do the rest —
/// the <see cref="ConnectionUpgrader"/> (pnet → multistream-select → Noise → multistream-select → Yamux on every
/// transport), the <see cref="ConnectionManager"/> (one registry per peer, limits, idle closing, protection, tags,
/// trimming) and the <see cref="StreamRouter"/> (handlers by protocol id and the one catch site of inbound streams).
/// It keeps one connection per peer where it can: concurrent dials to one peer share a single attempt, existing
/// connections are reused, and it never connects to itself. Dial, handshake and stream-negotiation timeouts run on
/// the runtime's clock; everything it starts in the background is owned by its <see cref="BackgroundWork"/>.
/// </summary>
public sealed partial class Libp2pHost : IHost
{
    private readonly PrivateKey _key;
    private readonly HostOptions _options;
    private readonly IReadOnlyList<ITransport> _transports;
    private readonly NodeRuntime _runtime;
    private readonly TimeProvider _time;
    private readonly ILogger<Libp2pHost> _log;
    private readonly ConnectionUpgrader _upgrader;
    private DateTimeOffset _lastSwarmKeyWarning = DateTimeOffset.MinValue;

    /// <summary>A handshake that broke on its first multistream-select message: the other side speaks pnet and this one does not, or with another key.</summary>
    private static bool EndedWithoutAnswer(Exception e)
    {
        for (var x = (Exception?)e; x is not null; x = x.InnerException)
        {
            if (x is PeerGoneException)
            {
                return true;
            }
        }
        return false;
    }

    private static bool LooksLikePnet(Exception e)
    {
        for (var x = (Exception?)e; x is not null; x = x.InnerException)
        {
            if (x is ProtocolViolationException { Protocol: var p } && p.StartsWith("multistream", StringComparison.Ordinal)
                || x.Message.StartsWith("multistream-select:", StringComparison.Ordinal))
            {
                return true;
            }
        }
        return false;
    }
    private readonly ConnectionManager _connections;
    private readonly ResourceManager _resources;
    private readonly StreamRouter _router;
    private readonly Func<Connection, Task> _unregister; // one delegate for every connection's close
    private readonly BackgroundWork _work;
    private readonly ProtocolInstruments _instruments;
    private readonly Lock _gate = new();
    private readonly Dictionary<PeerId, Task<Connection>> _pendingDials = [];
    private readonly List<IListener> _listeners = [];
    private readonly List<Multiaddr> _listenAddresses = [];
    private int _disposed;

    internal Libp2pHost(PrivateKey key, HostOptions options, IReadOnlyList<ITransport> transports, ISecurityProtocol security,
        IStreamMuxer muxer, SwarmKey? swarmKey, MultistreamOptions multistream, NodeRuntime runtime, ILoggerFactory loggers,
        IReadOnlyList<string>? earlyMuxers = null, ResourceManager? resources = null, ProtocolInstruments? instruments = null)
    {
        _instruments = instruments ?? ProtocolInstruments.Detached();
        _key = key;
        _options = options;
        _transports = transports;
        _runtime = runtime;
        _time = runtime.Time;
        _log = loggers.CreateLogger<Libp2pHost>();
        _work = runtime.CreateBackgroundWork("host", _log);
        // Every connection's muxer memory is reserved in its peer's, address's and subnet's scopes (the resource manager's).
        _upgrader = new ConnectionUpgrader(security, muxer, swarmKey, multistream, earlyMuxers ?? [], runtime, _log, _instruments,
            (peer, remote) => _resources!.MemoryFor(peer, remote));
        Peers = _peerStore = new PeerStore(options.PeerStore, _time, runtime.SharedValues);
        _resources = resources ?? new ResourceManager(options, _time);
        _connections = new ConnectionManager(options, runtime, _log, _resources, p => Peers.Get(p) is { Protocols.Count: > 0 });
        Budgets = new PeerBudgets(options.Budgets, _time);
        Budgets.Banned += peer =>
        {
            _resources.Ban(peer, options.Budgets.BanDuration);
            _log.PeerBanned(peer, options.Budgets.BanDuration);
            _work.Run("ban", () => DisconnectAsync(peer).AsTask());
        };
        _router = new StreamRouter(options, multistream, runtime, _log, _instruments, _resources, Budgets);
        _unregister = UnregisterAsync;
        _router.Changed += () => LocalInfoChanged?.Invoke();
        // The resource manager's scopes, the per-peer budgets' and the bans, as one set of scopes.
        _instruments.ObserveRefusals(() => _resources.Refusals.Concat(Budgets.Refused).Append(new("peers banned", Budgets.Bans))
            .ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal));
        _instruments.ObservePeerTable("peer store", () => _peerStore.Count, () => _peerStore.Forgotten);
        _instruments.ObservePeerTable("budgets", () => Budgets.TrackedPeers, () => Budgets.Forgotten);
    }

    public PeerId PeerId => _key.PeerId;

    public PublicKey PublicKey => _key.PublicKey;

    /// <summary>The node's key (the Node layer hands it to the Scheduler's signing services).</summary>
    public PrivateKey PrivateKey => _key;

    public ISigner Signer => _key;

    public HostOptions Options => _options;

    /// <summary>The metrics this host (and the protocols on it) count into.</summary>
    public ProtocolInstruments Instruments => _instruments;

    public IPeerStore Peers { get; }

    private Func<PeerId, IReadOnlyList<Multiaddr>?>[] _addressSources = [];

    public void AddAddressSource(Func<PeerId, IReadOnlyList<Multiaddr>?> source)
    {
        ArgumentNullException.ThrowIfNull(source);
        lock (_addressSourcesGate)
        {
            _addressSources = [.. _addressSources, source];
        }
    }

    private readonly object _addressSourcesGate = new();

    private readonly PeerStore _peerStore;

    public IConnectionManager ConnectionManager => _connections;

    public PeerBudgets Budgets { get; }

    public void BudgetInboundStreams(string protocol, string budget) => _router.SetBudget(protocol, budget);

    /// <summary>The resource manager: limits by scope, what each refused, the muxers' memory budget, bans.</summary>
    public ResourceManager Resources => _resources;

    /// <summary>
    /// The addresses this node gives others (identify, the DHT, its advertisement): the bound ones passed through the
    /// <see cref="AddressFactory"/> when one is set (go-libp2p's <c>AddrsFactory</c>: AutoNAT drops addresses found
    /// unreachable and adds confirmed observed ones, auto-relay adds <c>/p2p-circuit</c> addresses).
    /// </summary>
    public IReadOnlyList<Multiaddr> ListenAddresses
    {
        get
        {
            var bound = BoundAddresses;
            return _addressFactory is { } factory ? factory(bound) : bound;
        }
    }

    /// <summary>
    /// The addresses the listeners are bound to (0.0.0.0 expanded to the interfaces), without the bare
    /// <c>/p2p-circuit</c> of the relay listener: that one is nobody's address until a relay is reserved.
    /// </summary>
    public IReadOnlyList<Multiaddr> BoundAddresses
    {
        get
        {
            lock (_gate)
            {
                return [.. _listenAddresses];
            }
        }
    }

    private Func<IReadOnlyList<Multiaddr>, IReadOnlyList<Multiaddr>>? _addressFactory;

    /// <summary>Rewrites the bound addresses into the advertised ones (see <see cref="ListenAddresses"/>); null for none.</summary>
    public Func<IReadOnlyList<Multiaddr>, IReadOnlyList<Multiaddr>>? AddressFactory
    {
        get => _addressFactory;
        set
        {
            _addressFactory = value;
            AddressesChanged();
        }
    }

    /// <summary>Tells identify push, mDNS and the rest that <see cref="ListenAddresses"/> changed.</summary>
    public void AddressesChanged() => LocalInfoChanged?.Invoke();

    /// <summary>Whether one of this host's transports can dial <paramref name="address"/>.</summary>
    public bool CanDial(Multiaddr address) => _transports.Any(t => t.CanHandle(address));

    public IReadOnlyCollection<string> Protocols => _router.Protocols;

    public IReadOnlyList<IConnection> Connections => _connections.Connections;

    public event Action<IConnection>? Connected;

    public event Action<IConnection>? Disconnected;

    public event Action? LocalInfoChanged;

    public void SetStreamHandler(string protocol, StreamHandler handler) => _router.SetHandler(protocol, handler);

    public void RemoveStreamHandler(string protocol) => _router.RemoveHandler(protocol);

    public async Task StartAsync(IEnumerable<Multiaddr> listen, CancellationToken ct)
    {
        foreach (var address in listen)
        {
            var transport = _transports.FirstOrDefault(t => t.CanHandle(address))
                ?? throw new ArgumentException($"no transport can listen on {address}; use e.g. /ip4/0.0.0.0/tcp/4001");
            var listener = await transport.ListenAsync(address.WithoutPeer(), ct);
            lock (_gate)
            {
                _listeners.Add(listener);
                if (listener.Address.Components is not [{ } first, ..] || first.Protocol != Multiaddr.P2pCircuit)
                {
                    _listenAddresses.AddRange(ExpandUnspecified(listener.Address));
                }
            }
            _work.Run("accept", stopping => AcceptLoopAsync(listener, stopping));
            _log.Listening(listener.Address);
        }
        _connections.Start();
        LocalInfoChanged?.Invoke();
    }

    /// <summary>0.0.0.0 and :: become the machine's interface addresses, as go-libp2p reports them.</summary>
    private static IEnumerable<Multiaddr> ExpandUnspecified(Multiaddr bound)
    {
        var endpoint = bound.ToTcpEndPoint();
        if (endpoint is null || !(endpoint.Address.Equals(IPAddress.Any) || endpoint.Address.Equals(IPAddress.IPv6Any)))
        {
            return [bound];
        }
        var family = endpoint.Address.AddressFamily;
        IEnumerable<IPAddress> addresses;
        try
        {
            addresses = NetworkInterface.GetAllNetworkInterfaces()
                .Where(n => n.OperationalStatus == OperationalStatus.Up)
                .SelectMany(n => n.GetIPProperties().UnicastAddresses)
                .Select(u => u.Address)
                .Where(a => a.AddressFamily == family && !(family == AddressFamily.InterNetworkV6 && a.IsIPv6LinkLocal))
                .ToArray();
        }
        catch (NetworkInformationException)
        {
            addresses = [];
        }
        var list = addresses.Select(a => Multiaddr.FromTcpEndPoint(new IPEndPoint(a, endpoint.Port))).ToList();
        return list.Count > 0 ? list : [bound];
    }

    public async ValueTask<IConnection> ConnectAsync(Multiaddr address, CancellationToken ct)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var peer = address.PeerId;
        if (peer == PeerId || (peer is null && IsOwnAddress(address)))
        {
            throw new DialException(DialFailure.Self, $"refusing to dial {address}: that is this node itself", address);
        }
        if (peer is { } known && _connections.TryGet(known, out var existing))
        {
            return existing;
        }
        if (peer is not { } target)
        {
            _instruments.Dial(DialReason.Current);
            return await DialAndRegisterAsync(address, null, ct);
        }
        Task<Connection> dial;
        lock (_gate)
        {
            if (!_pendingDials.TryGetValue(target, out dial!))
            {
                // One attempt per peer, shared by every caller; it ends with the host, not with any one caller.
                _instruments.Dial(DialReason.Current);
                dial = DialSharedAsync(address, target);
                if (!dial.IsCompleted)
                {
                    _pendingDials[target] = dial;
                    _work.Track("dial", dial);
                }
            }
        }
        return await LoopSafeWait.WaitAsync(dial, ct);
    }

    /// <summary>A dial that any number of callers await; leaves the table of pending dials when it ends.</summary>
    private async Task<Connection> DialSharedAsync(Multiaddr address, PeerId target)
    {
        try
        {
            return await DialAndRegisterAsync(address, target, _work.Stopping);
        }
        finally
        {
            lock (_gate)
            {
                _pendingDials.Remove(target);
            }
        }
    }

    public async ValueTask<IConnection> ConnectAsync(PeerId peer, CancellationToken ct)
    {
        if (peer == PeerId)
        {
            throw new DialException(DialFailure.Self, "refusing to dial this node itself");
        }
        if (_connections.TryGet(peer, out var existing))
        {
            return existing;
        }
        var addresses = Peers.GetAddresses(peer).Where(a => !IsOwnAddress(a)).ToArray();
        if (addresses.Length == 0)
        {
            foreach (var source in Volatile.Read(ref _addressSources))
            {
                if (source(peer) is { Count: > 0 } found)
                {
                    Peers.AddAddresses(peer, found, AddressSource.Identify);
                    addresses = Peers.GetAddresses(peer).Where(a => !IsOwnAddress(a)).ToArray();
                    break;
                }
            }
        }
        if (addresses.Length == 0)
        {
            throw new DialException(DialFailure.NoAddresses, $"no known addresses for {peer}");
        }
        var errors = new List<Exception>();
        foreach (var address in addresses)
        {
            try
            {
                return await ConnectAsync(address.WithPeer(peer), ct);
            }
            catch (DialException e) when (e.Failure is not DialFailure.HostStopped && !ct.IsCancellationRequested)
            {
                errors.Add(e);
            }
        }
        if (errors.Count > 0 && errors.All(e => e is DialException { Failure: DialFailure.TooManyConnections }))
        {
            throw errors[0]; // our own limit (or theirs) refused every attempt: full, not unreachable
        }
        throw new DialException(DialFailure.Unreachable,
            $"could not reach {peer} at any of {addresses.Length} addresses: {string.Join("; ", errors.Select(e => e.Message).Take(4))}",
            null, new AggregateException(errors));
    }

    public async ValueTask<IStream> NewStreamAsync(PeerId peer, IReadOnlyList<string> protocols, CancellationToken ct)
    {
        var connection = await ConnectAsync(peer, ct);
        return await connection.OpenStreamAsync(protocols, ct);
    }

    public async ValueTask<StreamOpening> TryNewStreamAsync(PeerId peer, IReadOnlyList<string> protocols, CancellationToken ct)
    {
        var connection = await ConnectAsync(peer, ct);
        return await connection.TryOpenStreamAsync(protocols, ct);
    }

    public async ValueTask DisconnectAsync(PeerId peer)
    {
        foreach (var c in _connections.Registered(peer))
        {
            await c.CloseAsync();
        }
    }

    private bool IsOwnAddress(Multiaddr address)
    {
        var bare = address.WithoutPeer();
        lock (_gate)
        {
            return _listenAddresses.Contains(bare) || _listeners.Any(l => l.Address == bare);
        }
    }

    private async Task<Connection> DialAndRegisterAsync(Multiaddr address, PeerId? expected, CancellationToken ct,
        bool holePunch = false, bool? initiator = null, bool fromListenPort = true)
    {
        using var peerScope = expected is { } e ? _log.PeerScope(e) : null;
        var transport = _transports.FirstOrDefault(t => t.CanHandle(address))
            ?? throw new DialException(DialFailure.NoTransport, $"no transport for {address} (supported: /ip4|ip6|dns*/…/tcp/…, /memory/…)", address);
        if (!_connections.HasRoom && !_connections.TryMakeRoom(spareYoung: false))
        {
            throw new DialException(DialFailure.TooManyConnections, $"connection limit ({_options.MaxConnections}) reached", address);
        }
        using var timeout = new CancellationTokenSource(_options.DialTimeout, _time);
        using var linked = _work.Link(timeout.Token, ct);
        IRawConnection raw;
        try
        {
            // A circuit address keeps its target (…/p2p-circuit/p2p/<target>): the relay must be told whom to reach.
            raw = holePunch && fromListenPort && transport is IHolePunchTransport punching
                ? await punching.DialFromListenPortAsync(address.WithoutPeer(), linked.Token)
                : await transport.DialAsync(address.Find(Multiaddr.P2pCircuit) is null ? address.WithoutPeer() : address, linked.Token);
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested)
        {
            throw new DialException(DialFailure.Timeout, $"dial to {address} timed out after {_options.DialTimeout.TotalSeconds:0.#} s", address);
        }
        catch (OperationCanceledException) when (_work.IsStopping)
        {
            throw new DialException(DialFailure.HostStopped, "the host is stopping", address);
        }
        catch (Exception error) when (Failures.Classify(error, ct).Kind == FailureKind.PeerGone)
        {
            throw new DialException(DialFailure.Unreachable, $"cannot reach {address}: {error.Message}", address, error);
        }
        var id = _connections.NextConnectionId();
        using var connectionScope = _log.ConnectionScope(id);
        Connection connection;
        var started = _time.GetTimestamp();
        try
        {
            connection = await _upgrader.UpgradeAsync(raw, Direction.Outbound, expected, id, linked.Token, initiator);
            _instruments.HandshakeCompleted(Direction.Outbound, _time.GetElapsedTime(started));
        }
        catch (Exception error)
        {
            _instruments.HandshakeFailed(Direction.Outbound, HandshakeFailureKind(error, timeout.IsCancellationRequested, ct), _time.GetElapsedTime(started));
            await raw.DisposeAsync();
            throw DialFailed(address, error, timeout.IsCancellationRequested, ct);
        }
        if (connection.RemotePeer == PeerId)
        {
            await connection.CloseAsync();
            throw new DialException(DialFailure.Self, $"{address} is this node itself", address);
        }
        if (!Register(connection, out var refusedBy))
        {
            await connection.CloseAsync();
            throw new DialException(DialFailure.TooManyConnections, $"refused by the limit on {refusedBy}", address);
        }
        Peers.AddAddresses(connection.RemotePeer, [address.WithoutPeer()], AddressSource.Manual);
        return connection;
    }

    /// <summary>
    /// Dials <paramref name="address"/> on a new connection that is not registered with the host (no handlers, no
    /// connection limits, not reused by anyone): for probes such as AutoNAT's dial-back, which must reach that address
    /// and nothing else. The caller opens its streams and closes it.
    /// </summary>
    public async Task<IConnection> DialUnregisteredAsync(Multiaddr address, CancellationToken ct)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var transport = _transports.FirstOrDefault(t => t.CanHandle(address) && address.Find(Multiaddr.P2pCircuit) is null)
            ?? throw new DialException(DialFailure.NoTransport, $"no transport for {address}", address);
        using var timeout = new CancellationTokenSource(_options.DialTimeout, _time);
        using var linked = _work.Link(timeout.Token, ct);
        IRawConnection raw;
        try
        {
            raw = await transport.DialAsync(address.WithoutPeer(), linked.Token);
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested)
        {
            throw new DialException(DialFailure.Timeout, $"dial to {address} timed out after {_options.DialTimeout.TotalSeconds:0.#} s", address);
        }
        catch (Exception error) when (Failures.Classify(error, ct).Kind == FailureKind.PeerGone)
        {
            throw new DialException(DialFailure.Unreachable, $"cannot reach {address}: {error.Message}", address, error);
        }
        try
        {
            var connection = await _upgrader.UpgradeAsync(raw, Direction.Outbound, address.PeerId, _connections.NextConnectionId(), linked.Token);
            if (connection.RemotePeer == PeerId)
            {
                await connection.CloseAsync();
                throw new DialException(DialFailure.Self, $"{address} is this node itself", address);
            }
            return connection;
        }
        catch (Exception error) when (error is not DialException)
        {
            await raw.DisposeAsync();
            throw DialFailed(address, error, timeout.IsCancellationRequested, ct);
        }
    }

    /// <summary>What kind of failure ended a handshake: a timeout is the remote's stall (it went quiet), not our cancellation.</summary>
    private static FailureKind HandshakeFailureKind(Exception error, bool timedOut, CancellationToken ct) =>
        error is OperationCanceledException && timedOut ? FailureKind.PeerGone : Failures.Classify(error, ct).Kind;

    /// <summary>What a failed outbound upgrade means to the caller.</summary>
    private Exception DialFailed(Multiaddr address, Exception error, bool timedOut, CancellationToken ct)
    {
        if (error is OperationCanceledException)
        {
            if (timedOut)
            {
                return new DialException(DialFailure.Timeout, $"handshake with {address} timed out after {_options.DialTimeout.TotalSeconds:0.#} s", address, error);
            }
            if (ct.IsCancellationRequested)
            {
                return error;
            }
            if (_work.IsStopping)
            {
                return new DialException(DialFailure.HostStopped, "the host is stopping", address);
            }
        }
        if (Failures.Classify(error, ct).Kind == FailureKind.Internal)
        {
            return error; // a bug of ours, not the remote's failure: it must reach the Error log, not hide in a DialException
        }
        var wrongPeer = error is ProtocolViolationException { Code: ViolationCode.WrongPeer };
        return new DialException(wrongPeer ? DialFailure.WrongPeer : DialFailure.HandshakeFailed,
            $"handshake with {address} failed: {error.Message}" + (_upgrader.IsPrivateNetwork
                ? " (is the remote in the same private network, with the same swarm key?)"
                : LooksLikePnet(error) ? (EndedWithoutAnswer(error)
                    // A full node also closes before the handshake (nothing is answered), so say both.
                    ? " (the remote closed the connection without a libp2p answer: it may be full or refusing this address for now; if it keeps doing so, it is likely a private network; give its swarm key with --swarm-key)"
                    : " (the remote answered with bytes that are not libp2p: it is likely a private network; give its swarm key with --swarm-key)") : ""),
            address, error);
    }

    /// <summary>Registers an upgraded connection, starts routing its streams and tells the listeners; false when full.</summary>
    private bool Register(Connection connection, out string refusedBy)
    {
        if (_disposed != 0)
        {
            refusedBy = "closed";
            return false;
        }
        if (!_connections.TryAdd(connection, out refusedBy))
        {
            _log.ConnectionRefused(connection.RemotePeer, refusedBy);
            return false;
        }
        _instruments.ConnectionOpened(connection.Direction);
        _router.Attach(connection, _unregister);
        _peerStore.Connected(connection.RemotePeer);
        Peers.SetPublicKey(connection.RemotePeer, connection.RemotePublicKey);
        Peers.MarkSeen(connection.RemotePeer);
        _log.Connected(connection.Id, connection.Direction, connection.RemotePeer, connection.RemoteAddress);
        try
        {
            Connected?.Invoke(connection);
        }
        catch (Exception e)
        {
            _log.EventHandlerFailed(e);
        }
        return true;
    }

    /// <summary>
    /// Run once a registered connection has ended (its stream accept loop awaits the end: one parked task per connection).
    /// Why it closed is the muxer's to log; here it only leaves the registry.
    /// </summary>
    private async Task UnregisterAsync(Connection connection)
    {
        connection.Admission?.Dispose();
        if (!_connections.Remove(connection))
        {
            return;
        }
        _peerStore.Disconnected(connection.RemotePeer);
        _instruments.ConnectionClosed(connection.Direction, connection.ClosedLocally ? connection.CloseReason ?? "local" : "remote");
        var closing = connection.CloseAsync();
        _log.Disconnected(connection.Id, connection.RemotePeer);
        try
        {
            Disconnected?.Invoke(connection);
        }
        catch (Exception e)
        {
            _log.EventHandlerFailed(e);
        }
        await closing;
    }

    private async Task AcceptLoopAsync(IListener listener, CancellationToken stopping)
    {
        while (!stopping.IsCancellationRequested)
        {
            IRawConnection raw;
            try
            {
                raw = await listener.AcceptAsync(stopping);
            }
            catch (Exception e)
            {
                var failure = Failures.Classify(e, stopping);
                if (failure.Kind == FailureKind.Cancelled || stopping.IsCancellationRequested || e is OperationCanceledException)
                {
                    return; // disposed or stopping
                }
                _log.AcceptFailed(listener.Address, failure.Kind, failure.Reason);
                continue;
            }
            // Refused before any handshake byte is read: a full node, or one address or subnet over its share.
            var admission = _resources.TryAdmitInbound(raw.Remote, _connections.OpenCount, _connections.TryMakeRoom, out var refusedBy);
            if (admission is null)
            {
                _log.InboundRefused(raw.Remote, refusedBy);
                await raw.DisposeAsync();
                continue;
            }
            _work.Run("inbound upgrade", ct => UpgradeInboundAsync(raw, admission, ct));
        }
    }

    private async Task UpgradeInboundAsync(IRawConnection raw, ResourceManager.Admission admission, CancellationToken stopping)
    {
        var id = _connections.NextConnectionId();
        using var connectionScope = _log.ConnectionScope(id);
        using var timeout = new CancellationTokenSource(_options.HandshakeTimeout, _time);
        using var linked = _work.Link(timeout.Token, admission.Evicted);
        Connection? connection = null;
        var started = _time.GetTimestamp();
        // During a hole punch in which this node opened the DCUtR stream, an inbound connection from the peer's address
        // is the punch arriving first: this node still speaks first, as the peer (which dialed as responder) expects.
        var punch = HolePunchRoleFor(raw.Remote);
        try
        {
            connection = await _upgrader.UpgradeAsync(raw, Direction.Inbound, punch.Expected, id, linked.Token, punch.Punch ? true : null);
            _instruments.HandshakeCompleted(Direction.Inbound, _time.GetElapsedTime(started));
        }
        catch (Exception e)
        {
            _instruments.HandshakeFailed(Direction.Inbound, HandshakeFailureKind(e, timeout.IsCancellationRequested, stopping), _time.GetElapsedTime(started));
            await raw.DisposeAsync();
            var failure = Failures.Classify(e, stopping);
            if (e is OperationCanceledException && timeout.IsCancellationRequested)
            {
                _log.InboundHandshakeTimeout(raw.Remote);
            }
            else if (failure.Kind == FailureKind.Internal)
            {
                _log.InboundHandshakeBug(raw.Remote, e);
            }
            else if (failure.Kind != FailureKind.Cancelled)
            {
                _log.InboundHandshakeFailed(raw.Remote, failure.Kind, failure.Reason);
                if (LooksLikePnet(e) && _time.GetUtcNow() - _lastSwarmKeyWarning >= TimeSpan.FromMinutes(1))
                {
                    // What a swarm-key mismatch looks like from this side: the first bytes are not multistream-select.
                    _lastSwarmKeyWarning = _time.GetUtcNow();
                    _log.InboundLikelySwarmKeyMismatch(raw.Remote, _upgrader.IsPrivateNetwork
                        ? "without this node's swarm key, or with another one"
                        : "with a swarm key (a private network), while this node has none");
                }
            }
        }
        finally
        {
            admission.HandshakeEnded();
        }
        if (connection is null)
        {
            admission.Dispose();
            return;
        }
        using var peerScope = _log.PeerScope(connection.RemotePeer);
        connection.Admission = admission;
        if (connection.RemotePeer == PeerId || !Register(connection, out _))
        {
            admission.Dispose();
            await connection.CloseAsync();
        }
        // The remote address of an inbound connection is usually an ephemeral port nobody listens on: it is
        // not recorded (go-libp2p doesn't either); the peer's listen addresses come from identify.
    }

    /// <summary>The host's pieces of background work running now (accept loops, dials, handshakes, connections, inbound streams).</summary>
    internal int BackgroundPieces => _work.Running + _router.Running;

    /// <summary>The stop tokens of the host's background work and of its stream router.</summary>
    internal (CancellationToken Host, CancellationToken Router) StopTokens => (_work.Stopping, _router.Stopping);

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        var connections = _connections.Close();
        // Cancels what still runs (accept loops, dials, handshakes, handlers) at once; waited for below.
        var stopped = Task.WhenAll(_work.StopAsync(), _router.DisposeAsync().AsTask());
        IListener[] listeners;
        lock (_gate)
        {
            listeners = [.. _listeners];
        }
        foreach (var l in listeners)
        {
            await l.DisposeAsync();
        }
        foreach (var c in connections)
        {
            await c.CloseAsync();
        }
        await _connections.DisposeAsync();
        // Bounded: a handler that ignores its token must not hold the node's shutdown forever.
        try
        {
            await stopped.WaitAsync(TimeSpan.FromSeconds(5), _time);
        }
        catch (TimeoutException)
        {
            // What still runs was cancelled; it ends on its own.
        }
    }
}
