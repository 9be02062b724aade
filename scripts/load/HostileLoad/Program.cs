using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Ping;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport.Tcp;

namespace Potluck.HostileLoad;

/// <summary>
/// Hostile load against a real `potluck run` process on loopback (bounded in count and time; not a timed test). The node
/// runs as its own process so its memory (VmRSS from /proc) is the node's alone; the attackers and one honest peer run
/// here. Prints one table. Usage: HostileLoad &lt;potluck dll&gt; [peers=1000] [random=10000] [stalled=128] [streams=2000]
/// </summary>
public static partial class Program
{
    private static readonly Random Rng = new(42);

    public static async Task<int> Main(string[] args)
    {
        var potluck = args[0];
        var peers = args.Length > 1 ? int.Parse(args[1]) : 1000;
        var randomConnections = args.Length > 2 ? int.Parse(args[2]) : 10_000;
        var stalled = args.Length > 3 ? int.Parse(args[3]) : 128;
        var streams = args.Length > 4 ? int.Parse(args[4]) : 2000;
        var dataDir = Directory.CreateTempSubdirectory("potluck-load-").FullName;
        using var node = StartNode(potluck, dataDir, peers);
        var rows = new List<(string Scenario, string Result)>();
        try
        {
            var address = await ReadAddressAsync(node);
            var target = address.PeerId!.Value;
            var endpoint = address.ToTcpEndPoint()!;
            var runtime = NodeRuntime.System;
            await using var honest = NewHost(runtime);
            var ping = new PingService(honest, new PingOptions(), runtime, NullLoggerFactory.Instance);
            await honest.ConnectAsync(address, CancellationToken.None);
            await Task.Delay(500);
            var rssIdle = Rss(node);
            var unloaded = await PingP99Async(ping, target, 300);
            rows.Add(("idle node, one honest peer", $"RSS {Mib(rssIdle)}; honest ping p50 {unloaded.P50:F3} ms, p99 {unloaded.P99:F3} ms"));

            // 1. Many peers, each holding a connection and a stream.
            var clients = new List<Libp2pHost>();
            var held = new List<IStream>();
            var sw = Stopwatch.StartNew();
            var connected = 0;
            foreach (var batch in Enumerable.Range(0, peers).Chunk(4)) // within one address's share of handshakes in flight
            {
                var results = await Task.WhenAll(batch.Select(async _ =>
                {
                    var c = NewHost(runtime);
                    lock (clients) clients.Add(c);
                    try
                    {
                        await c.ConnectAsync(address, CancellationToken.None);
                        var s = await c.NewStreamAsync(target, [PingService.ProtocolId], CancellationToken.None);
                        lock (held) held.Add(s);
                        return true;
                    }
                    catch (Exception e) when (Failures.IsRemote(e))
                    {
                        return false;
                    }
                }));
                connected += results.Count(ok => ok);
            }
            var opened = sw.Elapsed;
            await Task.Delay(1000);
            var rssPeers = Rss(node);
            var loaded = await PingP99Async(ping, target, 300);
            rows.Add(($"{peers:N0} peers each holding a connection and a stream", $"{connected:N0} held (opened in {opened.TotalSeconds:F1} s); RSS {Mib(rssPeers)}, " +
                $"{(rssPeers - rssIdle) / 1024.0 / Math.Max(1, connected):F1} KiB per connection; honest ping p50 {loaded.P50:F3} ms, p99 {loaded.P99:F3} ms " +
                $"({loaded.P99 / unloaded.P99:F2}× unloaded)"));
            foreach (var s in held) await s.DisposeAsync();
            foreach (var c in clients) await c.DisposeAsync();
            await Task.Delay(1000);

            // 2. Random bytes on many connections.
            sw.Restart();
            long closedByNode = 0;
            foreach (var batch in Enumerable.Range(0, randomConnections).Chunk(200))
            {
                var closed = await Task.WhenAll(batch.Select(_ => RandomBytesAsync(endpoint)));
                closedByNode += closed.Count(c => c);
            }
            var randomTime = sw.Elapsed;
            var rssRandom = Rss(node);
            var afterRandom = await PingP99Async(ping, target, 100);
            rows.Add(($"{randomConnections:N0} connections sending random bytes", $"{closedByNode:N0} closed by the node within 2 s (the rest could still begin a handshake), all in {randomTime.TotalSeconds:F1} s; RSS {Mib(rssRandom)}; " +
                $"honest ping afterwards p99 {afterRandom.P99:F3} ms"));

            // 3. Stalled handshakes: the multistream header, then nothing.
            var stalls = new List<(Socket Socket, Task<TimeSpan> Closed)>();
            var started = Stopwatch.StartNew();
            for (var i = 0; i < stalled; i++)
            {
                // From 127.0.0.2: another address than the newcomer's below (all of 127/8 is this machine).
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                socket.Bind(new IPEndPoint(IPAddress.Parse("127.0.0.2"), 0));
                await socket.ConnectAsync(endpoint);
                await socket.SendAsync((byte[])[19, .. "/multistream/1.0.0\n"u8]);
                stalls.Add((socket, WhenClosedAsync(socket, started)));
            }
            var duringStall = await PingP99Async(ping, target, 50);
            var newcomer = NewHost(runtime);
            var newcomerPing = new PingService(newcomer, new PingOptions(), runtime, NullLoggerFactory.Instance);
            var joinWatch = Stopwatch.StartNew();
            await newcomer.ConnectAsync(address, CancellationToken.None);
            var newcomerRtt = await newcomerPing.PingAsync(target, 1, CancellationToken.None);
            var joined = joinWatch.Elapsed;
            var closedTimes = await Task.WhenAll(stalls.Select(s => s.Closed));
            var immediate = closedTimes.Count(t => t < TimeSpan.FromSeconds(1));
            rows.Add(($"{stalled} stalled handshakes from one address (127.0.0.2)", $"{immediate} refused at once (per-address handshake share), the rest dropped at " +
                $"{closedTimes.Where(t => t >= TimeSpan.FromSeconds(1)).DefaultIfEmpty().Max().TotalSeconds:F1} s; meanwhile a new peer connected and pinged in {joined.TotalMilliseconds:F0} ms " +
                $"(rtt {newcomerRtt[0].TotalMilliseconds:F2} ms), honest p99 {duringStall.P99:F3} ms"));
            foreach (var s in stalls) s.Socket.Dispose();
            await newcomer.DisposeAsync();

            // 4. One peer opening streams past its limits.
            await using var greedy = NewHost(runtime);
            await greedy.ConnectAsync(address, CancellationToken.None);
            var ok = 0;
            var refused = 0;
            var greedyStreams = new List<IStream>();
            for (var i = 0; i < streams; i++)
            {
                try
                {
                    var s = await greedy.NewStreamAsync(target, [PingService.ProtocolId], CancellationToken.None);
                    greedyStreams.Add(s);
                    await s.Output.WriteAsync(new byte[32]);
                    ok++;
                }
                catch (Exception e) when (Failures.IsRemote(e))
                {
                    refused++;
                }
            }
            await Task.Delay(500);
            var alive = 0;
            foreach (var s in greedyStreams)
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(2));
                try
                {
                    var r = await s.Input.ReadAsync(cts.Token);
                    alive += r.Buffer.Length >= 32 ? 1 : 0;
                }
                catch (Exception e) when (Failures.IsRemote(e) || e is OperationCanceledException)
                {
                }
            }
            var afterStreams = await PingP99Async(ping, target, 50);
            rows.Add(($"one peer opening {streams:N0} ping streams", $"{alive} served (the per-protocol limit), {streams - alive:N0} refused or reset ({refused} at open); " +
                $"RSS {Mib(Rss(node))}; honest ping p99 {afterStreams.P99:F3} ms"));
            foreach (var s in greedyStreams) await s.DisposeAsync();

            rows.Add(("node still up", node.HasExited ? "NO: the node exited" : $"yes; RSS {Mib(Rss(node))}"));
        }
        finally
        {
            if (!node.HasExited)
            {
                node.Kill(entireProcessTree: true);
            }
            await node.WaitForExitAsync();
            Directory.Delete(dataDir, true);
        }
        Console.WriteLine();
        Console.WriteLine("| scenario | result |");
        Console.WriteLine("| --- | --- |");
        foreach (var (scenario, result) in rows)
        {
            Console.WriteLine($"| {scenario} | {result} |");
        }
        return 0;
    }

    private static Libp2pHost NewHost(NodeRuntime runtime) =>
        Libp2pHost.Create(PrivateKey.Generate(), [new TcpTransport(new TcpTransportOptions(), runtime)], new Libp2pHostSettings(), runtime, NullLoggerFactory.Instance);

    private static Process StartNode(string potluck, string dataDir, int peers)
    {
        var info = new ProcessStartInfo("dotnet", [potluck, "run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--no-provide", "--data-dir", dataDir, "--log-level", "warning"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        // Every attacker here comes from 127.0.0.1: the scenario of many distinct peers needs room for them on one
        // address and past the default cap of 400 (everything else keeps its default).
        info.Environment["POTLUCK__HOST__MAXCONNECTIONS"] = (peers + 200).ToString();
        info.Environment["POTLUCK__HOST__HIGHWATER"] = "0";
        info.Environment["POTLUCK__HOST__RESOURCES__MAXCONNECTIONSPERADDRESS"] = (peers + 100).ToString();
        info.Environment["POTLUCK__HOST__RESOURCES__MAXCONNECTIONSPERSUBNET"] = (peers + 100).ToString();
        var process = Process.Start(info)!;
        process.ErrorDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        return process;
    }

    private static async Task<Multiaddr> ReadAddressAsync(Process node)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (await node.StandardOutput.ReadLineAsync(cts.Token) is { } line)
        {
            var m = AddressPattern().Match(line);
            if (m.Success)
            {
                _ = Task.Run(async () => { while (await node.StandardOutput.ReadLineAsync() is not null) { } });
                return Multiaddr.Parse(m.Value);
            }
        }
        throw new InvalidOperationException("the node printed no listen address");
    }

    [GeneratedRegex(@"/ip4/127\.0\.0\.1/tcp/\d+/p2p/\S+")]
    private static partial Regex AddressPattern();

    private static long Rss(Process node)
    {
        foreach (var line in File.ReadLines($"/proc/{node.Id}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
            }
        }
        return 0;
    }

    private static string Mib(long bytes) => $"{bytes / (1024.0 * 1024):F0} MiB";

    private static async Task<(double P50, double P99)> PingP99Async(PingService ping, PeerId target, int count)
    {
        var rtts = (await ping.PingAsync(target, count, CancellationToken.None)).Select(t => t.TotalMilliseconds).Order().ToArray();
        return (rtts[rtts.Length / 2], rtts[Math.Min(rtts.Length - 1, (int)Math.Ceiling(rtts.Length * 0.99) - 1)]);
    }

    /// <summary>Connects, sends 1–512 random bytes, and says whether the node closed the connection within 2 s (bytes that could still begin a handshake wait for its timeout).</summary>
    private static async Task<bool> RandomBytesAsync(IPEndPoint endpoint)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            await socket.ConnectAsync(endpoint);
            byte[] junk;
            lock (Rng)
            {
                junk = new byte[Rng.Next(1, 513)];
                Rng.NextBytes(junk);
            }
            await socket.SendAsync(junk);
            var buffer = new byte[4096];
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            while (await socket.ReceiveAsync(buffer, cts.Token) > 0)
            {
            }
            return true;
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException)
        {
            return e is SocketException;
        }
    }

    private static async Task<TimeSpan> WhenClosedAsync(Socket socket, Stopwatch started)
    {
        var buffer = new byte[256];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            while (await socket.ReceiveAsync(buffer, cts.Token) > 0)
            {
            }
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException)
        {
        }
        return started.Elapsed;
    }
}
