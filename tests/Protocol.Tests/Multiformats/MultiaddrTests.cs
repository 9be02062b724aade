using System.Net;
using System.Text;
using FsCheck;
using FsCheck.Fluent;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.Tests.Multiformats;

public class MultiaddrTests
{
    private const string QmPeer = "QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC";
    private const string QmPeerHex = "1220d52ebb89d85b02a284948203a62ff28389c57c9f42beec4ec20db76a68911c0b";
    private const string EdPeer = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

    // Text and binary pairs: the first three and the /p2p/ one from go-multiaddr's TestStringToBytes / TestBytesToString
    // and js-multiaddr, /ip4/192.0.2.42/tcp/443 from the multiaddr spec's conformance feature; the rest assembled from the
    // multicodec table (codes as unsigned varints, values as the table's sizes say).
    [TestCase("/ip4/127.0.0.1/udp/1234", "047f000001910204d2")]
    [TestCase("/ip4/127.0.0.1/tcp/4321", "047f0000010610e1")]
    [TestCase("/ip4/127.0.0.1/udp/1234/ip4/127.0.0.1/tcp/4321", "047f000001910204d2047f0000010610e1")]
    [TestCase("/ip4/192.0.2.42/tcp/443", "04c000022a0601bb")]
    [TestCase("/p2p/" + QmPeer, "a50322" + QmPeerHex)]
    [TestCase("/ip6/::1/tcp/4001", "2900000000000000000000000000000001060fa1")]
    [TestCase("/ip6/2001:db8::1/udp/4001/quic-v1", "2920010db800000000000000000000000191020fa1cd03")]
    [TestCase("/ip4/1.2.3.4/udp/4001/quic-v1", "040102030491020fa1cd03")]
    [TestCase("/dns/localhost/tcp/80", "35096c6f63616c686f737406" + "0050")]
    [TestCase("/dns4/example.com/tcp/443", "360b6578616d706c652e636f6d0601bb")]
    [TestCase("/dns6/example.com/udp/53", "370b6578616d706c652e636f6d910200" + "35")]
    [TestCase("/dnsaddr/bootstrap.libp2p.io", "3813626f6f7473747261702e6c69627032702e696f")]
    [TestCase("/p2p-circuit", "a202")]
    [TestCase("/ip4/10.0.0.1/tcp/4001/p2p/" + QmPeer + "/p2p-circuit", "040a000001060fa1a50322" + QmPeerHex + "a202")]
    [TestCase("/memory/1234", "890600000000000004d2")]
    [TestCase("/memory/18446744073709551615", "8906ffffffffffffffff")]
    public void TextAndBinary_SpecExamples_ConvertBothWays(string text, string hex)
    {
        var bytes = Convert.FromHexString(hex);
        var parsed = Multiaddr.Parse(text);
        Assert.That(Convert.ToHexStringLower(parsed.ToBytes()), Is.EqualTo(hex));
        Assert.That(parsed.ToString(), Is.EqualTo(text));
        Assert.That(Multiaddr.TryFromBytes(bytes, out var decoded), Is.True);
        Assert.That(decoded.ToString(), Is.EqualTo(text));
        Assert.That(decoded, Is.EqualTo(parsed));
        Assert.That(decoded.GetHashCode(), Is.EqualTo(parsed.GetHashCode()));
    }

    // Accepted by go-multiaddr's TestConstructSucceeds (the ones within our protocols) and printed in canonical form.
    [TestCase("/ip4/1.2.3.4", "/ip4/1.2.3.4")]
    [TestCase("/ip4/0.0.0.0", "/ip4/0.0.0.0")]
    [TestCase("/ip6/::1", "/ip6/::1")]
    [TestCase("/ip6/2601:9:4f81:9700:803e:ca65:66e8:c21", "/ip6/2601:9:4f81:9700:803e:ca65:66e8:c21")]
    [TestCase("/ip6/2601:9:4f81:9700:803e:ca65:66e8:c21/udp/1234/quic-v1", "/ip6/2601:9:4f81:9700:803e:ca65:66e8:c21/udp/1234/quic-v1")]
    [TestCase("/ip6/ABCD::1:2:3:4:5:6", "/ip6/abcd:0:1:2:3:4:5:6")]
    [TestCase("/ip6/::ffff:1.2.3.4/tcp/1", "/ip6/::ffff:1.2.3.4/tcp/1")]
    [TestCase("/udp/0", "/udp/0")]
    [TestCase("/tcp/65535", "/tcp/65535")]
    [TestCase("/ip4/127.0.0.1/tcp/1234/", "/ip4/127.0.0.1/tcp/1234")]
    [TestCase("/ipfs/" + QmPeer, "/p2p/" + QmPeer)]
    [TestCase("/ip4/127.0.0.1/ipfs/" + QmPeer + "/tcp/1234", "/ip4/127.0.0.1/p2p/" + QmPeer + "/tcp/1234")]
    [TestCase("/p2p/12D3KooWCryG7Mon9orvQxcS1rYZjotPgpwoJNHHKcLLfE4Hf5mV", "/p2p/12D3KooWCryG7Mon9orvQxcS1rYZjotPgpwoJNHHKcLLfE4Hf5mV")]
    [TestCase("/p2p/bafzbeigvf25ytwc3akrijfecaotc74udrhcxzh2cx3we5qqnw5vgrei4bm", "/p2p/" + QmPeer)]
    [TestCase("/ip4/127.0.0.1/tcp/0/p2p/" + EdPeer, "/ip4/127.0.0.1/tcp/0/p2p/" + EdPeer)]
    [TestCase("/memory/4", "/memory/4")]
    [TestCase("/dns/xn--bcher-kva.example/tcp/1", "/dns/xn--bcher-kva.example/tcp/1")]
    [TestCase("/dns/bücher.example/tcp/1", "/dns/bücher.example/tcp/1")]
    public void Parse_ValidText_PrintsCanonically(string text, string canonical)
    {
        Assert.That(Multiaddr.TryParse(text, out var addr, out var error), Is.True, error);
        Assert.That(addr.ToString(), Is.EqualTo(canonical));
        Assert.That(Multiaddr.Parse(canonical), Is.EqualTo(addr));
    }

    [TestCase("00000000000000000000000000000000")]
    [TestCase("00000000000000000000000000000001")]
    [TestCase("00000000000000000000000001020304")] // IPv4-compatible (deprecated) form
    [TestCase("00000000000000000000ffff01020304")] // IPv4-mapped
    [TestCase("0064ff9b000000000000000001020304")] // NAT64 well-known prefix
    [TestCase("fe800000000000000000000000000001")]
    [TestCase("20010db8000000010000000000000000")]
    [TestCase("ffffffffffffffffffffffffffffffff")]
    [TestCase("00000000000000000001000000000000")]
    public void Ip6_EdgeAddresses_RoundTripBytesTextBytes(string hex)
    {
        byte[] bytes = [0x29, .. Convert.FromHexString(hex)];
        var text = Multiaddr.FromBytes(bytes).ToString();
        Assert.That(Multiaddr.TryParse(text, out var back, out var error), Is.True, $"{text}: {error}");
        Assert.That(back.ToBytes(), Is.EqualTo(bytes), text);
    }

    [Test]
    public void P2p_CidOfShaPeerId_HasSameBytesAsBase58Form()
    {
        var viaCid = Multiaddr.Parse("/p2p/bafzbeigvf25ytwc3akrijfecaotc74udrhcxzh2cx3we5qqnw5vgrei4bm");
        Assert.That(Convert.ToHexStringLower(viaCid.ToBytes()), Is.EqualTo("a50322" + QmPeerHex));
    }

    // Rejected by go-multiaddr's TestConstructFails (those within our protocols) and a few of our own.
    [TestCase("")]
    [TestCase("/")]
    [TestCase("//")]
    [TestCase("ip4/1.2.3.4")]
    [TestCase("/ip4")]
    [TestCase("/ip4/::1")]
    [TestCase("/ip4/fdpsofodsajfdoisa")]
    [TestCase("/ip6")]
    [TestCase("/udp")]
    [TestCase("/tcp")]
    [TestCase("/udp/65536")]
    [TestCase("/tcp/65536")]
    [TestCase("/quic-v1/65536")]
    [TestCase("/ip4/127.0.0.1/udp/jfodsajfidosajfoidsa")]
    [TestCase("/ip4/127.0.0.1/udp")]
    [TestCase("/ip4/127.0.0.1/tcp/jfodsajfidosajfoidsa")]
    [TestCase("/ip4/127.0.0.1/tcp")]
    [TestCase("/ip4/127.0.0.1/quic-v1/1234")]
    [TestCase("/ip4/127.0.0.1/ipfs")]
    [TestCase("/ip4/127.0.0.1/ipfs/tcp")]
    [TestCase("/ip4/127.0.0.1/p2p")]
    [TestCase("/ip4/127.0.0.1/p2p/tcp")]
    [TestCase("/ip4/1.2.3.4/tcp/-1")]
    [TestCase("/memory/92233720368547758081")]
    [TestCase("/p2p/QmxoHT6iViN5xAjoz1VZ553cL31U9F94ht3QvWR1FrEbZY")] // sha256 multihash with a digest over 32 bytes
    [TestCase("/ip4/01.2.3.4")]       // leading zero (octal in some parsers)
    [TestCase("/ip4/1.2.3")]
    [TestCase("/ip4/1.2.3.4.5")]
    [TestCase("/ip4/0x7f.0.0.1")]
    [TestCase("/ip4/ 1.2.3.4")]
    [TestCase("/ip4/1.2.3.256")]
    [TestCase("/ip6/fe80::1%eth0")]   // the zone would be lost in the binary form
    [TestCase("/ip6/[::1]")]
    [TestCase("/ip6/1.2.3.4")]
    [TestCase("/ip6/::1::2")]
    [TestCase("/tcp/+80")]
    [TestCase("/tcp/ 80")]
    [TestCase("/ip4/1.2.3.4//tcp/1")]
    [TestCase("/ws")]
    [TestCase("/IP4/1.2.3.4")]
    public void Parse_InvalidText_IsRejectedWithAReason(string text)
    {
        Assert.That(Multiaddr.TryParse(text, out var addr, out var error), Is.False);
        Assert.That(addr, Is.EqualTo(Multiaddr.Empty));
        Assert.That(error, Is.Not.Empty);
        var ex = Assert.Throws<FormatException>(() => Multiaddr.Parse(text));
        Assert.That(ex!.Message, Does.Contain(error));
    }

    [TestCase("/ip4/300.1.1.1/tcp/1", "'300.1.1.1' is not an IPv4 address")]
    [TestCase("/ip6/2001:db8::g/tcp/1", "'2001:db8::g' is not an IPv6 address")]
    [TestCase("/ip4/1.2.3.4/tcp/70000", "'70000' is not a port (0-65535)")]
    [TestCase("/ip4/1.2.3.4/tcp", "'tcp' needs a value, e.g. /tcp/4001")]
    [TestCase("/ip4/1.2.3.4/tpc/1", "unknown protocol 'tpc' (supported: ip4, tcp, udp, ip6, dns, dns4, dns6, dnsaddr, p2p, p2p-circuit, quic-v1, memory)")]
    [TestCase("/p2p/Qmfoo", "'Qmfoo' is not a peer id")]
    [TestCase("/memory/-1", "'-1' is not a memory address")]
    [TestCase("ip4/1.2.3.4", "a multiaddr starts with '/'")]
    [TestCase("/ip4/1.2.3.4//tcp/1", "empty component ('//')")]
    public void Parse_InvalidText_SaysWhatToFix(string text, string expected)
    {
        Assert.That(Multiaddr.TryParse(text, out _, out var error), Is.False);
        Assert.That(error, Does.Contain(expected));
    }

    [Test]
    public void Parse_OverlongDnsNameOrAddress_IsRejected()
    {
        Assert.That(Multiaddr.TryParse("/dns/" + new string('a', 255), out _), Is.True);
        Assert.That(Multiaddr.TryParse("/dns/" + new string('a', 256), out _, out var error), Is.False);
        Assert.That(error, Does.Contain("DNS name longer than 255"));
        Assert.That(Multiaddr.TryParse("/dns/" + new string('é', 128), out _), Is.False); // 256 UTF-8 bytes
        var fiveNames = string.Concat(Enumerable.Repeat("/dns/" + new string('a', 250), 5));
        Assert.That(Multiaddr.TryParse(fiveNames, out _, out error), Is.False);
        Assert.That(error, Does.Contain("too long"));
        var manyComponents = string.Concat(Enumerable.Repeat("/p2p-circuit", Multiaddr.MaxComponents + 1));
        Assert.That(Multiaddr.TryParse(manyComponents, out _, out error), Is.False);
        Assert.That(error, Does.Contain("components"));
    }

    [TestCase("", false)]                             // the empty address, as go-multiaddr
    [TestCase("04", false)]                           // ip4 without its value
    [TestCase("047f0000", false)]                     // ip4 short one byte
    [TestCase("047f00000106", false)]                 // tcp without its port
    [TestCase("0610", false)]                         // tcp short one byte
    [TestCase("ff", false)]                           // truncated code varint
    [TestCase("8000", false)]                         // non-minimal code varint
    [TestCase("cc03", false)]                         // 460: draft-29 quic, not ours
    [TestCase("3500", false)]                         // empty dns name
    [TestCase("35066c6f63616c", false)]               // dns name shorter than its length
    [TestCase("3503612f62", false)]                   // dns name "a/b": could never print as text
    [TestCase("3502c328", false)]                     // dns name that is not UTF-8
    [TestCase("a50322" + "1220d52e", false)]          // p2p value shorter than its length
    [TestCase("a50304" + "12020102", false)]          // p2p: a sha256 multihash with a 2-byte digest
    [TestCase("a503221320" + "d52ebb89d85b02a284948203a62ff28389c57c9f42beec4ec20db76a6891", false)] // p2p: not sha256
    [TestCase("8906000000", false)]                   // memory short
    [TestCase("a203", false)]                         // code 418: not a protocol we know
    [TestCase("a202a202", true)]
    public void FromBytes_MalformedOrEdgeCases(string hex, bool valid)
    {
        var bytes = Convert.FromHexString(hex);
        Assert.That(Multiaddr.TryFromBytes(bytes, out var addr), Is.EqualTo(valid));
        if (!valid)
        {
            Assert.That(addr, Is.EqualTo(Multiaddr.Empty));
            Assert.Throws<FormatException>(() => Multiaddr.FromBytes(bytes));
        }
    }

    [Test]
    public void FromBytes_OverLimits_IsRejected()
    {
        var circuit = Convert.FromHexString("a202");
        var atLimit = Enumerable.Repeat(circuit, Multiaddr.MaxComponents).SelectMany(b => b).ToArray();
        Assert.That(Multiaddr.TryFromBytes(atLimit, out _), Is.True);
        Assert.That(Multiaddr.TryFromBytes([.. atLimit, .. circuit], out _), Is.False);
        Assert.That(Multiaddr.TryFromBytes(new byte[Multiaddr.MaxBytes + 1], out _), Is.False);
        // A length prefix far beyond the input must not allocate or throw.
        Assert.That(Multiaddr.TryFromBytes(Convert.FromHexString("35ffffffffffffffff7f61"), out _), Is.False);
    }

    [Test]
    public void ToBytes_ReturnsACopy()
    {
        var addr = Multiaddr.Parse("/ip4/1.2.3.4/tcp/5");
        addr.ToBytes()[1] = 9;
        Assert.That(addr.ToString(), Is.EqualTo("/ip4/1.2.3.4/tcp/5"));
        Assert.That(addr.Bytes.ToArray(), Is.EqualTo(addr.ToBytes()));
    }

    [Test]
    public void Peer_WithPeerReplacesTrailingPeer_AndWithoutPeerStripsIt()
    {
        var a = PrivateKey.FromSeed(new byte[32]).PeerId;
        var b = PeerId.Parse(QmPeer);
        var tcp = Multiaddr.Parse("/ip4/1.2.3.4/tcp/5");
        Assert.That(tcp.PeerId, Is.Null);
        var withA = tcp.WithPeer(a);
        Assert.That(withA.ToString(), Is.EqualTo($"/ip4/1.2.3.4/tcp/5/p2p/{a}"));
        Assert.That(withA.PeerId, Is.EqualTo(a));
        Assert.That(withA.WithPeer(b).ToString(), Is.EqualTo($"/ip4/1.2.3.4/tcp/5/p2p/{QmPeer}"));
        Assert.That(withA.WithoutPeer(), Is.EqualTo(tcp));
        var relayed = Multiaddr.Parse($"/ip4/1.2.3.4/tcp/5/p2p/{QmPeer}/p2p-circuit/p2p/{a}");
        Assert.That(relayed.PeerId, Is.EqualTo(a));
        Assert.That(relayed.WithoutPeer().ToString(), Is.EqualTo($"/ip4/1.2.3.4/tcp/5/p2p/{QmPeer}/p2p-circuit"));
        Assert.That(relayed.Find(Multiaddr.Tcp)?.ValueText, Is.EqualTo("5"));
        Assert.That(relayed.Find(Multiaddr.Memory), Is.Null);
    }

    [Test]
    public void Encapsulate_InvalidValueOrUnknownProtocol_Throws()
    {
        var empty = Multiaddr.Empty;
        Assert.Throws<ArgumentException>(() => empty.Encapsulate(Multiaddr.Ip4, new byte[3]));
        Assert.Throws<ArgumentException>(() => empty.Encapsulate(Multiaddr.P2pCircuit, new byte[1]));
        Assert.Throws<ArgumentException>(() => empty.Encapsulate(Multiaddr.P2p, new byte[5]));
        Assert.Throws<ArgumentException>(() => empty.Encapsulate(Multiaddr.Dns, "a/b"u8.ToArray()));
        Assert.Throws<ArgumentException>(() => empty.Encapsulate(Multiaddr.Dns, ReadOnlyMemory<byte>.Empty));
        Assert.Throws<ArgumentException>(() => empty.Encapsulate(new MultiaddrProtocol(0x01CC, "quic", 0), ReadOnlyMemory<byte>.Empty));
        Assert.Throws<ArgumentException>(() => empty.Encapsulate(new MultiaddrProtocol(0x06, "tcp", 32), new byte[4]));
        var value = new byte[] { 1, 2, 3, 4 };
        var addr = empty.Encapsulate(Multiaddr.Ip4, value);
        value[0] = 9; // the value was copied
        Assert.That(addr.ToString(), Is.EqualTo("/ip4/1.2.3.4"));
        Assert.That(addr.Encapsulate(Multiaddr.Parse("/tcp/80")).ToString(), Is.EqualTo("/ip4/1.2.3.4/tcp/80"));
    }

    [TestCase("127.0.0.1", 4001, "/ip4/127.0.0.1/tcp/4001")]
    [TestCase("::1", 0, "/ip6/::1/tcp/0")]
    [TestCase("::ffff:10.0.0.1", 65535, "/ip4/10.0.0.1/tcp/65535")]
    public void TcpEndPoint_ConvertsBothWays(string ip, int port, string text)
    {
        var addr = Multiaddr.FromTcpEndPoint(new IPEndPoint(IPAddress.Parse(ip), port));
        Assert.That(addr.ToString(), Is.EqualTo(text));
        var back = addr.ToTcpEndPoint();
        Assert.That(back, Is.Not.Null);
        Assert.That(back!.Port, Is.EqualTo(port));
        Assert.That(Multiaddr.FromTcpEndPoint(back), Is.EqualTo(addr));
        Assert.That(Multiaddr.Parse("/ip4/1.2.3.4/udp/1").ToTcpEndPoint(), Is.Null);
        Assert.That(Multiaddr.Parse("/dns/a/tcp/1").ToTcpEndPoint(), Is.Null);
    }

    [Test]
    public void Protocols_ByNameAndCode_AreConsistent()
    {
        foreach (var p in Multiaddr.Protocols)
        {
            Assert.That(Multiaddr.ProtocolByName(p.Name), Is.SameAs(p));
            Assert.That(Multiaddr.ProtocolByCode(p.Code), Is.SameAs(p));
        }
        Assert.That(Multiaddr.ProtocolByName("ipfs"), Is.SameAs(Multiaddr.P2p));
        Assert.That(Multiaddr.QuicV1.Code, Is.EqualTo(461));
        Assert.That(Multiaddr.Memory.Code, Is.EqualTo(777));
        Assert.That(Multiaddr.P2pCircuit.Code, Is.EqualTo(290));
    }

    // ---- properties ----

    private static readonly PeerId[] SamplePeers =
    [
        PeerId.Parse(QmPeer),
        PeerId.Parse(EdPeer),
        PrivateKey.FromSeed(new byte[32]).PeerId,
        PeerId.Parse("16Uiu2HAmDJQXZM39z5TzoZN7Sw8tbwjR6Evg9CFmiWhLbnSFGADL"), // secp256k1, identity-hashed
    ];

    private static Gen<byte[]> Bytes(int n) => Gen.Choose(0, 255).Select(i => (byte)i).ArrayOf(n);

    private static readonly Gen<string> DnsName =
        Gen.Elements("abcdefghijklmnopqrstuvwxyz0123456789-.".ToCharArray())
            .NonEmptyListOf().Where(cs => cs.Count <= 40).Select(cs => new string([.. cs]));

    /// <summary>One valid component as text, built independently of the codec under test.</summary>
    private static readonly Gen<string> ComponentText = Gen.OneOf(
        Bytes(4).Select(b => $"/ip4/{b[0]}.{b[1]}.{b[2]}.{b[3]}"),
        Bytes(16).Select(b => $"/ip6/{new IPAddress(b)}"),
        Gen.Choose(0, 65535).Select(p => $"/tcp/{p}"),
        Gen.Choose(0, 65535).Select(p => $"/udp/{p}"),
        Gen.Elements("dns", "dns4", "dns6", "dnsaddr").SelectMany(n => DnsName.Select(d => $"/{n}/{d}")),
        Gen.Elements(SamplePeers).Select(p => $"/p2p/{p}"),
        Bytes(32).Select(d => $"/p2p/{Base58.Encode([0x12, 0x20, .. d])}"),
        Gen.Constant("/p2p-circuit"),
        Gen.Constant("/quic-v1"),
        VarintTests.AnyULong().Select(v => $"/memory/{v}"));

    private static readonly Gen<string> AddressText =
        ComponentText.NonEmptyListOf().Where(l => l.Count <= 8).Select(string.Concat);

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public Property TextBytesText_RoundTripsGeneratedAddresses() =>
        Prop.ForAll(AddressText.ToArbitrary(), text =>
        {
            var addr = Multiaddr.Parse(text);
            var fromBytes = Multiaddr.FromBytes(addr.ToBytes());
            return addr.ToString() == text && fromBytes.ToString() == text && fromBytes.Equals(addr)
                   && fromBytes.GetHashCode() == addr.GetHashCode();
        });

    /// <summary>Valid binary components built from the multicodec table, independently of the codec under test.</summary>
    private static readonly Gen<byte[]> ComponentBytes = Gen.OneOf(
        Bytes(4).Select(b => (byte[])[0x04, .. b]),
        Bytes(16).Select(b => (byte[])[0x29, .. b]),
        Bytes(2).Select(b => (byte[])[0x06, .. b]),
        Bytes(2).Select(b => (byte[])[0x91, 0x02, .. b]),
        Gen.Elements<byte>(0x35, 0x36, 0x37, 0x38).SelectMany(code => DnsName.Select(d =>
            (byte[])[code, (byte)d.Length, .. Encoding.ASCII.GetBytes(d)])),
        Bytes(32).Select(d => (byte[])[0xa5, 0x03, 34, 0x12, 0x20, .. d]),
        Gen.Elements(SamplePeers).Select(p => (byte[])[0xa5, 0x03, (byte)p.Bytes.Length, .. p.ToBytes()]),
        Gen.Constant<byte[]>([0xa2, 0x02]),
        Gen.Constant<byte[]>([0xcd, 0x03]),
        Bytes(8).Select(b => (byte[])[0x89, 0x06, .. b]));

    private static readonly Gen<byte[]> AddressBytes =
        ComponentBytes.NonEmptyListOf().Where(l => l.Count <= 8).Select(l => l.SelectMany(b => b).ToArray());

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public Property BytesTextBytes_RoundTripsGeneratedAddresses() =>
        Prop.ForAll(AddressBytes.ToArbitrary(), bytes =>
        {
            var addr = Multiaddr.FromBytes(bytes);
            var reparsed = Multiaddr.Parse(addr.ToString());
            return reparsed.ToBytes().AsSpan().SequenceEqual(bytes) && reparsed.ToString() == addr.ToString();
        });

    /// <summary>Anything accepted from bytes prints as text that parses back to the same bytes.</summary>
    private static bool AcceptedBytesAreConsistent(byte[] bytes)
    {
        if (!Multiaddr.TryFromBytes(bytes, out var addr))
        {
            return addr.Equals(Multiaddr.Empty);
        }
        return addr.ToBytes().AsSpan().SequenceEqual(bytes)
               && Multiaddr.TryParse(addr.ToString(), out var reparsed, out _)
               && reparsed.Equals(addr);
    }

    [FsCheck.NUnit.Property(MaxTest = 2000)]
    public bool FromBytes_RandomBytes_NeverThrows(byte[] bytes) => AcceptedBytesAreConsistent(bytes);

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public Property FromBytes_MutatedValidBytes_NeverThrows() =>
        Prop.ForAll(
            AddressBytes.SelectMany(b => Gen.Choose(0, b.Length - 1).SelectMany(i =>
                Gen.Choose(0, 255).SelectMany(v => Gen.Choose(0, 2).Select(kind => kind switch
                {
                    0 => b[..i],                                      // truncate
                    1 => [.. b[..i], (byte)v, .. b[(i + 1)..]],       // overwrite a byte
                    _ => [.. b[..i], (byte)v, .. b[i..]],             // insert a byte
                })))).ToArbitrary(),
            AcceptedBytesAreConsistent);

    /// <summary>Anything accepted from text prints canonically and survives a binary round trip.</summary>
    private static bool AcceptedTextIsConsistent(string? text)
    {
        if (!Multiaddr.TryParse(text, out var addr, out var error))
        {
            return addr.Equals(Multiaddr.Empty) && error.Length > 0;
        }
        var printed = addr.ToString();
        return Multiaddr.TryParse(printed, out var again, out _) && again.Equals(addr) && again.ToString() == printed
               && Multiaddr.FromBytes(addr.ToBytes()).Equals(addr);
    }

    [FsCheck.NUnit.Property(MaxTest = 2000)]
    public bool TryParse_RandomStrings_NeverThrows(string? text) => AcceptedTextIsConsistent(text);

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public Property TryParse_RandomStringsWithSlashes_NeverThrows() =>
        Prop.ForAll(
            Gen.Elements("/", "/", "ip4", "ip6", "tcp", "udp", "dns", "p2p", "memory", "quic-v1", "p2p-circuit", "1", "1.2.3.4",
                    "::", ":", ".", "65535", "-", "%", "Qm", QmPeer, "", "é", "\0")
                .ListOf().Select(string.Concat).ToArbitrary(),
            AcceptedTextIsConsistent);

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public Property TryParse_MutatedValidText_NeverThrows() =>
        Prop.ForAll(
            AddressText.SelectMany(t => Gen.Choose(0, t.Length - 1).SelectMany(i =>
                Gen.Elements('/', '.', ':', '0', '9', 'a', 'z', '%', ' ', 'é', '\0').SelectMany(c => Gen.Choose(0, 2).Select(kind => kind switch
                {
                    0 => t[..i],
                    1 => t[..i] + c + t[(i + 1)..],
                    _ => t[..i] + c + t[i..],
                })))).ToArbitrary(),
            AcceptedTextIsConsistent);

    /// <summary>
    /// A decoded address keeps one copy of its bytes, which its components' values are slices of and which is its binary
    /// form: ~220 bytes held for /ip4/…/tcp/…/p2p/… (before: an array per value and a second, encoded copy, ~340).
    /// </summary>
    [Test]
    public void DecodedAddress_Held_KeepsOneCopyOfItsBytes()
    {
        var encoded = Multiaddr.Parse($"/ip4/10.1.2.3/tcp/4001/p2p/{PrivateKey.FromSeed(new byte[32]).PeerId}").ToBytes();
        const int count = 20_000;
        var held = new Multiaddr[count];
        var before = GC.GetTotalMemory(forceFullCollection: true);
        for (var i = 0; i < count; i++)
        {
            held[i] = Multiaddr.FromBytes(encoded);
            _ = held[i].Bytes; // what equality, hashing and the peer store use
        }
        var after = GC.GetTotalMemory(forceFullCollection: true);
        var perAddress = (after - before) / (double)count;
        GC.KeepAlive(held);
        TestContext.Out.WriteLine($"{perAddress:F1} bytes per held address");
        Assert.That(perAddress, Is.LessThan(280), $"{perAddress:F1} bytes per held address");
    }

    [Test]
    public void DecodedAddress_IsACopy_WithTheSameComponentsAndBytes()
    {
        var text = $"/ip4/10.1.2.3/tcp/4001/p2p/{PrivateKey.FromSeed(new byte[32]).PeerId}";
        var encoded = Multiaddr.Parse(text).ToBytes();
        var addr = Multiaddr.FromBytes(encoded);
        Array.Fill(encoded, (byte)0xff); // the caller's buffer, reused
        var again = Multiaddr.Parse(text);
        Assert.Multiple(() =>
        {
            Assert.That(addr.ToString(), Is.EqualTo(text));
            Assert.That(addr, Is.EqualTo(again));
            Assert.That(addr.Bytes.ToArray(), Is.EqualTo(again.ToBytes()));
            Assert.That(addr.Components.Select(c => c.Value.ToArray()), Is.EqualTo(again.Components.Select(c => c.Value.ToArray())));
            Assert.That(addr.WithoutPeer().ToString(), Is.EqualTo("/ip4/10.1.2.3/tcp/4001"));
            Assert.That(addr.WithoutPeer().ToBytes(), Is.EqualTo(again.WithoutPeer().ToBytes()));
            Assert.That(addr.PeerId, Is.EqualTo(again.PeerId));
        });
    }
}
