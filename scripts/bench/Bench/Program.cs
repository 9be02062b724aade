using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Interop.Tests;
using Potluck.Node;
using Potluck.Node.Hosting;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Transport.Tcp;

namespace Potluck.Benchmarks;

/// <summary>
/// Side-by-side scenario benchmark on loopback, in one run: single-stream /perf/1.0.0 throughput
/// Potluck↔Potluck and js-libp2p↔js-libp2p, raw TCP as the ceiling, and connection handshakes per second.
/// Machines here are shared and noisy: compare the ratios, which come from one run.
/// </summary>
public static class Program
{
    public static async Task<int> Main(string[] args)
    {
        var size = args.Length > 0 && long.TryParse(args[0], CultureInfo.InvariantCulture, out var s) ? s : 256L << 20;
        var runs = args.Length > 1 && int.TryParse(args[1], CultureInfo.InvariantCulture, out var r) ? r : 3;
        var handshakes = args.Length > 2 && int.TryParse(args[2], CultureInfo.InvariantCulture, out var h) ? h : 2000;
        // Optional fourth argument: which parts to run (comma-separated: raw, potluck, js, hs, jshs, and idle or micro, which
        // run only when named); default raw, potluck, js, hs, jshs.
        var parts = (args.Length > 3 ? args[3] : "raw,potluck,js,hs,jshs").Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        bool Run(string part) => parts.Contains(part, StringComparer.OrdinalIgnoreCase);
        using var overall = new CancellationTokenSource(TimeSpan.FromMinutes(15));
        var ct = overall.Token;

        Console.WriteLine($"# Potluck benchmark — {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, .NET {Environment.Version}");
        Console.WriteLine($"# payload {size >> 20} MiB per direction, median of {runs} runs; {handshakes} handshakes");
        Console.WriteLine();

        using var allocations = Environment.GetEnvironmentVariable("BENCH_ALLOCATIONS") == "1" ? new AllocationListener() : null;
        if (Run("micro"))
        {
            Micro.Run();
        }
        if (Run("idle"))
        {
            // Memory, not speed: bytes per idle connection end (BENCH_IDLE="connections,nodes", default 1000,16).
            var idle = (Environment.GetEnvironmentVariable("BENCH_IDLE") ?? "1000,16").Split(',');
            await IdleConnections.RunAsync(int.Parse(idle[0], CultureInfo.InvariantCulture), int.Parse(idle[1], CultureInfo.InvariantCulture), ct);
        }
        var raw = Run("raw") ? await MedianAsync(runs, () => RawTcpAsync(size, ct)) : (Up: double.NaN, Down: double.NaN);
        var potluck = Run("potluck") ? await MedianAsync(runs, () => PotluckPerfAsync(size, ct)) : (Up: double.NaN, Down: double.NaN);
        var js = Run("js") ? await MedianAsync(runs, () => JsPerfAsync(size, ct)) : (Up: double.NaN, Down: double.NaN);
        var hs = Run("hs") ? await PotluckHandshakesAsync(handshakes, ct) : double.NaN;
        var jsHs = Run("jshs") ? await JsHandshakesAsync(Math.Min(handshakes, 300), ct) : double.NaN;

        allocations?.Print();
        Console.WriteLine("| single stream, loopback | upload MiB/s | download MiB/s |");
        Console.WriteLine("| --- | ---: | ---: |");
        Console.WriteLine($"| raw TCP (ceiling) | {raw.Up:0} | {raw.Down:0} |");
        Console.WriteLine($"| Potluck ↔ Potluck (/perf/1.0.0, Noise + Yamux) | {potluck.Up:0} | {potluck.Down:0} |");
        Console.WriteLine($"| js-libp2p ↔ js-libp2p (/perf/1.0.0, Noise + Yamux) | {js.Up:0} | {js.Down:0} |");
        Console.WriteLine();
        Console.WriteLine($"Potluck / js-libp2p: upload {potluck.Up / js.Up:0.00}×, download {potluck.Down / js.Down:0.00}×");
        Console.WriteLine($"Potluck / raw TCP: upload {potluck.Up / raw.Up:P0}, download {potluck.Down / raw.Down:P0}");
        Console.WriteLine($"Handshakes (TCP + multistream + Noise XX + Yamux) per second: Potluck {hs:0}, js-libp2p {jsHs:0} ({hs / jsHs:0.0}×)");
        return 0;
    }

    private static async Task<(double Up, double Down)> MedianAsync(int runs, Func<Task<(double Up, double Down)>> run)
    {
        var results = new List<(double Up, double Down)>();
        for (var i = 0; i < runs; i++)
        {
            var cpu = Environment.CpuUsage.TotalTime;
            var allocated = GC.GetTotalAllocatedBytes();
            var gcs = GC.CollectionCount(0);
            var result = await run();
            Console.WriteLine($"#   run {i + 1}: {result.Up:0} / {result.Down:0} MiB/s ({(Environment.CpuUsage.TotalTime - cpu).TotalSeconds:0.00} s of this process's CPU, " +
                              $"{(GC.GetTotalAllocatedBytes() - allocated) >> 20} MiB allocated, {GC.CollectionCount(0) - gcs} GCs)");
            results.Add(result);
        }
        return (results.Select(x => x.Up).Order().ElementAt(runs / 2), results.Select(x => x.Down).Order().ElementAt(runs / 2));
    }

    private static double MiBps(long bytes, TimeSpan elapsed) => bytes / elapsed.TotalSeconds / (1 << 20);

    /// <summary>One socket pair, 1 MiB writes, the reader drains: what the kernel's loopback gives one stream.</summary>
    private static async Task<(double Up, double Down)> RawTcpAsync(long size, CancellationToken ct)
    {
        async Task<double> OneWay()
        {
            using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            listener.Listen();
            using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            await client.ConnectAsync(listener.LocalEndPoint!, ct);
            using var server = await listener.AcceptAsync(ct);
            var sw = Stopwatch.StartNew();
            var send = Task.Run(async () =>
            {
                var buffer = new byte[1 << 20];
                for (long sent = 0; sent < size; sent += buffer.Length)
                {
                    await client.SendAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, size - sent)), ct);
                }
                client.Shutdown(SocketShutdown.Send);
            }, ct);
            var recv = new byte[1 << 20];
            long total = 0;
            int n;
            while ((n = await server.ReceiveAsync(recv, ct)) > 0)
            {
                total += n;
            }
            await send;
            return MiBps(total, sw.Elapsed);
        }
        return (await OneWay(), await OneWay());
    }

    private static async Task<(double Up, double Down)> PotluckPerfAsync(long size, CancellationToken ct)
    {
        await using var server = await PotluckNode.CreateBuilder()
            .Configure(o => o with { Listen = [Multiaddr.Parse("/ip4/127.0.0.1/tcp/0")] })
            .StartAsync(ct);
        await using var client = await PotluckNode.CreateBuilder().StartAsync(ct);
        var connection = await client.Host.ConnectAsync(server.FullAddresses[0], ct);
        // Warm up until tiered compilation has optimized the data path: with 8 MiB the first run measured tier-0 code.
        await client.Perf.RunAsync(connection.RemotePeer, 64 << 20, 64 << 20, ct);
        var up = await client.Perf.RunAsync(connection.RemotePeer, size, 0, ct);
        var down = await client.Perf.RunAsync(connection.RemotePeer, 0, size, ct);
        return (MiBps(size, up.Elapsed), MiBps(size, down.Elapsed));
    }

    private static async Task<(double Up, double Down)> JsPerfAsync(long size, CancellationToken ct)
    {
        await using var server = await JsPeer.StartAsync(ct: ct);
        await using var client = await JsPeer.StartAsync(ct: ct);
        await client.DialAsync(server.Addr, ct);
        await client.PerfAsync(server.Addr, 8 << 20, 8 << 20, ct);
        var timeout = TimeSpan.FromMinutes(5);
        var up = await client.PerfAsync(server.Addr, size, 0, ct, timeout);
        var down = await client.PerfAsync(server.Addr, 0, size, ct, timeout);
        return (MiBps(size, up.Total), MiBps(size, down.Total));
    }

    /// <summary>Fresh connections to one listener from 8 client identities, 8 dials in flight.</summary>
    private static async Task<double> PotluckHandshakesAsync(int count, CancellationToken ct)
    {
        // Bare hosts, as before the composition root: the handshake alone (no identify, ping or gossip on each connection).
        PotluckNodeBuilder Bare() => PotluckNode.CreateBuilder().Configure(o => o with
        {
            Protocols = ProtocolsOptions.HostOnly,
            Discovery = o.Discovery with { PingNewConnections = false },
            Host = o.Host with
            {
                MaxConnections = 10_000,
                MaxPendingInbound = 1_000,
                // Every client dials from 127.0.0.1, reconnecting at once: the per-address, per-subnet and per-peer
                // limits that guard a real node against one crowd would refuse the benchmark's own dials.
                Resources = o.Host.Resources with
                {
                    MaxConnectionsPerPeer = 64,
                    MaxConnectionsPerAddress = 10_000,
                    MaxConnectionsPerSubnet = 10_000,
                    MaxPendingInboundPerAddress = 1_000,
                    MaxPendingInboundPerSubnet = 1_000,
                },
            },
        });
        await using var serverNode = await Bare().Configure(o => o with { Listen = [Multiaddr.Parse("/ip4/127.0.0.1/tcp/0")] }).StartAsync(ct);
        var server = serverNode.Host;
        var target = server.ListenAddresses[0].WithPeer(server.PeerId);
        const int parallel = 8;
        var nodes = new List<PotluckNode>();
        for (var i = 0; i < parallel; i++)
        {
            nodes.Add(await Bare().StartAsync(ct));
        }
        var clients = nodes.Select(n => n.Host).ToList();
        async Task Dial(Libp2pHost c, int n)
        {
            for (var i = 0; i < n; i++)
            {
                var conn = await c.ConnectAsync(target, ct);
                await conn.CloseAsync();
            }
        }
        // Warm-up long enough for tiered compilation to reach optimized code (BouncyCastle's Ed25519 verify is
        // ~40% slower in tier 0): a 160-handshake warm-up measured mostly unoptimized code.
        await Task.WhenAll(clients.Select(c => Dial(c, Math.Max(20, count / parallel / 2))));
        var cpu = Environment.CpuUsage.TotalTime;
        var sw = Stopwatch.StartNew();
        await Task.WhenAll(clients.Select(c => Dial(c, count / parallel)));
        var rate = count / parallel * parallel / sw.Elapsed.TotalSeconds;
        Console.WriteLine($"#   handshakes: {rate:0}/s, {(Environment.CpuUsage.TotalTime - cpu).TotalMicroseconds / (count / parallel * parallel):0} µs of this process's CPU per handshake (both ends)");
        foreach (var n in nodes)
        {
            await n.DisposeAsync();
        }
        return rate;
    }

    /// <summary>js dials and hangs up sequentially; the same measure as ours, one dial in flight per js process.</summary>
    private static async Task<double> JsHandshakesAsync(int count, CancellationToken ct)
    {
        await using var server = await JsPeer.StartAsync(ct: ct);
        const int parallel = 4;
        var clients = await Task.WhenAll(Enumerable.Range(0, parallel).Select(_ => JsPeer.StartAsync(ct: ct)));
        async Task Dial(JsPeer c, int n)
        {
            for (var i = 0; i < n; i++)
            {
                await c.DialAsync(server.Addr, ct);
                await c.HangupAsync(server.PeerId, ct);
            }
        }
        await Task.WhenAll(clients.Select(c => Dial(c, 5)));
        var sw = Stopwatch.StartNew();
        await Task.WhenAll(clients.Select(c => Dial(c, count / parallel)));
        var rate = count / parallel * parallel / sw.Elapsed.TotalSeconds;
        foreach (var c in clients)
        {
            await c.DisposeAsync();
        }
        return rate;
    }
}
