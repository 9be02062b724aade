using System.Net;
using System.Net.Sockets;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Dcutr;

/// <summary>
/// Direct Connection Upgrade through Relay, <c>/libp2p/dcutr</c>
/// (https://github.com/libp2p/specs/blob/master/relay/DCUtR.md). When a relayed connection arrives, this node (B, the
/// inbound side) first dials the peer's public listen addresses (the unilateral upgrade); failing that it opens a DCUtR
/// stream over the relayed connection and, up to <see cref="DcutrOptions.Attempts"/> times on that one stream, sends
/// CONNECT with its observed addresses, measures the round trip to the peer's CONNECT, sends SYNC and dials after half
/// the round trip, while the peer (A) dials the moment SYNC arrives. The dials leave from the listen port, so two
/// SYNs crossing make one TCP connection (simultaneous open); B speaks first in its security handshake however the
/// connection came about (<see cref="Libp2pHost.DialForHolePunchAsync"/>, <see cref="Libp2pHost.ExpectHolePunch"/>),
/// as go-libp2p's simultaneous-connect dials do. Once a direct connection exists, new streams use it (the connection
/// manager prefers direct connections) and the relayed one is closed when it carries no stream.
/// </summary>
/// <remarks>
/// Bounds: messages over <see cref="DcutrOptions.MaxMessageSize"/> reset the stream; at most
/// <see cref="DcutrOptions.MaxAddresses"/> addresses of a CONNECT are dialed, never relayed or unspecified ones; a DCUtR
/// stream is accepted only over a relayed connection, one at a time per peer, and at most
/// <see cref="DcutrOptions.MaxStreamsPerPeer"/> per <see cref="DcutrOptions.RateWindow"/>; every read has the attempt's
/// deadline. The addresses sent are those the relay of the connection observed for us (identify's observedAddr) and
/// those two or more peers agree on, each also with our TCP listen port (the mapping a port-preserving NAT gives the
/// listen port); addresses one stranger claims are not repeated to others.
/// </remarks>
public sealed partial class DcutrService : IAsyncDisposable
{
    public const string ProtocolId = "/libp2p/dcutr";

    private readonly Libp2pHost _host;
    private readonly IdentifyService? _identify;
    private readonly DcutrOptions _options;
    private readonly NodeRuntime _runtime;
    private readonly TimeProvider _time;
    private readonly ILogger<DcutrService> _log;
    private readonly BackgroundWork _work;
    private readonly Lock _gate = new();
    private readonly Dictionary<PeerId, Multiaddr> _observedBy = [];
    private readonly Queue<PeerId> _observers = new();
    private readonly Dictionary<PeerId, Queue<DateTimeOffset>> _inboundStreams = [];
    private readonly HashSet<PeerId> _active = [];
    private long _punches;
    private long _successes;
    private long _refused;
    private long _dials;
    private const int MaxObservers = 64;
    private const int MaxRateTracked = 1024;

    public DcutrService(Libp2pHost host, IdentifyService? identify, DcutrOptions options, NodeRuntime runtime, ILoggerFactory loggers)
    {
        _host = host;
        _identify = identify;
        _options = options;
        _runtime = runtime;
        _time = runtime.Time;
        _log = loggers.CreateLogger<DcutrService>();
        _work = runtime.CreateBackgroundWork("dcutr", _log);
        host.SetStreamHandler(ProtocolId, HandleAsync);
        host.Connected += OnConnected;
        if (identify is not null)
        {
            identify.Identified += OnIdentified;
        }
    }

    /// <summary>Raised when an upgrade this node drove ends, with the peer and how it went.</summary>
    public event Action<PeerId, HolePunchResult>? Finished;

    /// <summary>Raised on the answering side (A) at each SYNC, with the peer and the round (1 for the first attempt).</summary>
    public event Action<PeerId, int>? Synced;

    /// <summary>Start an upgrade on every inbound relayed connection. Default true; the NAT lab's prober drives them itself.</summary>
    public bool AutoUpgrade { get; set; } = true;

    /// <summary>Upgrades this node drove; those that ended with a direct connection; DCUtR streams refused (rate, not relayed).</summary>
    public (long Punches, long Successes, long Refused) Counts => (Interlocked.Read(ref _punches), Interlocked.Read(ref _successes), Interlocked.Read(ref _refused));

    /// <summary>Hole-punch dials this node started (each address of a round is one).</summary>
    public long DialsStarted => Interlocked.Read(ref _dials);

    private void OnIdentified(IdentifyResult result)
    {
        if (result.ObservedAddress is not { } observed || observed.Find(Multiaddr.P2pCircuit) is not null)
        {
            return;
        }
        lock (_gate)
        {
            if (!_observedBy.ContainsKey(result.Peer))
            {
                _observers.Enqueue(result.Peer);
                while (_observers.Count > MaxObservers && _observers.TryDequeue(out var oldest))
                {
                    _observedBy.Remove(oldest);
                }
            }
            _observedBy[result.Peer] = observed.WithoutPeer();
        }
    }

    /// <summary>
    /// What we tell the peer in CONNECT: the address the relay observed for us, those two or more observers agree on,
    /// each also with our TCP listen port; our own direct listen addresses when nobody observed any (a simulated network).
    /// </summary>
    internal IReadOnlyList<Multiaddr> OwnAddresses(PeerId? relay)
    {
        var result = new List<Multiaddr>();
        lock (_gate)
        {
            if (relay is { } r && _observedBy.TryGetValue(r, out var fromRelay))
            {
                result.Add(fromRelay);
            }
            result.AddRange(_observedBy.Values.GroupBy(a => a).Where(g => g.Count() >= 2).Select(g => g.Key));
        }
        // Addresses the node advertises as public (AutoNAT confirmed them) are as good as observed ones.
        result.AddRange(_host.ListenAddresses.Where(a => a.Find(Multiaddr.Memory) is null && IsPublic(a)));
        var listenPorts = _host.BoundAddresses.Select(a => a.ToTcpEndPoint()).OfType<IPEndPoint>().Select(e => e.Port).Distinct().ToArray();
        foreach (var observed in result.ToArray())
        {
            if (observed.ToTcpEndPoint() is { } endPoint)
            {
                foreach (var port in listenPorts)
                {
                    result.Add(Multiaddr.FromTcpEndPoint(new IPEndPoint(endPoint.Address, port)));
                }
            }
        }
        if (result.Count == 0)
        {
            result.AddRange(_host.BoundAddresses.Where(a => a.Find(Multiaddr.P2pCircuit) is null && a.Find(Multiaddr.Memory) is not null));
        }
        return result.Distinct().Take(_options.MaxAddresses).ToArray();
    }

    private void OnConnected(IConnection connection)
    {
        if (AutoUpgrade && connection.Direction == Direction.Inbound && Libp2pHost.IsRelayed(connection))
        {
            _work.Run("dcutr upgrade", async stopping =>
            {
                try
                {
                    await UpgradeAsync(connection, stopping);
                }
                catch (Exception e) when (Failures.Classify(e, stopping).Kind != FailureKind.Internal)
                {
                    LogUpgradeFailed(connection.RemotePeer, e.Message);
                }
            });
        }
    }

    /// <summary>
    /// Drives the upgrade of <paramref name="relayed"/> (the inbound side's part, B): a unilateral dial to the peer's
    /// public addresses, then up to <see cref="DcutrOptions.Attempts"/> synchronised attempts over one DCUtR stream.
    /// </summary>
    public async Task<HolePunchResult> UpgradeAsync(IConnection relayed, CancellationToken ct)
    {
        var peer = relayed.RemotePeer;
        var started = _time.GetTimestamp();
        lock (_gate)
        {
            if (!_active.Add(peer))
            {
                return new HolePunchResult(false, 0, TimeSpan.Zero, null, "an upgrade with this peer is already running");
            }
        }
        Interlocked.Increment(ref _punches);
        HolePunchResult result;
        try
        {
            result = await UpgradeCoreAsync(relayed, started, ct);
        }
        finally
        {
            lock (_gate)
            {
                _active.Remove(peer);
            }
            _host.EndHolePunch(peer);
        }
        if (result.Success)
        {
            Interlocked.Increment(ref _successes);
            CloseWhenIdle(relayed);
        }
        LogFinished(peer, result.Success, result.Attempts, result.Elapsed.TotalMilliseconds, result.Failure);
        Finished?.Invoke(peer, result);
        return result;
    }

    private async Task<HolePunchResult> UpgradeCoreAsync(IConnection relayed, long started, CancellationToken ct)
    {
        var peer = relayed.RemotePeer;
        if (_identify is not null)
        {
            using var wait = new CancellationTokenSource(_options.AttemptTimeout, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, wait.Token);
            try
            {
                await _identify.WhenIdentifiedAsync(peer, linked.Token);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                // Not identified in time: try anyway; the peer resets the stream if it has no DCUtR.
            }
        }
        if (_host.Peers.Get(peer) is { Protocols.Count: > 0 } && !_host.Peers.SupportsProtocol(peer, ProtocolId))
        {
            return new HolePunchResult(false, 0, _time.GetElapsedTime(started), null, "the peer does not speak " + ProtocolId);
        }
        // Unilateral: the peer may be reachable at a public address it listens on.
        var publicAddresses = _host.Peers.GetAddresses(peer).Where(a => IsPublic(a) && _host.CanDialDirect(a)).Take(_options.MaxAddresses).ToArray();
        if (publicAddresses.Length > 0 && await DialAnyAsync(publicAddresses, peer, initiator: true, _options.UnilateralTimeout, ct) is not null)
        {
            return new HolePunchResult(true, 0, _time.GetElapsedTime(started), null, null, Unilateral: true);
        }
        var relay = RelayOf(relayed);
        await using var stream = await OpenStreamAsync(relayed, ct);
        TimeSpan? rtt = null;
        string failure = "no attempt made";
        for (var attempt = 1; attempt <= _options.Attempts; attempt++)
        {
            using var deadline = new CancellationTokenSource(_options.AttemptTimeout, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, deadline.Token);
            var sent = _time.GetTimestamp();
            await WriteAsync(stream, Pb.HolePunch.Types.Type.Connect, OwnAddresses(relay), linked.Token);
            var answer = await ReadAsync(stream, linked.Token)
                ?? throw new ProtocolViolationException(ProtocolId, "the peer closed the stream instead of answering CONNECT", ViolationCode.UnexpectedMessage);
            rtt = _time.GetElapsedTime(sent);
            if (answer.Type != Pb.HolePunch.Types.Type.Connect)
            {
                throw new ProtocolViolationException(ProtocolId, $"expected CONNECT, got {answer.Type}", ViolationCode.UnexpectedMessage);
            }
            var addresses = DialableAddresses(answer);
            if (addresses.Count == 0)
            {
                return new HolePunchResult(false, attempt, _time.GetElapsedTime(started), rtt, "the peer sent no address we can dial");
            }
            _host.ExpectHolePunch(peer, addresses, _time.GetUtcNow() + _options.AttemptTimeout);
            await WriteAsync(stream, Pb.HolePunch.Types.Type.Sync, [], linked.Token);
            await Task.Delay(rtt.Value / 2, _time, linked.Token);
            if (_host.DirectConnectionTo(peer) is not null
                || await DialAnyAsync(addresses, peer, initiator: true, _options.AttemptTimeout, ct) is not null
                || await DirectConnectionAppearsAsync(peer, TimeSpan.FromTicks(Math.Max(rtt.Value.Ticks * 2, TimeSpan.FromSeconds(1).Ticks)), linked.Token))
            {
                return new HolePunchResult(true, attempt, _time.GetElapsedTime(started), rtt, null);
            }
            failure = $"{attempt} attempt(s) made no direct connection";
        }
        return new HolePunchResult(false, _options.Attempts, _time.GetElapsedTime(started), rtt, failure);
    }

    /// <summary>
    /// Whether a direct connection to <paramref name="peer"/> exists or appears within <paramref name="wait"/>: when our
    /// dial lost the race, the peer's may still arrive (its SYN reached our NAT after ours left).
    /// </summary>
    private async Task<bool> DirectConnectionAppearsAsync(PeerId peer, TimeSpan wait, CancellationToken ct)
    {
        var appeared = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void OnDirect(IConnection c)
        {
            if (c.RemotePeer == peer && !Libp2pHost.IsRelayed(c))
            {
                appeared.TrySetResult();
            }
        }
        _host.Connected += OnDirect;
        try
        {
            if (_host.DirectConnectionTo(peer) is not null)
            {
                return true;
            }
            await LoopSafeWait.WaitAsync(appeared.Task, wait, _time, ct);
            return true;
        }
        catch (TimeoutException)
        {
            return _host.DirectConnectionTo(peer) is not null;
        }
        catch (OperationCanceledException)
        {
            return _host.DirectConnectionTo(peer) is not null;
        }
        finally
        {
            _host.Connected -= OnDirect;
        }
    }

    private async Task<IStream> OpenStreamAsync(IConnection relayed, CancellationToken ct)
    {
        using var deadline = new CancellationTokenSource(_options.AttemptTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, deadline.Token);
        return await relayed.OpenStreamAsync([ProtocolId], linked.Token);
    }

    /// <summary>A's part: answer CONNECT with ours, and dial the moment SYNC arrives; as many rounds as B asks for, up to the limit.</summary>
    private async Task HandleAsync(IStream stream, CancellationToken ct)
    {
        var peer = stream.RemotePeer;
        if (!Libp2pHost.IsRelayed(stream.Connection) || !Admit(peer))
        {
            Interlocked.Increment(ref _refused);
            LogRefused(peer);
            stream.Reset();
            return;
        }
        try
        {
            var relay = RelayOf(stream.Connection);
            for (var round = 0; round < _options.Attempts; round++)
            {
                using var deadline = new CancellationTokenSource(_options.AttemptTimeout, _time);
                using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, deadline.Token);
                var connect = await ReadAsync(stream, linked.Token);
                if (connect is null)
                {
                    return; // B is done (a direct connection, or it gave up)
                }
                if (connect.Type != Pb.HolePunch.Types.Type.Connect)
                {
                    throw new ProtocolViolationException(ProtocolId, $"expected CONNECT, got {connect.Type}", ViolationCode.UnexpectedMessage);
                }
                var addresses = DialableAddresses(connect);
                await WriteAsync(stream, Pb.HolePunch.Types.Type.Connect, OwnAddresses(relay), linked.Token);
                var sync = await ReadAsync(stream, linked.Token)
                    ?? throw new ProtocolViolationException(ProtocolId, "the stream ended before SYNC", ViolationCode.UnexpectedMessage);
                if (sync.Type != Pb.HolePunch.Types.Type.Sync)
                {
                    throw new ProtocolViolationException(ProtocolId, $"expected SYNC, got {sync.Type}", ViolationCode.UnexpectedMessage);
                }
                Synced?.Invoke(peer, round + 1);
                if (addresses.Count > 0 && _host.DirectConnectionTo(peer) is null)
                {
                    // At once, and in the background: B's next CONNECT (a retry) must not wait for this dial to end.
                    var relayed = stream.Connection;
                    _work.Run("dcutr dial", async stopping =>
                    {
                        if (await DialAnyAsync(addresses, peer, initiator: false, _options.AttemptTimeout, stopping) is not null)
                        {
                            CloseWhenIdle(relayed);
                        }
                    });
                }
            }
        }
        finally
        {
            lock (_gate)
            {
                _active.Remove(peer);
            }
        }
    }

    /// <summary>One DCUtR stream per peer at a time, and at most <see cref="DcutrOptions.MaxStreamsPerPeer"/> per window.</summary>
    private bool Admit(PeerId peer)
    {
        var now = _time.GetUtcNow();
        lock (_gate)
        {
            if (_active.Contains(peer))
            {
                return false;
            }
            if (!_inboundStreams.TryGetValue(peer, out var times))
            {
                if (_inboundStreams.Count >= MaxRateTracked)
                {
                    foreach (var idle in _inboundStreams.Where(kv => kv.Value.Count == 0 || now - kv.Value.Last() > _options.RateWindow).Select(kv => kv.Key).ToArray())
                    {
                        _inboundStreams.Remove(idle);
                    }
                    if (_inboundStreams.Count >= MaxRateTracked)
                    {
                        return false;
                    }
                }
                _inboundStreams[peer] = times = new Queue<DateTimeOffset>();
            }
            while (times.TryPeek(out var first) && now - first > _options.RateWindow)
            {
                times.Dequeue();
            }
            if (times.Count >= _options.MaxStreamsPerPeer)
            {
                return false;
            }
            times.Enqueue(now);
            _active.Add(peer);
            return true;
        }
    }

    /// <summary>Dials every address at once; the first connection wins and the other dials are cancelled. Null when none succeeds.</summary>
    private async Task<IConnection?> DialAnyAsync(IReadOnlyList<Multiaddr> addresses, PeerId peer, bool initiator, TimeSpan timeout, CancellationToken ct)
    {
        using var deadline = new CancellationTokenSource(timeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, deadline.Token);
        var dials = addresses.Select(a => DialOneAsync(a, peer, initiator, linked.Token)).ToList();
        while (dials.Count > 0)
        {
            var done = await Task.WhenAny(dials);
            dials.Remove(done);
            if (await done is { } connection)
            {
                linked.Cancel();
                return connection;
            }
        }
        return null;
    }

    private async Task<IConnection?> DialOneAsync(Multiaddr address, PeerId peer, bool initiator, CancellationToken ct)
    {
        Interlocked.Increment(ref _dials);
        try
        {
            return await _host.DialForHolePunchAsync(address, peer, initiator, ct);
        }
        catch (Exception e) when (Failures.Classify(e, ct).Kind != FailureKind.Internal || e is OperationCanceledException)
        {
            LogDialFailed(peer, address, e.Message);
            return null;
        }
    }

    /// <summary>Closes the relayed connection once it carries no stream (or after the grace period), when a direct one exists.</summary>
    private void CloseWhenIdle(IConnection relayed)
    {
        _work.Run("close relayed", async stopping =>
        {
            var until = _time.GetUtcNow() + _options.RelayedCloseGrace;
            while (!relayed.IsClosed && Holding(relayed) > 0 && _time.GetUtcNow() < until)
            {
                await Task.Delay(TimeSpan.FromSeconds(1), _time, stopping);
            }
            if (!relayed.IsClosed && _host.DirectConnectionTo(relayed.RemotePeer) is not null)
            {
                LogRelayedClosed(relayed.RemotePeer);
                await relayed.CloseAsync();
            }
        });
    }

    /// <summary>Streams on <paramref name="connection"/> that must end before it closes: all but the long-lived protocols'.</summary>
    private int Holding(IConnection connection) => connection is Connection c
        ? c.OpenStreams(p => !_options.LongLivedProtocols.Any(l => p.StartsWith(l, StringComparison.Ordinal)))
        : connection.StreamCount;

    /// <summary>The addresses of a CONNECT we may dial: decodable, direct, dialable here, not unspecified; at most the limit.</summary>
    private List<Multiaddr> DialableAddresses(Pb.HolePunch message)
    {
        var result = new List<Multiaddr>();
        foreach (var bytes in message.ObsAddrs)
        {
            if (result.Count >= _options.MaxAddresses)
            {
                break;
            }
            if (!Multiaddr.TryFromBytes(bytes.Span, out var address) || address.Find(Multiaddr.P2pCircuit) is not null)
            {
                continue;
            }
            address = address.WithoutPeer();
            if (address.ToTcpEndPoint() is { } e && (e.Address.Equals(IPAddress.Any) || e.Address.Equals(IPAddress.IPv6Any) || e.Port == 0 || IsMulticast(e.Address)))
            {
                continue;
            }
            if (_host.CanDialDirect(address) && !result.Contains(address))
            {
                result.Add(address);
            }
        }
        return result;
    }

    private static bool IsMulticast(IPAddress ip) =>
        ip.AddressFamily == AddressFamily.InterNetwork ? (ip.GetAddressBytes()[0] & 0xF0) == 0xE0 : ip.IsIPv6Multicast;

    /// <summary>A direct address on a public IP (not private, loopback, link-local or shared), or a simulated one.</summary>
    internal static bool IsPublic(Multiaddr address)
    {
        if (address.Find(Multiaddr.P2pCircuit) is not null)
        {
            return false;
        }
        if (address.Find(Multiaddr.Memory) is not null)
        {
            return true;
        }
        if (address.ToTcpEndPoint() is not { } e)
        {
            return false;
        }
        var ip = e.Address;
        if (IPAddress.IsLoopback(ip) || ip.Equals(IPAddress.Any) || ip.Equals(IPAddress.IPv6Any))
        {
            return false;
        }
        if (ip.AddressFamily == AddressFamily.InterNetwork)
        {
            var b = ip.GetAddressBytes();
            return !(b[0] == 10 || (b[0] == 172 && (b[1] & 0xF0) == 16) || (b[0] == 192 && b[1] == 168)
                || (b[0] == 100 && (b[1] & 0xC0) == 64) || (b[0] == 169 && b[1] == 254) || b[0] == 0 || b[0] >= 224);
        }
        return !(ip.IsIPv6LinkLocal || ip.IsIPv6SiteLocal || ip.IsIPv6UniqueLocal || ip.IsIPv6Multicast);
    }

    /// <summary>The relay a relayed connection runs through: the /p2p before /p2p-circuit in its remote address.</summary>
    private static PeerId? RelayOf(IConnection connection)
    {
        PeerId? relay = null;
        foreach (var c in connection.RemoteAddress.Components)
        {
            if (c.Protocol == Multiaddr.P2pCircuit)
            {
                return relay;
            }
            if (c.Protocol == Multiaddr.P2p && PeerId.TryFromBytes(c.Value.Span, out var id))
            {
                relay = id;
            }
        }
        return null;
    }

    private static async Task WriteAsync(IStream stream, Pb.HolePunch.Types.Type type, IReadOnlyList<Multiaddr> addresses, CancellationToken ct)
    {
        var message = new Pb.HolePunch { Type = type };
        message.ObsAddrs.AddRange(addresses.Select(a => ByteString.CopyFrom(a.ToBytes())));
        await LengthPrefixed.WriteAsync(stream.Output, message.ToByteArray(), ct);
    }

    /// <summary>The next message; null when the stream ended cleanly. Over the size limit or undecodable: a protocol violation.</summary>
    private async Task<Pb.HolePunch?> ReadAsync(IStream stream, CancellationToken ct)
    {
        var bytes = await LengthPrefixed.ReadAsync(stream.Input, _options.MaxMessageSize, ProtocolId, ct);
        if (bytes is null)
        {
            return null;
        }
        Pb.HolePunch message;
        try
        {
            message = Pb.HolePunch.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new ProtocolViolationException(ProtocolId, "HolePunch message does not decode", e, ViolationCode.Malformed);
        }
        if (!message.HasType)
        {
            throw new ProtocolViolationException(ProtocolId, "HolePunch message without a type", ViolationCode.Malformed);
        }
        return message;
    }

    public async ValueTask DisposeAsync()
    {
        _host.Connected -= OnConnected;
        if (_identify is not null)
        {
            _identify.Identified -= OnIdentified;
        }
        _host.RemoveStreamHandler(ProtocolId);
        await _work.DisposeAsync();
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "dcutr: upgrade with {Peer}: success {Success} after {Attempts} attempt(s), {Ms} ms ({Failure})")]
    private partial void LogFinished(PeerId peer, bool success, int attempts, double ms, string? failure);

    [LoggerMessage(Level = LogLevel.Debug, Message = "dcutr: upgrade with {Peer} failed: {Reason}")]
    private partial void LogUpgradeFailed(PeerId peer, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "dcutr: refused a stream from {Peer} (not relayed, already running, or over its rate)")]
    private partial void LogRefused(PeerId peer);

    [LoggerMessage(Level = LogLevel.Debug, Message = "dcutr: dial to {Peer} at {Address} failed: {Reason}")]
    private partial void LogDialFailed(PeerId peer, Multiaddr address, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "dcutr: closing the relayed connection to {Peer}: a direct one carries its streams")]
    private partial void LogRelayedClosed(PeerId peer);
}
