using FsCheck.NUnit;
using Org.BouncyCastle.Crypto.Engines;
using Org.BouncyCastle.Crypto.Parameters;
using Potluck.Protocol.Pnet;
using Property = FsCheck.NUnit.PropertyAttribute;

namespace Potluck.Protocol.Tests.Pnet;

public class PnetCipherTests
{
    private static byte[] Bytes(int seed, int length)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    [Test]
    public void Transform_First32BytesOfNaclVector_MatchInPlaceAndCopying()
    {
        var key = Convert.FromHexString("1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389");
        var nonce = Convert.FromHexString("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37");
        var expected = Convert.FromHexString("eea6a7251c1e72916d11c2cb214d3c252539121d8e234e652d651fa4c8cff880");

        var inPlace = new byte[32];
        new PnetCipher(key, nonce).Transform(inPlace);
        var copied = new byte[40];
        new PnetCipher(key, nonce).Transform(new byte[32], copied);

        Assert.That(inPlace, Is.EqualTo(expected));
        Assert.That(copied[..32], Is.EqualTo(expected));
        Assert.That(copied[32..], Is.All.Zero, "nothing past the source length is written");
    }

    /// <summary>Our SIMD XSalsa20 against BouncyCastle's reference engine, over any data cut into any pieces.</summary>
    [Property(MaxTest = 200)]
    public bool Transform_AnyDataAnyCuts_MatchesBouncyCastleXSalsa20(int seed, FsCheck.PositiveInt length, int[] cuts, bool wide)
    {
        var len = length.Get % 5000;
        var key = Bytes(seed, 32);
        var nonce = Bytes(seed + 1, 24);
        var data = Bytes(seed + 2, len);

        var reference = new XSalsa20Engine();
        reference.Init(true, new ParametersWithIV(new KeyParameter(key), nonce));
        var expected = new byte[len];
        reference.ProcessBytes(data, expected);

        var ours = new PnetCipher(key, nonce, wide);
        var actual = (byte[])data.Clone();
        var offset = 0;
        foreach (var cut in cuts ?? [])
        {
            var n = Math.Min(len - offset, (int)((uint)cut % 700));
            ours.Transform(actual.AsSpan(offset, n));
            offset += n;
        }
        ours.Transform(actual.AsSpan(offset));
        return actual.AsSpan().SequenceEqual(expected);
    }

    [TestCase(true)]
    [TestCase(false)]
    public void Transform_CounterCrossesManyBatches_MatchesBouncyCastle(bool wide)
    {
        var key = Bytes(1, 32);
        var nonce = Bytes(2, 24);
        var data = Bytes(3, 1 << 20);
        var reference = new XSalsa20Engine();
        reference.Init(true, new ParametersWithIV(new KeyParameter(key), nonce));
        var expected = new byte[data.Length];
        reference.ProcessBytes(data, expected);

        var actual = new byte[data.Length];
        new PnetCipher(key, nonce, wide).Transform(data, actual);
        Assert.That(actual, Is.EqualTo(expected));
    }
}
