using Microsoft.Extensions.DependencyInjection;
using Potluck.Node.Hosting;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Ping;
using Potluck.Protocol.Relay;
using Potluck.Protocol.Runtime;

namespace Potluck.Node.Tests.Relay;

/// <summary>Circuit relay v2 as the composition root wires it: options, hop on a relay node, a relayed connection between two nodes.</summary>
public class NodeRelayTests
{
    [Test]
    public void NodeWithoutListenAddress_IsReachedThroughARelayNode() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var nodes = new TestNodes(d, seed: 13);
        var relay = await nodes.Builder(nodes.Options()).Configure(o => o with { Relay = new RelayOptions { Hop = true } }).StartAsync();
        await using var relayOwned = relay;
        // A listens on nothing but /p2p-circuit: it can only be reached through R.
        var a = await nodes.Builder(nodes.Options() with { Listen = [] })
            .Configure(o => o with { Relay = new RelayOptions { AcceptRelayed = true } }).StartAsync();
        await using var aOwned = a;
        var b = await nodes.StartAsync(nodes.Options() with { Listen = [] });

        Assert.That(a.Host.ListenAddresses, Is.Empty, "the relay listener's bare /p2p-circuit is nobody's address");
        Assert.That(relay.Host.Protocols, Does.Contain(RelayService.HopProtocolId));
        Assert.That(b.Host.Protocols, Does.Not.Contain(RelayService.HopProtocolId), "hop is opt-in");
        await a.Host.ConnectAsync(relay.FullAddresses[0], ct);
        var reservation = await a.Services.GetRequiredService<CircuitTransport>().ReserveAsync(relay.PeerId, ct);

        var circuit = reservation.CircuitAddresses[0].Encapsulate(Multiaddr.Parse($"/p2p/{a.PeerId}"));
        var connection = await b.Host.ConnectAsync(circuit, ct);
        Assert.That(connection.RemotePeer, Is.EqualTo(a.PeerId));
        var rtts = await b.Services.GetRequiredService<PingService>().PingAsync(a.PeerId, 2, ct);
        Assert.That(rtts, Has.Count.EqualTo(2));
        Assert.That(relay.Services.GetRequiredService<RelayService>().CircuitCount, Is.EqualTo(1));
    });

    [Test]
    public void RelayOptions_OutOfRange_AreReportedWithTheirKeys()
    {
        var problems = PotluckOptionsValidator.Validate(new PotluckOptions
        {
            Relay = new RelayOptions { MaxReservations = 0, ConnectionData = -1, MaxMessageSize = 10 },
        });
        Assert.That(problems, Has.Some.StartsWith("'relay:maxReservations' is 0"));
        Assert.That(problems, Has.Some.StartsWith("'relay:connectionData' is -1"));
        Assert.That(problems, Has.Some.StartsWith("'relay:maxMessageSize' is 10"));
        Assert.That(PotluckOptionsValidator.Validate(new PotluckOptions()), Is.Empty, "the defaults are valid");
    }
}

/// <summary>DCUtR as the composition root wires it: a static relay reservation, and a relayed connection that becomes direct.</summary>
public class NodeDcutrTests
{
    [Test]
    public void NodesBehindNats_AReservationFromConfiguration_AndTheRelayedConnectionBecomesDirect() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var nodes = new TestNodes(d, seed: 31);
        var relay = await nodes.Builder(nodes.Options()).Configure(o => o with { Relay = new RelayOptions { Hop = true } }).StartAsync();
        await using var relayOwned = relay;
        var relayAddress = relay.FullAddresses[0];
        var provider = await nodes.Builder(nodes.Options())
            .Configure(o => o with { Relay = new RelayOptions { AcceptRelayed = true, StaticRelays = [relayAddress] } }).StartAsync();
        await using var providerOwned = provider;
        var requester = await nodes.StartAsync(nodes.Options());
        nodes.Network.PlaceBehindNat(provider.Host.ListenAddresses[0]);
        nodes.Network.PlaceBehindNat(requester.Host.ListenAddresses[0]);

        var circuits = provider.Services.GetRequiredService<CircuitTransport>();
        for (var i = 0; i < 20 && circuits.Reservations.Count == 0; i++)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(500), nodes.Time);
        }
        Assert.That(circuits.Reservations.Select(r => r.Relay), Is.EqualTo(new[] { relay.PeerId }), "relay:staticRelays reserved at start");

        await requester.Host.ConnectAsync(relayAddress, ct);
        var relayed = await requester.Host.ConnectAsync(Multiaddr.Parse($"{relayAddress}/p2p-circuit/p2p/{provider.PeerId}"), ct);
        Assert.That(Potluck.Protocol.Host.Libp2pHost.IsRelayed(relayed), Is.True);
        for (var i = 0; i < 60 && !relayed.IsClosed; i++)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(500), nodes.Time);
        }
        Assert.That(requester.Host.DirectConnectionTo(provider.PeerId), Is.Not.Null, "DCUtR made a direct connection through both NATs");
        Assert.That(relayed.IsClosed, Is.True, "and closed the relayed one");
        Assert.That(provider.Services.GetRequiredService<Potluck.Protocol.Dcutr.DcutrService>().Counts.Successes, Is.EqualTo(1));
        var rtts = await requester.Services.GetRequiredService<PingService>().PingAsync(provider.PeerId, 1, ct);
        Assert.That(rtts, Has.Count.EqualTo(1));
    });

    [Test]
    public void DcutrOptions_OutOfRange_AndStaticRelaysWithoutAPeerId_AreReportedWithTheirKeys()
    {
        var problems = PotluckOptionsValidator.Validate(new PotluckOptions
        {
            Dcutr = new Potluck.Protocol.Dcutr.DcutrOptions { Attempts = 0 },
            Relay = new RelayOptions { AcceptRelayed = true, StaticRelays = [Multiaddr.Parse("/ip4/198.51.100.2/tcp/4100")] },
        });
        Assert.That(problems, Has.Some.StartsWith("'dcutr:attempts' is 0"));
        Assert.That(problems, Has.Some.StartsWith("'relay:staticRelays:0' is /ip4/198.51.100.2/tcp/4100"));
    }
}
