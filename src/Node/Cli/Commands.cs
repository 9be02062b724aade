using System.Net.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Potluck.Node.Control;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Pnet;
using Potluck.Protocol.Transport;

namespace Potluck.Node.Cli;

/// <summary>The `potluck` commands. Usage errors throw <see cref="UsageException"/> (exit 2); failures exit 1.</summary>
public static class Commands
{
    private static readonly OptionSpec Help = new("help", null, "show this help");
    private static readonly OptionSpec DataDir = new("data-dir", "path", "where the identity key and node state live (default $POTLUCK_DATA_DIR or ~/.local/share/potluck)");
    private static readonly OptionSpec SwarmKeyOption = new("swarm-key", "file", "join the private network of this swarm.key (libp2p pnet)");
    private static readonly OptionSpec LogLevelOption = new("log-level", "level", "trace, debug, information, warning, error (default information)");

    private static readonly OptionSpec[] RunOptions =
    [
        new("listen", "multiaddr", $"address to listen on, repeatable (default /ip4/0.0.0.0/tcp/{NodeConfig.DefaultPort})", Repeatable: true),
        new("bootstrap", "multiaddr", "peer to join through (…/p2p/<peer id>), repeatable; the DHT is bootstrapped through it", Repeatable: true),
        new("no-mdns", null, "do not find peers on the local network by mDNS (on by default)"),
        new("config", "file", "JSON config: {\"listen\": [...], \"bootstrap\": [...], \"mdns\": true, \"swarm_key\": \"path\"}; flags win"),
        new("cores", "n", "tasks run at once for others (default 1)"),
        new("price", "credits", "credits asked per million fuel (default 10)"),
        new("no-provide", null, "do not run tasks for others (the node still relays, discovers and gossips)"),
        DataDir, SwarmKeyOption, LogLevelOption, Help,
    ];

    private static readonly OptionSpec[] PeersOptions =
    [
        DataDir, new("no-ping", null, "show the latency last measured instead of pinging each peer now"), Help,
    ];

    private static readonly OptionSpec[] IdOptions = [DataDir, new("cid", null, "print the CIDv1 (bafz…) form instead"), Help];

    private static readonly OptionSpec[] PingOptions =
    [
        new("count", "n", "number of pings (default 4)"), SwarmKeyOption, LogLevelOption, Help,
    ];

    private static readonly OptionSpec[] PerfOptions =
    [
        new("upload", "bytes", "bytes to send (default 64MiB; 0 skips)"),
        new("download", "bytes", "bytes to receive (default 64MiB; 0 skips)"),
        SwarmKeyOption, LogLevelOption, Help,
    ];

    private static readonly OptionSpec[] SwarmKeyOptions = [Help];

    /// <summary>Runs a command line; returns the exit code (0 ok, 1 failed, 2 bad usage).</summary>
    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr)
    {
        try
        {
            return await DispatchAsync(args, stdout, stderr);
        }
        catch (HelpRequested help)
        {
            await stdout.WriteAsync(help.Message);
            return 0;
        }
        catch (UsageException e)
        {
            await stderr.WriteLineAsync($"potluck: {e.Message}");
            return 2;
        }
    }

    private static async Task<int> DispatchAsync(string[] args, TextWriter stdout, TextWriter stderr)
    {
        if (args.Length == 0 || args[0] is "help" or "--help" or "-h")
        {
            await stdout.WriteAsync(Usage());
            return 0;
        }
        if (args[0] is "--version" or "version")
        {
            await stdout.WriteLineAsync(new Protocol.Identify.IdentifyOptions().AgentVersion);
            return 0;
        }
        var rest = args.Skip(1).ToArray();
        return args[0] switch
        {
            "run" => await RunNodeAsync(Parse("run", rest, RunOptions, 0, 0, "no arguments", stdout), stdout, stderr),
            "id" => await IdAsync(Parse("id", rest, IdOptions, 0, 0, "no arguments", stdout), stdout),
            "ping" => await PingAsync(Parse("ping", rest, PingOptions, 1, 1, "the address to ping, e.g. /ip4/127.0.0.1/tcp/4100/p2p/12D3KooW…", stdout), stdout, stderr),
            "perf" => await PerfAsync(Parse("perf", rest, PerfOptions, 1, 1, "the address to measure, e.g. /ip4/127.0.0.1/tcp/4100/p2p/12D3KooW…", stdout), stdout, stderr),
            "submit" => await ComputeCommands.SubmitAsync(Parse("submit", rest, ComputeCommands.SubmitOptions, 1, 256, "the module to run, e.g. samples/hashchain/hashchain.wasm", stdout),
                stdout, stderr),
            "ledger" => await ComputeCommands.LedgerAsync(Parse("ledger", rest, ComputeCommands.LedgerOptions, 0, 0, "no arguments", stdout), stdout, stderr),
            "swarm-key" => await SwarmKeyAsync(Parse("swarm-key", rest, SwarmKeyOptions, 1, 1, "'generate'", stdout), stdout),
            "peers" => await PeersAsync(Parse("peers", rest, PeersOptions, 0, 0, "no arguments", stdout), stdout, stderr),
            _ => throw new UsageException($"unknown command '{args[0]}'. Commands: run, submit, ledger, peers, id, ping, perf, swarm-key. Run 'potluck --help' for usage."),
        };
    }

    private static ParsedArgs Parse(string command, string[] args, OptionSpec[] options, int min, int max, string positionalHelp, TextWriter stdout)
    {
        if (args.Contains("--help") || args.Contains("-h"))
        {
            throw new HelpRequested(CommandHelp(command, options, positionalHelp));
        }
        return CommandLine.Parse(command, args, options, min, max, positionalHelp);
    }

    public static string Usage() => """
        potluck: share idle computers and run work on other people's machines, peer to peer.

        Usage:
          potluck run [--listen <multiaddr>]... [--bootstrap <multiaddr>]... [--no-mdns]
                      [--data-dir <path>] [--swarm-key <file>] [--config <file>]
                                       run a node (defaults: listen on /ip4/0.0.0.0/tcp/4100, find
                                       peers on the local network by mDNS, remember peers across restarts)
          potluck peers [--data-dir <path>]
                                       list the running node's connected peers
          potluck id [--data-dir <path>]
                                       print this node's peer id (creating the identity if needed)
          potluck ping <multiaddr> [--count <n>]
                                       measure round-trip times to a libp2p peer
          potluck perf <multiaddr> [--upload <bytes>] [--download <bytes>]
                                       measure throughput each way (libp2p /perf/1.0.0)
          potluck submit <module.wasm> [--input <file|->] [--fuel <n>] [--max-price <p>]
                         [--verify-rate <r>] [--replicas <k>] [--bootstrap <multiaddr>]... [-- args...]
                                       run a WebAssembly task on another node; output to stdout
          potluck ledger [--data-dir <path>]
                                       show the credit balance and recent entries
          potluck swarm-key generate   print a new swarm.key for a private cluster

        Run 'potluck <command> --help' for a command's options.

        """;

    private static string CommandHelp(string command, OptionSpec[] options, string positionalHelp)
    {
        var lines = new List<string> { $"Usage: potluck {command} [options]" + (positionalHelp == "no arguments" ? "" : $"  ({positionalHelp})"), "", "Options:" };
        foreach (var o in options)
        {
            var left = o.TakesValue ? $"--{o.Name} <{o.ValueName}>" : $"--{o.Name}";
            lines.Add($"  {left,-28} {o.Help}");
        }
        return string.Join(Environment.NewLine, lines) + Environment.NewLine;
    }

    internal static LogLevel ParseLogLevel(ParsedArgs args, LogLevel fallback)
    {
        var text = args.Get("log-level");
        if (text is null)
        {
            return fallback;
        }
        return Enum.TryParse<LogLevel>(text, ignoreCase: true, out var level) && Enum.IsDefined(level)
            ? level
            : throw new UsageException($"--log-level '{text}' is not a level: use trace, debug, information, warning or error");
    }

    private static SwarmKey? LoadSwarmKey(ParsedArgs args) => LoadSwarmKey(args.Get("swarm-key"));

    internal static SwarmKey? LoadSwarmKey(string? path)
    {
        if (path is null)
        {
            return null;
        }
        if (!File.Exists(path))
        {
            throw new UsageException($"--swarm-key: no file at '{path}'. Create one with 'potluck swarm-key generate > {path}'");
        }
        var info = new FileInfo(path);
        if (info.Length > 4096)
        {
            throw new UsageException($"--swarm-key: '{path}' is {info.Length} bytes; a swarm.key is under 100 bytes");
        }
        return SwarmKey.TryParse(File.ReadAllText(path), out var key, out var error)
            ? key
            : throw new UsageException($"--swarm-key: '{path}' is not a swarm key: {error}");
    }

    private static Multiaddr ParseAddress(string text, string what)
    {
        if (!Multiaddr.TryParse(text, out var address, out var error))
        {
            throw new UsageException($"{what} '{text}' is not a multiaddr: {error}");
        }
        return address;
    }

    internal static ILoggerFactory CreateLoggers(LogLevel level) => LoggerFactory.Create(b => b
        .SetMinimumLevel(level)
        .AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss ";
        })
        .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace));

    /// <summary>The node's configuration from the config file (if any) and the flags, which win.</summary>
    internal static NodeConfig ParseRunConfig(ParsedArgs args)
    {
        var config = new NodeConfig();
        if (args.Get("config") is { } file)
        {
            if (!File.Exists(file))
            {
                throw new UsageException($"--config: no file at '{file}'");
            }
            if (new FileInfo(file).Length > NodeConfig.MaxConfigFileSize)
            {
                throw new UsageException($"--config: '{file}' is over {NodeConfig.MaxConfigFileSize} bytes");
            }
            try
            {
                config.ApplyFile(File.ReadAllText(file), file);
            }
            catch (FormatException e)
            {
                throw new UsageException($"--config: {e.Message}");
            }
        }
        if (args.Get("data-dir") is { } dir)
        {
            config.DataDir = dir;
        }
        if (args.Has("listen"))
        {
            config.Listen = args.GetAll("listen").Select(a => ParseAddress(a, "--listen")).ToList();
        }
        config.Bootstrap.AddRange(args.GetAll("bootstrap").Select(a => ParseAddress(a, "--bootstrap")));
        foreach (var b in config.Bootstrap)
        {
            if (b.PeerId is null)
            {
                throw new UsageException($"--bootstrap '{b}' needs the peer id at the end: {b}/p2p/12D3KooW… (potluck run prints it as 'Listening on …')");
            }
        }
        if (args.Has("no-mdns"))
        {
            config.Mdns = false;
        }
        if (args.Get("swarm-key") is { } keyPath)
        {
            config.SwarmKeyPath = keyPath;
        }
        return config;
    }

    private static async Task<int> RunNodeAsync(ParsedArgs args, TextWriter stdout, TextWriter stderr)
    {
        var config = ParseRunConfig(args);
        var swarmKey = LoadSwarmKey(config.SwarmKeyPath);
        var level = ParseLogLevel(args, LogLevel.Information);
        PrivateKey key;
        try
        {
            key = PrivateKey.LoadOrCreate(config.IdentityKeyPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            await stderr.WriteLineAsync($"potluck: cannot use data directory '{config.DataDir}': {e.Message}");
            return 1;
        }

        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(level);
        builder.Logging.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss ";
        });
        builder.Logging.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
        // The generic host's start-up chatter (environment, content root) says nothing useful about a node.
        builder.Logging.AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Warning);
        var options = new NodeOptions
        {
            Key = key,
            Listen = config.Listen,
            Bootstrap = config.Bootstrap,
            EnableMdns = config.Mdns,
            SwarmKey = swarmKey,
            DataDir = config.DataDir,
            Topics = [Scheduler.Advertising.AdvertisementProtocol.Topic],
            Compute = new Compute.ComputeNodeOptions
            {
                DataDir = config.DataDir,
                Provide = !args.Has("no-provide"),
                Provider = new Scheduler.Providing.ProviderOptions
                {
                    Cores = args.GetInt("cores", 1, 1, Environment.ProcessorCount * 4),
                    PricePerMegaFuel = args.GetInt("price", 10, 0, 1_000_000_000),
                },
            },
        };
        builder.Services.AddSingleton(new NodeServiceSettings(options, config.DataDir, stdout));
        builder.Services.AddHostedService<NodeService>();
        using var app = builder.Build();
        try
        {
            await app.RunAsync();
        }
        catch (Exception e) when (e is TransportException { Error: TransportError.AddressInUse } || e is SocketException { SocketErrorCode: SocketError.AddressAlreadyInUse })
        {
            await stderr.WriteLineAsync($"potluck: {e.Message}. Another program (or another potluck node) has that port: pick another, e.g. --listen /ip4/0.0.0.0/tcp/{NodeConfig.DefaultPort + 1}");
            return 1;
        }
        catch (Exception e) when (e is IOException or SocketException or ArgumentException)
        {
            await stderr.WriteLineAsync($"potluck: {e.Message}");
            return 1;
        }
        return 0;
    }

    private static async Task<int> IdAsync(ParsedArgs args, TextWriter stdout)
    {
        var config = new NodeConfig();
        if (args.Get("data-dir") is { } dir)
        {
            config.DataDir = dir;
        }
        var key = PrivateKey.LoadOrCreate(config.IdentityKeyPath);
        await stdout.WriteLineAsync(args.Has("cid") ? key.PeerId.ToCidString() : key.PeerId.ToString());
        return 0;
    }

    /// <summary>Starts a short-lived client node with a throwaway identity that listens nowhere.</summary>
    private static Task<PotluckNode> StartClientAsync(ParsedArgs args, ILoggerFactory loggers, CancellationToken ct) =>
        PotluckNode.StartTcpAsync(PrivateKey.Generate(), [], LoadSwarmKey(args), loggers, ct);

    private static async Task<int> PingAsync(ParsedArgs args, TextWriter stdout, TextWriter stderr)
    {
        var target = ParseAddress(args.Positionals[0], "address");
        var count = args.GetInt("count", 4, 1, 10_000);
        using var loggers = CreateLoggers(ParseLogLevel(args, LogLevel.Warning));
        using var cts = ConsoleCancellation();
        await using var node = await StartClientAsync(args, loggers, cts.Token);
        try
        {
            var connection = await node.Host.ConnectAsync(target, cts.Token);
            await stdout.WriteLineAsync($"PING {connection.RemotePeer} ({connection.RemoteAddress})");
            var rtts = new List<TimeSpan>();
            for (var i = 0; i < count; i++)
            {
                var rtt = (await node.Ping.PingAsync(connection.RemotePeer, 1, cts.Token))[0];
                rtts.Add(rtt);
                await stdout.WriteLineAsync($"pong from {connection.RemotePeer}: seq={i + 1} time={rtt.TotalMilliseconds:0.###} ms");
            }
            await stdout.WriteLineAsync($"{count} pings: min/avg/max = {rtts.Min().TotalMilliseconds:0.###}/{rtts.Average(r => r.TotalMilliseconds):0.###}/{rtts.Max().TotalMilliseconds:0.###} ms");
            return 0;
        }
        catch (Exception e) when (e is DialException or IOException or Protocol.ProtocolViolationException or Protocol.ProtocolNotSupportedException or OperationCanceledException)
        {
            await stderr.WriteLineAsync($"potluck ping: {e.Message}");
            return 1;
        }
    }

    private static async Task<int> PerfAsync(ParsedArgs args, TextWriter stdout, TextWriter stderr)
    {
        var target = ParseAddress(args.Positionals[0], "address");
        var upload = args.GetSize("upload", 64L << 20);
        var download = args.GetSize("download", 64L << 20);
        if (upload == 0 && download == 0)
        {
            throw new UsageException("--upload and --download are both 0: nothing to measure");
        }
        using var loggers = CreateLoggers(ParseLogLevel(args, LogLevel.Warning));
        using var cts = ConsoleCancellation();
        await using var node = await StartClientAsync(args, loggers, cts.Token);
        try
        {
            var connection = await node.Host.ConnectAsync(target, cts.Token);
            await stdout.WriteLineAsync($"PERF {connection.RemotePeer} ({connection.RemoteAddress})");
            if (upload > 0)
            {
                var r = await node.Perf.RunAsync(connection.RemotePeer, upload, 0, cts.Token);
                await stdout.WriteLineAsync($"upload:   {ByteSize.Format(upload)} in {r.Elapsed.TotalSeconds:0.###} s = {r.BitsPerSecond / 1e9:0.###} Gbit/s ({upload / r.Elapsed.TotalSeconds / (1 << 20):0.#} MiB/s)");
            }
            if (download > 0)
            {
                var r = await node.Perf.RunAsync(connection.RemotePeer, 0, download, cts.Token);
                await stdout.WriteLineAsync($"download: {ByteSize.Format(download)} in {r.Elapsed.TotalSeconds:0.###} s = {r.BitsPerSecond / 1e9:0.###} Gbit/s ({download / r.Elapsed.TotalSeconds / (1 << 20):0.#} MiB/s)");
            }
            return 0;
        }
        catch (Exception e) when (e is DialException or IOException or Protocol.ProtocolViolationException or Protocol.ProtocolNotSupportedException or OperationCanceledException)
        {
            await stderr.WriteLineAsync($"potluck perf: {e.Message}");
            return 1;
        }
    }

    private static async Task<int> PeersAsync(ParsedArgs args, TextWriter stdout, TextWriter stderr)
    {
        var dataDir = args.Get("data-dir") ?? NodeConfig.DefaultDataDir();
        using var cts = ConsoleCancellation();
        try
        {
            await using var client = await ControlClient.ConnectAsync(dataDir, null, cts.Token);
            var parameters = new System.Text.Json.Nodes.JsonObject { ["ping"] = !args.Has("no-ping") };
            var result = await client.CallAsync(NodeControl.PeersMethod, parameters, ControlJson.Default.PeersResult, cts.Token);
            await stdout.WriteAsync(FormatPeers(result));
            return 0;
        }
        catch (NodeNotRunningException e)
        {
            await stderr.WriteLineAsync($"potluck peers: {e.Message}");
            return 1;
        }
        catch (Exception e) when (e is ControlException or IOException or OperationCanceledException)
        {
            await stderr.WriteLineAsync($"potluck peers: {e.Message}");
            return 1;
        }
    }

    /// <summary>The `potluck peers` table: peer id, direction, address, latency, agent, protocol count.</summary>
    public static string FormatPeers(PeersResult result)
    {
        if (result.Peers.Count == 0)
        {
            return "No connected peers." + Environment.NewLine;
        }
        string[] header = ["PEER ID", "DIRECTION", "ADDRESS", "LATENCY", "AGENT", "PROTOCOLS"];
        var rows = result.Peers.Select(p => new[]
        {
            p.PeerId,
            p.Direction,
            p.Address,
            p.LatencyMs is { } ms ? $"{ms:0.###} ms" : "-",
            string.IsNullOrEmpty(p.Agent) ? "-" : Sanitize(p.Agent),
            p.Protocols.Count.ToString(System.Globalization.CultureInfo.InvariantCulture),
        }).ToList();
        var widths = header.Select((h, i) => Math.Max(h.Length, rows.Max(r => r[i].Length))).ToArray();
        var text = new System.Text.StringBuilder();
        foreach (var row in rows.Prepend(header))
        {
            text.AppendLine(string.Join("  ", row.Select((cell, i) => i == row.Length - 1 ? cell : cell.PadRight(widths[i]))).TrimEnd());
        }
        text.AppendLine($"{rows.Count} peer{(rows.Count == 1 ? "" : "s")}");
        return text.ToString();
    }

    /// <summary>A remote-chosen string fit for a terminal: no control characters, at most 40 characters.</summary>
    private static string Sanitize(string s)
    {
        var clean = new string(s.Select(c => char.IsControl(c) ? '?' : c).ToArray());
        return clean.Length <= 40 ? clean : clean[..39] + "…";
    }

    private static async Task<int> SwarmKeyAsync(ParsedArgs args, TextWriter stdout)
    {
        if (args.Positionals[0] != "generate")
        {
            throw new UsageException($"unknown swarm-key action '{args.Positionals[0]}': use 'potluck swarm-key generate > swarm.key'");
        }
        await stdout.WriteAsync(SwarmKey.Generate().ToFileText());
        return 0;
    }

    private static CancellationTokenSource ConsoleCancellation()
    {
        var cts = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            cts.Cancel();
        };
        return cts;
    }
}

/// <summary>`--help` on a command: print its help and exit 0.</summary>
public sealed class HelpRequested : Exception
{
    public HelpRequested(string text) : base(text) { }
}
