using Potluck.Node.Hosting;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
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
/// Potluck nodes on one in-memory network, each built by <see cref="PotluckNodeBuilder"/>; keys and seeds from a seeded
/// Random. On a <see cref="VirtualTimeDriver"/> (the usual case) every node runs on the driver's clock and event loop with
/// replayable randomness, and the test moves time by awaiting (<c>Task.Delay(span, nodes.Time)</c>); without one the nodes
/// run on the thread pool on a <see cref="VirtualClock"/> that only the test moves (for tests that also use real sockets).
/// </summary>
internal sealed class TestNodes : IAsyncDisposable
{
    private readonly List<PotluckNode> _nodes = [];
    private readonly List<string> _dirs = [];
    private readonly Random _random;
    private readonly VirtualTimeDriver? _driver;

    public TestNodes(VirtualTimeDriver driver, int seed)
    {
        _driver = driver;
        _random = new Random(seed);
        Time = driver.Clock;
        Network = new SimulatedNetwork(driver.Clock, pipes: driver.Loop.PipeScheduler);
    }

    /// <summary>Nodes on the thread pool and a clock nobody moves but the test.</summary>
    public TestNodes(int seed = 1)
    {
        _random = new Random(seed);
        Time = new VirtualClock();
        Network = new SimulatedNetwork(Time);
    }

    public VirtualClock Time { get; }

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
    public PotluckNodeBuilder Builder(TestNodeOptions options)
    {
        var builder = PotluckNode.CreateBuilder().UseSimulatedNetwork(Network);
        builder = _driver is not null ? builder.UseRuntime(_driver.CreateRuntime(_random.Next())) : builder.UseTime(Time).UseSeed(_random.Next());
        return builder
            .UseKey(options.Key)
            .UseLoggerFactory(Potluck.Tests.TestLogging.Factory)
            .Configure(o => o with
            {
                Listen = options.Listen,
                Bootstrap = options.Bootstrap,
                DataDir = options.DataDir,
                Topics = options.Topics,
                Kademlia = options.Kademlia,
                Discovery = options.Discovery,
            });
    }

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
