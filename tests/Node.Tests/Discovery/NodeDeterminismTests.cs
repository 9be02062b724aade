using System.Security.Cryptography;
using System.Text;
using Potluck.Protocol.Host;
using Potluck.Protocol.Runtime;

namespace Potluck.Node.Tests.Discovery;

/// <summary>Whole nodes on the virtual-time driver replay exactly from a seed: every event at the same virtual instant.</summary>
public class NodeDeterminismTests
{
    /// <summary>Six nodes join through one, gossip on a topic, and one restarts; returns a hash of everything that happened, when.</summary>
    private static (string Hash, long Items, long Timers) Scenario(int seed)
    {
        var trace = new StringBuilder();
        long items = 0, timers = 0;
        VirtualTimeDriver.Run(async d =>
        {
            await using var nodes = new TestNodes(d, seed);
            void Record(string what) => trace.Append(d.Clock.Elapsed.Ticks).Append(' ').Append(what).Append('\n');
            var hub = await nodes.StartAsync(nodes.Options());
            var joined = new List<PotluckNode>();
            for (var i = 0; i < 5; i++)
            {
                var node = await nodes.StartAsync(nodes.Options() with { Bootstrap = [hub.FullAddresses[0]] });
                node.Host.Connected += c => Record($"{node.PeerId} connected {c.RemotePeer} {c.Direction}");
                await node.Joined;
                joined.Add(node);
            }
            var subscriptions = joined.Select(n => (Node: n, Sub: n.JoinTopic("t"))).ToList();
            await Task.Delay(TimeSpan.FromSeconds(5), nodes.Time); // meshes form over a few heartbeats
            for (var m = 0; m < 3; m++)
            {
                await joined[m].Gossip.PublishAsync("t", Encoding.UTF8.GetBytes($"message {m}"), CancellationToken.None);
                await Task.Delay(TimeSpan.FromSeconds(1), nodes.Time);
            }
            foreach (var (node, sub) in subscriptions)
            {
                while (sub.Messages.TryRead(out var message))
                {
                    Record($"{node.PeerId} got '{Encoding.UTF8.GetString(message.Data.Span)}' from {message.ReceivedFrom}");
                }
                sub.Dispose();
            }
            foreach (var node in joined)
            {
                Record($"{node.PeerId} table {string.Join(",", node.Dht.RoutingTablePeers().Order())}");
            }
            items = d.Loop.ItemsRun;
            timers = d.Clock.TimersFired;
        });
        return (Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(trace.ToString()))), items, timers);
    }

    [Test]
    public void SameSeed_SameRun_ToTheLastWorkItem_OtherSeed_OtherRun()
    {
        var first = Scenario(31);
        var second = Scenario(31);
        var other = Scenario(32);

        Assert.That(second, Is.EqualTo(first), "the same seed replays the same events at the same virtual times, with the same work");
        Assert.That(other.Hash, Is.Not.EqualTo(first.Hash));
    }
}
