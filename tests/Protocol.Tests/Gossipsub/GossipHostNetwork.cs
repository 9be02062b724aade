using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Tests.Host;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// Gossipsub services on real hosts (Noise, Yamux) over one SimulatedNetwork under a <see cref="VirtualTimeDriver"/>:
/// a seeded topology where each node dials <c>degree</c> others; waits are on conditions (the driver moves the clock
/// to the next heartbeat whenever nothing else can happen), never on the wall clock.
/// </summary>
internal sealed class GossipHostNetwork : IAsyncDisposable
{
    private readonly TestHosts _hosts;
    private readonly List<GossipsubService> _services = [];

    private GossipHostNetwork(TestHosts hosts, int seed)
    {
        _hosts = hosts;
        Seed = seed;
    }

    public int Seed { get; }

    public List<TestHosts.TestNode> Nodes { get; } = [];

    public IReadOnlyList<GossipsubService> Services => _services;

    /// <summary>Distinct neighbours of each node.</summary>
    public List<HashSet<PeerId>> Neighbours { get; } = [];

    public TimeSpan Heartbeat { get; private set; }

    /// <summary>The simulated network under the hosts (partitions, link conditions).</summary>
    public Potluck.Protocol.Transport.Memory.SimulatedNetwork Network => _hosts.Network;

    public static async Task<GossipHostNetwork> StartAsync(VirtualTimeDriver driver, int nodes, int degree, int seed, CancellationToken ct,
        Func<GossipsubOptions, GossipsubOptions>? configure = null)
    {
        var hosts = new TestHosts(driver, seed);
        var net = new GossipHostNetwork(hosts, seed);
        var random = new Random(seed);
        for (var i = 0; i < nodes; i++)
        {
            var node = await hosts.StartAsync();
            var options = configure?.Invoke(new GossipsubOptions()) ?? new GossipsubOptions();
            net.Heartbeat = options.HeartbeatInterval;
            net.Nodes.Add(node);
            net._services.Add(new GossipsubService(node.Host, options, node.Runtime, hosts.Loggers));
            net.Neighbours.Add([]);
        }
        for (var i = 0; i < nodes; i++)
        {
            var dialed = 0;
            for (var tries = 0; dialed < degree && tries < degree * 20; tries++)
            {
                var j = random.Next(nodes);
                if (j == i || net.Neighbours[i].Contains(net.Nodes[j].Host.PeerId))
                {
                    continue;
                }
                dialed++;
                await net.Nodes[i].Host.ConnectAsync(net.Nodes[j].Address, ct);
                net.Neighbours[i].Add(net.Nodes[j].Host.PeerId);
                net.Neighbours[j].Add(net.Nodes[i].Host.PeerId);
            }
        }
        return net;
    }

    /// <summary>Waits until every node knows all its neighbours' subscriptions to the topic.</summary>
    public async Task WaitForSubscriptionsAsync(string topic, CancellationToken ct)
    {
        for (var i = 0; i < _services.Count; i++)
        {
            var expected = Neighbours[i].Count;
            await _services[i].WaitUntilAsync(s => s.Peers(topic).Count >= expected, ct);
        }
    }

    /// <summary>Lets <paramref name="count"/> heartbeats of virtual time pass (everything due meanwhile runs).</summary>
    public Task AdvanceHeartbeatsAsync(int count) => Task.Delay(Heartbeat * count, _hosts.Time);

    /// <summary>Waits until every node's mesh has at least min(D_lo, neighbours) peers.</summary>
    public async Task WaitForMeshAsync(string topic, int dLow, CancellationToken ct)
    {
        for (var i = 0; i < _services.Count; i++)
        {
            var expected = Math.Min(dLow, Neighbours[i].Count);
            await _services[i].WaitUntilAsync(s => s.MeshPeers(topic).Count >= expected, ct);
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var s in _services)
        {
            await s.DisposeAsync();
        }
        await _hosts.DisposeAsync();
    }
}
