using System.IO.Pipelines;
using System.Threading.Channels;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport;

namespace Potluck.Protocol.Relay;

/// <summary>A reservation a relay granted us, with its voucher checked.</summary>
public sealed record RelayReservation(PeerId Relay, DateTimeOffset Expires, IReadOnlyList<Multiaddr> RelayAddresses,
    TimeSpan? ConnectionDuration, long? ConnectionData)
{
    /// <summary>Where others reach us through this relay: <c>…/p2p/&lt;relay&gt;/p2p-circuit</c>.</summary>
    public IReadOnlyList<Multiaddr> CircuitAddresses =>
        RelayAddresses.Select(a => a.Encapsulate(Multiaddr.Parse("/p2p-circuit"))).ToArray();
}

/// <summary>
/// The client side of circuit relay v2 as a transport: dials <c>[/…]/p2p/&lt;relay&gt;/p2p-circuit/p2p/&lt;target&gt;</c>
/// by a hop CONNECT over our connection to the relay, and listens on <c>/p2p-circuit</c> by answering the relay's
/// <c>/stop</c> streams. Either way the relayed stream is a raw connection the host upgrades as usual (Noise, Yamux).
/// Built before the host (the host takes its transports) and <see cref="Attach"/>ed to it after.
/// </summary>
public sealed partial class CircuitTransport : ITransport
{
    private static readonly Multiaddr Circuit = Multiaddr.Parse("/p2p-circuit");
    private readonly RelayOptions _options;
    private readonly NodeRuntime _runtime;
    private readonly ILogger<CircuitTransport> _log;
    private readonly object _gate = new();
    private readonly Dictionary<PeerId, RelayReservation> _reservations = [];
    private IHost? _host;
    private CircuitListener? _listener;

    public CircuitTransport(RelayOptions options, NodeRuntime runtime, ILoggerFactory loggers)
    {
        _options = options;
        _runtime = runtime;
        _log = loggers.CreateLogger<CircuitTransport>();
    }

    private IHost Host => _host ?? throw new InvalidOperationException("CircuitTransport used before Attach(host)");

    /// <summary>Binds to the host it is a transport of, and answers <c>/stop</c> on it.</summary>
    public void Attach(IHost host)
    {
        _host = host;
        host.SetStreamHandler(RelayService.StopProtocolId, HandleStopAsync);
    }

    /// <summary>Reservations we hold now.</summary>
    public IReadOnlyList<RelayReservation> Reservations
    {
        get
        {
            lock (_gate)
            {
                return [.. _reservations.Values];
            }
        }
    }

    /// <summary>Raised when a reservation was made, refreshed or released.</summary>
    public event Action? ReservationsChanged;

    /// <summary>Forgets our reservation on <paramref name="relay"/> (it lapses there at its expiry); false when none was held.</summary>
    public bool Release(PeerId relay)
    {
        bool removed;
        lock (_gate)
        {
            removed = _reservations.Remove(relay);
        }
        if (removed)
        {
            Host.ConnectionManager.Unprotect(relay, "relay-reservation");
            ReservationsChanged?.Invoke();
        }
        return removed;
    }

    public bool CanHandle(Multiaddr address) => address.Find(Multiaddr.P2pCircuit) is not null;

    /// <summary>Asks <paramref name="relay"/> for a reservation; throws <see cref="RelayRefusedException"/> when refused.</summary>
    public async Task<RelayReservation> ReserveAsync(PeerId relay, CancellationToken ct)
    {
        using var timeout = new CancellationTokenSource(_options.HandshakeTimeout, _runtime.Time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, timeout.Token);
        using var dialReason = DialReason.Use(DialReason.Relay);
        await using var stream = await Host.NewStreamAsync(relay, [RelayService.HopProtocolId], linked.Token);
        await RelayService.WriteAsync(stream, new Pb.HopMessage { Type = Pb.HopMessage.Types.Type.Reserve }, linked.Token);
        var answer = await ReadHopStatusAsync(stream, linked.Token);
        if (answer.Status != Pb.Status.Ok)
        {
            throw new RelayRefusedException((RelayStatus)answer.Status, $"relay {relay} refused the reservation: {RelayStatusNames.Of((RelayStatus)answer.Status)}");
        }
        if (answer.Reservation is not { } r)
        {
            throw new ProtocolViolationException(RelayService.HopProtocolId, "OK without a reservation", ViolationCode.Malformed);
        }
        if (r.HasVoucher && (!RelayVoucher.TryVerify(r.Voucher.Span, relay, Host.PeerId, out var expiration) || expiration != r.Expire))
        {
            throw new ProtocolViolationException(RelayService.HopProtocolId, "the reservation voucher does not verify", ViolationCode.BadSignature);
        }
        var addresses = new List<Multiaddr>();
        foreach (var a in r.Addrs.Take(16))
        {
            if (Multiaddr.TryFromBytes(a.Span, out var address))
            {
                addresses.Add(address.PeerId is null ? address.WithPeer(relay) : address);
            }
        }
        if (addresses.Count == 0)
        {
            addresses.Add(Multiaddr.Parse("/p2p/" + relay));
        }
        var reservation = new RelayReservation(relay, DateTimeOffset.FromUnixTimeSeconds((long)Math.Min(r.Expire, (ulong)DateTimeOffset.MaxValue.ToUnixTimeSeconds())),
            addresses, answer.Limit is { HasDuration: true } l ? TimeSpan.FromSeconds(l.Duration) : null,
            answer.Limit is { HasData: true } d ? (long)Math.Min(d.Data, long.MaxValue) : null);
        lock (_gate)
        {
            _reservations[relay] = reservation;
        }
        Host.ConnectionManager.Protect(relay, "relay-reservation");
        ReservationsChanged?.Invoke();
        return reservation;
    }

    private async Task<Pb.HopMessage> ReadHopStatusAsync(IStream stream, CancellationToken ct)
    {
        var bytes = await LengthPrefixed.ReadAsync(stream.Input, _options.MaxMessageSize, RelayService.HopProtocolId, ct)
            ?? throw new ProtocolViolationException(RelayService.HopProtocolId, "relay closed the stream without an answer", ViolationCode.Malformed);
        Pb.HopMessage answer;
        try
        {
            answer = Pb.HopMessage.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new ProtocolViolationException(RelayService.HopProtocolId, "relay's answer does not decode", e, ViolationCode.Malformed);
        }
        if (answer.Type != Pb.HopMessage.Types.Type.Status)
        {
            throw new ProtocolViolationException(RelayService.HopProtocolId, $"relay answered {answer.Type}, not STATUS", ViolationCode.UnexpectedMessage);
        }
        return answer;
    }

    public async ValueTask<IRawConnection> DialAsync(Multiaddr to, CancellationToken ct)
    {
        var components = to.Components;
        var at = -1;
        for (var i = 0; i < components.Count; i++)
        {
            if (components[i].Protocol == Multiaddr.P2pCircuit)
            {
                at = i;
                break;
            }
        }
        var relayAddress = at > 0 ? Multiaddr.Parse(string.Concat(components.Take(at).Select(c => c.ToString()))) : null;
        var rest = string.Concat(components.Skip(at + 1).Select(c => c.ToString()));
        var targetAddress = rest.Length == 0 ? Circuit : Multiaddr.Parse(rest);
        if (relayAddress?.PeerId is not { } relay || targetAddress.Components.Count != 1 || targetAddress.PeerId is not { } target)
        {
            throw new DialException(DialFailure.Unreachable, $"{to} is not a circuit address of the form …/p2p/<relay>/p2p-circuit/p2p/<target>", to);
        }
        using var dialReason = DialReason.Use(DialReason.Relay);
        if (relayAddress.Components.Count > 1)
        {
            await Host.ConnectAsync(relayAddress, ct);
        }
        var stream = await Host.NewStreamAsync(relay, [RelayService.HopProtocolId], ct);
        try
        {
            await RelayService.WriteAsync(stream, new Pb.HopMessage
            {
                Type = Pb.HopMessage.Types.Type.Connect,
                Peer = new Pb.Peer { Id = ByteString.CopyFrom(target.ToBytes()) },
            }, ct);
            var answer = await ReadHopStatusAsync(stream, ct);
            if (answer.Status != Pb.Status.Ok)
            {
                // An IOException: the host reports it as DialFailure.Unreachable with this as the inner exception.
                throw new RelayRefusedException((RelayStatus)answer.Status, $"relay {relay} refused to connect us to {target}: {RelayStatusNames.Of((RelayStatus)answer.Status)}");
            }
            return new RelayedConnection(stream, Multiaddr.Parse("/p2p/" + Host.PeerId).Encapsulate(Circuit), to.WithoutPeer(), null);
        }
        catch
        {
            stream.Reset();
            await stream.DisposeAsync();
            throw;
        }
    }

    public ValueTask<IListener> ListenAsync(Multiaddr at, CancellationToken ct)
    {
        lock (_gate)
        {
            if (_listener is not null)
            {
                throw new InvalidOperationException("already listening on /p2p-circuit");
            }
            _listener = new CircuitListener(this, at);
            return ValueTask.FromResult<IListener>(_listener);
        }
    }

    private async Task HandleStopAsync(IStream stream, CancellationToken ct)
    {
        var relay = stream.Connection.RemotePeer;
        using var timeout = new CancellationTokenSource(_options.HandshakeTimeout, _runtime.Time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, timeout.Token);
        var bytes = await LengthPrefixed.ReadAsync(stream.Input, _options.MaxMessageSize, RelayService.StopProtocolId, linked.Token);
        if (bytes is null)
        {
            return;
        }
        Pb.StopMessage message;
        try
        {
            message = Pb.StopMessage.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            await RespondAsync(stream, RelayStatus.MalformedMessage, linked.Token);
            throw new ProtocolViolationException(RelayService.StopProtocolId, "stop message does not decode", e, ViolationCode.Malformed);
        }
        if (message.Type != Pb.StopMessage.Types.Type.Connect)
        {
            await RespondAsync(stream, RelayStatus.UnexpectedMessage, linked.Token);
            throw new ProtocolViolationException(RelayService.StopProtocolId, $"unexpected stop message {message.Type}", ViolationCode.UnexpectedMessage);
        }
        if (message.Peer is null || !PeerId.TryFromBytes(message.Peer.Id.Span, out var source))
        {
            await RespondAsync(stream, RelayStatus.MalformedMessage, linked.Token);
            throw new ProtocolViolationException(RelayService.StopProtocolId, "CONNECT without a valid peer id", ViolationCode.Malformed);
        }
        CircuitListener? listener;
        bool reserved;
        lock (_gate)
        {
            listener = _listener;
            reserved = _reservations.TryGetValue(relay, out var r) && r.Expires > _runtime.Time.GetUtcNow();
        }
        if (listener is null || (_options.StopOnlyFromReservedRelays && !reserved) || RelayService.IsRelayed(stream.Connection))
        {
            LogStopRefused(relay, source);
            await RespondAsync(stream, RelayStatus.PermissionDenied, linked.Token);
            return;
        }
        await RespondAsync(stream, RelayStatus.Ok, linked.Token);
        var closed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var local = Multiaddr.Parse($"/p2p/{relay}/p2p-circuit");
        var connection = new RelayedConnection(stream, local, Multiaddr.Parse($"/p2p/{relay}/p2p-circuit/p2p/{source}"), closed);
        if (!listener.Offer(connection))
        {
            stream.Reset();
            return;
        }
        // The stream lives as long as the relayed connection: the router disposes it when this handler returns.
        await LoopSafeWait.WaitAsync(closed.Task, ct);
    }

    private static Task RespondAsync(IStream stream, RelayStatus status, CancellationToken ct) =>
        RelayService.WriteAsync(stream, new Pb.StopMessage { Type = Pb.StopMessage.Types.Type.Status, Status = (Pb.Status)status }, ct);

    private void ListenerClosed(CircuitListener listener)
    {
        lock (_gate)
        {
            if (_listener == listener)
            {
                _listener = null;
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "circuit: refused a relayed connection from {Source} via {Relay} (no listener or no reservation)")]
    private partial void LogStopRefused(PeerId relay, PeerId source);

    private sealed class CircuitListener(CircuitTransport owner, Multiaddr address) : IListener
    {
        private readonly Channel<IRawConnection> _inbound = Channel.CreateBounded<IRawConnection>(16);

        public Multiaddr Address { get; } = address;

        public bool Offer(IRawConnection connection) => _inbound.Writer.TryWrite(connection);

        public async ValueTask<IRawConnection> AcceptAsync(CancellationToken ct)
        {
            try
            {
                return await _inbound.Reader.ReadAsync(ct);
            }
            catch (ChannelClosedException)
            {
                throw new OperationCanceledException("the /p2p-circuit listener is closed");
            }
        }

        public async ValueTask DisposeAsync()
        {
            owner.ListenerClosed(this);
            _inbound.Writer.TryComplete();
            while (_inbound.Reader.TryRead(out var pending))
            {
                await pending.DisposeAsync();
            }
        }
    }
}

/// <summary>A relayed stream seen as a raw connection, for the upgrader.</summary>
internal sealed class RelayedConnection(IStream stream, Multiaddr local, Multiaddr remote, TaskCompletionSource? closed) : IRawConnection
{
    private int _disposed;

    public PipeReader Input => stream.Input;

    public PipeWriter Output => stream.Output;

    public Multiaddr Local { get; } = local;

    public Multiaddr Remote { get; } = remote;

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            stream.Reset();
            await stream.DisposeAsync();
            closed?.TrySetResult();
        }
    }
}
