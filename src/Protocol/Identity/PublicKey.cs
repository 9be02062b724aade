using Org.BouncyCastle.Asn1.X9;
using Org.BouncyCastle.Crypto;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Crypto.Signers;
using Org.BouncyCastle.Security;
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
/// </summary>
public sealed class PublicKey : IEquatable<PublicKey>
{
    /// <summary>Largest encoded key accepted: an 8192-bit RSA key in PKIX form fits with room to spare.</summary>
    public const int MaxEncodedLength = 1200;
    public const int MinRsaBits = 2048;
    public const int MaxRsaBits = 8192;

    private readonly AsymmetricKeyParameter? _parameters;

    private PublicKey(KeyType type, byte[] data, AsymmetricKeyParameter? parameters)
    {
        Type = type;
        Data = data;
        _parameters = parameters;
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

    /// <summary>Builds a key of any supported type from its type and data bytes.</summary>
    public static bool TryCreate(KeyType type, ReadOnlySpan<byte> data, out PublicKey key)
    {
        key = null!;
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
                        var curve = ECNamedCurveTable.GetByName("secp256k1");
                        var point = curve.Curve.DecodePoint(data.ToArray());
                        var domain = new ECDomainParameters(curve.Curve, curve.G, curve.N, curve.H);
                        key = new PublicKey(type, data.ToArray(), new ECPublicKeyParameters(point, domain));
                        return true;
                    }
                case KeyType.Ecdsa:
                    {
                        var p = PublicKeyFactory.CreateKey(data.ToArray());
                        if (p is not ECPublicKeyParameters)
                        {
                            return false;
                        }
                        key = new PublicKey(type, data.ToArray(), p);
                        return true;
                    }
                case KeyType.Rsa:
                    {
                        var p = PublicKeyFactory.CreateKey(data.ToArray());
                        if (p is not RsaKeyParameters rsa || rsa.Modulus.BitLength < MinRsaBits || rsa.Modulus.BitLength > MaxRsaBits)
                        {
                            return false;
                        }
                        key = new PublicKey(type, data.ToArray(), p);
                        return true;
                    }
                default:
                    return false;
            }
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidOperationException or IOException
                                      or Org.BouncyCastle.Security.SecurityUtilityException or InvalidCastException)
        {
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

    /// <summary>Verifies a signature made by the matching private key; never throws on malformed signatures.</summary>
    public bool Verify(ReadOnlySpan<byte> message, ReadOnlySpan<byte> signature)
    {
        if (_parameters is null || signature.Length > 2048)
        {
            return false;
        }
        try
        {
            ISigner signer = Type switch
            {
                KeyType.Ed25519 => new Ed25519Signer(),
                KeyType.Rsa => SignerUtilities.GetSigner("SHA-256withRSA"),
                _ => SignerUtilities.GetSigner("SHA-256withECDSA"),
            };
            signer.Init(false, _parameters);
            signer.BlockUpdate(message);
            return signer.VerifySignature(signature.ToArray());
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or IOException or CryptoException or InvalidCastException)
        {
            return false;
        }
    }

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
