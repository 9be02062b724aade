using System.CommandLine;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Potluck.Node.Hosting;
using Potluck.Protocol.Host;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Pnet;

namespace Potluck.Node.Cli;

/// <summary>`potluck ping` and `potluck perf`: a short-lived client node with a throwaway identity that listens nowhere.</summary>
internal static class NetworkCommands
{
    private const string AddressHelp = "the full address of a libp2p peer, e.g. /ip4/127.0.0.1/tcp/4100/p2p/12D3KooW… (potluck run prints it)";

    private static async Task<PotluckNode> StartClientAsync(SwarmKey? swarmKey, ILoggerFactory loggers, CancellationToken ct)
    {
        var builder = PotluckNode.CreateBuilder();
        builder.Services.AddSingleton(loggers);
        if (swarmKey is not null)
        {
            builder.UseSwarmKey(swarmKey);
        }
        var node = builder.Build();
        await node.StartAsync(ct);
        return node;
    }

    private static bool IsNetworkFailure(Exception e) =>
        e is DialException or IOException or Protocol.ProtocolViolationException or Protocol.ProtocolNotSupportedException;

    internal sealed class PingCommand : PotluckCommand
    {
        public PingCommand(CliContext context) : base("ping", "Measure round-trip times to a libp2p peer (/ipfs/ping/1.0.0).", context)
        {
            Arguments.Add(Address);
            Options.Add(Count);
            Options.Add(SwarmKey);
            Options.Add(LogLevel);
            Options.Add(Json);
        }

        public Option<bool> Json { get; } = HomeCommands.JsonOption();

        public Argument<Multiaddr> Address { get; } = CliOptions.Address("the address to ping: " + AddressHelp);

        public Option<int?> Count { get; } = CliOptions.Int("--count", "n", "how many pings (default 4)", 1, 10_000);

        public Option<string> SwarmKey { get; } = Commands.SwarmKeyOption("dial into the private network of this swarm.key");

        public Option<LogLevel?> LogLevel { get; } = CliOptions.LogLevel(Microsoft.Extensions.Logging.LogLevel.Warning);

        protected override async Task<int> ExecuteAsync(ParseResult result, CancellationToken ct)
        {
            var target = result.GetValue(Address)!;
            var count = result.GetValue(Count) ?? 4;
            var swarmKey = Commands.LoadSwarmKey(result.GetValue(SwarmKey));
            using var loggers = Commands.CreateLoggers(result.GetValue(LogLevel) ?? Microsoft.Extensions.Logging.LogLevel.Warning);
            try
            {
                await using var node = await StartClientAsync(swarmKey, loggers, ct);
                var connection = await node.Host.ConnectAsync(target, ct);
                var json = result.GetValue(Json);
                if (!json)
                {
                    await Out.WriteLineAsync($"PING {connection.RemotePeer} ({connection.RemoteAddress})");
                }
                var rtts = new List<TimeSpan>();
                for (var i = 0; i < count; i++)
                {
                    var rtt = (await node.Ping.PingAsync(connection.RemotePeer, 1, ct))[0];
                    rtts.Add(rtt);
                    if (!json)
                    {
                        await Out.WriteLineAsync($"pong from {connection.RemotePeer}: seq={i + 1} time={rtt.TotalMilliseconds:0.###} ms");
                    }
                }
                if (json)
                {
                    await HomeCommands.WriteJsonAsync(Out, new System.Text.Json.Nodes.JsonObject
                    {
                        ["peer_id"] = connection.RemotePeer.ToString(),
                        ["address"] = connection.RemoteAddress.ToString(),
                        ["rtt_ms"] = new System.Text.Json.Nodes.JsonArray([.. rtts.Select(r => (System.Text.Json.Nodes.JsonNode)Math.Round(r.TotalMilliseconds, 3))]),
                        ["min_ms"] = Math.Round(rtts.Min().TotalMilliseconds, 3),
                        ["avg_ms"] = Math.Round(rtts.Average(r => r.TotalMilliseconds), 3),
                        ["max_ms"] = Math.Round(rtts.Max().TotalMilliseconds, 3),
                    });
                    return 0;
                }
                await Out.WriteLineAsync($"{count} pings: min/avg/max = {rtts.Min().TotalMilliseconds:0.###}/{rtts.Average(r => r.TotalMilliseconds):0.###}/{rtts.Max().TotalMilliseconds:0.###} ms");
                return 0;
            }
            catch (Exception e) when (IsNetworkFailure(e))
            {
                await Error.WriteLineAsync($"potluck ping: {e.Message}");
                return 1;
            }
        }
    }

    internal sealed class PerfCommand : PotluckCommand
    {
        public PerfCommand(CliContext context) : base("perf", "Measure throughput to a libp2p peer each way (/perf/1.0.0).", context)
        {
            Arguments.Add(Address);
            Options.Add(Upload);
            Options.Add(Download);
            Options.Add(SwarmKey);
            Options.Add(LogLevel);
            Options.Add(Json);
        }

        public Option<bool> Json { get; } = HomeCommands.JsonOption();

        public Argument<Multiaddr> Address { get; } = CliOptions.Address("the address to measure: " + AddressHelp);

        public Option<long?> Upload { get; } = CliOptions.Size("--upload", "bytes to send, e.g. 64MiB or 1GB (default 64MiB; 0 skips the upload)");

        public Option<long?> Download { get; } = CliOptions.Size("--download", "bytes to receive, e.g. 64MiB or 1GB (default 64MiB; 0 skips the download)");

        public Option<string> SwarmKey { get; } = Commands.SwarmKeyOption("dial into the private network of this swarm.key");

        public Option<LogLevel?> LogLevel { get; } = CliOptions.LogLevel(Microsoft.Extensions.Logging.LogLevel.Warning);

        protected override async Task<int> ExecuteAsync(ParseResult result, CancellationToken ct)
        {
            var target = result.GetValue(Address)!;
            var upload = result.GetValue(Upload) ?? 64L << 20;
            var download = result.GetValue(Download) ?? 64L << 20;
            if (upload == 0 && download == 0)
            {
                throw new UsageException("--upload and --download are both 0: nothing to measure");
            }
            var swarmKey = Commands.LoadSwarmKey(result.GetValue(SwarmKey));
            using var loggers = Commands.CreateLoggers(result.GetValue(LogLevel) ?? Microsoft.Extensions.Logging.LogLevel.Warning);
            try
            {
                await using var node = await StartClientAsync(swarmKey, loggers, ct);
                var connection = await node.Host.ConnectAsync(target, ct);
                var json = result.GetValue(Json);
                var report = new System.Text.Json.Nodes.JsonObject
                {
                    ["peer_id"] = connection.RemotePeer.ToString(),
                    ["address"] = connection.RemoteAddress.ToString(),
                };
                if (!json)
                {
                    await Out.WriteLineAsync($"PERF {connection.RemotePeer} ({connection.RemoteAddress})");
                }
                if (upload > 0)
                {
                    var r = await node.Perf.RunAsync(connection.RemotePeer, upload, 0, ct);
                    report["upload"] = new System.Text.Json.Nodes.JsonObject { ["bytes"] = upload, ["seconds"] = r.Elapsed.TotalSeconds, ["bits_per_second"] = r.BitsPerSecond };
                    if (!json)
                    {
                        await Out.WriteLineAsync($"upload:   {ByteSize.Format(upload)} in {r.Elapsed.TotalSeconds:0.###} s = {r.BitsPerSecond / 1e9:0.###} Gbit/s ({upload / r.Elapsed.TotalSeconds / (1 << 20):0.#} MiB/s)");
                    }
                }
                if (download > 0)
                {
                    var r = await node.Perf.RunAsync(connection.RemotePeer, 0, download, ct);
                    report["download"] = new System.Text.Json.Nodes.JsonObject { ["bytes"] = download, ["seconds"] = r.Elapsed.TotalSeconds, ["bits_per_second"] = r.BitsPerSecond };
                    if (!json)
                    {
                        await Out.WriteLineAsync($"download: {ByteSize.Format(download)} in {r.Elapsed.TotalSeconds:0.###} s = {r.BitsPerSecond / 1e9:0.###} Gbit/s ({download / r.Elapsed.TotalSeconds / (1 << 20):0.#} MiB/s)");
                    }
                }
                if (json)
                {
                    await HomeCommands.WriteJsonAsync(Out, report);
                }
                return 0;
            }
            catch (Exception e) when (IsNetworkFailure(e))
            {
                await Error.WriteLineAsync($"potluck perf: {e.Message}");
                return 1;
            }
        }
    }
}
