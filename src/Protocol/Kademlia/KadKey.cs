using System.Buffers.Binary;
using System.Numerics;
using System.Security.Cryptography;
using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Kademlia;

/// <summary>
/// A point in the 256-bit Kademlia keyspace: SHA-256 of a peer id's multihash bytes or of a record/provider key,
/// as the kad-dht spec prescribes. Held as four big-endian words so distances compare without allocating.
/// </summary>
public readonly struct KadKey : IEquatable<KadKey>
{
    public const int Length = 32;

    private readonly ulong _w0, _w1, _w2, _w3;

    private KadKey(ulong w0, ulong w1, ulong w2, ulong w3)
    {
        _w0 = w0;
        _w1 = w1;
        _w2 = w2;
        _w3 = w3;
    }

    /// <summary>Takes 32 bytes as they are (already a point in the keyspace).</summary>
    public static KadKey FromHash(ReadOnlySpan<byte> hash)
    {
        if (hash.Length != Length)
        {
            throw new ArgumentException("a Kademlia key is 32 bytes", nameof(hash));
        }
        return new KadKey(
            BinaryPrimitives.ReadUInt64BigEndian(hash),
            BinaryPrimitives.ReadUInt64BigEndian(hash[8..]),
            BinaryPrimitives.ReadUInt64BigEndian(hash[16..]),
            BinaryPrimitives.ReadUInt64BigEndian(hash[24..]));
    }

    /// <summary>SHA-256 of an arbitrary DHT key (record key, provider key, FIND_NODE key).</summary>
    public static KadKey FromKey(ReadOnlySpan<byte> key)
    {
        Span<byte> hash = stackalloc byte[Length];
        SHA256.HashData(key, hash);
        return FromHash(hash);
    }

    /// <summary>SHA-256 of the peer id's multihash bytes.</summary>
    public static KadKey FromPeer(PeerId peer) => FromKey(peer.Bytes);

    public KadDistance DistanceTo(KadKey other) => new(_w0 ^ other._w0, _w1 ^ other._w1, _w2 ^ other._w2, _w3 ^ other._w3);

    /// <summary>Leading bits shared with <paramref name="other"/>: 256 for the same key.</summary>
    public int CommonPrefixLength(KadKey other) => DistanceTo(other).LeadingZeroBits;

    /// <summary>A random key sharing exactly <paramref name="cpl"/> leading bits with this one (cpl &lt; 256).</summary>
    public KadKey RandomWithCommonPrefix(int cpl, Random random)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(cpl);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(cpl, 255);
        Span<byte> rnd = stackalloc byte[Length];
        random.NextBytes(rnd);
        Span<byte> mine = stackalloc byte[Length];
        WriteTo(mine);
        for (var bit = 0; bit <= cpl; bit++)
        {
            var mask = (byte)(0x80 >> (bit & 7));
            var value = (byte)(mine[bit >> 3] & mask);
            if (bit == cpl)
            {
                value ^= mask;
            }
            rnd[bit >> 3] = (byte)((rnd[bit >> 3] & ~mask) | value);
        }
        return FromHash(rnd);
    }

    public void WriteTo(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, _w0);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], _w1);
        BinaryPrimitives.WriteUInt64BigEndian(destination[16..], _w2);
        BinaryPrimitives.WriteUInt64BigEndian(destination[24..], _w3);
    }

    public byte[] ToBytes()
    {
        var bytes = new byte[Length];
        WriteTo(bytes);
        return bytes;
    }

    public bool Equals(KadKey other) => _w0 == other._w0 && _w1 == other._w1 && _w2 == other._w2 && _w3 == other._w3;

    public override bool Equals(object? obj) => obj is KadKey k && Equals(k);

    public override int GetHashCode() => HashCode.Combine(_w0, _w1, _w2, _w3);

    public static bool operator ==(KadKey a, KadKey b) => a.Equals(b);

    public static bool operator !=(KadKey a, KadKey b) => !a.Equals(b);

    public override string ToString() => Convert.ToHexStringLower(ToBytes());
}

/// <summary>The XOR distance between two <see cref="KadKey"/>s, ordered as a 256-bit unsigned integer.</summary>
public readonly struct KadDistance : IEquatable<KadDistance>, IComparable<KadDistance>
{
    private readonly ulong _w0, _w1, _w2, _w3;

    internal KadDistance(ulong w0, ulong w1, ulong w2, ulong w3)
    {
        _w0 = w0;
        _w1 = w1;
        _w2 = w2;
        _w3 = w3;
    }

    public bool IsZero => (_w0 | _w1 | _w2 | _w3) == 0;

    /// <summary>Leading zero bits, 0…256; equals the common prefix length of the two keys.</summary>
    public int LeadingZeroBits =>
        _w0 != 0 ? BitOperations.LeadingZeroCount(_w0)
        : _w1 != 0 ? 64 + BitOperations.LeadingZeroCount(_w1)
        : _w2 != 0 ? 128 + BitOperations.LeadingZeroCount(_w2)
        : _w3 != 0 ? 192 + BitOperations.LeadingZeroCount(_w3)
        : 256;

    public static KadDistance operator ^(KadDistance a, KadDistance b) => new(a._w0 ^ b._w0, a._w1 ^ b._w1, a._w2 ^ b._w2, a._w3 ^ b._w3);

    /// <summary>The distance as a non-negative integer (for tests and reports).</summary>
    public BigInteger ToBigInteger()
    {
        Span<byte> bytes = stackalloc byte[KadKey.Length];
        BinaryPrimitives.WriteUInt64BigEndian(bytes, _w0);
        BinaryPrimitives.WriteUInt64BigEndian(bytes[8..], _w1);
        BinaryPrimitives.WriteUInt64BigEndian(bytes[16..], _w2);
        BinaryPrimitives.WriteUInt64BigEndian(bytes[24..], _w3);
        return new BigInteger(bytes, isUnsigned: true, isBigEndian: true);
    }

    public int CompareTo(KadDistance other) =>
        _w0 != other._w0 ? _w0.CompareTo(other._w0)
        : _w1 != other._w1 ? _w1.CompareTo(other._w1)
        : _w2 != other._w2 ? _w2.CompareTo(other._w2)
        : _w3.CompareTo(other._w3);

    public bool Equals(KadDistance other) => CompareTo(other) == 0;

    public override bool Equals(object? obj) => obj is KadDistance d && Equals(d);

    public override int GetHashCode() => HashCode.Combine(_w0, _w1, _w2, _w3);

    public static bool operator <(KadDistance a, KadDistance b) => a.CompareTo(b) < 0;

    public static bool operator >(KadDistance a, KadDistance b) => a.CompareTo(b) > 0;

    public static bool operator <=(KadDistance a, KadDistance b) => a.CompareTo(b) <= 0;

    public static bool operator >=(KadDistance a, KadDistance b) => a.CompareTo(b) >= 0;

    public static bool operator ==(KadDistance a, KadDistance b) => a.Equals(b);

    public static bool operator !=(KadDistance a, KadDistance b) => !a.Equals(b);
}
