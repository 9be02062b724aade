using System.Security.Cryptography;
using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.Identity;

/// <summary>
/// A libp2p peer id: the multihash of the protobuf-encoded public key, identity-hashed when that encoding is
/// at most 42 bytes (all Ed25519 keys: <c>12D3KooW…</c>) and SHA-256-hashed otherwise (<c>Qm…</c>).
/// Parsed, as the spec's decoding rules say, from bare base58btc (text starting <c>1</c> or <c>Qm</c>) or from the
/// CIDv1 form (codec libp2p-key 0x72) in multibase base32 (<c>b…</c>, <c>B…</c>) or base58btc (<c>z…</c>).
/// Deviation: other multibases (base36 <c>k…</c>, hex) are not read; other multihash functions are not peer ids here.
/// </summary>
public readonly struct PeerId : IEquatable<PeerId>, IComparable<PeerId>
{
    private const int IdentityHashMaxKeyLength = 42;
    private const int MaxMultihashLength = 2 + IdentityHashMaxKeyLength + 8;
    private const ulong LibP2pKeyCodec = 0x72;

    private readonly byte[]? _bytes;

    private PeerId(byte[] bytes) => _bytes = bytes;

    /// <summary>The multihash bytes.</summary>
    public ReadOnlySpan<byte> Bytes => _bytes ?? [];

    /// <summary>The multihash bytes, read-only, without a copy (for an API that keeps a memory rather than a span).</summary>
    public ReadOnlyMemory<byte> Memory => _bytes;

    public bool IsEmpty => _bytes is null;

    /// <summary>The id's own array, for <see cref="Runtime.SharedValues"/> only (never written to, never handed out).</summary>
    internal byte[]? SharedArray => _bytes;

    /// <summary>An id over an array <see cref="Runtime.SharedValues"/> holds (one a valid id was built over).</summary>
    internal static PeerId FromSharedArray(byte[] bytes) => new(bytes);

    public byte[] ToBytes() => (byte[])(_bytes ?? []).Clone();

    public static PeerId FromPublicKey(PublicKey key)
    {
        var encoded = key.ToProtobuf();
        byte[] mh;
        if (encoded.Length <= IdentityHashMaxKeyLength)
        {
            mh = new byte[2 + encoded.Length];
            mh[0] = 0x00;
            mh[1] = (byte)encoded.Length;
            encoded.CopyTo(mh, 2);
        }
        else
        {
            mh = new byte[34];
            mh[0] = 0x12;
            mh[1] = 0x20;
            SHA256.HashData(encoded, mh.AsSpan(2));
        }
        return new PeerId(mh);
    }

    /// <summary>Accepts identity multihashes of a valid key and SHA-256 multihashes.</summary>
    public static bool TryFromBytes(ReadOnlySpan<byte> bytes, out PeerId peer)
    {
        peer = default;
        if (bytes.Length < 2 || bytes.Length > MaxMultihashLength)
        {
            return false;
        }
        if (bytes[0] == 0x12 && bytes[1] == 0x20 && bytes.Length == 34)
        {
            peer = new PeerId(bytes.ToArray());
            return true;
        }
        if (bytes[0] == 0x00 && bytes[1] == bytes.Length - 2 && bytes.Length - 2 <= IdentityHashMaxKeyLength
            && PublicKey.TryFromProtobuf(bytes[2..], out _))
        {
            peer = new PeerId(bytes.ToArray());
            return true;
        }
        return false;
    }

    /// <summary>
    /// True for an identity-hashed id (the key embedded: every Ed25519 and secp256k1 key): for a key that matches the id,
    /// <see cref="TryExtractPublicKey"/> gives it back, so it need not be held beside the id.
    /// </summary>
    internal bool EmbedsPublicKey => _bytes is { Length: > 2 } b && b[0] == 0x00;

    /// <summary>The public key embedded in an identity-hashed peer id, if any.</summary>
    public PublicKey? TryExtractPublicKey() =>
        _bytes is { Length: > 2 } b && b[0] == 0x00 && PublicKey.TryFromProtobuf(b.AsSpan(2), out var key) ? key : null;

    /// <summary>True when <paramref name="key"/> is the key this peer id was derived from.</summary>
    public bool Matches(PublicKey key) => FromPublicKey(key).Equals(this);

    public static bool TryParse(string? text, out PeerId peer)
    {
        peer = default;
        if (string.IsNullOrEmpty(text) || text.Length > 200)
        {
            return false;
        }
        if (text[0] == '1' || text.StartsWith("Qm", StringComparison.Ordinal))
        {
            return Base58.TryDecode(text, out var bytes) && TryFromBytes(bytes, out peer);
        }
        byte[] cid;
        var decoded = text[0] switch
        {
            'b' => Base32.TryDecodeLower(text.AsSpan(1), out cid),
            'B' => Base32.TryDecodeLower(text[1..].ToLowerInvariant(), out cid),
            'z' => Base58.TryDecode(text.AsSpan(1), out cid),
            _ => Fail(out cid),
        };
        if (!decoded)
        {
            return false;
        }
        if (Varint.TryRead(cid, out var version, out var n) != DecodeStatus.Done || version != 1)
        {
            return false;
        }
        if (Varint.TryRead(cid.AsSpan(n), out var codec, out var m) != DecodeStatus.Done || codec != LibP2pKeyCodec)
        {
            return false;
        }
        return TryFromBytes(cid.AsSpan(n + m), out peer);

        static bool Fail(out byte[] bytes)
        {
            bytes = [];
            return false;
        }
    }

    public static PeerId Parse(string text) =>
        TryParse(text, out var peer) ? peer : throw new FormatException($"'{(text.Length > 80 ? text[..80] + "…" : text)}' is not a peer id (expected 12D3KooW…, Qm… or bafz…)");

    public override string ToString() => _bytes is null ? "" : Base58.Encode(_bytes);

    /// <summary>The CIDv1 text form: multibase base32, version 1, codec libp2p-key.</summary>
    public string ToCidString()
    {
        var cid = new byte[2 + Bytes.Length];
        cid[0] = 0x01;
        cid[1] = (byte)LibP2pKeyCodec;
        Bytes.CopyTo(cid.AsSpan(2));
        return "b" + Base32.EncodeLower(cid);
    }

    public bool Equals(PeerId other) => Bytes.SequenceEqual(other.Bytes);

    public override bool Equals(object? obj) => obj is PeerId p && Equals(p);

    public override int GetHashCode()
    {
        var h = new HashCode();
        h.AddBytes(Bytes);
        return h.ToHashCode();
    }

    public int CompareTo(PeerId other) => Bytes.SequenceCompareTo(other.Bytes);

    public static bool operator ==(PeerId a, PeerId b) => a.Equals(b);

    public static bool operator !=(PeerId a, PeerId b) => !a.Equals(b);
}
