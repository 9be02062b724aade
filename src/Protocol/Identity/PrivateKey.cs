using System.Security.Cryptography;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Crypto.Signers;

namespace Potluck.Protocol.Identity;

/// <summary>
/// A node's own Ed25519 identity key. Encoded as libp2p's <c>PrivateKey</c> protobuf with the 64-byte
/// private‖public data the spec prescribes for Ed25519. Never logged.
/// </summary>
public sealed class PrivateKey
{
    private readonly Ed25519PrivateKeyParameters _key;

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

    public byte[] Sign(ReadOnlySpan<byte> message)
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

    public static bool TryFromProtobuf(ReadOnlySpan<byte> encoded, out PrivateKey key)
    {
        key = null!;
        if (encoded.Length > 256 || !KeyProtobuf.TryDecode(encoded, out var type, out var data) || type != KeyType.Ed25519)
        {
            return false;
        }
        if (data.Length != 64 && data.Length != 32)
        {
            return false;
        }
        key = FromSeed(data[..32]);
        return data.Length == 32 || key.PublicKey.Data.AsSpan().SequenceEqual(data[32..]);
    }

    public static PrivateKey FromProtobuf(ReadOnlySpan<byte> encoded) =>
        TryFromProtobuf(encoded, out var key) ? key : throw new FormatException("invalid or unsupported libp2p PrivateKey protobuf (Ed25519 expected)");

    /// <summary>Loads the key from <paramref name="path"/>, creating it (mode 0600) if it does not exist.</summary>
    public static PrivateKey LoadOrCreate(string path)
    {
        if (File.Exists(path))
        {
            var bytes = File.ReadAllBytes(path);
            return TryFromProtobuf(bytes, out var existing)
                ? existing
                : throw new InvalidDataException($"{path} is not a libp2p Ed25519 private key; move it away to create a new identity");
        }
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var key = Generate();
        var tmp = path + ".tmp";
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }
        using (var fs = new FileStream(tmp, options))
        {
            fs.Write(key.ToProtobuf());
            fs.Flush(true);
        }
        File.Move(tmp, path, overwrite: false);
        return key;
    }
}
