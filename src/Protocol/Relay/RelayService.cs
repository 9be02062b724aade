using System.Buffers;
using System.IO.Pipelines;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Relay;

/// <summary>
/// The hop side of circuit relay v2 (<c>/libp2p/circuit/relay/0.2.0/hop</c>): grants reservations within
/// <see cref="RelayOptions"/> (with a signed voucher), and on CONNECT opens <c>/stop</c> to the reserved peer and
/// splices the two streams, resetting both once either direction has carried <see cref="RelayOptions.ConnectionData"/>
/// bytes or <see cref="RelayOptions.ConnectionDuration"/> has passed. Refuses reservations and circuits over relayed
/// connections (no relay chains), as the spec asks.
/// </summary>
public sealed partial class RelayService
{
    public const string HopProtocolId = "/libp2p/circuit/relay/0.2.0/hop";
    public const string StopProtocolId = "/libp2p/circuit/relay/0.2.0/stop";

    private readonly IHost _host;
    private readonly RelayOptions _options;
    private readonly NodeRuntime _runtime;
    private readonly ILogger<RelayService> _log;
    private readonly object _gate = new();
    private readonly Dictionary<PeerId, (DateTimeOffset Expires, string Ip)> _reservations = [];
    private readonly Dictionary<PeerId, int> _circuitsPerPeer = [];
    private int _circuits;

    /// <param name="start">Serve hop at once; otherwise <see cref="Start"/> does (auto hop, when AutoNAT finds the node public).</param>
    /// <param name="leaseLimits">
    /// Whether a relayed connection to this reserved peer gets the larger lease limits
    /// (<see cref="RelayOptions.LeaseConnectionData"/>, <see cref="RelayOptions.LeaseConnectionDuration"/>): the Node layer
    /// says yes for peers that serve Potluck leases. Null: never.
    /// </param>
    public RelayService(IHost host, RelayOptions options, NodeRuntime runtime, ILoggerFactory loggers, bool start = true,
        Func<PeerId, bool>? leaseLimits = null)
    {
        var problems = options.Validate();
        if (problems.Count > 0)
        {
            throw new ArgumentException(string.Join("; ", problems), nameof(options));
        }
        _host = host;
        _options = options;
        _runtime = runtime;
        _log = loggers.CreateLogger<RelayService>();
        _leaseLimits = leaseLimits;
        if (start)
        {
            Start();
        }
    }

    private readonly Func<PeerId, bool>? _leaseLimits;
    private int _serving;

    /// <summary>Whether hop is served now.</summary>
    public bool IsServing => Volatile.Read(ref _serving) != 0;

    /// <summary>Serves hop (identify push tells peers).</summary>
    public void Start()
    {
        if (Interlocked.Exchange(ref _serving, 1) == 0)
        {
            _host.SetStreamHandler(HopProtocolId, HandleHopAsync);
            LogServing(true);
        }
    }

    /// <summary>Stops serving hop: new requests are refused by multistream; circuits open now run to their limits.</summary>
    public void Stop()
    {
        if (Interlocked.Exchange(ref _serving, 0) == 1)
        {
            _host.RemoveStreamHandler(HopProtocolId);
            LogServing(false);
        }
    }

    /// <summary>Reservations granted, refused (for a limit or over a relayed connection), circuits refused, since start.</summary>
    public long ReservationsGranted => Interlocked.Read(ref _reservationsGranted);

    public long ReservationsRefused => Interlocked.Read(ref _reservationsRefused);

    public long CircuitsRefused => Interlocked.Read(ref _circuitsRefused);

    /// <summary>Relayed connections opened since start.</summary>
    public long CircuitsOpened => Interlocked.Read(ref _circuitsOpened);

    private long _reservationsGranted;
    private long _reservationsRefused;
    private long _circuitsRefused;
    private long _circuitsOpened;

    /// <summary>Reservations now held (expired ones are dropped first).</summary>
    public int ReservationCount
    {
        get
        {
            lock (_gate)
            {
                DropExpired();
                return _reservations.Count;
            }
        }
    }

    /// <summary>Relayed connections now open.</summary>
    public int CircuitCount => Volatile.Read(ref _circuits);

    /// <summary>Bytes carried by relayed connections so far, both directions together.</summary>
    public long BytesRelayed => Interlocked.Read(ref _bytesRelayed);

    /// <summary>Relayed connections reset for reaching their data or time limit.</summary>
    public long CircuitsCutAtLimit => Interlocked.Read(ref _cutAtLimit);

    private long _bytesRelayed;
    private long _cutAtLimit;

    internal static bool IsRelayed(IConnection connection) => connection.RemoteAddress.Find(Multiaddr.P2pCircuit) is not null;

    private async Task HandleHopAsync(IStream stream, CancellationToken ct)
    {
        using var timeout = new CancellationTokenSource(_options.HandshakeTimeout, _runtime.Time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, timeout.Token);
        var bytes = await LengthPrefixed.ReadAsync(stream.Input, _options.MaxMessageSize, HopProtocolId, linked.Token);
        if (bytes is null)
        {
            return;
        }
        Pb.HopMessage message;
        try
        {
            message = Pb.HopMessage.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            await RespondAsync(stream, RelayStatus.MalformedMessage, linked.Token);
            throw new ProtocolViolationException(HopProtocolId, "hop message does not decode", e, ViolationCode.Malformed);
        }
        switch (message.Type)
        {
            case Pb.HopMessage.Types.Type.Reserve:
                await ReserveAsync(stream, linked.Token);
                return;
            case Pb.HopMessage.Types.Type.Connect:
                await ConnectAsync(stream, message, timeout, linked.Token, ct);
                return;
            default:
                await RespondAsync(stream, RelayStatus.UnexpectedMessage, linked.Token);
                throw new ProtocolViolationException(HopProtocolId, $"unexpected hop message {message.Type}", ViolationCode.UnexpectedMessage);
        }
    }

    private static string IpOf(IConnection connection)
    {
        var components = connection.RemoteAddress.Components;
        return components.Count == 0 ? "" : components[0].ToString();
    }

    private void DropExpired()
    {
        var now = _runtime.Time.GetUtcNow();
        foreach (var (peer, r) in _reservations.ToArray())
        {
            if (r.Expires <= now)
            {
                _reservations.Remove(peer);
                _host.ConnectionManager.Unprotect(peer, "relay-reservation");
            }
        }
    }

    private async Task ReserveAsync(IStream stream, CancellationToken ct)
    {
        var peer = stream.Connection.RemotePeer;
        if (IsRelayed(stream.Connection))
        {
            Interlocked.Increment(ref _reservationsRefused);
            await RespondAsync(stream, RelayStatus.PermissionDenied, ct);
            return;
        }
        var ip = IpOf(stream.Connection);
        DateTimeOffset expires;
        lock (_gate)
        {
            DropExpired();
            if (!_reservations.ContainsKey(peer)
                && (_reservations.Count >= _options.MaxReservations
                    || _reservations.Values.Count(r => r.Ip == ip) >= _options.MaxReservationsPerIp))
            {
                expires = default;
            }
            else
            {
                // Whole seconds, as the wire carries them, so the voucher and the table agree.
                expires = DateTimeOffset.FromUnixTimeSeconds((_runtime.Time.GetUtcNow() + _options.ReservationTtl).ToUnixTimeSeconds());
                _reservations[peer] = (expires, ip);
            }
        }
        if (expires == default)
        {
            Interlocked.Increment(ref _reservationsRefused);
            LogRefused(peer, RelayStatus.ReservationRefused);
            await RespondAsync(stream, RelayStatus.ReservationRefused, ct);
            return;
        }
        Interlocked.Increment(ref _reservationsGranted);
        _host.ConnectionManager.Protect(peer, "relay-reservation");
        var expiration = (ulong)expires.ToUnixTimeSeconds();
        var reservation = new Pb.Reservation
        {
            Expire = expiration,
            Voucher = ByteString.CopyFrom(RelayVoucher.Create(_host.Signer, peer, expiration)),
        };
        foreach (var a in _host.ListenAddresses.Where(a => a.Find(Multiaddr.P2pCircuit) is null))
        {
            reservation.Addrs.Add(ByteString.CopyFrom(a.WithPeer(_host.PeerId).ToBytes()));
        }
        await WriteAsync(stream, new Pb.HopMessage
        {
            Type = Pb.HopMessage.Types.Type.Status,
            Status = Pb.Status.Ok,
            Reservation = reservation,
            Limit = Limit(peer),
        }, ct);
        LogReserved(peer, expires);
    }

    /// <summary>The limits of a relayed connection to <paramref name="target"/>: the lease limits for a Potluck provider.</summary>
    private (TimeSpan Duration, long Data) LimitsFor(PeerId target) => _leaseLimits?.Invoke(target) == true
        ? (_options.LeaseConnectionDuration, _options.LeaseConnectionData)
        : (_options.ConnectionDuration, _options.ConnectionData);

    private Pb.Limit Limit(PeerId target)
    {
        var (duration, data) = LimitsFor(target);
        return new() { Duration = (uint)Math.Ceiling(duration.TotalSeconds), Data = (ulong)data };
    }

    private async Task ConnectAsync(IStream source, Pb.HopMessage message, CancellationTokenSource handshakeTimeout,
        CancellationToken handshake, CancellationToken stopping)
    {
        var from = source.Connection.RemotePeer;
        if (message.Peer is null || !PeerId.TryFromBytes(message.Peer.Id.Span, out var target))
        {
            await RespondAsync(source, RelayStatus.MalformedMessage, handshake);
            throw new ProtocolViolationException(HopProtocolId, "CONNECT without a valid peer id", ViolationCode.Malformed);
        }
        if (IsRelayed(source.Connection))
        {
            Interlocked.Increment(ref _circuitsRefused);
            await RespondAsync(source, RelayStatus.PermissionDenied, handshake);
            return;
        }
        bool reserved;
        lock (_gate)
        {
            DropExpired();
            reserved = _reservations.ContainsKey(target);
        }
        if (!reserved)
        {
            Interlocked.Increment(ref _circuitsRefused);
            await RespondAsync(source, RelayStatus.NoReservation, handshake);
            return;
        }
        if (!TryAddCircuit(from, target))
        {
            Interlocked.Increment(ref _circuitsRefused);
            await RespondAsync(source, RelayStatus.ResourceLimitExceeded, handshake);
            return;
        }
        try
        {
            var connection = _host.Connections.FirstOrDefault(c => c.RemotePeer == target && !c.IsClosed && !IsRelayed(c));
            if (connection is null)
            {
                await RespondAsync(source, RelayStatus.ConnectionFailed, handshake);
                return;
            }
            IStream destination;
            try
            {
                destination = await connection.OpenStreamAsync([StopProtocolId], handshake);
            }
            catch (Exception e) when (Failures.Classify(e, stopping).Kind is not FailureKind.Internal and not FailureKind.Cancelled)
            {
                await RespondAsync(source, RelayStatus.ConnectionFailed, handshake);
                return;
            }
            await using (destination)
            {
                await WriteAsync(destination, new Pb.StopMessage
                {
                    Type = Pb.StopMessage.Types.Type.Connect,
                    Peer = new Pb.Peer { Id = ByteString.CopyFrom(from.ToBytes()) },
                    Limit = Limit(target),
                }, handshake);
                Pb.StopMessage? answer = null;
                try
                {
                    var bytes = await LengthPrefixed.ReadAsync(destination.Input, _options.MaxMessageSize, StopProtocolId, handshake);
                    answer = bytes is null ? null : Pb.StopMessage.Parser.ParseFrom(bytes);
                }
                catch (Exception e) when (e is InvalidProtocolBufferException or ProtocolViolationException
                    || Failures.Classify(e, handshake).Kind == FailureKind.PeerGone)
                {
                    answer = null;
                }
                if (answer is not { Type: Pb.StopMessage.Types.Type.Status, Status: Pb.Status.Ok })
                {
                    destination.Reset();
                    await RespondAsync(source, RelayStatus.ConnectionFailed, handshake);
                    return;
                }
                await WriteAsync(source, new Pb.HopMessage { Type = Pb.HopMessage.Types.Type.Status, Status = Pb.Status.Ok, Limit = Limit(target) }, handshake);
                handshakeTimeout.CancelAfter(Timeout.InfiniteTimeSpan);
                Interlocked.Increment(ref _circuitsOpened);
                LogCircuit(from, target);
                var (duration, data) = LimitsFor(target);
                await SpliceAsync(source, destination, duration, data, stopping);
            }
        }
        finally
        {
            RemoveCircuit(from, target);
        }
    }

    private bool TryAddCircuit(PeerId a, PeerId b)
    {
        lock (_gate)
        {
            if (_circuits >= _options.MaxCircuits
                || _circuitsPerPeer.GetValueOrDefault(a) >= _options.MaxCircuitsPerPeer
                || _circuitsPerPeer.GetValueOrDefault(b) >= _options.MaxCircuitsPerPeer)
            {
                return false;
            }
            _circuits++;
            _circuitsPerPeer[a] = _circuitsPerPeer.GetValueOrDefault(a) + 1;
            _circuitsPerPeer[b] = _circuitsPerPeer.GetValueOrDefault(b) + 1;
            return true;
        }
    }

    private void RemoveCircuit(PeerId a, PeerId b)
    {
        lock (_gate)
        {
            _circuits--;
            foreach (var p in new[] { a, b })
            {
                if (--_circuitsPerPeer[p] == 0)
                {
                    _circuitsPerPeer.Remove(p);
                }
            }
        }
    }

    /// <summary>Copies both ways until both sides closed, or resets both at the data or time limit.</summary>
    private async Task SpliceAsync(IStream a, IStream b, TimeSpan duration, long data, CancellationToken stopping)
    {
        using var limit = new CancellationTokenSource(duration, _runtime.Time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(limit.Token, stopping);
        var overData = 0;
        async Task Pump(PipeReader from, PipeWriter to)
        {
            long carried = 0;
            try
            {
                while (true)
                {
                    var result = await from.ReadAsync(linked.Token);
                    var buffer = result.Buffer;
                    var allowed = Math.Min(buffer.Length, data - carried);
                    foreach (var segment in buffer.Slice(0, allowed))
                    {
                        to.Write(segment.Span);
                    }
                    carried += allowed;
                    Interlocked.Add(ref _bytesRelayed, allowed);
                    from.AdvanceTo(buffer.GetPosition(allowed));
                    if (allowed < buffer.Length)
                    {
                        Volatile.Write(ref overData, 1);
                        linked.Cancel();
                        return;
                    }
                    if (allowed > 0)
                    {
                        await to.FlushAsync(linked.Token);
                    }
                    if (result.IsCompleted)
                    {
                        await to.CompleteAsync();
                        return;
                    }
                }
            }
            catch (Exception e) when (Failures.Classify(e, linked.Token).Kind is FailureKind.PeerGone or FailureKind.Cancelled)
            {
                linked.Cancel();
            }
        }
        await Task.WhenAll(Pump(a.Input, b.Output), Pump(b.Input, a.Output));
        if (linked.IsCancellationRequested)
        {
            if (limit.IsCancellationRequested || Volatile.Read(ref overData) == 1)
            {
                Interlocked.Increment(ref _cutAtLimit);
                LogCut(a.RemotePeer, b.RemotePeer, Volatile.Read(ref overData) == 1 ? "data" : "duration");
            }
            a.Reset();
            b.Reset();
        }
    }

    private static Task RespondAsync(IStream stream, RelayStatus status, CancellationToken ct) =>
        WriteAsync(stream, new Pb.HopMessage { Type = Pb.HopMessage.Types.Type.Status, Status = (Pb.Status)status }, ct);

    internal static async Task WriteAsync(IStream stream, IMessage message, CancellationToken ct) =>
        await LengthPrefixed.WriteAsync(stream.Output, message.ToByteArray(), ct);

    [LoggerMessage(Level = LogLevel.Information, Message = "relay: serving hop: {Serving}")]
    private partial void LogServing(bool serving);

    [LoggerMessage(Level = LogLevel.Debug, Message = "relay: reservation for {Peer} until {Expires}")]
    private partial void LogReserved(PeerId peer, DateTimeOffset expires);

    [LoggerMessage(Level = LogLevel.Debug, Message = "relay: refused {Peer}: {Status}")]
    private partial void LogRefused(PeerId peer, RelayStatus status);

    [LoggerMessage(Level = LogLevel.Debug, Message = "relay: circuit {From} -> {To}")]
    private partial void LogCircuit(PeerId from, PeerId to);

    [LoggerMessage(Level = LogLevel.Debug, Message = "relay: circuit {From} -> {To} cut at its {Limit} limit")]
    private partial void LogCut(PeerId from, PeerId to, string limit);
}
