using System.Text;
using FsCheck;
using FsCheck.Fluent;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Mdns;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Mdns;

public class DnsMessageTests
{
    [Test]
    public void Query_RoundTrips()
    {
        var query = DnsMessage.Query(new DnsQuestion("_p2p._udp.local", DnsRecordType.Ptr, UnicastResponse: true));
        Assert.That(DnsMessage.TryDecode(query.Encode(), out var decoded, out _), Is.EqualTo(DecodeStatus.Done));
        Assert.That(decoded!.IsResponse, Is.False);
        Assert.That(decoded.Questions, Is.EqualTo(query.Questions));
    }

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public Property Response_RoundTrips() =>
        Prop.ForAll(Gen.Choose(1, 63).ToArbitrary(), ArbMap.Default.GeneratorFor<byte[][]>().ToArbitrary(), (labelLength, strings) =>
        {
            var texts = (strings ?? []).Where(s => s is not null).Select(s => s.Take(255).ToArray()).Take(20).ToList();
            var instance = new string('a', labelLength) + "._p2p._udp.local";
            var message = DnsMessage.Response([DnsRecord.Ptr("_p2p._udp.local", instance, 120)], [DnsRecord.Txt(instance, texts, 120)]);
            var ok = DnsMessage.TryDecode(message.Encode(), out var decoded, out _) == DecodeStatus.Done;
            return ok && decoded!.IsResponse && decoded.Answers[0].Target == instance && decoded.Answers[0].Ttl == 120
                   && decoded.Additional[0].Text!.Count == texts.Count
                   && decoded.Additional[0].Text!.Zip(texts).All(p => p.First.AsSpan().SequenceEqual(p.Second));
        });

    [FsCheck.NUnit.Property(MaxTest = 2000)]
    public bool Decode_RandomBytes_IsDoneOrInvalidAndNeverThrows(byte[] bytes)
    {
        var status = DnsMessage.TryDecode(bytes, out var message, out var error);
        return status switch
        {
            DecodeStatus.Done => message is not null,
            DecodeStatus.Invalid => message is null && error.Length > 0,
            _ => false,
        };
    }

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public Property Decode_MutatedResponse_IsDoneOrInvalid() =>
        Prop.ForAll(Gen.Choose(0, 10_000).ToArbitrary(), Gen.Choose(0, 255).ToArbitrary(), (position, value) =>
        {
            var packet = SampleResponse();
            packet[position % packet.Length] = (byte)value;
            var status = DnsMessage.TryDecode(packet, out _, out _);
            return status is DecodeStatus.Done or DecodeStatus.Invalid;
        });

    [Test]
    public void Decode_PointerLoop_IsInvalid()
    {
        // Header with one question whose name is a pointer to itself (offset 12).
        byte[] packet = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 12, 0, 1];
        Assert.That(DnsMessage.TryDecode(packet, out _, out var error), Is.EqualTo(DecodeStatus.Invalid));
        Assert.That(error, Does.Contain("pointer"));
    }

    [Test]
    public void Decode_ForwardPointerOrTwoPointersPingPonging_IsInvalid()
    {
        // name at 12: label "a" then pointer to 17 (forward); at 17: pointer back to 12.
        byte[] forward = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, (byte)'a', 0xC0, 17, 0, 0xC0, 12, 0, 12, 0, 1];
        Assert.That(DnsMessage.TryDecode(forward, out _, out _), Is.EqualTo(DecodeStatus.Invalid));
    }

    [Test]
    public void Decode_BackwardPointer_IsFollowed()
    {
        // Question 1: "local" at 12; question 2: "_udp" + pointer to 12.
        var packet = new List<byte> { 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0 };
        packet.AddRange([5, .. "local"u8, 0, 0, 12, 0, 1]);
        packet.AddRange([4, .. "_udp"u8, 0xC0, 12, 0, 12, 0, 1]);
        Assert.That(DnsMessage.TryDecode(packet.ToArray(), out var message, out _), Is.EqualTo(DecodeStatus.Done));
        Assert.That(message!.Questions.Select(q => q.Name), Is.EqualTo(new[] { "local", "_udp.local" }));
    }

    [Test]
    public void Decode_HugeCountsInHeader_WithNoBody_IsInvalidWithoutAllocatingForThem()
    {
        byte[] packet = [0, 0, 0x84, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        Assert.That(DnsMessage.TryDecode(packet, out _, out _), Is.EqualTo(DecodeStatus.Invalid));
    }

    [Test]
    public void Decode_OverlongNameOrLabelRunningPastPacket_IsInvalid()
    {
        var packet = new List<byte> { 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 };
        for (var i = 0; i < 5; i++)
        {
            packet.Add(63);
            packet.AddRange(Enumerable.Repeat((byte)'x', 63));
        }
        packet.AddRange([0, 0, 12, 0, 1]);
        Assert.That(DnsMessage.TryDecode(packet.ToArray(), out _, out var error), Is.EqualTo(DecodeStatus.Invalid));
        Assert.That(error, Does.Contain("255"));
        Assert.That(DnsMessage.TryDecode([0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 1, 2], out _, out _), Is.EqualTo(DecodeStatus.Invalid));
        Assert.That(DnsMessage.TryDecode(new byte[9001], out _, out _), Is.EqualTo(DecodeStatus.Invalid));
    }

    internal static byte[] SampleResponse()
    {
        var peer = PrivateKey.FromRandom(new Random(1)).PeerId;
        var core = new MdnsCore(peer, new MdnsOptions { PeerName = "samplepeer" }, new SeededSecureRandom(1));
        core.SetAddresses([Multiaddr.Parse("/ip4/192.168.1.2/tcp/4001"), Multiaddr.Parse("/ip4/10.0.0.1/tcp/4001")]);
        return core.BuildResponse()!;
    }
}

public class MdnsCoreTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private static (MdnsCore Core, PeerId Peer) Core(int seed, params string[] addresses)
    {
        var peer = PrivateKey.FromRandom(new Random(seed)).PeerId;
        var core = new MdnsCore(peer, new MdnsOptions(), new SeededSecureRandom(seed));
        core.SetAddresses(addresses.Select(Multiaddr.Parse).ToArray());
        return (core, peer);
    }

    [Test]
    public void QueryFromOnePeer_IsAnswered_AndTheAnswerDiscoversThePeerWithItsAddresses()
    {
        var (a, _) = Core(1, "/ip4/10.0.0.1/tcp/4001");
        var (b, bPeer) = Core(2, "/ip4/10.0.0.2/tcp/4001", "/ip4/10.0.0.2/udp/4001/quic-v1");

        var query = a.OnTimer(T0)!;
        var answer = b.OnPacket(query, T0);
        Assert.That(answer.Response, Is.Not.Null);
        var heard = a.OnPacket(answer.Response, T0);

        Assert.That(heard.Discovered, Has.Count.EqualTo(1));
        Assert.That(heard.Discovered[0].Peer, Is.EqualTo(bPeer));
        Assert.That(heard.Discovered[0].Addresses.Select(x => x.ToString()),
            Is.EqualTo(new[] { "/ip4/10.0.0.2/tcp/4001", "/ip4/10.0.0.2/udp/4001/quic-v1" }));
        Assert.That(heard.Response, Is.Null, "responses are not answered");
    }

    [Test]
    public void Response_FollowsTheSpecShape_PtrToRandomLabelAndDnsaddrTxt()
    {
        var (b, bPeer) = Core(3, "/ip4/10.0.0.3/tcp/4001");
        DnsMessage.TryDecode(b.BuildResponse(), out var message, out _);
        var ptr = message!.Answers.Single();
        Assert.That((ptr.Name, ptr.Type), Is.EqualTo(("_p2p._udp.local", DnsRecordType.Ptr)));
        Assert.That(ptr.Target, Is.EqualTo(b.PeerName + "._p2p._udp.local"));
        Assert.That(b.PeerName.Length, Is.InRange(1, 63));
        var txt = message.Additional.Single();
        Assert.That(txt.Name, Is.EqualTo(ptr.Target));
        Assert.That(txt.Text!.Select(t => Encoding.ASCII.GetString(t)), Is.EqualTo(new[] { $"dnsaddr=/ip4/10.0.0.3/tcp/4001/p2p/{bPeer}" }));
    }

    [Test]
    public void OwnResponse_AndUnrelatedQueries_AreIgnored_NoAddressesMeansNoResponse()
    {
        var (a, _) = Core(4, "/ip4/10.0.0.4/tcp/4001");
        Assert.That(a.OnPacket(a.BuildResponse(), T0).Discovered, Is.Empty);
        var other = DnsMessage.Query(new DnsQuestion("_http._tcp.local", DnsRecordType.Ptr)).Encode();
        Assert.That(a.OnPacket(other, T0), Is.SameAs(MdnsStep.None));
        var (silent, _) = Core(5);
        Assert.That(silent.OnPacket(MdnsCore.BuildQuery(), T0).Response, Is.Null);
    }

    [Test]
    public void Responses_AreRateLimited()
    {
        var (a, _) = Core(6, "/ip4/10.0.0.6/tcp/4001");
        var answered = Enumerable.Range(0, 50).Count(_ => a.OnPacket(MdnsCore.BuildQuery(), T0).Response is not null);
        Assert.That(answered, Is.EqualTo(new MdnsOptions().MaxResponsesPerSecond));
        Assert.That(a.OnPacket(MdnsCore.BuildQuery(), T0.AddSeconds(1)).Response, Is.Not.Null);
    }

    [Test]
    public void OnTimer_QueriesAtStartThenEveryInterval()
    {
        var (a, _) = Core(7);
        Assert.That(a.OnTimer(T0), Is.Not.Null);
        Assert.That(a.OnTimer(T0.AddMinutes(4)), Is.Null);
        Assert.That(a.OnTimer(T0.AddMinutes(5)), Is.Not.Null);
        Assert.That(a.NextQueryAt, Is.EqualTo(T0.AddMinutes(10)));
    }

    [Test]
    public void Announcements_WithBadOrForeignEntries_KeepOnlyWellFormedOnes()
    {
        var (a, _) = Core(8);
        var bPeer = PrivateKey.FromRandom(new Random(9)).PeerId;
        var cPeer = PrivateKey.FromRandom(new Random(10)).PeerId;
        var instance = "x._p2p._udp.local";
        var strings = new[]
        {
            $"dnsaddr=/ip4/10.0.0.9/tcp/1/p2p/{bPeer}",
            "dnsaddr=/ip4/10.0.0.9/tcp/2",
            "dnsaddr=garbage",
            $"other=/ip4/10.0.0.9/tcp/3/p2p/{bPeer}",
            $"dnsaddr=/ip4/10.0.0.10/tcp/4/p2p/{cPeer}",
        }.Select(Encoding.ASCII.GetBytes).ToArray();
        var packet = DnsMessage.Response(
            [DnsRecord.Ptr("_p2p._udp.local", instance, 120)],
            [DnsRecord.Txt(instance, strings, 120), DnsRecord.Txt("unrelated._p2p._udp.local", strings, 120)]).Encode();

        var step = a.OnPacket(packet, T0);
        Assert.That(step.Discovered.Select(d => d.Peer), Is.EquivalentTo(new[] { bPeer, cPeer }));
        Assert.That(step.Discovered.Single(d => d.Peer == bPeer).Addresses.Select(x => x.ToString()), Is.EqualTo(new[] { "/ip4/10.0.0.9/tcp/1" }));
    }

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public bool OnPacket_GarbageOrMutatedPackets_NeverThrow(byte[] bytes, int position, byte value)
    {
        var (a, _) = Core(11, "/ip4/10.0.0.11/tcp/4001");
        a.OnPacket(bytes, T0);
        var sample = DnsMessageTests.SampleResponse();
        sample[(position & int.MaxValue) % sample.Length] = value;
        var step = a.OnPacket(sample, T0);
        return step.Discovered.Count <= 1;
    }

    [Test]
    public void PeerName_Invalid_IsRefused()
    {
        var peer = PrivateKey.FromRandom(new Random(12)).PeerId;
        Assert.Throws<ArgumentException>(() => new MdnsCore(peer, new MdnsOptions { PeerName = new string('a', 64) }, new SeededSecureRandom(1)));
        Assert.Throws<ArgumentException>(() => new MdnsCore(peer, new MdnsOptions { PeerName = "a.b" }, new SeededSecureRandom(1)));
    }
}
