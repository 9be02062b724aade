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
