using System.Security.Cryptography;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Crypto.Signers;

namespace Potluck.Protocol.Identity;

/// <summary>
/// A node's own Ed25519 identity key. Encoded as libp2p's <c>PrivateKey</c> protobuf with the 64-byte
/// private‖public data the spec prescribes for Ed25519 (https://github.com/libp2p/specs/blob/master/peer-ids/peer-ids.md).
/// Also reads the legacy 96-byte private‖public‖public form and a bare 32-byte seed. Never logged.
/// </summary>
public sealed class PrivateKey : ISigner
{
    private readonly Ed25519PrivateKeyParameters _key;
    private byte[]? _sodium; // libsodium's 64-byte seed‖public secret key, made on first sign
    private int _sodiumFailed;

    private PrivateKey(Ed25519PrivateKeyParameters key)
    {
        _key = key;
        PublicKey = PublicKey.FromEd25519(key.GeneratePublicKey().GetEncoded());
        PeerId = PeerId.FromPublicKey(PublicKey);
    }

    public PublicKey PublicKey { get; }

    public PeerId PeerId { get; }

    public static PrivateKey Generate()
    {
        Span<byte> seed = stackalloc byte[32];
        RandomNumberGenerator.Fill(seed);
        var key = FromSeed(seed);
        seed.Clear();
        return key;
    }

    /// <summary>A key from a 32-byte seed: for deterministic tests and simulations.</summary>
    public static PrivateKey FromSeed(ReadOnlySpan<byte> seed)
    {
        if (seed.Length != 32)
        {
            throw new ArgumentException("an Ed25519 seed is 32 bytes", nameof(seed));
        }
        return new PrivateKey(new Ed25519PrivateKeyParameters(seed));
    }

    /// <summary>A key derived from a seeded <see cref="Random"/>: for simulations only.</summary>
    public static PrivateKey FromRandom(Random random)
    {
        Span<byte> seed = stackalloc byte[32];
        random.NextBytes(seed);
        return FromSeed(seed);
    }

    /// <summary>
    /// An Ed25519 signature (RFC 8032) over <paramref name="message"/>: through libsodium when available
    /// (<see cref="SodiumEd25519.Preferred"/>), else (and whenever it fails) BouncyCastle. Both give the same bytes
    /// (Ed25519 is deterministic).
    /// </summary>
    public byte[] Sign(ReadOnlySpan<byte> message) =>
        (SodiumEd25519.Preferred ? SignWithSodium(message) : null) ?? SignWithBouncyCastle(message);

    /// <summary>The libsodium path alone; null when libsodium is unavailable or failed.</summary>
    internal byte[]? SignWithSodium(ReadOnlySpan<byte> message)
    {
        var secretKey = SodiumSecretKey();
        if (secretKey is null)
        {
            return null;
        }
        var signature = new byte[SodiumEd25519.SignatureLength];
        return SodiumEd25519.TrySign(secretKey, message, signature) ? signature : null;
    }

    private byte[]? SodiumSecretKey()
    {
        var secretKey = Volatile.Read(ref _sodium);
        if (secretKey is not null || Volatile.Read(ref _sodiumFailed) != 0 || !SodiumEd25519.IsAvailable)
        {
            return secretKey;
        }
        Span<byte> seed = stackalloc byte[32];
        Span<byte> publicKey = stackalloc byte[32];
        _key.Encode(seed);
        var created = new byte[SodiumEd25519.SecretKeyLength];
        var ok = SodiumEd25519.TryCreateSecretKey(seed, created, publicKey) && publicKey.SequenceEqual(PublicKey.Data);
        CryptographicOperations.ZeroMemory(seed);
        if (!ok)
        {
            CryptographicOperations.ZeroMemory(created);
            Volatile.Write(ref _sodiumFailed, 1);
            return null;
        }
        // Another thread may have made the same bytes first: either array is as good.
        return Interlocked.CompareExchange(ref _sodium, created, null) ?? created;
    }

    /// <summary>The BouncyCastle path alone: the reference the libsodium path is tested against.</summary>
    internal byte[] SignWithBouncyCastle(ReadOnlySpan<byte> message)
    {
        var signer = new Ed25519Signer();
        signer.Init(true, _key);
        signer.BlockUpdate(message);
        return signer.GenerateSignature();
    }

    public byte[] ToProtobuf()
    {
        var data = new byte[64];
        _key.Encode(data, 0);
        PublicKey.Data.CopyTo(data, 32);
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
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
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
