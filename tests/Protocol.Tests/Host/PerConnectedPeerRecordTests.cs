using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Host;

/// <summary>
/// What the connection manager keeps per connected peer (stop 37): an exactly sized array of the peer's connections (not
/// a list and its array of four), gone with the last connection, with the same answers as before.
/// </summary>
public class PerConnectedPeerRecordTests
{
    [Test]
    public void APeersConnections_AreAnArrayOfExactlyThem_RemovedWithTheLast() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d, seed: 37);
        var hub = await hosts.StartAsync();
        var peers = new List<TestHosts.TestNode>();
        for (var i = 0; i < 5; i++)
        {
            var peer = await hosts.StartAsync();
            await peer.Host.ConnectAsync(hub.Address, ct);
            peers.Add(peer);
        }
        await Task.Delay(TimeSpan.FromSeconds(1), d.Clock); // the hub has registered them too

        var manager = (ConnectionManager)hub.Host.ConnectionManager;
        foreach (var peer in peers)
        {
            var held = manager.HeldFor(peer.Host.PeerId);
            Assert.That(held, Is.Not.Null);
            Assert.That(held, Is.TypeOf<Connection[]>().And.Length.EqualTo(1), "one connection, one slot (main: a List<Connection> of capacity 4)");
            Assert.That(manager.Registered(peer.Host.PeerId), Is.EqualTo(held), "the same answer as the record");
            Assert.That(manager.TryGet(peer.Host.PeerId, out var connection) && ReferenceEquals(connection, held![0]), Is.True);
        }
        Assert.That(hub.Host.Connections.Select(c => c.RemotePeer), Is.EquivalentTo(peers.Select(p => p.Host.PeerId)));

        await hub.Host.DisconnectAsync(peers[2].Host.PeerId);
        await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
        Assert.That(manager.HeldFor(peers[2].Host.PeerId), Is.Null, "the last connection took the record with it");
        Assert.That(manager.Registered(peers[2].Host.PeerId), Is.Empty);
        Assert.That(manager.TryGet(peers[2].Host.PeerId, out _), Is.False);
        Assert.That(hub.Host.Connections.Select(c => c.RemotePeer),
            Is.EquivalentTo(peers.Where((_, i) => i != 2).Select(p => p.Host.PeerId)));
    });

    [Test]
    public void TwoConnectionsOfOnePeer_TwoSlots_ClosingEitherLeavesTheOther() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d, seed: 39);
        var server = await hosts.StartAsync(o => o with { Resources = o.Resources with { MaxConnectionsPerPeer = 2 } });
        var key = PrivateKey.FromRandom(new Random(3));
        // One identity from two hosts: two connections of one peer at the server.
        var copies = Enumerable.Range(0, 2)
            .Select(_ => hosts.Own(Libp2pHost.Create(key, [hosts.Network.CreateTransport()], new Libp2pHostSettings(), hosts.NextRuntime(), hosts.Loggers)))
            .ToList();
        await copies[0].ConnectAsync(server.Address, ct);
        await copies[1].ConnectAsync(server.Address, ct);
        await d.IdleAsync();

        var manager = (ConnectionManager)server.Host.ConnectionManager;
        var held = manager.HeldFor(key.PeerId);
        Assert.That(held, Has.Length.EqualTo(2));
        Assert.That(manager.Registered(key.PeerId), Is.EqualTo(held));
        var first = held![0];

        await copies[1].DisconnectAsync(server.Host.PeerId);
        await d.IdleAsync();
        Assert.That(manager.HeldFor(key.PeerId), Is.EqualTo(new[] { first }), "the other connection stays, alone in its slot");
        await copies[0].DisconnectAsync(server.Host.PeerId);
        await d.IdleAsync();
        Assert.That(manager.HeldFor(key.PeerId), Is.Null);
        Assert.That(server.Host.Connections, Is.Empty);
    });
}
