using System.Security.Cryptography;
using NSec.Cryptography;
using Org.BouncyCastle.Asn1;
using Org.BouncyCastle.Asn1.Pkcs;
using Org.BouncyCastle.Asn1.Sec;
using Org.BouncyCastle.Asn1.X509;
using Org.BouncyCastle.Asn1.X9;
using Org.BouncyCastle.Crypto;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Security;
using Org.BouncyCastle.X509;
using Potluck.Protocol.Multiformats;
using NSecPublicKey = NSec.Cryptography.PublicKey;

namespace Potluck.Protocol.Identity;

/// <summary>The key types of the libp2p peer-id spec, with their protobuf enum values.</summary>
public enum KeyType
{
    Rsa = 0,
    Ed25519 = 1,
    Secp256k1 = 2,
    Ecdsa = 3,
}

/// <summary>
/// A libp2p public key (https://github.com/libp2p/specs/blob/master/peer-ids/peer-ids.md): the
/// <c>PublicKey</c> protobuf {1: KeyType, 2: bytes Data} in its deterministic encoding.
/// Ed25519 keys are ours; RSA, secp256k1 and ECDSA keys of remote peers are verified as the spec describes
/// (PKCS#1 v1.5 / ECDSA over SHA-256, DER signatures). Decoding is bounded by <see cref="MaxEncodedLength"/>.
/// Like go-libp2p, keys are held in their canonical encoding: a secp256k1 point is re-encoded compressed (33 bytes),
/// RSA and ECDSA keys are re-encoded as DER PKIX, so the peer id of a key does not depend on how a peer spelled it.
/// ECDSA keys must name P-256, P-384 or P-521; RSA moduli must have <see cref="MinRsaBits"/>..<see cref="MaxRsaBits"/> bits.
/// RSA keys are checked for shape only and verified with the platform's RSA: BouncyCastle's RsaKeyParameters runs a
/// Miller-Rabin compositeness test on every new modulus (about a quarter second for RSA-4096, seconds for 8192), which
/// a remote could make us pay on every handshake. secp256k1 and ECDSA keys are verified with BouncyCastle.
/// <para>Ed25519 is NSec's (https://nsec.rocks), which runs the libsodium 1.0.22 that its NuGet package ships for every
/// platform: the same library, so the same verdict, on every machine, with nothing to install. See <see cref="Verify"/>
/// for exactly what it accepts.</para>
/// </summary>
public sealed class PublicKey : IEquatable<PublicKey>
{
    /// <summary>Largest encoded key accepted: an 8192-bit RSA key in PKIX form fits with room to spare.</summary>
    public const int MaxEncodedLength = 1200;
    public const int MinRsaBits = 2048;
    public const int MaxRsaBits = 8192;

    private static readonly X9ECParameters Secp256k1Curve = ECNamedCurveTable.GetByName("secp256k1");
    private static readonly ECDomainParameters Secp256k1Domain = new(Secp256k1Curve.Curve, Secp256k1Curve.G, Secp256k1Curve.N, Secp256k1Curve.H);
    private static readonly DerObjectIdentifier[] EcdsaCurves =
        [SecObjectIdentifiers.SecP256r1, SecObjectIdentifiers.SecP384r1, SecObjectIdentifiers.SecP521r1];

    private static readonly AlgorithmIdentifier RsaAlgorithm = new(PkcsObjectIdentifiers.RsaEncryption, DerNull.Instance);

    /// <summary>
    /// What verifies: for Ed25519 NSec's key, imported from <see cref="Data"/> by the first <see cref="Verify"/> (most keys
    /// a node holds, those of peers in its peer store, never verify anything: ~56 bytes each saved); the BouncyCastle
    /// parameters for secp256k1 and ECDSA; an <see cref="RsaKey"/> for RSA. One field, not one per kind: a key is ~40 bytes
    /// and its data, where it was ~112 (an inline <see cref="RSAParameters"/> alone is eight references).
    /// </summary>
    private object? _verifier;

    private PublicKey(KeyType type, byte[] data, object? verifier)
    {
        Type = type;
        _data = data;
        _verifier = verifier;
    }

    public KeyType Type { get; }

    /// <summary>The key's own bytes, never written to or handed out: a key is immutable, so the nodes of a simulation may share one (<see cref="Runtime.SharedValues"/>).</summary>
    private readonly byte[] _data;

    /// <summary>
    /// The key's own bytes (field 2): raw for Ed25519, compressed point for secp256k1, PKIX DER otherwise; a fresh copy the
    /// caller may keep or change (<see cref="Span"/> reads them without one).
    /// </summary>
    public byte[] Data => (byte[])_data.Clone();

    /// <summary>The key's own bytes, read-only, without a copy.</summary>
    public ReadOnlySpan<byte> Span => _data;

    /// <summary>The length of an Ed25519 public key and of the encoding of any Ed25519 point.</summary>
    internal const int Ed25519Length = 32;

    /// <summary>An Ed25519 key from its 32 bytes; <see cref="ArgumentException"/> where <see cref="TryCreate"/> would refuse it.</summary>
    public static PublicKey FromEd25519(ReadOnlySpan<byte> raw) =>
        TryCreateEd25519(raw, out var key) ? key : throw new ArgumentException("not an acceptable Ed25519 public key", nameof(raw));

    /// <summary>Our own key, as NSec derived it from the seed.</summary>
    internal static PublicKey FromEd25519(NSecPublicKey key)
    {
        var raw = key.Export(KeyBlobFormat.RawPublicKey);
        return new PublicKey(KeyType.Ed25519, raw, key);
    }

    /// <summary>
    /// The checks libsodium 1.0.22 makes on an Ed25519 public key's bytes before it uses it, made here once when the key
    /// is decoded: the encoding is canonical (y &lt; p) and not one of a point of small order. A key that passes but is
    /// not on the curve is kept (go-libp2p and js-libp2p keep any 32 bytes too) and verifies nothing.
    /// </summary>
    private static bool TryCreateEd25519(ReadOnlySpan<byte> data, out PublicKey key)
    {
        key = null!;
        if (data.Length != Ed25519Length || !IsCanonicalEd25519Encoding(data) || IsSmallOrderEd25519Encoding(data)
            || !NSecPublicKey.TryImport(SignatureAlgorithm.Ed25519, data, KeyBlobFormat.RawPublicKey, out _))
        {
            return false;
        }
        // The import is the check NSec makes; the key it made is dropped and made again by the first Verify.
        key = new PublicKey(KeyType.Ed25519, data.ToArray(), null);
        return true;
    }

    /// <summary>
    /// Builds a key of any supported type from its type and data bytes: raw 32 bytes for Ed25519, a compressed or
    /// uncompressed point for secp256k1, DER PKIX for RSA and ECDSA. Never throws on malformed data.
    /// </summary>
    public static bool TryCreate(KeyType type, ReadOnlySpan<byte> data, out PublicKey key)
    {
        key = null!;
        if (data.Length > MaxEncodedLength)
        {
            return false;
        }
        try
        {
            switch (type)
            {
                case KeyType.Ed25519:
                    return TryCreateEd25519(data, out key);
                case KeyType.Secp256k1:
                    {
                        // Compressed (02|03 + X) or uncompressed (04 + X + Y); never infinity or the hybrid forms.
                        var wellFormed = (data.Length == 33 && data[0] is 0x02 or 0x03) || (data.Length == 65 && data[0] == 0x04);
                        if (!wellFormed)
                        {
                            return false;
                        }
                        var point = Secp256k1Curve.Curve.DecodePoint(data.ToArray());
                        var parameters = new ECPublicKeyParameters(point, Secp256k1Domain); // checks the point is on the curve
                        key = new PublicKey(type, parameters.Q.GetEncoded(compressed: true), parameters);
                        return true;
                    }
                case KeyType.Ecdsa:
                    {
                        var info = SubjectPublicKeyInfo.GetInstance(Asn1Object.FromByteArray(data.ToArray()));
                        if (!X9ObjectIdentifiers.IdECPublicKey.Equals(info.Algorithm.Algorithm)
                            || info.Algorithm.Parameters is not DerObjectIdentifier curve
                            || Array.IndexOf(EcdsaCurves, curve) < 0)
                        {
                            return false; // explicit curve parameters or a curve libp2p does not use
                        }
                        if (PublicKeyFactory.CreateKey(info) is not ECPublicKeyParameters ec)
                        {
                            return false;
                        }
                        key = new PublicKey(type, SubjectPublicKeyInfoFactory.CreateSubjectPublicKeyInfo(ec).GetDerEncoded(), ec);
                        return true;
                    }
                case KeyType.Rsa:
                    {
                        var info = SubjectPublicKeyInfo.GetInstance(Asn1Object.FromByteArray(data.ToArray()));
                        if (!PkcsObjectIdentifiers.RsaEncryption.Equals(info.Algorithm.Algorithm))
                        {
                            return false;
                        }
                        var rsa = RsaPublicKeyStructure.GetInstance(info.ParsePublicKey());
                        var (n, e) = (rsa.Modulus, rsa.PublicExponent);
                        if (n.BitLength is < MinRsaBits or > MaxRsaBits || !n.TestBit(0)
                            || e.BitLength is < 2 or > 64 || !e.TestBit(0)) // e odd, 3..2^64 (OpenSSL's cap for big moduli)
                        {
                            return false;
                        }
                        var canonical = new SubjectPublicKeyInfo(RsaAlgorithm, new RsaPublicKeyStructure(n, e)).GetDerEncoded();
                        var parameters = new RSAParameters { Modulus = n.ToByteArrayUnsigned(), Exponent = e.ToByteArrayUnsigned() };
                        key = new PublicKey(type, canonical, new RsaKey(parameters));
                        return true;
                    }
                default:
                    return false;
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // BouncyCastle's ASN.1 and point decoders signal bad input with a spread of exception types
            // (ArgumentException, IOException, InvalidCastException, Asn1ParsingException, ...): all mean "not a key".
            key = null!;
            return false;
        }
    }

    /// <summary>Parses the <c>PublicKey</c> protobuf. Unknown fields, duplicates or a wrong order are rejected.</summary>
    public static bool TryFromProtobuf(ReadOnlySpan<byte> encoded, out PublicKey key)
    {
        key = null!;
        if (encoded.Length > MaxEncodedLength || !KeyProtobuf.TryDecode(encoded, out var type, out var data))
        {
            return false;
        }
        return TryCreate(type, data, out key);
    }

    public static PublicKey FromProtobuf(ReadOnlySpan<byte> encoded) =>
        TryFromProtobuf(encoded, out var key) ? key : throw new FormatException("invalid libp2p PublicKey protobuf");

    public byte[] ToProtobuf() => KeyProtobuf.Encode(Type, _data);

    /// <summary>
    /// The key's peer id, encoded once per key object and kept (a key never changes, and a <see cref="PeerId"/> is immutable):
    /// the lease path asks a requester's or provider's key for its id several times per lease. Two threads that ask at once may
    /// both encode it; they get equal ids.
    /// </summary>
    public PeerId ToPeerId()
    {
        var id = _peerId;
        if (id.IsEmpty)
        {
            id = PeerId.FromPublicKey(this);
            _peerId = id;
        }
        return id;
    }

    private PeerId _peerId;

    /// <summary>Largest signature looked at: an RSA-8192 signature is 1024 bytes, a DER P-521 one under 140.</summary>
    public const int MaxSignatureLength = 2048;

    /// <summary>
    /// Verifies a signature made by the matching private key: Ed25519 (RFC 8032), RSASSA-PKCS1-v1_5 with SHA-256,
    /// or ECDSA with SHA-256 and a DER signature (secp256k1 and NIST curves). Never throws on malformed signatures.
    /// <para>Ed25519, with libsodium 1.0.22 through NSec (one library everywhere, so one verdict everywhere; the tests in
    /// <c>Ed25519StrictnessTests</c> pin every case below, so a library upgrade that changes one fails them):</para>
    /// <list type="bullet">
    /// <item>a signature is exactly 64 bytes, R ‖ S;</item>
    /// <item>R of small order (any of the eight such points, with either sign bit, or spelled non-canonically) is
    /// refused here before the library is asked, whatever it would say (libsodium 1.0.22 refuses them too; a cofactored
    /// verifier accepts them when S = h·a);</item>
    /// <item>S must be canonical (S &lt; L): S + L and S = L are refused;</item>
    /// <item>R must be canonical: the library recomputes R and compares the encodings byte for byte;</item>
    /// <item>the equation is cofactorless, [S]B = R + [h]A: a signature whose R carries a small-order component is refused
    /// (a cofactored verifier accepts it), and a key with a small-order component verifies a signature only when the
    /// component vanishes in [h]A;</item>
    /// <item>A, the key, must be canonical and not of small order (refused when the key is decoded: it never becomes a
    /// <see cref="PublicKey"/>), and on the curve (a key that is not verifies nothing).</item>
    /// </list>
    /// Honest signers never make any of the refused cases; only a key's owner can make the accepted odd ones.
    /// </summary>
    public bool Verify(ReadOnlySpan<byte> message, ReadOnlySpan<byte> signature)
    {
        if (signature.Length > MaxSignatureLength)
        {
            return false;
        }
        if (Type == KeyType.Ed25519)
        {
            return signature.Length == Ed25519SignatureLength && !HasSmallOrderR(signature)
                   && SignatureAlgorithm.Ed25519.Verify(Ed25519Key(), message, signature);
        }
        try
        {
            if (Type == KeyType.Rsa)
            {
                using var rsa = RSA.Create(((RsaKey)_verifier!).Parameters);
                return rsa.VerifyData(message, signature, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
            }
            Org.BouncyCastle.Crypto.ISigner signer = SignerUtilities.GetSigner("SHA-256withECDSA");
            signer.Init(false, (AsymmetricKeyParameter)_verifier!);
            signer.BlockUpdate(message);
            return signer.VerifySignature(signature.ToArray());
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return false; // a malformed signature, whatever BouncyCastle or the platform calls it
        }
    }

    private const int Ed25519SignatureLength = 64;

    /// <summary>NSec's key for <see cref="Data"/>, imported once (two threads may both import: the same key, one kept).</summary>
    private NSecPublicKey Ed25519Key()
    {
        if (Volatile.Read(ref _verifier) is NSecPublicKey key)
        {
            return key;
        }
        key = NSecPublicKey.Import(SignatureAlgorithm.Ed25519, _data, KeyBlobFormat.RawPublicKey);
        return Interlocked.CompareExchange(ref _verifier, key, null) as NSecPublicKey ?? key;
    }

    /// <summary>An RSA key's modulus and exponent, apart so the other kinds do not carry its eight fields.</summary>
    private sealed class RsaKey(RSAParameters parameters)
    {
        public RSAParameters Parameters { get; } = parameters;
    }

    /// <summary>
    /// The encodings of the Ed25519 points of small order and the non-canonical y = p, p + 1, compared with the x sign bit
    /// masked: libsodium 1.0.22's list (<c>ge25519_has_small_order</c>), which covers all eight points, either sign.
    /// </summary>
    private static readonly byte[][] SmallOrderEncodings =
    [
        Convert.FromHexString("0000000000000000000000000000000000000000000000000000000000000000"), // y = 0: order 4
        Convert.FromHexString("0100000000000000000000000000000000000000000000000000000000000000"), // y = 1: the identity
        Convert.FromHexString("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"), // order 8
        Convert.FromHexString("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"), // order 8
        Convert.FromHexString("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"), // y = p - 1: order 2
        Convert.FromHexString("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"), // y = p, i.e. 0
        Convert.FromHexString("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"), // y = p + 1, i.e. 1
    ];

    /// <summary>True when the signature's R (its first 32 bytes) encodes a point of small order.</summary>
    internal static bool HasSmallOrderR(ReadOnlySpan<byte> signature) => IsSmallOrderEd25519Encoding(signature[..Ed25519Length]);

    /// <summary>True when 32 bytes encode (with either sign bit) a point of small order, as libsodium's list says.</summary>
    internal static bool IsSmallOrderEd25519Encoding(ReadOnlySpan<byte> point)
    {
        foreach (var bad in SmallOrderEncodings)
        {
            if (point[..31].SequenceEqual(bad.AsSpan(0, 31)) && (point[31] & 0x7f) == bad[31])
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>True when 32 bytes encode y &lt; p = 2^255 - 19, the sign bit aside (libsodium's <c>ge25519_is_canonical</c>).</summary>
    internal static bool IsCanonicalEd25519Encoding(ReadOnlySpan<byte> point) =>
        (point[31] & 0x7f) != 0x7f || point[1..31].IndexOfAnyExcept((byte)0xff) >= 0 || point[0] < 0xed;

    public bool Equals(PublicKey? other) => other is not null && other.Type == Type && other._data.AsSpan().SequenceEqual(_data);

    public override bool Equals(object? obj) => Equals(obj as PublicKey);

    public override int GetHashCode()
    {
        var h = new HashCode();
        h.Add(Type);
        h.AddBytes(_data);
        return h.ToHashCode();
    }
}

/// <summary>The shared {1: KeyType, 2: bytes} protobuf used by both PublicKey and PrivateKey.</summary>
internal static class KeyProtobuf
{
    public static byte[] Encode(KeyType type, ReadOnlySpan<byte> data)
    {
        var buffer = new byte[1 + Varint.Size((ulong)type) + 1 + Varint.Size((ulong)data.Length) + data.Length];
        var i = 0;
        buffer[i++] = 0x08;
        i += Varint.Write(buffer.AsSpan(i), (ulong)type);
        buffer[i++] = 0x12;
        i += Varint.Write(buffer.AsSpan(i), (ulong)data.Length);
        data.CopyTo(buffer.AsSpan(i));
        return buffer;
    }

    public static bool TryDecode(ReadOnlySpan<byte> encoded, out KeyType type, out ReadOnlySpan<byte> data)
    {
        type = default;
        data = default;
        if (encoded.Length < 2 || encoded[0] != 0x08)
        {
            return false;
        }
        if (Varint.TryRead(encoded[1..], out var t, out var n) != DecodeStatus.Done || t > 3)
        {
            return false;
        }
        var i = 1 + n;
        if (i >= encoded.Length || encoded[i] != 0x12)
        {
            return false;
        }
        i++;
        if (Varint.TryRead(encoded[i..], out var len, out n) != DecodeStatus.Done)
        {
            return false;
        }
        i += n;
        if (len != (ulong)(encoded.Length - i))
        {
            return false;
        }
        type = (KeyType)t;
        data = encoded[i..];
        return true;
    }
}
