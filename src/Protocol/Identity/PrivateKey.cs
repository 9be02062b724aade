using System.Security.Cryptography;
using NSec.Cryptography;
using Org.BouncyCastle.Asn1;
using Org.BouncyCastle.Asn1.X9;
using Org.BouncyCastle.Crypto.Digests;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Crypto.Signers;
using Org.BouncyCastle.Math;
using NSecKey = NSec.Cryptography.Key;

namespace Potluck.Protocol.Identity;

/// <summary>
/// A node's own identity key, of any type libp2p's interop suites hand a node (https://github.com/libp2p/specs/blob/master/peer-ids/peer-ids.md):
/// <list type="bullet">
/// <item>Ed25519 (the default, and what a node creates): the <c>PrivateKey</c> protobuf's data is the 64-byte private‖public
/// the spec prescribes; the legacy 96-byte private‖public‖public form and a bare 32-byte seed are read too. Signing is
/// NSec's Ed25519 (RFC 8032, pure), that is the libsodium the application ships (see <see cref="PublicKey"/>): the secret
/// key lives in libsodium's guarded memory. Ed25519 is deterministic, so a signature is the same bytes whoever computes it.</item>
/// <item>RSA: data is the PKCS#1 DER <c>RSAPrivateKey</c> (as go-libp2p and js-libp2p write it), <see cref="PublicKey.MinRsaBits"/>
/// to <see cref="PublicKey.MaxRsaBits"/> bits; signatures are PKCS#1 v1.5 over SHA-256 with the platform's RSA.</item>
/// <item>secp256k1: data is the 32-byte big-endian scalar; signatures are ECDSA over SHA-256 (RFC 6979 nonces, so
/// deterministic), DER-encoded, with the low S that every verifier accepts, from BouncyCastle.</item>
/// </list>
/// Never logged.
/// </summary>
public sealed class PrivateKey : ISigner
{
    private const int SeedLength = 32;
    private const int SignatureLength = 64;

    private static readonly X9ECParameters Secp256k1Curve = ECNamedCurveTable.GetByName("secp256k1");
    private static readonly ECDomainParameters Secp256k1Domain = new(Secp256k1Curve.Curve, Secp256k1Curve.G, Secp256k1Curve.N, Secp256k1Curve.H);

    private readonly NSecKey? _key;                        // Ed25519
    private readonly RSA? _rsa;                            // RSA
    private readonly ECPrivateKeyParameters? _secp256k1;   // secp256k1
    private readonly Lock _rsaLock = new();

    private PrivateKey(NSecKey key)
    {
        _key = key;
        PublicKey = PublicKey.FromEd25519(key.PublicKey);
        PeerId = PeerId.FromPublicKey(PublicKey);
    }

    private PrivateKey(RSA rsa, PublicKey publicKey)
    {
        _rsa = rsa;
        PublicKey = publicKey;
        PeerId = PeerId.FromPublicKey(publicKey);
    }

    private PrivateKey(ECPrivateKeyParameters secp256k1, PublicKey publicKey)
    {
        _secp256k1 = secp256k1;
        PublicKey = publicKey;
        PeerId = PeerId.FromPublicKey(publicKey);
    }

    public PublicKey PublicKey { get; }

    public PeerId PeerId { get; }

    /// <summary>The key's type; its public key has the same.</summary>
    public KeyType Type => PublicKey.Type;

    public static PrivateKey Generate()
    {
        Span<byte> seed = stackalloc byte[SeedLength];
        RandomNumberGenerator.Fill(seed);
        var key = FromSeed(seed);
        CryptographicOperations.ZeroMemory(seed);
        return key;
    }

    /// <summary>A new key of <paramref name="type"/> from the operating system's randomness (RSA: 2048 bits).</summary>
    public static PrivateKey Generate(KeyType type)
    {
        switch (type)
        {
            case KeyType.Ed25519:
                return Generate();
            case KeyType.Rsa:
                {
                    using var rsa = RSA.Create(2048);
                    return FromProtobuf(KeyProtobuf.Encode(KeyType.Rsa, rsa.ExportRSAPrivateKey()));
                }
            case KeyType.Secp256k1:
                {
                    var scalar = new byte[32];
                    BigInteger d;
                    do
                    {
                        RandomNumberGenerator.Fill(scalar);
                        d = new BigInteger(1, scalar);
                    }
                    while (d.SignValue == 0 || d.CompareTo(Secp256k1Domain.N) >= 0);
                    var key = FromProtobuf(KeyProtobuf.Encode(KeyType.Secp256k1, scalar));
                    CryptographicOperations.ZeroMemory(scalar);
                    return key;
                }
            default:
                throw new ArgumentOutOfRangeException(nameof(type), type, "ECDSA identity keys are verified, not held");
        }
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

    /// <summary>
    /// A signature over <paramref name="message"/> that <see cref="PublicKey"/> verifies: Ed25519 (RFC 8032), RSA
    /// PKCS#1 v1.5 over SHA-256, or DER ECDSA over SHA-256 for secp256k1. Safe to call from several threads at once.
    /// </summary>
    public byte[] Sign(ReadOnlySpan<byte> message)
    {
        if (_key is not null)
        {
            var signature = new byte[SignatureLength];
            SignatureAlgorithm.Ed25519.Sign(_key, message, signature);
            return signature;
        }
        if (_rsa is not null)
        {
            lock (_rsaLock)
            {
                return _rsa.SignData(message, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
            }
        }
        var signer = new ECDsaSigner(new HMacDsaKCalculator(new Sha256Digest()));
        signer.Init(true, _secp256k1!);
        var rs = signer.GenerateSignature(SHA256.HashData(message));
        var (r, s) = (rs[0], rs[1]);
        if (s.CompareTo(Secp256k1Domain.N.ShiftRight(1)) > 0)
        {
            s = Secp256k1Domain.N.Subtract(s); // low S (BIP 62): the form strict verifiers require
        }
        return new DerSequence(new DerInteger(r), new DerInteger(s)).GetDerEncoded();
    }

    public byte[] ToProtobuf()
    {
        if (_rsa is not null)
        {
            var der = _rsa.ExportRSAPrivateKey();
            var encodedRsa = KeyProtobuf.Encode(KeyType.Rsa, der);
            CryptographicOperations.ZeroMemory(der);
            return encodedRsa;
        }
        if (_secp256k1 is not null)
        {
            var scalar = _secp256k1.D.ToByteArrayUnsigned();
            var padded = new byte[32];
            scalar.CopyTo(padded, 32 - scalar.Length);
            var encodedSecp = KeyProtobuf.Encode(KeyType.Secp256k1, padded);
            CryptographicOperations.ZeroMemory(scalar);
            CryptographicOperations.ZeroMemory(padded);
            return encodedSecp;
        }
        var data = new byte[SeedLength + 32];
        if (!_key!.TryExport(KeyBlobFormat.RawPrivateKey, data, out var written) || written != SeedLength)
        {
            throw new CryptographicException("the Ed25519 seed could not be exported");
        }
        PublicKey.Span.CopyTo(data.AsSpan(SeedLength));
        var encoded = KeyProtobuf.Encode(KeyType.Ed25519, data);
        CryptographicOperations.ZeroMemory(data);
        return encoded;
    }

    /// <summary>Largest key file or protobuf looked at: an 8192-bit RSA key in PKCS#1 DER fits.</summary>
    public const int MaxEncodedLength = 5 * 1024;

    /// <summary>
    /// Reads a <c>PrivateKey</c> protobuf of type Ed25519, RSA or secp256k1. Ed25519 data is seed‖public (64 bytes,
    /// preferred), seed‖public‖public (96 bytes, legacy) or a bare seed (32 bytes), every public half present matching
    /// the seed; RSA data is a PKCS#1 DER key whose public half <see cref="PublicKey"/> accepts; secp256k1 data is a
    /// 32-byte scalar in 1..n-1. Never throws on malformed input.
    /// </summary>
    public static bool TryFromProtobuf(ReadOnlySpan<byte> encoded, out PrivateKey key)
    {
        key = null!;
        if (encoded.Length > MaxEncodedLength || !KeyProtobuf.TryDecode(encoded, out var type, out var data))
        {
            return false;
        }
        return type switch
        {
            KeyType.Ed25519 => TryFromEd25519(data, out key),
            KeyType.Rsa => TryFromRsa(data, out key),
            KeyType.Secp256k1 => TryFromSecp256k1(data, out key),
            _ => false,
        };
    }

    private static bool TryFromEd25519(ReadOnlySpan<byte> data, out PrivateKey key)
    {
        key = null!;
        if (data.Length is not (32 or 64 or 96))
        {
            return false;
        }
        var candidate = FromSeed(data[..32]);
        for (var offset = 32; offset < data.Length; offset += 32)
        {
            if (!candidate.PublicKey.Span.SequenceEqual(data.Slice(offset, 32)))
            {
                return false;
            }
        }
        key = candidate;
        return true;
    }

    private static bool TryFromRsa(ReadOnlySpan<byte> data, out PrivateKey key)
    {
        key = null!;
        var rsa = RSA.Create();
        try
        {
            rsa.ImportRSAPrivateKey(data, out var read);
            if (read != data.Length || !PublicKey.TryCreate(KeyType.Rsa, rsa.ExportSubjectPublicKeyInfo(), out var publicKey))
            {
                rsa.Dispose();
                return false;
            }
            key = new PrivateKey(rsa, publicKey);
            return true;
        }
        catch (CryptographicException)
        {
            rsa.Dispose();
            return false;
        }
    }

    private static bool TryFromSecp256k1(ReadOnlySpan<byte> data, out PrivateKey key)
    {
        key = null!;
        if (data.Length != 32)
        {
            return false;
        }
        var d = new BigInteger(1, data.ToArray());
        if (d.SignValue == 0 || d.CompareTo(Secp256k1Domain.N) >= 0)
        {
            return false;
        }
        var point = Secp256k1Domain.G.Multiply(d).Normalize();
        if (!PublicKey.TryCreate(KeyType.Secp256k1, point.GetEncoded(compressed: true), out var publicKey))
        {
            return false;
        }
        key = new PrivateKey(new ECPrivateKeyParameters(d, Secp256k1Domain), publicKey);
        return true;
    }

    public static PrivateKey FromProtobuf(ReadOnlySpan<byte> encoded) =>
        TryFromProtobuf(encoded, out var key) ? key : throw new FormatException("invalid or unsupported libp2p PrivateKey protobuf (Ed25519, RSA or secp256k1 expected)");

    /// <summary>Reads a key file (a <c>PrivateKey</c> protobuf of any supported type), as <c>p2pd -id</c> does; never creates one.</summary>
    public static PrivateKey LoadExisting(string path) => Load(path);

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
                    $"{path} is {fs.Length} bytes, too long for a libp2p private key; move it away to create a new identity");
            }
            bytes = new byte[fs.Length];
            fs.ReadExactly(bytes);
        }
        try
        {
            return TryFromProtobuf(bytes, out var existing)
                ? existing
                : throw new InvalidDataException(
                    $"{path} is not a libp2p private key (a PrivateKey protobuf of type Ed25519, RSA or secp256k1); move it away to create a new identity");
        }
        finally
        {
            CryptographicOperations.ZeroMemory(bytes);
        }
    }
}
