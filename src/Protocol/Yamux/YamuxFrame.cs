using System.Buffers;
using System.Buffers.Binary;

namespace Potluck.Protocol.Yamux;

/// <summary>The yamux frame type (the second header byte).</summary>
public enum YamuxFrameType : byte
{
    /// <summary>Stream data; <see cref="YamuxHeader.Length"/> is the payload length.</summary>
    Data = 0,
    /// <summary>Grants send window; <see cref="YamuxHeader.Length"/> is the window delta.</summary>
    WindowUpdate = 1,
    /// <summary>Liveness / RTT; <see cref="YamuxHeader.Length"/> is an opaque value echoed back.</summary>
    Ping = 2,
    /// <summary>Session termination; <see cref="YamuxHeader.Length"/> is a <see cref="YamuxGoAwayCode"/>.</summary>
    GoAway = 3,
}

/// <summary>Yamux header flags. Unknown bits are ignored on receipt.</summary>
[Flags]
public enum YamuxFlags : ushort
{
    None = 0,
    /// <summary>Opens a stream.</summary>
    Syn = 1,
    /// <summary>Acknowledges a stream open, or answers a ping.</summary>
    Ack = 2,
    /// <summary>Half-closes the sender's side of a stream.</summary>
    Fin = 4,
    /// <summary>Aborts a stream in both directions.</summary>
    Rst = 8,
}

/// <summary>Error codes carried in the length field of a GoAway frame.</summary>
public enum YamuxGoAwayCode : uint
{
    Normal = 0,
    ProtocolError = 1,
    InternalError = 2,
}

/// <summary>
/// The 12-byte yamux header: version (0), type, flags (u16 BE), stream id (u32 BE), length (u32 BE).
/// For data frames the length is followed by that many payload bytes; for the other types it is a value.
/// </summary>
public readonly record struct YamuxHeader(YamuxFrameType Type, YamuxFlags Flags, uint StreamId, uint Length)
{
    /// <summary>Size of the encoded header in bytes.</summary>
    public const int Size = 12;

    /// <summary>The only protocol version defined.</summary>
    public const byte Version = 0;

    /// <summary>Writes the header into the first <see cref="Size"/> bytes of <paramref name="destination"/>.</summary>
    public void Write(Span<byte> destination)
    {
        if (destination.Length < Size)
        {
            throw new ArgumentException("a yamux header needs 12 bytes", nameof(destination));
        }

        destination[0] = Version;
        destination[1] = (byte)Type;
        BinaryPrimitives.WriteUInt16BigEndian(destination[2..], (ushort)Flags);
        BinaryPrimitives.WriteUInt32BigEndian(destination[4..], StreamId);
        BinaryPrimitives.WriteUInt32BigEndian(destination[8..], Length);
    }

    /// <summary>
    /// Reads one header. On <see cref="DecodeStatus.Done"/> the reader has advanced past it; otherwise
    /// nothing is consumed. An unknown version or type is <see cref="DecodeStatus.Invalid"/>.
    /// </summary>
    public static DecodeStatus TryRead(ref SequenceReader<byte> reader, out YamuxHeader header, out string? error)
    {
        header = default;
        error = null;
        if (reader.Remaining < Size)
        {
            return DecodeStatus.NeedMoreData;
        }

        Span<byte> raw = stackalloc byte[Size];
        reader.TryCopyTo(raw);
        if (raw[0] != Version)
        {
            error = $"unsupported version {raw[0]}";
            return DecodeStatus.Invalid;
        }

        if (raw[1] > (byte)YamuxFrameType.GoAway)
        {
            error = $"unknown frame type {raw[1]}";
            return DecodeStatus.Invalid;
        }

        header = new YamuxHeader(
            (YamuxFrameType)raw[1],
            (YamuxFlags)BinaryPrimitives.ReadUInt16BigEndian(raw[2..]),
            BinaryPrimitives.ReadUInt32BigEndian(raw[4..]),
            BinaryPrimitives.ReadUInt32BigEndian(raw[8..]));
        reader.Advance(Size);
        return DecodeStatus.Done;
    }
}

/// <summary>Whole-frame helpers (header plus data payload) for tests, tools and small messages.</summary>
public static class YamuxFrame
{
    /// <summary>
    /// Reads a header and, for data frames, its payload. A data length above <paramref name="maxPayload"/> is
    /// <see cref="DecodeStatus.Invalid"/> as soon as the header is seen, before any payload is awaited. On
    /// anything but <see cref="DecodeStatus.Done"/> nothing is consumed. The payload is a slice of the input.
    /// </summary>
    public static DecodeStatus TryRead(
        ref SequenceReader<byte> reader,
        uint maxPayload,
        out YamuxHeader header,
        out ReadOnlySequence<byte> payload,
        out string? error)
    {
        payload = ReadOnlySequence<byte>.Empty;
        var status = YamuxHeader.TryRead(ref reader, out header, out error);
        if (status != DecodeStatus.Done || header.Type != YamuxFrameType.Data)
        {
            return status;
        }

        if (header.Length > maxPayload)
        {
            reader.Rewind(YamuxHeader.Size);
            error = $"data frame of {header.Length} bytes exceeds the limit of {maxPayload}";
            return DecodeStatus.Invalid;
        }

        if (reader.Remaining < header.Length)
        {
            reader.Rewind(YamuxHeader.Size);
            return DecodeStatus.NeedMoreData;
        }

        payload = reader.UnreadSequence.Slice(0, header.Length);
        reader.Advance(header.Length);
        return DecodeStatus.Done;
    }

    /// <summary>Writes a header and (for data frames) its payload; the header length must match the payload.</summary>
    public static void Write(IBufferWriter<byte> writer, in YamuxHeader header, ReadOnlySpan<byte> payload)
    {
        if (header.Type == YamuxFrameType.Data ? header.Length != (uint)payload.Length : !payload.IsEmpty)
        {
            throw new ArgumentException("payload does not match the header", nameof(payload));
        }

        header.Write(writer.GetSpan(YamuxHeader.Size));
        writer.Advance(YamuxHeader.Size);
        if (!payload.IsEmpty)
        {
            writer.Write(payload);
        }
    }
}
