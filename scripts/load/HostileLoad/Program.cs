using System.Diagnostics;
using System.Globalization;
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

namespace Potluck.HostileLoad;

/// <summary>
/// Hostile load against a real `potluck run` provider on loopback (bounded in count and time; not a timed test). The node
/// runs as its own process so its memory (VmRSS from /proc) and CPU time are the node's alone; an honest requester (a
/// full Potluck node running real leases and pings) runs in a second process; the attackers run here, on peers spread
/// over many 127.x addresses and /24s (all of 127/8 is this machine). Prints one table.
/// Usage: HostileLoad &lt;potluck dll&gt; &lt;exitcode.wasm&gt; [peers=1000] [random=10000] [stalled addresses=200] [streams=2000] [samples=300]
/// (or, as the honest child: HostileLoad --honest &lt;address&gt; &lt;exitcode.wasm&gt;).
/// </summary>
public static partial class Program
{
    private static readonly Random Rng = new(42);

    public static async Task<int> Main(string[] args)
    {
        if (args.Length == 3 && args[0] == "--honest")
        {
            return await Honest.RunAsync(Multiaddr.Parse(args[1]), args[2]);
        }
        var potluck = args[0];
        var module = args[1];
        var peers = args.Length > 2 ? int.Parse(args[2]) : 1000;
        var randomConnections = args.Length > 3 ? int.Parse(args[3]) : 10_000;
        var stalledAddresses = args.Length > 4 ? int.Parse(args[4]) : 200;
        var streams = args.Length > 5 ? int.Parse(args[5]) : 2000;
        var samples = args.Length > 6 ? int.Parse(args[6]) : 300;
        var dataDir = Directory.CreateTempSubdirectory("potluck-load-").FullName;
        using var node = StartNode(potluck, dataDir, peers);
        Process? honestProcess = null;
        var rows = new List<(string Scenario, string Result)>();
        try
        {
            var address = await ReadAddressAsync(node);
            var target = address.PeerId!.Value;
            var endpoint = address.ToTcpEndPoint()!;
            var runtime = NodeRuntime.System;
            honestProcess = StartHonest(address, module);
            var honest = new HonestClient(honestProcess);
            await honest.ReadyAsync();
            await Task.Delay(500);
            var rssIdle = Rss(node);
            var cpu = new CpuMeter(node);
            var unloaded = await honest.MeasureAsync("unloaded", samples, samples);
            rows.Add(("idle node, the honest requester only", $"RSS {Mib(rssIdle)}; {unloaded}; node CPU {cpu.Take()}"));

            // 1. Many peers from fresh identities on many addresses, each holding a connection and a stream.
            var clients = new List<Libp2pHost>();
            var held = new List<IStream>();
            var sw = Stopwatch.StartNew();
            var connected = 0;
            var connecting = honest.MeasureAsync("connecting", samples, samples);
            foreach (var batch in Enumerable.Range(0, peers).Chunk(16))
            {
                var results = await Task.WhenAll(batch.Select(async i =>
                {
                    var c = NewHost(runtime, PeerAddress(i));
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
            var whileConnecting = await connecting;
            var cpuConnecting = cpu.Take();
            await Task.Delay(1000);
            var rssPeers = Rss(node);
            var loaded = await honest.MeasureAsync("held", samples, samples);
            rows.Add(($"{peers:N0} peers (fresh identities, {Math.Min(peers, PeerAddresses)} addresses in {(Math.Min(peers, PeerAddresses) + 4) / 5} /24s) connecting, each then holding a connection and a stream",
                $"{connected:N0} held, opened in {opened.TotalSeconds:F1} s; meanwhile {whileConnecting} ({whileConnecting.Against(unloaded)}); node CPU {cpuConnecting}"));
            rows.Add(($"the same {connected:N0} peers held", $"RSS {Mib(rssPeers)}, {(rssPeers - rssIdle) / 1024.0 / Math.Max(1, connected):F1} KiB per connection over idle; " +
                $"{loaded} ({loaded.Against(unloaded)}); node CPU {cpu.Take()}; the node's refusals so far: {await RefusedAsync(dataDir)}"));
            foreach (var s in held) await s.DisposeAsync();
            foreach (var c in clients) await c.DisposeAsync();
            await Task.Delay(1000);
            cpu.Take();

            // 2. Random bytes on many connections.
            sw.Restart();
            long closedByNode = 0;
            foreach (var batch in Enumerable.Range(0, randomConnections).Chunk(200))
            {
                var closed = await Task.WhenAll(batch.Select(i => RandomBytesAsync(endpoint, PeerAddress(i))));
                closedByNode += closed.Count(c => c);
            }
            var randomTime = sw.Elapsed;
            var rssRandom = Rss(node);
            var afterRandom = await honest.MeasureAsync("after-random", samples / 3, samples / 3);
            rows.Add(($"{randomConnections:N0} connections sending random bytes", $"{closedByNode:N0} closed by the node within 2 s (the rest could still begin a handshake), all in {randomTime.TotalSeconds:F1} s; RSS {Mib(rssRandom)}; " +
                $"node CPU {cpu.Take()}; afterwards {afterRandom}"));

            // 3a. Stalled handshakes from one address: the multistream header, then nothing.
            var (oneAddress, _) = await StallAsync(endpoint, 128, _ => IPAddress.Parse("127.0.0.2"), noise: false);
            var newcomer = await NewcomerAsync(runtime, address, IPAddress.Parse("127.0.0.4"));
            var oneTimes = await Task.WhenAll(oneAddress.Select(s => s.Closed));
            rows.Add(("128 stalled handshakes from one address", $"{oneTimes.Count(t => t < TimeSpan.FromSeconds(1))} refused at once (the per-address share), the rest dropped at " +
                $"{oneTimes.Where(t => t >= TimeSpan.FromSeconds(1)).DefaultIfEmpty().Max().TotalSeconds:F1} s; meanwhile {newcomer}"));
            foreach (var s in oneAddress) s.Socket.Dispose();

            // 3b. Stalled handshakes from many addresses, two each: the multistream header alone, or the header, /noise and
            // the first Noise message (an ephemeral key), then nothing; a newcomer from yet another address meanwhile.
            cpu.Take();
            var (many, started) = await StallAsync(endpoint, 2 * stalledAddresses, i => StallAddress(i / 2), noise: true);
            var flooded = honest.MeasureAsync("stalled", samples / 3, samples / 3);
            var joined = await NewcomerAsync(runtime, address, IPAddress.Parse("127.0.0.5"));
            var duringFlood = await flooded;
            var manyTimes = (await Task.WhenAll(many.Select(s => s.Closed))).Order().ToArray();
            rows.Add(($"{many.Count} stalled handshakes from {stalledAddresses} addresses in {(stalledAddresses + 7) / 8} /24s (half a multistream header, half a Noise handshake)",
                $"opened in {started.TotalSeconds:F1} s; dropped after p50 {manyTimes[manyTimes.Length / 2].TotalSeconds:F1} s, max {manyTimes[^1].TotalSeconds:F1} s; {joined}; " +
                $"meanwhile {duringFlood} ({duringFlood.Against(unloaded)}); node CPU {cpu.Take()}"));
            foreach (var s in many) s.Socket.Dispose();

            // 4. One peer opening streams past its limits.
            await using var greedy = NewHost(runtime, IPAddress.Parse("127.0.0.6"));
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
            var afterStreams = await honest.MeasureAsync("streams", samples / 3, samples / 3);
            rows.Add(($"one peer opening {streams:N0} ping streams", $"{alive} served (the per-protocol limit), {streams - alive:N0} refused or reset ({refused} at open); " +
                $"RSS {Mib(Rss(node))}; afterwards {afterStreams}"));
            foreach (var s in greedyStreams) await s.DisposeAsync();

            // 5. Many idle streams from four /24s: 16 fresh identities on each of 4 addresses in 4 /24s (within the per-address
            // cap of 16 connections), each holding 64 ping streams (the per-peer, per-protocol limit): 4,096 streams, 1 GiB
            // of windows had each stream's 256 KiB been reserved at open (4 times the node's muxer budget, each address
            // within its share). Does an honest requester on another address still get streams?
            var hoarders = new List<Libp2pHost>();
            var hoarded = 0;
            for (var i = 0; i < 64; i++)
            {
                var h = NewHost(runtime, new IPAddress([127, 0, (byte)(40 + i / 16), 7]));
                hoarders.Add(h);
                try
                {
                    await h.ConnectAsync(address, CancellationToken.None);
                    for (var k = 0; k < 64; k++)
                    {
                        var s = await h.NewStreamAsync(target, [PingService.ProtocolId], CancellationToken.None);
                        await s.Output.WriteAsync(new byte[32]);
                        hoarded++;
                    }
                }
                catch (Exception e) when (Failures.IsRemote(e))
                {
                }
            }
            await Task.Delay(500);
            var whileHoarded = await honest.MeasureAsync("hoarded", samples / 3, samples / 3);
            rows.Add(("64 peers on 4 addresses in 4 /24s, each holding 64 idle ping streams", $"{hoarded:N0} streams opened; meanwhile {whileHoarded} ({whileHoarded.Against(unloaded)}); " +
                $"RSS {Mib(Rss(node))}; the node's refusals so far: {await RefusedAsync(dataDir)}"));
            foreach (var h in hoarders) await h.DisposeAsync();

            rows.Add(("node still up", node.HasExited ? "NO: the node exited" : $"yes; RSS {Mib(Rss(node))}; node CPU in all {node.TotalProcessorTime.TotalSeconds:F1} s"));
        }
        finally
        {
            foreach (var p in new[] { honestProcess, node })
            {
                if (p is not null && !p.HasExited)
                {
                    p.Kill(entireProcessTree: true);
                }
                if (p is not null)
                {
                    await p.WaitForExitAsync();
                }
            }
            honestProcess?.Dispose();
            Directory.Delete(dataDir, true);
            Console.WriteLine();
            Console.WriteLine($"# {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]} at the end; " +
                "lease = one no-op task (exitcode.wasm 0) submitted and returned; ratios are p99 against the unloaded p99");
            Console.WriteLine("| scenario | result |");
            Console.WriteLine("| --- | --- |");
            foreach (var (scenario, result) in rows)
            {
                Console.WriteLine($"| {scenario} | {result} |");
            }
        }
        return 0;
    }

    /// <summary>Attacking peers spread over 100 addresses, 5 per /24 (127.0.1.1–127.0.20.5): within the node's default per-address (16) and per-/24 (64) caps at 1,000 peers.</summary>
    private const int PeerAddresses = 100;

    private static IPAddress PeerAddress(int i) => new([127, 0, (byte)(1 + i % PeerAddresses / 5), (byte)(1 + i % 5)]);

    /// <summary>Stalling addresses, 8 per /24, from 127.1.0.1 on.</summary>
    private static IPAddress StallAddress(int i) => new([127, 1, (byte)(i / 8), (byte)(1 + i % 8)]);

    /// <summary>Opens <paramref name="count"/> sockets that each send the start of a handshake and stall; returns them with when the node closed each, and how long opening took.</summary>
    private static async Task<(List<(Socket Socket, Task<TimeSpan> Closed)>, TimeSpan)> StallAsync(IPEndPoint endpoint, int count, Func<int, IPAddress> from, bool noise)
    {
        var stalls = new List<(Socket Socket, Task<TimeSpan> Closed)>();
        var started = Stopwatch.StartNew();
        for (var i = 0; i < count; i++)
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            socket.Bind(new IPEndPoint(from(i), 0));
            await socket.ConnectAsync(endpoint);
            byte[] hello = [19, .. "/multistream/1.0.0\n"u8];
            if (noise && i % 2 == 1)
            {
                var ephemeral = new byte[32];
                lock (Rng) Rng.NextBytes(ephemeral);
                hello = [.. hello, 7, .. "/noise\n"u8, 0, 32, .. ephemeral];
            }
            await socket.SendAsync(hello);
            stalls.Add((socket, WhenClosedAsync(socket, started)));
        }
        return (stalls, started.Elapsed);
    }

    /// <summary>
    /// A new peer from <paramref name="from"/>, retrying as an honest client would (a fresh attempt 250 ms after a refusal,
    /// for at most 30 s): how long until it has connected and been answered one ping, and how many attempts were refused.
    /// </summary>
    private static async Task<Newcomer> NewcomerAsync(NodeRuntime runtime, Multiaddr address, IPAddress from)
    {
        var watch = Stopwatch.StartNew();
        var refused = 0;
        string? reason = null;
        while (watch.Elapsed < TimeSpan.FromSeconds(30))
        {
            await using var newcomer = NewHost(runtime, from);
            var newcomerPing = new PingService(newcomer, new PingOptions(), runtime, NullLoggerFactory.Instance);
            try
            {
                await newcomer.ConnectAsync(address, CancellationToken.None);
                await newcomerPing.PingAsync(address.PeerId!.Value, 1, CancellationToken.None);
                return new Newcomer(watch.Elapsed, refused, reason);
            }
            catch (Exception e) when (Failures.IsRemote(e) || e is DialException)
            {
                refused++;
                reason ??= e.Message;
            }
            await Task.Delay(250);
        }
        return new Newcomer(null, refused, reason);
    }

    private sealed record Newcomer(TimeSpan? Joined, int Refused, string? FirstReason)
    {
        public override string ToString() => (Joined is { } t ? $"a newcomer connected and pinged in {t.TotalMilliseconds:F0} ms" : "**a newcomer did not get in within 30 s**") +
            (Refused > 0 ? $" (**{Refused} attempts refused first**: {FirstReason})" : "");
    }

    private static Libp2pHost NewHost(NodeRuntime runtime, IPAddress from) =>
        Libp2pHost.Create(PrivateKey.Generate(), [new SourceBoundTcp(from)], new Libp2pHostSettings(), runtime, NullLoggerFactory.Instance);

    private static Process StartNode(string potluck, string dataDir, int peers)
    {
        var info = new ProcessStartInfo("dotnet", [potluck, "run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--cores", "2", "--control-listen", "127.0.0.1:0", "--data-dir", dataDir, "--log-level", "warning"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        // The attackers are spread over 100 addresses in 20 /24s, within the default per-address and per-/24 caps; only the
        // system cap (400 by default) and the trimming water marks are raised to hold the scenario's peers. A provider
        // that works now, whether or not the machine is idle.
        info.Environment["POTLUCK__HOST__MAXCONNECTIONS"] = (peers + 200).ToString();
        info.Environment["POTLUCK__HOST__HIGHWATER"] = "0";
        info.Environment["POTLUCK__PREFERENCES__ONLYWHENIDLE"] = "false";
        info.Environment["POTLUCK__PREFERENCES__NOTONBATTERY"] = "false";
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

    /// <summary>The node's <c>potluck_resources_refused</c> counts by scope, from its /metrics (control API, with its token).</summary>
    private static async Task<string> RefusedAsync(string dataDir)
    {
        try
        {
            var url = System.Text.Json.JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(dataDir, "control.json"))).RootElement.GetProperty("url").GetString()!;
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
            http.DefaultRequestHeaders.Authorization = new("Bearer", (await File.ReadAllTextAsync(Path.Combine(dataDir, "control.token"))).Trim());
            var text = await http.GetStringAsync(new Uri(new Uri(url), "/metrics"));
            var lines = text.Split('\n').Where(l => l.StartsWith("potluck_resources_refused", StringComparison.Ordinal) && !l.EndsWith(" 0", StringComparison.Ordinal)).ToArray();
            return lines.Length == 0 ? "none" : string.Join(", ", lines.Select(l => l.Replace("potluck_resources_refused", "", StringComparison.Ordinal).Trim()));
        }
        catch (Exception e) when (e is IOException or HttpRequestException or System.Text.Json.JsonException or KeyNotFoundException or TaskCanceledException)
        {
            return $"(metrics unavailable: {e.Message})";
        }
    }

    private static Process StartHonest(Multiaddr target, string module)
    {
        var info = new ProcessStartInfo("dotnet", [typeof(Program).Assembly.Location, "--honest", target.ToString(), module])
        {
            RedirectStandardOutput = true,
            RedirectStandardInput = true,
            RedirectStandardError = true,
        };
        info.Environment["Logging__LogLevel__Default"] = "Warning";
        var process = Process.Start(info)!;
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                Console.Error.WriteLine($"honest: {e.Data}");
            }
        };
        process.BeginErrorReadLine();
        return process;
    }

    /// <summary>The orchestrator's side of the honest child's stdin/stdout protocol.</summary>
    private sealed class HonestClient(Process process)
    {
        public async Task ReadyAsync()
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(3));
            while (await process.StandardOutput.ReadLineAsync(cts.Token) is { } line)
            {
                if (line == "ready")
                {
                    return;
                }
            }
            throw new InvalidOperationException("the honest requester exited before it was ready");
        }

        public async Task<Figures> MeasureAsync(string label, int leases, int pings)
        {
            await process.StandardInput.WriteLineAsync($"measure {label} {leases} {pings}");
            await process.StandardInput.FlushAsync();
            using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(5));
            while (await process.StandardOutput.ReadLineAsync(cts.Token) is { } line)
            {
                var p = line.Split(' ');
                if (p.Length == 9 && p[0] == "result" && p[1] == label)
                {
                    double D(int k) => double.Parse(p[k], CultureInfo.InvariantCulture);
                    return new Figures(D(2), D(3), D(4), D(5), int.Parse(p[6], CultureInfo.InvariantCulture), D(7), int.Parse(p[8], CultureInfo.InvariantCulture));
                }
            }
            throw new InvalidOperationException($"the honest requester exited during '{label}'");
        }
    }

    private sealed record Figures(double LeaseP50, double LeaseP99, double PingP50, double PingP99, int Failed, double CpuMs, int FailedPings)
    {
        public override string ToString() =>
            string.Create(CultureInfo.InvariantCulture, $"honest lease p50 {LeaseP50:F2} ms, p99 {LeaseP99:F2} ms{(Failed > 0 ? $" (**{Failed} failed**)" : "")}; ping p50 {PingP50:F3} ms, p99 {PingP99:F3} ms{(FailedPings > 0 ? $" (**{FailedPings} refused or reset**)" : "")}");

        public string Against(Figures unloaded) =>
            string.Create(CultureInfo.InvariantCulture, $"lease p99 {LeaseP99 / unloaded.LeaseP99:F2}×, ping p99 {PingP99 / unloaded.PingP99:F2}× unloaded");
    }

    /// <summary>The node process's CPU time since the last <see cref="Take"/>.</summary>
    private sealed class CpuMeter(Process node)
    {
        private TimeSpan _last = node.TotalProcessorTime;

        public string Take()
        {
            node.Refresh();
            var now = node.TotalProcessorTime;
            var used = now - _last;
            _last = now;
            return string.Create(CultureInfo.InvariantCulture, $"{used.TotalSeconds:F1} s");
        }
    }

    /// <summary>Connects, sends 1–512 random bytes, and says whether the node closed the connection within 2 s (bytes that could still begin a handshake wait for its timeout).</summary>
    private static async Task<bool> RandomBytesAsync(IPEndPoint endpoint, IPAddress from)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.Bind(new IPEndPoint(from, 0));
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
