using System.Buffers;
using System.IO.Pipelines;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Muxing;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Framing;

/// <summary>
/// Unsigned-varint length-prefixed messages, the framing of identify, kad-dht, gossipsub and Potluck's
/// own protocols. A length over the caller's limit is a violation detected before any allocation.
/// </summary>
public static class LengthPrefixed
{
    /// <summary>
    /// Reads one message; null at a clean end of stream before any byte of it. Bytes are consumed as they
    /// arrive (into a buffer of the checked length), so a flow-controlled stream keeps crediting its window
    /// even for a message larger than the window.
    /// </summary>
    public static ValueTask<byte[]?> ReadAsync(PipeReader reader, int maxLength, string protocol, CancellationToken ct)
    {
        var read = ReadCoreAsync(reader, null, maxLength, protocol, ct);
        return read.IsCompletedSuccessfully ? new ValueTask<byte[]?>(read.Result.Message) : MessageOfAsync(read);

        static async ValueTask<byte[]?> MessageOfAsync(ValueTask<FramedRead> read) => (await read).Message;
    }

    /// <summary>
    /// <see cref="ReadAsync"/> with the failure that ended the stream (a reset, a closed connection) as a value, where the
    /// reader can give it as one (<see cref="IFailureAsValueReader"/>, a yamux stream's input; other readers throw it as
    /// <see cref="ReadAsync"/> does). Malformed framing and cancellation still throw.
    /// </summary>
    /// <remarks>
    /// One async method per read (the core's own): a long-lived stream's handler parks here between its messages, and a
    /// second method awaiting the first kept a second state machine, its continuation and delegate parked with it.
    /// </remarks>
    public static ValueTask<FramedRead> TryReadAsync(PipeReader reader, int maxLength, string protocol, CancellationToken ct) =>
        ReadCoreAsync(reader, reader as IFailureAsValueReader, maxLength, protocol, ct);

    /// <summary>
    /// One message; neither at a clean end, or (with <paramref name="failing"/>) the failure when the stream failed. A
    /// reader's input completes once: after a clean end there is never a failure, after a failure never a message.
    /// </summary>
    private static async ValueTask<FramedRead> ReadCoreAsync(PipeReader reader, IFailureAsValueReader? failing, int maxLength, string protocol, CancellationToken ct)
    {
        byte[]? message = null;
        var filled = 0;
        while (true)
        {
            var result = failing is null ? await reader.ReadAsync(ct) : await failing.ReadOrFailureAsync(ct);
            if (TryTake(reader, failing, result, maxLength, protocol, ref message, ref filled, out var read))
            {
                return read;
            }
        }
    }

    /// <summary>
    /// Takes what one read of <paramref name="reader"/> gave towards a message (<paramref name="message"/> and
    /// <paramref name="filled"/> carry a message begun by an earlier read): true with the message, the clean end or the
    /// failure; false when it needs more (what was given is consumed or examined). Malformed framing and cancellation throw.
    /// </summary>
    internal static bool TryTake(PipeReader reader, IFailureAsValueReader? failing, in ReadResult result, int maxLength, string protocol,
        ref byte[]? message, ref int filled, out FramedRead read)
    {
        read = default;
        if (result.IsCompleted && failing?.Failure is { } gone)
        {
            // Gone: what was buffered is dropped, as the throwing read drops it.
            reader.AdvanceTo(result.Buffer.End);
            read = new FramedRead(null, gone);
            return true;
        }
        var buffer = result.Buffer;
        if (message is null)
        {
            var header = new SequenceReader<byte>(buffer);
            var status = Varint.TryRead(ref header, out var length);
            if (status == DecodeStatus.Invalid)
            {
                reader.AdvanceTo(buffer.Start, buffer.End);
                throw new ProtocolViolationException(protocol, "malformed message length", ViolationCode.Malformed);
            }
            if (status == DecodeStatus.Done && length > (ulong)maxLength)
            {
                reader.AdvanceTo(buffer.Start, buffer.End);
                throw new ProtocolViolationException(protocol, $"message length over the {maxLength}-byte limit", ViolationCode.TooLarge);
            }
            if (status == DecodeStatus.NeedMoreData)
            {
                if (result.IsCompleted)
                {
                    var empty = buffer.IsEmpty;
                    reader.AdvanceTo(buffer.End);
                    read = empty ? Ended(failing) : throw new ProtocolViolationException(protocol, "stream ended inside a message length", ViolationCode.Malformed);
                    return true;
                }
                ThrowIfCanceled(reader, result);
                reader.AdvanceTo(buffer.Start, buffer.End);
                return false;
            }
            message = length == 0 ? [] : new byte[(int)length];
            buffer = buffer.Slice(header.Position);
        }
        var take = (int)Math.Min(buffer.Length, message.Length - filled);
        buffer.Slice(0, take).CopyTo(message.AsSpan(filled));
        filled += take;
        var consumed = buffer.GetPosition(take);
        if (filled == message.Length)
        {
            reader.AdvanceTo(consumed);
            read = new FramedRead(message, null);
            message = null;
            filled = 0;
            return true;
        }
        if (result.IsCompleted)
        {
            reader.AdvanceTo(consumed);
            throw new ProtocolViolationException(protocol, "stream ended inside a message", ViolationCode.Malformed);
        }
        ThrowIfCanceled(reader, result);
        reader.AdvanceTo(consumed);
        return false;
    }

    /// <summary>No message: the clean end, unless the reader failed (as before, a failure is looked at once the input completed).</summary>
    private static FramedRead Ended(IFailureAsValueReader? failing) =>
        failing?.Failure is { } failure ? new FramedRead(null, failure) : new FramedRead(null, null);

    private static void ThrowIfCanceled(PipeReader reader, ReadResult result)
    {
        if (result.IsCanceled)
        {
            reader.AdvanceTo(result.Buffer.Start, result.Buffer.End);
            throw new OperationCanceledException();
        }
    }

    /// <summary>Decodes one message from the front of <paramref name="buffer"/>, slicing it past the message on success.</summary>
    public static DecodeStatus TryRead(ref ReadOnlySequence<byte> buffer, int maxLength, out byte[] message)
    {
        message = [];
        var reader = new SequenceReader<byte>(buffer);
        var status = Varint.TryRead(ref reader, out var length);
        if (status != DecodeStatus.Done)
        {
            return status;
        }
        if (length > (ulong)maxLength)
        {
            return DecodeStatus.Invalid;
        }
        if (reader.Remaining < (long)length)
        {
            return DecodeStatus.NeedMoreData;
        }
        message = reader.Sequence.Slice(reader.Position, (long)length).ToArray();
        buffer = buffer.Slice(reader.Sequence.GetPosition((long)length, reader.Position));
        return DecodeStatus.Done;
    }

    /// <summary>Writes one message (prefix and body) without flushing.</summary>
    public static void Write(PipeWriter writer, ReadOnlySpan<byte> message)
    {
        Varint.Write(writer, (ulong)message.Length);
        writer.Write(message);
    }

    public static async ValueTask WriteAsync(PipeWriter writer, ReadOnlyMemory<byte> message, CancellationToken ct)
    {
        Write(writer, message.Span);
        var result = await writer.FlushAsync(ct);
        if (result.IsCanceled)
        {
            throw new OperationCanceledException();
        }
    }
}

/// <summary>
/// What <see cref="LengthPrefixed.TryReadAsync"/> got: a <see cref="Message"/>, the stream's clean end (neither), or the
/// failure that ended it (<see cref="Cause"/>, not thrown; <see cref="Failure"/> classifies it).
/// </summary>
public readonly record struct FramedRead(byte[]? Message, Exception? Cause)
{
    /// <summary>The failure that ended the stream, classified; null for a message or a clean end.</summary>
    public Failure? Failure => Cause is null ? null : Failures.Classify(Cause);
}
