using System.Buffers;
using System.IO.Pipelines;
using Potluck.Protocol.Transport.Memory;

namespace Potluck.Protocol.Tests.Transport;

/// <summary>The memory transport's buffer (a pipe without a pipe's fixed cost): order, bound, ends, memory held.</summary>
public sealed class MemoryBufferTests
{
    private static MemoryBuffer Create(long pause = 64, long resume = 32, int segment = 16) =>
        new(PipeScheduler.Inline, pause, resume, segment);

    [Test]
    public async Task Bytes_arrive_in_order_across_segments_and_the_buffer_holds_nothing_once_read()
    {
        var buffer = Create(pause: 1 << 20, resume: 1 << 19, segment: 16);
        Assert.That(buffer.HoldsMemory, Is.False, "an idle buffer holds no segment");
        var sent = new List<byte>();
        for (var i = 0; i < 20; i++)
        {
            var chunk = Enumerable.Range(0, 7 + i * 3).Select(b => (byte)(b * 31 + i)).ToArray();
            buffer.Writer.Write(chunk);
            sent.AddRange(chunk);
            if (i % 3 == 2)
            {
                var flush = await buffer.Writer.FlushAsync();
                Assert.That(flush.IsCompleted, Is.False);
            }
        }
        await buffer.Writer.FlushAsync();

        var received = new List<byte>();
        while (received.Count < sent.Count)
        {
            var result = await buffer.Reader.ReadAsync();
            // Read a little at a time: what is left stays in order for the next read.
            var take = Math.Min(result.Buffer.Length, 13);
            received.AddRange(result.Buffer.Slice(0, take).ToArray());
            buffer.Reader.AdvanceTo(result.Buffer.GetPosition(take));
        }
        Assert.That(received, Is.EqualTo(sent));
        Assert.That(buffer.Buffered, Is.Zero);
        Assert.That(buffer.HoldsMemory, Is.False, "segments go back to the pool once read");

        buffer.Writer.Complete();
        var end = await buffer.Reader.ReadAsync();
        Assert.That(end.IsCompleted && end.Buffer.IsEmpty, Is.True);
    }

    /// <summary>
    /// An empty buffer's first segment is small (a mesh's every connection may hold one small frame in flight at one
    /// instant: with the default 16 KiB segments, 1,000 nodes announcing a topic to their peers at once held ~150 MiB,
    /// with 2 KiB ones ~64 MiB); a longer burst goes on in segments that double up to full size, and the bytes arrive
    /// intact either way.
    /// </summary>
    [Test]
    public async Task The_first_segment_of_an_empty_buffer_is_small_and_a_burst_goes_on_in_segments_doubling_to_full_size()
    {
        const int segment = 16 * 1024;
        var buffer = Create(pause: 1 << 20, resume: 1 << 19, segment: segment);
        var first = buffer.Writer.GetMemory();
        Assert.That(first.Length, Is.EqualTo(512), "a small frame does not take a large segment");

        var sent = Enumerable.Range(0, 3 * segment + 123).Select(b => (byte)(b * 7)).ToArray();
        buffer.Writer.Write(sent);
        await buffer.Writer.FlushAsync();
        var result = await buffer.Reader.ReadAsync();
        Assert.That(result.Buffer.ToArray(), Is.EqualTo(sent));
        var lengths = new List<int>();
        foreach (var piece in result.Buffer)
        {
            lengths.Add(piece.Length);
        }
        var doubling = new[] { 512, 1024, 2048, 4096, 8192 };
        Assert.That(lengths, Is.EqualTo(doubling.Concat([segment, segment, sent.Length - doubling.Sum() - 2 * segment]).ToArray()),
            "the first segment small, then doubling up to full ones");
        buffer.Reader.AdvanceTo(result.Buffer.End);
        Assert.That(buffer.HoldsMemory, Is.False);
    }

    /// <summary>A first write that asks for more than the first segment gets what it asks for, in one segment.</summary>
    [Test]
    public async Task A_first_write_larger_than_the_first_segment_gets_one_segment_of_its_size()
    {
        var buffer = Create(pause: 1 << 20, resume: 1 << 19, segment: 16 * 1024);
        var frame = Enumerable.Range(0, 1500).Select(b => (byte)b).ToArray();
        frame.CopyTo(buffer.Writer.GetSpan(frame.Length));
        buffer.Writer.Advance(frame.Length);
        await buffer.Writer.FlushAsync();
        var result = await buffer.Reader.ReadAsync();
        Assert.That(result.Buffer.IsSingleSegment, Is.True);
        Assert.That(result.Buffer.ToArray(), Is.EqualTo(frame));
        buffer.Reader.AdvanceTo(result.Buffer.End);
        Assert.That(buffer.HoldsMemory, Is.False);
    }

    [Test]
    public async Task A_reader_that_never_reads_bounds_the_writer_and_reading_below_resume_lets_it_go_on()
    {
        var buffer = Create(pause: 64, resume: 32, segment: 16);
        var data = Enumerable.Range(0, 40).Select(b => (byte)b).ToArray();
        buffer.Writer.Write(data);
        var first = buffer.Writer.FlushAsync();
        Assert.That(first.IsCompletedSuccessfully, Is.True, "40 < 64 bytes: no wait");
        buffer.Writer.Write(data);
        var second = buffer.Writer.FlushAsync();
        Assert.That(second.IsCompleted, Is.False, "80 >= 64 unread bytes: the writer waits");
        Assert.That(buffer.Buffered, Is.EqualTo(80));

        // Reading 30 leaves 50 (not below 32): still waiting. Reading 20 more leaves 30: the flush resumes.
        var result = await buffer.Reader.ReadAsync();
        Assert.That(result.Buffer.Length, Is.EqualTo(80));
        buffer.Reader.AdvanceTo(result.Buffer.GetPosition(30), result.Buffer.End);
        Assert.That(second.IsCompleted, Is.False);
        Assert.That(buffer.Reader.TryRead(out result), Is.True);
        Assert.That(result.Buffer.Slice(0, 10).ToArray(), Is.EqualTo(data[30..40]), "the rest, in order");
        buffer.Reader.AdvanceTo(result.Buffer.GetPosition(20), result.Buffer.End);
        Assert.That(second.IsCompletedSuccessfully, Is.True);
        Assert.That((await second).IsCompleted, Is.False);
        Assert.That(buffer.Buffered, Is.EqualTo(30));
    }

    [Test]
    public async Task A_completed_reader_wakes_the_waiting_writer_and_drops_what_is_buffered()
    {
        var buffer = Create(pause: 64, resume: 32, segment: 16);
        buffer.Writer.Write(new byte[100]);
        var flush = buffer.Writer.FlushAsync();
        Assert.That(flush.IsCompleted, Is.False);
        buffer.Reader.Complete();
        var result = await flush;
        Assert.That(result.IsCompleted, Is.True);
        Assert.That(buffer.HoldsMemory, Is.False);
        buffer.Writer.Write(new byte[10]);
        Assert.That((await buffer.Writer.FlushAsync()).IsCompleted, Is.True);
        Assert.That(buffer.HoldsMemory, Is.False, "bytes nobody will read are not kept");
    }

    [Test]
    public async Task A_failed_writer_fails_the_next_read_and_cancellation_wakes_a_parked_read()
    {
        var buffer = Create();
        var read = buffer.Reader.ReadAsync();
        Assert.That(read.IsCompleted, Is.False);
        buffer.Reader.CancelPendingRead();
        var canceled = await read;
        Assert.That(canceled.IsCanceled, Is.True);
        buffer.Reader.AdvanceTo(canceled.Buffer.Start);

        using var cts = new CancellationTokenSource();
        var byToken = buffer.Reader.ReadAsync(cts.Token);
        cts.Cancel();
        Assert.That(async () => await byToken, Throws.InstanceOf<OperationCanceledException>());

        buffer.Writer.Write(new byte[] { 1, 2, 3 });
        await buffer.Writer.FlushAsync();
        buffer.Writer.Complete(new IOException("reset"));
        Assert.That(async () => await buffer.Reader.ReadAsync(), Throws.InstanceOf<IOException>());
    }
}
