using System.Text;
using FsCheck.NUnit;
using Potluck.Protocol.Pnet;
using Property = FsCheck.NUnit.PropertyAttribute;

namespace Potluck.Protocol.Tests.Pnet;

public class SwarmKeyTests
{
    private const string Hex = "0123456789abcdef0123456789abcdef00112233445566778899aabbccddeeff";
    private static readonly byte[] KeyBytes = Convert.FromHexString(Hex);

    private static string ErrorFor(string text)
    {
        Assert.That(SwarmKey.TryParse(text, out var key, out var error), Is.False);
        Assert.That(key, Is.Null);
        Assert.That(error, Does.StartWith("swarm key: "));
        Assert.That(error, Does.Not.Contain(Hex[..16]), "errors never echo key material");
        return error!;
    }

    [Test]
    public void Parse_Base16File_GivesTheKey()
    {
        var key = SwarmKey.Parse($"/key/swarm/psk/1.0.0/\n/base16/\n{Hex}\n");
        Assert.That(key, Is.EqualTo(SwarmKey.FromBytes(KeyBytes)));
    }

    [Test]
    public void Parse_CrLfUppercaseAndTrailingWhitespace_AreTolerated()
    {
        var key = SwarmKey.Parse($"\uFEFF/key/swarm/psk/1.0.0/ \r\n/base16/\r\n{Hex.ToUpperInvariant()}  \r\n\r\n");
        Assert.That(key, Is.EqualTo(SwarmKey.FromBytes(KeyBytes)));
        Assert.That(SwarmKey.Parse($"/key/swarm/psk/1.0.0/\n/base16/\n{Hex}"), Is.EqualTo(key), "no final newline");
    }

    [Test]
    public void Parse_Base64File_GivesTheKey()
    {
        var key = SwarmKey.Parse($"/key/swarm/psk/1.0.0/\n/base64/\n{Convert.ToBase64String(KeyBytes)}\n");
        Assert.That(key, Is.EqualTo(SwarmKey.FromBytes(KeyBytes)));
    }

    [Test]
    public void Parse_BinaryFileBytes_GivesTheKey()
    {
        var file = "/key/swarm/psk/1.0.0/\n/bin/\n"u8.ToArray().Concat(KeyBytes).Concat("\n"u8.ToArray()).ToArray();
        Assert.That(SwarmKey.Parse(file), Is.EqualTo(SwarmKey.FromBytes(KeyBytes)));
    }

    [Test]
    public void ToFileText_ParsesBackToTheSameKey_AndIsTheCommonForm()
    {
        var key = SwarmKey.Generate();
        var text = key.ToFileText();
        Assert.That(text, Does.Match("^/key/swarm/psk/1\\.0\\.0/\n/base16/\n[0-9a-f]{64}\n$"));
        Assert.That(SwarmKey.Parse(text), Is.EqualTo(key));
        Assert.That(SwarmKey.Generate(), Is.Not.EqualTo(key));
    }

    [Test]
    public void ToStringAndFingerprint_NeverShowTheKey()
    {
        var key = SwarmKey.FromBytes(KeyBytes);
        Assert.That(key.ToString(), Does.Not.Contain(Hex[..8]).IgnoreCase);
        Assert.That(key.ToString(), Does.Contain(key.Fingerprint));
        Assert.That(key.Fingerprint, Does.Match("^[0-9a-f]{32}$"));
        Assert.That(key.Fingerprint, Is.Not.EqualTo(Hex[..32]));
    }

    [Test]
    public void Fingerprint_IsStablePerKey_AndDiffersBetweenKeys()
    {
        Assert.That(SwarmKey.FromBytes(KeyBytes).Fingerprint, Is.EqualTo(SwarmKey.FromBytes(KeyBytes).Fingerprint));
        var other = (byte[])KeyBytes.Clone();
        other[31] ^= 1;
        Assert.That(SwarmKey.FromBytes(other).Fingerprint, Is.Not.EqualTo(SwarmKey.FromBytes(KeyBytes).Fingerprint));
    }

    [Test]
    public void Parse_WrongHeader_SaysWhatTheFirstLineMustBe()
    {
        var error = ErrorFor($"key/swarm/psk/1.0.0\n/base16/\n{Hex}\n");
        Assert.That(error, Does.Contain("first line must be exactly \"/key/swarm/psk/1.0.0/\""));
    }

    [Test]
    public void Parse_OtherKeyType_NamesIt()
    {
        var error = ErrorFor($"/key/swarm/psk/2.0.0/\n/base16/\n{Hex}\n");
        Assert.That(error, Does.Contain("unsupported key type \"/key/swarm/psk/2.0.0/\""));
    }

    [Test]
    public void Parse_BareKey_SaysToAddTheHeaderLines()
    {
        Assert.That(ErrorFor(Hex + "\n"), Does.Contain("add the header lines"));
        Assert.That(ErrorFor(Hex), Does.Contain("add the header lines"));
    }

    [Test]
    public void Parse_UnknownEncoding_ListsTheKnownOnes()
    {
        var error = ErrorFor($"/key/swarm/psk/1.0.0/\n/base58/\n{Hex}\n");
        Assert.That(error, Does.Contain("\"/base58/\"").And.Contain("/base16/").And.Contain("/base64/").And.Contain("/bin/"));
    }

    [Test]
    public void Parse_NonHexCharacter_SaysWhere()
    {
        var bad = Hex[..10] + "g" + Hex[11..];
        Assert.That(ErrorFor($"/key/swarm/psk/1.0.0/\n/base16/\n{bad}\n"), Does.Contain("character 11").And.Contain("not hexadecimal"));
    }

    [Test]
    public void Parse_WrongHexLength_SaysHowManyAreNeeded()
    {
        Assert.That(ErrorFor($"/key/swarm/psk/1.0.0/\n/base16/\n{Hex[..62]}\n"), Does.Contain("must be 64 hexadecimal characters").And.Contain("found 62"));
        Assert.That(ErrorFor($"/key/swarm/psk/1.0.0/\n/base16/\n{Hex}00\n"), Does.Contain("found 66"));
    }

    [Test]
    public void Parse_MissingKeyOrExtraLines_AreReported()
    {
        Assert.That(ErrorFor("/key/swarm/psk/1.0.0/\n/base16/\n"), Does.Contain("missing"));
        Assert.That(ErrorFor("/key/swarm/psk/1.0.0/\n"), Does.Contain("second line must be the encoding"));
        Assert.That(ErrorFor($"/key/swarm/psk/1.0.0/\n/base16/\n{Hex}\nextra\n"), Does.Contain("unexpected content after the key"));
    }

    [Test]
    public void Parse_Base64OfWrongLength_SaysTheSizeNeeded()
    {
        var error = ErrorFor($"/key/swarm/psk/1.0.0/\n/base64/\n{Convert.ToBase64String(new byte[16])}\n");
        Assert.That(error, Does.Contain("decodes to 16 bytes").And.Contain("32 bytes"));
        Assert.That(ErrorFor("/key/swarm/psk/1.0.0/\n/base64/\n!!!!\n"), Does.Contain("not valid base64"));
    }

    [Test]
    public void Parse_ShortBinaryKey_IsRejected()
    {
        var file = "/key/swarm/psk/1.0.0/\n/bin/\n"u8.ToArray().Concat(new byte[20]).ToArray();
        Assert.That(SwarmKey.TryParse(file, out _, out var error), Is.False);
        Assert.That(error, Does.Contain("needs 32 bytes").And.Contain("found 20"));
    }

    [Test]
    public void Parse_OversizedInput_IsRejectedWithoutParsing()
    {
        var huge = $"/key/swarm/psk/1.0.0/\n/base16/\n{Hex}\n" + new string(' ', SwarmKey.MaxFileBytes);
        Assert.That(ErrorFor(huge), Does.Contain("more than the 4096-byte limit"));
    }

    [Test]
    public void Parse_Invalid_ThrowsFormatExceptionWithTheSameMessage()
    {
        var ex = Assert.Throws<FormatException>(() => SwarmKey.Parse("nonsense"));
        Assert.That(ex!.Message, Does.StartWith("swarm key: "));
    }

    [Test]
    public void ReadFile_ReadsAKeyFile_AndNamesTheFileInErrors()
    {
        var path = Path.Combine(Path.GetTempPath(), $"potluck-swarm-{Guid.NewGuid():N}.key");
        try
        {
            var key = SwarmKey.Generate();
            File.WriteAllText(path, key.ToFileText());
            Assert.That(SwarmKey.ReadFile(path), Is.EqualTo(key));

            File.WriteAllText(path, "/key/swarm/psk/1.0.0/\n/base16/\nabc\n");
            var ex = Assert.Throws<FormatException>(() => SwarmKey.ReadFile(path));
            Assert.That(ex!.Message, Does.StartWith(path));

            File.WriteAllBytes(path, new byte[SwarmKey.MaxFileBytes * 4]);
            Assert.That(() => SwarmKey.ReadFile(path), Throws.TypeOf<FormatException>().With.Message.Contain("limit"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void FromBytes_WrongLength_Throws()
    {
        Assert.Throws<ArgumentException>(() => SwarmKey.FromBytes(new byte[31]));
    }

    [Property]
    public bool TryParse_AnyBytes_ReturnsAKeyOrAnError(byte[] bytes)
    {
        var ok = SwarmKey.TryParse(bytes, out var key, out var error);
        return ok ? key is not null && error is null : key is null && error!.StartsWith("swarm key: ", StringComparison.Ordinal);
    }

    [Property]
    public bool TryParse_MutatedValidFile_ReturnsAKeyOrAnError(byte[] noise, int position)
    {
        var file = Encoding.ASCII.GetBytes($"/key/swarm/psk/1.0.0/\n/base16/\n{Hex}\n").ToList();
        file.InsertRange((int)((uint)position % (file.Count + 1)), noise ?? []);
        var ok = SwarmKey.TryParse(file.ToArray(), out var key, out var error);
        return ok ? key is not null : error is not null;
    }
}
