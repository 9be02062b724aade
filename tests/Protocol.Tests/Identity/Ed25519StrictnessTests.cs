using System.Numerics;
using System.Security.Cryptography;
using Org.BouncyCastle.Math.EC.Rfc8032;
using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Tests.Identity;

/// <summary>
/// Where libsodium's Ed25519 verification (the default path when libsodium is present) and BouncyCastle's give different
/// verdicts, pinned on hand-made signatures: BouncyCastle 2.7 checks the cofactored equation and accepts a signature whose
/// R is of small order when S = h·a, libsodium 1.0.18 refuses every small-order R (OpenSSL 3 accepts only R = identity);
/// <see cref="PublicKey.Verify"/> refuses them before any library is asked, so every node gives the same verdict.
/// All refuse non-canonical R, and small-order or non-canonical public keys never become a <see cref="PublicKey"/>.
/// Making such a signature needs the signer's own secret key, and honest signers never make one.
/// </summary>
public class Ed25519StrictnessTests
{
    private static readonly BigInteger L = BigInteger.Parse("7237005577332262213973186563042994240857116359379907606001950938285454250989");

    private static readonly byte[] Message = "potluck lease"u8.ToArray();

    // The eight points of small order, canonically encoded (libsodium's list), and non-canonical spellings of two of them.
    private static readonly string[] SmallOrderCanonical =
    [
        "0100000000000000000000000000000000000000000000000000000000000000", // identity, order 1
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // order 2
        "0000000000000000000000000000000000000000000000000000000000000000", // order 4
        "0000000000000000000000000000000000000000000000000000000000000080", // order 4
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    ];

    private static readonly string[] SmallOrderNonCanonical =
    [
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p + 1: the identity
        "0100000000000000000000000000000000000000000000000000000000000080", // the identity with the x sign bit set
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p: order 4
    ];

    /// <summary>
    /// A signature by an honest key whose R is of small order and S = h·a: [8]SB = [8]R + [8]hA holds, and for R = identity
    /// also SB = R + hA. BouncyCastle 2.7 verifies cofactored and accepts all eight; OpenSSL 3 (cofactorless) accepts only
    /// R = identity; libsodium 1.0.18 refuses every small-order R. The default path is libsodium's verdict when present.
    /// </summary>
    [TestCaseSource(nameof(SmallOrderCanonical))]
    public void SmallOrderR_BouncyCastleAccepts_LibsodiumRefuses(string r)
    {
        var key = PrivateKey.FromRandom(new Random(8032));
        var signature = SignWithChosenR(key, Message, Convert.FromHexString(r));
        Assert.That(key.PublicKey.VerifyWithBouncyCastle(Message, signature), Is.True, "BouncyCastle (cofactored)");
        Assert.That(key.PublicKey.VerifyWithSodium(Message, signature), Is.Not.True, "libsodium");
        Assert.That(PublicKey.HasSmallOrderR(signature), Is.True);
        Assert.That(key.PublicKey.Verify(Message, signature), Is.False, "the default verdict is the same on every node, whichever library it has");
    }

    [TestCaseSource(nameof(SmallOrderNonCanonical))]
    public void NonCanonicalR_IsRefusedByEveryPath(string r)
    {
        var key = PrivateKey.FromRandom(new Random(8032));
        var signature = SignWithChosenR(key, Message, Convert.FromHexString(r));
        Assert.That(key.PublicKey.VerifyWithBouncyCastle(Message, signature), Is.False, "BouncyCastle");
        Assert.That(key.PublicKey.VerifyWithSodium(Message, signature), Is.Not.True, "libsodium");
        Assert.That(key.PublicKey.Verify(Message, signature), Is.False, "default path");
    }

    /// <summary>
    /// A public key of small order (canonical or not) with R = identity and S = 0, which satisfies the equation for every
    /// message: such keys never become a <see cref="PublicKey"/>, and both raw verifiers refuse them.
    /// </summary>
    [TestCaseSource(nameof(AllSmallOrder))]
    public void SmallOrderPublicKey_IsRefusedEverywhere(string a)
    {
        var publicKey = Convert.FromHexString(a);
        var signature = new byte[64];
        Convert.FromHexString(SmallOrderCanonical[0]).CopyTo(signature, 0);
        Assert.That(PublicKey.TryCreate(KeyType.Ed25519, publicKey, out _), Is.False, "PublicKey.TryCreate");
        Assert.That(Ed25519.Verify(signature, 0, publicKey, 0, Message, 0, Message.Length), Is.False, "BouncyCastle");
        if (SodiumEd25519.IsAvailable)
        {
            Assert.That(SodiumEd25519.Verify(publicKey, Message, signature), Is.False, "libsodium");
        }
    }

    [Test]
    public void OwnSignaturesWithHonestR_AreAcceptedByEveryPath()
    {
        // The control for the cases above: the key's real signature verifies everywhere.
        var key = PrivateKey.FromRandom(new Random(8032));
        var honest = key.SignWithBouncyCastle(Message);
        Assert.That(key.PublicKey.VerifyWithBouncyCastle(Message, honest), Is.True);
        Assert.That(key.PublicKey.VerifyWithSodium(Message, honest), Is.Not.False);
        Assert.That(key.PublicKey.Verify(Message, honest), Is.True);
        Assert.That(PublicKey.HasSmallOrderR(honest), Is.False);
    }

    [Test]
    public void HonestSignatures_NeverHaveASmallOrderR()
    {
        var random = new Random(25519);
        for (var i = 0; i < 200; i++)
        {
            var key = PrivateKey.FromRandom(random);
            var message = new byte[i];
            random.NextBytes(message);
            var signature = key.Sign(message);
            Assert.That(PublicKey.HasSmallOrderR(signature), Is.False);
            Assert.That(key.PublicKey.Verify(message, signature), Is.True);
        }
    }

    private static IEnumerable<string> AllSmallOrder() => SmallOrderCanonical.Concat(SmallOrderNonCanonical);

    /// <summary>An Ed25519 "signature" of <paramref name="message"/> by <paramref name="key"/> with a chosen R.</summary>
    private static byte[] SignWithChosenR(PrivateKey key, byte[] message, byte[] r)
    {
        var seed = key.ToProtobuf()[4..36]; // PrivateKey protobuf: 08 01 12 40 then seed‖public
        var digest = SHA512.HashData(seed);
        digest[0] &= 248;
        digest[31] &= 127;
        digest[31] |= 64;
        var a = new BigInteger(digest.AsSpan(0, 32), isUnsigned: true);
        var h = new BigInteger(SHA512.HashData([.. r, .. key.PublicKey.Data, .. message]), isUnsigned: true) % L;
        var s = h * a % L;
        var signature = new byte[64];
        r.CopyTo(signature, 0);
        s.TryWriteBytes(signature.AsSpan(32), out _, isUnsigned: true);
        return signature;
    }
}
