using System.Diagnostics;
using Potluck.Node;
using Potluck.Node.Hosting;
using Potluck.Protocol.Multiformats;

namespace Potluck.Benchmarks;

/// <summary>
/// What one idle connection costs, on real loopback TCP + Noise + Yamux (part <c>idle</c>): the live managed heap after a
/// full, compacting collection, before and after opening the connections, both ends in this process, so the growth over
/// twice the connections is one connection end. Two figures: bare hosts (one client opens <c>count</c> connections to one
/// server: transport, Noise, Yamux, the host's bookkeeping) and complete nodes (<c>nodes</c> client nodes with the
/// daemon's protocols, one connection each to one server: identify, ping, gossipsub's streams and per-peer state too).
/// Not a timed test: a scenario runner whose figure is bytes, read side by side with another build's.
/// </summary>
public static class IdleConnections
{
    public static async Task RunAsync(int count, int nodes, CancellationToken ct)
    {
        Console.WriteLine($"# idle connections: {count} bare (TCP + Noise + Yamux), {nodes} complete nodes; live heap after a full GC");
        var bare = await BareAsync(count, ct);
        var complete = await CompleteAsync(nodes, ct);
        Console.WriteLine("| idle connection end, loopback TCP + Noise + Yamux | live managed heap per end | connections |");
        Console.WriteLine("| --- | ---: | ---: |");
        Console.WriteLine($"| bare hosts | {bare:0} B | {count} |");
        Console.WriteLine($"| complete nodes (identify, ping, gossipsub) | {complete:0} B | {nodes} |");
    }

    private static PotluckNodeBuilder Builder(bool bare) => PotluckNode.CreateBuilder().Configure(o => o with
    {
        Protocols = bare ? ProtocolsOptions.HostOnly : o.Protocols,
        Discovery = bare ? o.Discovery with { PingNewConnections = false } : o.Discovery,
        Host = o.Host with
        {
            MaxConnections = 100_000,
            MaxPendingInbound = 1_000,
            // Every connection comes from 127.0.0.1 (and, bare, from one peer): a real node's per-address, per-subnet and
            // per-peer limits would refuse the runner's own connections.
            Resources = o.Host.Resources with
            {
                MaxConnectionsPerPeer = 100_000,
                MaxConnectionsPerAddress = 100_000,
                MaxConnectionsPerSubnet = 100_000,
                MaxPendingInboundPerAddress = 1_000,
                MaxPendingInboundPerSubnet = 1_000,
            },
        },
    });

    private static long LiveHeap()
    {
        for (var i = 0; i < 3; i++)
        {
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            GC.WaitForPendingFinalizers();
        }
        return GC.GetTotalMemory(forceFullCollection: true);
    }

    /// <summary>Lets what a new connection sets off (identify, gossip streams, the first ping) finish; wall time, not a test.</summary>
    private static Task SettleAsync(CancellationToken ct) => Task.Delay(TimeSpan.FromSeconds(3), ct);

    private static async Task<double> BareAsync(int count, CancellationToken ct)
    {
        await using var server = await Builder(bare: true).Configure(o => o with { Listen = [Multiaddr.Parse("/ip4/127.0.0.1/tcp/0")] }).StartAsync(ct);
        await using var client = await Builder(bare: true).StartAsync(ct);
        // Without the peer id the host dials anew each time (with it, it would hand back the connection it has).
        var address = server.Host.ListenAddresses[0];
        var warm = await client.Host.ConnectAsync(address, ct);
        await warm.CloseAsync();
        await SettleAsync(ct);
        var before = LiveHeap();
        var cpu = Environment.CpuUsage.TotalTime;
        var sw = Stopwatch.StartNew();
        for (var i = 0; i < count; i += 8)
        {
            await Task.WhenAll(Enumerable.Range(0, Math.Min(8, count - i)).Select(async _ => await client.Host.ConnectAsync(address, ct)));
        }
        var opened = sw.Elapsed;
        await SettleAsync(ct);
        var after = LiveHeap();
        var open = client.Host.Connections.Count;
        Console.WriteLine($"#   bare: {open} connections open on the client, {(after - before) / 1024.0:0} KiB live heap more; opened in {opened.TotalSeconds:0.0} s, " +
                          $"{(Environment.CpuUsage.TotalTime - cpu).TotalSeconds:0.0} s CPU");
        return (after - before) / (2.0 * count);
    }

    private static async Task<double> CompleteAsync(int nodes, CancellationToken ct)
    {
        await using var server = await Builder(bare: false).Configure(o => o with { Listen = [Multiaddr.Parse("/ip4/127.0.0.1/tcp/0")] }).StartAsync(ct);
        var clients = new List<PotluckNode>();
        try
        {
            for (var i = 0; i < nodes; i++)
            {
                clients.Add(await Builder(bare: false).StartAsync(ct));
            }
            await SettleAsync(ct);
            var before = LiveHeap();
            var target = server.FullAddresses[0];
            foreach (var c in clients)
            {
                await c.Host.ConnectAsync(target, ct);
            }
            await SettleAsync(ct);
            var after = LiveHeap();
            Console.WriteLine($"#   complete: {server.Host.Connections.Count} connections open on the server, {(after - before) / 1024.0:0} KiB live heap more");
            return (after - before) / (2.0 * nodes);
        }
        finally
        {
            foreach (var c in clients)
            {
                await c.DisposeAsync();
            }
        }
    }
}
