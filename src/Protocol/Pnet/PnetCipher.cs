using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Potluck.Protocol.Pnet;

/// <summary>
/// XSalsa20 (https://cr.yp.to/snuffle/xsalsa-20081128.pdf) as a keystream XOR over spans, in place or from a source
/// into a destination: HSalsa20 derives a subkey from the key and the first 16 nonce bytes, then Salsa20/20 runs
/// under the subkey with the last 8 nonce bytes and a 64-bit block counter from 0 (as NaCl's crypto_stream_xsalsa20
/// and go-libp2p's pnet). Keystream is made 4 or 8 blocks at a time, one block per SIMD lane; checked against the
/// NaCl test vectors and against BouncyCastle's XSalsa20Engine, whose byte-at-a-time ProcessBytes was too slow for
/// the throughput targets.
/// </summary>
internal sealed class PnetCipher
{
    private const int BlockSize = 64;

    /// <summary>The Salsa20 input block for the subkey and nonce; words 8 and 9 (the counter) are set per batch.</summary>
    private readonly uint[] _input = new uint[16];

    private readonly byte[] _keystream = new byte[8 * BlockSize];

    /// <summary>8 blocks per batch with 256-bit vectors, else 4 with 128-bit ones.</summary>
    private readonly bool _wide;

    private readonly int _batch;

    private ulong _counter;

    /// <summary>Bytes of <see cref="_keystream"/> already used; equal to the batch size when none is left.</summary>
    private int _used;

    public PnetCipher(ReadOnlySpan<byte> key, ReadOnlySpan<byte> nonce)
        : this(key, nonce, Vector256.IsHardwareAccelerated)
    {
    }

    /// <summary>With the vector width chosen, so tests cover both paths on any machine.</summary>
    internal PnetCipher(ReadOnlySpan<byte> key, ReadOnlySpan<byte> nonce, bool wide)
    {
        if (key.Length != 32 || nonce.Length != 24)
        {
            throw new ArgumentException("XSalsa20 takes a 32-byte key and a 24-byte nonce");
        }
        Span<uint> subkey = stackalloc uint[8];
        HSalsa20(key, nonce[..16], subkey);
        _input[0] = 0x61707865;
        _input[5] = 0x3320646e;
        _input[10] = 0x79622d32;
        _input[15] = 0x6b206574;
        subkey[..4].CopyTo(_input.AsSpan(1));
        subkey[4..].CopyTo(_input.AsSpan(11));
        _input[6] = BinaryPrimitives.ReadUInt32LittleEndian(nonce[16..]);
        _input[7] = BinaryPrimitives.ReadUInt32LittleEndian(nonce[20..]);
        subkey.Clear();
        _wide = wide;
        _batch = (wide ? 8 : 4) * BlockSize;
        _used = _batch;
    }

    /// <summary>XORs the keystream into <paramref name="data"/>.</summary>
    public void Transform(Span<byte> data) => Transform(data, data);

    /// <summary>Writes <paramref name="source"/> XOR keystream to <paramref name="destination"/> (at least as long; may be the same memory).</summary>
    public void Transform(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        destination = destination[..source.Length];
        while (!source.IsEmpty)
        {
            if (_used == _batch)
            {
                if (_wide)
                {
                    Generate8();
                }
                else
                {
                    Generate4();
                }
                _used = 0;
            }
            var n = Math.Min(_batch - _used, source.Length);
            Xor(source[..n], _keystream.AsSpan(_used, n), destination);
            _used += n;
            source = source[n..];
            destination = destination[n..];
        }
    }

    private static void Xor(ReadOnlySpan<byte> source, ReadOnlySpan<byte> keystream, Span<byte> destination)
    {
        var i = 0;
        for (; i + 16 <= source.Length; i += 16)
        {
            (Vector128.Create(source.Slice(i, 16)) ^ Vector128.Create(keystream.Slice(i, 16))).CopyTo(destination.Slice(i, 16));
        }
        for (; i < source.Length; i++)
        {
            destination[i] = (byte)(source[i] ^ keystream[i]);
        }
    }

    /// <summary>HSalsa20: the 20-round Salsa20 core without the final addition, keeping words 0, 5, 10, 15, 6, 7, 8, 9.</summary>
    internal static void HSalsa20(ReadOnlySpan<byte> key, ReadOnlySpan<byte> nonce16, Span<uint> subkey)
    {
        Span<uint> x = stackalloc uint[16];
        x[0] = 0x61707865;
        x[5] = 0x3320646e;
        x[10] = 0x79622d32;
        x[15] = 0x6b206574;
        for (var i = 0; i < 4; i++)
        {
            x[1 + i] = BinaryPrimitives.ReadUInt32LittleEndian(key[(4 * i)..]);
            x[11 + i] = BinaryPrimitives.ReadUInt32LittleEndian(key[(16 + (4 * i))..]);
            x[6 + i] = BinaryPrimitives.ReadUInt32LittleEndian(nonce16[(4 * i)..]);
        }
        for (var i = 0; i < 10; i++)
        {
            QuarterRound(x, 0, 4, 8, 12);
            QuarterRound(x, 5, 9, 13, 1);
            QuarterRound(x, 10, 14, 2, 6);
            QuarterRound(x, 15, 3, 7, 11);
            QuarterRound(x, 0, 1, 2, 3);
            QuarterRound(x, 5, 6, 7, 4);
            QuarterRound(x, 10, 11, 8, 9);
            QuarterRound(x, 15, 12, 13, 14);
        }
        subkey[0] = x[0];
        subkey[1] = x[5];
        subkey[2] = x[10];
        subkey[3] = x[15];
        subkey[4] = x[6];
        subkey[5] = x[7];
        subkey[6] = x[8];
        subkey[7] = x[9];
        x.Clear();
    }

    private static void QuarterRound(Span<uint> x, int a, int b, int c, int d)
    {
        x[b] ^= uint.RotateLeft(x[a] + x[d], 7);
        x[c] ^= uint.RotateLeft(x[b] + x[a], 9);
        x[d] ^= uint.RotateLeft(x[c] + x[b], 13);
        x[a] ^= uint.RotateLeft(x[d] + x[c], 18);
    }

    /// <summary>4 keystream blocks at once, one block per vector lane, into the first 256 bytes of the buffer.</summary>
    private void Generate4()
    {
        var s = _input;
        var c = _counter;
        var x0 = Vector128.Create(s[0]);
        var x1 = Vector128.Create(s[1]);
        var x2 = Vector128.Create(s[2]);
        var x3 = Vector128.Create(s[3]);
        var x4 = Vector128.Create(s[4]);
        var x5 = Vector128.Create(s[5]);
        var x6 = Vector128.Create(s[6]);
        var x7 = Vector128.Create(s[7]);
        var x10 = Vector128.Create(s[10]);
        var x11 = Vector128.Create(s[11]);
        var x12 = Vector128.Create(s[12]);
        var x13 = Vector128.Create(s[13]);
        var x14 = Vector128.Create(s[14]);
        var x15 = Vector128.Create(s[15]);
        var c8 = Vector128.Create((uint)(c + 0), (uint)(c + 1), (uint)(c + 2), (uint)(c + 3));
        var c9 = Vector128.Create((uint)((c + 0) >> 32), (uint)((c + 1) >> 32), (uint)((c + 2) >> 32), (uint)((c + 3) >> 32));
        var x8 = c8;
        var x9 = c9;
        Vector128<uint> t;
        for (var i = 0; i < 10; i++)
        {
            t = x0 + x12;
            x4 ^= Vector128.ShiftLeft(t, 7) | Vector128.ShiftRightLogical(t, 25);
            t = x4 + x0;
            x8 ^= Vector128.ShiftLeft(t, 9) | Vector128.ShiftRightLogical(t, 23);
            t = x8 + x4;
            x12 ^= Vector128.ShiftLeft(t, 13) | Vector128.ShiftRightLogical(t, 19);
            t = x12 + x8;
            x0 ^= Vector128.ShiftLeft(t, 18) | Vector128.ShiftRightLogical(t, 14);
            t = x5 + x1;
            x9 ^= Vector128.ShiftLeft(t, 7) | Vector128.ShiftRightLogical(t, 25);
            t = x9 + x5;
            x13 ^= Vector128.ShiftLeft(t, 9) | Vector128.ShiftRightLogical(t, 23);
            t = x13 + x9;
            x1 ^= Vector128.ShiftLeft(t, 13) | Vector128.ShiftRightLogical(t, 19);
            t = x1 + x13;
            x5 ^= Vector128.ShiftLeft(t, 18) | Vector128.ShiftRightLogical(t, 14);
            t = x10 + x6;
            x14 ^= Vector128.ShiftLeft(t, 7) | Vector128.ShiftRightLogical(t, 25);
            t = x14 + x10;
            x2 ^= Vector128.ShiftLeft(t, 9) | Vector128.ShiftRightLogical(t, 23);
            t = x2 + x14;
            x6 ^= Vector128.ShiftLeft(t, 13) | Vector128.ShiftRightLogical(t, 19);
            t = x6 + x2;
            x10 ^= Vector128.ShiftLeft(t, 18) | Vector128.ShiftRightLogical(t, 14);
            t = x15 + x11;
            x3 ^= Vector128.ShiftLeft(t, 7) | Vector128.ShiftRightLogical(t, 25);
            t = x3 + x15;
            x7 ^= Vector128.ShiftLeft(t, 9) | Vector128.ShiftRightLogical(t, 23);
            t = x7 + x3;
            x11 ^= Vector128.ShiftLeft(t, 13) | Vector128.ShiftRightLogical(t, 19);
            t = x11 + x7;
            x15 ^= Vector128.ShiftLeft(t, 18) | Vector128.ShiftRightLogical(t, 14);
            t = x0 + x3;
            x1 ^= Vector128.ShiftLeft(t, 7) | Vector128.ShiftRightLogical(t, 25);
            t = x1 + x0;
            x2 ^= Vector128.ShiftLeft(t, 9) | Vector128.ShiftRightLogical(t, 23);
            t = x2 + x1;
            x3 ^= Vector128.ShiftLeft(t, 13) | Vector128.ShiftRightLogical(t, 19);
            t = x3 + x2;
            x0 ^= Vector128.ShiftLeft(t, 18) | Vector128.ShiftRightLogical(t, 14);
            t = x5 + x4;
            x6 ^= Vector128.ShiftLeft(t, 7) | Vector128.ShiftRightLogical(t, 25);
            t = x6 + x5;
            x7 ^= Vector128.ShiftLeft(t, 9) | Vector128.ShiftRightLogical(t, 23);
            t = x7 + x6;
            x4 ^= Vector128.ShiftLeft(t, 13) | Vector128.ShiftRightLogical(t, 19);
            t = x4 + x7;
            x5 ^= Vector128.ShiftLeft(t, 18) | Vector128.ShiftRightLogical(t, 14);
            t = x10 + x9;
            x11 ^= Vector128.ShiftLeft(t, 7) | Vector128.ShiftRightLogical(t, 25);
            t = x11 + x10;
            x8 ^= Vector128.ShiftLeft(t, 9) | Vector128.ShiftRightLogical(t, 23);
            t = x8 + x11;
            x9 ^= Vector128.ShiftLeft(t, 13) | Vector128.ShiftRightLogical(t, 19);
            t = x9 + x8;
            x10 ^= Vector128.ShiftLeft(t, 18) | Vector128.ShiftRightLogical(t, 14);
            t = x15 + x14;
            x12 ^= Vector128.ShiftLeft(t, 7) | Vector128.ShiftRightLogical(t, 25);
            t = x12 + x15;
            x13 ^= Vector128.ShiftLeft(t, 9) | Vector128.ShiftRightLogical(t, 23);
            t = x13 + x12;
            x14 ^= Vector128.ShiftLeft(t, 13) | Vector128.ShiftRightLogical(t, 19);
            t = x14 + x13;
            x15 ^= Vector128.ShiftLeft(t, 18) | Vector128.ShiftRightLogical(t, 14);
        }
        x0 += Vector128.Create(s[0]);
        x1 += Vector128.Create(s[1]);
        x2 += Vector128.Create(s[2]);
        x3 += Vector128.Create(s[3]);
        x4 += Vector128.Create(s[4]);
        x5 += Vector128.Create(s[5]);
        x6 += Vector128.Create(s[6]);
        x7 += Vector128.Create(s[7]);
        x10 += Vector128.Create(s[10]);
        x11 += Vector128.Create(s[11]);
        x12 += Vector128.Create(s[12]);
        x13 += Vector128.Create(s[13]);
        x14 += Vector128.Create(s[14]);
        x15 += Vector128.Create(s[15]);
        x8 += c8;
        x9 += c9;
        var ks = MemoryMarshal.Cast<byte, uint>(_keystream.AsSpan());
        Store(x0, ks, 0);
        Store(x1, ks, 1);
        Store(x2, ks, 2);
        Store(x3, ks, 3);
        Store(x4, ks, 4);
        Store(x5, ks, 5);
        Store(x6, ks, 6);
        Store(x7, ks, 7);
        Store(x8, ks, 8);
        Store(x9, ks, 9);
        Store(x10, ks, 10);
        Store(x11, ks, 11);
        Store(x12, ks, 12);
        Store(x13, ks, 13);
        Store(x14, ks, 14);
        Store(x15, ks, 15);
        _counter = c + 4;
    }

    private static void Store(Vector128<uint> v, Span<uint> ks, int word)
    {
        for (var lane = 0; lane < Vector128<uint>.Count; lane++)
        {
            ks[(16 * lane) + word] = BitConverter.IsLittleEndian ? v.GetElement(lane) : BinaryPrimitives.ReverseEndianness(v.GetElement(lane));
        }
    }

    /// <summary>8 keystream blocks at once, one block per vector lane, into the first 512 bytes of the buffer.</summary>
    private void Generate8()
    {
        var s = _input;
        var c = _counter;
        var x0 = Vector256.Create(s[0]);
        var x1 = Vector256.Create(s[1]);
        var x2 = Vector256.Create(s[2]);
        var x3 = Vector256.Create(s[3]);
        var x4 = Vector256.Create(s[4]);
        var x5 = Vector256.Create(s[5]);
        var x6 = Vector256.Create(s[6]);
        var x7 = Vector256.Create(s[7]);
        var x10 = Vector256.Create(s[10]);
        var x11 = Vector256.Create(s[11]);
        var x12 = Vector256.Create(s[12]);
        var x13 = Vector256.Create(s[13]);
        var x14 = Vector256.Create(s[14]);
        var x15 = Vector256.Create(s[15]);
        var c8 = Vector256.Create((uint)(c + 0), (uint)(c + 1), (uint)(c + 2), (uint)(c + 3), (uint)(c + 4), (uint)(c + 5), (uint)(c + 6), (uint)(c + 7));
        var c9 = Vector256.Create((uint)((c + 0) >> 32), (uint)((c + 1) >> 32), (uint)((c + 2) >> 32), (uint)((c + 3) >> 32), (uint)((c + 4) >> 32), (uint)((c + 5) >> 32), (uint)((c + 6) >> 32), (uint)((c + 7) >> 32));
        var x8 = c8;
        var x9 = c9;
        Vector256<uint> t;
        for (var i = 0; i < 10; i++)
        {
            t = x0 + x12;
            x4 ^= Vector256.ShiftLeft(t, 7) | Vector256.ShiftRightLogical(t, 25);
            t = x4 + x0;
            x8 ^= Vector256.ShiftLeft(t, 9) | Vector256.ShiftRightLogical(t, 23);
            t = x8 + x4;
            x12 ^= Vector256.ShiftLeft(t, 13) | Vector256.ShiftRightLogical(t, 19);
            t = x12 + x8;
            x0 ^= Vector256.ShiftLeft(t, 18) | Vector256.ShiftRightLogical(t, 14);
            t = x5 + x1;
            x9 ^= Vector256.ShiftLeft(t, 7) | Vector256.ShiftRightLogical(t, 25);
            t = x9 + x5;
            x13 ^= Vector256.ShiftLeft(t, 9) | Vector256.ShiftRightLogical(t, 23);
            t = x13 + x9;
            x1 ^= Vector256.ShiftLeft(t, 13) | Vector256.ShiftRightLogical(t, 19);
            t = x1 + x13;
            x5 ^= Vector256.ShiftLeft(t, 18) | Vector256.ShiftRightLogical(t, 14);
            t = x10 + x6;
            x14 ^= Vector256.ShiftLeft(t, 7) | Vector256.ShiftRightLogical(t, 25);
            t = x14 + x10;
            x2 ^= Vector256.ShiftLeft(t, 9) | Vector256.ShiftRightLogical(t, 23);
            t = x2 + x14;
            x6 ^= Vector256.ShiftLeft(t, 13) | Vector256.ShiftRightLogical(t, 19);
            t = x6 + x2;
            x10 ^= Vector256.ShiftLeft(t, 18) | Vector256.ShiftRightLogical(t, 14);
            t = x15 + x11;
            x3 ^= Vector256.ShiftLeft(t, 7) | Vector256.ShiftRightLogical(t, 25);
            t = x3 + x15;
            x7 ^= Vector256.ShiftLeft(t, 9) | Vector256.ShiftRightLogical(t, 23);
            t = x7 + x3;
            x11 ^= Vector256.ShiftLeft(t, 13) | Vector256.ShiftRightLogical(t, 19);
            t = x11 + x7;
            x15 ^= Vector256.ShiftLeft(t, 18) | Vector256.ShiftRightLogical(t, 14);
            t = x0 + x3;
            x1 ^= Vector256.ShiftLeft(t, 7) | Vector256.ShiftRightLogical(t, 25);
            t = x1 + x0;
            x2 ^= Vector256.ShiftLeft(t, 9) | Vector256.ShiftRightLogical(t, 23);
            t = x2 + x1;
            x3 ^= Vector256.ShiftLeft(t, 13) | Vector256.ShiftRightLogical(t, 19);
            t = x3 + x2;
            x0 ^= Vector256.ShiftLeft(t, 18) | Vector256.ShiftRightLogical(t, 14);
            t = x5 + x4;
            x6 ^= Vector256.ShiftLeft(t, 7) | Vector256.ShiftRightLogical(t, 25);
            t = x6 + x5;
            x7 ^= Vector256.ShiftLeft(t, 9) | Vector256.ShiftRightLogical(t, 23);
            t = x7 + x6;
            x4 ^= Vector256.ShiftLeft(t, 13) | Vector256.ShiftRightLogical(t, 19);
            t = x4 + x7;
            x5 ^= Vector256.ShiftLeft(t, 18) | Vector256.ShiftRightLogical(t, 14);
            t = x10 + x9;
            x11 ^= Vector256.ShiftLeft(t, 7) | Vector256.ShiftRightLogical(t, 25);
            t = x11 + x10;
            x8 ^= Vector256.ShiftLeft(t, 9) | Vector256.ShiftRightLogical(t, 23);
            t = x8 + x11;
            x9 ^= Vector256.ShiftLeft(t, 13) | Vector256.ShiftRightLogical(t, 19);
            t = x9 + x8;
            x10 ^= Vector256.ShiftLeft(t, 18) | Vector256.ShiftRightLogical(t, 14);
            t = x15 + x14;
            x12 ^= Vector256.ShiftLeft(t, 7) | Vector256.ShiftRightLogical(t, 25);
            t = x12 + x15;
            x13 ^= Vector256.ShiftLeft(t, 9) | Vector256.ShiftRightLogical(t, 23);
            t = x13 + x12;
            x14 ^= Vector256.ShiftLeft(t, 13) | Vector256.ShiftRightLogical(t, 19);
            t = x14 + x13;
            x15 ^= Vector256.ShiftLeft(t, 18) | Vector256.ShiftRightLogical(t, 14);
        }
        x0 += Vector256.Create(s[0]);
        x1 += Vector256.Create(s[1]);
        x2 += Vector256.Create(s[2]);
        x3 += Vector256.Create(s[3]);
        x4 += Vector256.Create(s[4]);
        x5 += Vector256.Create(s[5]);
        x6 += Vector256.Create(s[6]);
        x7 += Vector256.Create(s[7]);
        x10 += Vector256.Create(s[10]);
        x11 += Vector256.Create(s[11]);
        x12 += Vector256.Create(s[12]);
        x13 += Vector256.Create(s[13]);
        x14 += Vector256.Create(s[14]);
        x15 += Vector256.Create(s[15]);
        x8 += c8;
        x9 += c9;
        var ks = MemoryMarshal.Cast<byte, uint>(_keystream.AsSpan());
        Store(x0, ks, 0);
        Store(x1, ks, 1);
        Store(x2, ks, 2);
        Store(x3, ks, 3);
        Store(x4, ks, 4);
        Store(x5, ks, 5);
        Store(x6, ks, 6);
        Store(x7, ks, 7);
        Store(x8, ks, 8);
        Store(x9, ks, 9);
        Store(x10, ks, 10);
        Store(x11, ks, 11);
        Store(x12, ks, 12);
        Store(x13, ks, 13);
        Store(x14, ks, 14);
        Store(x15, ks, 15);
        _counter = c + 8;
    }

    private static void Store(Vector256<uint> v, Span<uint> ks, int word)
    {
        for (var lane = 0; lane < Vector256<uint>.Count; lane++)
        {
            ks[(16 * lane) + word] = BitConverter.IsLittleEndian ? v.GetElement(lane) : BinaryPrimitives.ReverseEndianness(v.GetElement(lane));
        }
    }
}
