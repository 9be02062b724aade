using System.Buffers;
using FsCheck;
using FsCheck.Fluent;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Tests.Yamux;

public class YamuxFrameTests
{
    [FsCheck.NUnit.Property]
    public bool Header_EncodeDecode_RoundTrips(byte type, ushort flags, uint streamId, uint length)
    {
        var header = new YamuxHeader((YamuxFrameType)(type % 4), (YamuxFlags)flags, streamId, length);
        var bytes = new byte[YamuxHeader.Size];
        header.Write(bytes);

        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes));
        var status = YamuxHeader.TryRead(ref reader, out var decoded, out _);
        return status == DecodeStatus.Done && decoded == header && reader.Remaining == 0;
    }

    [FsCheck.NUnit.Property]
    public bool DataFrame_EncodeDecode_RoundTripsAcrossSegments(byte[] payload, ushort flags, uint streamId, PositiveInt split)
    {
        var header = new YamuxHeader(YamuxFrameType.Data, (YamuxFlags)flags, streamId, (uint)payload.Length);
        var writer = new ArrayBufferWriter<byte>();
        YamuxFrame.Write(writer, header, payload);
        var encoded = writer.WrittenMemory.ToArray();

        var cut = split.Get % (encoded.Length + 1);
        var sequence = Segments.Of(encoded.AsMemory(0, cut), encoded.AsMemory(cut));
        var reader = new SequenceReader<byte>(sequence);
        var status = YamuxFrame.TryRead(ref reader, uint.MaxValue, out var decoded, out var body, out _);
        return status == DecodeStatus.Done && decoded == header && body.ToArray().AsSpan().SequenceEqual(payload)
            && reader.Remaining == 0;
    }

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public bool RandomBytes_IntoDecoder_EndInDoneNeedMoreDataOrInvalid(byte[] bytes)
    {
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes));
        while (true)
        {
            var before = reader.Consumed;
            var status = YamuxFrame.TryRead(ref reader, 4096, out _, out var payload, out var error);
            switch (status)
            {
                case DecodeStatus.Done:
                    if (reader.Consumed <= before || payload.Length > 4096)
                    {
                        return false;
                    }

                    continue;
                case DecodeStatus.NeedMoreData:
                    return reader.Consumed == before;
                case DecodeStatus.Invalid:
                    return reader.Consumed == before && error is not null;
                default:
                    return false;
            }
        }
    }

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public bool MutatedValidFrames_IntoDecoder_EndInDoneNeedMoreDataOrInvalid(byte[] payload, int position, byte value)
    {
        var writer = new ArrayBufferWriter<byte>();
        YamuxFrame.Write(writer, new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Syn, 1, (uint)payload.Length), payload);
        var bytes = writer.WrittenMemory.ToArray();
        bytes[(int)((uint)position % (uint)bytes.Length)] = value;

        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes));
        var status = YamuxFrame.TryRead(ref reader, 1024, out _, out _, out _);
        return status is DecodeStatus.Done or DecodeStatus.NeedMoreData or DecodeStatus.Invalid;
    }

    [Test]
    public void Decode_TruncatedHeader_NeedsMoreData()
    {
        var bytes = new byte[YamuxHeader.Size];
        new YamuxHeader(YamuxFrameType.Ping, YamuxFlags.Syn, 0, 7).Write(bytes);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes, 0, 11));
        Assert.That(YamuxHeader.TryRead(ref reader, out _, out _), Is.EqualTo(DecodeStatus.NeedMoreData));
        Assert.That(reader.Consumed, Is.Zero);
    }

    [Test]
    public void Decode_TruncatedPayload_NeedsMoreDataAndConsumesNothing()
    {
        var writer = new ArrayBufferWriter<byte>();
        YamuxFrame.Write(writer, new YamuxHeader(YamuxFrameType.Data, YamuxFlags.None, 3, 5), "hello"u8);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(writer.WrittenMemory[..^1]));
        Assert.That(YamuxFrame.TryRead(ref reader, 1024, out _, out _, out _), Is.EqualTo(DecodeStatus.NeedMoreData));
        Assert.That(reader.Consumed, Is.Zero);
    }

    [Test]
    public void Decode_4GiBDataLength_IsInvalidBeforeAnyPayloadArrives()
    {
        var bytes = new byte[YamuxHeader.Size];
        new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Syn, 1, uint.MaxValue).Write(bytes);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes));
        Assert.That(YamuxFrame.TryRead(ref reader, YamuxOptions.InitialStreamWindow, out _, out _, out var error), Is.EqualTo(DecodeStatus.Invalid));
        Assert.That(error, Does.Contain("exceeds"));
    }

    [TestCase(new byte[] { 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0 }, "version")]
    [TestCase(new byte[] { 0, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0 }, "type")]
    [TestCase(new byte[] { 0, 255, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0 }, "type")]
    public void Decode_UnknownVersionOrType_IsInvalid(byte[] bytes, string what)
    {
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes));
        Assert.That(YamuxHeader.TryRead(ref reader, out _, out var error), Is.EqualTo(DecodeStatus.Invalid));
        Assert.That(error, Does.Contain(what));
    }

    [Test]
    public void Encode_MatchesTheSpecLayout()
    {
        var bytes = new byte[YamuxHeader.Size];
        new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn | YamuxFlags.Ack, 0x01020304, 0x0A0B0C0D).Write(bytes);
        Assert.That(bytes, Is.EqualTo(new byte[] { 0, 1, 0, 3, 1, 2, 3, 4, 0x0A, 0x0B, 0x0C, 0x0D }));
    }

    private sealed class Segments : ReadOnlySequenceSegment<byte>
    {
        private Segments(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public static ReadOnlySequence<byte> Of(ReadOnlyMemory<byte> first, ReadOnlyMemory<byte> second)
        {
            var head = new Segments(first, 0);
            var tail = new Segments(second, first.Length);
            head.Next = tail;
            return new ReadOnlySequence<byte>(head, 0, tail, second.Length);
        }
    }
}
