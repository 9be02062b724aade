using System.Numerics;
using System.Security.Cryptography;
using NSec.Cryptography;
using Potluck.Protocol.Identity;
using BcEd25519 = Org.BouncyCastle.Math.EC.Rfc8032.Ed25519;
using NSecPublicKey = NSec.Cryptography.PublicKey;
using PublicKey = Potluck.Protocol.Identity.PublicKey;

namespace Potluck.Protocol.Tests.Identity;

/// <summary>
/// The one Ed25519 verdict, case by case, on hand-made signatures where verifiers are known to differ (the cases of
/// "Taming the many EdDSAs", Chalkias et al. 2020): what <see cref="PublicKey.Verify"/> says, and what libsodium 1.0.22
/// (through NSec, without our own checks) says. Where a signature is one a cofactored verifier accepts, BouncyCastle 2.7
/// (cofactored; used by the tests only) shows it, so each refusal here is a decision and not a broken signature.
/// A libsodium upgrade that changes any verdict (libsodium's master has moved to cofactored verification) fails here.
/// Making any of these signatures needs the signer's own secret key; honest signers never make one.
/// </summary>
public class Ed25519StrictnessTests
{
    private static readonly BigInteger L = BigInteger.Parse("7237005577332262213973186563042994240857116359379907606001950938285454250989");
    private static readonly BigInteger P = BigInteger.Pow(2, 255) - 19;

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

    private static IEnumerable<string> AllSmallOrder() => SmallOrderCanonical.Concat(SmallOrderNonCanonical);

    /// <summary>
    /// R of small order and S = h·a: [8]SB = [8]R + [8]hA holds (and for R = identity even SB = R + hA). A cofactored
    /// verifier accepts all eight; we refuse them before the library is asked, and libsodium 1.0.22 refuses them too.
    /// </summary>
    [TestCaseSource(nameof(SmallOrderCanonical))]
    public void SmallOrderR_IsRefused(string r)
    {
        var key = PrivateKey.FromRandom(new Random(8032));
        var signature = SignWith(key, key.PublicKey.Data, Message, Convert.FromHexString(r), BigInteger.Zero);
        Assert.That(BcEd25519.Verify(signature, 0, key.PublicKey.Data, 0, Message, 0, Message.Length), Is.True, "a cofactored verifier accepts it");
        Assert.That(PublicKey.HasSmallOrderR(signature), Is.True);
        Assert.That(key.PublicKey.Verify(Message, signature), Is.False, "our verdict");
        Assert.That(LibsodiumVerifies(key.PublicKey.Data, Message, signature), Is.False, "libsodium alone");
    }

    [TestCaseSource(nameof(SmallOrderNonCanonical))]
    public void NonCanonicalSmallOrderR_IsRefused(string r)
    {
        var key = PrivateKey.FromRandom(new Random(8032));
        var signature = SignWith(key, key.PublicKey.Data, Message, Convert.FromHexString(r), BigInteger.Zero);
        Assert.That(key.PublicKey.Verify(Message, signature), Is.False, "our verdict");
        Assert.That(LibsodiumVerifies(key.PublicKey.Data, Message, signature), Is.False, "libsodium alone");
    }

    /// <summary>R + T, T the point of order 2, with S made for it: only a cofactored verifier accepts it.</summary>
    [Test]
    public void RWithASmallOrderComponent_IsRefused_TheEquationIsCofactorless()
    {
        var key = PrivateKey.FromRandom(new Random(8032));
        var (rPoint, r) = Nonce(key, Message);
        var signature = SignWith(key, key.PublicKey.Data, Message, AddOrder2Point(rPoint), r);
        Assert.That(BcEd25519.Verify(signature, 0, key.PublicKey.Data, 0, Message, 0, Message.Length), Is.True, "a cofactored verifier accepts it");
        Assert.That(PublicKey.HasSmallOrderR(signature), Is.False, "R itself is not of small order");
        Assert.That(key.PublicKey.Verify(Message, signature), Is.False);
        Assert.That(SignWith(key, key.PublicKey.Data, Message, rPoint, r), Is.EqualTo(key.Sign(Message)), "the control: the helper signs honestly");
    }

    /// <summary>S + L satisfies the equation as well as S does; RFC 8032 requires S &lt; L and so does the library.</summary>
    [Test]
    public void NonCanonicalS_IsRefused_ThoughTheEquationHolds()
    {
        var key = PrivateKey.FromRandom(new Random(8032));
        var good = key.Sign(Message);
        var s = new BigInteger(good.AsSpan(32), isUnsigned: true);
        foreach (var (bigS, why) in new[] { (s + L, "S + L"), (L, "S = L"), (s + 2 * L, "S + 2L") })
        {
            var signature = (byte[])good.Clone();
            signature.AsSpan(32).Clear();
            Assert.That(bigS.TryWriteBytes(signature.AsSpan(32), out _, isUnsigned: true), Is.True);
            Assert.That(key.PublicKey.Verify(Message, signature), Is.False, why);
            Assert.That(LibsodiumVerifies(key.PublicKey.Data, Message, signature), Is.False, $"libsodium alone: {why}");
        }
        Assert.That(key.PublicKey.Verify(Message, good), Is.True, "the control");
    }

    /// <summary>
    /// A key of small order (or spelled non-canonically) never becomes a <see cref="PublicKey"/>; libsodium refuses it too,
    /// even with a signature that satisfies the equation (R = rB, S = r, and the key the identity).
    /// </summary>
    [TestCaseSource(nameof(AllSmallOrder))]
    public void SmallOrderPublicKey_IsRefused(string a)
    {
        var publicKey = Convert.FromHexString(a);
        Assert.That(PublicKey.TryCreate(KeyType.Ed25519, publicKey, out _), Is.False, "PublicKey.TryCreate");
        Assert.Throws<ArgumentException>(() => PublicKey.FromEd25519(publicKey));
        var signer = PrivateKey.FromRandom(new Random(1));
        var (rPoint, r) = Nonce(signer, Message);
        var signature = new byte[64];
        rPoint.CopyTo(signature, 0);
        r.TryWriteBytes(signature.AsSpan(32), out _, isUnsigned: true); // [S]B = R = R + [h]identity
        Assert.That(LibsodiumVerifies(publicKey, Message, signature), Is.False, "libsodium alone");
    }

    /// <summary>Every y ≥ p that is not of small order (p + 2 … 2^255 - 1), with either sign bit: not a key.</summary>
    [Test]
    public void NonCanonicalPublicKeys_AreRefused()
    {
        for (var y = P + 2; y < BigInteger.Pow(2, 255); y++)
        {
            foreach (var sign in new[] { 0, 0x80 })
            {
                var encoded = new byte[32];
                y.TryWriteBytes(encoded, out _, isUnsigned: true);
                encoded[31] |= (byte)sign;
                Assert.That(PublicKey.TryCreate(KeyType.Ed25519, encoded, out _), Is.False, Convert.ToHexStringLower(encoded));
            }
        }
    }

    /// <summary>
    /// A + T, T the point of order 2: a valid encoding of a point on the curve, so a key, and (cofactorless) it verifies a
    /// signature made with a's scalar exactly when h is even, where [h]T vanishes.
    /// </summary>
    [Test]
    public void PublicKeyWithASmallOrderComponent_VerifiesOnlyWhereTheComponentVanishes()
    {
        var key = PrivateKey.FromRandom(new Random(8032));
        var mixed = AddOrder2Point(key.PublicKey.Data);
        Assert.That(PublicKey.TryCreate(KeyType.Ed25519, mixed, out var mixedKey), Is.True);
        var seen = new HashSet<bool>();
        for (var i = 0; seen.Count < 2; i++)
        {
            var message = BitConverter.GetBytes(i);
            var (rPoint, r) = Nonce(key, message);
            var signature = SignWith(key, mixed, message, rPoint, r);
            var hEven = Challenge(rPoint, mixed, message).IsEven;
            seen.Add(hEven);
            Assert.That(mixedKey.Verify(message, signature), Is.EqualTo(hEven), $"message {i}, h {(hEven ? "even" : "odd")}");
            Assert.That(BcEd25519.Verify(signature, 0, mixed, 0, message, 0, message.Length), Is.True, "a cofactored verifier accepts both");
        }
    }

    /// <summary>y = 2 is not the y of any point: kept as a key (as go-libp2p and js-libp2p keep any 32 bytes), it verifies nothing.</summary>
    [Test]
    public void OffCurvePublicKey_IsKeptButVerifiesNothing()
    {
        var offCurve = new byte[32];
        offCurve[0] = 2;
        Assert.That(BcEd25519.ValidatePublicKeyPartial(offCurve, 0), Is.False, "the premise: not on the curve");
        Assert.That(PublicKey.TryCreate(KeyType.Ed25519, offCurve, out var key), Is.True);
        var signer = PrivateKey.FromRandom(new Random(2));
        var (rPoint, r) = Nonce(signer, Message);
        var attempts = new[]
        {
            signer.Sign(Message),
            SignWith(signer, offCurve, Message, rPoint, r),
            [.. rPoint, .. new byte[32]],
        };
        foreach (var signature in attempts)
        {
            Assert.That(key.Verify(Message, signature), Is.False);
            Assert.That(LibsodiumVerifies(offCurve, Message, signature), Is.False);
        }
    }

    [Test]
    public void OwnSignatures_AreAccepted()
    {
        // The control for the cases above: the key's real signature verifies, here and in libsodium alone.
        var key = PrivateKey.FromRandom(new Random(8032));
        var honest = key.Sign(Message);
        Assert.That(key.PublicKey.Verify(Message, honest), Is.True);
        Assert.That(LibsodiumVerifies(key.PublicKey.Data, Message, honest), Is.True);
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

    /// <summary>libsodium's verdict alone, through NSec, without <see cref="PublicKey"/>'s own checks.</summary>
    private static bool LibsodiumVerifies(byte[] publicKey, byte[] message, byte[] signature) =>
        SignatureAlgorithm.Ed25519.Verify(NSecPublicKey.Import(SignatureAlgorithm.Ed25519, publicKey, KeyBlobFormat.RawPublicKey), message, signature);

    /// <summary>The key's secret scalar a and its nonce prefix (RFC 8032 §5.1.5).</summary>
    private static (BigInteger A, byte[] Prefix) Expand(PrivateKey key)
    {
        var seed = key.ToProtobuf()[4..36]; // PrivateKey protobuf: 08 01 12 40 then seed‖public
        var digest = SHA512.HashData(seed);
        digest[0] &= 248;
        digest[31] &= 127;
        digest[31] |= 64;
        return (new BigInteger(digest.AsSpan(0, 32), isUnsigned: true), digest[32..]);
    }

    /// <summary>The honest nonce for a message: r and R = rB (R read from the key's own signature).</summary>
    private static (byte[] R, BigInteger r) Nonce(PrivateKey key, byte[] message)
    {
        var r = new BigInteger(SHA512.HashData([.. Expand(key).Prefix, .. message]), isUnsigned: true) % L;
        return (key.Sign(message)[..32], r);
    }

    private static BigInteger Challenge(byte[] r, byte[] publicKey, byte[] message) =>
        new BigInteger(SHA512.HashData([.. r, .. publicKey, .. message]), isUnsigned: true) % L;

    /// <summary>R ‖ S with S = r + h·a, h = H(R ‖ A ‖ M), for a chosen R (and its r) and a chosen A in the hash.</summary>
    private static byte[] SignWith(PrivateKey key, byte[] publicKey, byte[] message, byte[] rPoint, BigInteger r)
    {
        var s = (r + Challenge(rPoint, publicKey, message) * Expand(key).A) % L;
        var signature = new byte[64];
        rPoint.CopyTo(signature, 0);
        s.TryWriteBytes(signature.AsSpan(32), out _, isUnsigned: true);
        return signature;
    }

    /// <summary>
    /// The encoding of P + T for P = (x, y) given by its encoding and T = (0, -1), the point of order 2: (-x, -y), that is
    /// y' = p - y and the x sign bit flipped (x ≠ 0 for every point not of small order).
    /// </summary>
    private static byte[] AddOrder2Point(byte[] encoded)
    {
        var bytes = (byte[])encoded.Clone();
        var sign = bytes[31] & 0x80;
        bytes[31] &= 0x7f;
        var y = new BigInteger(bytes, isUnsigned: true);
        var result = new byte[32];
        (P - y).TryWriteBytes(result, out _, isUnsigned: true);
        result[31] |= (byte)(sign ^ 0x80);
        return result;
    }
}
