using System.CommandLine;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Potluck.Node.Hosting;
using Potluck.Node.P2pd;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Kademlia;

namespace Potluck.Node.Cli;

/// <summary>
/// `potluck p2pd`: a node behind the libp2p daemon control protocol, started with go-libp2p-daemon's flags, so that
/// libp2p's own interop suite (@libp2p/interop) can drive it where it would drive the Go daemon. Prints
/// <c>Control socket: &lt;multiaddr&gt;</c> when it serves, then runs until Ctrl-C or SIGTERM. No mDNS, no bootstrap, no
/// data directory: a fresh daemon has no peers and keeps nothing.
/// </summary>
internal sealed class P2pdCommand : PotluckCommand
{
    public P2pdCommand(CliContext context) : base("p2pd",
        "Serve the libp2p daemon control protocol (go-libp2p-daemon's flags), for libp2p's interop suites.", context)
    {
        Arguments.Add(Flags);
    }

    /// <summary>
    /// Go-style flags (-listen=…) are not System.CommandLine options: <see cref="Commands.Parse(CliContext, IReadOnlyList{string})"/>
    /// puts a "--" before them, so they arrive here as arguments and <see cref="P2pdFlags"/> parses them.
    /// </summary>
    public Argument<string[]> Flags { get; } = new("flags")
    {
        Description = "go-libp2p-daemon's flags, such as -listen=/ip4/127.0.0.1/tcp/0 -hostAddrs=/ip4/127.0.0.1/tcp/0 -dhtServer",
        HelpName = "flag",
        Arity = ArgumentArity.ZeroOrMore,
    };

    /// <summary>A p2pd line as the parser should see it: "--" before the go flags, unless help is asked for.</summary>
    internal static IReadOnlyList<string> Protect(IReadOnlyList<string> args) =>
        args.Count > 1 && args[0] == "p2pd" && args[1] != "--" && !args.Skip(1).Any(a => a is "-h" or "--help" or "-help" or "-?")
            ? ["p2pd", "--", .. args.Skip(1)]
            : args;

    public override string? HelpNotes =>
        "Flags (go-libp2p-daemon's, written -name=value; those of features Potluck lacks are refused unless off):" + Environment.NewLine
        + string.Join(Environment.NewLine, P2pdFlags.Describe().Select(l => "  " + l));

    protected override async Task<int> ExecuteAsync(ParseResult result, CancellationToken ct)
    {
        var (settings, error) = P2pdFlags.Parse(result.GetValue(Flags) ?? []);
        if (settings is null)
        {
            throw new UsageException(error!);
        }
        var key = settings.IdentityFile is null ? PrivateKey.Generate() : PrivateKey.LoadExisting(settings.IdentityFile);
        using var loggers = Commands.CreateLoggers(settings.Quiet ? LogLevel.Error : LogLevel.Warning);
        await using var node = await StartNodeAsync(key, settings, loggers, ct);
        await using var daemon = P2pdDaemon.Start(node, settings.Control, settings.Echo, new P2pdLimits(), loggers.CreateLogger<P2pdDaemon>());
        await Out.WriteLineAsync($"Control socket: {daemon.ControlAddress}");
        if (!settings.Quiet)
        {
            await Out.WriteLineAsync($"Peer ID: {node.PeerId}");
            await Out.WriteLineAsync("Peer Addrs:");
            foreach (var address in node.Host.ListenAddresses)
            {
                await Out.WriteLineAsync(address.ToString());
            }
        }
        await Out.FlushAsync(ct);
        try
        {
            await Task.Delay(Timeout.Infinite, ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
        }
        return 0;
    }

    /// <summary>The node a p2pd command line asks for: its key, its listen addresses, the DHT on /ipfs/kad/1.0.0 and pubsub as asked, nothing else.</summary>
    internal static async Task<PotluckNode> StartNodeAsync(PrivateKey key, P2pdSettings settings, ILoggerFactory loggers, CancellationToken ct)
    {
        var builder = PotluckNode.CreateBuilder();
        builder.Services.AddSingleton(loggers);
        builder.UseKey(key).Configure(o => o with
        {
            Listen = settings.HostAddrs,
            Bootstrap = [],
            Discovery = o.Discovery with { Mdns = false },
            Protocols = o.Protocols with { Perf = false, Kademlia = settings.Dht, Gossipsub = settings.Pubsub },
            Kademlia = o.Kademlia with { ProtocolId = KademliaService.IpfsProtocolId },
            Gossip = o.Gossip with
            {
                Protocols = settings.Router == PubsubRouter.Floodsub
                    ? [GossipsubProtocol.Floodsub]
                    : [GossipsubProtocol.V11, GossipsubProtocol.V10, GossipsubProtocol.Floodsub],
                HeartbeatInterval = settings.GossipsubHeartbeatInterval ?? o.Gossip.HeartbeatInterval,
                HeartbeatInitialDelay = settings.GossipsubHeartbeatInitialDelay ?? o.Gossip.HeartbeatInitialDelay,
            },
            Compute = o.Compute with { Enabled = false },
            // Relayed connections are accepted from any relay: the suite's clients reserve with raw hop streams the
            // transport does not see. AutoNAT and automatic relay stay off (the daemon does only what it is told).
            Relay = o.Relay with
            {
                Hop = settings.Relay && settings.RelayHop,
                AcceptRelayed = true,
                StopOnlyFromReservedRelays = false,
                AutoHop = false,
                AutoReserve = false,
            },
            AutoNat = o.AutoNat with { Client = false },
        });
        var node = builder.Build();
        await node.StartAsync(ct);
        return node;
    }
}
