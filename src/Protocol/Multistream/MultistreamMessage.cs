using System.Buffers;
using System.Text;
using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.Multistream;

/// <summary>
/// One multistream-select message: <c>uvarint(len) | utf8 text | '\n'</c>, where <c>len</c> counts the newline.
/// Used for the header, protocol proposals and echoes, <c>na</c> and <c>ls</c>.
/// </summary>
public static class MultistreamMessage
{
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>
    /// Decodes one message from <paramref name="reader"/>. On <see cref="DecodeStatus.Done"/> the reader is advanced
    /// past it and <paramref name="text"/> holds it without the newline; otherwise the reader is left where it was.
    /// The length is checked against <paramref name="maxLength"/> before anything is allocated.
    /// </summary>
    public static DecodeStatus TryRead(ref SequenceReader<byte> reader, int maxLength, out string? text, out string? error)
    {
        text = null;
        error = null;
        var r = reader; // work on a copy: the caller's reader moves only on Done
        var status = Varint.TryRead(ref r, out var length);
        if (status == DecodeStatus.NeedMoreData)
        {
            return status;
        }
        if (status == DecodeStatus.Invalid)
        {
            error = "invalid varint length prefix";
            return status;
        }
        if (length == 0)
        {
            error = "empty message (a message must end in a newline)";
            return DecodeStatus.Invalid;
        }
        if (length > (ulong)maxLength)
        {
            error = $"message of {length} bytes exceeds the {maxLength}-byte limit";
            return DecodeStatus.Invalid;
        }
        var n = (int)length;
        if (r.Remaining < n)
        {
            return DecodeStatus.NeedMoreData;
        }
        var body = r.UnreadSequence.Slice(0, n);
        byte last = 0;
        body.Slice(n - 1).CopyTo(new Span<byte>(ref last));
        if (last != (byte)'\n')
        {
            error = "message does not end in a newline";
            return DecodeStatus.Invalid;
        }
        try
        {
            text = StrictUtf8.GetString(body.Slice(0, n - 1));
        }
        catch (DecoderFallbackException)
        {
            error = "message is not valid UTF-8";
            return DecodeStatus.Invalid;
        }
        r.Advance(n);
        reader = r;
        return DecodeStatus.Done;
    }

    /// <summary>Bytes <see cref="Write"/> produces for <paramref name="text"/>.</summary>
    public static int EncodedLength(string text)
    {
        var n = StrictUtf8.GetByteCount(text) + 1;
        return Varint.Size((ulong)n) + n;
    }

    /// <summary>Writes <paramref name="text"/> as one message (prefix, UTF-8, newline) without flushing.</summary>
    public static void Write(IBufferWriter<byte> writer, string text)
    {
        var n = StrictUtf8.GetByteCount(text) + 1;
        var span = writer.GetSpan(Varint.Size((ulong)n) + n);
        var written = Varint.Write(span, (ulong)n);
        written += StrictUtf8.GetBytes(text, span[written..]);
        span[written++] = (byte)'\n';
        writer.Advance(written);
    }

    /// <summary>
    /// Writes the answer to <c>ls</c>: one message whose body is each protocol written as a message of its own,
    /// followed by a newline (the form go-multistream and rust-libp2p use).
    /// </summary>
    public static void WriteProtocolList(IBufferWriter<byte> writer, IReadOnlyCollection<string> protocols)
    {
        var inner = 0;
        foreach (var p in protocols)
        {
            inner += EncodedLength(p);
        }
        var n = inner + 1;
        var span = writer.GetSpan(Varint.Size((ulong)n) + n);
        var written = Varint.Write(span, (ulong)n);
        writer.Advance(written);
        foreach (var p in protocols)
        {
            Write(writer, p);
        }
        span = writer.GetSpan(1);
        span[0] = (byte)'\n';
        writer.Advance(1);
    }

    /// <summary>
    /// Checks that <paramref name="protocol"/> can be proposed: non-empty, no newline, valid UTF-16 (so valid UTF-8),
    /// and fits in <paramref name="maxLength"/> with its newline.
    /// </summary>
    internal static void ValidateProtocolId(string protocol, int maxLength, string paramName)
    {
        ArgumentNullException.ThrowIfNull(protocol, paramName);
        if (protocol.Length == 0)
        {
            throw new ArgumentException("a protocol id must not be empty", paramName);
        }
        if (protocol.Contains('\n'))
        {
            throw new ArgumentException("a protocol id must not contain a newline", paramName);
        }
        int bytes;
        try
        {
            bytes = StrictUtf8.GetByteCount(protocol);
        }
        catch (EncoderFallbackException e)
        {
            throw new ArgumentException("a protocol id must be valid Unicode", paramName, e);
        }
        if (bytes + 1 > maxLength)
        {
            throw new ArgumentException($"protocol id of {bytes} bytes does not fit the {maxLength}-byte message limit", paramName);
        }
    }
}
