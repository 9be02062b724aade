using Microsoft.Extensions.Logging;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Perf;
using Potluck.Protocol.Ping;
using Potluck.Protocol.Pnet;
using Potluck.Protocol.Transport;
using Potluck.Protocol.Transport.Tcp;

namespace Potluck.Node;

/// <summary>
/// A running Potluck node: the libp2p host with identify, ping and perf. The one place that chooses the
/// transport (TCP for real nodes, the in-memory network for simulations) and the clock.
/// </summary>
public sealed class PotluckNode : IAsyncDisposable
{
    private PotluckNode(Libp2pHost host, IdentifyService identify, PingService ping, PerfService perf)
    {
        Host = host;
        Identify = identify;
        Ping = ping;
        Perf = perf;
    }

    public Libp2pHost Host { get; }

    public IdentifyService Identify { get; }

    public PingService Ping { get; }

    public PerfService Perf { get; }

    public PeerId PeerId => Host.PeerId;

    /// <summary>Listen addresses with the /p2p/&lt;peer id&gt; suffix, ready to give to another node.</summary>
    public IReadOnlyList<Multiaddr> FullAddresses => Host.ListenAddresses.Select(a => a.WithPeer(PeerId)).ToArray();

    /// <summary>Creates a node on real TCP sockets and the system clock.</summary>
    public static Task<PotluckNode> StartTcpAsync(PrivateKey key, IEnumerable<Multiaddr> listen, SwarmKey? swarmKey, ILoggerFactory loggers, CancellationToken ct) =>
        StartAsync(key, listen, [new TcpTransport(new TcpTransportOptions())], swarmKey, loggers, TimeProvider.System, ct);

    /// <summary>Creates a node on the given transports and clock (the simulator passes its memory transport and virtual time).</summary>
    public static async Task<PotluckNode> StartAsync(PrivateKey key, IEnumerable<Multiaddr> listen, IReadOnlyList<ITransport> transports,
        SwarmKey? swarmKey, ILoggerFactory loggers, TimeProvider time, CancellationToken ct)
    {
        var host = Libp2pHost.Create(key, transports, new Libp2pHostSettings { SwarmKey = swarmKey }, loggers, time);
        var identify = new IdentifyService(host, new IdentifyOptions(), loggers);
        var ping = new PingService(host);
        var perf = new PerfService(host, new PerfOptions());
        try
        {
            await host.StartAsync(listen, ct);
        }
        catch
        {
            await identify.DisposeAsync();
            await host.DisposeAsync();
            throw;
        }
        return new PotluckNode(host, identify, ping, perf);
    }

    public async ValueTask DisposeAsync()
    {
        await Identify.DisposeAsync();
        await Host.DisposeAsync();
    }
}
