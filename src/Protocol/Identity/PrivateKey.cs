using System.Security.Cryptography;
using NSec.Cryptography;
using NSecKey = NSec.Cryptography.Key;

namespace Potluck.Protocol.Identity;

/// <summary>
/// A node's own Ed25519 identity key. Encoded as libp2p's <c>PrivateKey</c> protobuf with the 64-byte
/// private‖public data the spec prescribes for Ed25519 (https://github.com/libp2p/specs/blob/master/peer-ids/peer-ids.md).
/// Also reads the legacy 96-byte private‖public‖public form and a bare 32-byte seed. Never logged.
/// Signing is NSec's Ed25519 (RFC 8032, pure), that is the libsodium the application ships (see <see cref="PublicKey"/>):
/// the secret key lives in libsodium's guarded memory, made once per key. Ed25519 is deterministic, so a signature is
/// the same bytes whoever computes it.
/// </summary>
public sealed class PrivateKey : ISigner
{
    private const int SeedLength = 32;
    private const int SignatureLength = 64;

    private readonly NSecKey _key;

    private PrivateKey(NSecKey key)
    {
        _key = key;
        PublicKey = PublicKey.FromEd25519(key.PublicKey);
        PeerId = PeerId.FromPublicKey(PublicKey);
    }

    public PublicKey PublicKey { get; }

    public PeerId PeerId { get; }

    public static PrivateKey Generate()
    {
        Span<byte> seed = stackalloc byte[SeedLength];
        RandomNumberGenerator.Fill(seed);
        var key = FromSeed(seed);
        CryptographicOperations.ZeroMemory(seed);
        return key;
    }

    /// <summary>A key from a 32-byte seed: for deterministic tests and simulations.</summary>
    public static PrivateKey FromSeed(ReadOnlySpan<byte> seed)
    {
        if (seed.Length != SeedLength)
        {
            throw new ArgumentException("an Ed25519 seed is 32 bytes", nameof(seed));
        }
        // Exportable so that ToProtobuf can write the seed back out (the key file).
        var parameters = new KeyCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport };
        return new PrivateKey(NSecKey.Import(SignatureAlgorithm.Ed25519, seed, KeyBlobFormat.RawPrivateKey, parameters));
    }

    /// <summary>A key derived from a seeded <see cref="Random"/>: for simulations only.</summary>
    public static PrivateKey FromRandom(Random random)
    {
        Span<byte> seed = stackalloc byte[SeedLength];
        random.NextBytes(seed);
        return FromSeed(seed);
    }

    /// <summary>An Ed25519 signature (RFC 8032) over <paramref name="message"/>. Safe to call from several threads at once.</summary>
    public byte[] Sign(ReadOnlySpan<byte> message)
    {
        var signature = new byte[SignatureLength];
        SignatureAlgorithm.Ed25519.Sign(_key, message, signature);
        return signature;
    }

    public byte[] ToProtobuf()
    {
        var data = new byte[SeedLength + 32];
        if (!_key.TryExport(KeyBlobFormat.RawPrivateKey, data, out var written) || written != SeedLength)
        {
            throw new CryptographicException("the Ed25519 seed could not be exported");
        }
        PublicKey.Data.CopyTo(data, SeedLength);
        var encoded = KeyProtobuf.Encode(KeyType.Ed25519, data);
        CryptographicOperations.ZeroMemory(data);
        return encoded;
    }

    /// <summary>Largest key file or protobuf looked at.</summary>
    public const int MaxEncodedLength = 256;

    /// <summary>
    /// Reads an Ed25519 <c>PrivateKey</c> protobuf. The data is seed‖public (64 bytes, preferred), seed‖public‖public
    /// (96 bytes, legacy) or a bare seed (32 bytes); every public half present must match the seed.
    /// </summary>
    public static bool TryFromProtobuf(ReadOnlySpan<byte> encoded, out PrivateKey key)
    {
        key = null!;
        if (encoded.Length > MaxEncodedLength || !KeyProtobuf.TryDecode(encoded, out var type, out var data) || type != KeyType.Ed25519)
        {
            return false;
        }
        if (data.Length is not (32 or 64 or 96))
        {
            return false;
        }
        var candidate = FromSeed(data[..32]);
        for (var offset = 32; offset < data.Length; offset += 32)
        {
            if (!candidate.PublicKey.Data.AsSpan().SequenceEqual(data.Slice(offset, 32)))
            {
                return false;
            }
        }
        key = candidate;
        return true;
    }

    public static PrivateKey FromProtobuf(ReadOnlySpan<byte> encoded) =>
        TryFromProtobuf(encoded, out var key) ? key : throw new FormatException("invalid or unsupported libp2p PrivateKey protobuf (Ed25519 expected)");

    /// <summary>
    /// Loads the key from <paramref name="path"/>, creating it (mode 0600 on Unix) if it does not exist. The new key
    /// is written to a fresh temporary file and moved into place, so a crash never leaves a half-written key and a
    /// concurrent creator's key wins rather than being overwritten. A file that is not an Ed25519 <c>PrivateKey</c>
    /// protobuf gives <see cref="InvalidDataException"/>; it is never replaced.
    /// </summary>
    public static PrivateKey LoadOrCreate(string path)
    {
        if (File.Exists(path))
        {
            return Load(path);
        }
        Runtime.OwnerOnly.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var key = Generate();
        // CreateNew on a unique name: UnixCreateMode only applies to a file we create, never to a leftover one.
        var tmp = $"{path}.{Convert.ToHexString(RandomNumberGenerator.GetBytes(8))}.tmp";
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }
        try
        {
            using (var fs = new FileStream(tmp, options))
            {
                fs.Write(key.ToProtobuf());
                fs.Flush(true);
            }
            File.Move(tmp, path, overwrite: false);
            return key;
        }
        catch (IOException) when (File.Exists(path))
        {
            return Load(path); // another process created it first
        }
        finally
        {
            File.Delete(tmp);
        }
    }

    private static PrivateKey Load(string path)
    {
        byte[] bytes;
        using (var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            if (fs.Length > MaxEncodedLength)
            {
                throw new InvalidDataException(
                    $"{path} is {fs.Length} bytes, too long for a libp2p Ed25519 private key; move it away to create a new identity");
            }
            bytes = new byte[fs.Length];
            fs.ReadExactly(bytes);
        }
        try
        {
            return TryFromProtobuf(bytes, out var existing)
                ? existing
                : throw new InvalidDataException(
                    $"{path} is not a libp2p Ed25519 private key (a PrivateKey protobuf of type Ed25519); move it away to create a new identity");
        }
        finally
        {
            CryptographicOperations.ZeroMemory(bytes);
        }
    }
}
