using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Potluck.Node.Interop;
using Potluck.Protocol.Multiformats;

namespace Potluck.Node.Cli;

/// <summary>
/// `potluck transport-interop`: Potluck's test app for libp2p's transport-interop suite
/// (https://github.com/libp2p/unified-testing, transport/; the contract of libp2p/test-plans). Configured by the
/// environment the suite sets: IS_DIALER, REDIS_ADDR, TEST_KEY, TRANSPORT, SECURE_CHANNEL, MUXER, LISTENER_IP and
/// TEST_TIMEOUT_SECS. The listener listens, publishes its full address with <c>RPUSH &lt;TEST_KEY&gt;_listener_multiaddr</c>
/// and waits; the dialer takes it with <c>BLPOP</c>, connects, pings once and prints the suite's YAML:
/// <c>latency:</c> with <c>handshake_plus_one_rtt</c>, <c>ping_rtt</c> and <c>unit: ms</c>. Exit 0 on success.
/// </summary>
internal sealed class TransportInteropCommand(CliContext context) : PotluckCommand("transport-interop",
    "Be a test app of libp2p's transport-interop suite (configured by IS_DIALER, REDIS_ADDR, TEST_KEY, TRANSPORT, " +
    "SECURE_CHANNEL, MUXER, LISTENER_IP).", context)
{
    public override string? HelpNotes =>
        "Supported: TRANSPORT=tcp, SECURE_CHANNEL=noise, MUXER=yamux. Logs go to stderr; stdout carries only the dialer's latency YAML.";

    /// <summary>The environment the suite sets, read and checked.</summary>
    internal sealed record Settings(bool IsDialer, string RedisAddress, string TestKey, string ListenerIp, TimeSpan Timeout)
    {
        public string RedisKey => $"{TestKey}_listener_multiaddr";

        public static Settings Read(Func<string, string?> env)
        {
            string Required(string name) => env(name) is { Length: > 0 } v ? v : throw new UsageException($"{name} is not set (the transport-interop suite sets it)");
            var transport = Required("TRANSPORT");
            if (transport != "tcp")
            {
                throw new UsageException($"TRANSPORT={transport}: Potluck's transport is tcp");
            }
            var secure = Required("SECURE_CHANNEL");
            if (secure != "noise")
            {
                throw new UsageException($"SECURE_CHANNEL={secure}: Potluck secures connections with noise (tls is not available yet)");
            }
            var muxer = Required("MUXER");
            if (muxer != "yamux")
            {
                throw new UsageException($"MUXER={muxer}: Potluck multiplexes with yamux (mplex is not available)");
            }
            var isDialer = Required("IS_DIALER") switch
            {
                "true" => true,
                "false" => false,
                var other => throw new UsageException($"IS_DIALER={other}: true or false"),
            };
            var seconds = 180;
            if (env("TEST_TIMEOUT_SECS") is { Length: > 0 } t
                && (!int.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out seconds) || seconds is < 1 or > 3600))
            {
                throw new UsageException($"TEST_TIMEOUT_SECS={t}: a whole number of seconds, 1 to 3600");
            }
            var ip = env("LISTENER_IP") is { Length: > 0 } i ? i : "0.0.0.0";
            if (!isDialer && !System.Net.IPAddress.TryParse(ip, out _))
            {
                throw new UsageException($"LISTENER_IP={ip}: not an IP address");
            }
            return new Settings(isDialer, env("REDIS_ADDR") is { Length: > 0 } r ? r : "redis:6379", Required("TEST_KEY"), ip, TimeSpan.FromSeconds(seconds));
        }
    }

    protected override async Task<int> ExecuteAsync(ParseResult result, CancellationToken ct)
    {
        var settings = Settings.Read(Environment.GetEnvironmentVariable);
        using var loggers = Commands.CreateLoggers(LogLevel.Warning);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(settings.Timeout);
        await using var redis = await RespClient.ConnectAsync(settings.RedisAddress, timeout.Token);
        var listen = settings.IsDialer ? Array.Empty<Multiaddr>() : [Multiaddr.Parse($"/ip{(settings.ListenerIp.Contains(':') ? 6 : 4)}/{settings.ListenerIp}/tcp/0")];
        var builder = PotluckNode.CreateBuilder();
        builder.Services.AddSingleton(loggers);
        builder.Configure(o => o with
        {
            Listen = listen,
            Discovery = o.Discovery with { Mdns = false },
            Protocols = o.Protocols with { Gossipsub = false, Kademlia = false, Perf = false },
            Compute = o.Compute with { Enabled = false },
        });
        await using var node = builder.Build();
        await node.StartAsync(timeout.Token);
        return settings.IsDialer ? await DialAsync(node, redis, settings, timeout.Token) : await ListenAsync(node, redis, settings, timeout.Token, ct);
    }

    private async Task<int> ListenAsync(PotluckNode node, RespClient redis, Settings settings, CancellationToken timeout, CancellationToken ct)
    {
        // Publish an address the dialer can reach: the bound one (with its port), not a wildcard.
        var address = node.FullAddresses.FirstOrDefault(a => a.ToTcpEndPoint() is { } e && !e.Address.Equals(System.Net.IPAddress.Any) && !e.Address.Equals(System.Net.IPAddress.IPv6Any))
            ?? node.FullAddresses[0];
        await redis.CommandAsync(timeout, "DEL", settings.RedisKey);
        await redis.CommandAsync(timeout, "RPUSH", settings.RedisKey, address.ToString());
        await Error.WriteLineAsync($"listening on {address}; published to {settings.RedisKey}");
        try
        {
            await Task.Delay(Timeout.Infinite, timeout); // until the suite stops us, or the test's time is up
        }
        catch (OperationCanceledException)
        {
        }
        return 0;
    }

    private async Task<int> DialAsync(PotluckNode node, RespClient redis, Settings settings, CancellationToken ct)
    {
        var seconds = Math.Max(1, (int)Math.Min(settings.Timeout.TotalSeconds, 180)).ToString(CultureInfo.InvariantCulture);
        if (await redis.CommandAsync(ct, "BLPOP", settings.RedisKey, seconds) is not object?[] { Length: 2 } reply || reply[1] is not string text)
        {
            await Error.WriteLineAsync($"transport-interop: no listener address in {settings.RedisKey} after {seconds} s");
            return 1;
        }
        if (!Multiaddr.TryParse(text, out var target, out var error))
        {
            await Error.WriteLineAsync($"transport-interop: the listener published '{text}', not a multiaddr ({error})");
            return 1;
        }
        var started = Stopwatch.GetTimestamp();
        await Error.WriteLineAsync($"node {node.PeerId} dials: {target}");
        var connection = await node.Host.ConnectAsync(target, ct);
        var rtt = (await node.Ping.PingAsync(connection.RemotePeer, 1, ct))[0];
        var handshakePlusOneRtt = Stopwatch.GetElapsedTime(started);
        await Out.WriteLineAsync("latency:");
        await Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"  handshake_plus_one_rtt: {handshakePlusOneRtt.TotalMilliseconds:0.###}"));
        await Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"  ping_rtt: {rtt.TotalMilliseconds:0.###}"));
        await Out.WriteLineAsync("  unit: ms");
        await Out.FlushAsync(ct);
        return 0;
    }
}
