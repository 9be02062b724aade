using Google.Protobuf;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;
using static Potluck.Protocol.Tests.Gossipsub.RouterFixture;
using GPb = Potluck.Protocol.Gossipsub.Pb;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>Gossipsub v1.2 IDONTWANT: sent on the first copy of a large message, honoured when forwarding, bounded.</summary>
public class IDontWantTests
{
    private static readonly byte[] Large = new byte[2048];

    /// <summary>A router with six v1.2 mesh peers (0..5) and, when asked, a v1.1 one (6).</summary>
    private static RouterFixture Meshed(bool withV11 = false, Func<GossipsubOptions, GossipsubOptions>? configure = null)
    {
        var f = new RouterFixture(0, configure);
        for (var i = 0; i < 6; i++)
        {
            f.AddPeer(outbound: true, [Topic], GossipsubProtocol.V12);
        }
        if (withV11)
        {
            f.AddPeer(outbound: true, [Topic], GossipsubProtocol.V11);
        }
        f.Router.Subscribe(Topic, f.Now);
        for (var i = 0; i < f.Peers.Count; i++)
        {
            f.Receive(i, new GPb.RPC { Control = new GPb.ControlMessage { Graft = { new GPb.ControlGraft { TopicID = Topic } } } });
        }
        f.Drain();
        return f;
    }

    private static Dictionary<PeerId, GPb.RPC> Merge(RouterOutput output)
    {
        var merged = new Dictionary<PeerId, GPb.RPC>();
        foreach (var rpc in output.Rpcs)
        {
            if (!merged.TryGetValue(rpc.Peer, out var m))
            {
                merged[rpc.Peer] = m = new GPb.RPC { Control = new GPb.ControlMessage() };
            }
            m.Publish.AddRange(rpc.Rpc.Publish);
            if (rpc.Rpc.Control is { } c)
            {
                m.Control.MergeFrom(c);
            }
        }
        return merged;
    }

    [Test]
    public void FirstCopyOfALargeMessage_SendsIDontWantToOtherV12MeshPeers_NotToTheSenderOrV11Peers()
    {
        var f = Meshed(withV11: true);
        var author = PrivateKey.Generate();
        var message = Signed(author, Topic, Large, 1);

        f.Receive(0, new GPb.RPC { Publish = { message } });
        var output = Merge(f.Drain());

        var id = GossipsubRouter.DefaultMessageId(message);
        for (var i = 1; i < 6; i++)
        {
            var ids = output[f.Id(i)].Control.Idontwant.SelectMany(e => e.MessageIDs).Select(b => b.ToByteArray()).ToList();
            Assert.That(ids, Has.Count.EqualTo(1), $"peer {i} is told once");
            Assert.That(ids[0], Is.EqualTo(id));
        }
        Assert.That(output.TryGetValue(f.Id(0), out var toSender) ? toSender.Control.Idontwant : [], Is.Empty, "not the peer it came from");
        Assert.That(output[f.Id(6)].Control.Idontwant, Is.Empty, "a v1.1 peer does not speak IDONTWANT");
        Assert.That(output[f.Id(6)].Publish, Has.Count.EqualTo(1), "but still gets the message");
    }

    [Test]
    public void SmallMessage_SendsNoIDontWant()
    {
        var f = Meshed();
        f.Receive(0, new GPb.RPC { Publish = { Signed(PrivateKey.Generate(), Topic, [1, 2, 3], 1) } });
        Assert.That(Merge(f.Drain()).Values.SelectMany(r => r.Control.Idontwant), Is.Empty);
    }

    [Test]
    public void IDontWantFromAPeer_ItIsNotForwardedThatMessage_OthersStillAre()
    {
        var f = Meshed();
        var message = Signed(PrivateKey.Generate(), Topic, Large, 1);
        var id = GossipsubRouter.DefaultMessageId(message);
        f.Receive(3, new GPb.RPC { Control = new GPb.ControlMessage { Idontwant = { new GPb.ControlIDontWant { MessageIDs = { ByteString.CopyFrom(id) } } } } });

        f.Receive(0, new GPb.RPC { Publish = { message } });
        var output = Merge(f.Drain());

        Assert.That(output[f.Id(3)].Publish, Is.Empty, "peer 3 said it does not want it");
        foreach (var i in new[] { 1, 2, 4, 5 })
        {
            Assert.That(output[f.Id(i)].Publish, Has.Count.EqualTo(1), $"peer {i} gets it");
        }
        Assert.That(f.Router.Counters.IDontWantHonoured, Is.EqualTo(1));
    }

    [Test]
    public void IDontWant_ExpiresAfterItsHeartbeats()
    {
        var f = Meshed(configure: o => o with { IDontWantTtlHeartbeats = 2 });
        var message = Signed(PrivateKey.Generate(), Topic, Large, 1);
        var id = GossipsubRouter.DefaultMessageId(message);
        f.Receive(3, new GPb.RPC { Control = new GPb.ControlMessage { Idontwant = { new GPb.ControlIDontWant { MessageIDs = { ByteString.CopyFrom(id) } } } } });
        f.Heartbeat(2);
        f.Drain();

        f.Receive(0, new GPb.RPC { Publish = { message } });

        Assert.That(Merge(f.Drain())[f.Id(3)].Publish, Has.Count.EqualTo(1), "the IDONTWANT lapsed");
    }

    [Test]
    [Category("Adversarial")]
    public void IDontWantFlood_RegistersAtMostTheBudgetPerHeartbeat()
    {
        var f = Meshed(configure: o => o with { MaxIDontWantPerHeartbeat = 100, MaxControlEntriesPerRpc = 100_000 });
        var flood = new GPb.ControlIDontWant();
        for (var i = 0; i < 5000; i++)
        {
            flood.MessageIDs.Add(ByteString.CopyFrom(BitConverter.GetBytes(i)));
        }
        f.Receive(3, new GPb.RPC { Control = new GPb.ControlMessage { Idontwant = { flood } } });

        // A message whose id is past the budget is still forwarded to the flooder; the router kept only 100 ids.
        var message = Signed(PrivateKey.Generate(), Topic, Large, 1);
        var id = GossipsubRouter.DefaultMessageId(message);
        f.Receive(3, new GPb.RPC { Control = new GPb.ControlMessage { Idontwant = { new GPb.ControlIDontWant { MessageIDs = { ByteString.CopyFrom(id) } } } } });
        f.Receive(0, new GPb.RPC { Publish = { message } });
        Assert.That(Merge(f.Drain())[f.Id(3)].Publish, Has.Count.EqualTo(1), "the budget was spent: this IDONTWANT was ignored");
    }
}
