using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;
using static Potluck.Protocol.Tests.Gossipsub.RouterFixture;
using GPb = Potluck.Protocol.Gossipsub.Pb;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// Floodsub peers beside gossipsub ones (the gossipsub spec's floodsub compatibility): they are never grafted, gossiped
/// to or obeyed in control, and they get every message of the topics they joined; a router that speaks only floodsub
/// is a floodsub router.
/// </summary>
public class FloodsubTests
{
    private static readonly byte[] Payload = [1, 2, 3];

    private static RouterFixture MixedFixture(int gossipPeers, int floodPeers, Func<GossipsubOptions, GossipsubOptions>? configure = null)
    {
        var f = new RouterFixture(0, o => (configure?.Invoke(o) ?? o) with { Protocols = [GossipsubProtocol.V11, GossipsubProtocol.Floodsub] });
        for (var i = 0; i < gossipPeers; i++)
        {
            f.AddPeer(outbound: false, [Topic]);
        }
        for (var i = 0; i < floodPeers; i++)
        {
            f.AddPeer(outbound: false, [Topic], GossipsubProtocol.Floodsub);
        }
        f.Drain();
        return f;
    }

    private static HashSet<PeerId> Floodsubs(RouterFixture f, int gossipPeers) =>
        f.Peers.Skip(gossipPeers).Select(p => p.PeerId).ToHashSet();

    [Test]
    public void Subscribe_WithFloodsubPeers_GraftsOnlyGossipsubPeersAndSendsNoControlToFloodsub()
    {
        var f = MixedFixture(gossipPeers: 3, floodPeers: 10);
        var flood = Floodsubs(f, 3);

        f.Router.Subscribe(Topic, f.Now);
        f.Heartbeat(3);
        var output = f.Drain();

        Assert.That(f.Router.MeshPeers(Topic), Has.Count.EqualTo(3));
        Assert.That(f.Router.MeshPeers(Topic).Any(flood.Contains), Is.False, "floodsub peers are never in a mesh");
        foreach (var (peer, rpc) in ByPeer(output).Where(kv => flood.Contains(kv.Key)))
        {
            Assert.That(rpc.Control, Is.Null, $"control sent to floodsub peer {peer}");
        }
    }

    [Test]
    public void Publish_WithoutFloodPublish_StillReachesEveryFloodsubSubscriber()
    {
        var f = MixedFixture(gossipPeers: 20, floodPeers: 5, o => o with { FloodPublish = false });
        var flood = Floodsubs(f, 20);
        f.Router.Subscribe(Topic, f.Now);
        f.Drain();

        var (_, sent) = f.Router.Publish(Topic, Payload, f.Now);
        var receivers = ByPeer(f.Drain()).Where(kv => kv.Value.Publish.Count > 0).Select(kv => kv.Key).ToHashSet();

        Assert.That(flood.IsSubsetOf(receivers), Is.True, "every floodsub subscriber gets our message");
        Assert.That(receivers.Except(flood).ToHashSet().SetEquals(f.Router.MeshPeers(Topic)), Is.True, "gossipsub peers only through the mesh");
        Assert.That(sent, Is.EqualTo(receivers.Count));
    }

    [Test]
    public void Receive_FromGossipPeer_ForwardsToFloodsubSubscribersButNotBackOrToTheAuthor()
    {
        var f = MixedFixture(gossipPeers: 2, floodPeers: 3);
        var flood = Floodsubs(f, 2);
        f.Router.Subscribe(Topic, f.Now);
        f.Drain();
        var author = f.Peers[2]; // a floodsub peer that wrote it, relayed to us by gossipsub peer 0
        var message = Signed(author, Topic, Payload, 1);

        f.Receive(0, message);
        var output = f.Drain();

        Assert.That(output.Deliveries, Has.Count.EqualTo(1));
        var receivers = ByPeer(output).Where(kv => kv.Value.Publish.Count > 0).Select(kv => kv.Key).ToHashSet();
        Assert.That(receivers, Does.Contain(f.Id(3)).And.Contain(f.Id(4)));
        Assert.That(receivers, Does.Not.Contain(f.Id(0)), "not back to who sent it");
        Assert.That(receivers, Does.Not.Contain(author.PeerId), "not to its author");
    }

    [Test]
    public void Receive_ControlFromFloodsubPeer_IsIgnored()
    {
        var f = MixedFixture(gossipPeers: 0, floodPeers: 2);
        f.Router.Subscribe(Topic, f.Now);
        f.Drain();

        f.Receive(0, Graft());
        f.Receive(1, IWant(new MessageId([1, 2, 3])));
        var output = f.Drain();

        Assert.That(f.Router.MeshPeers(Topic), Is.Empty, "a floodsub peer's GRAFT does not put it in the mesh");
        Assert.That(output.Rpcs, Is.Empty, "no PRUNE or IWANT answer to a floodsub peer");
    }

    [Test]
    public void FloodsubOnlyRouter_FloodsEveryMessageOnceAndDropsDuplicates()
    {
        var f = new RouterFixture(0, o => o with { Protocols = [GossipsubProtocol.Floodsub], FloodPublish = false });
        for (var i = 0; i < 4; i++)
        {
            f.AddPeer(outbound: false, [Topic], GossipsubProtocol.Floodsub);
        }
        f.AddPeer(outbound: false, ["other"], GossipsubProtocol.Floodsub);
        f.Router.Subscribe(Topic, f.Now);
        f.Drain();
        var message = Signed(f.Peers[0], Topic, Payload, 9);

        f.Receive(0, message);
        var first = ByPeer(f.Drain()).Where(kv => kv.Value.Publish.Count > 0).Select(kv => kv.Key).ToHashSet();
        f.Receive(1, message);
        var second = f.Drain();

        Assert.That(first.SetEquals([f.Id(1), f.Id(2), f.Id(3)]), Is.True, "to every other subscriber of the topic, none else");
        Assert.That(second.Rpcs.Where(r => r.Rpc.Publish.Count > 0), Is.Empty, "a duplicate is not flooded again");
        Assert.That(second.Deliveries, Is.Empty);
        Assert.That(f.Router.Counters.Duplicates, Is.EqualTo(1));
    }

    [Test]
    public void Receive_ForgedSignatureFromFloodsubPeer_IsNeitherDeliveredNorFlooded()
    {
        var f = MixedFixture(gossipPeers: 0, floodPeers: 3);
        f.Router.Subscribe(Topic, f.Now);
        f.Drain();
        var forged = Signed(f.Peers[0], Topic, Payload, 5);
        forged.Data = Google.Protobuf.ByteString.CopyFrom([9, 9, 9]);

        f.Receive(0, forged);
        var output = f.Drain();

        Assert.That(output.Deliveries, Is.Empty);
        Assert.That(output.Rpcs.Where(r => r.Rpc.Publish.Count > 0), Is.Empty);
        Assert.That(f.Router.Counters.InvalidSignatures, Is.EqualTo(1));
    }
}
