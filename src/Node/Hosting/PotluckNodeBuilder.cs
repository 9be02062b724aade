using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Pnet;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport;
using Potluck.Protocol.Transport.Memory;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Topics;

namespace Potluck.Node.Hosting;

/// <summary>
/// The one way to build a node (DESIGN §10): the daemon, the short-lived node behind `potluck submit`, every test,
/// benchmark and simulated node. Configuration comes from <see cref="Configuration"/> (bound to
/// <see cref="PotluckOptions"/>); what is not configuration is chosen here: the network (TCP unless
/// <see cref="UseSimulatedNetwork"/>), the clock and randomness (<see cref="UseRuntime"/>, <see cref="UseTime"/>,
/// <see cref="UseSeed"/>), the identity (<see cref="UseKey"/>, else the data directory's, else a new one).
/// <code>
/// await using var node = PotluckNode.CreateBuilder()
///     .UseSimulatedNetwork(net).UseRuntime(driver.CreateRuntime(seed: 42))
///     .Configure(o => o with { Listen = [Multiaddr.Parse("/memory/0")] })
///     .Build();
/// await node.StartAsync(ct);
/// </code>
/// </summary>
public sealed class PotluckNodeBuilder
{
    private readonly HostApplicationBuilder _app;
    private readonly List<Func<PotluckOptions, PotluckOptions>> _configure = [];
    private NodeRuntime? _runtime;
    private TimeProvider? _time;
    private long? _seed;
    private PrivateKey? _key;
    private SwarmKey? _swarmKey;
    private Func<IServiceProvider, IReadOnlyList<ITransport>>? _transports;
    private SimulatedNetwork? _network;
    private Func<IServiceProvider, ITopicBus>? _topicBus;
    private Func<ITaskExecutor, ITaskExecutor>? _executorDecorator;
    private TimeProvider? _sandboxTime;
    private NodeStandIns _standIns = NodeStandIns.None;
    private bool _releaseServices;
    private bool _built;

    internal PotluckNodeBuilder(ConfigurationManager? configuration)
    {
        // The node's settings live apart from the generic host's own (application name, content root, environment).
        Configuration = configuration ?? new ConfigurationManager();
        _app = new HostApplicationBuilder(new HostApplicationBuilderSettings
        {
            DisableDefaults = true,
            ApplicationName = "potluck",
        });
        // The generic host's own start-up and failure lines say nothing a node's operator can use: the node reports
        // what went wrong itself (a setting, a file, a port).
        _app.Logging.AddFilter("Microsoft.Extensions.Hosting", LogLevel.None);
        _app.Logging.AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Warning);
        // A library node has no console lifetime: whoever built it starts and stops it. `potluck run` swaps in the console's.
        _app.Services.AddSingleton<IHostLifetime, ExplicitLifetime>();
    }

    /// <summary>The configuration bound to <see cref="PotluckOptions"/>; add sources here (see <see cref="NodeConfiguration"/>).</summary>
    public ConfigurationManager Configuration { get; }

    /// <summary>The node's services: add to them, or replace one before <see cref="Build"/>.</summary>
    public IServiceCollection Services => _app.Services;

    /// <summary>Logging providers and filters (none by default: a library node is silent).</summary>
    public ILoggingBuilder Logging => _app.Logging;

    /// <summary>Adjusts the options after they are bound from configuration (applied in order).</summary>
    public PotluckNodeBuilder Configure(Func<PotluckOptions, PotluckOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        _configure.Add(configure);
        return this;
    }

    /// <summary>Everything runs on <paramref name="runtime"/>: clock, scheduler, randomness (a simulation passes its driver's).</summary>
    public PotluckNodeBuilder UseRuntime(NodeRuntime runtime)
    {
        _runtime = runtime ?? throw new ArgumentNullException(nameof(runtime));
        return this;
    }

    /// <summary>Runs on <paramref name="time"/> (thread pool, OS security randomness); for a full simulation use <see cref="UseRuntime"/>.</summary>
    public PotluckNodeBuilder UseTime(TimeProvider time)
    {
        _time = time ?? throw new ArgumentNullException(nameof(time));
        return this;
    }

    /// <summary>Protocol randomness (gossip, DHT, mDNS choices) replayable from <paramref name="seed"/>; security randomness stays the OS's.</summary>
    public PotluckNodeBuilder UseSeed(long seed)
    {
        _seed = seed;
        return this;
    }

    /// <summary>The node's identity. Otherwise the data directory's <c>identity.key</c> (created on first use), else a new key.</summary>
    public PotluckNodeBuilder UseKey(PrivateKey key)
    {
        _key = key ?? throw new ArgumentNullException(nameof(key));
        return this;
    }

    /// <summary>Joins only the private network of <paramref name="key"/> (overrides the <c>swarmKey</c> setting).</summary>
    public PotluckNodeBuilder UseSwarmKey(SwarmKey key)
    {
        _swarmKey = key ?? throw new ArgumentNullException(nameof(key));
        return this;
    }

    /// <summary>Connects over <paramref name="network"/> (in memory) instead of TCP.</summary>
    public PotluckNodeBuilder UseSimulatedNetwork(SimulatedNetwork network)
    {
        _network = network ?? throw new ArgumentNullException(nameof(network));
        _transports = _ => [network.CreateTransport()];
        return this;
    }

    /// <summary>Connects over the given transports instead of TCP.</summary>
    public PotluckNodeBuilder UseTransports(Func<IServiceProvider, IReadOnlyList<ITransport>> transports)
    {
        _transports = transports ?? throw new ArgumentNullException(nameof(transports));
        return this;
    }

    /// <summary>Publishes and subscribes through <paramref name="bus"/> instead of gossipsub (tests that isolate the scheduler).</summary>
    public PotluckNodeBuilder UseTopicBus(Func<IServiceProvider, ITopicBus> bus)
    {
        _topicBus = bus ?? throw new ArgumentNullException(nameof(bus));
        return this;
    }

    /// <summary>Wraps the provider's task executor (simulated adversaries and tests: a cheating or hanging provider).</summary>
    public PotluckNodeBuilder DecorateProviderExecutor(Func<ITaskExecutor, ITaskExecutor> decorate)
    {
        _executorDecorator = decorate ?? throw new ArgumentNullException(nameof(decorate));
        return this;
    }

    /// <summary>The sandbox's clock for wall-clock deadlines (the system clock unless given, even under virtual time).</summary>
    public PotluckNodeBuilder UseSandboxTime(TimeProvider time)
    {
        _sandboxTime = time ?? throw new ArgumentNullException(nameof(time));
        return this;
    }

    /// <summary>
    /// Simulation stand-ins (see <see cref="NodeStandIns"/>): cheaper parts in place of real ones, so thousands of nodes
    /// fit in one process. Refused unless the node runs on a simulated network (<see cref="UseSimulatedNetwork"/>).
    /// </summary>
    public PotluckNodeBuilder UseStandIns(NodeStandIns standIns)
    {
        _standIns = standIns ?? throw new ArgumentNullException(nameof(standIns));
        return this;
    }

    /// <summary>
    /// Once started, the node keeps what its service provider made (a record of the singletons by service type, and its
    /// own list of disposables, disposed last created first as the provider does) and lets the provider go: its
    /// descriptors, call-site caches and compiled resolvers (~40 KiB a node; issue 11). After start
    /// <see cref="PotluckNode.Services"/> answers only with what was made by then. Only under virtual time
    /// (<see cref="UseRuntime"/> with a driver's runtime), where the node starts and stops its parts itself; the generic
    /// host's console or systemd lifetime needs its provider until the end. Same parts, same order, same runs.
    /// </summary>
    public PotluckNodeBuilder ReleaseServicesAfterStart()
    {
        _releaseServices = true;
        return this;
    }

    /// <summary>Logs through <paramref name="loggers"/> (shared with the caller, who keeps owning it) instead of the node's own providers.</summary>
    public PotluckNodeBuilder UseLoggerFactory(ILoggerFactory loggers)
    {
        ArgumentNullException.ThrowIfNull(loggers);
        _app.Services.Replace(ServiceDescriptor.Singleton(loggers));
        return this;
    }

    /// <summary>Builds and starts the node; on failure nothing is left running.</summary>
    public async Task<PotluckNode> StartAsync(CancellationToken ct = default)
    {
        var node = Build();
        await node.StartAsync(ct);
        return node;
    }

    /// <summary>Builds the node (not started: call <see cref="PotluckNode.StartAsync"/>). Options are validated at start.</summary>
    public PotluckNode Build()
    {
        if (_built)
        {
            throw new InvalidOperationException("a PotluckNodeBuilder builds one node");
        }
        _built = true;
        if (_runtime is not null && (_time is not null || _seed is not null))
        {
            throw new InvalidOperationException("UseRuntime already chooses the clock and the seed: do not combine it with UseTime or UseSeed");
        }
        var runtime = _runtime ?? (_time is null && _seed is null ? NodeRuntime.System : NodeRuntime.WithTime(_time ?? TimeProvider.System, _seed));
        if (_network is not null && !ReferenceEquals(_network.TimeProvider, runtime.Time))
        {
            throw new InvalidOperationException("the simulated network and the node must run on the same clock: give the node the network's TimeProvider (UseTime or UseRuntime)");
        }
        if (_standIns.Any && _network is null)
        {
            throw new InvalidOperationException("simulation stand-ins (plaintext-sim security, a shared sandbox, in-memory storage, shared counters) are only for nodes on a simulated network");
        }
        if (_releaseServices && !runtime.IsDeterministic)
        {
            throw new InvalidOperationException("ReleaseServicesAfterStart is only for nodes on virtual time (UseRuntime with a driver's runtime): the generic host's lifetime needs its provider until the node stops");
        }
        var setup = new NodeSetup(runtime, _key, _swarmKey, _transports, _topicBus, _executorDecorator,
            _sandboxTime ?? TimeProvider.System, [.. _configure]) { StandIns = _standIns };
        _app.Services.AddPotluck(Configuration, setup);
        if (_releaseServices)
        {
            setup.Parts.Track(_app.Services);
        }
        var app = _app.Build();
        return new PotluckNode(app, _releaseServices ? setup.Parts : null);
    }

    /// <summary>A lifetime that waits for nobody: the node is started and stopped by its owner.</summary>
    private sealed class ExplicitLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}

/// <summary>What the builder chose that is not configuration.</summary>
internal sealed record NodeSetup(
    NodeRuntime Runtime,
    PrivateKey? Key,
    SwarmKey? SwarmKey,
    Func<IServiceProvider, IReadOnlyList<ITransport>>? Transports,
    Func<IServiceProvider, ITopicBus>? TopicBus,
    Func<ITaskExecutor, ITaskExecutor>? ExecutorDecorator,
    TimeProvider SandboxTime,
    IReadOnlyList<Func<PotluckOptions, PotluckOptions>> Configure)
{
    public NodeStandIns StandIns { get; init; } = NodeStandIns.None;

    /// <summary>What the node's provider made (recorded only when the node lets its provider go after start).</summary>
    public NodeParts Parts { get; } = new();

    /// <summary>Set when the identity key was loaded from a file that was in the data directory before this start (chain recovery).</summary>
    public System.Runtime.CompilerServices.StrongBox<bool> IdentityKept { get; init; } = new();
}

/// <summary>
/// Cheaper parts a simulated node may use in place of real ones (issue 11: 10,000 nodes in one process). Each is named
/// in <see cref="Names"/> so a report can say exactly what stood in; none is ever used on a real network.
/// </summary>
public sealed record NodeStandIns
{
    public static NodeStandIns None { get; } = new();

    /// <summary><see cref="Potluck.Protocol.Security.PlaintextSimSecurity"/> instead of Noise (keys exchanged in the clear, no encryption).</summary>
    public bool PlaintextSecurity { get; init; }

    /// <summary>
    /// One sandbox (Wasmtime engine, compiled-module cache, runner threads, epoch ticker) shared by every node instead of
    /// one each; the caller owns and disposes it. Runs are the same runs (same engine settings, so the same outputs and
    /// the same fuel).
    /// </summary>
    public Scheduler.Sandbox.WasmSandbox? SharedSandbox { get; init; }

    /// <summary>Ledger, reputation and peer databases in in-memory SQLite (<see cref="Scheduler.Storage.SqliteMemory"/>): same code, no disk.</summary>
    public bool InMemoryStorage { get; init; }

    /// <summary>
    /// One meter factory (the caller's, who disposes it) for the counters, histograms and up-down counters of every node
    /// given it, instead of each node's own: a meter keeps one instrument per name, so the nodes share the instruments
    /// and a listener sees their sums. About 40 instruments of a node's own (~11 KiB each node) go. Each node's own
    /// totals (dials, closes, DHT queries: what a simulation reports) and its observable instruments stay its own, and
    /// nothing a node decides reads an instrument: the same runs.
    /// </summary>
    public System.Diagnostics.Metrics.IMeterFactory? SharedCounters { get; init; }

    public bool Any => PlaintextSecurity || SharedSandbox is not null || InMemoryStorage || SharedCounters is not null;

    /// <summary>What stands in, one phrase each (empty when nothing does).</summary>
    public IReadOnlyList<string> Names =>
    [
        .. PlaintextSecurity ? [Potluck.Protocol.Security.PlaintextSimSecurity.StandInName] : Array.Empty<string>(),
        .. SharedSandbox is not null ? ["one shared sandbox (one Wasmtime engine, module cache and runner pool for all nodes; same runs, same fuel)"] : Array.Empty<string>(),
        .. InMemoryStorage ? [Scheduler.Storage.SqliteMemory.StandInName] : Array.Empty<string>(),
        .. SharedCounters is not null ? [SharedCountersName] : Array.Empty<string>(),
    ];

    /// <summary>What <see cref="SharedCounters"/> is called in reports.</summary>
    public const string SharedCountersName = "shared counters (one set of counters and histograms for all nodes: metrics listeners see sums; each node's totals and observable instruments its own)";
}
