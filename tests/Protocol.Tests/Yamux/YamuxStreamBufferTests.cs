using System.Buffers;
using System.IO.Pipelines;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Tests.Yamux;

/// <summary>The pooled-segment queue under a yamux stream's input and output: order, commit, and segments going back.</summary>
public class SegmentQueueTests
{
    [Test]
    public void WritesAcrossManySegments_ReadBackInOrder_AndEverySegmentGoesBackOnceRead()
    {
        var random = new Random(11);
        var queue = new SegmentQueue();
        var expected = new List<byte>();
        var read = new List<byte>();
        var returned = new List<PooledSegment>();
        for (var round = 0; round < 200; round++)
        {
            var chunk = new byte[random.Next(1, 9000)];
            random.NextBytes(chunk);
            queue.Write(chunk, minimumSize: 4096, largest: 64 * 1024);
            expected.AddRange(chunk);
            if (random.Next(3) == 0)
            {
                continue; // written, not yet committed: invisible
            }

            queue.Commit();
            var committed = queue.Committed;
            Assert.That(committed.Length, Is.EqualTo(expected.Count - read.Count));
            Assert.That(committed.ToArray(), Is.EqualTo(expected.Skip(read.Count).ToArray()));
            var take = random.Next(0, (int)committed.Length + 1);
            foreach (var segment in EnumerateSegments(committed.Slice(0, take)))
            {
                returned.Add(segment);
            }

            read.AddRange(committed.Slice(0, take).ToArray());
            queue.Consume(take, keepTail: false);
        }

        queue.Commit();
        read.AddRange(queue.Committed.ToArray());
        queue.Consume(queue.Length, keepTail: false);

        Assert.That(read, Is.EqualTo(expected), "every byte, in order");
        Assert.That(queue.HoldsMemory, Is.False, "nothing buffered: no segment held");
        Assert.That(returned.Where(s => s.Array.Length > 0), Is.Empty, "every segment read went back to the pool");
    }

    [Test]
    public void UncommittedBytes_AreInvisible_UntilCommitted()
    {
        var queue = new SegmentQueue();
        queue.Write("abc"u8, 4096, 65536);
        queue.Commit();
        queue.Write("def"u8, 4096, 65536);

        Assert.That(queue.Committed.ToArray(), Is.EqualTo("abc"u8.ToArray()));
        Assert.That(queue.Uncommitted, Is.EqualTo(3));
        queue.Consume(3, keepTail: false);
        Assert.That(queue.HoldsMemory, Is.True, "the tail still holds the uncommitted bytes");

        queue.Commit();
        Assert.That(queue.Committed.ToArray(), Is.EqualTo("def"u8.ToArray()));
        queue.Consume(3, keepTail: false);
        Assert.That(queue.HoldsMemory, Is.False);
    }

    [Test]
    public void ReadToTheEnd_WhileTheProducerHoldsTheTail_KeepsOnlyTheTail()
    {
        var queue = new SegmentQueue();
        queue.Write(new byte[5000], 4096, 4096); // two segments
        queue.Commit();
        var first = (PooledSegment)queue.Committed.Start.GetObject()!;
        queue.Consume(5000, keepTail: true);

        Assert.That(first.Array, Is.Empty, "the first segment went back");
        Assert.That(queue.HoldsMemory, Is.True, "the tail is kept for the producer");
        queue.Consume(0, keepTail: false);
        Assert.That(queue.HoldsMemory, Is.False);
    }

    [Test]
    public void AdvanceToAPositionPastTheCommittedEnd_IsRefused()
    {
        var queue = new SegmentQueue();
        queue.Write(new byte[10], 4096, 4096);
        queue.Commit();
        var stale = queue.Committed.End;
        queue.Consume(10, keepTail: false);
        queue.Write(new byte[4], 4096, 4096);
        queue.Commit();

        Assert.Throws<InvalidOperationException>(() => queue.Consume(stale, stale, keepTail: false, out _));
    }

    private static IEnumerable<PooledSegment> EnumerateSegments(ReadOnlySequence<byte> sequence)
    {
        if (sequence.IsEmpty)
        {
            yield break;
        }

        var segment = (PooledSegment)sequence.Start.GetObject()!;
        var end = sequence.End.GetObject();
        while (true)
        {
            // A segment read only up to its middle is not yet returned: the last one counts only when read to its end.
            if (segment != end || sequence.End.GetInteger() == segment.End)
            {
                yield return segment;
            }

            if (segment == end)
            {
                yield break;
            }

            segment = (PooledSegment)segment.Next!;
        }
    }
}

/// <summary>A yamux stream's buffers against a hand-driven peer: they exist only while they hold bytes, and keep every semantic.</summary>
public partial class YamuxConnectionTests
{
    [Test]
    public async Task IdleStream_HoldsNoBuffer_OnceItsBytesAreReadAndSent()
    {
        var (connection, peer) = Start(initiator: false);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Syn, 1, 5), "hello"u8.ToArray());
        var stream = (YamuxStream)await connection.AcceptStreamAsync(default).AsTask().WaitAsync(HangGuard);
        Assert.That(stream.Out.HoldsMemory, Is.False, "nothing written: no output buffer");

        var read = await stream.Input.ReadAtLeastAsync(5).AsTask().WaitAsync(HangGuard);
        Assert.That(read.Buffer.ToArray(), Is.EqualTo("hello"u8.ToArray()));
        Assert.That(stream.In.HoldsMemory, Is.True, "unread bytes are held");
        stream.Input.AdvanceTo(read.Buffer.End);
        Assert.That(stream.In.HoldsMemory, Is.False, "read: the segment went back");

        await stream.Output.WriteAsync("world"u8.ToArray()).AsTask().WaitAsync(HangGuard);
        (YamuxHeader Header, byte[] Payload) frame;
        do
        {
            frame = await peer.ReceiveAsync();
        }
        while (frame.Header.Type != YamuxFrameType.Data);

        Assert.That(frame.Payload, Is.EqualTo("world"u8.ToArray()));
        Assert.That(stream.Out.HoldsMemory, Is.False, "sent: the segment went back");
    }

    /// <summary>
    /// A small message holds a small buffer, written or delivered: a node that tells all its peers something at once (a
    /// subscription) held a 4 KiB segment per stream until its connections' writers took the bytes (~80 KiB per node at
    /// the warm-up's start of a 200-node mesh). More bytes while one is held go on in full-size segments.
    /// </summary>
    [Test]
    public async Task SmallMessage_HoldsASmallFirstSegment_WrittenOrDelivered_AndMoreGoesOnInFullSegments()
    {
        var (connection, peer) = Start(initiator: false);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Syn, 1, 40), new byte[40]);
        var stream = (YamuxStream)await connection.AcceptStreamAsync(default).AsTask().WaitAsync(HangGuard);
        var read = await stream.Input.ReadAtLeastAsync(40).AsTask().WaitAsync(HangGuard);
        Assert.That(stream.In.TailCapacity, Is.EqualTo(StreamInput.FirstSegmentSize), "a 40-byte delivery holds a first segment, not 4 KiB");
        stream.Input.AdvanceTo(read.Buffer.End);
        Assert.That(stream.In.HoldsMemory, Is.False);

        var message = Enumerable.Range(0, 40).Select(b => (byte)b).ToArray();
        stream.Output.Write(message);
        Assert.That(stream.Out.TailCapacity, Is.EqualTo(StreamOutput.FirstSegmentSize), "a 40-byte write holds a first segment, not 4 KiB");
        var more = Enumerable.Range(0, 1000).Select(b => (byte)(b * 3)).ToArray();
        stream.Output.Write(more);
        Assert.That(stream.Out.TailCapacity, Is.EqualTo(StreamOutput.MinimumSegmentSize), "what does not fit goes on in a full segment");
        await stream.Output.FlushAsync().AsTask().WaitAsync(HangGuard);
        var received = new List<byte>();
        while (received.Count < message.Length + more.Length)
        {
            var frame = await peer.ReceiveAsync();
            if (frame.Header.Type == YamuxFrameType.Data)
            {
                received.AddRange(frame.Payload);
            }
        }

        Assert.That(received, Is.EqualTo(message.Concat(more)), "the bytes, in order");
        Assert.That(stream.Out.HoldsMemory, Is.False, "sent: the segments went back");
        Assert.That(StreamInput.FirstSegmentSize, Is.LessThan(StreamInput.MinimumSegmentSize));
        Assert.That(StreamOutput.FirstSegmentSize, Is.LessThan(StreamOutput.MinimumSegmentSize));
    }

    [Test]
    [Category("Adversarial")]
    public async Task PeerFillsTheWindow_WeBufferExactlyIt_ReadsKeepOrder_AndOnlyConsumedBytesAreCredited()
    {
        var (connection, peer) = Start(initiator: false);
        var window = (int)YamuxOptions.InitialStreamWindow;
        var bytes = new byte[window + window / 2];
        new Random(12).NextBytes(bytes);
        for (var at = 0; at < window; at += 64 * 1024)
        {
            var flags = at == 0 ? YamuxFlags.Syn : YamuxFlags.None;
            await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, flags, 1, 64 * 1024), bytes[at..(at + 64 * 1024)]);
        }

        var stream = (YamuxStream)await connection.AcceptStreamAsync(default).AsTask().WaitAsync(HangGuard);
        var all = await stream.Input.ReadAtLeastAsync(window).AsTask().WaitAsync(HangGuard);
        Assert.That(stream.In.Buffered, Is.EqualTo(window), "the whole window, and not a byte more");
        Assert.That(all.Buffer.ToArray(), Is.EqualTo(bytes[..window]));

        // Consume less than half: no window update; everything examined: the next read waits for new bytes.
        stream.Input.AdvanceTo(all.Buffer.GetPosition(100_000), all.Buffer.End);
        var pending = stream.Input.ReadAsync();
        Assert.That(pending.IsCompleted, Is.False, "examined to the end: nothing new to read");
        Assert.That(stream.In.Buffered, Is.EqualTo(window - 100_000));

        // The peer may not send more now (its window is spent): one byte more closes the connection (checked elsewhere).
        // Reaching half the window through a second read credits exactly what was consumed.
        stream.Input.CancelPendingRead();
        var canceled = await pending.AsTask().WaitAsync(HangGuard);
        Assert.That(canceled.IsCanceled, Is.True);
        stream.Input.AdvanceTo(canceled.Buffer.GetPosition(window / 2 - 100_000), canceled.Buffer.End);
        // The accept's ACK goes alone or rides on the credit (the writer sends a stream's pending flags and delta in one
        // frame when it gets to the stream after both were queued): either way, the ACK once and exactly window / 2.
        var (acks, credited) = (0, 0L);
        while (credited < window / 2)
        {
            var update = await peer.ReceiveUntilAsync(YamuxFrameType.WindowUpdate).WaitAsync(HangGuard);
            Assert.That(update.StreamId, Is.EqualTo(1u));
            acks += (update.Flags & YamuxFlags.Ack) != 0 ? 1 : 0;
            credited += update.Length;
        }
        Assert.That(acks, Is.EqualTo(1));
        Assert.That(credited, Is.EqualTo(window / 2));

        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.None, 1, (uint)(window / 2)), bytes[window..]);
        var rest = await stream.Input.ReadAtLeastAsync(window).AsTask().WaitAsync(HangGuard);
        Assert.That(rest.Buffer.ToArray(), Is.EqualTo(bytes[(window / 2)..]), "old and new bytes, in order");
        Assert.That(stream.In.Buffered, Is.EqualTo(window));
        stream.Input.AdvanceTo(rest.Buffer.End);
        Assert.That(stream.In.HoldsMemory, Is.False);
    }

    [Test]
    public async Task RemoteFin_WhileBytesAreBuffered_ReadsDrainThemThenEnd()
    {
        var (connection, peer) = Start(initiator: false);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Syn, 1, 3), [1, 2, 3]);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.None, 1, 2), [4, 5]);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Fin, 1, 0));
        var stream = (YamuxStream)await connection.AcceptStreamAsync(default).AsTask().WaitAsync(HangGuard);

        ReadResult result;
        do
        {
            result = await stream.Input.ReadAsync().AsTask().WaitAsync(HangGuard);
            if (!result.IsCompleted)
            {
                stream.Input.AdvanceTo(result.Buffer.Start, result.Buffer.End);
            }
        }
        while (!result.IsCompleted);

        Assert.That(result.Buffer.ToArray(), Is.EqualTo(new byte[] { 1, 2, 3, 4, 5 }), "FIN after the bytes: all of them are read first");
        stream.Input.AdvanceTo(result.Buffer.End);
        var end = await stream.Input.ReadAsync().AsTask().WaitAsync(HangGuard);
        Assert.That(end.IsCompleted && end.Buffer.IsEmpty, Is.True);
        Assert.That(stream.In.HoldsMemory, Is.False);
    }

    [Test]
    public async Task RemoteReset_WhileBytesAreBuffered_FailsTheReadAndTheSegmentsGoBack()
    {
        var (connection, peer) = Start(initiator: false);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Syn, 1, 3), [1, 2, 3]);
        var stream = (YamuxStream)await connection.AcceptStreamAsync(default).AsTask().WaitAsync(HangGuard);
        var first = await stream.Input.ReadAtLeastAsync(3).AsTask().WaitAsync(HangGuard);
        stream.Input.AdvanceTo(first.Buffer.Start, first.Buffer.End);
        var waiting = stream.Input.ReadAsync();
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Rst, 1, 0));

        Assert.ThrowsAsync<StreamResetException>(async () => await waiting.AsTask().WaitAsync(HangGuard));
        Assert.That(stream.In.HoldsMemory, Is.True, "unread until the application lets go");
        await stream.DisposeAsync();
        Assert.That(stream.In.HoldsMemory, Is.False);
        Assert.That(stream.Out.HoldsMemory, Is.False);
    }

    [Test]
    public async Task PendingRead_CanceledByItsToken_Throws_AndALaterReadGetsTheBytes()
    {
        var (connection, peer) = Start(initiator: false);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, 1, 0));
        var stream = await connection.AcceptStreamAsync(default).AsTask().WaitAsync(HangGuard);
        using var cts = new CancellationTokenSource();
        var pending = stream.Input.ReadAsync(cts.Token);
        Assert.That(pending.IsCompleted, Is.False);
        cts.Cancel();
        Assert.ThrowsAsync<OperationCanceledException>(async () => await pending.AsTask().WaitAsync(HangGuard));

        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.None, 1, 2), [9, 8]);
        var read = await stream.Input.ReadAtLeastAsync(2).AsTask().WaitAsync(HangGuard);
        Assert.That(read.Buffer.ToArray(), Is.EqualTo(new byte[] { 9, 8 }));
    }

    [Test]
    [Category("Adversarial")]
    public async Task OutputPastTheSendBuffer_FlushWaitsForWindow_ResumesBelowHalf_AndARemoteResetFailsIt()
    {
        const int sendBuffer = 64 * 1024;
        var (connection, peer) = Start(initiator: true, options: new YamuxOptions { MeasureRttOnStart = false, StreamSendBuffer = sendBuffer });
        var stream = (YamuxStream)await connection.OpenStreamAsync(default);
        var window = (int)YamuxOptions.InitialStreamWindow;

        // The whole window goes out, so this flush ends once the writer has sent it.
        await stream.Output.WriteAsync(new byte[window]).AsTask().WaitAsync(HangGuard);
        var sent = 0L;
        while (sent < window)
        {
            var (header, payload) = await peer.ReceiveAsync();
            sent += header.Type == YamuxFrameType.Data ? payload.Length : 0;
        }

        // The send window is spent: what is written stays buffered and the flush waits at the send buffer.
        var flush = stream.Output.WriteAsync(new byte[sendBuffer]);
        Assert.That(flush.IsCompleted, Is.False, "the send buffer is full and the window spent");
        Assert.That(stream.Out.HoldsMemory, Is.True);

        // 40 KiB of window: 24 KiB remain buffered, under half the send buffer: the flush returns.
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Ack, 1, 40 * 1024));
        var result = await flush.AsTask().WaitAsync(HangGuard);
        Assert.That(result.IsCompleted || result.IsCanceled, Is.False);

        var again = stream.Output.WriteAsync(new byte[sendBuffer]);
        Assert.That(again.IsCompleted, Is.False);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Rst, 1, 0));
        Assert.ThrowsAsync<StreamResetException>(async () => await again.AsTask().WaitAsync(HangGuard));
        Assert.That(stream.Out.HoldsMemory, Is.False, "reset: the buffered bytes went back");
        await stream.DisposeAsync();
        Assert.That(connection.StreamCount, Is.Zero);
    }
}
