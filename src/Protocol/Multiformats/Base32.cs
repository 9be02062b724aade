namespace Potluck.Protocol.Multiformats;

/// <summary>RFC 4648 base32 without padding, lower case: multibase prefix 'b'.</summary>
public static class Base32
{
    private const string Alphabet = "abcdefghijklmnopqrstuvwxyz234567";

    public static string EncodeLower(ReadOnlySpan<byte> data)
    {
        var chars = new char[(data.Length * 8 + 4) / 5];
        int buffer = 0, bits = 0, o = 0;
        foreach (var b in data)
        {
            buffer = (buffer << 8) | b;
            bits += 8;
            while (bits >= 5)
            {
                chars[o++] = Alphabet[(buffer >> (bits - 5)) & 31];
                bits -= 5;
            }
        }
        if (bits > 0)
        {
            chars[o++] = Alphabet[(buffer << (5 - bits)) & 31];
        }
        return new string(chars, 0, o);
    }

    public static bool TryDecodeLower(ReadOnlySpan<char> text, out byte[] bytes)
    {
        bytes = [];
        if (text.Length > 1024)
        {
            return false;
        }
        var output = new byte[text.Length * 5 / 8];
        int buffer = 0, bits = 0, o = 0;
        foreach (var c in text)
        {
            int v = c switch
            {
                >= 'a' and <= 'z' => c - 'a',
                >= '2' and <= '7' => c - '2' + 26,
                _ => -1,
            };
            if (v < 0)
            {
                return false;
            }
            buffer = (buffer << 5) | v;
            bits += 5;
            if (bits >= 8)
            {
                output[o++] = (byte)(buffer >> (bits - 8));
                bits -= 8;
            }
        }
        if (bits >= 5 || (buffer & ((1 << bits) - 1)) != 0)
        {
            return false; // trailing bits must be zero padding
        }
        bytes = output;
        return true;
    }
}
