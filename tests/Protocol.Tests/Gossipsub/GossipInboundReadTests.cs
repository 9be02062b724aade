using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Tests.Host;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// A peer's long-lived inbound gossip stream is read without a token: no registration on the router's stop token (nor a
/// linked source) for the stream's life, and the stream's own end (a closed connection, a closed session) ends the read.
/// </summary>
public class GossipInboundReadTests
{
    private const string Topic = "/potluck/test/1";

    [Test]
    public void AnIdleMesh_KeepsNoRegistrationOnTheRoutersStopToken_AndClosedConnectionsEndTheReads() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var net = await GossipHostNetwork.StartAsync(d, 4, 3, seed: 7, ct);
        foreach (var s in net.Services)
        {
            s.Subscribe(Topic);
        }
        await net.WaitForSubscriptionsAsync(Topic, ct);
        await net.AdvanceHeartbeatsAsync(3);
        await d.IdleAsync();
        for (var i = 0; i < 4; i++)
        {
            var host = net.Nodes[i].Host;
            Assert.That(net.Services[i].InboundStreams, Is.EqualTo(host.Connections.Count).And.GreaterThan(0), $"node {i}: one inbound stream per peer, parked in a read");
            Assert.That(Registrations.Live(host.StopTokens.Router), Is.Zero, $"node {i}: the parked reads keep no registration on the router's stop token");
        }

        var zero = net.Nodes[0].Host;
        foreach (var peer in zero.Connections.Select(c => c.RemotePeer).Distinct().ToArray())
        {
            await zero.DisconnectAsync(peer);
        }
        await d.IdleAsync();
        Assert.That(net.Services[0].InboundStreams, Is.Zero, "node 0's reads ended with their connections");
        for (var i = 1; i < 4; i++)
        {
            Assert.That(net.Services[i].InboundStreams, Is.EqualTo(net.Nodes[i].Host.Connections.Count), $"node {i}: the stream from node 0 is no longer read");
        }
    });

    [Test]
    public void DisposingTheService_EndsItsParkedReads_WhileTheConnectionsStayOpen() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var net = await GossipHostNetwork.StartAsync(d, 3, 2, seed: 8, ct);
        await net.AdvanceHeartbeatsAsync(2);
        await d.IdleAsync();
        var host = net.Nodes[1].Host;
        var inbound = net.Services[1].InboundStreams;
        Assert.That(inbound, Is.GreaterThan(0));
        var pieces = host.BackgroundPieces;

        await net.Services[1].DisposeAsync();
        await net.AdvanceHeartbeatsAsync(2); // the peers' retries find no handler any more
        await d.IdleAsync();
        Assert.That(host.Connections, Is.Not.Empty, "the connections are still open");
        Assert.That(host.BackgroundPieces, Is.EqualTo(pieces - inbound), "each inbound handler ended with its reset stream, without a token");
    });

    [Test]
    public void TheInboundReadLoop_KeepsNoClosureForTheStreamsLife()
    {
        // The read loop is parked for as long as the peer's stream lives: a lambda in it that captured its locals made the
        // compiler hoist them into a closure object allocated when the loop starts and kept by its state machine (~0.1 KiB
        // per peer). The lambdas live in helpers now; the state machine holds no closure.
        var machine = typeof(GossipsubService).GetNestedTypes(System.Reflection.BindingFlags.NonPublic)
            .Single(t => t.Name.StartsWith("<HandleInboundAsync>", StringComparison.Ordinal));
        var closures = machine.GetFields(System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.NonPublic)
            .Where(f => f.FieldType.Name.Contains("DisplayClass", StringComparison.Ordinal))
            .Select(f => f.Name);
        Assert.That(closures, Is.Empty);
    }
}
