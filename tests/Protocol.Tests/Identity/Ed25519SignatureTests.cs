using FsCheck;
using FsCheck.Fluent;
using Potluck.Protocol.Identity;
using BcEd25519 = Org.BouncyCastle.Math.EC.Rfc8032.Ed25519;

namespace Potluck.Protocol.Tests.Identity;

/// <summary>
/// Ed25519 signing and verification (NSec, libsodium 1.0.22) on the RFC 8032 vectors, on malformed input, and against
/// BouncyCastle's RFC 8032 code as an independent reference for the signature bytes (used by the tests only: Ed25519 is
/// deterministic, so both must write the same bytes). Where verifiers may differ, <see cref="Ed25519StrictnessTests"/>.
/// </summary>
public class Ed25519SignatureTests
{
    // RFC 8032 §7.1, tests 1, 2, 3 and SHA(abc): seed, public key, message, signature.
    private static readonly string[][] Rfc8032 =
    [
        ["9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
         "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
         "",
         "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"],
        ["4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
         "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
         "72",
         "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"],
        ["c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
         "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
         "af82",
         "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"],
        ["833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
         "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
         "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
         "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"],
    ];

    private static IEnumerable<TestCaseData> Vectors() => Rfc8032.Select((v, i) => new TestCaseData(v[0], v[1], v[2], v[3]).SetName($"Rfc8032Vector({i})"));

    [TestCaseSource(nameof(Vectors))]
    public void Rfc8032Vector_SignsAndVerifiesExactly(string seed, string publicKey, string message, string signature)
    {
        var key = PrivateKey.FromSeed(Convert.FromHexString(seed));
        var m = Convert.FromHexString(message);
        var expected = Convert.FromHexString(signature);
        Assert.That(Convert.ToHexStringLower(key.PublicKey.Data), Is.EqualTo(publicKey));
        Assert.That(key.Sign(m), Is.EqualTo(expected));
        Assert.That(key.PublicKey.Verify(m, expected), Is.True);
        Assert.That(PublicKey.TryCreate(KeyType.Ed25519, Convert.FromHexString(publicKey), out var decoded), Is.True);
        Assert.That(decoded.Verify(m, expected), Is.True, "the key decoded from its bytes");
    }

    [TestCaseSource(nameof(Vectors))]
    public void Rfc8032Vector_AnyFlippedBit_IsRejected(string seed, string publicKey, string message, string signature)
    {
        _ = seed;
        Assert.That(PublicKey.TryCreate(KeyType.Ed25519, Convert.FromHexString(publicKey), out var key), Is.True);
        var m = Convert.FromHexString(message);
        var good = Convert.FromHexString(signature);
        for (var bit = 0; bit < good.Length * 8; bit++)
        {
            var bad = (byte[])good.Clone();
            bad[bit / 8] ^= (byte)(1 << (bit % 8));
            Assert.That(key.Verify(m, bad), Is.False, $"bit {bit}");
        }
    }

    [Test]
    public void Verify_MalformedSignatures_AreRejectedWithoutThrowing()
    {
        var key = PrivateKey.FromSeed(Convert.FromHexString(Rfc8032[1][0]));
        var m = new byte[] { 0x72 };
        var good = key.Sign(m);
        var cases = new Dictionary<string, byte[]>
        {
            ["empty"] = [],
            ["63 bytes"] = good[..63],
            ["65 bytes"] = [.. good, 0],
            ["128 bytes"] = [.. good, .. good],
            ["too long to look at"] = new byte[PublicKey.MaxSignatureLength + 1],
            ["all zeros"] = new byte[64],
            ["all ones"] = Enumerable.Repeat((byte)0xff, 64).ToArray(),
            ["R and S swapped"] = [.. good[32..], .. good[..32]],
        };
        foreach (var (why, signature) in cases)
        {
            Assert.That(key.PublicKey.Verify(m, signature), Is.False, why);
        }
    }

    [Test]
    public void Verify_SignatureFromAnotherKeyOrForAnotherMessage_IsRejected()
    {
        var a = PrivateKey.FromRandom(new Random(1));
        var b = PrivateKey.FromRandom(new Random(2));
        var signature = a.Sign("hello"u8);
        Assert.That(b.PublicKey.Verify("hello"u8, signature), Is.False, "other key");
        Assert.That(a.PublicKey.Verify("hellO"u8, signature), Is.False, "other message");
        Assert.That(a.PublicKey.Verify("hello"u8, signature), Is.True, "the control");
    }

    [Test]
    public void TryCreate_WrongLengths_AreRejected()
    {
        foreach (var data in new[] { new byte[0], new byte[31], new byte[33], new byte[64] })
        {
            Assert.That(PublicKey.TryCreate(KeyType.Ed25519, data, out _), Is.False, $"{data.Length} bytes");
        }
        Assert.Throws<ArgumentException>(() => PublicKey.FromEd25519(new byte[31]));
    }

    [FsCheck.NUnit.Property(MaxTest = 200)]
    public Property RandomKeysAndMessages_SignLikeTheReferenceAndVerify() =>
        Prop.ForAll(Gen.Choose(int.MinValue, int.MaxValue).ToArbitrary(), ArbMap.Default.ArbFor<byte[]>(), (seed, message) =>
        {
            var random = new Random(seed);
            var secret = new byte[32];
            random.NextBytes(secret);
            var key = PrivateKey.FromSeed(secret);
            var referencePublic = new byte[32];
            BcEd25519.GeneratePublicKey(secret, 0, referencePublic, 0);
            var reference = new byte[64];
            BcEd25519.Sign(secret, 0, message, 0, message.Length, reference, 0);
            byte[] tampered = [0];
            if (message.Length > 0)
            {
                tampered = (byte[])message.Clone();
                tampered[(seed & int.MaxValue) % tampered.Length] ^= 0x20;
            }
            return key.PublicKey.Data.AsSpan().SequenceEqual(referencePublic)
                   && key.Sign(message).AsSpan().SequenceEqual(reference)
                   && key.PublicKey.Verify(message, reference)
                   && !key.PublicKey.Verify(tampered, reference);
        });

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public Property RandomSignatureBytes_NeverVerifyAndNeverThrow() =>
        Prop.ForAll(ArbMap.Default.ArbFor<byte[]>(), ArbMap.Default.ArbFor<byte[]>(), (message, signature) =>
            !PrivateKey.FromRandom(new Random(message.Length)).PublicKey.Verify(message, signature));

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public Property Random64ByteSignaturesAndCorruptedRealOnes_AreRefused() =>
        Prop.ForAll(Gen.Choose(int.MinValue, int.MaxValue).ToArbitrary(), ArbMap.Default.ArbFor<byte[]>(), (seed, message) =>
        {
            var random = new Random(seed);
            var key = PrivateKey.FromRandom(random);
            var noise = new byte[64];
            random.NextBytes(noise);
            var corrupted = key.Sign(message);
            corrupted[random.Next(64)] ^= (byte)(1 << random.Next(8));
            return !key.PublicKey.Verify(message, noise) && !key.PublicKey.Verify(message, corrupted);
        });

    [Test]
    public void Sign_ConcurrentlyOnOneKey_GivesTheSameSignatures()
    {
        var key = PrivateKey.FromRandom(new Random(42));
        var messages = Enumerable.Range(0, 64).Select(i => BitConverter.GetBytes(i)).ToArray();
        var expected = messages.Select(m => key.Sign(m)).ToArray();
        var results = new byte[messages.Length][];
        Parallel.For(0, messages.Length, i => results[i] = key.Sign(messages[i]));
        Assert.That(results, Is.EqualTo(expected));
        Assert.That(messages.Select((m, i) => key.PublicKey.Verify(m, results[i])), Is.All.True);
    }
}
