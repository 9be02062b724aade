using FsCheck;
using FsCheck.Fluent;
using Potluck.Protocol.Noise;

namespace Potluck.Protocol.Tests.Noise;

public class X25519KeyPairTests
{
    // RFC 7748 §6.1.
    private const string AlicePrivate = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    private const string AlicePublic = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
    private const string BobPrivate = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
    private const string BobPublic = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
    private const string Shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

    [Test]
    public void OpenSsl_OnLinux_IsAvailable()
    {
        Assume.That(OperatingSystem.IsLinux() && Environment.GetEnvironmentVariable("POTLUCK_NO_OPENSSL_X25519") != "1");
        Assert.That(OpenSslX25519.IsAvailable, Is.True, "libcrypto.so.3 should load on Linux; handshakes fall back to the slower BouncyCastle");
    }

    [Test]
    public void Sodium_WhereInstalled_IsAvailableAndTheDefault()
    {
        Assume.That(Environment.GetEnvironmentVariable("POTLUCK_NO_SODIUM") != "1"
                    && (System.Runtime.InteropServices.NativeLibrary.TryLoad("libsodium.so.23", out _)
                        || System.Runtime.InteropServices.NativeLibrary.TryLoad("libsodium", out _)));
        Assert.That(SodiumX25519.IsAvailable, Is.True, "libsodium loads but failed its self-test");
        using var key = X25519KeyPair.Generate();
        Assert.That(key.UsesSodium, Is.True);
    }

    private static readonly X25519Path[] Paths = [X25519Path.Auto, X25519Path.Sodium, X25519Path.OpenSsl, X25519Path.BouncyCastle];

    [TestCase("Auto")]
    [TestCase("Sodium")]
    [TestCase("OpenSsl")]
    [TestCase("BouncyCastle")]
    public void Rfc7748Vector_EveryPath_ReproducesThePublicKeysAndTheSharedSecret(string name)
    {
        var path = Enum.Parse<X25519Path>(name);
        using var alice = X25519KeyPair.FromPrivate(Convert.FromHexString(AlicePrivate), path);
        using var bob = X25519KeyPair.FromPrivate(Convert.FromHexString(BobPrivate), path);
        Assert.That(alice.UsesSodium, Is.EqualTo(path is X25519Path.Auto or X25519Path.Sodium && SodiumX25519.IsAvailable));
        Assert.That(alice.UsesOpenSsl, Is.EqualTo(!alice.UsesSodium && path is X25519Path.Auto or X25519Path.OpenSsl && OpenSslX25519.IsAvailable));
        Assert.That(Convert.ToHexStringLower(alice.PublicKey), Is.EqualTo(AlicePublic));
        Assert.That(Convert.ToHexStringLower(bob.PublicKey), Is.EqualTo(BobPublic));
        var ab = new byte[32];
        var ba = new byte[32];
        Assert.That(alice.TryAgree(bob.PublicKey, ab), Is.True);
        Assert.That(bob.TryAgree(alice.PublicKey, ba), Is.True);
        Assert.That(Convert.ToHexStringLower(ab), Is.EqualTo(Shared));
        Assert.That(Convert.ToHexStringLower(ba), Is.EqualTo(Shared));
    }

    [Test]
    public void Rfc7748Vector_SodiumDirectly_RefusesAllZeroOutput()
    {
        Assume.That(SodiumX25519.IsAvailable);
        var shared = new byte[32];
        Assert.That(SodiumX25519.TryAgree(Convert.FromHexString(AlicePrivate), Convert.FromHexString(BobPublic), shared), Is.True);
        Assert.That(Convert.ToHexStringLower(shared), Is.EqualTo(Shared));
        Assert.That(SodiumX25519.TryAgree(Convert.FromHexString(AlicePrivate), new byte[32], shared), Is.False);
        Assert.That(shared, Is.All.EqualTo(0));
    }

    // RFC 7748 §5.2: unclamped scalars and a u-coordinate with the top bit set (which X25519 ignores).
    [TestCase("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
              "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
              "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")]
    [TestCase("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
              "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
              "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957")]
    public void Rfc7748ScalarMultVectors_EveryPath_Agrees(string scalar, string u, string expected)
    {
        foreach (var path in Paths)
        {
            using var key = X25519KeyPair.FromPrivate(Convert.FromHexString(scalar), path);
            var shared = new byte[32];
            Assert.That(key.TryAgree(Convert.FromHexString(u), shared), Is.True);
            Assert.That(Convert.ToHexStringLower(shared), Is.EqualTo(expected), path.ToString());
        }
    }

    // RFC 7748 §5.2, iterated: k = X25519(k, u), u = old k, from k = u = 9; after 1 and 1,000 iterations.
    [Test]
    public void Rfc7748IteratedVector_EveryPath_Agrees()
    {
        foreach (var path in Paths)
        {
            var k = new byte[32];
            var u = new byte[32];
            k[0] = 9;
            u[0] = 9;
            for (var i = 1; i <= 1000; i++)
            {
                using var key = X25519KeyPair.FromPrivate(k, path);
                var next = new byte[32];
                Assert.That(key.TryAgree(u, next), Is.True);
                u = k;
                k = next;
                if (i == 1)
                {
                    Assert.That(Convert.ToHexStringLower(k), Is.EqualTo("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"), $"{path}, 1");
                }
            }
            Assert.That(Convert.ToHexStringLower(k), Is.EqualTo("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"), $"{path}, 1000");
        }
    }

    [FsCheck.NUnit.Property(MaxTest = 100)]
    public Property RandomKeysAndPoints_EveryPath_ComputesTheSameAnswer() =>
        Prop.ForAll(Gen.Choose(int.MinValue, int.MaxValue).ToArbitrary(), seed =>
        {
            var random = new Random(seed);
            var a = new byte[32];
            var u = new byte[32];
            random.NextBytes(a);
            random.NextBytes(u); // any 32 bytes: points on the curve or its twist, top bit set or not
            var answers = Paths.Select(path =>
            {
                using var key = X25519KeyPair.FromPrivate(a, path);
                var shared = new byte[32];
                var ok = key.TryAgree(u, shared);
                return (Public: Convert.ToHexString(key.PublicKey), Ok: ok, Shared: Convert.ToHexString(shared));
            }).ToArray();
            return answers.All(x => x == answers[0]);
        });

    [Test]
    public void RandomKeys_OpenSslAndBouncyCastle_ComputeTheSamePublicKeysAndSecrets()
    {
        var random = new Random(7748);
        for (var i = 0; i < 32; i++)
        {
            var a = new byte[32];
            var b = new byte[32];
            random.NextBytes(a);
            random.NextBytes(b);
            using var fast = X25519KeyPair.FromPrivate(a);
            using var slow = X25519KeyPair.FromPrivate(a, forceBouncyCastle: true);
            using var other = X25519KeyPair.FromPrivate(b, forceBouncyCastle: true);
            Assert.That(fast.PublicKey.ToArray(), Is.EqualTo(slow.PublicKey.ToArray()));
            var s1 = new byte[32];
            var s2 = new byte[32];
            Assert.That(fast.TryAgree(other.PublicKey, s1), Is.True);
            Assert.That(slow.TryAgree(other.PublicKey, s2), Is.True);
            Assert.That(s1, Is.EqualTo(s2));
        }
    }

    // u = 0 and u = 1 are of low order: every scalar maps them to zero, which Noise must refuse.
    [TestCase("0000000000000000000000000000000000000000000000000000000000000000")]
    [TestCase("0100000000000000000000000000000000000000000000000000000000000000")]
    [TestCase("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")]
    [TestCase("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157")]
    [TestCase("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")]
    [TestCase("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")]
    [TestCase("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")]
    public void TryAgree_LowOrderPoint_ReturnsFalseOnEveryPath(string u)
    {
        foreach (var path in Paths)
        {
            using var key = X25519KeyPair.FromPrivate(Convert.FromHexString(AlicePrivate), path);
            var shared = new byte[32];
            Assert.That(key.TryAgree(Convert.FromHexString(u), shared), Is.False, path.ToString());
        }
    }

    [Test]
    public void TryAgree_WrongLength_ReturnsFalse()
    {
        using var key = X25519KeyPair.Generate();
        Assert.That(key.TryAgree(new byte[31], new byte[32]), Is.False);
    }
}
