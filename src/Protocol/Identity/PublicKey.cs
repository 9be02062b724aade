using Org.BouncyCastle.Asn1;
using Org.BouncyCastle.Asn1.Pkcs;
using Org.BouncyCastle.Asn1.Sec;
using Org.BouncyCastle.Asn1.X509;
using Org.BouncyCastle.Asn1.X9;
using Org.BouncyCastle.Crypto;
using System.Security.Cryptography;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Crypto.Signers;
using Org.BouncyCastle.Security;
using Org.BouncyCastle.X509;
using Potluck.Protocol.Multiformats;

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
/// a remote could make us pay on every handshake.
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

    private readonly AsymmetricKeyParameter? _parameters; // Ed25519, secp256k1, ECDSA
    private readonly RSAParameters _rsa;                  // RSA

    private PublicKey(KeyType type, byte[] data, AsymmetricKeyParameter? parameters, RSAParameters rsa = default)
    {
        Type = type;
        Data = data;
        _parameters = parameters;
        _rsa = rsa;
    }

    public KeyType Type { get; }

    /// <summary>The key's own bytes (field 2): raw for Ed25519, compressed point for secp256k1, PKIX DER otherwise.</summary>
    public byte[] Data { get; }

    public static PublicKey FromEd25519(ReadOnlySpan<byte> raw)
    {
        if (raw.Length != 32)
        {
            throw new ArgumentException("an Ed25519 public key is 32 bytes", nameof(raw));
        }
        return new PublicKey(KeyType.Ed25519, raw.ToArray(), new Ed25519PublicKeyParameters(raw));
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
                    if (data.Length != 32)
                    {
                        return false;
                    }
                    key = new PublicKey(type, data.ToArray(), new Ed25519PublicKeyParameters(data));
                    return true;
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
                        key = new PublicKey(type, canonical, null, parameters);
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

    public byte[] ToProtobuf() => KeyProtobuf.Encode(Type, Data);

    public PeerId ToPeerId() => PeerId.FromPublicKey(this);

    /// <summary>Largest signature looked at: an RSA-8192 signature is 1024 bytes, a DER P-521 one under 140.</summary>
    public const int MaxSignatureLength = 2048;

    /// <summary>
    /// Verifies a signature made by the matching private key: Ed25519 (RFC 8032), RSASSA-PKCS1-v1_5 with SHA-256,
    /// or ECDSA with SHA-256 and a DER signature (secp256k1 and NIST curves). Never throws on malformed signatures.
    /// </summary>
    public bool Verify(ReadOnlySpan<byte> message, ReadOnlySpan<byte> signature)
    {
        if (signature.Length > MaxSignatureLength)
        {
            return false;
        }
        if (Type == KeyType.Ed25519 && signature.Length == 64 && HasSmallOrderR(signature))
        {
            // One verdict on every node whichever library it has: libsodium refuses a small-order R, BouncyCastle
            // (cofactored) accepts all eight, OpenSSL one. Only the key's owner can make such a signature.
            return false;
        }
        try
        {
            if (Type == KeyType.Ed25519 && SodiumEd25519.Preferred)
            {
                return SodiumEd25519.Verify(Data, message, signature);
            }
            if (Type == KeyType.Rsa)
            {
                using var rsa = RSA.Create(_rsa);
                return rsa.VerifyData(message, signature, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
            }
            Org.BouncyCastle.Crypto.ISigner signer = Type switch
            {
                KeyType.Ed25519 => new Ed25519Signer(),
                KeyType.Rsa => SignerUtilities.GetSigner("SHA-256withRSA"),
                _ => SignerUtilities.GetSigner("SHA-256withECDSA"),
            };
            signer.Init(false, _parameters!);
            signer.BlockUpdate(message);
            return signer.VerifySignature(signature.ToArray());
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return false; // a malformed signature, whatever BouncyCastle or the platform calls it
        }
    }

    /// <summary>
    /// The encodings of the Ed25519 points of small order (and the non-canonical y = p, p + 1), compared with the
    /// x sign bit masked, as libsodium 1.0.18's blocklist does.
    /// </summary>
    private static readonly byte[][] SmallOrderEncodings =
    [
        Convert.FromHexString("0000000000000000000000000000000000000000000000000000000000000000"),
        Convert.FromHexString("0100000000000000000000000000000000000000000000000000000000000000"),
        Convert.FromHexString("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
        Convert.FromHexString("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
        Convert.FromHexString("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        Convert.FromHexString("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        Convert.FromHexString("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    ];

    /// <summary>True when the signature's R (its first 32 bytes) encodes a point of small order.</summary>
    internal static bool HasSmallOrderR(ReadOnlySpan<byte> signature)
    {
        var r = signature[..32];
        foreach (var bad in SmallOrderEncodings)
        {
            if (r[..31].SequenceEqual(bad.AsSpan(0, 31)) && (r[31] & 0x7f) == bad[31])
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>The BouncyCastle path alone for Ed25519: the reference the libsodium path is tested against.</summary>
    internal bool VerifyWithBouncyCastle(ReadOnlySpan<byte> message, ReadOnlySpan<byte> signature)
    {
        if (Type != KeyType.Ed25519)
        {
            throw new InvalidOperationException("only Ed25519 keys have two verification paths");
        }
        if (signature.Length > MaxSignatureLength)
        {
            return false;
        }
        try
        {
            var signer = new Ed25519Signer();
            signer.Init(false, _parameters!);
            signer.BlockUpdate(message);
            return signer.VerifySignature(signature.ToArray());
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return false;
        }
    }

    /// <summary>The libsodium path alone for Ed25519; null when libsodium is unavailable.</summary>
    internal bool? VerifyWithSodium(ReadOnlySpan<byte> message, ReadOnlySpan<byte> signature) =>
        Type == KeyType.Ed25519 && SodiumEd25519.IsAvailable && signature.Length <= MaxSignatureLength
            ? SodiumEd25519.Verify(Data, message, signature)
            : null;

    public bool Equals(PublicKey? other) => other is not null && other.Type == Type && other.Data.AsSpan().SequenceEqual(Data);

    public override bool Equals(object? obj) => Equals(obj as PublicKey);

    public override int GetHashCode()
    {
        var h = new HashCode();
        h.Add(Type);
        h.AddBytes(Data);
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
