using FsCheck;
using FsCheck.Fluent;
using Potluck.Protocol.Noise;
using BcX25519 = Org.BouncyCastle.Math.EC.Rfc7748.X25519;

namespace Potluck.Protocol.Tests.Noise;

/// <summary>
/// X25519 (NSec, libsodium 1.0.22) on the RFC 7748 vectors, against BouncyCastle's RFC 7748 code as an independent
/// reference (used by the tests only), and the one verdict Noise needs: an all-zero result is refused.
/// </summary>
public class X25519KeyPairTests
{
    // RFC 7748 §6.1.
    private const string AlicePrivate = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    private const string AlicePublic = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
    private const string BobPrivate = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
    private const string BobPublic = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
    private const string Shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

    [Test]
    public void Rfc7748Vector_ReproducesThePublicKeysAndTheSharedSecret()
    {
        using var alice = X25519KeyPair.FromPrivate(Convert.FromHexString(AlicePrivate));
        using var bob = X25519KeyPair.FromPrivate(Convert.FromHexString(BobPrivate));
        Assert.That(Convert.ToHexStringLower(alice.PublicKey), Is.EqualTo(AlicePublic));
        Assert.That(Convert.ToHexStringLower(bob.PublicKey), Is.EqualTo(BobPublic));
        var ab = new byte[32];
        var ba = new byte[32];
        Assert.That(alice.TryAgree(bob.PublicKey, ab), Is.True);
        Assert.That(bob.TryAgree(alice.PublicKey, ba), Is.True);
        Assert.That(Convert.ToHexStringLower(ab), Is.EqualTo(Shared));
        Assert.That(Convert.ToHexStringLower(ba), Is.EqualTo(Shared));
    }

    // RFC 7748 §5.2: unclamped scalars, and (the second) a u-coordinate with the top bit set, which X25519 ignores.
    [TestCase("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
              "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
              "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")]
    [TestCase("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
              "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
              "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957")]
    public void Rfc7748ScalarMultVectors_Agree(string scalar, string u, string expected)
    {
        using var key = X25519KeyPair.FromPrivate(Convert.FromHexString(scalar));
        var shared = new byte[32];
        Assert.That(key.TryAgree(Convert.FromHexString(u), shared), Is.True);
        Assert.That(Convert.ToHexStringLower(shared), Is.EqualTo(expected));
    }

    // RFC 7748 §5.2, iterated: k = X25519(k, u), u = old k, from k = u = 9; after 1 and 1,000 iterations.
    [Test]
    public void Rfc7748IteratedVector_Agrees()
    {
        var k = new byte[32];
        var u = new byte[32];
        k[0] = 9;
        u[0] = 9;
        for (var i = 1; i <= 1000; i++)
        {
            using var key = X25519KeyPair.FromPrivate(k);
            var next = new byte[32];
            Assert.That(key.TryAgree(u, next), Is.True);
            u = k;
            k = next;
            if (i == 1)
            {
                Assert.That(Convert.ToHexStringLower(k), Is.EqualTo("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"), "1");
            }
        }
        Assert.That(Convert.ToHexStringLower(k), Is.EqualTo("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"), "1000");
    }

    /// <summary>
    /// Any scalar and any 32 bytes for u (points on the curve or its twist, top bit set or not, u ≥ p): the same public key
    /// and the same answer as the reference; an all-zero result is refused, and only that.
    /// </summary>
    [FsCheck.NUnit.Property(MaxTest = 200)]
    public Property RandomKeysAndPoints_MatchTheReference() =>
        Prop.ForAll(Gen.Choose(int.MinValue, int.MaxValue).ToArbitrary(), seed =>
        {
            var random = new Random(seed);
            var a = new byte[32];
            var u = new byte[32];
            random.NextBytes(a);
            random.NextBytes(u);
            using var key = X25519KeyPair.FromPrivate(a);
            var expectedPublic = new byte[32];
            BcX25519.ScalarMultBase(a, 0, expectedPublic, 0);
            var expected = new byte[32];
            var referenceOk = BcX25519.CalculateAgreement(a, 0, u, 0, expected, 0);
            var shared = new byte[32];
            var ok = key.TryAgree(u, shared);
            return key.PublicKey.SequenceEqual(expectedPublic) && ok == referenceOk && shared.AsSpan().SequenceEqual(expected);
        });

    // Every u of small order (on the curve or its twist), spelled canonically, as p or p + 1, or with the ignored top bit set:
    // every scalar maps them to zero, which Noise must refuse.
    [TestCase("0000000000000000000000000000000000000000000000000000000000000000", TestName = "TryAgree_LowOrderPoint_IsRefused(0)")]
    [TestCase("0100000000000000000000000000000000000000000000000000000000000000", TestName = "TryAgree_LowOrderPoint_IsRefused(1)")]
    [TestCase("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800", TestName = "TryAgree_LowOrderPoint_IsRefused(order 8)")]
    [TestCase("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157", TestName = "TryAgree_LowOrderPoint_IsRefused(order 8, other)")]
    [TestCase("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", TestName = "TryAgree_LowOrderPoint_IsRefused(p - 1)")]
    [TestCase("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", TestName = "TryAgree_LowOrderPoint_IsRefused(p, i.e. 0)")]
    [TestCase("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", TestName = "TryAgree_LowOrderPoint_IsRefused(p + 1, i.e. 1)")]
    [TestCase("0000000000000000000000000000000000000000000000000000000000000080", TestName = "TryAgree_LowOrderPoint_IsRefused(0, top bit set)")]
    [TestCase("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880", TestName = "TryAgree_LowOrderPoint_IsRefused(order 8, top bit set)")]
    public void TryAgree_LowOrderPoint_IsRefused(string u)
    {
        foreach (var scalar in new[] { AlicePrivate, BobPrivate })
        {
            using var key = X25519KeyPair.FromPrivate(Convert.FromHexString(scalar));
            var shared = Enumerable.Repeat((byte)0xaa, 32).ToArray();
            Assert.That(key.TryAgree(Convert.FromHexString(u), shared), Is.False);
            Assert.That(shared, Is.All.EqualTo(0), "nothing of the result is left behind");
            var reference = new byte[32];
            Assert.That(BcX25519.CalculateAgreement(Convert.FromHexString(scalar), 0, Convert.FromHexString(u), 0, reference, 0), Is.False,
                        "the reference gives all zeros for it too");
        }
    }

    [Test]
    public void TryAgree_WrongLength_ReturnsFalse()
    {
        using var key = X25519KeyPair.Generate();
        Assert.That(key.TryAgree(new byte[31], new byte[32]), Is.False);
        Assert.That(key.TryAgree(new byte[33], new byte[32]), Is.False);
    }

    /// <summary>
    /// X25519 (called directly) and Ed25519 (through NSec) run on one libsodium, the one the application ships: the
    /// package's native asset, even where the system has a libsodium of its own (this project's machines have Debian's).
    /// </summary>
    [Test]
    public void Libsodium_IsOneLibrary_TheOneShippedWithTheApplication()
    {
        Assume.That(OperatingSystem.IsLinux(), "reads /proc/self/maps");
        using var key = X25519KeyPair.Generate();
        var identity = Potluck.Protocol.Identity.PrivateKey.FromRandom(new Random(1));
        Assert.That(identity.PublicKey.Verify("m"u8, identity.Sign("m"u8)), Is.True);
        var libraries = File.ReadLines("/proc/self/maps")
            .Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Where(fields => fields.Length >= 6 && Path.GetFileName(fields[5]).StartsWith("libsodium", StringComparison.Ordinal))
            .Select(fields => fields[5])
            .Distinct()
            .ToArray();
        Assert.That(libraries, Has.Length.EqualTo(1), string.Join(", ", libraries));
        var expected = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libsodium.so"));
        Assert.That(libraries[0], Does.Not.StartWith("/lib/").And.Not.StartWith("/usr/lib/"), "a system libsodium");
        if (System.Runtime.InteropServices.RuntimeInformation.RuntimeIdentifier == "linux-x64")
        {
            Assert.That(libraries[0], Is.EqualTo(expected));
        }
    }

    [Test]
    public void Generate_GivesDistinctKeysThatAgree()
    {
        using var a = X25519KeyPair.Generate();
        using var b = X25519KeyPair.Generate();
        Assert.That(a.PublicKey.ToArray(), Is.Not.EqualTo(b.PublicKey.ToArray()));
        var ab = new byte[32];
        var ba = new byte[32];
        Assert.That(a.TryAgree(b.PublicKey, ab) && b.TryAgree(a.PublicKey, ba), Is.True);
        Assert.That(ab, Is.EqualTo(ba));
    }
}
