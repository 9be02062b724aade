using System.Buffers;
using System.IO.Pipelines;

namespace Potluck.Protocol.Tests.Transport;

/// <summary>Small helpers for driving raw connections in tests. The guard timeout only turns a hang into a failure.</summary>
internal static class PipeTestExtensions
{
    public static readonly TimeSpan Guard = TimeSpan.FromSeconds(30);

    public static Task<T> Guarded<T>(this ValueTask<T> task) => task.AsTask().WaitAsync(Guard);

    public static Task Guarded(this Task task) => task.WaitAsync(Guard);

    public static Task<T> Guarded<T>(this Task<T> task) => task.WaitAsync(Guard);

    public static async Task WriteAndFlushAsync(this PipeWriter writer, ReadOnlyMemory<byte> data)
    {
        var result = await writer.WriteAsync(data);
        Assert.That(result.IsCompleted, Is.False, "the other side stopped reading");
    }

    /// <summary>Reads exactly <paramref name="count"/> bytes, failing if the stream ends first.</summary>
    public static async Task<byte[]> ReadExactlyAsync(this PipeReader reader, int count)
    {
        var result = await reader.ReadAtLeastAsync(count);
        Assert.That(result.Buffer.Length, Is.GreaterThanOrEqualTo(count), "the stream ended early");
        var bytes = result.Buffer.Slice(0, count).ToArray();
        reader.AdvanceTo(result.Buffer.GetPosition(count));
        return bytes;
    }

    /// <summary>Reads until the writer completes and returns everything.</summary>
    public static async Task<byte[]> ReadToEndAsync(this PipeReader reader)
    {
        var all = new ArrayBufferWriter<byte>();
        while (true)
        {
            var result = await reader.ReadAsync();
            foreach (var segment in result.Buffer)
            {
                all.Write(segment.Span);
            }
            reader.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                return all.WrittenSpan.ToArray();
            }
        }
    }

    /// <summary>Copies everything from <paramref name="reader"/> back into <paramref name="writer"/> until the end.</summary>
    public static async Task EchoAsync(PipeReader reader, PipeWriter writer)
    {
        while (true)
        {
            var result = await reader.ReadAsync();
            foreach (var segment in result.Buffer)
            {
                writer.Write(segment.Span);
            }
            reader.AdvanceTo(result.Buffer.End);
            var flush = await writer.FlushAsync();
            if (result.IsCompleted || flush.IsCompleted)
            {
                break;
            }
        }
        await writer.CompleteAsync();
    }

    public static byte[] RandomBytes(int count, int seed)
    {
        var bytes = new byte[count];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    /// <summary>Writes <paramref name="data"/> in chunks of <paramref name="chunk"/> bytes, flushing each, then completes.</summary>
    public static async Task WriteAllAsync(PipeWriter writer, byte[] data, int chunk)
    {
        for (var offset = 0; offset < data.Length; offset += chunk)
        {
            await writer.WriteAndFlushAsync(data.AsMemory(offset, Math.Min(chunk, data.Length - offset)));
        }
        await writer.CompleteAsync();
    }
}
