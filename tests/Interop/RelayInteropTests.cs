using System.Buffers;
using Potluck.Node;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Ping;
using Potluck.Protocol.Relay;
using Microsoft.Extensions.DependencyInjection;

using Potluck.Tests;

namespace Potluck.Interop.Tests;

/// <summary>
/// Circuit relay v2 between Potluck and js-libp2p 3.3 with @libp2p/circuit-relay-v2 4.2 on loopback: a js relay
/// serving Potluck nodes (reservation with js's signed voucher, a relayed connection, NO_RESERVATION for a peer
/// without one), and a Potluck relay serving js nodes (js reserves on it, js reaches a Potluck node and another js
/// node through it, and a Potluck node reaches a js node through it).
/// </summary>
[TestFixture]
[Category("Interop")]
[NonParallelizable]
[CancelAfter(180_000)]
public sealed class RelayInteropTests
{
    private const string EchoProtocol = "/potluck/echo/1.0.0";

    private static async Task<PotluckNode> StartPotluckAsync(RelayOptions relay)
    {
        var node = await PotluckNode.CreateBuilder()
            .UseKey(PrivateKey.Generate())
            .UseLoggerFactory(TestLogging.Factory)
            .Configure(o => o with { Listen = [Multiaddr.Parse("/ip4/127.0.0.1/tcp/0")], Relay = relay })
            .StartAsync();
        node.Host.SetStreamHandler(EchoProtocol, async (stream, ct) =>
        {
            while (true)
            {
                var result = await stream.Input.ReadAsync(ct);
                foreach (var segment in result.Buffer)
                {
                    await stream.Output.WriteAsync(segment, ct);
                }
                stream.Input.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted)
                {
                    break;
                }
            }
            await stream.Output.CompleteAsync();
        });
        return node;
    }

    private static async Task<int> EchoAsync(PotluckNode node, PeerId peer, int size, CancellationToken ct)
    {
        var payload = new byte[size];
        new Random(size).NextBytes(payload);
        await using var stream = await node.Host.NewStreamAsync(peer, [EchoProtocol], ct);
        var reader = Task.Run(async () =>
        {
            var received = new ArrayBufferWriter<byte>(size);
            while (true)
            {
                var result = await stream.Input.ReadAsync(ct);
                foreach (var segment in result.Buffer)
                {
                    received.Write(segment.Span);
                }
                stream.Input.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted)
                {
                    return received.WrittenSpan.ToArray();
                }
            }
        }, ct);
        await stream.Output.WriteAsync(payload, ct);
        await stream.Output.CompleteAsync();
        var echoed = await reader;
        Assert.That(echoed, Is.EqualTo(payload), "echoed bytes differ");
        return echoed.Length;
    }

    [Test]
    public async Task JsRelay_ServesPotluckNodes_AndRefusesWithoutReservation(CancellationToken ct)
    {
        await using var relay = await JsPeer.StartAsync(new JsPeerOptions { RelayServer = true }, ct);
        await using var a = await StartPotluckAsync(new RelayOptions { AcceptRelayed = true });
        await using var b = await StartPotluckAsync(new RelayOptions());
        await using var c = await StartPotluckAsync(new RelayOptions { AcceptRelayed = true });

        await a.Host.ConnectAsync(Multiaddr.Parse(relay.Addr), ct);
        var reservation = await a.Services.GetRequiredService<CircuitTransport>().ReserveAsync(PeerId.Parse(relay.PeerId), ct);
        Assert.That(reservation.Expires, Is.GreaterThan(DateTimeOffset.UtcNow.AddMinutes(30)), "js grants 2 h (its voucher verified)");
        Assert.That(reservation.ConnectionData, Is.EqualTo(128 * 1024), "js's default limit");

        var viaRelay = Multiaddr.Parse($"{relay.Addr}/p2p-circuit/p2p/{a.PeerId}");
        var connection = await b.Host.ConnectAsync(viaRelay, ct);
        Assert.That(connection.RemotePeer, Is.EqualTo(a.PeerId));
        Assert.That(connection.RemoteAddress.Find(Multiaddr.P2pCircuit), Is.Not.Null);
        var rtts = await b.Services.GetRequiredService<PingService>().PingAsync(a.PeerId, 2, ct);
        Assert.That(rtts, Has.Count.EqualTo(2));
        Assert.That(await EchoAsync(b, a.PeerId, 32 * 1024, ct), Is.EqualTo(32 * 1024));

        // C is connected to the relay but holds no reservation: js refuses with NO_RESERVATION.
        await c.Host.ConnectAsync(Multiaddr.Parse(relay.Addr), ct);
        var failed = Assert.ThrowsAsync<DialException>(async () =>
            await b.Host.ConnectAsync(Multiaddr.Parse($"{relay.Addr}/p2p-circuit/p2p/{c.PeerId}"), ct))!;
        Assert.That(failed.InnerException, Is.TypeOf<RelayRefusedException>());
        Assert.That(((RelayRefusedException)failed.InnerException!).Status, Is.EqualTo(RelayStatus.NoReservation));
    }

    [Test]
    public async Task PotluckRelay_ServesJsNodes_BothWays(CancellationToken ct)
    {
        await using var relay = await StartPotluckAsync(new RelayOptions { Hop = true });
        var relayAddress = relay.FullAddresses[0].ToString();
        var hop = relay.Services.GetRequiredService<RelayService>();

        // js reserves on our relay by listening on its /p2p-circuit address.
        await using var jsTarget = await JsPeer.StartAsync(new JsPeerOptions { RelayClient = true, ExtraListen = [$"{relayAddress}/p2p-circuit"] }, ct);
        var addrs = await jsTarget.AddrsAsync(ct);
        Assert.That(addrs, Has.Some.Contains("/p2p-circuit"), "js holds a reservation on the Potluck relay");
        Assert.That(hop.ReservationCount, Is.EqualTo(1));

        // Another js node reaches it through our relay.
        await using var jsDialer = await JsPeer.StartAsync(new JsPeerOptions { RelayClient = true }, ct);
        var echo = await jsDialer.EchoAsync($"{relayAddress}/p2p-circuit/p2p/{jsTarget.PeerId}", 16 * 1024, ct);
        Assert.That(echo.Matched, Is.True);

        // A Potluck node reaches the js node through our relay.
        await using var b = await StartPotluckAsync(new RelayOptions());
        var connection = await b.Host.ConnectAsync(Multiaddr.Parse($"{relayAddress}/p2p-circuit/p2p/{jsTarget.PeerId}"), ct);
        Assert.That(connection.RemotePeer.ToString(), Is.EqualTo(jsTarget.PeerId));
        Assert.That(await EchoAsync(b, connection.RemotePeer, 16 * 1024, ct), Is.EqualTo(16 * 1024));

        // And js reaches a Potluck node that reserved on our relay.
        await using var a = await StartPotluckAsync(new RelayOptions { AcceptRelayed = true });
        await a.Host.ConnectAsync(relay.FullAddresses[0], ct);
        await a.Services.GetRequiredService<CircuitTransport>().ReserveAsync(relay.PeerId, ct);
        var fromJs = await jsDialer.EchoAsync($"{relayAddress}/p2p-circuit/p2p/{a.PeerId}", 16 * 1024, ct);
        Assert.That(fromJs.Matched, Is.True);
        Assert.That(hop.CircuitsOpened, Is.GreaterThanOrEqualTo(3));
    }
}
