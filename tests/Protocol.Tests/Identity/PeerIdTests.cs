using System.Security.Cryptography;
using FsCheck;
using FsCheck.Fluent;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using static Potluck.Protocol.Tests.Identity.KeyVectors;

namespace Potluck.Protocol.Tests.Identity;

public class PeerIdTests
{
    [Test]
    public void Ed25519PeerId_PrintsAs12D3KooW_AndRoundTripsThroughBothTextForms()
    {
        var key = PrivateKey.FromSeed(new byte[32]);
        var id = key.PeerId;
        Assert.That(id.ToString(), Does.StartWith("12D3KooW"));
        Assert.That(PeerId.Parse(id.ToString()), Is.EqualTo(id));
        Assert.That(id.ToCidString(), Does.StartWith("bafz"));
        Assert.That(PeerId.Parse(id.ToCidString()), Is.EqualTo(id));
        Assert.That(id.TryExtractPublicKey(), Is.EqualTo(key.PublicKey));
        Assert.That(id.Matches(key.PublicKey), Is.True);
        Assert.That(id.Matches(PrivateKey.FromSeed(Enumerable.Repeat((byte)1, 32).ToArray()).PublicKey), Is.False);
    }

    [Test]
    public void Sign_VerifiesWithPublicKey_AndFailsOnTamperedMessage()
    {
        var key = PrivateKey.FromSeed(Enumerable.Range(1, 32).Select(i => (byte)i).ToArray());
        var sig = key.Sign("hello"u8);
        Assert.That(key.PublicKey.Verify("hello"u8, sig), Is.True);
        Assert.That(key.PublicKey.Verify("hellp"u8, sig), Is.False);
    }

    [Test]
    public void Cid_SpecExample_IsTheSamePeerAsItsBase58Form()
    {
        var fromCid = PeerId.Parse(SpecShaPeerIdCid);
        var fromBase58 = PeerId.Parse(SpecShaPeerIdBase58);
        Assert.That(fromCid, Is.EqualTo(fromBase58));
        Assert.That(fromBase58.ToCidString(), Is.EqualTo(SpecShaPeerIdCid));
        Assert.That(fromCid.ToString(), Is.EqualTo(SpecShaPeerIdBase58));
    }

    [Test]
    public void Cid_GoMultiaddrExample_IsTheSamePeerAsItsBase58Form()
    {
        Assert.That(PeerId.Parse(GoMultiaddrPeerBase58).ToCidString(), Is.EqualTo(GoMultiaddrPeerCid));
        Assert.That(PeerId.Parse(GoMultiaddrPeerCid).ToString(), Is.EqualTo(GoMultiaddrPeerBase58));
    }

    [Test]
    public void Cid_Ed25519PeerId_StartsBafzaa_AndDecodesToTheSameKey()
    {
        var id = PeerId.Parse(SpecEd25519PeerIdExample);
        var cid = id.ToCidString();
        Assert.That(cid, Does.StartWith("bafzaa"));
        Assert.That(PeerId.Parse(cid), Is.EqualTo(id));
        Assert.That(id.TryExtractPublicKey()?.Type, Is.EqualTo(KeyType.Ed25519));
    }

    [Test]
    public void Parse_OtherMultibasesOfTheCid_AreAccepted()
    {
        var id = PeerId.Parse(SpecShaPeerIdBase58);
        var cidBytes = Base32.TryDecodeLower(id.ToCidString().AsSpan(1), out var b) ? b : throw new InvalidOperationException();
        Assert.That(PeerId.Parse("B" + id.ToCidString()[1..].ToUpperInvariant()), Is.EqualTo(id));
        Assert.That(PeerId.Parse("z" + Base58.Encode(cidBytes)), Is.EqualTo(id));
    }

    private static string Cid(params byte[] bytes) => "b" + Base32.EncodeLower(bytes);

    [Test]
    public void Parse_CidWithWrongVersionCodecOrTail_IsRejected()
    {
        var mh = PeerId.Parse(SpecShaPeerIdBase58).ToBytes();
        Assert.That(PeerId.TryParse(Cid([0x01, 0x72, .. mh]), out _), Is.True);
        Assert.That(PeerId.TryParse(Cid([0x01, 0x70, .. mh]), out _), Is.False, "dag-pb codec");
        Assert.That(PeerId.TryParse(Cid([0x01, 0x55, .. mh]), out _), Is.False, "raw codec");
        Assert.That(PeerId.TryParse(Cid([0x00, 0x72, .. mh]), out _), Is.False, "version 0");
        Assert.That(PeerId.TryParse(Cid([0x02, 0x72, .. mh]), out _), Is.False, "version 2");
        Assert.That(PeerId.TryParse(Cid([0x01, 0x72, .. mh, 0x00]), out _), Is.False, "trailing byte");
        Assert.That(PeerId.TryParse(Cid([0x01, 0x72, .. mh[..^1]]), out _), Is.False, "short digest");
        Assert.That(PeerId.TryParse(Cid([0x01]), out _), Is.False, "truncated");
        Assert.That(PeerId.TryParse(Cid([0x81, 0x00, 0x72, .. mh]), out _), Is.False, "non-minimal version varint");
    }

    [TestCase("")]
    [TestCase("Qm")]
    [TestCase("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5")]    // one character short
    [TestCase("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5NN")]  // one character long
    [TestCase("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx50")]   // '0' is not base58
    [TestCase("QmaozNR7DZHQK1ZcU9p7QdrshMvXqWK6gpu5rmrkPdT3L")]    // js-peer-id: unknown hash function 0x50
    [TestCase("k51qzi5uqu5dhb6l8spkdx7yxafegfkee5by8h7lmjh2ehc2sgg34z7c15vzqs")] // base36: not read
    [TestCase("mAXIiEiA")]
    [TestCase("bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqx")] // CID one character short
    public void TryParse_InvalidText_IsRejected(string text)
    {
        Assert.That(PeerId.TryParse(text, out var id), Is.False);
        Assert.That(id.IsEmpty, Is.True);
        Assert.Throws<FormatException>(() => PeerId.Parse(text));
    }

    [Test]
    public void TryFromBytes_OnlyValidIdentityAndSha256Multihashes()
    {
        var edKey = PrivateKey.FromSeed(new byte[32]).PublicKey.ToProtobuf();
        var sha = (byte[])[0x12, 0x20, .. SHA256.HashData("x"u8)];
        Assert.That(PeerId.TryFromBytes(sha, out _), Is.True);
        Assert.That(PeerId.TryFromBytes([0x00, (byte)edKey.Length, .. edKey], out _), Is.True);
        Assert.That(PeerId.TryFromBytes([0x00, (byte)(edKey.Length + 1), .. edKey], out _), Is.False, "identity length mismatch");
        Assert.That(PeerId.TryFromBytes([0x00, 3, 1, 2, 3], out _), Is.False, "identity of something that is not a key");
        Assert.That(PeerId.TryFromBytes(sha[..^1], out _), Is.False, "short digest");
        Assert.That(PeerId.TryFromBytes([0x12, 0x1f, .. sha[2..^1]], out _), Is.False, "sha256 declared 31 bytes");
        Assert.That(PeerId.TryFromBytes([0x13, 0x20, .. sha[2..]], out _), Is.False, "sha512 code");
        Assert.That(PeerId.TryFromBytes([], out _), Is.False);
        // An RSA key in an identity multihash (over 42 bytes) is not how peer ids are made.
        var rsa = Convert.FromHexString(JvmRsa2048Public);
        Assert.That(PeerId.TryFromBytes([0x00, 0xAA, 0x02, .. rsa], out _), Is.False);
    }

    [Test]
    public void ToBytes_ReturnsACopy_AndDefaultIsEmpty()
    {
        var id = PeerId.Parse(SpecShaPeerIdBase58);
        id.ToBytes()[5] ^= 1;
        Assert.That(id.ToString(), Is.EqualTo(SpecShaPeerIdBase58));
        PeerId none = default;
        Assert.That(none.IsEmpty, Is.True);
        Assert.That(none.ToString(), Is.Empty);
        Assert.That(none, Is.Not.EqualTo(id));
        Assert.That(none.TryExtractPublicKey(), Is.Null);
        Assert.That(PeerId.Parse(SpecShaPeerIdBase58).TryExtractPublicKey(), Is.Null, "a SHA-256 id carries no key");
    }

    [Test]
    public void Equality_AndOrdering_FollowTheBytes()
    {
        var a = PeerId.Parse(SpecShaPeerIdBase58);
        var b = PeerId.Parse(SpecShaPeerIdCid);
        var c = PeerId.Parse(GoMultiaddrPeerBase58);
        Assert.That(a == b, Is.True);
        Assert.That(a != c, Is.True);
        Assert.That(a.GetHashCode(), Is.EqualTo(b.GetHashCode()));
        Assert.That(Math.Sign(a.CompareTo(c)), Is.EqualTo(Math.Sign(a.Bytes.SequenceCompareTo(c.Bytes))));
        Assert.That(new[] { a, b, c }.ToHashSet(), Has.Count.EqualTo(2));
    }

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public Property AnyEd25519Key_PeerIdRoundTripsThroughBothTextFormsAndBytes() =>
        Prop.ForAll(Gen.Choose(int.MinValue, int.MaxValue).ToArbitrary(), seed =>
        {
            var key = PrivateKey.FromRandom(new Random(seed));
            var id = key.PeerId;
            return PeerId.Parse(id.ToString()) == id && PeerId.Parse(id.ToCidString()) == id
                   && PeerId.TryFromBytes(id.Bytes, out var fromBytes) && fromBytes == id
                   && key.PublicKey.Equals(id.TryExtractPublicKey()) && id.ToString().StartsWith("12D3KooW", StringComparison.Ordinal);
        });

    [FsCheck.NUnit.Property(MaxTest = 2000)]
    public bool TryParse_RandomStrings_NeverThrows(string? text) =>
        !PeerId.TryParse(text, out var id) || PeerId.Parse(id.ToString()) == id;

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public bool TryFromBytes_RandomBytes_NeverThrows(byte[] bytes) =>
        !PeerId.TryFromBytes(bytes, out var id) || id.Bytes.SequenceEqual(bytes);

    private static readonly string[] ValidTexts =
    [
        SpecShaPeerIdBase58, SpecShaPeerIdCid, SpecEd25519PeerIdExample, JvmSecp256k1PeerId, GoMultiaddrPeerCid,
        PeerId.Parse(SpecEd25519PeerIdExample).ToCidString(),
    ];

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public Property TryParse_MutatedValidText_NeverThrows() =>
        Prop.ForAll(
            Gen.Elements(ValidTexts).SelectMany(t => Gen.Choose(0, t.Length - 1).SelectMany(i =>
                Gen.Elements('1', 'Q', 'm', 'b', 'z', 'a', '7', '0', 'B', '/', 'é').SelectMany(c => Gen.Choose(0, 2).Select(kind => kind switch
                {
                    0 => t[..i],
                    1 => t[..i] + c + t[(i + 1)..],
                    _ => t[..i] + c + t[i..],
                })))).ToArbitrary(),
            text => !PeerId.TryParse(text, out var id) || (PeerId.Parse(id.ToString()) == id && PeerId.Parse(id.ToCidString()) == id));
}
