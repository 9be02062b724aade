using System.Security.Cryptography;
using FsCheck;
using FsCheck.Fluent;
using Org.BouncyCastle.Asn1;
using Org.BouncyCastle.Asn1.Pkcs;
using Org.BouncyCastle.Asn1.Sec;
using Org.BouncyCastle.Asn1.X509;
using Org.BouncyCastle.Asn1.X9;
using Org.BouncyCastle.Crypto;
using Org.BouncyCastle.Crypto.Generators;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Math;
using Org.BouncyCastle.Security;
using Org.BouncyCastle.X509;
using Potluck.Protocol.Identity;
using static Potluck.Protocol.Tests.Identity.KeyVectors;

namespace Potluck.Protocol.Tests.Identity;

public class PublicKeyTests
{
    private static readonly byte[] Message = "libp2p signed message"u8.ToArray();
    private static readonly SecureRandom Rng = new(new Org.BouncyCastle.Crypto.Prng.DigestRandomGenerator(new Org.BouncyCastle.Crypto.Digests.Sha256Digest()));

    static PublicKeyTests() => Rng.SetSeed(42); // deterministic key generation

    private static byte[] Hex(string hex) => Convert.FromHexString(hex);

    private static PublicKey Parse(string hex)
    {
        Assert.That(PublicKey.TryFromProtobuf(Hex(hex), out var key), Is.True, "vector did not parse");
        return key;
    }

    private static byte[] Sha256PeerId(byte[] protobuf) => [0x12, 0x20, .. SHA256.HashData(protobuf)];

    // ---- published vectors ----

    [TestCase(SpecEd25519Public, KeyType.Ed25519)]
    [TestCase(SpecSecp256k1Public, KeyType.Secp256k1)]
    [TestCase(SpecEcdsaPublic, KeyType.Ecdsa)]
    [TestCase(SpecRsaPublic, KeyType.Rsa)]
    [TestCase(JvmRsa2048Public, KeyType.Rsa)]
    [TestCase(JvmSecp256k1Public, KeyType.Secp256k1)]
    public void TryFromProtobuf_PublishedVector_ParsesAndReEncodesByteForByte(string hex, KeyType type)
    {
        var key = Parse(hex);
        Assert.That(key.Type, Is.EqualTo(type));
        Assert.That(Convert.ToHexStringLower(key.ToProtobuf()), Is.EqualTo(hex.ToLowerInvariant()));
        Assert.That(PublicKey.FromProtobuf(key.ToProtobuf()), Is.EqualTo(key));
    }

    [Test]
    public void PeerId_SpecEd25519Vector_IsIdentityMultihash12D3KooW()
    {
        var protobuf = Hex(SpecEd25519Public);
        var id = Parse(SpecEd25519Public).ToPeerId();
        Assert.That(id.Bytes.ToArray(), Is.EqualTo((byte[])[0x00, (byte)protobuf.Length, .. protobuf]));
        Assert.That(id.ToString(), Is.EqualTo(SpecEd25519PeerId));
        Assert.That(id.TryExtractPublicKey(), Is.EqualTo(Parse(SpecEd25519Public)));
    }

    [Test]
    public void PeerId_JsEd25519Fixture_MatchesItsPeerId()
    {
        Assert.That(PublicKey.TryFromProtobuf(Convert.FromBase64String(JsEd25519PublicBase64), out var key), Is.True);
        Assert.That(key.ToPeerId().ToString(), Is.EqualTo(JsEd25519PeerId));
    }

    [TestCase(SpecSecp256k1Public)]
    [TestCase(JvmSecp256k1Public)]
    public void PeerId_Secp256k1Vector_IsIdentityMultihash(string hex)
    {
        var protobuf = Hex(hex);
        var id = Parse(hex).ToPeerId();
        Assert.That(protobuf.Length, Is.EqualTo(37));
        Assert.That(id.Bytes.ToArray(), Is.EqualTo((byte[])[0x00, 37, .. protobuf]));
        Assert.That(id.ToString(), Does.StartWith("16Uiu2HA"));
    }

    [Test]
    public void PeerId_JvmSecp256k1Vector_MatchesJvmLibp2p() =>
        Assert.That(Parse(JvmSecp256k1Public).ToPeerId().ToString(), Is.EqualTo(JvmSecp256k1PeerId));

    [TestCase(SpecRsaPublic)]
    [TestCase(SpecEcdsaPublic)]
    public void PeerId_LongKeyVector_IsSha256Multihash(string hex)
    {
        var id = Parse(hex).ToPeerId();
        Assert.That(id.Bytes.ToArray(), Is.EqualTo(Sha256PeerId(Hex(hex))));
        Assert.That(id.ToString(), Does.StartWith("Qm"));
    }

    [Test]
    public void PeerId_RsaVectorsFromJvmAndJs_MatchTheirPeerIds()
    {
        Assert.That(Convert.ToHexStringLower(Parse(JvmRsa2048Public).ToPeerId().Bytes), Is.EqualTo(JvmRsa2048PeerIdHex));
        Assert.That(PublicKey.TryFromProtobuf(Convert.FromBase64String(JsRsaPublicBase64), out var js), Is.True);
        Assert.That(Convert.ToHexStringLower(js.ToPeerId().Bytes), Is.EqualTo(JsRsaPeerIdHex));
        Assert.That(js.ToProtobuf(), Is.EqualTo(Convert.FromBase64String(JsRsaPublicBase64)));
    }

    [Test]
    public void PeerId_GoGeneratedRsaPrivateKey_DerivesGoPeerId()
    {
        Assert.That(KeyProtobuf.TryDecode(Convert.FromBase64String(GoRsaPrivateBase64), out var type, out var pkcs1), Is.True);
        Assert.That(type, Is.EqualTo(KeyType.Rsa));
        var rsa = RsaPrivateKeyStructure.GetInstance(pkcs1.ToArray());
        var publicDer = SubjectPublicKeyInfoFactory.CreateSubjectPublicKeyInfo(new RsaKeyParameters(false, rsa.Modulus, rsa.PublicExponent)).GetDerEncoded();
        Assert.That(PublicKey.TryCreate(KeyType.Rsa, publicDer, out var key), Is.True);
        Assert.That(key.ToPeerId().ToString(), Is.EqualTo(GoRsaPeerId));
    }

    // ---- spec private keys: derive the public key, sign with BouncyCastle, verify with ours ----

    [Test]
    public void SpecSecp256k1PrivateKey_MatchesPublicVector_AndItsSignaturesVerify()
    {
        Assert.That(KeyProtobuf.TryDecode(Hex(SpecSecp256k1Private), out var type, out var raw), Is.True);
        Assert.That(type, Is.EqualTo(KeyType.Secp256k1));
        var domain = Domain("secp256k1");
        var priv = new ECPrivateKeyParameters(new BigInteger(1, raw.ToArray()), domain);
        var point = domain.G.Multiply(priv.D).Normalize().GetEncoded(compressed: true);
        Assert.That(Convert.ToHexStringLower(point), Is.EqualTo(SpecSecp256k1Public[8..]));
        AssertVerifies(Parse(SpecSecp256k1Public), SignEcdsa(priv, Message));
    }

    [Test]
    public void SpecEcdsaPrivateKey_MatchesPublicVector_AndItsSignaturesVerify()
    {
        Assert.That(KeyProtobuf.TryDecode(Hex(SpecEcdsaPrivate), out var type, out var sec1), Is.True);
        Assert.That(type, Is.EqualTo(KeyType.Ecdsa));
        var domain = Domain("P-256");
        var priv = new ECPrivateKeyParameters(ECPrivateKeyStructure.GetInstance(sec1.ToArray()).GetKey(), domain);
        var pub = new ECPublicKeyParameters(domain.G.Multiply(priv.D).Normalize(), domain);
        var pkix = SubjectPublicKeyInfoFactory.CreateSubjectPublicKeyInfo(pub).GetDerEncoded();
        // BouncyCastle writes the named curve, as go does, so the PKIX bytes match the vector exactly.
        Assert.That(Convert.ToHexStringLower(pkix), Is.EqualTo(SpecEcdsaPublic[8..]));
        AssertVerifies(Parse(SpecEcdsaPublic), SignEcdsa(priv, Message));
    }

    // ---- freshly generated remote keys ----

    private static ECDomainParameters Domain(string curve)
    {
        // Named, so BouncyCastle writes the curve's OID into PKIX (as go and js do), not explicit parameters.
        return new ECNamedDomainParameters(ECNamedCurveTable.GetOid(curve), ECNamedCurveTable.GetByName(curve));
    }

    private static byte[] SignEcdsa(ECPrivateKeyParameters key, byte[] message)
    {
        var signer = SignerUtilities.GetSigner("SHA-256withECDSA");
        signer.Init(true, new ParametersWithRandom(key, Rng));
        signer.BlockUpdate(message);
        return signer.GenerateSignature();
    }

    private static byte[] SignRsa(AsymmetricKeyParameter key, byte[] message)
    {
        var signer = SignerUtilities.GetSigner("SHA-256withRSA");
        signer.Init(true, key);
        signer.BlockUpdate(message);
        return signer.GenerateSignature();
    }

    private static AsymmetricCipherKeyPair GenerateEc(string curve)
    {
        var generator = new ECKeyPairGenerator();
        generator.Init(new ECKeyGenerationParameters(Domain(curve), Rng));
        return generator.GenerateKeyPair();
    }

    private static readonly Lazy<AsymmetricCipherKeyPair> Rsa2048 = new(() => GenerateRsa(2048));

    private static AsymmetricCipherKeyPair GenerateRsa(int bits)
    {
        var generator = new RsaKeyPairGenerator();
        generator.Init(new RsaKeyGenerationParameters(BigInteger.ValueOf(65537), Rng, bits, 80));
        return generator.GenerateKeyPair();
    }

    private static void AssertVerifies(PublicKey key, byte[] signature)
    {
        Assert.That(key.Verify(Message, signature), Is.True, "genuine signature");
        Assert.That(key.Verify([.. Message, 0], signature), Is.False, "longer message");
        var tamperedMessage = Message.ToArray();
        tamperedMessage[3] ^= 1;
        Assert.That(key.Verify(tamperedMessage, signature), Is.False, "one bit of the message flipped");
        for (var i = 0; i < signature.Length; i += Math.Max(1, signature.Length / 16))
        {
            var tampered = signature.ToArray();
            tampered[i] ^= 0x10;
            Assert.That(key.Verify(Message, tampered), Is.False, $"signature byte {i} flipped");
        }
        Assert.That(key.Verify(Message, signature[..^1]), Is.False, "truncated signature");
        Assert.That(key.Verify(Message, [.. signature, 0]), Is.False, "signature with a trailing byte");
        Assert.That(key.Verify(Message, []), Is.False, "empty signature");
    }

    [Test]
    public void Verify_Secp256k1CompressedKeyFromBouncyCastle_AcceptsGenuineRejectsTampered()
    {
        var pair = GenerateEc("secp256k1");
        var point = ((ECPublicKeyParameters)pair.Public).Q.GetEncoded(compressed: true);
        Assert.That(point, Has.Length.EqualTo(33));
        Assert.That(PublicKey.TryCreate(KeyType.Secp256k1, point, out var key), Is.True);
        Assert.That(key.Data, Is.EqualTo(point));
        AssertVerifies(key, SignEcdsa((ECPrivateKeyParameters)pair.Private, Message));
    }

    [Test]
    public void Secp256k1_UncompressedPoint_IsHeldCompressedWithTheSamePeerId()
    {
        var pair = GenerateEc("secp256k1");
        var q = ((ECPublicKeyParameters)pair.Public).Q;
        Assert.That(PublicKey.TryCreate(KeyType.Secp256k1, q.GetEncoded(compressed: false), out var fromUncompressed), Is.True);
        Assert.That(PublicKey.TryCreate(KeyType.Secp256k1, q.GetEncoded(compressed: true), out var fromCompressed), Is.True);
        Assert.That(fromUncompressed, Is.EqualTo(fromCompressed));
        Assert.That(fromUncompressed.ToPeerId(), Is.EqualTo(fromCompressed.ToPeerId()));
        AssertVerifies(fromUncompressed, SignEcdsa((ECPrivateKeyParameters)pair.Private, Message));
    }

    [TestCase("P-256")]
    [TestCase("P-384")]
    [TestCase("P-521")]
    public void Verify_EcdsaPkixKeyFromBouncyCastle_AcceptsGenuineRejectsTampered(string curve)
    {
        var pair = GenerateEc(curve);
        var pkix = SubjectPublicKeyInfoFactory.CreateSubjectPublicKeyInfo(pair.Public).GetDerEncoded();
        Assert.That(PublicKey.TryCreate(KeyType.Ecdsa, pkix, out var key), Is.True);
        Assert.That(key.Data, Is.EqualTo(pkix));
        Assert.That(key.ToPeerId().Bytes.ToArray(), Is.EqualTo(Sha256PeerId(key.ToProtobuf())));
        AssertVerifies(key, SignEcdsa((ECPrivateKeyParameters)pair.Private, Message));
    }

    [Test]
    public void Verify_EcdsaP256FromDotNetCrypto_AcceptsGenuineRejectsTampered()
    {
        using var ecdsa = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        Assert.That(PublicKey.TryCreate(KeyType.Ecdsa, ecdsa.ExportSubjectPublicKeyInfo(), out var key), Is.True);
        AssertVerifies(key, ecdsa.SignData(Message, HashAlgorithmName.SHA256, DSASignatureFormat.Rfc3279DerSequence));
        // A raw r||s (IEEE P1363) signature is not the DER the spec prescribes.
        Assert.That(key.Verify(Message, ecdsa.SignData(Message, HashAlgorithmName.SHA256)), Is.False);
    }

    [Test]
    public void Verify_Rsa2048PkixKeyFromBouncyCastle_AcceptsGenuineRejectsTampered()
    {
        var pkix = SubjectPublicKeyInfoFactory.CreateSubjectPublicKeyInfo(Rsa2048.Value.Public).GetDerEncoded();
        Assert.That(PublicKey.TryCreate(KeyType.Rsa, pkix, out var key), Is.True);
        Assert.That(key.Data, Is.EqualTo(pkix));
        Assert.That(key.ToPeerId().ToString(), Does.StartWith("Qm"));
        AssertVerifies(key, SignRsa(Rsa2048.Value.Private, Message));
        // PSS is not what the spec prescribes.
        var pss = SignerUtilities.GetSigner("SHA-256withRSAandMGF1");
        pss.Init(true, new ParametersWithRandom(Rsa2048.Value.Private, Rng));
        pss.BlockUpdate(Message);
        Assert.That(key.Verify(Message, pss.GenerateSignature()), Is.False);
    }

    [Test]
    public void Verify_RsaFromDotNetCrypto_AcceptsGenuineRejectsTampered()
    {
        using var rsa = RSA.Create(2048);
        Assert.That(PublicKey.TryCreate(KeyType.Rsa, rsa.ExportSubjectPublicKeyInfo(), out var key), Is.True);
        AssertVerifies(key, rsa.SignData(Message, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1));
        Assert.That(key.Verify(Message, rsa.SignData(Message, HashAlgorithmName.SHA1, RSASignaturePadding.Pkcs1)), Is.False);
    }

    [Test]
    public void Verify_SignatureFromAnotherKeyOrType_IsRejected()
    {
        var a = GenerateEc("P-256");
        var b = GenerateEc("P-256");
        Assert.That(PublicKey.TryCreate(KeyType.Ecdsa, SubjectPublicKeyInfoFactory.CreateSubjectPublicKeyInfo(b.Public).GetDerEncoded(), out var keyB), Is.True);
        Assert.That(keyB.Verify(Message, SignEcdsa((ECPrivateKeyParameters)a.Private, Message)), Is.False);
        Assert.That(keyB.Verify(Message, SignRsa(Rsa2048.Value.Private, Message)), Is.False);
        Assert.That(keyB.Verify(Message, new byte[PublicKey.MaxSignatureLength + 1]), Is.False);
    }

    // ---- RSA size limits ----

    /// <summary>An odd modulus of exactly <paramref name="bits"/> bits without small factors (BouncyCastle refuses those).</summary>
    private static byte[] SyntheticRsaPkix(int bits)
    {
        var smallPrimes = Enumerable.Range(3, 1000).Where(n => Enumerable.Range(2, (int)Math.Sqrt(n) - 1).All(d => n % d != 0))
            .Aggregate(BigInteger.One, (acc, p) => acc.Multiply(BigInteger.ValueOf(p)));
        var modulus = new BigInteger(bits, Rng).SetBit(bits - 1).SetBit(0);
        while (!modulus.Gcd(smallPrimes).Equals(BigInteger.One))
        {
            modulus = modulus.Add(BigInteger.Two);
        }
        Assert.That(modulus.BitLength, Is.EqualTo(bits));
        var algorithm = new AlgorithmIdentifier(PkcsObjectIdentifiers.RsaEncryption, DerNull.Instance);
        return new SubjectPublicKeyInfo(algorithm, new RsaPublicKeyStructure(modulus, BigInteger.ValueOf(65537))).GetDerEncoded();
    }

    [TestCase(2047, false)]
    [TestCase(2048, true)]
    [TestCase(8192, true)]
    [TestCase(8193, false)]
    public void TryCreate_RsaModulusSize_MustBeWithin2048To8192Bits(int bits, bool accepted)
    {
        var pkix = SyntheticRsaPkix(bits);
        Assert.That(PublicKey.TryCreate(KeyType.Rsa, pkix, out _), Is.EqualTo(accepted));
        Assert.That(PublicKey.TryFromProtobuf(KeyProtobuf.Encode(KeyType.Rsa, pkix), out _), Is.EqualTo(accepted));
    }

    [TestCase(1, TestName = "TryCreate_RsaExponentOne_IsRejected")]
    [TestCase(65536, TestName = "TryCreate_RsaEvenExponent_IsRejected")]
    public void TryCreate_RsaBadExponent_IsRejected(long exponent)
    {
        var modulus = ((RsaKeyParameters)Rsa2048.Value.Public).Modulus;
        var algorithm = new AlgorithmIdentifier(PkcsObjectIdentifiers.RsaEncryption, DerNull.Instance);
        var pkix = new SubjectPublicKeyInfo(algorithm, new RsaPublicKeyStructure(modulus, BigInteger.ValueOf(exponent))).GetDerEncoded();
        Assert.That(PublicKey.TryCreate(KeyType.Rsa, pkix, out _), Is.False);
    }

    [Test]
    public void TryCreate_RsaWithoutNullAlgorithmParameters_IsHeldCanonically()
    {
        var rsa = (RsaKeyParameters)Rsa2048.Value.Public;
        var canonical = SubjectPublicKeyInfoFactory.CreateSubjectPublicKeyInfo(rsa).GetDerEncoded();
        var bare = new SubjectPublicKeyInfo(new AlgorithmIdentifier(PkcsObjectIdentifiers.RsaEncryption),
            new RsaPublicKeyStructure(rsa.Modulus, rsa.Exponent)).GetDerEncoded();
        Assert.That(bare, Is.Not.EqualTo(canonical));
        Assert.That(PublicKey.TryCreate(KeyType.Rsa, bare, out var key), Is.True);
        Assert.That(key.Data, Is.EqualTo(canonical));
    }

    [Test]
    public void TryCreate_RealRsa1024Key_IsRejected()
    {
        var pkix = SubjectPublicKeyInfoFactory.CreateSubjectPublicKeyInfo(GenerateRsa(1024).Public).GetDerEncoded();
        Assert.That(PublicKey.TryCreate(KeyType.Rsa, pkix, out _), Is.False);
    }

    // ---- Ed25519 against RFC 8032 section 7.1 ----

    [TestCase("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
              "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
              "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")]
    [TestCase("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
              "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
              "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00")]
    [TestCase("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
              "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
              "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a")]
    public void Ed25519_Rfc8032Vectors_SignAndVerifyExactly(string secret, string publicKey, string message, string signature)
    {
        var priv = PrivateKey.FromSeed(Hex(secret));
        Assert.That(Convert.ToHexStringLower(priv.PublicKey.Data), Is.EqualTo(publicKey));
        Assert.That(Convert.ToHexStringLower(priv.Sign(Hex(message))), Is.EqualTo(signature));
        var key = PublicKey.FromEd25519(Hex(publicKey));
        Assert.That(key.Verify(Hex(message), Hex(signature)), Is.True);
        Assert.That(key.Verify([.. Hex(message), 0], Hex(signature)), Is.False);
        var tampered = Hex(signature);
        tampered[40] ^= 1;
        Assert.That(key.Verify(Hex(message), tampered), Is.False);
        Assert.That(key.Verify(Hex(message), Hex(signature)[..63]), Is.False);
    }

    // ---- malformed keys ----

    [TestCase("0801", TestName = "Decode_NoDataField_IsRejected")]
    [TestCase("080412020000", TestName = "Decode_UnknownKeyType_IsRejected")]
    [TestCase("1220" + "1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e" + "0801", TestName = "Decode_FieldsOutOfOrder_AreRejected")]
    [TestCase("08811220" + "1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e", TestName = "Decode_NonMinimalTypeVarint_IsRejected")]
    [TestCase("08011221" + "1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e", TestName = "Decode_DataShorterThanLength_IsRejected")]
    [TestCase("0801121f" + "1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e", TestName = "Decode_TrailingBytes_AreRejected")]
    [TestCase("080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e1800", TestName = "Decode_ExtraField_IsRejected")]
    [TestCase("0801121f" + "1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce2", TestName = "Decode_Ed25519Of31Bytes_IsRejected")]
    [TestCase("0802122102" + "0000000000000000000000000000000000000000000000000000000000000000", TestName = "Decode_Secp256k1XNotOnCurve_IsRejected")]
    [TestCase("08021201" + "00", TestName = "Decode_Secp256k1Infinity_IsRejected")]
    [TestCase("08021220" + "7777e994e452c21604f91de093ce415f5432f701dd8cd1a7a6fea0e630bfca99", TestName = "Decode_Secp256k1WithoutPrefix_IsRejected")]
    [TestCase("08021221" + "047777e994e452c21604f91de093ce415f5432f701dd8cd1a7a6fea0e630bfca99", TestName = "Decode_Secp256k1UncompressedPrefixOn33Bytes_IsRejected")]
    [TestCase("0803125b3059301306072a8648ce3d020106082a8648ce3d03010703420004de3d300fa36ae0e8f5d530899d83abab44abf3161f162a4bc901d8e6ecda020e8b6d5f8da30525e71d6851510c098e5c47c646a597fb4dcec034e9f77c409e63", TestName = "Decode_EcdsaPointOffCurve_IsRejected")]
    [TestCase("000000", TestName = "Decode_Garbage_IsRejected")]
    [TestCase("", TestName = "Decode_Empty_IsRejected")]
    public void TryFromProtobuf_Malformed(string hex)
    {
        Assert.That(PublicKey.TryFromProtobuf(Hex(hex), out var key), Is.False);
        Assert.That(key, Is.Null);
        Assert.Throws<FormatException>(() => PublicKey.FromProtobuf(Hex(hex)));
    }

    [Test]
    public void TryCreate_Secp256k1HybridPoint_IsRejected()
    {
        var q = ((ECPublicKeyParameters)GenerateEc("secp256k1").Public).Q;
        var hybrid = q.GetEncoded(compressed: false);
        hybrid[0] = (byte)(q.AffineYCoord.TestBitZero() ? 0x07 : 0x06);
        Assert.That(PublicKey.TryCreate(KeyType.Secp256k1, hybrid, out _), Is.False);
    }

    [Test]
    public void TryCreate_EcdsaOnCurvesLibp2pDoesNotUse_IsRejected()
    {
        foreach (var curve in new[] { "secp256k1", "P-224", "brainpoolP256r1" })
        {
            var pkix = SubjectPublicKeyInfoFactory.CreateSubjectPublicKeyInfo(GenerateEc(curve).Public).GetDerEncoded();
            Assert.That(PublicKey.TryCreate(KeyType.Ecdsa, pkix, out _), Is.False, curve);
        }
    }

    [Test]
    public void TryCreate_EcdsaWithExplicitCurveParameters_IsRejected()
    {
        var x9 = ECNamedCurveTable.GetByName("P-256");
        var q = ((ECPublicKeyParameters)GenerateEc("P-256").Public).Q;
        var algorithm = new AlgorithmIdentifier(X9ObjectIdentifiers.IdECPublicKey, new X962Parameters(x9));
        var pkix = new SubjectPublicKeyInfo(algorithm, q.GetEncoded(false)).GetDerEncoded();
        Assert.That(PublicKey.TryCreate(KeyType.Ecdsa, pkix, out _), Is.False);
    }

    [Test]
    public void TryCreate_KeyOfTheOtherFamily_IsRejected()
    {
        var rsaPkix = SubjectPublicKeyInfoFactory.CreateSubjectPublicKeyInfo(Rsa2048.Value.Public).GetDerEncoded();
        var ecPkix = SubjectPublicKeyInfoFactory.CreateSubjectPublicKeyInfo(GenerateEc("P-256").Public).GetDerEncoded();
        Assert.That(PublicKey.TryCreate(KeyType.Ecdsa, rsaPkix, out _), Is.False);
        Assert.That(PublicKey.TryCreate(KeyType.Rsa, ecPkix, out _), Is.False);
        Assert.That(PublicKey.TryCreate(KeyType.Secp256k1, ecPkix, out _), Is.False);
        Assert.That(PublicKey.TryCreate(KeyType.Ed25519, ecPkix, out _), Is.False);
        // A PKCS#1 RSAPublicKey (not wrapped in PKIX) is not the spec's encoding.
        var pkcs1 = new RsaPublicKeyStructure(((RsaKeyParameters)Rsa2048.Value.Public).Modulus, BigInteger.ValueOf(65537)).GetDerEncoded();
        Assert.That(PublicKey.TryCreate(KeyType.Rsa, pkcs1, out _), Is.False);
        Assert.That(PublicKey.TryCreate((KeyType)7, new byte[32], out _), Is.False);
    }

    [Test]
    public void TryCreate_PkixWithTrailingBytes_IsRejected()
    {
        var pkix = Hex(SpecEcdsaPublic[8..]);
        Assert.That(PublicKey.TryCreate(KeyType.Ecdsa, pkix, out _), Is.True);
        Assert.That(PublicKey.TryCreate(KeyType.Ecdsa, [.. pkix, 0x00], out _), Is.False);
    }

    [Test]
    public void TryCreate_EcdsaInBerLongFormLengths_IsHeldInCanonicalDer()
    {
        // Re-spell the outer SEQUENCE length in long form (0x81 0x59): valid BER, not DER.
        var der = Hex(SpecEcdsaPublic[8..]);
        Assert.That(der[1], Is.EqualTo(0x59));
        byte[] ber = [0x30, 0x81, 0x59, .. der[2..]];
        Assert.That(PublicKey.TryCreate(KeyType.Ecdsa, ber, out var key), Is.True);
        Assert.That(key.Data, Is.EqualTo(der));
        Assert.That(key.ToPeerId(), Is.EqualTo(Parse(SpecEcdsaPublic).ToPeerId()));
    }

    // ---- properties ----

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public bool TryFromProtobuf_RandomBytes_NeverThrows(byte[] bytes) =>
        !PublicKey.TryFromProtobuf(bytes, out var key) || PublicKey.FromProtobuf(key.ToProtobuf()).Equals(key);

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public Property TryCreate_RandomDataOfEveryType_NeverThrows() =>
        Prop.ForAll(
            Gen.Elements(KeyType.Rsa, KeyType.Ed25519, KeyType.Secp256k1, KeyType.Ecdsa).Zip(ArbMap.Default.GeneratorFor<byte[]>()).ToArbitrary(),
            t => !PublicKey.TryCreate(t.Item1, t.Item2, out var key) || key.Type == t.Item1);

    private static readonly string[] Vectors = [SpecEd25519Public, SpecSecp256k1Public, SpecEcdsaPublic, SpecRsaPublic, JvmRsa2048Public];

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public Property TryFromProtobuf_MutatedVectors_NeverThrowAndStayCanonical() =>
        Prop.ForAll(
            Gen.Elements(Vectors).Select(Hex).SelectMany(v => Gen.Choose(0, v.Length - 1).SelectMany(i =>
                Gen.Choose(0, 255).SelectMany(b => Gen.Choose(0, 2).Select(kind => kind switch
                {
                    0 => v[..i],
                    1 => (byte[])[.. v[..i], (byte)b, .. v[(i + 1)..]],
                    _ => (byte[])[.. v[..i], (byte)b, .. v[i..]],
                })))).ToArbitrary(),
            bytes =>
            {
                if (!PublicKey.TryFromProtobuf(bytes, out var key))
                {
                    return true;
                }
                var again = PublicKey.FromProtobuf(key.ToProtobuf());
                return again.Equals(key) && again.ToProtobuf().AsSpan().SequenceEqual(key.ToProtobuf());
            });

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public Property Verify_RandomSignatures_NeverThrowAndNeverVerify() =>
        Prop.ForAll(
            Gen.Elements(Vectors).Zip(ArbMap.Default.GeneratorFor<byte[]>()).ToArbitrary(),
            t => !Parse(t.Item1).Verify(Message, t.Item2));

    /// <summary>
    /// A decoded Ed25519 key held in a peer store costs its object and its 32 bytes, ~96 bytes (~116 measured here): no NSec key until it
    /// verifies something, no inline RSA parameters. Before (one field per kind, NSec's key made at decode) ~230.
    /// </summary>
    [Test]
    public void DecodedEd25519Key_HeldUnused_CostsUnder150Bytes()
    {
        var encoded = PrivateKey.FromSeed(new byte[32]).PublicKey.ToProtobuf();
        const int count = 20_000;
        var keys = new PublicKey[count];
        var before = GC.GetTotalMemory(forceFullCollection: true);
        for (var i = 0; i < count; i++)
        {
            keys[i] = PublicKey.FromProtobuf(encoded);
        }
        var after = GC.GetTotalMemory(forceFullCollection: true);
        var perKey = (after - before) / (double)count;
        GC.KeepAlive(keys);
        TestContext.Out.WriteLine($"{perKey:F1} bytes per held key");
        Assert.That(perKey, Is.LessThan(150), $"{perKey:F1} bytes per held key");
    }

    [Test]
    public void DecodedEd25519Key_VerifiesOnFirstAndLaterUse()
    {
        var signer = PrivateKey.FromSeed(Enumerable.Range(1, 32).Select(i => (byte)i).ToArray());
        var signature = signer.Sign(Message);
        var key = PublicKey.FromProtobuf(signer.PublicKey.ToProtobuf());
        Assert.Multiple(() =>
        {
            Assert.That(key.Verify("another message"u8, signature), Is.False);
            Assert.That(key.Verify(Message, signature), Is.True);
            Assert.That(key.Verify(Message, signature), Is.True);
            Assert.That(PublicKey.FromProtobuf(signer.PublicKey.ToProtobuf()).Verify(Message, signature), Is.True);
        });
    }

    // ---- the peer id, once per key (stop 41: the lease path asks a key for its id several times per lease) ----

    [Test]
    public void ToPeerId_IsEncodedOncePerKey_LaterCallsAllocateNothing()
    {
        var key = PrivateKey.FromSeed(Enumerable.Range(1, 32).Select(i => (byte)i).ToArray()).PublicKey;
        var first = key.ToPeerId();
        var before = GC.GetAllocatedBytesForCurrentThread();
        var same = 0;
        for (var i = 0; i < 1_000; i++)
        {
            same += key.ToPeerId() == first ? 1 : 0;
        }
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        // Each encoding is a protobuf and a multihash array (~130 bytes): 1,000 calls encoding afresh allocate ~130 KB.
        Assert.That(allocated, Is.LessThan(1_000), "bytes allocated by 1,000 calls after the first");
        Assert.That(same, Is.EqualTo(1_000));
        Assert.That(first, Is.EqualTo(PeerId.FromPublicKey(key)), "the kept id is the key's id");
        Assert.That(first.Bytes.ToArray(), Is.EqualTo((byte[])[0x00, 36, .. key.ToProtobuf()]), "identity multihash of the protobuf key");
    }
}
