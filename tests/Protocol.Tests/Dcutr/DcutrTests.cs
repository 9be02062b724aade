using System.Buffers;
using Google.Protobuf;
using Potluck.Protocol.Dcutr;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Ping;
using Potluck.Protocol.Relay;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Tests.Host;
using DcutrPb = Potluck.Protocol.Dcutr.Pb;

namespace Potluck.Protocol.Tests.Dcutr;

/// <summary>
/// DCUtR on the simulated network under virtual time. R is a public relay; the provider holds a reservation on R and
/// is reached through it by the requester; <see cref="Transport.Memory.SimulatedNetwork.PlaceBehindNat"/> puts a node
/// behind a NAT that lets a dial in only when the node dialed the dialer in the last 30 s.
/// </summary>
public class DcutrTests
{
    private sealed record Node(Libp2pHost Host, CircuitTransport Circuit, PingService Ping, RelayService? Relay, DcutrService? Dcutr)
    {
        public Multiaddr Address => Host.ListenAddresses[0].WithPeer(Host.PeerId);

        public Multiaddr Listen => Host.ListenAddresses[0];
    }

    private static async Task<Node> StartAsync(TestHosts hosts, int index, bool hop = false, bool dcutr = true, DcutrOptions? options = null)
    {
        var runtime = hosts.NextRuntime();
        var relayOptions = new RelayOptions { Hop = hop };
        var circuit = new CircuitTransport(relayOptions, runtime, hosts.Loggers);
        var host = Libp2pHost.Create(PrivateKey.FromRandom(new Random(200 + index)), [hosts.Network.CreateTransport(), circuit],
            new Libp2pHostSettings(), runtime, hosts.Loggers);
        circuit.Attach(host);
        hosts.Own(host);
        var identify = hosts.Own(new IdentifyService(host, new IdentifyOptions(), runtime, hosts.Loggers));
        var ping = new PingService(host, new PingOptions(), runtime, hosts.Loggers);
        var relay = hop ? new RelayService(host, relayOptions, runtime, hosts.Loggers) : null;
        var service = dcutr ? hosts.Own(new DcutrService(host, identify, options ?? new DcutrOptions(), runtime, hosts.Loggers)) : null;
        await host.StartAsync([Multiaddr.Parse("/memory/0"), Multiaddr.Parse("/p2p-circuit")], CancellationToken.None);
        return new Node(host, circuit, ping, relay, service);
    }

    /// <summary>Relay R, a provider reserved on R and a requester, both connected to R; NATs as asked.</summary>
    private static async Task<(Node Relay, Node Provider, Node Requester)> SetUpAsync(TestHosts hosts, bool providerNat = true, bool requesterNat = true,
        bool providerDcutr = true, bool requesterDcutr = true)
    {
        var r = await StartAsync(hosts, 0, hop: true, dcutr: false);
        var provider = await StartAsync(hosts, 1, dcutr: providerDcutr);
        var requester = await StartAsync(hosts, 2, dcutr: requesterDcutr);
        if (providerNat)
        {
            hosts.Network.PlaceBehindNat(provider.Listen);
        }
        if (requesterNat)
        {
            hosts.Network.PlaceBehindNat(requester.Listen);
        }
        await provider.Host.ConnectAsync(r.Address, CancellationToken.None);
        await requester.Host.ConnectAsync(r.Address, CancellationToken.None);
        await provider.Circuit.ReserveAsync(r.Host.PeerId, CancellationToken.None);
        return (r, provider, requester);
    }

    private static Multiaddr Via(Node relay, Node target) => Multiaddr.Parse($"{relay.Address}/p2p-circuit/p2p/{target.Host.PeerId}");

    private static Task<HolePunchResult> NextResult(Node node)
    {
        var done = new TaskCompletionSource<HolePunchResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        node.Dcutr!.Finished += (_, result) => done.TrySetResult(result);
        return done.Task;
    }

    /// <summary>The connection <paramref name="a"/> has with <paramref name="b"/> once it is registered there.</summary>
    private static async Task<IConnection> OnlyConnectionAsync(Node a, Node b, TimeProvider time)
    {
        for (var i = 0; i < 50 && Between(a, b).Length == 0; i++)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(100), time);
        }
        return Between(a, b).Single();
    }

    private static IConnection[] Between(Node a, Node b) => a.Host.Connections.Where(c => c.RemotePeer == b.Host.PeerId && !c.IsClosed).ToArray();

    [Test]
    public void BothBehindNat_TheRelayedConnection_IsUpgradedToADirectOne_AndTheRelayedOneIsClosed()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var (r, provider, requester) = await SetUpAsync(hosts);
            // The control: neither NAT lets the other's dial in by itself.
            await AsyncAssert.ThrowsAsync<DialException>(async () => await requester.Host.ConnectAsync(provider.Address, CancellationToken.None));
            await Task.Delay(TimeSpan.FromSeconds(40), d.Clock); // the hole that dial opened in the requester's NAT closes again
            await AsyncAssert.ThrowsAsync<DialException>(async () => await provider.Host.ConnectAsync(requester.Address, CancellationToken.None));
            await Task.Delay(TimeSpan.FromSeconds(40), d.Clock);

            var result = NextResult(provider);
            var relayed = await requester.Host.ConnectAsync(Via(r, provider), CancellationToken.None);
            Assert.That(Libp2pHost.IsRelayed(relayed), Is.True);
            var outcome = await result;

            Assert.That(outcome.Success, Is.True, outcome.Failure);
            Assert.That(outcome.Unilateral, Is.False, "the provider is behind a NAT: only the synchronised dials get through");
            Assert.That(outcome.Attempts, Is.EqualTo(1));
            Assert.That(outcome.Rtt, Is.Not.Null);
            await Task.Delay(TimeSpan.FromSeconds(5), d.Clock);
            Assert.That(Between(requester, provider).Select(Libp2pHost.IsRelayed), Is.EqualTo(new[] { false }), "one direct connection, the relayed one closed");
            Assert.That(Between(provider, requester).Select(Libp2pHost.IsRelayed), Is.EqualTo(new[] { false }));
            Assert.That(r.Relay!.CircuitCount, Is.Zero, "the relay no longer carries the pair");
            var rtts = await requester.Ping.PingAsync(provider.Host.PeerId, 2, CancellationToken.None);
            Assert.That(rtts, Has.Count.EqualTo(2));
            Assert.That(provider.Dcutr!.Counts.Successes, Is.EqualTo(1));
        });
    }

    [Test]
    public void NewStreams_UseTheDirectConnection_AsSoonAsItExists_WhileTheRelayedOneFinishesItsOwn()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var (r, provider, requester) = await SetUpAsync(hosts, providerDcutr: true);
            provider.Dcutr!.AutoUpgrade = false;
            var relayed = await requester.Host.ConnectAsync(Via(r, provider), CancellationToken.None);
            // A stream in flight on the relayed connection (a lease's, say) when the direct one appears.
            await using var inFlight = await relayed.OpenStreamAsync([PingService.ProtocolId], CancellationToken.None);
            var providerSide = await OnlyConnectionAsync(provider, requester, d.Clock);
            var outcome = await provider.Dcutr.UpgradeAsync(providerSide, CancellationToken.None);
            Assert.That(outcome.Success, Is.True, outcome.Failure);

            var next = await requester.Host.NewStreamAsync(provider.Host.PeerId, [PingService.ProtocolId], CancellationToken.None);
            Assert.That(Libp2pHost.IsRelayed(next.Connection), Is.False, "a new stream goes over the direct connection");
            await next.DisposeAsync();
            await Task.Delay(TimeSpan.FromSeconds(10), d.Clock);
            Assert.That(relayed.IsClosed, Is.False, "the relayed connection stays while a stream still runs on it");
            await inFlight.DisposeAsync();
            await Task.Delay(TimeSpan.FromSeconds(5), d.Clock);
            Assert.That(relayed.IsClosed, Is.True, "and closes once that stream is done");
        });
    }

    [Test]
    public void PunchArrivingFirst_AtTheSideThatSpeaksFirst_IsStillUpgradedWithThatSideAsInitiator()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            // The provider is not behind a NAT: the requester's dial on SYNC arrives at its listener before its own dial
            // leaves. The requester dialed as responder, so the provider must speak first on that inbound connection.
            var (r, provider, requester) = await SetUpAsync(hosts, providerNat: false);
            var result = NextResult(provider);
            await requester.Host.ConnectAsync(Via(r, provider), CancellationToken.None);
            var outcome = await result;

            Assert.That(outcome.Success, Is.True, outcome.Failure);
            Assert.That(outcome.Unilateral, Is.False, "the requester is behind a NAT: the provider's unilateral dial failed");
            var direct = Between(provider, requester).Where(c => !Libp2pHost.IsRelayed(c)).ToArray();
            Assert.That(direct, Has.Length.EqualTo(1));
            Assert.That(direct[0].Direction, Is.EqualTo(Direction.Inbound), "the punch arrived as an inbound connection");
            Assert.That(await requester.Ping.PingAsync(provider.Host.PeerId, 1, CancellationToken.None), Has.Count.EqualTo(1));
        });
    }

    [Test]
    public void PublicRequester_IsReachedByTheUnilateralUpgrade()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var (r, provider, requester) = await SetUpAsync(hosts, requesterNat: false);
            var result = NextResult(provider);
            await requester.Host.ConnectAsync(Via(r, provider), CancellationToken.None);
            var outcome = await result;
            Assert.That(outcome is { Success: true, Unilateral: true, Attempts: 0 }, Is.True, outcome.ToString());
        });
    }

    [Test]
    public void PeerWithoutDcutr_StaysOnTheRelay_AndTheUpgradeSaysWhy()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var (r, provider, requester) = await SetUpAsync(hosts, requesterDcutr: false);
            var result = NextResult(provider);
            await requester.Host.ConnectAsync(Via(r, provider), CancellationToken.None);
            var outcome = await result;
            Assert.That(outcome.Success, Is.False);
            Assert.That(outcome.Failure, Does.Contain("does not speak /libp2p/dcutr"));
            Assert.That(Between(requester, provider).Select(Libp2pHost.IsRelayed), Is.EqualTo(new[] { true }), "the relayed connection is kept");
        });
    }

    [Test]
    [Category("Adversarial")]
    public void DcutrStream_OverADirectConnection_IsResetUnread()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var (r, _, requester) = await SetUpAsync(hosts, requesterNat: false);
            var stranger = await StartAsync(hosts, 3, dcutr: false);
            await stranger.Host.ConnectAsync(requester.Address, CancellationToken.None);
            try
            {
                await using var stream = await stranger.Host.NewStreamAsync(requester.Host.PeerId, [DcutrService.ProtocolId], CancellationToken.None);
                await WriteAsync(stream, DcutrPb.HolePunch.Types.Type.Connect, [Multiaddr.Parse("/memory/999")]);
                Assert.That(await EndsWithoutAnswerAsync(stream), Is.True);
            }
            catch (StreamResetException)
            {
                // reset before the negotiation's answer even left: as good
            }
            Assert.That(requester.Dcutr!.Counts.Refused, Is.EqualTo(1));
            Assert.That(requester.Dcutr.DialsStarted, Is.Zero);
        });
    }

    [Test]
    [Category("Adversarial")]
    public void MalformedOversizedOrOutOfOrderMessages_ResetTheStream_AndAnHonestUpgradeStillWorks()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            // The attacker is the provider (the relayed connection's inbound side), with no DCUtR of its own.
            var (r, attacker, victim) = await SetUpAsync(hosts, providerDcutr: false);
            var relayed = await victim.Host.ConnectAsync(Via(r, attacker), CancellationToken.None);
            var attackerSide = await OnlyConnectionAsync(attacker, victim, d.Clock);

            await using (var stream = await attackerSide.OpenStreamAsync([DcutrService.ProtocolId], CancellationToken.None))
            {
                var prefix = new ArrayBufferWriter<byte>();
                Varint.Write(prefix, 1UL << 30); // 1 GiB announced: refused before anything is allocated
                await stream.Output.WriteAsync(prefix.WrittenMemory, CancellationToken.None);
                Assert.That(await EndsWithoutAnswerAsync(stream), Is.True);
            }
            await using (var stream = await attackerSide.OpenStreamAsync([DcutrService.ProtocolId], CancellationToken.None))
            {
                await LengthPrefixed.WriteAsync(stream.Output, new byte[] { 0xff, 0xff, 0xff }, CancellationToken.None);
                Assert.That(await EndsWithoutAnswerAsync(stream), Is.True);
            }
            await using (var stream = await attackerSide.OpenStreamAsync([DcutrService.ProtocolId], CancellationToken.None))
            {
                await WriteAsync(stream, DcutrPb.HolePunch.Types.Type.Sync, []); // SYNC before CONNECT
                Assert.That(await EndsWithoutAnswerAsync(stream), Is.True);
            }
            Assert.That(relayed.IsClosed, Is.False, "a bad message costs its stream, not the connection");
            Assert.That(victim.Host.DirectConnectionTo(attacker.Host.PeerId), Is.Null, "and nothing was dialed");

            // The victim still answers an honest round on a fresh stream.
            await using var honest = await attackerSide.OpenStreamAsync([DcutrService.ProtocolId], CancellationToken.None);
            await WriteAsync(honest, DcutrPb.HolePunch.Types.Type.Connect, [attacker.Listen]);
            var bytes = await LengthPrefixed.ReadAsync(honest.Input, 4096, "test", CancellationToken.None);
            var answer = DcutrPb.HolePunch.Parser.ParseFrom(bytes);
            Assert.That(answer.Type, Is.EqualTo(DcutrPb.HolePunch.Types.Type.Connect));
            Assert.That(answer.ObsAddrs.Select(a => Multiaddr.FromBytes(a.Span)), Does.Contain(victim.Listen), "the relay observed the victim's address");
        });
    }

    [Test]
    [Category("Adversarial")]
    public void AFloodOfDcutrStreams_IsCutAtTheRate_AndAConnectWithManyAddressesDialsAtMostTheLimit()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var (r, attacker, victim) = await SetUpAsync(hosts, providerDcutr: false);
            await victim.Host.ConnectAsync(Via(r, attacker), CancellationToken.None);
            var attackerSide = await OnlyConnectionAsync(attacker, victim, d.Clock);
            var answered = 0;
            for (var i = 0; i < 10; i++)
            {
                try
                {
                    await using var stream = await attackerSide.OpenStreamAsync([DcutrService.ProtocolId], CancellationToken.None);
                    // 200 addresses nobody listens on (the message stays under 4 KiB).
                    var many = Enumerable.Range(0, 200).Select(n => Multiaddr.Parse($"/memory/{5000 + n}")).ToArray();
                    await WriteAsync(stream, DcutrPb.HolePunch.Types.Type.Connect, many);
                    if (await LengthPrefixed.ReadAsync(stream.Input, 4096, "test", CancellationToken.None) is not null)
                    {
                        answered++;
                        await WriteAsync(stream, DcutrPb.HolePunch.Types.Type.Sync, []);
                    }
                    await stream.Output.CompleteAsync();
                }
                catch (Exception e) when (Failures.Classify(e, CancellationToken.None).Kind == FailureKind.PeerGone)
                {
                    // reset unread
                }
                await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
            }
            Assert.That(answered, Is.EqualTo(new DcutrOptions().MaxStreamsPerPeer), "streams over the per-minute rate are reset unread");
            Assert.That(victim.Dcutr!.Counts.Refused, Is.EqualTo(10 - answered));
            Assert.That(victim.Dcutr.DialsStarted, Is.EqualTo(answered * new DcutrOptions().MaxAddresses), "at most 8 of the 200 addresses are dialed per SYNC");
            await Task.Delay(TimeSpan.FromMinutes(1), d.Clock);
            await using var later = await attackerSide.OpenStreamAsync([DcutrService.ProtocolId], CancellationToken.None);
            await WriteAsync(later, DcutrPb.HolePunch.Types.Type.Connect, [attacker.Listen]);
            Assert.That(await LengthPrefixed.ReadAsync(later.Input, 4096, "test", CancellationToken.None), Is.Not.Null, "served again after the window");
        });
    }

    [Test]
    public void Options_OutOfRange_AreReportedWithTheirKeys()
    {
        var problems = new DcutrOptions { Attempts = 0, MaxMessageSize = 10, MaxAddresses = 1000 }.Validate();
        Assert.That(problems, Has.Some.StartsWith("'dcutr:attempts' is 0"));
        Assert.That(problems, Has.Some.StartsWith("'dcutr:maxMessageSize' is 10"));
        Assert.That(problems, Has.Some.StartsWith("'dcutr:maxAddresses' is 1000"));
        Assert.That(new DcutrOptions().Validate(), Is.Empty);
    }

    private static async Task WriteAsync(IStream stream, DcutrPb.HolePunch.Types.Type type, IEnumerable<Multiaddr> addresses)
    {
        var message = new DcutrPb.HolePunch { Type = type };
        message.ObsAddrs.AddRange(addresses.Select(a => ByteString.CopyFrom(a.ToBytes())));
        await LengthPrefixed.WriteAsync(stream.Output, message.ToByteArray(), CancellationToken.None);
    }

    /// <summary>True when the stream ends or is reset with no message from the other side.</summary>
    private static async Task<bool> EndsWithoutAnswerAsync(IStream stream)
    {
        try
        {
            return await LengthPrefixed.ReadAsync(stream.Input, 4096, "test", CancellationToken.None) is null;
        }
        catch (Exception e) when (Failures.Classify(e, CancellationToken.None).Kind == FailureKind.PeerGone)
        {
            return true;
        }
    }
}
