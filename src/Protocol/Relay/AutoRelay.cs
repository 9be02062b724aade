using Microsoft.Extensions.Logging;
using Potluck.Protocol.AutoNat;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Relay;

/// <summary>
/// Relay use driven by AutoNAT, as go-libp2p's autorelay and relay manager do: while this node is found publicly
/// reachable it serves hop (<see cref="RelayOptions.AutoHop"/>, within the relay's limits); while it is found
/// unreachable it holds up to <see cref="RelayOptions.MaxAutoReservations"/> reservations on relays it knows (the
/// preferred ones first: bootstrap peers, a private cluster's members; then connected peers that serve hop), refreshes
/// them before they expire, replaces one whose relay went away, and offers their <c>/p2p-circuit</c> addresses
/// (<see cref="CircuitAddresses"/>) for identify, the DHT and the node's advertisement.
/// </summary>
public sealed partial class AutoRelay : IAsyncDisposable
{
    private static readonly TimeSpan CheckInterval = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan Backoff = TimeSpan.FromMinutes(1);

    private readonly Libp2pHost _host;
    private readonly CircuitTransport _circuit;
    private readonly RelayService? _hop;
    private readonly AutoNatService _autoNat;
    private readonly RelayOptions _options;
    private readonly NodeRuntime _runtime;
    private readonly Func<IEnumerable<PeerId>> _preferred;
    private readonly ILogger<AutoRelay> _log;
    private readonly BackgroundWork _work;
    private readonly object _gate = new();
    private readonly Dictionary<PeerId, DateTimeOffset> _failed = [];
    private int _maintaining;
    private bool _hopStartedByUs;

    /// <param name="hop">The hop service to start while public (null: never serve hop automatically).</param>
    /// <param name="preferred">Relays to try first (bootstrap peers, cluster members), in order.</param>
    public AutoRelay(Libp2pHost host, CircuitTransport circuit, RelayService? hop, AutoNatService autoNat, RelayOptions options,
        NodeRuntime runtime, ILoggerFactory loggers, Func<IEnumerable<PeerId>> preferred)
    {
        _host = host;
        _circuit = circuit;
        _hop = hop;
        _autoNat = autoNat;
        _options = options;
        _runtime = runtime;
        _preferred = preferred;
        _log = loggers.CreateLogger<AutoRelay>();
        _work = runtime.CreateBackgroundWork("autorelay", _log);
    }

    /// <summary>Reservations made (new or refreshed) and given up, since start.</summary>
    public long ReservationsMade => Interlocked.Read(ref _made);

    public long ReservationsLost => Interlocked.Read(ref _lost);

    private long _made;
    private long _lost;

    /// <summary>Where others reach this node through its relays (empty unless it is unreachable and holds reservations).</summary>
    public IReadOnlyList<Multiaddr> CircuitAddresses =>
        _autoNat.Reachability == Reachability.Public && !_options.AcceptRelayed ? []
            : _circuit.Reservations.SelectMany(r => r.CircuitAddresses).Distinct().ToArray();

    public void Start()
    {
        _autoNat.Changed += OnReachabilityChanged;
        _host.Disconnected += OnDisconnected;
        _work.Run("autorelay loop", async () =>
        {
            var stopping = _work.Stopping;
            while (!stopping.IsCancellationRequested)
            {
                await Task.Delay(CheckInterval, _runtime.Time, stopping);
                await MaintainAsync(stopping);
            }
        });
        OnReachabilityChanged();
    }

    private void OnDisconnected(IConnection connection)
    {
        if (_circuit.Reservations.Any(r => r.Relay == connection.RemotePeer)
            && !_host.Connections.Any(c => c.RemotePeer == connection.RemotePeer && !c.IsClosed && !RelayService.IsRelayed(c)))
        {
            _work.Run("autorelay replace", () => MaintainAsync(_work.Stopping));
        }
    }

    private void OnReachabilityChanged()
    {
        var reachability = _autoNat.Reachability;
        if (_hop is not null && _options.AutoHop && !_options.Hop)
        {
            lock (_gate)
            {
                if (reachability == Reachability.Public && !_hopStartedByUs)
                {
                    _hopStartedByUs = true;
                    _hop.Start();
                }
                else if (reachability == Reachability.Private && _hopStartedByUs)
                {
                    _hopStartedByUs = false;
                    _hop.Stop();
                }
            }
        }
        _work.Run("autorelay", () => MaintainAsync(_work.Stopping));
    }

    /// <summary>One round: drop reservations whose relay is gone, refresh those near expiry, add new ones while private.</summary>
    public async Task MaintainAsync(CancellationToken ct)
    {
        if (Interlocked.Exchange(ref _maintaining, 1) != 0)
        {
            return;
        }
        try
        {
            var now = _runtime.Time.GetUtcNow();
            var wanted = _options.AutoReserve && _autoNat.Reachability == Reachability.Private;
            foreach (var r in _circuit.Reservations)
            {
                if (!wanted && !_options.AcceptRelayed)
                {
                    Lose(r.Relay, "this node is not found unreachable");
                    continue;
                }
                if (!IsDirectlyConnected(r.Relay) || r.Expires <= now)
                {
                    Lose(r.Relay, "the relay is no longer connected");
                    continue;
                }
                if (wanted && r.Expires - now <= RefreshWindow)
                {
                    await TryReserveAsync(r.Relay, ct);
                }
            }
            if (!wanted)
            {
                return;
            }
            var held = _circuit.Reservations.Select(r => r.Relay).ToHashSet();
            foreach (var candidate in Candidates(now))
            {
                if (held.Count >= _options.MaxAutoReservations)
                {
                    break;
                }
                if (!held.Contains(candidate) && await TryReserveAsync(candidate, ct))
                {
                    held.Add(candidate);
                }
            }
        }
        finally
        {
            Volatile.Write(ref _maintaining, 0);
        }
    }

    /// <summary>A reservation is refreshed once this little of it is left (ten checks' worth).</summary>
    private static readonly TimeSpan RefreshWindow = TimeSpan.FromMinutes(5);

    private IEnumerable<PeerId> Candidates(DateTimeOffset now)
    {
        var connected = _host.Connections
            .Where(c => !c.IsClosed && !RelayService.IsRelayed(c))
            .Select(c => c.RemotePeer)
            .Distinct()
            .ToArray();
        var preferred = _preferred().Where(connected.Contains);
        var hop = connected.Where(p => _host.Peers.SupportsProtocol(p, RelayService.HopProtocolId)).OrderBy(p => p.ToString(), StringComparer.Ordinal);
        lock (_gate)
        {
            return preferred.Concat(hop).Distinct()
                .Where(p => !(_failed.TryGetValue(p, out var at) && now - at < Backoff))
                .ToArray();
        }
    }

    private bool IsDirectlyConnected(PeerId peer) =>
        _host.Connections.Any(c => c.RemotePeer == peer && !c.IsClosed && !RelayService.IsRelayed(c));

    private async Task<bool> TryReserveAsync(PeerId relay, CancellationToken ct)
    {
        try
        {
            var reservation = await _circuit.ReserveAsync(relay, ct);
            Interlocked.Increment(ref _made);
            LogReserved(relay, reservation.Expires);
            return true;
        }
        catch (Exception e) when (Failures.Classify(e, ct).Kind is not FailureKind.Internal and not FailureKind.Cancelled)
        {
            lock (_gate)
            {
                _failed[relay] = _runtime.Time.GetUtcNow();
                if (_failed.Count > 256)
                {
                    _failed.Remove(_failed.MinBy(kv => kv.Value).Key);
                }
            }
            LogReserveFailed(relay, e.Message);
            Lose(relay, e.Message);
            return false;
        }
    }

    private void Lose(PeerId relay, string reason)
    {
        if (_circuit.Release(relay))
        {
            Interlocked.Increment(ref _lost);
            LogLost(relay, reason);
        }
    }

    public async ValueTask DisposeAsync()
    {
        _autoNat.Changed -= OnReachabilityChanged;
        _host.Disconnected -= OnDisconnected;
        await _work.DisposeAsync();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "autorelay: reserved on {Relay} until {Expires}")]
    private partial void LogReserved(PeerId relay, DateTimeOffset expires);

    [LoggerMessage(Level = LogLevel.Debug, Message = "autorelay: reservation on {Relay} failed: {Reason}")]
    private partial void LogReserveFailed(PeerId relay, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "autorelay: gave up the reservation on {Relay}: {Reason}")]
    private partial void LogLost(PeerId relay, string reason);
}
