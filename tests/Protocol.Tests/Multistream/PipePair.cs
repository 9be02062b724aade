using System.Buffers;
using System.IO.Pipelines;

namespace Potluck.Protocol.Tests.Multistream;

/// <summary>Two cross-wired in-memory pipes: what one end writes, the other reads. Inline schedulers keep runs deterministic.</summary>
internal static class PipePair
{
    public static PipeOptions InlineUnbounded { get; } = new(
        readerScheduler: PipeScheduler.Inline,
        writerScheduler: PipeScheduler.Inline,
        pauseWriterThreshold: 0,
        useSynchronizationContext: false);

    public static (IDuplexPipe A, IDuplexPipe B) Create(PipeOptions? options = null)
    {
        var ab = new Pipe(options ?? InlineUnbounded);
        var ba = new Pipe(options ?? InlineUnbounded);
        return (new DuplexPipe(ba.Reader, ab.Writer), new DuplexPipe(ab.Reader, ba.Writer));
    }

    public static async Task<byte[]> ReadExactlyAsync(PipeReader reader, int count)
    {
        var result = await reader.ReadAtLeastAsync(count);
        if (result.Buffer.Length < count)
        {
            reader.AdvanceTo(result.Buffer.Start, result.Buffer.End);
            throw new EndOfStreamException($"wanted {count} bytes, stream ended after {result.Buffer.Length}");
        }
        var bytes = result.Buffer.Slice(0, count).ToArray();
        reader.AdvanceTo(result.Buffer.GetPosition(count));
        return bytes;
    }

    /// <summary>Everything buffered right now, without waiting (the pipes are inline, so "now" is deterministic).</summary>
    public static byte[] ReadBuffered(PipeReader reader)
    {
        if (!reader.TryRead(out var result))
        {
            return [];
        }
        var bytes = result.Buffer.ToArray();
        reader.AdvanceTo(result.Buffer.End);
        return bytes;
    }

    public static async Task WriteAsync(PipeWriter writer, params byte[][] chunks)
    {
        foreach (var chunk in chunks)
        {
            await writer.WriteAsync(chunk);
        }
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }
}
