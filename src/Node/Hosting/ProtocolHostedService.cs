using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Perf;
using Potluck.Protocol.Ping;
using Potluck.Protocol.AutoNat;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Relay;

namespace Potluck.Node.Hosting;

/// <summary>
/// First to start, last to stop: checks the options, builds the libp2p host and its protocols (each registers its stream
/// handlers as it is built, so nothing is accepted before they are), then listens. On stop: gossipsub, the DHT and
/// identify end, then the host closes every connection and listener.
/// </summary>
internal sealed class ProtocolHostedService(IServiceProvider provider) : IHostedService
{
    private IServiceProvider? _services = provider; // until started: nothing is resolved after, and a node may let its provider go
    private Libp2pHost? _host;
    private GossipsubService? _gossip;
    private KademliaService? _dht;
    private IdentifyService? _identify;
    private Potluck.Protocol.Dcutr.DcutrService? _dcutr;
    private StaticRelayReservations? _staticRelays;
    private AutoNatService? _autoNat;
    private AutoRelay? _autoRelay;
    private DhtModeFollower? _dhtMode;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var services = _services ?? throw new InvalidOperationException("the protocols were already started");
        _services = null;
        var options = services.GetRequiredService<PotluckOptions>();
        var protocols = options.Protocols;
        _host = services.GetRequiredService<Libp2pHost>();
        _identify = protocols.Identify ? services.GetRequiredService<IdentifyService>() : null;
        if (protocols.Ping)
        {
            services.GetRequiredService<PingService>();
        }
        if (protocols.Perf)
        {
            services.GetRequiredService<PerfService>();
        }
        if (options.Relay.Hop || (protocols.Relay && options.Relay.AutoHop))
        {
            services.GetRequiredService<RelayService>(); // serving hop now (relay:hop), or once AutoNAT finds the node public
        }
        var autoNat = options.AutoNat;
        _autoNat = protocols.Identify && (autoNat.Server || autoNat.Client) ? services.GetRequiredService<AutoNatService>() : null;
        // Automatic relay use needs AutoNAT's verdicts, and reserving only makes sense for a node that wants inbound connections.
        var reserve = protocols.Relay && options.Relay.AutoReserve && options.Listen.Count > 0;
        _autoRelay = _autoNat is not null && autoNat.Client && protocols.Relay && (reserve || options.Relay.AutoHop)
            ? services.GetRequiredService<AutoRelay>() : null;
        if (_autoNat is not null)
        {
            var (nat, relay, circuit) = (_autoNat, _autoRelay, services.GetRequiredService<CircuitTransport>());
            _host.AddressFactory = bound => relay is null ? nat.Rewrite(bound) : [.. nat.Rewrite(bound), .. relay.CircuitAddresses];
            nat.Changed += _host.AddressesChanged;
            circuit.ReservationsChanged += _host.AddressesChanged;
        }
        _dcutr = protocols.Dcutr && protocols.Relay ? services.GetRequiredService<Potluck.Protocol.Dcutr.DcutrService>() : null;
        _gossip = protocols.Gossipsub ? services.GetRequiredService<GossipsubService>() : null;
        _dht = protocols.Kademlia ? services.GetRequiredService<KademliaService>() : null;
        if (_dht is { Mode: KademliaMode.Server } && _autoNat is not null && autoNat.Client && options.Kademlia.FollowReachability)
        {
            _dhtMode = new DhtModeFollower(_autoNat, _dht);
        }
        IReadOnlyList<Multiaddr> listen = protocols.Relay && (options.Relay.AcceptRelayed || reserve)
            ? [.. options.Listen, Multiaddr.Parse("/p2p-circuit")] : options.Listen;
        await _host.StartAsync(listen, cancellationToken);
        if (protocols.Relay && options.Relay.StaticRelays.Count > 0)
        {
            _staticRelays = services.GetRequiredService<StaticRelayReservations>();
            _staticRelays.Start();
        }
        _autoNat?.Start();
        _autoRelay?.Start();
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        var (gossip, dht, identify, host) = (_gossip, _dht, _identify, _host);
        (_gossip, _dht, _identify, _host) = (null, null, null, null);
        var (dcutr, staticRelays) = (_dcutr, _staticRelays);
        (_dcutr, _staticRelays) = (null, null);
        if (staticRelays is not null)
        {
            await staticRelays.DisposeAsync();
        }
        if (dcutr is not null)
        {
            await dcutr.DisposeAsync();
        }
        _dhtMode?.Dispose();
        _dhtMode = null;
        var (autoRelay, autoNat) = (_autoRelay, _autoNat);
        (_autoRelay, _autoNat) = (null, null);
        if (autoRelay is not null)
        {
            await autoRelay.DisposeAsync();
        }
        if (autoNat is not null)
        {
            await autoNat.DisposeAsync();
        }
        if (gossip is not null)
        {
            await gossip.DisposeAsync();
        }
        if (dht is not null)
        {
            await dht.DisposeAsync();
        }
        if (identify is not null)
        {
            await identify.DisposeAsync();
        }
        if (host is not null)
        {
            await host.DisposeAsync();
        }
    }
}
