using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Perf;
using Potluck.Protocol.Ping;
using Potluck.Protocol.Pnet;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport.Memory;

namespace Potluck.Tests;

/// <summary>
/// Hosts (Protocol and Scheduler tests) on one simulated network under a <see cref="VirtualTimeDriver"/>: every node's runtime runs on the driver's
/// clock and event loop, the network's pipes on the loop's scheduler, and keys and protocol randomness come from the
/// seed. Use inside <c>VirtualTimeDriver.Run(async d => { await using var hosts = new TestHosts(d); … })</c>.
/// </summary>
internal sealed class TestHosts : IAsyncDisposable
{
    private readonly List<IAsyncDisposable> _owned = [];
    private readonly Random _random;
    private readonly int _seed;
    private int _started;

    public TestHosts(VirtualTimeDriver driver, int seed = 1, ILoggerFactory? loggers = null)
    {
        Driver = driver;
        _seed = seed;
        _random = new Random(seed);
        Network = new SimulatedNetwork(driver.Clock, pipes: driver.Loop.PipeScheduler);
        Loggers = loggers ?? DefaultLoggers;
    }

    /// <summary>Silent unless POTLUCK_TEST_LOG names a level (e.g. debug), then to the console.</summary>
    public static ILoggerFactory DefaultLoggers { get; } =
        Enum.TryParse<LogLevel>(Environment.GetEnvironmentVariable("POTLUCK_TEST_LOG"), true, out var level)
            ? LoggerFactory.Create(b => b.SetMinimumLevel(level).AddSimpleConsole())
            : NullLoggerFactory.Instance;

    public ILoggerFactory Loggers { get; }

    public VirtualTimeDriver Driver { get; }

    public VirtualClock Time => Driver.Clock;

    public SimulatedNetwork Network { get; }

    public sealed record TestNode(Libp2pHost Host, IdentifyService Identify, PingService Ping, PerfService Perf, NodeRuntime Runtime)
    {
        public Multiaddr Address => Host.ListenAddresses[0].WithPeer(Host.PeerId);
    }

    /// <summary>The runtime of the next node: the driver's clock and loop, randomness from the seed and the node's index.</summary>
    public NodeRuntime NextRuntime() => Driver.CreateRuntime(_seed * 1000L + _started++);

    /// <summary>Something to dispose with the hosts (after them: last added, first disposed).</summary>
    public T Own<T>(T disposable) where T : IAsyncDisposable
    {
        _owned.Add(disposable);
        return disposable;
    }

    public async Task<TestNode> StartAsync(Func<HostOptions, HostOptions>? configure = null, SwarmKey? swarmKey = null, bool listen = true,
        Func<Libp2pHostSettings, Libp2pHostSettings>? configureStack = null, PrivateKey? key = null)
    {
        var settings = new Libp2pHostSettings { SwarmKey = swarmKey };
        settings = settings with { Host = configure?.Invoke(settings.Host) ?? settings.Host };
        settings = configureStack?.Invoke(settings) ?? settings;
        var runtime = NextRuntime();
        var host = Libp2pHost.Create(key ?? PrivateKey.FromRandom(_random), [Network.CreateTransport()], settings, runtime, Loggers);
        var identify = new IdentifyService(host, new IdentifyOptions(), runtime, Loggers);
        var node = new TestNode(host, identify, new PingService(host, new PingOptions(), runtime, Loggers),
            new PerfService(host, new PerfOptions(), runtime, Loggers), runtime);
        _owned.Add(identify);
        _owned.Add(host);
        await host.StartAsync(listen ? [Multiaddr.Parse("/memory/0")] : [], CancellationToken.None);
        return node;
    }

    public async ValueTask DisposeAsync()
    {
        for (var i = _owned.Count - 1; i >= 0; i--)
        {
            await _owned[i].DisposeAsync();
        }
    }
}
