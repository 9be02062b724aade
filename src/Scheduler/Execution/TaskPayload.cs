using System.Buffers;
using System.Text;
using MessagePack;

namespace Potluck.Scheduler.Execution;

/// <summary>
/// The bytes a lease carries as its "input": the task's arguments and its stdin, as the MessagePack array
/// <c>[array of str args, bin stdin]</c>. Folding the arguments into the input means the lease's input hash, the
/// provider's attestation and a fraud proof all commit to them without a field of their own. Written and read by
/// hand (no resolver); reading is bounded by <see cref="MaxArgs"/> and <see cref="MaxArgBytes"/> (the sandbox's
/// own defaults) before anything is allocated.
/// </summary>
public sealed record TaskPayload(IReadOnlyList<string> Args, ReadOnlyMemory<byte> Stdin)
{
    /// <summary>Most arguments a payload may carry.</summary>
    public const int MaxArgs = 256;

    /// <summary>Most UTF-8 bytes of all arguments together.</summary>
    public const int MaxArgBytes = 64 * 1024;

    public byte[] Encode()
    {
        var buffer = new ArrayBufferWriter<byte>(Stdin.Length + 64);
        var writer = new MessagePackWriter(buffer);
        writer.WriteArrayHeader(2);
        writer.WriteArrayHeader(Args.Count);
        foreach (var a in Args)
        {
            writer.Write(a);
        }
        writer.Write(Stdin.Span);
        writer.Flush();
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>Decodes a payload from untrusted bytes; false when malformed, over the limits, or followed by trailing bytes.</summary>
    public static bool TryDecode(ReadOnlyMemory<byte> bytes, out TaskPayload payload)
    {
        payload = null!;
        try
        {
            var reader = new MessagePackReader(bytes);
            if (reader.NextMessagePackType != MessagePackType.Array || reader.ReadArrayHeader() != 2
                || reader.NextMessagePackType != MessagePackType.Array)
            {
                return false;
            }
            var count = reader.ReadArrayHeader();
            if (count > MaxArgs)
            {
                return false;
            }
            var args = new string[count];
            long total = 0;
            for (var i = 0; i < count; i++)
            {
                if (reader.NextMessagePackType != MessagePackType.String || reader.ReadStringSequence() is not { } raw)
                {
                    return false;
                }
                total += raw.Length;
                if (total > MaxArgBytes)
                {
                    return false;
                }
                args[i] = Encoding.UTF8.GetString(raw);
            }
            if (reader.NextMessagePackType != MessagePackType.Binary || reader.ReadBytes() is not { } stdin || !reader.End)
            {
                return false;
            }
            var start = (int)(reader.Consumed - stdin.Length);
            payload = new TaskPayload(args, bytes.Slice(start, (int)stdin.Length));
            return true;
        }
        catch (Exception e) when (UntrustedMessagePack.IsMalformed(e))
        {
            return false;
        }
    }
}
