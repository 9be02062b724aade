using System.Buffers;
using Potluck.Protocol.Host;
using Potluck.Protocol.Ping;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Tests.Host;

/// <summary>The host reserves what each connection's Yamux streams buffer (not their idle windows) in that peer's and address's shares of its memory.</summary>
[Category("Adversarial")]
public class MuxerMemoryScopeHostTests
{
    private const long Window = YamuxOptions.InitialStreamWindow;

    /// <summary>Opens a ping stream and does one round trip on it, leaving it open; false when the node refused it.</summary>
    private static async Task<bool> HoldPingStreamAsync(TestHosts.TestNode from, TestHosts.TestNode to, List<IStream> held)
    {
        try
        {
            var stream = await from.Host.NewStreamAsync(to.Host.PeerId, [PingService.ProtocolId], CancellationToken.None);
            var payload = new byte[32];
            payload[0] = 1;
            await stream.Output.WriteAsync(payload);
            var read = 0;
            while (read < 32)
            {
                var result = await stream.Input.ReadAsync();
                read += (int)result.Buffer.Length;
                stream.Input.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted && read < 32)
                {
                    return false;
                }
            }
            held.Add(stream);
            return true;
        }
        catch (Exception e) when (e is StreamResetException or ResourceLimitException or IOException)
        {
            return false;
        }
    }

    private const string Sink = "/test/sink/1.0.0";

    /// <summary>Whether the remote reset <paramref name="stream"/> (reading it fails).</summary>
    private static bool WasReset(IStream stream)
    {
        try
        {
            stream.Input.TryRead(out _);
            return false;
        }
        catch (Exception e) when (e is StreamResetException or ResourceLimitException)
        {
            return true;
        }
    }

    [Test]
    public void IdleStreamsReserveNothing_APeerFillingStreamsPastItsShareIsReset_WhileANewPeerStillPingsAndTransfers() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
        // A small share per peer, so the test stays small: 8 windows' worth (2 MiB) of the node's memory per peer.
        var server = await hosts.StartAsync(o => o with { Resources = o.Resources with { MaxMuxerMemoryPerPeer = 8 * Window } });
        var release = new TaskCompletionSource();
        server.Host.SetStreamHandler(Sink, (_, handlerCt) => release.Task.WaitAsync(handlerCt)); // holds its streams, never reads
        var greedy = await hosts.StartAsync();
        var honest = await hosts.StartAsync();
        await greedy.Host.ConnectAsync(server.Address, ct);
        await server.Identify.WhenIdentifiedAsync(greedy.Host.PeerId, ct);

        // 20 idle ping streams (2.5 times what a share of 8 windows held when windows were reserved at open): all held,
        // nothing reserved.
        var held = new List<IStream>();
        for (var i = 0; i < 20; i++)
        {
            Assert.That(await HoldPingStreamAsync(greedy, server, held), Is.True, $"ping stream {i}");
        }
        await d.IdleAsync();
        Assert.That(server.Host.Resources.MemoryOfPeer(greedy.Host.PeerId), Is.Zero);
        Assert.That(server.Host.Resources.RefusedIn(ResourceManager.Scopes.PeerMuxerMemory), Is.Zero);

        // 16 streams to a handler that never reads, 200 KiB written on each: 3.2 MiB the node would have to hold.
        var sinks = new List<IStream>();
        for (var i = 0; i < 16; i++)
        {
            var s = await greedy.Host.NewStreamAsync(server.Host.PeerId, [Sink], ct);
            sinks.Add(s);
            try
            {
                await s.Output.WriteAsync(new byte[200 * 1024], ct);
            }
            catch (Exception e) when (e is StreamResetException or ResourceLimitException or IOException)
            {
                // reset by the node while we wrote: what the test expects for some of them
            }
        }
        await d.IdleAsync();

        var reserved = server.Host.Resources.MemoryOfPeer(greedy.Host.PeerId);
        Assert.That(reserved, Is.LessThanOrEqualTo(8 * Window), "within the peer's share");
        Assert.That(reserved, Is.GreaterThan(6 * Window), "the peer did fill it");
        Assert.That(server.Host.Resources.RefusedIn(ResourceManager.Scopes.PeerMuxerMemory), Is.GreaterThan(0));
        var reset = sinks.Count(WasReset);
        Assert.That(reset, Is.InRange(1, 15), "the streams past the share are reset, the others held");
        Assert.That(held.Count(WasReset), Is.Zero, "the idle ping streams are untouched");

        // A newcomer is served: pings and a bulk transfer both ways.
        await honest.Host.ConnectAsync(server.Address, ct);
        Assert.That(await honest.Ping.PingAsync(server.Host.PeerId, 3, ct), Has.Count.EqualTo(3));
        var perf = await honest.Perf.RunAsync(server.Host.PeerId, 2 << 20, 2 << 20, ct);
        Assert.That((perf.UploadBytes, perf.DownloadBytes), Is.EqualTo((2L << 20, 2L << 20)));

        // When the greedy peer leaves, its share is returned in full.
        foreach (var s in held.Concat(sinks))
        {
            await s.DisposeAsync();
        }
        await greedy.Host.DisconnectAsync(server.Host.PeerId);
        release.SetResult();
        await Task.Delay(TimeSpan.FromSeconds(1), hosts.Time);
        await d.IdleAsync();
        Assert.That(server.Host.Resources.MemoryOfPeer(greedy.Host.PeerId), Is.Zero);
        Assert.That(server.Host.Resources.Memory.Reserved, Is.LessThanOrEqualTo(8 * Window), "at most the newcomer's");
    });
}
