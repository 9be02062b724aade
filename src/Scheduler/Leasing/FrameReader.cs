using System.Buffers;
using System.IO.Pipelines;
using Potluck.Protocol;
using Potluck.Protocol.Multiformats;

namespace Potluck.Scheduler.Leasing;

/// <summary>
/// Reads one unsigned-varint length-prefixed message, consuming its bytes as they arrive. Unlike waiting for the
/// whole message in the pipe, this keeps a muxer's receive window moving (Yamux credits the window only for bytes
/// the application consumes, and its initial window, 256 KiB, is smaller than a lease result may be). The length
/// is checked against <paramref name="maxLength"/> before the message buffer is allocated.
/// </summary>
internal static class FrameReader
{
    /// <summary>One message; null at a clean end of stream before any byte of it.</summary>
    public static async ValueTask<byte[]?> ReadAsync(PipeReader reader, int maxLength, string protocol, CancellationToken ct)
    {
        byte[]? message = null;
        var filled = 0;
        while (true)
        {
            var result = await reader.ReadAsync(ct);
            var buffer = result.Buffer;
            if (message is null)
            {
                var status = TryReadLength(ref buffer, out var length);
                if (status == DecodeStatus.Invalid || (status == DecodeStatus.Done && length > (ulong)maxLength))
                {
                    reader.AdvanceTo(result.Buffer.Start, result.Buffer.End);
                    throw new ProtocolViolationException(protocol, $"message length over the {maxLength}-byte limit or malformed varint");
                }
                if (status == DecodeStatus.NeedMoreData)
                {
                    if (result.IsCompleted)
                    {
                        var empty = result.Buffer.IsEmpty;
                        reader.AdvanceTo(result.Buffer.End);
                        return empty ? null : throw new ProtocolViolationException(protocol, "stream ended inside a length prefix");
                    }
                    reader.AdvanceTo(result.Buffer.Start, result.Buffer.End);
                    continue;
                }
                message = new byte[(int)length];
            }
            var take = (int)Math.Min(buffer.Length, message.Length - filled);
            buffer.Slice(0, take).CopyTo(message.AsSpan(filled));
            filled += take;
            reader.AdvanceTo(buffer.GetPosition(take));
            if (filled == message.Length)
            {
                return message;
            }
            if (result.IsCompleted)
            {
                throw new ProtocolViolationException(protocol, "stream ended inside a message");
            }
            if (result.IsCanceled)
            {
                throw new OperationCanceledException();
            }
        }
    }

    private static DecodeStatus TryReadLength(ref ReadOnlySequence<byte> buffer, out ulong length)
    {
        var reader = new SequenceReader<byte>(buffer);
        var status = Varint.TryRead(ref reader, out length);
        if (status == DecodeStatus.Done)
        {
            buffer = buffer.Slice(reader.Position);
        }
        return status;
    }
}
