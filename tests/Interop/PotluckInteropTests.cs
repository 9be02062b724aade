using System.Buffers;
using System.IO.Pipelines;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Node;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Perf;
using Potluck.Protocol.Ping;
using Potluck.Protocol.Pnet;

using Potluck.Tests;

namespace Potluck.Interop.Tests;

/// <summary>
/// Potluck against js-libp2p 3.3 (Noise, Yamux, Identify, Ping, pnet) on loopback, both directions.
/// js-libp2p is the arbiter of wire correctness.
/// </summary>
[TestFixture]
[Category("Interop")]
[NonParallelizable]
[CancelAfter(180_000)]
public sealed class PotluckInteropTests
{
    private const string EchoProtocol = "/potluck/echo/1.0.0";
    private const long MiB = 1024 * 1024;

    private static async Task<PotluckNode> StartPotluckAsync(SwarmKey? swarmKey = null, PrivateKey? key = null)
    {
        var builder = PotluckNode.CreateBuilder()
            .UseKey(key ?? PrivateKey.Generate())
            .UseLoggerFactory(TestLogging.Factory)
            .Configure(o => o with { Listen = [Multiaddr.Parse("/ip4/127.0.0.1/tcp/0")] });
        if (swarmKey is not null)
        {
            builder.UseSwarmKey(swarmKey);
        }
        var node = await builder.StartAsync();
        node.Host.SetStreamHandler(EchoProtocol, EchoAsync);
        return node;
    }

    private static async Task EchoAsync(IStream stream, CancellationToken ct)
    {
        while (true)
        {
            var result = await stream.Input.ReadAsync(ct);
            foreach (var segment in result.Buffer)
            {
                await stream.Output.WriteAsync(segment, ct);
            }
            stream.Input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                break;
            }
        }
        await stream.Output.CompleteAsync();
    }

    private static async Task<byte[]> EchoThroughAsync(PotluckNode node, PeerId peer, int size, CancellationToken ct)
    {
        var payload = new byte[size];
        new Random(size).NextBytes(payload);
        await using var stream = await node.Host.NewStreamAsync(peer, [EchoProtocol], ct);
        var reader = Task.Run(async () =>
        {
            var received = new ArrayBufferWriter<byte>(size);
            while (true)
            {
                var result = await stream.Input.ReadAsync(ct);
                foreach (var segment in result.Buffer)
                {
                    received.Write(segment.Span);
                }
                stream.Input.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted)
                {
                    return received.WrittenSpan.ToArray();
                }
            }
        }, ct);
        for (var offset = 0; offset < size; offset += 256 * 1024)
        {
            await stream.Output.WriteAsync(payload.AsMemory(offset, Math.Min(256 * 1024, size - offset)), ct);
        }
        await stream.Output.CompleteAsync();
        var echoed = await reader;
        Assert.That(echoed.Length, Is.EqualTo(size));
        Assert.That(SHA256.HashData(echoed), Is.EqualTo(SHA256.HashData(payload)), "echoed bytes differ");
        return echoed;
    }

    private static string FullAddress(PotluckNode node) => node.FullAddresses[0].ToString();

    [Test]
    public async Task SameSeed_GivesTheSamePeerIdInBothImplementations()
    {
        var seed = Enumerable.Range(7, 32).Select(i => (byte)i).ToArray();
        await using var js = await JsPeer.StartAsync(new JsPeerOptions { Seed = seed });
        Assert.That(PrivateKey.FromSeed(seed).PeerId.ToString(), Is.EqualTo(js.PeerId));
    }

    [Test]
    public async Task JsDialsPotluck_PingAndIdentify(CancellationToken ct)
    {
        await using var node = await StartPotluckAsync();
        await using var js = await JsPeer.StartAsync(ct: ct);

        var dial = await js.DialAsync(FullAddress(node), ct);
        Assert.That(dial.Peer, Is.EqualTo(node.PeerId.ToString()));
        var rtt = await js.PingAsync(node.PeerId.ToString(), ct);
        Assert.That(rtt, Is.GreaterThanOrEqualTo(TimeSpan.Zero));

        var id = await js.IdentifyAsync(node.PeerId.ToString(), ct);
        Assert.That(id.Protocols, Does.Contain(PingService.ProtocolId).And.Contain(IdentifyService.ProtocolId).And.Contain(PerfService.ProtocolId).And.Contain(EchoProtocol));
        Assert.That(id.AgentVersion, Does.StartWith("potluck/"));
        Assert.That(id.ListenAddrs.Select(a => a.Split("/p2p/")[0]), Does.Contain(node.Host.ListenAddresses[0].ToString()));

        var seenByPotluck = await node.Identify.WhenIdentifiedAsync(PeerId.Parse(js.PeerId), ct);
        Assert.That(seenByPotluck.AgentVersion, Does.StartWith("js-libp2p/"));
    }

    [Test]
    public async Task PotluckDialsJs_PingAndIdentify(CancellationToken ct)
    {
        await using var node = await StartPotluckAsync();
        await using var js = await JsPeer.StartAsync(ct: ct);

        var connection = await node.Host.ConnectAsync(Multiaddr.Parse(js.Addr), ct);
        Assert.That(connection.RemotePeer.ToString(), Is.EqualTo(js.PeerId));
        var rtts = await node.Ping.PingAsync(connection.RemotePeer, 3, ct);
        Assert.That(rtts, Has.Count.EqualTo(3));

        var seen = await node.Identify.WhenIdentifiedAsync(connection.RemotePeer, ct);
        Assert.That(seen.AgentVersion, Does.StartWith("js-libp2p/"));
        Assert.That(seen.Protocols, Does.Contain(PingService.ProtocolId).And.Contain(PerfService.ProtocolId).And.Contain(EchoProtocol));
        Assert.That(seen.ListenAddresses.Select(a => a.ToString()), Does.Contain(js.Addr.Split("/p2p/")[0]));

        var id = await js.IdentifyAsync(node.PeerId.ToString(), ct);
        Assert.That(id.AgentVersion, Does.StartWith("potluck/"));
    }

    [Test]
    public async Task Echo10MiB_BothDirections(CancellationToken ct)
    {
        await using var node = await StartPotluckAsync();
        await using var js = await JsPeer.StartAsync(ct: ct);

        var fromJs = await js.EchoAsync(FullAddress(node), 10 * MiB, ct);
        Assert.That(fromJs.Matched, Is.True);
        Assert.That(fromJs.Received, Is.EqualTo(10 * MiB));

        await node.Host.ConnectAsync(Multiaddr.Parse(js.Addr), ct);
        await EchoThroughAsync(node, PeerId.Parse(js.PeerId), (int)(10 * MiB), ct);
    }

    [Test]
    public async Task Perf64MiB_EachWay_BothDirections(CancellationToken ct)
    {
        await using var node = await StartPotluckAsync();
        await using var js = await JsPeer.StartAsync(ct: ct);

        var jsClient = await js.PerfAsync(FullAddress(node), 64 * MiB, 64 * MiB, ct);
        Assert.That(jsClient.UploadBytes, Is.EqualTo(64 * MiB));
        Assert.That(jsClient.DownloadBytes, Is.EqualTo(64 * MiB));

        var connection = await node.Host.ConnectAsync(Multiaddr.Parse(js.Addr), ct);
        var up = await node.Perf.RunAsync(connection.RemotePeer, 64 * MiB, 0, ct);
        var down = await node.Perf.RunAsync(connection.RemotePeer, 0, 64 * MiB, ct);
        Assert.That(up.UploadBytes, Is.EqualTo(64 * MiB));
        Assert.That(down.DownloadBytes, Is.EqualTo(64 * MiB));
    }

    [Test]
    public async Task PrivateNetwork_SameKey_ConnectsBothWays(CancellationToken ct)
    {
        var keyFile = Path.GetTempFileName();
        try
        {
            var key = SwarmKey.Generate();
            await File.WriteAllTextAsync(keyFile, key.ToFileText(), ct);
            await using var node = await StartPotluckAsync(key);
            await using var js = await JsPeer.StartAsync(new JsPeerOptions { SwarmKeyPath = keyFile }, ct);

            var echo = await js.EchoAsync(FullAddress(node), 1 * MiB, ct);
            Assert.That(echo.Matched, Is.True);

            await using var node2 = await StartPotluckAsync(key);
            await node2.Host.ConnectAsync(Multiaddr.Parse(js.Addr), ct);
            await EchoThroughAsync(node2, PeerId.Parse(js.PeerId), (int)MiB, ct);
        }
        finally
        {
            File.Delete(keyFile);
        }
    }

    [Test]
    public async Task PrivateNetwork_DifferentKeys_RefusedAndNeitherSideCrashes(CancellationToken ct)
    {
        var keyFile = Path.GetTempFileName();
        try
        {
            await File.WriteAllTextAsync(keyFile, SwarmKey.Generate().ToFileText(), ct);
            await using var node = await StartPotluckAsync(SwarmKey.Generate());
            await using var js = await JsPeer.StartAsync(new JsPeerOptions { SwarmKeyPath = keyFile }, ct);

            Assert.That(async () => await js.DialAsync(FullAddress(node), ct, TimeSpan.FromSeconds(5)), Throws.Exception);
            var e = Assert.ThrowsAsync<DialException>(async () => await node.Host.ConnectAsync(Multiaddr.Parse(js.Addr), ct));
            Assert.That(e!.Failure, Is.EqualTo(DialFailure.HandshakeFailed).Or.EqualTo(DialFailure.Timeout).Or.EqualTo(DialFailure.Unreachable));

            Assert.That(js.HasExited, Is.False);
            Assert.That(node.Host.Connections, Is.Empty);
            // Both still serve peers of their own network.
            await using var jsFriend = await JsPeer.StartAsync(new JsPeerOptions { SwarmKeyPath = keyFile }, ct);
            Assert.That((await jsFriend.EchoAsync(js.Addr, 1024, ct)).Matched, Is.True);
        }
        finally
        {
            File.Delete(keyFile);
        }
    }
}
