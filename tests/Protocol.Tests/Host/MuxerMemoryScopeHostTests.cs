using System.Buffers;
using Potluck.Protocol.Host;
using Potluck.Protocol.Ping;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Tests.Host;

/// <summary>The host reserves every connection's Yamux windows in that peer's and address's shares of its memory.</summary>
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

    [Test]
    public void APeerHoldingStreamsPastItsShare_IsRefused_WhileANewPeerStillPingsAndTransfers() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
        // A small share per peer, so the test stays small: 8 windows of the node's memory per peer.
        var server = await hosts.StartAsync(o => o with { Resources = o.Resources with { MaxMuxerMemoryPerPeer = 8 * Window } });
        var greedy = await hosts.StartAsync();
        var honest = await hosts.StartAsync();
        await greedy.Host.ConnectAsync(server.Address, ct);
        await server.Identify.WhenIdentifiedAsync(greedy.Host.PeerId, ct);

        var held = new List<IStream>();
        var refused = 0;
        for (var i = 0; i < 20; i++)
        {
            refused += await HoldPingStreamAsync(greedy, server, held) ? 0 : 1;
        }

        Assert.That(held, Has.Count.InRange(1, 8), "no more streams than the peer's share of windows");
        Assert.That(refused, Is.EqualTo(20 - held.Count));
        Assert.That(server.Host.Resources.RefusedIn(ResourceManager.Scopes.PeerMuxerMemory), Is.GreaterThanOrEqualTo(refused));
        Assert.That(server.Host.Resources.MemoryOfPeer(greedy.Host.PeerId), Is.LessThanOrEqualTo(8 * Window));

        // The greedy peer's streams stay open, and a newcomer is still served: pings and a bulk transfer both ways.
        await honest.Host.ConnectAsync(server.Address, ct);
        Assert.That(await honest.Ping.PingAsync(server.Host.PeerId, 3, ct), Has.Count.EqualTo(3));
        var perf = await honest.Perf.RunAsync(server.Host.PeerId, 2 << 20, 2 << 20, ct);
        Assert.That((perf.UploadBytes, perf.DownloadBytes), Is.EqualTo((2L << 20, 2L << 20)));

        // When the greedy peer leaves, its share is returned in full.
        foreach (var s in held)
        {
            await s.DisposeAsync();
        }
        await greedy.Host.DisconnectAsync(server.Host.PeerId);
        await Task.Delay(TimeSpan.FromSeconds(1), hosts.Time);
        await d.IdleAsync();
        Assert.That(server.Host.Resources.MemoryOfPeer(greedy.Host.PeerId), Is.Zero);
    });
}
