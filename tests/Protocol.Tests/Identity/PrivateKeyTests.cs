using FsCheck;
using FsCheck.Fluent;
using Potluck.Protocol.Identity;
using static Potluck.Protocol.Tests.Identity.KeyVectors;

namespace Potluck.Protocol.Tests.Identity;

public class PrivateKeyTests
{
    private string _dir = "";

    [SetUp]
    public void CreateDirectory()
    {
        _dir = Path.Combine(Path.GetTempPath(), "potluck-key-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void DeleteDirectory() => Directory.Delete(_dir, recursive: true);

    [Test]
    public void FromProtobuf_SpecEd25519Vector_DerivesSpecPublicKeyAndReEncodesExactly()
    {
        var key = PrivateKey.FromProtobuf(Convert.FromHexString(SpecEd25519Private));
        Assert.That(Convert.ToHexStringLower(key.PublicKey.ToProtobuf()), Is.EqualTo(SpecEd25519Public));
        Assert.That(Convert.ToHexStringLower(key.ToProtobuf()), Is.EqualTo(SpecEd25519Private));
        Assert.That(key.PeerId.ToString(), Is.EqualTo(SpecEd25519PeerId));
    }

    [Test]
    public void FromProtobuf_JsEd25519Fixture_DerivesItsPeerId()
    {
        var key = PrivateKey.FromProtobuf(Convert.FromBase64String(JsEd25519PrivateBase64));
        Assert.That(key.PeerId.ToString(), Is.EqualTo(JsEd25519PeerId));
        Assert.That(key.PublicKey.ToProtobuf(), Is.EqualTo(Convert.FromBase64String(JsEd25519PublicBase64)));
    }

    [FsCheck.NUnit.Property(MaxTest = 200)]
    public Property ToProtobuf_RoundTripsAnyKey() =>
        Prop.ForAll(Gen.Choose(int.MinValue, int.MaxValue).ToArbitrary(), seed =>
        {
            var key = PrivateKey.FromRandom(new Random(seed));
            var encoded = key.ToProtobuf();
            var back = PrivateKey.FromProtobuf(encoded);
            return encoded.Length == 68 && back.PeerId == key.PeerId && back.ToProtobuf().AsSpan().SequenceEqual(encoded)
                   && back.PublicKey.Verify("m"u8, key.Sign("m"u8));
        });

    [Test]
    public void FromProtobuf_LegacyAndSeedOnlyForms_AreAccepted()
    {
        var data = Convert.FromHexString(SpecEd25519Private)[4..]; // seed ‖ public
        var expected = PrivateKey.FromProtobuf(Convert.FromHexString(SpecEd25519Private)).PeerId;
        Assert.That(PrivateKey.TryFromProtobuf(KeyProtobuf.Encode(KeyType.Ed25519, [.. data, .. data[32..]]), out var legacy), Is.True);
        Assert.That(legacy.PeerId, Is.EqualTo(expected));
        Assert.That(PrivateKey.TryFromProtobuf(KeyProtobuf.Encode(KeyType.Ed25519, data[..32]), out var seedOnly), Is.True);
        Assert.That(seedOnly.PeerId, Is.EqualTo(expected));
    }

    [Test]
    public void FromProtobuf_MismatchedOrMalformed_IsRejected()
    {
        var data = Convert.FromHexString(SpecEd25519Private)[4..];
        var wrongPublic = data.ToArray();
        wrongPublic[40] ^= 1;
        var wrongThird = (byte[])[.. data, .. data[32..]];
        wrongThird[70] ^= 1;
        foreach (var (encoded, why) in new (byte[], string)[]
                 {
                     (KeyProtobuf.Encode(KeyType.Ed25519, wrongPublic), "public half does not match the seed"),
                     (KeyProtobuf.Encode(KeyType.Ed25519, wrongThird), "legacy copy of the public key differs"),
                     (KeyProtobuf.Encode(KeyType.Ed25519, data[..63]), "63 bytes"),
                     (KeyProtobuf.Encode(KeyType.Secp256k1, data[..31]), "a 31-byte secp256k1 scalar"),
                     (KeyProtobuf.Encode(KeyType.Secp256k1, new byte[32]), "the secp256k1 scalar 0"),
                     (KeyProtobuf.Encode(KeyType.Secp256k1, Convert.FromHexString("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141")), "the secp256k1 scalar n"),
                     (KeyProtobuf.Encode(KeyType.Rsa, data), "an RSA key that is not PKCS#1 DER"),
                     (KeyProtobuf.Encode(KeyType.Rsa, GoRsaData()[..^1]), "a truncated RSA key"),
                     (Convert.FromHexString(SpecEcdsaPrivate), "spec ECDSA key"),
                     ([], "empty"),
                     (new byte[PrivateKey.MaxEncodedLength + 1], "too long"),
                 })
        {
            Assert.That(PrivateKey.TryFromProtobuf(encoded, out var key), Is.False, why);
            Assert.That(key, Is.Null, why);
            Assert.Throws<FormatException>(() => PrivateKey.FromProtobuf(encoded), why);
        }
    }

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public bool TryFromProtobuf_RandomBytes_NeverThrows(byte[] bytes) =>
        !PrivateKey.TryFromProtobuf(bytes, out var key) || key.PublicKey.Verify("m"u8, key.Sign("m"u8));

    private static byte[] GoRsaData() =>
        KeyProtobuf.TryDecode(Convert.FromBase64String(GoRsaPrivateBase64), out _, out var data) ? data.ToArray() : throw new InvalidOperationException();

    [Test]
    public void FromProtobuf_SpecSecp256k1Vector_DerivesSpecPublicKeyAndReEncodesExactly()
    {
        var key = PrivateKey.FromProtobuf(Convert.FromHexString(SpecSecp256k1Private));
        Assert.That(key.Type, Is.EqualTo(KeyType.Secp256k1));
        Assert.That(Convert.ToHexStringLower(key.PublicKey.ToProtobuf()), Is.EqualTo(SpecSecp256k1Public));
        Assert.That(key.ToProtobuf(), Is.EqualTo(Convert.FromHexString(SpecSecp256k1Private)));
    }

    [Test]
    public void FromProtobuf_JvmSecp256k1Private_DerivesJvmPeerId() =>
        Assert.That(PrivateKey.FromProtobuf(Convert.FromHexString(JvmSecp256k1Private)).PeerId.ToString(), Is.EqualTo(JvmSecp256k1PrivatePeerId));

    [Test]
    public void FromProtobuf_GoRsaPrivate_DerivesGoPeerIdAndReEncodesExactly()
    {
        var encoded = Convert.FromBase64String(GoRsaPrivateBase64);
        var key = PrivateKey.FromProtobuf(encoded);
        Assert.That(key.Type, Is.EqualTo(KeyType.Rsa));
        Assert.That(key.PeerId.ToString(), Is.EqualTo(GoRsaPeerId));
        Assert.That(key.ToProtobuf(), Is.EqualTo(encoded));
    }

    [TestCase(KeyType.Ed25519)]
    [TestCase(KeyType.Rsa)]
    [TestCase(KeyType.Secp256k1)]
    public void Sign_EveryKeyType_VerifiesWithItsPublicKeyOnly(KeyType type)
    {
        var key = PrivateKey.Generate(type);
        var other = PrivateKey.Generate(type);
        var signature = key.Sign("noise-libp2p-static-key:"u8);
        Assert.That(key.PublicKey.Verify("noise-libp2p-static-key:"u8, signature), Is.True);
        Assert.That(key.PublicKey.Verify("noise-libp2p-static-key!"u8, signature), Is.False, "another message");
        Assert.That(other.PublicKey.Verify("noise-libp2p-static-key:"u8, signature), Is.False, "another key");
        var back = PrivateKey.FromProtobuf(key.ToProtobuf());
        Assert.That(back.PeerId, Is.EqualTo(key.PeerId));
        Assert.That(back.PublicKey.Verify("m"u8, key.Sign("m"u8)), Is.True);
    }

    [Test]
    public void Sign_Secp256k1_IsDeterministicDerWithLowS()
    {
        var key = PrivateKey.FromProtobuf(Convert.FromHexString(SpecSecp256k1Private));
        var halfN = new Org.BouncyCastle.Math.BigInteger("7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0", 16);
        for (var i = 0; i < 64; i++)
        {
            var message = BitConverter.GetBytes(i);
            var signature = key.Sign(message);
            Assert.That(key.Sign(message), Is.EqualTo(signature), "RFC 6979 nonces");
            var sequence = (Org.BouncyCastle.Asn1.Asn1Sequence)Org.BouncyCastle.Asn1.Asn1Object.FromByteArray(signature);
            var s = ((Org.BouncyCastle.Asn1.DerInteger)sequence[1]).Value;
            Assert.That(s.CompareTo(halfN), Is.LessThanOrEqualTo(0), "low S");
        }
    }

    [Test]
    public void LoadOrCreate_NewFile_IsOwnerReadWriteOnly_AndReloadsTheSameIdentity()
    {
        var path = Path.Combine(_dir, "nested", "identity.key");
        var created = PrivateKey.LoadOrCreate(path);
        Assert.That(File.Exists(path), Is.True);
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(created.ToProtobuf()));
        if (!OperatingSystem.IsWindows())
        {
            Assert.That(File.GetUnixFileMode(path), Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite));
        }
        var reloaded = PrivateKey.LoadOrCreate(path);
        Assert.That(reloaded.PeerId, Is.EqualTo(created.PeerId));
        Assert.That(reloaded.ToProtobuf(), Is.EqualTo(created.ToProtobuf()));
        Assert.That(Directory.GetFiles(Path.GetDirectoryName(path)!), Is.EqualTo(new[] { path }), "no temporary file left behind");
    }

    [Test]
    public void LoadOrCreate_LeftoverWorldReadableTempFile_DoesNotLeakTheNewKey()
    {
        if (OperatingSystem.IsWindows())
        {
            Assert.Ignore("Unix file modes");
            return;
        }
        var path = Path.Combine(_dir, "identity.key");
        File.WriteAllText(path + ".tmp", "left by a crash");
        File.SetUnixFileMode(path + ".tmp", UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        PrivateKey.LoadOrCreate(path);
        Assert.That(File.GetUnixFileMode(path), Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite));
    }

    [Test]
    public void LoadOrCreate_ExistingKeyFromElsewhere_IsLoadedNotReplaced()
    {
        var path = Path.Combine(_dir, "identity.key");
        File.WriteAllBytes(path, Convert.FromHexString(SpecEd25519Private));
        Assert.That(PrivateKey.LoadOrCreate(path).PeerId.ToString(), Is.EqualTo(SpecEd25519PeerId));
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(Convert.FromHexString(SpecEd25519Private)));
    }

    [TestCase("", TestName = "LoadOrCreate_EmptyFile_IsInvalidData")]
    [TestCase("not a key at all", TestName = "LoadOrCreate_TextFile_IsInvalidData")]
    [TestCase(SpecSecp256k1Private, TestName = "LoadOrCreate_TruncatedSecp256k1Key_IsInvalidData")]
    [TestCase(SpecEd25519Private, TestName = "LoadOrCreate_TruncatedKey_IsInvalidData")]
    public void LoadOrCreate_CorruptFile_ThrowsClearInvalidDataAndKeepsTheFile(string content)
    {
        var path = Path.Combine(_dir, "identity.key");
        // Hex content is a key protobuf with its last byte cut off.
        var bytes = content.Length > 0 && content.All(char.IsAsciiHexDigit)
            ? Convert.FromHexString(content)[..^1]
            : System.Text.Encoding.UTF8.GetBytes(content);
        File.WriteAllBytes(path, bytes);
        var ex = Assert.Throws<InvalidDataException>(() => PrivateKey.LoadOrCreate(path));
        Assert.That(ex!.Message, Does.Contain(path));
        Assert.That(ex.Message, Does.Contain("not a libp2p private key"));
        Assert.That(ex.Message, Does.Contain("move it away"));
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(bytes), "a corrupt key is never overwritten");
    }

    [Test]
    public void LoadOrCreate_HugeFile_IsInvalidDataWithoutReadingIt()
    {
        var path = Path.Combine(_dir, "identity.key");
        using (var fs = File.Create(path))
        {
            fs.SetLength(100_000_000); // sparse
        }
        var ex = Assert.Throws<InvalidDataException>(() => PrivateKey.LoadOrCreate(path));
        Assert.That(ex!.Message, Does.Contain("too long"));
    }

    [Test]
    public void FromSeed_WrongLength_Throws()
    {
        Assert.Throws<ArgumentException>(() => PrivateKey.FromSeed(new byte[31]));
        Assert.Throws<ArgumentException>(() => PrivateKey.FromSeed(new byte[33]));
    }

    [Test]
    public void FromRandom_SameSeed_SameIdentity()
    {
        Assert.That(PrivateKey.FromRandom(new Random(7)).PeerId, Is.EqualTo(PrivateKey.FromRandom(new Random(7)).PeerId));
        Assert.That(PrivateKey.FromRandom(new Random(7)).PeerId, Is.Not.EqualTo(PrivateKey.FromRandom(new Random(8)).PeerId));
        Assert.That(PrivateKey.Generate().PeerId, Is.Not.EqualTo(PrivateKey.Generate().PeerId));
    }
}
