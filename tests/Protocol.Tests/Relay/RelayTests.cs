using System.Buffers;
using Google.Protobuf;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Ping;
using Potluck.Protocol.Relay;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Tests.Host;
using Potluck.Protocol.Transport;
using RelayPb = Potluck.Protocol.Relay.Pb;

namespace Potluck.Protocol.Tests.Relay;

/// <summary>Circuit relay v2 on the simulated network under the virtual-time driver: relay R, listener A, dialer B.</summary>
public class RelayTests
{
    private sealed record Node(Libp2pHost Host, CircuitTransport Circuit, PingService Ping, RelayService? Relay)
    {
        public Multiaddr Address => Host.ListenAddresses[0].WithPeer(Host.PeerId);
    }

    private static async Task<Node> StartAsync(TestHosts hosts, int index, RelayOptions? relay = null)
    {
        var runtime = hosts.NextRuntime();
        var options = relay ?? new RelayOptions();
        var circuit = new CircuitTransport(options, runtime, hosts.Loggers);
        var host = Libp2pHost.Create(PrivateKey.FromRandom(new Random(100 + index)), [hosts.Network.CreateTransport(), circuit],
            new Libp2pHostSettings(), runtime, hosts.Loggers);
        circuit.Attach(host);
        hosts.Own(host);
        hosts.Own(new IdentifyService(host, new IdentifyOptions(), runtime, hosts.Loggers));
        var ping = new PingService(host, new PingOptions(), runtime, hosts.Loggers);
        var service = options.Hop ? new RelayService(host, options, runtime, hosts.Loggers) : null;
        await host.StartAsync([Multiaddr.Parse("/memory/0"), Multiaddr.Parse("/p2p-circuit")], CancellationToken.None);
        return new Node(host, circuit, ping, service);
    }

    private static Multiaddr Via(Node relay, Node target) =>
        Multiaddr.Parse($"{relay.Address}/p2p-circuit/p2p/{target.Host.PeerId}");

    [Test]
    public void ReservedPeer_IsReachedThroughTheRelay_AndAnswersPing()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var r = await StartAsync(hosts, 0, new RelayOptions { Hop = true });
            var a = await StartAsync(hosts, 1);
            var b = await StartAsync(hosts, 2);

            await a.Host.ConnectAsync(r.Address, CancellationToken.None);
            var reservation = await a.Circuit.ReserveAsync(r.Host.PeerId, CancellationToken.None);
            Assert.That(reservation.Expires, Is.EqualTo(DateTimeOffset.FromUnixTimeSeconds((d.Clock.GetUtcNow() + TimeSpan.FromHours(1)).ToUnixTimeSeconds())));
            Assert.That(reservation.CircuitAddresses, Does.Contain(Multiaddr.Parse($"{r.Address}/p2p-circuit")));
            Assert.That(reservation.ConnectionData, Is.EqualTo(128 * 1024));
            Assert.That(r.Relay!.ReservationCount, Is.EqualTo(1));

            var connection = await b.Host.ConnectAsync(Via(r, a), CancellationToken.None);
            Assert.That(connection.RemotePeer, Is.EqualTo(a.Host.PeerId), "Noise over the relayed stream authenticated A");
            Assert.That(connection.RemoteAddress.Find(Multiaddr.P2pCircuit), Is.Not.Null);
            var rtts = await b.Ping.PingAsync(a.Host.PeerId, 3, CancellationToken.None);
            Assert.That(rtts, Has.Count.EqualTo(3));
            Assert.That(a.Host.Connections.Any(c => c.RemotePeer == b.Host.PeerId && c.RemoteAddress.Find(Multiaddr.P2pCircuit) is not null),
                "A accepted B's connection through the relay");
            Assert.That(b.Host.Connections.Any(c => c.RemotePeer == a.Host.PeerId && c.RemoteAddress.Find(Multiaddr.P2pCircuit) is null),
                Is.False, "no direct connection was made");
            Assert.That(r.Relay.CircuitCount, Is.EqualTo(1));
            Assert.That(r.Relay.BytesRelayed, Is.GreaterThan(0));
        });
    }

    [Test]
    public void ReservationsOverTheLimit_AreRefused_WithReservationRefused()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var r = await StartAsync(hosts, 0, new RelayOptions { Hop = true, MaxReservations = 2 });
            var peers = new List<Node>();
            for (var i = 1; i <= 3; i++)
            {
                var p = await StartAsync(hosts, i);
                await p.Host.ConnectAsync(r.Address, CancellationToken.None);
                peers.Add(p);
            }
            await peers[0].Circuit.ReserveAsync(r.Host.PeerId, CancellationToken.None);
            await peers[1].Circuit.ReserveAsync(r.Host.PeerId, CancellationToken.None);
            var refused = await AsyncAssert.ThrowsAsync<RelayRefusedException>(() => peers[2].Circuit.ReserveAsync(r.Host.PeerId, CancellationToken.None));
            Assert.That(refused.Status, Is.EqualTo(RelayStatus.ReservationRefused));
            Assert.That(r.Relay!.ReservationCount, Is.EqualTo(2));
            Assert.That(peers[2].Circuit.Reservations, Is.Empty);

            // A refresh by a holder is not a new reservation; after the TTL the slots free up.
            await peers[0].Circuit.ReserveAsync(r.Host.PeerId, CancellationToken.None);
            Assert.That(r.Relay.ReservationCount, Is.EqualTo(2));
            await Task.Delay(TimeSpan.FromHours(1) + TimeSpan.FromSeconds(2), d.Clock);
            Assert.That(r.Relay.ReservationCount, Is.Zero);
            // An hour on, the peer store has forgotten an address it learnt only from a connection that has since
            // closed (recently-connected TTL, as go-libp2p's peerstore): the peer dials its relay by address again.
            await peers[2].Host.ConnectAsync(r.Address, CancellationToken.None);
            await peers[2].Circuit.ReserveAsync(r.Host.PeerId, CancellationToken.None);
            Assert.That(r.Relay.ReservationCount, Is.EqualTo(1));
        });
    }

    [Test]
    public void DialWithoutReservation_FailsWithNoReservation()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var r = await StartAsync(hosts, 0, new RelayOptions { Hop = true });
            var a = await StartAsync(hosts, 1);
            var b = await StartAsync(hosts, 2);
            await a.Host.ConnectAsync(r.Address, CancellationToken.None);

            var failed = await AsyncAssert.ThrowsAsync<DialException>(async () => await b.Host.ConnectAsync(Via(r, a), CancellationToken.None));
            Assert.That(failed.Failure, Is.EqualTo(DialFailure.Unreachable));
            Assert.That(failed.InnerException, Is.TypeOf<RelayRefusedException>());
            Assert.That(((RelayRefusedException)failed.InnerException!).Status, Is.EqualTo(RelayStatus.NoReservation));
            Assert.That(a.Host.Connections.Any(c => c.RemotePeer == b.Host.PeerId), Is.False);
            Assert.That(r.Relay!.CircuitCount, Is.Zero);
        });
    }

    [Test]
    public void RelayedConnection_IsCut_AtItsDataLimit()
    {
        const int limit = 32 * 1024;
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var r = await StartAsync(hosts, 0, new RelayOptions { Hop = true, ConnectionData = limit });
            var a = await StartAsync(hosts, 1);
            var b = await StartAsync(hosts, 2);
            long received = 0;
            a.Host.SetStreamHandler("/test/sink", async (stream, ct) =>
            {
                while (true)
                {
                    var result = await stream.Input.ReadAsync(ct);
                    received += result.Buffer.Length;
                    stream.Input.AdvanceTo(result.Buffer.End);
                    if (result.IsCompleted)
                    {
                        return;
                    }
                }
            });
            await a.Host.ConnectAsync(r.Address, CancellationToken.None);
            await a.Circuit.ReserveAsync(r.Host.PeerId, CancellationToken.None);
            var connection = await b.Host.ConnectAsync(Via(r, a), CancellationToken.None);

            var sent = 0;
            try
            {
                await using var stream = await connection.OpenStreamAsync(["/test/sink"], CancellationToken.None);
                var chunk = new byte[4096];
                for (; sent < 4 * limit; sent += chunk.Length)
                {
                    await stream.Output.WriteAsync(chunk, CancellationToken.None);
                }
            }
            catch (Exception e) when (Failures.Classify(e, CancellationToken.None).Kind == FailureKind.PeerGone)
            {
                // the relay reset the circuit under us
            }
            await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
            Assert.That(received, Is.LessThanOrEqualTo(limit), "A never received more than the relay allows");
            Assert.That(r.Relay!.CircuitsCutAtLimit, Is.EqualTo(1));
            Assert.That(r.Relay.CircuitCount, Is.Zero);
            Assert.That(connection.IsClosed, Is.True, "B's relayed connection is closed");
            Assert.That(a.Host.Connections.Any(c => c.RemotePeer == b.Host.PeerId), Is.False, "A's side of it too");
            Assert.That(a.Host.Connections.Any(c => c.RemotePeer == r.Host.PeerId), Is.True, "A keeps its connection to the relay");
        });
    }

    [Test]
    public void RelayedConnection_IsCut_AtItsTimeLimit()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var r = await StartAsync(hosts, 0, new RelayOptions { Hop = true, ConnectionDuration = TimeSpan.FromSeconds(60) });
            var a = await StartAsync(hosts, 1);
            var b = await StartAsync(hosts, 2);
            await a.Host.ConnectAsync(r.Address, CancellationToken.None);
            await a.Circuit.ReserveAsync(r.Host.PeerId, CancellationToken.None);
            var connection = await b.Host.ConnectAsync(Via(r, a), CancellationToken.None);
            await b.Ping.PingAsync(a.Host.PeerId, 1, CancellationToken.None);

            // Past the 30 s handshake timeout: that one is disarmed once the circuit is up.
            await Task.Delay(TimeSpan.FromSeconds(58), d.Clock);
            Assert.That(connection.IsClosed, Is.False, "still open before the limit");
            await b.Ping.PingAsync(a.Host.PeerId, 1, CancellationToken.None);
            await Task.Delay(TimeSpan.FromSeconds(3), d.Clock);
            Assert.That(connection.IsClosed, Is.True, "cut at its 60 s limit");
            Assert.That(r.Relay!.CircuitsCutAtLimit, Is.EqualTo(1));
            Assert.That(a.Host.Connections.Any(c => c.RemotePeer == b.Host.PeerId), Is.False);
        });
    }

    [Test]
    public void MalformedHopMessage_ResetsTheStream_AndTheRelayKeepsServing()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var r = await StartAsync(hosts, 0, new RelayOptions { Hop = true });
            var b = await StartAsync(hosts, 2);
            await b.Host.ConnectAsync(r.Address, CancellationToken.None);

            await using (var stream = await b.Host.NewStreamAsync(r.Host.PeerId, [RelayService.HopProtocolId], CancellationToken.None))
            {
                await LengthPrefixed.WriteAsync(stream.Output, new byte[] { 0xff, 0xff, 0xff, 0xff, 0x0f }, CancellationToken.None);
                Assert.That(await ReadToEndOrResetAsync(stream), Is.True, "the relay reset the stream");
            }
            await using (var stream = await b.Host.NewStreamAsync(r.Host.PeerId, [RelayService.HopProtocolId], CancellationToken.None))
            {
                // An oversized length prefix is refused before anything is allocated.
                var prefix = new ArrayBufferWriter<byte>();
                Varint.Write(prefix, 1UL << 30);
                await stream.Output.WriteAsync(prefix.WrittenMemory, CancellationToken.None);
                Assert.That(await ReadToEndOrResetAsync(stream), Is.True);
            }
            Assert.That(r.Relay!.ReservationCount, Is.Zero);
            await b.Circuit.ReserveAsync(r.Host.PeerId, CancellationToken.None);
            Assert.That(r.Relay.ReservationCount, Is.EqualTo(1), "the relay still serves honest requests");
        });
    }

    [Test]
    public void StopFromAStranger_IsRefused_AndMalformedStopResetsTheStream()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var a = await StartAsync(hosts, 1);
            var stranger = await StartAsync(hosts, 2);
            await stranger.Host.ConnectAsync(a.Address, CancellationToken.None);

            await using (var stream = await stranger.Host.NewStreamAsync(a.Host.PeerId, [RelayService.StopProtocolId], CancellationToken.None))
            {
                await LengthPrefixed.WriteAsync(stream.Output, new RelayPb.StopMessage
                {
                    Type = RelayPb.StopMessage.Types.Type.Connect,
                    Peer = new RelayPb.Peer { Id = ByteString.CopyFrom(stranger.Host.PeerId.ToBytes()) },
                }.ToByteArray(), CancellationToken.None);
                var answer = await LengthPrefixed.ReadAsync(stream.Input, 4096, "test", CancellationToken.None);
                Assert.That(RelayPb.StopMessage.Parser.ParseFrom(answer).Status, Is.EqualTo(RelayPb.Status.PermissionDenied),
                    "A holds no reservation on this 'relay' and accepts no circuit from it");
            }
            await using (var stream = await stranger.Host.NewStreamAsync(a.Host.PeerId, [RelayService.StopProtocolId], CancellationToken.None))
            {
                await LengthPrefixed.WriteAsync(stream.Output, new byte[] { 0x08, 0x05, 0x12 }, CancellationToken.None);
                Assert.That(await ReadToEndOrResetAsync(stream, stop: true), Is.True);
            }
            Assert.That(a.Host.Connections.Count(c => c.RemotePeer == stranger.Host.PeerId), Is.EqualTo(1), "only the direct connection");
        });
    }

    /// <summary>Reads until the stream ends; true when it was reset (or ended) after at most one status message.</summary>
    private static async Task<bool> ReadToEndOrResetAsync(IStream stream, bool stop = false)
    {
        try
        {
            var messages = 0;
            while (await LengthPrefixed.ReadAsync(stream.Input, 4096, "test", CancellationToken.None) is { } bytes)
            {
                var status = stop ? RelayPb.StopMessage.Parser.ParseFrom(bytes).Status : RelayPb.HopMessage.Parser.ParseFrom(bytes).Status;
                Assert.That(status, Is.AnyOf(RelayPb.Status.MalformedMessage, RelayPb.Status.UnexpectedMessage));
                messages++;
            }
            return messages <= 1;
        }
        catch (Exception e) when (Failures.Classify(e, CancellationToken.None).Kind == FailureKind.PeerGone)
        {
            return true;
        }
    }
}
