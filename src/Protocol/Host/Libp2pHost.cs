using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Multistream;
using Potluck.Protocol.Muxing;
using Potluck.Protocol.Pnet;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Security;
using Potluck.Protocol.Transport;

namespace Potluck.Protocol.Host;

/// <summary>
/// The libp2p host: listens, dials, upgrades every raw connection the same way on every transport
/// (pnet when a swarm key is set → multistream-select → security → multistream-select → muxer, as in
/// https://github.com/libp2p/specs/blob/master/connections/README.md), dispatches inbound streams to
/// handlers by protocol id, and manages connections: one per peer where possible (concurrent dials to
/// one peer share a single attempt, existing connections are reused), a cap on connections, dial,
/// handshake and idle timeouts, and never a connection to itself.
/// </summary>
public sealed partial class Libp2pHost : IHost, IConnectionManager
{
    private readonly PrivateKey _key;
    private readonly HostOptions _options;
    private readonly IReadOnlyList<ITransport> _transports;
    private readonly ISecurityProtocol _security;
    private readonly IStreamMuxer _muxer;
    private readonly SwarmKey? _swarmKey;
    private readonly MultistreamOptions _multistream;
    private readonly IReadOnlyList<string> _earlyMuxers;
    private readonly NodeRuntime _runtime;
    private readonly TimeProvider _time;
    private readonly ILogger<Libp2pHost> _log;
    private readonly ConcurrentDictionary<string, StreamHandler> _handlers = new(StringComparer.Ordinal);
    private readonly object _gate = new();
    private readonly Dictionary<PeerId, List<Connection>> _connections = [];
    private readonly Dictionary<PeerId, Task<Connection>> _pendingDials = [];
    private readonly Dictionary<PeerId, HashSet<string>> _protected = [];
    private readonly Dictionary<PeerId, Dictionary<string, int>> _tags = [];
    private readonly List<IListener> _listeners = [];
    private readonly List<Multiaddr> _listenAddresses = [];
    private readonly CancellationTokenSource _shutdown = new();
    private readonly List<Task> _background = [];
    private ITimer? _idleTimer;
    private int _pendingInbound;
    private int _connectionCount;
    private int _disposed;

    internal Libp2pHost(PrivateKey key, HostOptions options, IReadOnlyList<ITransport> transports, ISecurityProtocol security,
        IStreamMuxer muxer, SwarmKey? swarmKey, MultistreamOptions multistream, NodeRuntime runtime, ILoggerFactory loggers,
        IReadOnlyList<string>? earlyMuxers = null)
    {
        _earlyMuxers = earlyMuxers ?? [];
        _key = key;
        _options = options;
        _transports = transports;
        _security = security;
        _muxer = muxer;
        _swarmKey = swarmKey;
        _multistream = multistream;
        _runtime = runtime;
        _time = runtime.Time;
        _log = loggers.CreateLogger<Libp2pHost>();
        Peers = new PeerStore(options.PeerStore, _time);
    }

    public PeerId PeerId => _key.PeerId;

    public PublicKey PublicKey => _key.PublicKey;

    public PrivateKey PrivateKey => _key;

    public ISigner Signer => _key;

    public HostOptions Options => _options;

    public IPeerStore Peers { get; }

    public IConnectionManager ConnectionManager => this;

    public IReadOnlyList<Multiaddr> ListenAddresses
    {
        get
        {
            lock (_gate)
            {
                return [.. _listenAddresses];
            }
        }
    }

    public IReadOnlyCollection<string> Protocols => _handlers.Keys.Order(StringComparer.Ordinal).ToArray();

    public IReadOnlyList<IConnection> Connections
    {
        get
        {
            lock (_gate)
            {
                return _connections.Values.SelectMany(l => l).ToArray();
            }
        }
    }

    public event Action<IConnection>? Connected;

    public event Action<IConnection>? Disconnected;

    public event Action? LocalInfoChanged;

    public void SetStreamHandler(string protocol, StreamHandler handler)
    {
        ArgumentException.ThrowIfNullOrEmpty(protocol);
        _handlers[protocol] = handler;
        LocalInfoChanged?.Invoke();
    }

    public void RemoveStreamHandler(string protocol)
    {
        if (_handlers.TryRemove(protocol, out _))
        {
            LocalInfoChanged?.Invoke();
        }
    }

    int IConnectionManager.ConnectionCount => Volatile.Read(ref _connectionCount);

    IReadOnlyList<IConnection> IConnectionManager.ConnectionsTo(PeerId peer)
    {
        lock (_gate)
        {
            return _connections.TryGetValue(peer, out var list) ? [.. list] : [];
        }
    }

    bool IConnectionManager.IsConnected(PeerId peer) => TryGetConnection(peer, out _);

    void IConnectionManager.Protect(PeerId peer, string tag)
    {
        lock (_gate)
        {
            if (!_protected.TryGetValue(peer, out var tags))
            {
                _protected[peer] = tags = new HashSet<string>(StringComparer.Ordinal);
            }
            tags.Add(tag);
        }
    }

    bool IConnectionManager.Unprotect(PeerId peer, string tag)
    {
        lock (_gate)
        {
            if (_protected.TryGetValue(peer, out var tags) && tags.Remove(tag) && tags.Count == 0)
            {
                _protected.Remove(peer);
            }
            return _protected.ContainsKey(peer);
        }
    }

    bool IConnectionManager.IsProtected(PeerId peer, string? tag)
    {
        lock (_gate)
        {
            return _protected.TryGetValue(peer, out var tags) && (tag is null || tags.Contains(tag));
        }
    }

    void IConnectionManager.TagPeer(PeerId peer, string tag, int value) => ((IConnectionManager)this).UpsertTag(peer, tag, _ => value);

    void IConnectionManager.UntagPeer(PeerId peer, string tag)
    {
        lock (_gate)
        {
            if (_tags.TryGetValue(peer, out var tags) && tags.Remove(tag) && tags.Count == 0)
            {
                _tags.Remove(peer);
            }
        }
    }

    void IConnectionManager.UpsertTag(PeerId peer, string tag, Func<int, int> upsert)
    {
        lock (_gate)
        {
            if (!_tags.TryGetValue(peer, out var tags))
            {
                _tags[peer] = tags = new Dictionary<string, int>(StringComparer.Ordinal);
            }
            tags[tag] = upsert(tags.GetValueOrDefault(tag));
        }
    }

    ConnectionTagInfo? IConnectionManager.GetTagInfo(PeerId peer)
    {
        lock (_gate)
        {
            var tags = _tags.GetValueOrDefault(peer);
            var protectedBy = _protected.GetValueOrDefault(peer);
            if (tags is null && protectedBy is null)
            {
                return null;
            }
            return new ConnectionTagInfo(peer, tags?.Values.Sum() ?? 0, new Dictionary<string, int>(tags ?? []), protectedBy?.Order(StringComparer.Ordinal).ToArray() ?? []);
        }
    }

    ValueTask<int> IConnectionManager.TrimOpenConnectionsAsync(CancellationToken ct) => ValueTask.FromResult(0);

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
                _listenAddresses.AddRange(ExpandUnspecified(listener.Address));
                _background.Add(Task.Run(() => AcceptLoopAsync(listener)));
            }
            LogListening(listener.Address);
        }
        if (_options.IdleTimeout > TimeSpan.Zero)
        {
            var period = TimeSpan.FromTicks(Math.Max(TimeSpan.FromSeconds(1).Ticks, _options.IdleTimeout.Ticks / 4));
            _idleTimer ??= _time.CreateTimer(_ => CloseIdleConnections(), null, period, period);
        }
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
        if (peer is { } known && TryGetConnection(known, out var existing))
        {
            return existing;
        }
        if (peer is not { } target)
        {
            return await DialAndRegisterAsync(address, null, ct);
        }
        Task<Connection> dial;
        lock (_gate)
        {
            if (!_pendingDials.TryGetValue(target, out dial!))
            {
                dial = DialAndRegisterAsync(address, target, _shutdown.Token);
                _pendingDials[target] = dial;
                _ = dial.ContinueWith(_ =>
                {
                    lock (_gate)
                    {
                        _pendingDials.Remove(target);
                    }
                }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            }
        }
        return await dial.WaitAsync(ct);
    }

    public async ValueTask<IConnection> ConnectAsync(PeerId peer, CancellationToken ct)
    {
        if (peer == PeerId)
        {
            throw new DialException(DialFailure.Self, "refusing to dial this node itself");
        }
        if (TryGetConnection(peer, out var existing))
        {
            return existing;
        }
        var addresses = Peers.GetAddresses(peer).Where(a => !IsOwnAddress(a)).ToArray();
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
        throw new DialException(DialFailure.Unreachable,
            $"could not reach {peer} at any of {addresses.Length} addresses: {string.Join("; ", errors.Select(e => e.Message).Take(4))}",
            null, new AggregateException(errors));
    }

    public async ValueTask<IStream> NewStreamAsync(PeerId peer, IReadOnlyList<string> protocols, CancellationToken ct)
    {
        var connection = await ConnectAsync(peer, ct);
        return await connection.OpenStreamAsync(protocols, ct);
    }

    public async ValueTask DisconnectAsync(PeerId peer)
    {
        Connection[] toClose;
        lock (_gate)
        {
            toClose = _connections.TryGetValue(peer, out var list) ? [.. list] : [];
        }
        foreach (var c in toClose)
        {
            await c.CloseAsync();
        }
    }

    private bool TryGetConnection(PeerId peer, out Connection connection)
    {
        lock (_gate)
        {
            if (_connections.TryGetValue(peer, out var list))
            {
                foreach (var c in list)
                {
                    if (!c.IsClosed)
                    {
                        connection = c;
                        return true;
                    }
                }
            }
        }
        connection = null!;
        return false;
    }

    private bool IsOwnAddress(Multiaddr address)
    {
        var bare = address.WithoutPeer();
        lock (_gate)
        {
            return _listenAddresses.Contains(bare) || _listeners.Any(l => l.Address == bare);
        }
    }

    private async Task<Connection> DialAndRegisterAsync(Multiaddr address, PeerId? expected, CancellationToken ct)
    {
        var transport = _transports.FirstOrDefault(t => t.CanHandle(address))
            ?? throw new DialException(DialFailure.NoTransport, $"no transport for {address} (supported: /ip4|ip6|dns*/…/tcp/…, /memory/…)", address);
        if (Volatile.Read(ref _connectionCount) >= _options.MaxConnections)
        {
            throw new DialException(DialFailure.TooManyConnections, $"connection limit ({_options.MaxConnections}) reached", address);
        }
        using var timeout = new CancellationTokenSource(_options.DialTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, ct, _shutdown.Token);
        IRawConnection raw;
        try
        {
            raw = await transport.DialAsync(address.WithoutPeer(), linked.Token);
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested)
        {
            throw new DialException(DialFailure.Timeout, $"dial to {address} timed out after {_options.DialTimeout.TotalSeconds:0.#} s", address);
        }
        catch (OperationCanceledException) when (_shutdown.IsCancellationRequested)
        {
            throw new DialException(DialFailure.HostStopped, "the host is stopping", address);
        }
        catch (Exception e) when (e is IOException or SocketException)
        {
            throw new DialException(DialFailure.Unreachable, $"cannot reach {address}: {e.Message}", address, e);
        }
        Connection connection;
        try
        {
            connection = await UpgradeAsync(raw, Direction.Outbound, expected, linked.Token);
        }
        catch (Exception e)
        {
            await raw.DisposeAsync();
            if (e is OperationCanceledException && timeout.IsCancellationRequested)
            {
                throw new DialException(DialFailure.Timeout, $"handshake with {address} timed out after {_options.DialTimeout.TotalSeconds:0.#} s", address, e);
            }
            if (e is OperationCanceledException && ct.IsCancellationRequested)
            {
                throw;
            }
            if (e is OperationCanceledException && _shutdown.IsCancellationRequested)
            {
                throw new DialException(DialFailure.HostStopped, "the host is stopping", address);
            }
            var wrongPeer = e is ProtocolViolationException pv && pv.Reason.Contains("peer id", StringComparison.OrdinalIgnoreCase);
            throw new DialException(wrongPeer ? DialFailure.WrongPeer : DialFailure.HandshakeFailed,
                $"handshake with {address} failed: {e.Message}" + (_swarmKey is not null ? " (is the remote in the same private network, with the same swarm key?)" : ""),
                address, e);
        }
        if (connection.RemotePeer == PeerId)
        {
            await connection.CloseAsync();
            throw new DialException(DialFailure.Self, $"{address} is this node itself", address);
        }
        if (!Register(connection))
        {
            await connection.CloseAsync();
            throw new DialException(DialFailure.TooManyConnections, $"connection limit ({_options.MaxConnections}) reached", address);
        }
        Peers.AddAddresses(connection.RemotePeer, [address.WithoutPeer()], AddressSource.Manual);
        return connection;
    }

    private async Task<Connection> UpgradeAsync(IRawConnection raw, Direction direction, PeerId? expected, CancellationToken ct)
    {
        var initiator = direction == Direction.Outbound;
        IDuplexPipe pipe = raw;
        if (_swarmKey is not null)
        {
            pipe = PnetProtector.Protect(raw, _swarmKey, _runtime.SecureRandom);
        }
        // The security protocol is selected lazily: the dialer's proposal leaves with the first Noise message and the
        // listener's echo with the second, so the upgrade takes three flights instead of five.
        if (initiator)
        {
            pipe = MultistreamSelect.SelectOneLazy(pipe, _security.ProtocolId, _multistream);
        }
        else
        {
            await MultistreamSelect.HandleDeferringEchoAsync(pipe, p => p == _security.ProtocolId, _multistream, ct);
        }
        var secure = await _security.SecureAsync(pipe, initiator, expected, ct);
        try
        {
            if (!AgreedEarly(secure, initiator))
            {
                await Negotiate(secure, _muxer.ProtocolId, initiator, ct);
            }
            var muxed = _muxer.Create(secure, initiator);
            return new Connection(raw, secure, muxed, direction, _multistream, _time);
        }
        catch
        {
            await secure.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// Inlined muxer negotiation (libp2p connections spec): when both sides offered muxers in the security
    /// handshake, the first of the initiator's list that the responder also offered is used, with no
    /// multistream-select round; otherwise the muxer is negotiated as usual.
    /// </summary>
    private bool AgreedEarly(ISecureChannel secure, bool initiator)
    {
        var local = _earlyMuxers;
        var remote = secure.RemoteEarlyMuxers;
        if (local.Count == 0 || remote.Count == 0)
        {
            return false;
        }
        var (first, second) = initiator ? (local, remote) : (remote, local);
        var chosen = first.FirstOrDefault(m => second.Contains(m, StringComparer.Ordinal));
        return chosen == _muxer.ProtocolId;
    }

    private async ValueTask Negotiate(IDuplexPipe pipe, string protocol, bool initiator, CancellationToken ct)
    {
        if (initiator)
        {
            await MultistreamSelect.SelectAsync(pipe, [protocol], _multistream, ct);
        }
        else
        {
            await MultistreamSelect.HandleAsync(pipe, p => p == protocol, _multistream, ct);
        }
    }

    private bool Register(Connection connection)
    {
        lock (_gate)
        {
            if (_disposed != 0 || _connectionCount >= _options.MaxConnections)
            {
                return false;
            }
            if (!_connections.TryGetValue(connection.RemotePeer, out var list))
            {
                _connections[connection.RemotePeer] = list = [];
            }
            list.Add(connection);
            _connectionCount++;
            _background.RemoveAll(t => t.IsCompleted);
            _background.Add(Task.Run(() => StreamAcceptLoopAsync(connection)));
        }
        Peers.SetPublicKey(connection.RemotePeer, connection.RemotePublicKey);
        Peers.MarkSeen(connection.RemotePeer);
        LogConnected(connection.Id, connection.Direction, connection.RemotePeer, connection.RemoteAddress);
        _ = connection.Completion.ContinueWith(_ => Unregister(connection), CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        try
        {
            Connected?.Invoke(connection);
        }
        catch (Exception e)
        {
            LogEventHandlerFailed(e);
        }
        return true;
    }

    private void Unregister(Connection connection)
    {
        lock (_gate)
        {
            if (!_connections.TryGetValue(connection.RemotePeer, out var list) || !list.Remove(connection))
            {
                return;
            }
            if (list.Count == 0)
            {
                _connections.Remove(connection.RemotePeer);
            }
            _connectionCount--;
        }
        _ = connection.CloseAsync().AsTask().ContinueWith(t => _ = t.Exception, TaskScheduler.Default);
        LogDisconnected(connection.Id, connection.RemotePeer);
        try
        {
            Disconnected?.Invoke(connection);
        }
        catch (Exception e)
        {
            LogEventHandlerFailed(e);
        }
    }

    private async Task AcceptLoopAsync(IListener listener)
    {
        var ct = _shutdown.Token;
        while (!ct.IsCancellationRequested)
        {
            IRawConnection raw;
            try
            {
                raw = await listener.AcceptAsync(ct);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
            {
                if (ct.IsCancellationRequested)
                {
                    return;
                }
                LogAcceptFailed(listener.Address, e);
                continue;
            }
            if (Volatile.Read(ref _connectionCount) >= _options.MaxConnections)
            {
                LogInboundRefused(raw.Remote);
                await raw.DisposeAsync();
                continue;
            }
            if (Interlocked.Increment(ref _pendingInbound) > _options.MaxPendingInbound)
            {
                Interlocked.Decrement(ref _pendingInbound);
                LogInboundRefused(raw.Remote);
                await raw.DisposeAsync();
                continue;
            }
            _ = Task.Run(() => UpgradeInboundAsync(raw));
        }
    }

    private async Task UpgradeInboundAsync(IRawConnection raw)
    {
        using var timeout = new CancellationTokenSource(_options.HandshakeTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, _shutdown.Token);
        Connection? connection = null;
        try
        {
            connection = await UpgradeAsync(raw, Direction.Inbound, null, linked.Token);
        }
        catch (Exception e)
        {
            await raw.DisposeAsync();
            if (e is OperationCanceledException && timeout.IsCancellationRequested)
            {
                LogInboundHandshakeTimeout(raw.Remote);
            }
            else if (e is not OperationCanceledException)
            {
                LogInboundHandshakeFailed(raw.Remote, e.Message);
            }
        }
        finally
        {
            Interlocked.Decrement(ref _pendingInbound);
        }
        if (connection is null)
        {
            return;
        }
        if (connection.RemotePeer == PeerId || !Register(connection))
        {
            await connection.CloseAsync();
        }
        // The remote address of an inbound connection is usually an ephemeral port nobody listens on: it is
        // not recorded (go-libp2p doesn't either); the peer's listen addresses come from identify.
    }

    private async Task StreamAcceptLoopAsync(Connection connection)
    {
        var ct = _shutdown.Token;
        while (!ct.IsCancellationRequested)
        {
            IMuxedStream muxed;
            try
            {
                muxed = await connection.Muxed.AcceptStreamAsync(ct);
            }
            catch (Exception e) when (e is OperationCanceledException or IOException or ObjectDisposedException or ProtocolViolationException)
            {
                return;
            }
            _ = Task.Run(() => HandleInboundStreamAsync(connection, muxed));
        }
    }

    private async Task HandleInboundStreamAsync(Connection connection, IMuxedStream muxed)
    {
        IStream? stream = null;
        string protocol = "";
        try
        {
            using (var timeout = new CancellationTokenSource(_options.StreamNegotiationTimeout, _time))
            using (var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, _shutdown.Token))
            {
                protocol = await MultistreamSelect.HandleAsync(muxed, _handlers.ContainsKey, _multistream, linked.Token);
            }
            if (!_handlers.TryGetValue(protocol, out var handler))
            {
                muxed.Reset();
                return;
            }
            stream = new Libp2pStream(muxed, protocol, connection, Direction.Inbound);
            await handler(stream, _shutdown.Token);
        }
        catch (OperationCanceledException) when (_shutdown.IsCancellationRequested)
        {
            muxed.Reset();
        }
        catch (Exception e) when (e is ProtocolViolationException or ProtocolNotSupportedException or StreamResetException
                                      or IOException or OperationCanceledException or InvalidOperationException)
        {
            // The remote misbehaved, went away or was too slow: reset this stream only.
            LogStreamFailed(protocol, connection.RemotePeer, e.Message);
            muxed.Reset();
        }
        catch (Exception e)
        {
            LogHandlerBug(protocol, connection.RemotePeer, e);
            muxed.Reset();
        }
        finally
        {
            if (stream is not null)
            {
                await stream.DisposeAsync();
            }
            else
            {
                await muxed.DisposeAsync();
            }
        }
    }

    private void CloseIdleConnections()
    {
        var cutoff = _time.GetUtcNow() - _options.IdleTimeout;
        List<Connection> idle = [];
        lock (_gate)
        {
            foreach (var (peer, list) in _connections)
            {
                if (_protected.ContainsKey(peer))
                {
                    continue;
                }
                idle.AddRange(list.Where(c => c.StreamCount == 0 && c.LastActivity < cutoff));
            }
        }
        foreach (var c in idle)
        {
            LogIdleClose(c.Id, c.RemotePeer);
            _ = c.CloseAsync().AsTask();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        await _shutdown.CancelAsync();
        _idleTimer?.Dispose();
        IListener[] listeners;
        Connection[] connections;
        Task[] background;
        lock (_gate)
        {
            listeners = [.. _listeners];
            connections = _connections.Values.SelectMany(l => l).ToArray();
            background = [.. _background];
        }
        foreach (var l in listeners)
        {
            await l.DisposeAsync();
        }
        foreach (var c in connections)
        {
            try
            {
                await c.CloseAsync();
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException)
            {
            }
        }
        try
        {
            await Task.WhenAll(background).WaitAsync(TimeSpan.FromSeconds(5), _time);
        }
        catch (Exception e) when (e is TimeoutException or OperationCanceledException or IOException)
        {
        }
        _shutdown.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Listening on {Address}")]
    private partial void LogListening(Multiaddr address);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Connection {Id} {Direction} to {Peer} at {Address}")]
    private partial void LogConnected(long id, Direction direction, PeerId peer, Multiaddr address);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Connection {Id} to {Peer} closed")]
    private partial void LogDisconnected(long id, PeerId peer);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Closing idle connection {Id} to {Peer}")]
    private partial void LogIdleClose(long id, PeerId peer);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Accept on {Address} failed")]
    private partial void LogAcceptFailed(Multiaddr address, Exception e);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Refused inbound connection from {Remote}: connection limits reached")]
    private partial void LogInboundRefused(Multiaddr remote);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Inbound handshake from {Remote} timed out")]
    private partial void LogInboundHandshakeTimeout(Multiaddr remote);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Inbound handshake from {Remote} failed: {Reason}")]
    private partial void LogInboundHandshakeFailed(Multiaddr remote, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Stream {Protocol} from {Peer} reset: {Reason}")]
    private partial void LogStreamFailed(string protocol, PeerId peer, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Handler for {Protocol} failed on a stream from {Peer}")]
    private partial void LogHandlerBug(string protocol, PeerId peer, Exception e);

    [LoggerMessage(Level = LogLevel.Error, Message = "A connection event handler threw")]
    private partial void LogEventHandlerFailed(Exception e);
}
