using System.Buffers;

namespace Potluck.Protocol.Multiformats;

/// <summary>
/// Unsigned LEB128 varints as the multiformats spec defines them (https://github.com/multiformats/unsigned-varint):
/// at most 9 bytes, minimally encoded. Decoders never read past the limit they are given.
/// Deviation from protobuf varints: values of 2^63 and above (10 bytes) are not representable; the writers
/// throw <see cref="ArgumentOutOfRangeException"/> for them rather than emit bytes every reader must reject.
/// </summary>
public static class Varint
{
    /// <summary>The spec caps varints at 9 bytes (63 bits).</summary>
    public const int MaxBytes = 9;

    /// <summary>The largest value a 9-byte varint holds: 2^63 - 1.</summary>
    public const ulong MaxValue = (1UL << 63) - 1;

    /// <summary>The number of bytes <paramref name="value"/> encodes to (1..9).</summary>
    public static int Size(ulong value)
    {
        ThrowIfTooLarge(value);
        var n = 1;
        while (value >= 0x80)
        {
            value >>= 7;
            n++;
        }
        return n;
    }

    /// <summary>Writes <paramref name="value"/> at the start of <paramref name="destination"/>; returns the bytes written.</summary>
    public static int Write(Span<byte> destination, ulong value)
    {
        ThrowIfTooLarge(value);
        var i = 0;
        while (value >= 0x80)
        {
            destination[i++] = (byte)(value | 0x80);
            value >>= 7;
        }
        destination[i++] = (byte)value;
        return i;
    }

    public static void Write(IBufferWriter<byte> writer, ulong value)
    {
        var span = writer.GetSpan(MaxBytes);
        writer.Advance(Write(span, value));
    }

    public static byte[] Encode(ulong value)
    {
        var bytes = new byte[Size(value)];
        Write(bytes, value);
        return bytes;
    }

    private static void ThrowIfTooLarge(ulong value)
    {
        if (value > MaxValue)
        {
            throw new ArgumentOutOfRangeException(nameof(value), value, "multiformats varints hold at most 63 bits");
        }
    }

    /// <summary>
    /// Decodes a varint from the start of <paramref name="source"/>. <see cref="DecodeStatus.Invalid"/> for a
    /// non-minimal encoding or one longer than <see cref="MaxBytes"/>; <see cref="DecodeStatus.NeedMoreData"/>
    /// when <paramref name="source"/> ends inside the varint. <paramref name="value"/> and
    /// <paramref name="consumed"/> are 0 unless the status is <see cref="DecodeStatus.Done"/>.
    /// </summary>
    public static DecodeStatus TryRead(ReadOnlySpan<byte> source, out ulong value, out int consumed)
    {
        value = 0;
        consumed = 0;
        ulong result = 0;
        for (var i = 0; i < MaxBytes; i++)
        {
            if (i >= source.Length)
            {
                return DecodeStatus.NeedMoreData;
            }
            var b = source[i];
            result |= (ulong)(b & 0x7F) << (7 * i);
            if ((b & 0x80) == 0)
            {
                if (b == 0 && i > 0)
                {
                    return DecodeStatus.Invalid; // not minimal
                }
                value = result;
                consumed = i + 1;
                return DecodeStatus.Done;
            }
        }
        return DecodeStatus.Invalid; // a tenth byte would be needed
    }

    /// <summary>Decodes a varint from a sequence reader, advancing it only on success.</summary>
    public static DecodeStatus TryRead(ref SequenceReader<byte> reader, out ulong value)
    {
        Span<byte> tmp = stackalloc byte[MaxBytes];
        var available = (int)Math.Min(reader.Remaining, MaxBytes);
        reader.TryCopyTo(tmp[..available]);
        var status = TryRead(tmp[..available], out value, out var consumed);
        if (status == DecodeStatus.Done)
        {
            reader.Advance(consumed);
        }
        return status;
    }

    /// <summary>Decodes a varint or throws <see cref="FormatException"/>.</summary>
    public static ulong Read(ReadOnlySpan<byte> source, out int consumed)
    {
        var status = TryRead(source, out var value, out consumed);
        if (status != DecodeStatus.Done)
        {
            throw new FormatException(status == DecodeStatus.NeedMoreData ? "truncated varint" : "invalid varint");
        }
        return value;
    }
}
