using Potluck.Protocol.Identity;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Multiformats;

namespace Potluck.Interop.Tests;

/// <summary>
/// Kademlia between Potluck's <see cref="KademliaService"/> and @libp2p/kad-dht 16 on the shared protocol id
/// <c>/potluck/kad/1.0.0</c> over loopback TCP (js in server mode, keeping loopback addresses). In each lookup the
/// target is not connected to the searcher: its addresses must come from a third node's FIND_NODE response.
/// </summary>
[TestFixture]
[Category("Interop")]
[NonParallelizable]
[CancelAfter(420_000)]
public sealed class KademliaInteropTests
{
    private const string Protocol = KademliaService.DefaultProtocolId;
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    // On a loaded machine a js peer loading its modules alone can pass 30 s.
    private static JsPeerOptions JsDht(bool noSelfQuery = false) =>
        new() { DhtProtocol = Protocol, DhtNoSelfQuery = noSelfQuery, StartTimeout = TimeSpan.FromSeconds(90) };

    private static string Bare(string address) => address.Split("/p2p/")[0];

    [Test]
    public async Task JsFindsPotluckPeer_ThroughAPotluckNode(CancellationToken ct)
    {
        // js searcher — Potluck middle — Potluck target. js's self query is off, so js knows the middle only.
        await using var middle = await InteropPotluckPeer.StartAsync(11, gossip: false, dhtProtocol: Protocol);
        await using var target = await InteropPotluckPeer.StartAsync(12, gossip: false, dhtProtocol: Protocol);
        await using var js = await JsPeer.StartAsync(JsDht(noSelfQuery: true), ct);

        await target.Node.Host.ConnectAsync(Multiaddr.Parse(middle.Address), ct);
        await middle.WaitForDhtPeerAsync(target.PeerId, Wait, ct);
        await js.DialAsync(middle.Address, ct);
        await js.WaitForDhtPeerAsync(middle.PeerId.ToString(), Wait, ct);
        Assert.That((await js.PeersAsync(ct)).Select(c => c.Peer), Does.Not.Contain(target.PeerId.ToString()));
        Assert.That((await js.DhtTableAsync(ct)).Peers, Is.EqualTo(new[] { middle.PeerId.ToString() }));

        var found = await js.FindPeerAsync(target.PeerId.ToString(), ct);
        Assert.That(found.Peer, Is.EqualTo(target.PeerId.ToString()));
        Assert.That(found.From, Is.EqualTo(middle.PeerId.ToString()), "the answer came from the Potluck middle node");
        Assert.That(found.Addrs.Select(Bare), Does.Contain(target.Node.Host.ListenAddresses[0].ToString()));

        // The addresses are good: js reaches the target by peer id.
        Assert.That(await js.PingAsync(target.PeerId.ToString(), ct), Is.GreaterThanOrEqualTo(TimeSpan.Zero));
    }

    [Test]
    public async Task PotluckFindsJsPeer_ThroughAJsNode(CancellationToken ct)
    {
        // Potluck searcher — js middle — js target.
        await using var middle = await JsPeer.StartAsync(JsDht(), ct);
        await using var target = await JsPeer.StartAsync(JsDht(), ct);
        await using var searcher = await InteropPotluckPeer.StartAsync(13, gossip: false, dhtProtocol: Protocol);

        await target.DialAsync(middle.Addr, ct);
        await middle.WaitForDhtPeerAsync(target.PeerId, Wait, ct);
        await searcher.Node.Host.ConnectAsync(Multiaddr.Parse(middle.Addr), ct);
        await searcher.WaitForDhtPeerAsync(PeerId.Parse(middle.PeerId), Wait, ct);
        var targetId = PeerId.Parse(target.PeerId);
        Assert.That(searcher.Node.Host.Connections.Select(c => c.RemotePeer), Does.Not.Contain(targetId));

        var addresses = await searcher.Dht!.FindPeerAsync(targetId, ct);
        Assert.That(addresses.Select(a => Bare(a.ToString())), Does.Contain(Bare(target.Addr)));

        // The addresses are good: Potluck reaches the target by peer id and it answers DHT queries.
        var connection = await searcher.Node.Host.ConnectAsync(targetId, ct);
        Assert.That(connection.RemotePeer, Is.EqualTo(targetId));
        await searcher.WaitForDhtPeerAsync(targetId, Wait, ct);
    }

    [Test]
    public async Task MixedStar_ClosestPeers_AgreeOnBothSides(CancellationToken ct)
    {
        // A Potluck hub; two more Potluck nodes and three js nodes connect to it only.
        await using var hub = await InteropPotluckPeer.StartAsync(20, gossip: false, dhtProtocol: Protocol);
        await using var p1 = await InteropPotluckPeer.StartAsync(21, gossip: false, dhtProtocol: Protocol);
        await using var p2 = await InteropPotluckPeer.StartAsync(22, gossip: false, dhtProtocol: Protocol);
        // Started one after another, not side by side: three node processes loading their modules at once on a loaded
        // machine passed even a 90 s start limit (1 run in 2 at load ~70).
        var js = new List<JsPeer>();
        try
        {
            for (var i = 0; i < 3; i++)
            {
                js.Add(await JsPeer.StartAsync(JsDht(), ct));
            }
            foreach (var p in new[] { p1, p2 })
            {
                await p.Node.Host.ConnectAsync(Multiaddr.Parse(hub.Address), ct);
                await hub.WaitForDhtPeerAsync(p.PeerId, Wait, ct);
            }
            foreach (var j in js)
            {
                await j.DialAsync(hub.Address, ct);
                await hub.WaitForDhtPeerAsync(PeerId.Parse(j.PeerId), Wait, ct);
                await j.WaitForDhtPeerAsync(hub.PeerId.ToString(), Wait, ct);
            }
            await p1.WaitForDhtPeerAsync(hub.PeerId, Wait, ct);

            var everyone = new[] { hub.PeerId.ToString(), p1.PeerId.ToString(), p2.PeerId.ToString() }.Concat(js.Select(j => j.PeerId)).ToArray();
            var key = "potluck-interop-key"u8.ToArray();

            // Potluck: a lookup through the hub finds every other node, js ones included, closest first.
            var fromPotluck = (await p1.Dht!.GetClosestPeersAsync(key, ct)).Select(p => p.ToString()).ToList();
            Assert.That(fromPotluck, Is.EquivalentTo(everyone.Where(p => p != p1.PeerId.ToString())));
            var target = KadKey.FromKey(key);
            Assert.That(fromPotluck, Is.EqualTo(fromPotluck.OrderBy(p => KadKey.FromPeer(PeerId.Parse(p)).DistanceTo(target)).ToList()));

            // js: the same query reaches the node truly closest to the key (by the same metric: XOR of SHA-256).
            // kad-dht 16 only follows peers closer than the one that named them, so it need not list everyone.
            var fromJs = await js[0].ClosestPeersAsync(key, ct);
            var others = everyone.Where(p => p != js[0].PeerId).ToList();
            var closest = others.MinBy(p => KadKey.FromPeer(PeerId.Parse(p)).DistanceTo(target));
            Assert.That(others, Is.SupersetOf(fromJs));
            Assert.That(fromJs, Does.Contain(closest));
        }
        finally
        {
            foreach (var j in js)
            {
                await j.DisposeAsync();
            }
        }
    }
}
