using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport.Memory;

namespace Potluck.Protocol.Tests.Host;

/// <summary>Whole hosts (Noise, Yamux, identify, ping, gossipsub, kademlia) under the one virtual-time driver.</summary>
public class VirtualTimeHostTests
{
    [Test]
    public void HostPair_WithEveryProtocol_RunsOnTheLoop_WithZeroEscapes_AndReplaysTheSameTrace()
    {
        var first = Run(seed: 7);
        var second = Run(seed: 7);

        Assert.That(first.Escapes + second.Escapes, Is.Zero, "nothing ran on the thread pool");
        Assert.That(second.Trace, Is.EqualTo(first.Trace), "the same seed replays the same run");
        Assert.That(second.ItemsRun, Is.EqualTo(first.ItemsRun), "the same work items, to the count");
        // With 10 ms each way: the dial costs two flights (lazy /noise, muxer agreed inside Noise), identify one more
        // round trip after the dialer's third Noise message, each ping a round trip; the first heartbeat after the
        // subscriptions (at 100 ms, then every second) meshes; a publish is one flight. The bootstrap is its self-lookup
        // alone (40 ms); its bucket refreshes (80 ms more before 2026-12-04) wait for their slots in the refresh interval.
        Assert.That(first.Trace, Is.EqualTo(new[]
        {
            "20 connected 1",
            "50 identified 8 protocols",
            "130 pinged 20, 20, 20 ms",
            "170 bootstrapped 1",
            "210 closest 1",
            "1100 meshed",
            "1110 delivered hello",
            "181110 after 3 min: 1 connection(s), mesh 1",
        }));
    }

    private sealed record Outcome(IReadOnlyList<string> Trace, long Escapes, long ItemsRun);

    private static Outcome Run(int seed)
    {
        var driver = new VirtualTimeDriver();
        var trace = new List<string>();
        driver.RunUntilComplete(async d =>
        {
            void Log(string what) => trace.Add($"{d.Clock.Elapsed.TotalMilliseconds:0.###} {what}");
            await using var hosts = new TestHosts(d, seed);
            var a = await hosts.StartAsync();
            var b = await hosts.StartAsync();
            var gossipA = hosts.Own(new GossipsubService(a.Host, new GossipsubOptions(), a.Runtime, NullLoggerFactory.Instance));
            var gossipB = hosts.Own(new GossipsubService(b.Host, new GossipsubOptions(), b.Runtime, NullLoggerFactory.Instance));
            var dhtA = hosts.Own(new KademliaService(a.Host, new KademliaOptions(), a.Runtime, NullLoggerFactory.Instance));
            var dhtB = hosts.Own(new KademliaService(b.Host, new KademliaOptions(), b.Runtime, NullLoggerFactory.Instance));
            dhtA.Start();
            dhtB.Start();
            hosts.Network.SetLink(a.Host.ListenAddresses[0], b.Host.ListenAddresses[0], new LinkConditions { Latency = TimeSpan.FromMilliseconds(10) });

            var connection = await a.Host.ConnectAsync(b.Address, CancellationToken.None);
            Log($"connected {connection.Id}");
            var identified = await a.Identify.WhenIdentifiedAsync(b.Host.PeerId, CancellationToken.None);
            await b.Identify.WhenIdentifiedAsync(a.Host.PeerId, CancellationToken.None);
            Log($"identified {identified.Protocols.Count} protocols");

            var rtts = await a.Ping.PingAsync(b.Host.PeerId, 3, CancellationToken.None);
            Log($"pinged {string.Join(", ", rtts.Select(r => r.TotalMilliseconds))} ms");

            Log($"bootstrapped {await dhtB.BootstrapAsync([a.Address], CancellationToken.None)}");
            var closest = await dhtA.GetClosestPeersAsync("key"u8.ToArray(), CancellationToken.None);
            Log($"closest {closest.Count}");

            using var subA = gossipA.Subscribe("topic");
            using var subB = gossipB.Subscribe("topic");
            await gossipA.WaitUntilAsync(g => g.MeshPeers("topic").Count == 1, CancellationToken.None);
            await gossipB.WaitUntilAsync(g => g.MeshPeers("topic").Count == 1, CancellationToken.None);
            Log("meshed");
            await gossipA.PublishAsync("topic", "hello"u8.ToArray());
            var message = await subB.Messages.ReadAsync();
            Log($"delivered {Encoding.UTF8.GetString(message.Data.Span)}");

            await Task.Delay(TimeSpan.FromMinutes(3), d.Clock);
            Log($"after 3 min: {a.Host.Connections.Count} connection(s), mesh {gossipA.MeshPeers("topic").Count}");
        });
        return new Outcome(trace, driver.Loop.Escapes, driver.Loop.ItemsRun);
    }
}
