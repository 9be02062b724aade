using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Potluck.Node.Compute;
using Potluck.Node.Persistence;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Mdns;
using Potluck.Protocol.Metrics;
using Potluck.Protocol.Perf;
using Potluck.Protocol.Ping;
using Potluck.Protocol.Relay;
using Potluck.Protocol.Pnet;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Security;
using Potluck.Protocol.Transport;
using Potluck.Protocol.Transport.Tcp;
using Potluck.Scheduler.Metrics;
using Potluck.Scheduler.Topics;
using Potluck.Scheduler.Verification;

namespace Potluck.Node.Hosting;

/// <summary>
/// The registrations of one node (called by <see cref="PotluckNodeBuilder.Build"/>). Components are singletons built
/// from the resolved <see cref="PotluckOptions"/> and the builder's <see cref="NodeSetup"/>; the long-running parts are
/// hosted services started in this order and stopped in reverse: options checked, the libp2p host and its protocols,
/// discovery, compute.
/// </summary>
internal static class PotluckServices
{
    public static IServiceCollection AddPotluck(this IServiceCollection services, IConfiguration configuration, NodeSetup setup)
    {
        services.AddSingleton(setup);
        services.AddSingleton(setup.Runtime);
        services.AddSingleton(setup.Runtime.Time);
        services.AddSingleton(sp => PotluckOptionsResolver.Resolve(configuration, setup.Configure));
        // Metrics: one IMeterFactory per node (this service provider's), so nodes in one process never share a meter.
        services.AddMetrics();
        // (A simulation may share the counters between its nodes: NodeStandIns.SharedCounters.)
        services.AddSingleton(sp => new ProtocolInstruments(sp.GetRequiredService<IMeterFactory>(), setup.StandIns.SharedCounters));
        services.AddSingleton(sp => new ComputeInstruments(sp.GetRequiredService<IMeterFactory>(), setup.StandIns.SharedCounters));

        services.AddSingleton(sp => ResolveKey(sp.GetRequiredService<PotluckOptions>(), setup));
        services.AddSingleton(sp => new NodeSwarmKey(ResolveSwarmKey(sp.GetRequiredService<PotluckOptions>(), setup)));
        services.AddSingleton(sp => new CircuitTransport(sp.GetRequiredService<PotluckOptions>().Relay, setup.Runtime,
            sp.GetRequiredService<ILoggerFactory>()));
        services.AddSingleton<IReadOnlyList<ITransport>>(sp =>
        {
            IReadOnlyList<ITransport> transports = setup.Transports?.Invoke(sp)
                ?? [new TcpTransport(sp.GetRequiredService<PotluckOptions>().Tcp, setup.Runtime)];
            // Circuit relay v2 runs over whatever reaches the relay.
            return sp.GetRequiredService<PotluckOptions>().Protocols.Relay ? [.. transports, sp.GetRequiredService<CircuitTransport>()] : transports;
        });

        services.AddSingleton(sp =>
        {
            var options = sp.GetRequiredService<PotluckOptions>();
            var settings = new Libp2pHostSettings
            {
                Host = options.Host,
                Noise = options.Noise,
                Yamux = options.Yamux,
                Multistream = options.Multistream,
                SwarmKey = sp.GetRequiredService<NodeSwarmKey>().Key,
                Security = setup.StandIns.PlaintextSecurity ? key => new PlaintextSimSecurity(key.PublicKey, setup.Runtime.SharedValues) : null,
            };
            var host = Libp2pHost.Create(sp.GetRequiredService<PrivateKey>(), sp.GetRequiredService<IReadOnlyList<ITransport>>(), settings,
                setup.Runtime, sp.GetRequiredService<ILoggerFactory>(), sp.GetRequiredService<ProtocolInstruments>());
            if (options.Protocols.Relay)
            {
                sp.GetRequiredService<CircuitTransport>().Attach(host);
            }
            RelayMetrics.Register(host.Instruments.Meter,
                Lookup<RelayService>(sp, setup.Parts, options.Relay.Hop || (options.Protocols.Relay && options.Relay.AutoHop)),
                Lookup<Potluck.Protocol.AutoNat.AutoNatService>(sp, setup.Parts, options.Protocols.Identify && (options.AutoNat.Server || options.AutoNat.Client)));
            Potluck.Protocol.Dcutr.DcutrMetrics.Register(host.Instruments.Meter,
                Lookup<Potluck.Protocol.Dcutr.DcutrService>(sp, setup.Parts, options.Protocols.Dcutr && options.Protocols.Relay));
            return host;
        });
        services.AddSingleton(sp =>
        {
            var options = sp.GetRequiredService<PotluckOptions>();
            return new Potluck.Protocol.Dcutr.DcutrService(sp.GetRequiredService<Libp2pHost>(),
                options.Protocols.Identify ? sp.GetRequiredService<IdentifyService>() : null, options.Dcutr, setup.Runtime,
                sp.GetRequiredService<ILoggerFactory>());
        });
        services.AddSingleton(sp => new StaticRelayReservations(sp.GetRequiredService<CircuitTransport>(), sp.GetRequiredService<Libp2pHost>(),
            sp.GetRequiredService<PotluckOptions>().Relay, setup.Runtime, sp.GetRequiredService<ILogger<StaticRelayReservations>>()));
        services.AddSingleton(sp =>
        {
            var host = sp.GetRequiredService<Libp2pHost>();
            var options = sp.GetRequiredService<PotluckOptions>();
            // Relayed connections to a peer that serves Potluck leases get the lease limits: modules are larger than 128 KiB.
            return new RelayService(host, options.Relay, setup.Runtime, sp.GetRequiredService<ILoggerFactory>(), start: options.Relay.Hop,
                leaseLimits: peer => host.Peers.SupportsProtocol(peer, Potluck.Scheduler.Leasing.LeaseProtocol.IdWithReceipts)
                    || host.Peers.SupportsProtocol(peer, Potluck.Scheduler.Leasing.LeaseProtocol.Id));
        });
        services.AddSingleton(sp =>
        {
            var options = sp.GetRequiredService<PotluckOptions>();
            return new Potluck.Protocol.AutoNat.AutoNatService(sp.GetRequiredService<Libp2pHost>(), options.AutoNat, setup.Runtime,
                sp.GetRequiredService<ILoggerFactory>(), options.Protocols.Identify ? sp.GetRequiredService<IdentifyService>() : null);
        });
        services.AddSingleton(sp =>
        {
            var options = sp.GetRequiredService<PotluckOptions>();
            var host = sp.GetRequiredService<Libp2pHost>();
            var bootstrap = options.Bootstrap.Select(b => b.PeerId).OfType<Potluck.Protocol.Identity.PeerId>().ToArray();
            var cluster = options.SwarmKey is not null || setup.SwarmKey is not null;
            // Bootstrap peers first, then (in a private cluster) every member we are connected to.
            IEnumerable<Potluck.Protocol.Identity.PeerId> Preferred() => cluster
                ? bootstrap.Concat(host.Connections.Select(c => c.RemotePeer).Distinct().OrderBy(p => p.ToString(), StringComparer.Ordinal))
                : bootstrap;
            return new AutoRelay(host, sp.GetRequiredService<CircuitTransport>(),
                options.Relay.AutoHop || options.Relay.Hop ? sp.GetRequiredService<RelayService>() : null,
                sp.GetRequiredService<Potluck.Protocol.AutoNat.AutoNatService>(), options.Relay, setup.Runtime,
                sp.GetRequiredService<ILoggerFactory>(), Preferred);
        });
        services.AddSingleton<Potluck.Protocol.Host.IHost>(sp => sp.GetRequiredService<Libp2pHost>());
        services.AddSingleton(sp => new IdentifyService(sp.GetRequiredService<Libp2pHost>(), sp.GetRequiredService<PotluckOptions>().Identify,
            setup.Runtime, sp.GetRequiredService<ILoggerFactory>()));
        services.AddSingleton(sp => new PingService(sp.GetRequiredService<Libp2pHost>(), sp.GetRequiredService<PotluckOptions>().Ping,
            setup.Runtime, sp.GetRequiredService<ILoggerFactory>()));
        services.AddSingleton(sp => new PerfService(sp.GetRequiredService<Libp2pHost>(), sp.GetRequiredService<PotluckOptions>().Perf,
            setup.Runtime, sp.GetRequiredService<ILoggerFactory>()));
        services.AddSingleton(sp => new GossipsubService(sp.GetRequiredService<Libp2pHost>(), sp.GetRequiredService<PotluckOptions>().Gossip,
            setup.Runtime, sp.GetRequiredService<ILoggerFactory>(), sp.GetRequiredService<ProtocolInstruments>()));
        services.AddSingleton(sp =>
        {
            var options = sp.GetRequiredService<PotluckOptions>();
            var mode = options.Listen.Count > 0 ? KademliaMode.Server : KademliaMode.Client;
            return new KademliaService(sp.GetRequiredService<Libp2pHost>(), options.Kademlia with { Mode = mode },
                setup.Runtime, sp.GetRequiredService<ILoggerFactory>(), sp.GetRequiredService<ProtocolInstruments>());
        });
        services.AddSingleton(sp =>
        {
            var options = sp.GetRequiredService<PotluckOptions>();
            return new MdnsDiscovery(options.Discovery.Mdns
                ? new MdnsService(sp.GetRequiredService<Libp2pHost>(), options.Mdns, setup.Runtime, sp.GetRequiredService<ILoggerFactory>())
                : null);
        });
        services.AddSingleton(sp =>
        {
            var options = sp.GetRequiredService<PotluckOptions>();
            return new PeerPersistence(options.DataDir is { } dir ? PeerDatabase.Open(dir, setup.StandIns.InMemoryStorage) : null);
        });
        services.AddSingleton<ITopicBus>(sp => setup.TopicBus?.Invoke(sp)
            ?? new GossipTopicBus(sp.GetRequiredService<GossipsubService>(), sp.GetRequiredService<ILogger<GossipTopicBus>>(),
                sp.GetRequiredService<Libp2pHost>().Budgets, new Dictionary<string, string> { [FraudProtocol.Topic] = PeerBudgets.FraudProofs, [Potluck.Scheduler.Accounting.ChainProtocol.ForksTopic] = PeerBudgets.FraudProofs,
                    [Potluck.Scheduler.Accounting.ChainProtocol.BlocksTopic] = PeerBudgets.ChainRecords,
                    [Potluck.Scheduler.Accounting.ChainProtocol.BlockBatchesTopic] = PeerBudgets.ChainRecords },
                sp.GetRequiredService<Libp2pHost>().PeerId));

        services.AddSingleton(sp => new ProtocolHostedService(sp));
        services.AddSingleton(sp => new DiscoveryService(sp, sp.GetRequiredService<PotluckOptions>(), setup.Runtime,
            sp.GetRequiredService<ILogger<DiscoveryService>>()));
        services.AddSingleton(sp => new ComputeHostedService(sp, sp.GetRequiredService<PotluckOptions>(), setup));
        services.TryAddSingleton<Home.IMachineProbe>(_ => new Home.ProcMachineProbe("/", Home.InputSources.ForThisMachine()));
        services.TryAddSingleton(TimeZoneInfo.Local);

        // Started in this order, stopped in reverse.
        services.AddHostedService(sp => sp.GetRequiredService<ProtocolHostedService>());
        services.AddHostedService(sp => sp.GetRequiredService<DiscoveryService>());
        services.AddHostedService(sp => sp.GetRequiredService<ComputeHostedService>());
        return services;
    }

    /// <summary>
    /// A metrics callback's way to a part that may not exist (serving hop, AutoNAT, DCUtR): when the node keeps what its
    /// provider made (<see cref="NodeParts.Tracking"/>), that record, so the callback holds no provider; else the provider.
    /// </summary>
    private static Func<T?> Lookup<T>(IServiceProvider sp, NodeParts parts, bool wanted) where T : class
    {
        if (!wanted)
        {
            return static () => null;
        }
        if (parts.Tracking)
        {
            return parts.Get<T>;
        }
        return () =>
        {
            try
            {
                return sp.GetService<T>();
            }
            catch (ObjectDisposedException)
            {
                return null; // collected while the node shuts down
            }
        };
    }

    private static PrivateKey ResolveKey(PotluckOptions options, NodeSetup setup)
    {
        if (setup.Key is { } key)
        {
            return key;
        }
        if (options.DataDir is { } dir)
        {
            try
            {
                Protocol.Runtime.OwnerOnly.CreateDirectory(dir);
                var file = Path.Combine(dir, NodeConfiguration.IdentityFileName);
                setup.IdentityKept.Value = File.Exists(file);
                return PrivateKey.LoadOrCreate(file);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
            {
                throw new NodeStartException($"cannot use the identity key in data directory '{dir}': {e.Message}", e);
            }
        }
        return PrivateKey.FromSeed(setup.Runtime.SecureRandom.GetBytes(32));
    }

    private static SwarmKey? ResolveSwarmKey(PotluckOptions options, NodeSetup setup)
    {
        if (setup.SwarmKey is { } key)
        {
            return key;
        }
        if (options.SwarmKey is not { } path)
        {
            return null;
        }
        var full = options.DataDir is { } dir ? Path.Combine(dir, path) : Path.GetFullPath(path);
        if (!File.Exists(full))
        {
            throw new NodeStartException($"swarmKey: no file at '{full}'. Create one with 'potluck swarm-key generate > {path}'");
        }
        var info = new FileInfo(full);
        if (info.Length > 4096)
        {
            throw new NodeStartException($"swarmKey: '{full}' is {info.Length} bytes; a swarm.key is under 100 bytes");
        }
        return SwarmKey.TryParse(File.ReadAllText(full), out var parsed, out var error)
            ? parsed
            : throw new NodeStartException($"swarmKey: '{full}' is not a swarm key: {error}");
    }
}

/// <summary>The private network's key, or none (a wrapper so "no key" can be a registered service).</summary>
public sealed record NodeSwarmKey(SwarmKey? Key);

/// <summary>mDNS discovery when it is on and its socket opens; a wrapper so "off" can be a registered service.</summary>
public sealed class MdnsDiscovery(MdnsService? service)
{
    public MdnsService? Service { get; internal set; } = service;
}

/// <summary>The peer database in the data directory, or none.</summary>
public sealed class PeerPersistence(PeerDatabase? database) : IDisposable
{
    public PeerDatabase? Database { get; } = database;

    public void Dispose() => Database?.Dispose();
}

/// <summary>A node could not start: the message says what to fix (a setting, a file, a port).</summary>
public sealed class NodeStartException(string message, Exception? inner = null) : Exception(message, inner);
