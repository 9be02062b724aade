using System.Buffers.Binary;
using Google.Protobuf;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;
using GPb = Potluck.Protocol.Gossipsub.Pb;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>One router under test and hand-driven remote peers; time is a field moved by the test.</summary>
internal sealed class RouterFixture
{
    public const string Topic = "t";

    private readonly Random _random;

    /// <param name="shared">Messages shared with other routers of the test (<see cref="Potluck.Protocol.Runtime.SharedValues"/>); null: none.</param>
    public RouterFixture(int peers, Func<GossipsubOptions, GossipsubOptions>? configure = null, bool subscribe = true, bool outbound = false, int seed = 7,
        Potluck.Protocol.Runtime.WeakShareTable<GPb.Message>? shared = null, Potluck.Protocol.Runtime.SharedValues? sharedValues = null)
    {
        _random = new Random(seed);
        Options = configure?.Invoke(new GossipsubOptions()) ?? new GossipsubOptions();
        Key = PrivateKey.FromRandom(_random);
        Router = new GossipsubRouter(Key.PeerId, Key, Options, new Random(seed), Now, sharedMessages: shared, sharedValues: sharedValues);
        for (var i = 0; i < peers; i++)
        {
            AddPeer(outbound, subscribe ? [Topic] : []);
        }
        Router.Drain();
    }

    public DateTimeOffset Now { get; set; } = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    public GossipsubOptions Options { get; }

    public PrivateKey Key { get; }

    public GossipsubRouter Router { get; }

    public List<PrivateKey> Peers { get; } = [];

    public PeerId Id(int peer) => Peers[peer].PeerId;

    public PrivateKey AddPeer(bool outbound, string[] topics, string protocol = GossipsubProtocol.V11)
    {
        var key = PrivateKey.FromRandom(_random);
        Peers.Add(key);
        Router.AddPeer(key.PeerId, protocol, outbound, null, Now);
        if (topics.Length > 0)
        {
            var rpc = new GPb.RPC();
            foreach (var t in topics)
            {
                rpc.Subscriptions.Add(new GPb.RPC.Types.SubOpts { Subscribe = true, Topicid = t });
            }
            Router.HandleRpc(key.PeerId, rpc, Now);
        }
        return key;
    }

    public RouterOutput Drain() => Router.Drain();

    public void Heartbeat(int count = 1)
    {
        for (var i = 0; i < count; i++)
        {
            Now += Options.HeartbeatInterval;
            Router.Heartbeat(Now);
        }
    }

    public void Receive(int peer, GPb.RPC rpc) => Router.HandleRpc(Id(peer), rpc, Now);

    public void Receive(int peer, GPb.Message message) => Receive(peer, new GPb.RPC { Publish = { message } });

    public void Receive(int peer, GPb.ControlMessage control) => Receive(peer, new GPb.RPC { Control = control });

    public double Score(int peer) => Router.Score(Id(peer), Now);

    public static GPb.Message Signed(PrivateKey author, string topic, byte[] data, ulong seqno)
    {
        var s = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(s, seqno);
        var m = new GPb.Message
        {
            From = ByteString.CopyFrom(author.PeerId.Bytes),
            Seqno = ByteString.CopyFrom(s),
            Topic = topic,
            Data = ByteString.CopyFrom(data),
        };
        MessageSigning.Sign(m, author);
        return m;
    }

    public static MessageId IdOf(GPb.Message m) => new(GossipsubRouter.DefaultMessageId(m));

    public static GPb.ControlMessage Graft(string topic = Topic) => new() { Graft = { new GPb.ControlGraft { TopicID = topic } } };

    public static GPb.ControlMessage Prune(string topic = Topic, ulong backoff = 60, params PeerId[] px)
    {
        var prune = new GPb.ControlPrune { TopicID = topic, Backoff = backoff };
        foreach (var p in px)
        {
            prune.Peers.Add(new GPb.PeerInfo { PeerID = ByteString.CopyFrom(p.Bytes) });
        }
        return new GPb.ControlMessage { Prune = { prune } };
    }

    public static GPb.ControlMessage IHave(string topic, params MessageId[] ids)
    {
        var ihave = new GPb.ControlIHave { TopicID = topic };
        foreach (var id in ids)
        {
            ihave.MessageIDs.Add(ByteString.CopyFrom(id.Span));
        }
        return new GPb.ControlMessage { Ihave = { ihave } };
    }

    public static GPb.ControlMessage IWant(params MessageId[] ids)
    {
        var iwant = new GPb.ControlIWant();
        foreach (var id in ids)
        {
            iwant.MessageIDs.Add(ByteString.CopyFrom(id.Span));
        }
        return new GPb.ControlMessage { Iwant = { iwant } };
    }

    /// <summary>RPCs of one drain merged per peer, for easy assertions.</summary>
    public static Dictionary<PeerId, GPb.RPC> ByPeer(RouterOutput output)
    {
        var merged = new Dictionary<PeerId, GPb.RPC>();
        foreach (var (peer, rpc) in output.Rpcs)
        {
            if (!merged.TryGetValue(peer, out var m))
            {
                merged[peer] = m = new GPb.RPC();
            }
            m.MergeFrom(rpc);
        }
        return merged;
    }

    public static IEnumerable<PeerId> PeersWith(RouterOutput output, Func<GPb.RPC, bool> predicate) =>
        ByPeer(output).Where(kv => predicate(kv.Value)).Select(kv => kv.Key);
}
