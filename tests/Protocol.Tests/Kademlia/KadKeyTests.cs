using System.Numerics;
using FsCheck;
using FsCheck.Fluent;
using Potluck.Protocol.Kademlia;

namespace Potluck.Protocol.Tests.Kademlia;

public class KadKeyTests
{
    private static Arbitrary<KadKey> Keys() =>
        ArbMap.Default.GeneratorFor<byte[]>().Select(b => KadKey.FromKey(b)).ToArbitrary();

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public Property Distance_ToItself_IsZero() =>
        Prop.ForAll(Keys(), a => a.DistanceTo(a).IsZero && a.CommonPrefixLength(a) == 256);

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public Property Distance_IsSymmetric() =>
        Prop.ForAll(Keys(), Keys(), (a, b) => a.DistanceTo(b) == b.DistanceTo(a));

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public Property Distance_IsZeroOnlyForEqualKeys() =>
        Prop.ForAll(Keys(), Keys(), (a, b) => a.DistanceTo(b).IsZero == (a == b));

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public Property Distance_ComposesByXor_AndSatisfiesTheTriangleInequality() =>
        Prop.ForAll(Keys(), Keys(), Keys(), (a, b, c) =>
        {
            var ab = a.DistanceTo(b);
            var bc = b.DistanceTo(c);
            var ac = a.DistanceTo(c);
            return (ab ^ bc) == ac && ac.ToBigInteger() <= ab.ToBigInteger() + bc.ToBigInteger();
        });

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public Property Distance_FromOneTarget_IsUniquePerKey() =>
        Prop.ForAll(Keys(), Keys(), Keys(), (target, a, b) => a == b || a.DistanceTo(target) != b.DistanceTo(target));

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public Property Distance_OrdersLikeTheUnsignedInteger() =>
        Prop.ForAll(Keys(), Keys(), Keys(), (t, a, b) =>
            Math.Sign(a.DistanceTo(t).CompareTo(b.DistanceTo(t))) == Math.Sign(BigInteger.Compare(a.DistanceTo(t).ToBigInteger(), b.DistanceTo(t).ToBigInteger())));

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public Property CommonPrefixLength_CountsLeadingEqualBits() =>
        Prop.ForAll(Keys(), Keys(), (a, b) =>
        {
            var x = a.ToBytes();
            var y = b.ToBytes();
            var bits = 0;
            while (bits < 256 && ((x[bits >> 3] ^ y[bits >> 3]) & (0x80 >> (bits & 7))) == 0)
            {
                bits++;
            }
            return a.CommonPrefixLength(b) == bits;
        });

    [Test]
    public void RandomWithCommonPrefix_HasExactlyThatPrefix()
    {
        var random = new Random(7);
        var key = KadKey.FromKey("local"u8);
        foreach (var cpl in new[] { 0, 1, 7, 8, 63, 64, 65, 200, 255 })
        {
            Assert.That(key.RandomWithCommonPrefix(cpl, random).CommonPrefixLength(key), Is.EqualTo(cpl));
        }
    }

    [Test]
    public void FromHash_RoundTripsBytes()
    {
        var bytes = Enumerable.Range(1, 32).Select(i => (byte)i).ToArray();
        Assert.That(KadKey.FromHash(bytes).ToBytes(), Is.EqualTo(bytes));
        Assert.Throws<ArgumentException>(() => KadKey.FromHash(new byte[31]));
    }
}
