using Microsoft.Extensions.Logging;
using Potluck.Protocol.Host;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Relay;
using Potluck.Protocol.Runtime;

namespace Potluck.Node.Hosting;

/// <summary>
/// Holds a reservation on each of <see cref="RelayOptions.StaticRelays"/> (go-libp2p's static relays): dials the relay,
/// reserves, and refreshes when three quarters of the reservation's time has passed; a refused or failed attempt is
/// retried after 30 s. What a node behind a NAT needs to be reached (and hole-punched) through a relay it was told of,
/// until reservations are made automatically on relays a node finds.
/// </summary>
internal sealed partial class StaticRelayReservations(CircuitTransport circuit, Libp2pHost host, RelayOptions options, NodeRuntime runtime,
    ILogger<StaticRelayReservations> log) : IAsyncDisposable
{
    private static readonly TimeSpan RetryAfter = TimeSpan.FromSeconds(30);
    private readonly BackgroundWork _work = runtime.CreateBackgroundWork("static relays", log);

    public void Start()
    {
        foreach (var relay in options.StaticRelays)
        {
            _work.Run("reserve", stopping => KeepAsync(relay, stopping));
        }
    }

    private async Task KeepAsync(Multiaddr relay, CancellationToken stopping)
    {
        var time = runtime.Time;
        while (!stopping.IsCancellationRequested)
        {
            TimeSpan next;
            try
            {
                using var dialReason = DialReason.Use(DialReason.Relay);
                await host.ConnectAsync(relay, stopping);
                var reservation = await circuit.ReserveAsync(relay.PeerId!.Value, stopping);
                var left = reservation.Expires - time.GetUtcNow();
                next = left > TimeSpan.FromMinutes(1) ? left * 3 / 4 : RetryAfter;
                LogReserved(relay, reservation.Expires);
            }
            catch (Exception e) when (!stopping.IsCancellationRequested && Failures.Classify(e, stopping).Kind != FailureKind.Internal)
            {
                LogFailed(relay, e.Message);
                next = RetryAfter;
            }
            await Task.Delay(next, time, stopping);
        }
    }

    public ValueTask DisposeAsync() => _work.DisposeAsync();

    [LoggerMessage(Level = LogLevel.Information, Message = "relay reservation on {Relay} until {Expires}")]
    private partial void LogReserved(Multiaddr relay, DateTimeOffset expires);

    [LoggerMessage(Level = LogLevel.Warning, Message = "relay reservation on {Relay} failed: {Reason}; retrying in 30 s")]
    private partial void LogFailed(Multiaddr relay, string reason);
}
