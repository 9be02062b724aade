using System.Buffers;
using System.IO.Pipelines;
using FsCheck;
using FsCheck.Fluent;
using Google.Protobuf;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;
using GPb = Potluck.Protocol.Gossipsub.Pb;

namespace Potluck.Protocol.Tests.Gossipsub;

public class RpcCodecTests
{
    private static readonly Gen<byte[]> SmallBytes = Gen.Choose(0, 40).SelectMany(n => Gen.ArrayOf(Gen.Choose(0, 255).Select(b => (byte)b), n));

    private static readonly Gen<string> Topics = Gen.Elements("a", "topic", "/potluck/ads/1", "ünï", "");

    private static readonly Gen<GPb.Message> Messages =
        from author in SmallBytes
        from data in SmallBytes
        from seqno in SmallBytes
        from topic in Topics
        from sig in SmallBytes
        select new GPb.Message { From = ByteString.CopyFrom(author), Data = ByteString.CopyFrom(data), Seqno = ByteString.CopyFrom(seqno), Topic = topic, Signature = ByteString.CopyFrom(sig) };

    private static readonly Gen<GPb.ControlMessage> Controls =
        from ihaveTopic in Topics
        from ids in Gen.ListOf(SmallBytes)
        from graft in Topics
        from prune in Topics
        from backoff in Gen.Choose(0, int.MaxValue)
        from px in SmallBytes
        select new GPb.ControlMessage
        {
            Ihave = { new GPb.ControlIHave { TopicID = ihaveTopic, MessageIDs = { ids.Select(ByteString.CopyFrom) } } },
            Iwant = { new GPb.ControlIWant { MessageIDs = { ids.Select(ByteString.CopyFrom) } } },
            Graft = { new GPb.ControlGraft { TopicID = graft } },
            Prune = { new GPb.ControlPrune { TopicID = prune, Backoff = (ulong)backoff, Peers = { new GPb.PeerInfo { PeerID = ByteString.CopyFrom(px) } } } },
        };

    private static readonly Gen<GPb.RPC> Rpcs =
        from subs in Gen.ListOf(Gen.Zip(Gen.Elements(true, false), Topics))
        from messages in Gen.ListOf(Messages)
        from control in Gen.OneOf(Gen.Constant<GPb.ControlMessage?>(null), Controls.Select(c => (GPb.ControlMessage?)c))
        select Build(subs, messages, control);

    private static GPb.RPC Build(IEnumerable<(bool, string)> subs, IEnumerable<GPb.Message> messages, GPb.ControlMessage? control)
    {
        var rpc = new GPb.RPC();
        rpc.Subscriptions.AddRange(subs.Select(s => new GPb.RPC.Types.SubOpts { Subscribe = s.Item1, Topicid = s.Item2 }));
        rpc.Publish.AddRange(messages);
        if (control is not null)
        {
            rpc.Control = control;
        }
        return rpc;
    }

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public Property AnyRpc_EncodeDecode_RoundTrips() =>
        Prop.ForAll(Rpcs.ToArbitrary(), rpc =>
        {
            var bytes = RpcCodec.Encode(rpc);
            return RpcCodec.TryDecode(bytes, 1 << 20, out var decoded, out _) == DecodeStatus.Done && decoded.Equals(rpc);
        });

    [FsCheck.NUnit.Property(MaxTest = 2000)]
    public bool RandomBytes_DecodeEndsInDoneOrInvalid(byte[] bytes)
    {
        var status = RpcCodec.TryDecode(bytes, 1 << 20, out _, out var error);
        return status == DecodeStatus.Done ? error is null : status == DecodeStatus.Invalid && error is not null;
    }

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public Property MutatedRpcBytes_DecodeToStatus_AndRouterSurvivesWhateverParses() =>
        Prop.ForAll(
            (from r in Rpcs
             from at in Gen.Choose(0, 1000)
             from value in Gen.Choose(0, 255)
             select (Bytes: RpcCodec.Encode(r), At: at, Value: value)).ToArbitrary(), t =>
        {
            var (bytes, at, value) = t;
            if (bytes.Length > 0)
            {
                bytes[at % bytes.Length] = (byte)value;
            }
            var status = RpcCodec.TryDecode(bytes, 1 << 20, out var rpc, out _);
            if (status == DecodeStatus.Done)
            {
                Feed(rpc);
            }
            return status is DecodeStatus.Done or DecodeStatus.Invalid;
        });

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public Property AnyParsedRpc_IntoRouter_NeverThrows() =>
        Prop.ForAll(Rpcs.ToArbitrary(), rpc =>
        {
            Feed(rpc);
            return true;
        });

    [Test]
    public void Decode_OverLimit_IsInvalidBeforeParsing()
    {
        Assert.That(RpcCodec.TryDecode(new byte[101], 100, out _, out var error), Is.EqualTo(DecodeStatus.Invalid));
        Assert.That(error, Does.Contain("limit"));
    }

    [Test]
    public void Decode_TruncatedRpc_IsInvalid()
    {
        var bytes = RpcCodec.Encode(new GPb.RPC { Publish = { new GPb.Message { Data = ByteString.CopyFrom(new byte[50]), Topic = "t" } } });
        Assert.That(RpcCodec.TryDecode(bytes.AsSpan(0, bytes.Length - 10), 1 << 20, out _, out _), Is.EqualTo(DecodeStatus.Invalid));
    }

    private static readonly PrivateKey Local = PrivateKey.FromRandom(new Random(1));
    private static readonly PrivateKey Remote = PrivateKey.FromRandom(new Random(2));

    private static void Feed(GPb.RPC rpc)
    {
        var now = DateTimeOffset.UnixEpoch;
        var router = new GossipsubRouter(Local.PeerId, Local, new GossipsubOptions(), new Random(1), now);
        foreach (var t in new[] { "a", "topic" })
        {
            router.Subscribe(t, now);
        }
        router.AddPeer(Remote.PeerId, GossipsubProtocol.V11, false, null, now);
        router.HandleRpc(Remote.PeerId, rpc, now);
        router.Heartbeat(now + TimeSpan.FromSeconds(1));
        router.HandleRpc(Remote.PeerId, rpc, now + TimeSpan.FromSeconds(1));
        router.Drain();
    }

    /// <summary>
    /// What the outbound writer puts on the stream for an RPC is exactly what encoding it and writing it length-prefixed
    /// did, and a small RPC is written without allocating an array for it (main's path: one <c>ToByteArray</c> per RPC
    /// per peer). Inline pipe schedulers: everything runs on this thread, so its allocation counter sees it all.
    /// </summary>
    [Test]
    public void Write_IsEncodeThenLengthPrefixed_WithoutAnArrayPerRpc()
    {
        var rpc = new GPb.RPC
        {
            Publish = { new GPb.Message { From = ByteString.CopyFrom(new byte[38]), Data = ByteString.CopyFrom(new byte[200]), Seqno = ByteString.CopyFrom(new byte[8]), Topic = "/potluck/ads/1", Signature = ByteString.CopyFrom(new byte[64]) } },
            Control = new GPb.ControlMessage { Ihave = { new GPb.ControlIHave { TopicID = "t", MessageIDs = { ByteString.CopyFrom(new byte[46]) } } } },
        };
        var large = new GPb.RPC { Publish = { new GPb.Message { Data = ByteString.CopyFrom(new byte[5000]), Topic = "t" } } };
        var pipe = new Pipe(new PipeOptions(readerScheduler: PipeScheduler.Inline, writerScheduler: PipeScheduler.Inline,
            pauseWriterThreshold: 0, useSynchronizationContext: false));
        var expected = new Pipe();
        foreach (var r in new[] { rpc, large })
        {
            RpcCodec.Write(pipe.Writer, r);
            Potluck.Protocol.Framing.LengthPrefixed.Write(expected.Writer, RpcCodec.Encode(r));
        }
        _ = pipe.Writer.FlushAsync();
        _ = expected.Writer.FlushAsync();
        pipe.Reader.TryRead(out var got);
        expected.Reader.TryRead(out var want);
        Assert.That(got.Buffer.ToArray(), Is.EqualTo(want.Buffer.ToArray()));
        pipe.Reader.AdvanceTo(got.Buffer.End);

        void WriteAndDrain(int count) // no assertion inside: a constraint is an allocation of its own
        {
            for (var i = 0; i < count; i++)
            {
                RpcCodec.Write(pipe.Writer, rpc);
            }
            _ = pipe.Writer.FlushAsync();
            pipe.Reader.TryRead(out var read);
            pipe.Reader.AdvanceTo(read.Buffer.End);
        }
        WriteAndDrain(100); // warm: the pipe's segments
        const int Rpcs = 1000;
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < Rpcs / 10; i++)
        {
            WriteAndDrain(10);
        }
        var perRpc = (GC.GetAllocatedBytesForCurrentThread() - before) / (double)Rpcs;
        Assert.That(rpc.CalculateSize(), Is.LessThanOrEqualTo(RpcCodec.StackLimit));
        // Encoding into an array would be at least the RPC's ~390 bytes per RPC.
        Assert.That(perRpc, Is.LessThan(16), $"{perRpc:F1} bytes allocated per RPC written");
    }
}
