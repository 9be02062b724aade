using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Perf;
using Potluck.Protocol.Ping;
using Potluck.Protocol.Pnet;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport.Memory;

namespace Potluck.Protocol.Tests.Host;

/// <summary>Hosts on one simulated network with virtual time; keys come from a seeded Random.</summary>
internal sealed class TestHosts : IAsyncDisposable
{
    private readonly List<IAsyncDisposable> _owned = [];
    private readonly Random _random;

    public TestHosts(int seed = 1)
    {
        _random = new Random(seed);
        Time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        Network = new SimulatedNetwork(Time);
        _seed = seed;
    }

    private readonly int _seed;
    private int _started;

    /// <summary>Silent unless POTLUCK_TEST_LOG names a level (e.g. debug), then to the console.</summary>
    public static ILoggerFactory Loggers { get; } =
        Enum.TryParse<LogLevel>(Environment.GetEnvironmentVariable("POTLUCK_TEST_LOG"), true, out var level)
            ? LoggerFactory.Create(b => b.SetMinimumLevel(level).AddSimpleConsole())
            : NullLoggerFactory.Instance;

    public FakeTimeProvider Time { get; }

    public SimulatedNetwork Network { get; }

    public sealed record TestNode(Libp2pHost Host, IdentifyService Identify, PingService Ping, PerfService Perf, NodeRuntime Runtime)
    {
        public Multiaddr Address => Host.ListenAddresses[0].WithPeer(Host.PeerId);
    }

    /// <summary>A runtime on this network's clock for the next node, with protocol randomness from the seed.</summary>
    public NodeRuntime NextRuntime() => NodeRuntime.WithTime(Time, _seed * 1000L + _started++);

    public async Task<TestNode> StartAsync(Func<HostOptions, HostOptions>? configure = null, SwarmKey? swarmKey = null, bool listen = true,
        Func<Libp2pHostSettings, Libp2pHostSettings>? configureStack = null)
    {
        var settings = new Libp2pHostSettings { SwarmKey = swarmKey };
        settings = settings with { Host = configure?.Invoke(settings.Host) ?? settings.Host };
        settings = configureStack?.Invoke(settings) ?? settings;
        var runtime = NextRuntime();
        var host = Libp2pHost.Create(PrivateKey.FromRandom(_random), [Network.CreateTransport()], settings, runtime, Loggers);
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
