using System.Numerics;
using FsCheck;
using FsCheck.Fluent;
using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.Tests.Multiformats;

public class Base58Tests
{
    // Vectors from the base58 IETF draft (draft-msporny-base58) and the bitcoin test suite.
    [TestCase("", "")]
    [TestCase("61", "2g")]
    [TestCase("626262", "a3gV")]
    [TestCase("636363", "aPEr")]
    [TestCase("00", "1")]
    [TestCase("0000", "11")]
    [TestCase("00000000000000000000", "1111111111")]
    [TestCase("000000287fb4cd", "111233QC4")]
    [TestCase("572e4794", "3EFU7m")]
    [TestCase("ecac89cad93923c02321", "EJDM8drfXA6uyA")]
    [TestCase("10c8511e", "Rt5zm")]
    [TestCase("48656c6c6f20576f726c6421", "2NEpo7TZRRrLZSi2U")]
    [TestCase("516b6fcd0f", "ABnLTmg")]
    [TestCase("bf4f89001e670274dd", "3SEo3LWLoPntC")]
    [TestCase("00eb15231dfceb60925886b67d065299925915aeb172c06647", "1NS17iag9jJgTHD1VXjvLCEnZuQ3rJDE9L")]
    public void EncodeDecode_KnownVectors(string hex, string text)
    {
        var bytes = Convert.FromHexString(hex);
        Assert.That(Base58.Encode(bytes), Is.EqualTo(text));
        Assert.That(Base58.TryDecode(text, out var decoded), Is.True);
        Assert.That(decoded, Is.EqualTo(bytes));
    }

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public bool EncodeDecode_RoundTripsAnyBytes(byte[] data)
    {
        var text = Base58.Encode(data);
        return Base58.TryDecode(text, out var back) && back.AsSpan().SequenceEqual(data);
    }

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public bool Encode_MatchesBigIntegerReference(byte[] data)
    {
        // Reference: leading zero bytes become '1', the rest is the big-endian number in base 58.
        const string alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
        var zeros = data.TakeWhile(b => b == 0).Count();
        var n = new BigInteger(data, isUnsigned: true, isBigEndian: true);
        var digits = new List<char>();
        while (n > 0)
        {
            digits.Add(alphabet[(int)(n % 58)]);
            n /= 58;
        }
        digits.Reverse();
        return Base58.Encode(data) == new string('1', zeros) + new string([.. digits]);
    }

    [TestCase("0")]
    [TestCase("O")]
    [TestCase("I")]
    [TestCase("l")]
    [TestCase("abc+")]
    [TestCase("Qm/")]
    [TestCase("3EFU7m ")]
    [TestCase("é")]
    [TestCase("\u0661")] // Arabic-Indic digit one
    public void Decode_CharacterOutsideAlphabet_IsRejected(string text)
    {
        Assert.That(Base58.TryDecode(text, out var bytes), Is.False);
        Assert.That(bytes, Is.Empty);
        Assert.Throws<FormatException>(() => Base58.Decode(text));
    }

    [Test]
    public void Decode_TextLongerThanLimit_IsRejected()
    {
        Assert.That(Base58.TryDecode(new string('2', Base58.MaxEncodedLength), out _), Is.True);
        Assert.That(Base58.TryDecode(new string('2', Base58.MaxEncodedLength + 1), out _), Is.False);
    }

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public bool Decode_AnyString_NeverThrowsAndReEncodesWhenAccepted(string? text)
    {
        text ??= "";
        return !Base58.TryDecode(text, out var bytes) || Base58.Encode(bytes) == text;
    }
}

public class Base32Tests
{
    // RFC 4648 section 10 vectors, lower case and unpadded as multibase 'b' writes them.
    [TestCase("", "")]
    [TestCase("f", "my")]
    [TestCase("fo", "mzxq")]
    [TestCase("foo", "mzxw6")]
    [TestCase("foob", "mzxw6yq")]
    [TestCase("fooba", "mzxw6ytb")]
    [TestCase("foobar", "mzxw6ytboi")]
    public void EncodeDecode_Rfc4648Vectors(string plain, string text)
    {
        var bytes = System.Text.Encoding.ASCII.GetBytes(plain);
        Assert.That(Base32.EncodeLower(bytes), Is.EqualTo(text));
        Assert.That(Base32.TryDecodeLower(text, out var decoded), Is.True);
        Assert.That(decoded, Is.EqualTo(bytes));
    }

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public bool EncodeDecode_RoundTripsAnyBytes(byte[] data)
    {
        var text = Base32.EncodeLower(data);
        return text.Length == (data.Length * 8 + 4) / 5
               && text.All(c => c is (>= 'a' and <= 'z') or (>= '2' and <= '7'))
               && Base32.TryDecodeLower(text, out var back) && back.AsSpan().SequenceEqual(data);
    }

    [TestCase("MZXW6")]   // upper case is a different multibase ('B')
    [TestCase("mzxw6=")]  // no padding in multibase
    [TestCase("mzxw1")]
    [TestCase("mzxw8")]
    [TestCase("mz w6")]
    [TestCase("m")]       // 5 bits: not a whole byte
    [TestCase("mzx")]     // 15 bits: a dangling character
    [TestCase("mzxw6y")]  // 30 bits: a dangling character
    [TestCase("mz")]      // "f" is "my": 'z' leaves non-zero padding bits
    [TestCase("mzxr")]    // "fo" is "mzxq": non-zero padding bits
    public void Decode_InvalidCharacterOrLength_IsRejected(string text)
    {
        Assert.That(Base32.TryDecodeLower(text, out var bytes), Is.False);
        Assert.That(bytes, Is.Empty);
    }

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public bool Decode_AnyString_NeverThrowsAndIsCanonicalWhenAccepted(string? text)
    {
        text ??= "";
        return !Base32.TryDecodeLower(text, out var bytes) || Base32.EncodeLower(bytes) == text;
    }

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public Property Decode_StringsOverTheAlphabet_AcceptedExactlyWhenCanonical() =>
        Prop.ForAll(
            Gen.Elements("abcdefghijklmnopqrstuvwxyz234567".ToCharArray()).ArrayOf().Select(cs => new string(cs)).ToArbitrary(),
            text =>
            {
                const string alphabet = "abcdefghijklmnopqrstuvwxyz234567";
                var validLength = (text.Length % 8) is 0 or 2 or 4 or 5 or 7;
                var padBits = text.Length * 5 % 8;
                var zeroPadding = text.Length == 0 || (alphabet.IndexOf(text[^1]) & ((1 << padBits) - 1)) == 0;
                var accepted = Base32.TryDecodeLower(text, out var bytes);
                return accepted == (validLength && zeroPadding)
                       && (!accepted || (Base32.EncodeLower(bytes) == text && bytes.Length == text.Length * 5 / 8));
            });
}
