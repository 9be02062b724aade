using Microsoft.Extensions.Time.Testing;
using Potluck.Node.Hosting;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Transport.Memory;

namespace Potluck.Node.Tests;

/// <summary>What a test node is given: its key and the settings tests vary (the rest are <see cref="PotluckOptions"/>' defaults).</summary>
internal sealed record TestNodeOptions
{
    public required PrivateKey Key { get; init; }

    public IReadOnlyList<Multiaddr> Listen { get; init; } = [];

    public IReadOnlyList<Multiaddr> Bootstrap { get; init; } = [];

    public string? DataDir { get; init; }

    public IReadOnlyList<string> Topics { get; init; } = [];

    public KademliaOptions Kademlia { get; init; } = new();

    public DiscoveryOptions Discovery { get; init; } = new();
}

/// <summary>
/// Potluck nodes on one in-memory network with virtual time, each built by <see cref="PotluckNodeBuilder"/>; keys and
/// protocol randomness from a seeded Random.
/// </summary>
internal sealed class TestNodes : IAsyncDisposable
{
    private readonly List<PotluckNode> _nodes = [];
    private readonly List<string> _dirs = [];
    private readonly Random _random;

    public TestNodes(int seed = 1)
    {
        _random = new Random(seed);
        Time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        Network = new SimulatedNetwork(Time);
    }

    public FakeTimeProvider Time { get; }

    public SimulatedNetwork Network { get; }

    public PrivateKey NewKey() => PrivateKey.FromRandom(_random);

    /// <summary>A fresh temporary data directory, deleted when the fixture is disposed.</summary>
    public string NewDataDir()
    {
        var dir = Path.Combine(Path.GetTempPath(), "potluck-node-" + Guid.NewGuid().ToString("N"));
        _dirs.Add(dir);
        return dir;
    }

    /// <summary>Options for a node listening on <paramref name="listen"/> (default: a fresh /memory address).</summary>
    public TestNodeOptions Options(PrivateKey? key = null, string listen = "/memory/0") => new()
    {
        Key = key ?? NewKey(),
        Listen = [Multiaddr.Parse(listen)],
    };

    /// <summary>A builder for a node on this network and clock, as <paramref name="options"/> say.</summary>
    public PotluckNodeBuilder Builder(TestNodeOptions options) => PotluckNode.CreateBuilder()
        .UseSimulatedNetwork(Network)
        .UseTime(Time)
        .UseSeed(_random.Next())
        .UseKey(options.Key)
        .Configure(o => o with
        {
            Listen = options.Listen,
            Bootstrap = options.Bootstrap,
            DataDir = options.DataDir,
            Topics = options.Topics,
            Kademlia = options.Kademlia,
            Discovery = options.Discovery,
        });

    public async Task<PotluckNode> StartAsync(TestNodeOptions options)
    {
        var node = await Builder(options).StartAsync();
        _nodes.Add(node);
        return node;
    }

    /// <summary>Stops a node before the fixture ends (as a process exit would); it saves its state.</summary>
    public async Task StopAsync(PotluckNode node)
    {
        _nodes.Remove(node);
        await node.DisposeAsync();
    }

    public async ValueTask DisposeAsync()
    {
        for (var i = _nodes.Count - 1; i >= 0; i--)
        {
            await _nodes[i].DisposeAsync();
        }
        foreach (var dir in _dirs)
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, true);
            }
        }
    }
}
