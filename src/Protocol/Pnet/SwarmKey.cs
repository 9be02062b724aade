using System.Diagnostics.CodeAnalysis;
using System.Security.Cryptography;
using System.Text;
using Org.BouncyCastle.Crypto.Digests;
using Org.BouncyCastle.Crypto.Engines;
using Org.BouncyCastle.Crypto.Parameters;

namespace Potluck.Protocol.Pnet;

/// <summary>
/// A libp2p private-network pre-shared key, PSK v1
/// (https://github.com/libp2p/specs/blob/master/pnet/Private-Networks-PSK-V1.md), in the IPFS <c>swarm.key</c>
/// file format: a header line <c>/key/swarm/psk/1.0.0/</c>, an encoding line (<c>/base16/</c>, <c>/base64/</c> or
/// <c>/bin/</c>, as go-libp2p accepts) and the 32-byte key. Line ends may be <c>\r\n</c> and trailing whitespace is
/// ignored; unlike go-libp2p, anything else after the key is rejected rather than silently ignored.
/// The key never appears in <see cref="ToString"/>: log <see cref="Fingerprint"/> instead.
/// </summary>
public sealed class SwarmKey : IEquatable<SwarmKey>
{
    /// <summary>PSK v1 keys are 32 bytes.</summary>
    public const int KeySize = 32;

    /// <summary>Files longer than this are refused unread: a swarm key file is about 100 bytes.</summary>
    public const int MaxFileBytes = 4096;

    /// <summary>The first line of a PSK v1 swarm key file.</summary>
    public const string Header = "/key/swarm/psk/1.0.0/";

    /// <summary>Encoding line: the key as 64 hexadecimal characters (what generators write).</summary>
    public const string Base16 = "/base16/";

    /// <summary>Encoding line: the key as standard base64 with padding.</summary>
    public const string Base64 = "/base64/";

    /// <summary>Encoding line: the key as 32 raw bytes (parse from bytes, not from a string).</summary>
    public const string Binary = "/bin/";

    private const string FormatHelp =
        "a swarm.key file has three lines: \"/key/swarm/psk/1.0.0/\", then \"/base16/\", then 64 hexadecimal characters";

    private readonly byte[] _key;

    private SwarmKey(byte[] key)
    {
        _key = key;
        Fingerprint = ComputeFingerprint(key);
    }

    /// <summary>
    /// A non-secret 16-byte identifier of the key, in hexadecimal, computed as go-libp2p does (Salsa20 keystream under
    /// the key with nonce "finprint", then SHAKE-128), so it can be compared with what go-libp2p nodes log.
    /// </summary>
    public string Fingerprint { get; }

    /// <summary>The raw key, for the cipher only.</summary>
    internal byte[] KeyBytes => _key;

    /// <summary>A fresh random key from the operating system's CSPRNG.</summary>
    public static SwarmKey Generate()
    {
        var key = new byte[KeySize];
        RandomNumberGenerator.Fill(key);
        return new SwarmKey(key);
    }

    /// <summary>A key from its 32 raw bytes.</summary>
    public static SwarmKey FromBytes(ReadOnlySpan<byte> key)
    {
        if (key.Length != KeySize)
        {
            throw new ArgumentException($"a swarm key is {KeySize} bytes, not {key.Length}", nameof(key));
        }
        return new SwarmKey(key.ToArray());
    }

    /// <summary>Parses the text of a swarm.key file; throws <see cref="FormatException"/> saying what to fix.</summary>
    public static SwarmKey Parse(string text) =>
        TryParse(text, out var key, out var error) ? key : throw new FormatException(error);

    /// <summary>Parses the bytes of a swarm.key file; throws <see cref="FormatException"/> saying what to fix.</summary>
    public static SwarmKey Parse(ReadOnlySpan<byte> file) =>
        TryParse(file, out var key, out var error) ? key : throw new FormatException(error);

    /// <summary>Parses the text of a swarm.key file; on failure <paramref name="error"/> says what to fix.</summary>
    public static bool TryParse(string text, [NotNullWhen(true)] out SwarmKey? key, [NotNullWhen(false)] out string? error)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.Length > MaxFileBytes)
        {
            key = null;
            error = TooLong(text.Length);
            return false;
        }
        return TryParse(Encoding.UTF8.GetBytes(text), out key, out error);
    }

    /// <summary>Parses the bytes of a swarm.key file; on failure <paramref name="error"/> says what to fix.</summary>
    public static bool TryParse(ReadOnlySpan<byte> file, [NotNullWhen(true)] out SwarmKey? key, [NotNullWhen(false)] out string? error)
    {
        key = null;
        if (file.Length > MaxFileBytes)
        {
            error = TooLong(file.Length);
            return false;
        }
        if (file.StartsWith("\uFEFF"u8))
        {
            file = file[3..];
        }

        if (!TryTakeLine(ref file, out var header))
        {
            error = LooksLikeBareKey(header)
                ? $"swarm key: the file holds only a key; add the header lines before it ({FormatHelp})"
                : $"swarm key: the file has no line break after its first line; {FormatHelp}";
            return false;
        }
        if (!header.SequenceEqual("/key/swarm/psk/1.0.0/"u8))
        {
            error = LooksLikeBareKey(header)
                ? $"swarm key: the file starts with a key; add the header lines before it ({FormatHelp})"
                : header.StartsWith("/key/"u8) && header.Length <= 64
                    ? $"swarm key: unsupported key type \"{Ascii(header)}\"; only \"{Header}\" (PSK v1) is supported"
                    : $"swarm key: the first line must be exactly \"{Header}\"; {FormatHelp}";
            return false;
        }

        if (!TryTakeLine(ref file, out var encoding))
        {
            error = $"swarm key: the second line must be the encoding, \"{Base16}\", \"{Base64}\" or \"{Binary}\", followed by a line break";
            return false;
        }

        var bytes = new byte[KeySize];
        if (encoding.SequenceEqual("/base16/"u8))
        {
            if (!TryDecodeBase16(Trim(file), bytes, out error))
            {
                return false;
            }
        }
        else if (encoding.SequenceEqual("/base64/"u8))
        {
            if (!TryDecodeBase64(Trim(file), bytes, out error))
            {
                return false;
            }
        }
        else if (encoding.SequenceEqual("/bin/"u8))
        {
            if (file.Length < KeySize)
            {
                error = $"swarm key: a {Binary} key needs {KeySize} bytes after the encoding line, found {file.Length}";
                return false;
            }
            if (!Trim(file[KeySize..]).IsEmpty)
            {
                error = $"swarm key: unexpected bytes after the {KeySize}-byte {Binary} key";
                return false;
            }
            file[..KeySize].CopyTo(bytes);
        }
        else
        {
            var shown = encoding.Length <= 16 && encoding.StartsWith("/"u8) ? $" \"{Ascii(encoding)}\"" : "";
            error = $"swarm key: unknown encoding line{shown}; use \"{Base16}\", \"{Base64}\" or \"{Binary}\"";
            return false;
        }

        key = new SwarmKey(bytes);
        error = null;
        return true;
    }

    /// <summary>Reads and parses a swarm.key file, reading at most <see cref="MaxFileBytes"/> + 1 bytes of it.</summary>
    public static SwarmKey ReadFile(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1);
        var buffer = new byte[MaxFileBytes + 1];
        var total = 0;
        int n;
        while (total < buffer.Length && (n = stream.Read(buffer, total, buffer.Length - total)) > 0)
        {
            total += n;
        }
        try
        {
            if (!TryParse(buffer.AsSpan(0, total), out var key, out var error))
            {
                throw new FormatException($"{path}: {error}");
            }
            return key;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(buffer);
        }
    }

    /// <summary>The file text in the common form (<c>/base16/</c>, lowercase, one key line, trailing newline).</summary>
    public string ToFileText() => $"{Header}\n{Base16}\n{Convert.ToHexStringLower(_key)}\n";

    /// <summary>Names the key by its <see cref="Fingerprint"/> only.</summary>
    public override string ToString() => $"SwarmKey(fingerprint {Fingerprint})";

    public bool Equals(SwarmKey? other) => other is not null && CryptographicOperations.FixedTimeEquals(_key, other._key);

    public override bool Equals(object? obj) => Equals(obj as SwarmKey);

    public override int GetHashCode() => StringComparer.Ordinal.GetHashCode(Fingerprint);

    private static string ComputeFingerprint(byte[] key)
    {
        var salsa = new Salsa20Engine();
        salsa.Init(true, new ParametersWithIV(new KeyParameter(key), "finprint"u8.ToArray()));
        Span<byte> stream = stackalloc byte[64];
        salsa.ProcessBytes(stackalloc byte[64], stream);
        var shake = new ShakeDigest(128);
        shake.BlockUpdate(stream);
        Span<byte> digest = stackalloc byte[16];
        shake.OutputFinal(digest);
        CryptographicOperations.ZeroMemory(stream);
        return Convert.ToHexStringLower(digest);
    }

    private static bool TryDecodeBase16(ReadOnlySpan<byte> text, Span<byte> key, [NotNullWhen(false)] out string? error)
    {
        error = null;
        if (text.IsEmpty)
        {
            error = $"swarm key: the key line after \"{Base16}\" is missing";
            return false;
        }
        for (var i = 0; i < text.Length; i++)
        {
            if (!char.IsAsciiHexDigit((char)text[i]))
            {
                error = IsWhiteSpace(text[i])
                    ? $"swarm key: unexpected content after the key; {FormatHelp}"
                    : $"swarm key: character {i + 1} of the key line is not hexadecimal; use only 0-9 and a-f";
                return false;
            }
        }
        if (text.Length != 2 * KeySize)
        {
            error = $"swarm key: the key line must be {2 * KeySize} hexadecimal characters ({KeySize} bytes), found {text.Length}";
            return false;
        }
        Span<char> chars = stackalloc char[2 * KeySize];
        for (var i = 0; i < chars.Length; i++)
        {
            chars[i] = (char)text[i];
        }
        Convert.FromHexString(chars, key, out _, out _);
        chars.Clear();
        return true;
    }

    private static bool TryDecodeBase64(ReadOnlySpan<byte> text, Span<byte> key, [NotNullWhen(false)] out string? error)
    {
        error = null;
        if (text.IsEmpty)
        {
            error = $"swarm key: the key line after \"{Base64}\" is missing";
            return false;
        }
        Span<byte> decoded = stackalloc byte[(MaxFileBytes / 4 * 3) + 3];
        var status = System.Buffers.Text.Base64.DecodeFromUtf8(text, decoded, out var consumed, out var written);
        if (status != System.Buffers.OperationStatus.Done || consumed != text.Length)
        {
            CryptographicOperations.ZeroMemory(decoded);
            error = $"swarm key: the key line is not valid base64 (standard alphabet, with '=' padding, on one line)";
            return false;
        }
        if (written != KeySize)
        {
            CryptographicOperations.ZeroMemory(decoded);
            error = $"swarm key: the base64 key decodes to {written} bytes; it must be {KeySize} bytes (44 base64 characters)";
            return false;
        }
        decoded[..KeySize].CopyTo(key);
        CryptographicOperations.ZeroMemory(decoded);
        return true;
    }

    /// <summary>Takes the next line without its line end and trailing whitespace; false when there is no '\n'.</summary>
    private static bool TryTakeLine(ref ReadOnlySpan<byte> rest, out ReadOnlySpan<byte> line)
    {
        var end = rest.IndexOf((byte)'\n');
        if (end < 0)
        {
            line = Trim(rest);
            return false;
        }
        line = TrimEnd(rest[..end]);
        rest = rest[(end + 1)..];
        return true;
    }

    private static bool LooksLikeBareKey(ReadOnlySpan<byte> line)
    {
        if (line.Length != 2 * KeySize)
        {
            return false;
        }
        foreach (var b in line)
        {
            if (!char.IsAsciiHexDigit((char)b))
            {
                return false;
            }
        }
        return true;
    }

    private static ReadOnlySpan<byte> Trim(ReadOnlySpan<byte> s)
    {
        var start = 0;
        while (start < s.Length && IsWhiteSpace(s[start]))
        {
            start++;
        }
        return TrimEnd(s[start..]);
    }

    private static ReadOnlySpan<byte> TrimEnd(ReadOnlySpan<byte> s)
    {
        var end = s.Length;
        while (end > 0 && IsWhiteSpace(s[end - 1]))
        {
            end--;
        }
        return s[..end];
    }

    private static bool IsWhiteSpace(byte b) => b is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n';

    private static string Ascii(ReadOnlySpan<byte> s)
    {
        var chars = new char[s.Length];
        for (var i = 0; i < s.Length; i++)
        {
            chars[i] = s[i] is >= 0x20 and < 0x7F ? (char)s[i] : '?';
        }
        return new string(chars);
    }

    private static string TooLong(int length) =>
        $"swarm key: the file is {length} bytes, more than the {MaxFileBytes}-byte limit; a swarm.key file is about 100 bytes (is this the right file?)";
}
