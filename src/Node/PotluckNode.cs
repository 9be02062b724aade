using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Potluck.Node.Compute;
using Potluck.Node.Hosting;
using Potluck.Node.Persistence;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Mdns;
using Potluck.Protocol.Metrics;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Perf;
using Potluck.Protocol.Ping;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Metrics;
using GenericHost = Microsoft.Extensions.Hosting.IHost;

namespace Potluck.Node;

/// <summary>
/// A Potluck node: the libp2p host with identify, ping, perf, gossipsub, the Kademlia DHT and (when asked) mDNS,
/// discovery and peer persistence, and (when enabled) compute. Built only by <see cref="PotluckNodeBuilder"/>
/// (<see cref="CreateBuilder()"/>), on the .NET generic host: its parts are singletons of one service provider and its
/// long-running parts hosted services, started in order by <see cref="StartAsync"/> and stopped in reverse by
/// <see cref="StopAsync"/> (or <see cref="DisposeAsync"/>).
/// </summary>
public sealed class PotluckNode : IAsyncDisposable
{
    private GenericHost? _app;
    private readonly NodeParts? _parts;
    private IServiceProvider _services;
    private Microsoft.Extensions.Hosting.IHostedService[]? _hosted;
    private int _started;
    private int _stopped;
    private int _disposed;

    /// <param name="app">The generic host and its provider.</param>
    /// <param name="parts">When given, what the provider made: once started, the node answers from it and lets the provider go.</param>
    internal PotluckNode(GenericHost app, NodeParts? parts = null)
    {
        _app = app;
        _parts = parts;
        _services = app.Services;
    }

    /// <summary>A builder with no configuration sources: a library node (listens nowhere, no discovery, no compute) until configured.</summary>
    public static PotluckNodeBuilder CreateBuilder() => new(null);

    /// <summary>A builder on <paramref name="configuration"/> (see <see cref="NodeConfiguration.Create"/> for a home node's sources).</summary>
    public static PotluckNodeBuilder CreateBuilder(ConfigurationManager configuration) => new(configuration);

    /// <summary>
    /// The node's services, for what the properties below do not expose. A node built with
    /// <see cref="PotluckNodeBuilder.ReleaseServicesAfterStart"/> answers after start only with what was made by then.
    /// </summary>
    public IServiceProvider Services => _services;

    public PotluckOptions Options => Services.GetRequiredService<PotluckOptions>();

    public NodeRuntime Runtime => Services.GetRequiredService<NodeRuntime>();

    public Libp2pHost Host => Services.GetRequiredService<Libp2pHost>();

    /// <summary>The libp2p stack's metrics (meter <see cref="ProtocolInstruments.MeterName"/>, from this node's own meter factory).</summary>
    public ProtocolInstruments ProtocolMetrics => Services.GetRequiredService<ProtocolInstruments>();

    /// <summary>The compute layer's metrics (meter <see cref="ComputeInstruments.MeterName"/>, from this node's own meter factory).</summary>
    public ComputeInstruments ComputeMetrics => Services.GetRequiredService<ComputeInstruments>();

    public IdentifyService Identify => Options.Protocols.Identify ? Services.GetRequiredService<IdentifyService>() : throw new InvalidOperationException("identify is off on this node ('protocols:identify')");

    public PingService Ping => Options.Protocols.Ping ? Services.GetRequiredService<PingService>() : throw new InvalidOperationException("ping is off on this node ('protocols:ping')");

    public PerfService Perf => Options.Protocols.Perf ? Services.GetRequiredService<PerfService>() : throw new InvalidOperationException("perf is off on this node ('protocols:perf')");

    public GossipsubService Gossip => Options.Protocols.Gossipsub ? Services.GetRequiredService<GossipsubService>() : throw new InvalidOperationException("gossipsub is off on this node ('protocols:gossipsub')");

    public KademliaService Dht => Options.Protocols.Kademlia ? Services.GetRequiredService<KademliaService>() : throw new InvalidOperationException("kademlia is off on this node ('protocols:kademlia')");

    /// <summary>mDNS discovery; null when off or when its socket could not be opened.</summary>
    public MdnsService? Mdns => Discovery.Mdns;

    /// <summary>The compute layer; null when compute is off (or the node has not started).</summary>
    public ComputeNode? Compute => Services.GetRequiredService<ComputeHostedService>().Node;

    /// <summary>The operator's preferences at work (idle detection, hours, battery, peers); null when compute is off or not started.</summary>
    public Home.PreferencesService? Preferences => Services.GetRequiredService<ComputeHostedService>().Preferences;

    public DiscoveryService Discovery => Services.GetRequiredService<DiscoveryService>();

    public PeerId PeerId => Services.GetRequiredService<PrivateKey>().PeerId;

    /// <summary>Listen addresses with the /p2p/&lt;peer id&gt; suffix, ready to give to another node.</summary>
    public IReadOnlyList<Multiaddr> FullAddresses => Host.ListenAddresses.Select(a => a.WithPeer(PeerId)).ToArray();

    /// <summary>Completes when the start-up join is done: remembered peers and the bootstrap list dialed, the DHT bootstrapped.</summary>
    public Task Joined => Discovery.Joined;

    /// <summary>Topics the node stays in (and rejoins after a restart).</summary>
    public IReadOnlyList<string> JoinedTopics => Discovery.JoinedTopics;

    /// <summary>Starts every part in order; throws (with the node stopped again) when a setting is wrong or a part cannot start.</summary>
    public async Task StartAsync(CancellationToken ct = default)
    {
        if (Interlocked.Exchange(ref _started, 1) != 0)
        {
            throw new InvalidOperationException("the node was already started");
        }
        try
        {
            if (Runtime.IsDeterministic)
            {
                await StartInOrderAsync(ct);
            }
            else
            {
                await _app!.StartAsync(ct);
            }
        }
        catch
        {
            // Stop what did start, in reverse; the generic host cannot stop a start that failed before it listed its services.
            await StopStartedAsync();
            Volatile.Write(ref _started, 0);
            await DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// Under virtual time the node starts and stops its hosted services itself, in the same order as the generic host:
    /// the host's own orchestration awaits with ConfigureAwait(false) and would leave the event loop. A simulated node
    /// has no console or systemd lifetime to notify.
    /// </summary>
    private async Task StartInOrderAsync(CancellationToken ct)
    {
        _hosted = [.. Services.GetServices<Microsoft.Extensions.Hosting.IHostedService>()];
        foreach (var service in _hosted)
        {
            await service.StartAsync(ct);
        }
        if (_parts is not null)
        {
            // Started: nothing resolves anything new from here on, so the provider (descriptors, call-site caches,
            // compiled resolvers) can go; the node keeps what it made and its own disposal list.
            _services = _parts.AsProvider();
            _app = null;
        }
    }

    private async Task StopInReverseAsync(CancellationToken ct)
    {
        var failures = new List<Exception>();
        foreach (var service in Enumerable.Reverse(_hosted ?? [.. Services.GetServices<Microsoft.Extensions.Hosting.IHostedService>()]))
        {
            try
            {
                await service.StopAsync(ct);
            }
            catch (Exception e)
            {
                failures.Add(e);
            }
        }
        if (failures.Count > 0)
        {
            throw new AggregateException("stopping the node failed", failures);
        }
    }

    private async Task StopStartedAsync()
    {
        Microsoft.Extensions.Hosting.IHostedService[] started;
        try
        {
            started = [.. Services.GetServices<Microsoft.Extensions.Hosting.IHostedService>()];
        }
        catch (Exception e) when (e is Microsoft.Extensions.Options.OptionsValidationException or NodeStartException or InvalidOperationException)
        {
            return; // they could not even be built, so none started
        }
        foreach (var service in started.Reverse())
        {
            try
            {
                await service.StopAsync(CancellationToken.None);
            }
            catch (Exception e) when (Failures.IsExpected(e))
            {
            }
        }
    }

    /// <summary>Stops every part in reverse order (compute, discovery, protocols, host); the node cannot start again.</summary>
    public async Task StopAsync(CancellationToken ct = default)
    {
        if (Volatile.Read(ref _started) != 0 && Interlocked.Exchange(ref _stopped, 1) == 0)
        {
            if (Runtime.IsDeterministic)
            {
                await StopInReverseAsync(ct);
            }
            else
            {
                await _app!.StopAsync(ct);
            }
        }
    }

    /// <summary>Joins <paramref name="topic"/> for good (it is remembered across restarts) and returns a subscription to its messages.</summary>
    public GossipSubscription JoinTopic(string topic) => Discovery.JoinTopic(topic);

    /// <summary>Stops staying in <paramref name="topic"/>.</summary>
    public void LeaveTopic(string topic) => Discovery.LeaveTopic(topic);

    /// <summary>Pings the peer once so its latency is known; returns whether it answered.</summary>
    public Task<bool> MeasureLatencyAsync(PeerId peer, CancellationToken ct = default) => Discovery.MeasureLatencyAsync(peer, ct);

    /// <summary>Runs one re-bootstrap check now (what the periodic timer runs).</summary>
    public Task RebootstrapIfEmptyAsync(CancellationToken ct) => Discovery.RebootstrapIfEmptyAsync(ct);

    /// <summary>What would be persisted now.</summary>
    public PersistedState CaptureState() => Discovery.CaptureState();

    /// <summary>Writes the peer store and joined topics to the data directory now.</summary>
    public void Save() => Discovery.Save();

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        await StopAsync(CancellationToken.None);
        if (_app is null)
        {
            await _parts!.DisposeAsync(); // the provider is gone: the node's own list, last created first
        }
        else if (_app is IAsyncDisposable asyncDisposable)
        {
            await asyncDisposable.DisposeAsync();
        }
        else
        {
            _app.Dispose();
        }
    }
}
