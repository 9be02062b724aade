using Potluck.Protocol.Framing;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Tests.Yamux;

/// <summary>
/// <see cref="ParkedFrameReader"/> on a yamux stream (gossipsub's inbound stream, read for its connection's life): parking
/// between messages allocates nothing (the read's own state machine, its continuation object and delegate are gone), and
/// it gives exactly what <see cref="LengthPrefixed.TryReadAsync"/> gives for the same bytes.
/// </summary>
public partial class YamuxConnectionTests
{
    private const string FramesProtocol = "/test/frames/1.0.0";

    [Test]
    public void AParkedFrameRead_AllocatesNothing_WhereTryReadAsyncAllocatesItsStateMachine_AndResumesOnceWithTheWholeMessage() => VirtualTimeDriver.Run(async d =>
    {
        var (connection, peer) = Start(initiator: false, d.CreateRuntime(1));
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Syn, 1, 0));
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Syn, 3, 0));
        var stream = (YamuxStream)await connection.AcceptStreamAsync(default);
        var control = (YamuxStream)await connection.AcceptStreamAsync(default);
        var frames = ParkedFrameReader.For(stream.Input, 1024, FramesProtocol)!;
        Assert.That(frames, Is.Not.Null, "a yamux stream's input parks a frame reader");
        var resumed = 0;
        Action onResumed = () => resumed++;

        // Warm both paths once (first calls: statics, JIT), then measure a park of each.
        _ = LengthPrefixed.TryReadAsync(control.Input, 1024, FramesProtocol, CancellationToken.None);
        var warm = frames.ReadAsync();
        warm.GetAwaiter().UnsafeOnCompleted(onResumed);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.None, 1, 1), [0x00]); // an empty message
        await d.IdleAsync();
        Assert.That(warm.GetAwaiter().GetResult().Message, Is.Empty);
        Assert.That(resumed, Is.EqualTo(1));
        resumed = 0;
        var allocated = GC.GetAllocatedBytesForCurrentThread();
        var pending = frames.ReadAsync();
        pending.GetAwaiter().UnsafeOnCompleted(onResumed);
        var parkedBytes = GC.GetAllocatedBytesForCurrentThread() - allocated;
        Assert.That(pending.IsCompleted, Is.False, "nothing sent yet: parked");
        Assert.That(parkedBytes, Is.Zero, "a parked frame read allocates nothing: the reader is the awaited source");

        // The control: the same wait through TryReadAsync (the read before this change) allocates its state machine.
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.None, 3, 1), [0x05]);
        await d.IdleAsync();
        var oldRead = LengthPrefixed.TryReadAsync(control.Input, 1024, FramesProtocol, CancellationToken.None); // completes the warm-up read
        allocated = GC.GetAllocatedBytesForCurrentThread();
        var oldPending = LengthPrefixed.TryReadAsync(control.Input, 1024, FramesProtocol, CancellationToken.None);
        Assert.That(GC.GetAllocatedBytesForCurrentThread() - allocated, Is.GreaterThan(0), "the counter sees the old read's state machine");
        _ = oldRead;
        _ = oldPending;

        // A 200-byte message whose two-byte length arrives split, then the rest with a second message behind it.
        var message = Enumerable.Range(0, 200).Select(i => (byte)i).ToArray();
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.None, 1, 1), [0xC8]);
        await d.IdleAsync();
        Assert.That(resumed, Is.Zero, "half a length: still parked");
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.None, 1, 51), [0x01, .. message[..50]]);
        await d.IdleAsync();
        Assert.That(resumed, Is.Zero, "part of the message: still parked");
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.None, 1, 154), [.. message[50..], 0x03, (byte)'a', (byte)'b', (byte)'c']);
        await d.IdleAsync();
        Assert.That(resumed, Is.EqualTo(1), "resumed once, with the message whole");
        var read = pending.GetAwaiter().GetResult();
        Assert.That(read.Message, Is.EqualTo(message));
        Assert.That(read.Cause, Is.Null);

        var next = frames.ReadAsync();
        Assert.That(next.IsCompletedSuccessfully, Is.True, "the next message was buffered: no park");
        Assert.That(next.Result.Message, Is.EqualTo("abc"u8.ToArray()));

        var end = frames.ReadAsync();
        end.GetAwaiter().UnsafeOnCompleted(onResumed);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Fin, 1, 0));
        await d.IdleAsync();
        Assert.That(resumed, Is.EqualTo(2));
        var ended = end.GetAwaiter().GetResult();
        Assert.That((ended.Message, ended.Cause), Is.EqualTo(((byte[]?)null, (Exception?)null)), "a clean end: neither message nor failure");
        await DisposeConnections();
    });

    /// <summary>What each reader ends with for the same bytes: a message, a clean end, a failure as a value, or a violation.</summary>
    [TestCase(new byte[] { 0xFF, 0xFF, 0x7F }, false, TestName = "ParkedFrameReader_AsTryReadAsync_OversizeLength")]
    [TestCase(new byte[] { 0x0A, 1, 2, 3 }, true, TestName = "ParkedFrameReader_AsTryReadAsync_ResetInsideAMessage")]
    [TestCase(new byte[] { 0x0A, 1, 2, 3 }, false, TestName = "ParkedFrameReader_AsTryReadAsync_FinInsideAMessage")]
    [TestCase(new byte[] { 0x80 }, false, TestName = "ParkedFrameReader_AsTryReadAsync_FinInsideALength")]
    [TestCase(new byte[] { 0x02, 7, 7 }, true, TestName = "ParkedFrameReader_AsTryReadAsync_AMessageThenAReset")]
    public void ParkedFrameReader_EndsAsTryReadAsync(byte[] bytes, bool reset) => VirtualTimeDriver.Run(async d =>
    {
        var (connection, peer) = Start(initiator: false, d.CreateRuntime(1));
        var outcomes = new List<string>();
        foreach (var (id, parked) in new[] { (1u, true), (3u, false) })
        {
            await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Syn, id, 0));
            var stream = (YamuxStream)await connection.AcceptStreamAsync(default);
            var frames = parked ? ParkedFrameReader.For(stream.Input, 64, FramesProtocol)! : null;
            ValueTask<FramedRead> Read() => frames?.ReadAsync() ?? LengthPrefixed.TryReadAsync(stream.Input, 64, FramesProtocol, CancellationToken.None);
            var first = Read().AsTask(); // parked before any byte
            await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.None, id, (uint)bytes.Length), bytes);
            await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, reset ? YamuxFlags.Rst : YamuxFlags.Fin, id, 0));
            await d.IdleAsync();
            var outcome = new List<string>();
            var read = first;
            for (var i = 0; i < 3; i++)
            {
                try
                {
                    var r = await read;
                    outcome.Add(r.Message is { } m ? $"message {Convert.ToHexString(m)}" : r.Cause is { } c ? $"failure {r.Failure!.Value.Kind}" : "end");
                    if (r.Message is null)
                    {
                        break;
                    }
                }
                catch (ProtocolViolationException e)
                {
                    outcome.Add($"violation {e.Code}");
                    break;
                }
                read = Read().AsTask();
            }
            outcomes.Add(string.Join("; ", outcome));
        }
        Assert.That(outcomes[0], Is.EqualTo(outcomes[1]), "the parked reader ends as TryReadAsync does");
        TestContext.Out.WriteLine(outcomes[0]);
        await DisposeConnections();
    });
}
