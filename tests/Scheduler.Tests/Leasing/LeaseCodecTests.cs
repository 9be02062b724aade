using System.Buffers;
using MessagePack;
using Potluck.Protocol;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Tests.Leasing;

public class LeaseCodecTests
{
    private static readonly LeaseOptions Options = new();

    private static byte[] Hash(byte seed) => Enumerable.Repeat(seed, 32).ToArray();

    private static IEnumerable<LeaseMessage> Samples() =>
    [
        new LeaseRequest { RequestId = 1, ModuleHash = Hash(1), ModuleSize = 10, InputHash = Hash(2), InputSize = 0, FuelLimit = 5, MemoryLimitBytes = 6, DeadlineUnixMs = 7, MaxPricePerMegaFuel = 8 },
        new LeaseOffer { RequestId = 2, Terms = [1, 2, 3], ProviderSignature = [4, 5] },
        new LeaseReject { RequestId = 3, Reason = LeaseRejectReason.Busy, Detail = "all 4 cores in use" },
        new LeaseAccept { RequestId = 4, RequesterSignature = [9] },
        new LeaseData { RequestId = 5, Kind = LeaseDataKind.Input, Offset = 256, Bytes = [1, 2, 3] },
        new LeaseHeartbeat { RequestId = 6, Sequence = 3, FuelUsed = 100 },
        new LeaseCancel { RequestId = 7, Reason = "bye" },
        new LeaseResult { RequestId = 8, Status = ExecutionStatus.Trapped, FuelUsed = 9, ExitCode = 1, OutputHash = Hash(3), OutputSize = 2, Output = [1, 2], Attestation = [7], Stderr = [0x6f, 0x6b] },
        new LeaseResult { RequestId = ulong.MaxValue, OutputHash = Hash(4), OutputSize = 1 << 30, Output = null },
        new LeaseReceipt { RequestId = 9, Envelope = [1, 2, 3] },
        new LeaseReceiptAck { RequestId = 10, Ack = [4, 5] },
        new LeaseReceiptAck { RequestId = 11, Ack = [] },
        new LeaseDebitNote { RequestId = 12, Note = [6, 7, 8] },
        new LeaseReject { RequestId = 13, Reason = LeaseRejectReason.Busy, Detail = "4 leases held here already", LeaseLimit = 4 },
    ];

    private static bool Same(LeaseMessage a, LeaseMessage b) =>
        a.GetType() == b.GetType() && LeaseCodec.Serialize(a).AsSpan().SequenceEqual(LeaseCodec.Serialize(b));

    [Test]
    public void Frame_EveryMessageType_RoundTrips()
    {
        foreach (var message in Samples())
        {
            var buffer = new ReadOnlySequence<byte>(LeaseCodec.EncodeFrame(message));
            Assert.That(LeaseCodec.TryReadFrame(ref buffer, Options, out var decoded), Is.EqualTo(DecodeStatus.Done), message.ToString());
            Assert.That(decoded!.GetType(), Is.EqualTo(message.GetType()));
            Assert.That(decoded.RequestId, Is.EqualTo(message.RequestId));
            Assert.That(Same(decoded, message), Is.True);
            Assert.That(buffer.IsEmpty);
        }
    }

    [Test]
    public void Frame_EveryTruncation_NeedsMoreDataAndConsumesNothing()
    {
        foreach (var message in Samples())
        {
            var frame = LeaseCodec.EncodeFrame(message);
            for (var cut = 0; cut < frame.Length; cut++)
            {
                var buffer = new ReadOnlySequence<byte>(frame, 0, cut);
                Assert.That(LeaseCodec.TryReadFrame(ref buffer, Options, out _), Is.EqualTo(DecodeStatus.NeedMoreData));
                Assert.That(buffer.Length, Is.EqualTo(cut));
            }
        }
    }

    [Test]
    public void Frame_SeveralMessagesAcrossSegments_DecodeInOrder()
    {
        var bytes = Samples().SelectMany(LeaseCodec.EncodeFrame).ToArray();
        var buffer = Segmented(bytes, 3);
        var decoded = new List<LeaseMessage>();
        while (LeaseCodec.TryReadFrame(ref buffer, Options, out var m) == DecodeStatus.Done)
        {
            decoded.Add(m!);
        }
        Assert.That(buffer.IsEmpty);
        Assert.That(decoded.Select(m => m.RequestId), Is.EqualTo(Samples().Select(m => m.RequestId)));
    }

    [Test]
    public void Frame_LengthOverLimit_IsInvalidBeforeTheBodyArrives()
    {
        var prefix = new byte[] { 0xFF, 0xFF, 0xFF, 0x7F };
        var buffer = new ReadOnlySequence<byte>(prefix);
        Assert.That(LeaseCodec.TryReadFrame(ref buffer, Options, out _), Is.EqualTo(DecodeStatus.Invalid));
    }

    [Test]
    public void Decode_FieldsOutOfBounds_AreInvalid()
    {
        var small = new LeaseOptions { MaxChunkBytes = 4, MaxReasonLength = 3, MaxInlineOutputBytes = 1, MaxReceiptBytes = 2, MaxReceiptAckBytes = 2, MaxStderrBytes = 2 };
        var bad = new LeaseMessage[]
        {
            new LeaseRequest { RequestId = 1, ModuleHash = [1], ModuleSize = 1, InputHash = Hash(1), FuelLimit = 1, MemoryLimitBytes = 1, DeadlineUnixMs = 1 },
            new LeaseRequest { RequestId = 1, ModuleHash = Hash(1), ModuleSize = 0, InputHash = Hash(1), FuelLimit = 1, MemoryLimitBytes = 1, DeadlineUnixMs = 1 },
            new LeaseData { RequestId = 1, Bytes = [1, 2, 3, 4, 5] },
            new LeaseData { RequestId = 1, Bytes = [] },
            new LeaseData { RequestId = 1, Offset = -1, Bytes = [1] },
            new LeaseReject { RequestId = 1, Reason = (LeaseRejectReason)99 },
            new LeaseReject { RequestId = 1, Reason = LeaseRejectReason.Busy, LeaseLimit = -1 },
            new LeaseCancel { RequestId = 1, Reason = "four" },
            new LeaseResult { RequestId = 1, OutputHash = Hash(1), OutputSize = 2, Output = [1, 2] },
            new LeaseResult { RequestId = 1, OutputHash = Hash(1), OutputSize = 3, Output = [1] },
            new LeaseResult { RequestId = 1, OutputHash = Hash(1), OutputSize = 0, Stderr = [1, 2, 3] },
            new LeaseHeartbeat { RequestId = 1, FuelUsed = -5 },
            new LeaseReceipt { RequestId = 1, Envelope = [1, 2, 3] },
            new LeaseReceipt { RequestId = 1, Envelope = [] },
            new LeaseReceiptAck { RequestId = 1, Ack = [1, 2, 3] },
            new LeaseDebitNote { RequestId = 1, Note = [] },
        };
        foreach (var message in bad)
        {
            Assert.That(LeaseCodec.TryDeserialize(LeaseCodec.Serialize(message), small, out _), Is.EqualTo(DecodeStatus.Invalid), message.ToString());
        }
    }

    [Test]
    public void Decode_UnknownUnionTagOrNil_IsInvalid()
    {
        var unknown = MessagePackSerializer.Serialize(new object[] { 42, new object[] { 1 } });
        Assert.That(LeaseCodec.TryDeserialize(unknown, Options, out _), Is.EqualTo(DecodeStatus.Invalid));
        Assert.That(LeaseCodec.TryDeserialize(new byte[] { 0xC0 }, Options, out _), Is.EqualTo(DecodeStatus.Invalid));
        Assert.That(LeaseCodec.TryDeserialize(new byte[] { 0x92, 0x00, 0xC0 }, Options, out _), Is.EqualTo(DecodeStatus.Invalid));
    }

    [Test]
    public void Decode_TrailingBytes_AreInvalid()
    {
        var body = LeaseCodec.Serialize(new LeaseCancel { RequestId = 1 }).Append((byte)0).ToArray();
        Assert.That(LeaseCodec.TryDeserialize(body, Options, out _), Is.EqualTo(DecodeStatus.Invalid));
    }

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public bool Request_ArbitraryFields_RoundTrip(ulong id, long moduleSize, long inputSize, long fuel, long memory, long deadline, long price)
    {
        var request = new LeaseRequest
        {
            RequestId = id, ModuleHash = Hash(1), ModuleSize = 1 + Math.Abs(moduleSize % Options.MaxModuleBytes),
            InputHash = Hash(2), InputSize = Math.Abs(inputSize % Options.MaxInputBytes), FuelLimit = 1 + Math.Abs(fuel % long.MaxValue),
            MemoryLimitBytes = 1 + Math.Abs(memory % long.MaxValue), DeadlineUnixMs = 1 + Math.Abs(deadline % long.MaxValue),
            MaxPricePerMegaFuel = Math.Abs(price % long.MaxValue),
        };
        return LeaseCodec.TryDeserialize(LeaseCodec.Serialize(request), Options, out var decoded) == DecodeStatus.Done
            && decoded is LeaseRequest r && r.SameWork(request);
    }

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public bool DataAndResult_ArbitraryBytes_RoundTrip(ulong id, byte[] bytes, string? text, int exitCode)
    {
        bytes = bytes.Length == 0 ? [0] : bytes;
        text = (text ?? "").Length > 200 ? text![..200] : text ?? "";
        var messages = new LeaseMessage[]
        {
            new LeaseData { RequestId = id, Kind = LeaseDataKind.Module, Offset = bytes.Length, Bytes = bytes },
            new LeaseResult { RequestId = id, ExitCode = exitCode, OutputHash = Hash(5), OutputSize = bytes.Length, Output = bytes, Attestation = bytes },
            new LeaseCancel { RequestId = id, Reason = text },
            new LeaseReject { RequestId = id, Reason = LeaseRejectReason.Policy, Detail = text },
        };
        return messages.All(m => LeaseCodec.TryDeserialize(LeaseCodec.Serialize(m), Options, out var d) == DecodeStatus.Done && Same(d!, m));
    }

    [FsCheck.NUnit.Property(MaxTest = 2000)]
    public bool Frame_RandomBytes_EndInDoneNeedMoreOrInvalid(byte[] bytes)
    {
        var buffer = new ReadOnlySequence<byte>(bytes);
        var status = LeaseCodec.TryReadFrame(ref buffer, Options, out var message);
        return status switch
        {
            DecodeStatus.Done => message is not null && buffer.Length < bytes.Length,
            _ => message is null && buffer.Length == bytes.Length,
        };
    }

    [FsCheck.NUnit.Property(MaxTest = 2000)]
    public bool Body_RandomBytes_AreDoneOrInvalid(byte[] bytes)
    {
        var status = LeaseCodec.TryDeserialize(bytes, Options, out var message);
        return status == DecodeStatus.Invalid ? message is null : status == DecodeStatus.Done && message is not null;
    }

    [FsCheck.NUnit.Property(MaxTest = 2000)]
    public bool Frame_MutatedValidFrames_EndInDoneNeedMoreOrInvalid(int which, int position, byte value)
    {
        var samples = Samples().ToArray();
        var frame = LeaseCodec.EncodeFrame(samples[Math.Abs(which % samples.Length)]);
        frame[Math.Abs(position % frame.Length)] = value;
        var buffer = new ReadOnlySequence<byte>(frame);
        var status = LeaseCodec.TryReadFrame(ref buffer, Options, out var message);
        return status is DecodeStatus.Done or DecodeStatus.NeedMoreData or DecodeStatus.Invalid && (status == DecodeStatus.Done) == (message is not null);
    }

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public bool Terms_RandomBytes_NeverThrow(byte[] bytes)
    {
        var ok = LeaseCodec.TryDecodeTerms(bytes, Options, out var terms);
        return !ok || terms is not null;
    }

    [Test]
    public void Terms_MaxCost_RoundsUpAndNeverOverflows()
    {
        Assert.That(new LeaseTerms { FuelLimit = 1_000_001, PricePerMegaFuel = 3 }.MaxCostCredits(), Is.EqualTo(4));
        Assert.That(new LeaseTerms { FuelLimit = long.MaxValue, PricePerMegaFuel = long.MaxValue }.MaxCostCredits(), Is.EqualTo(long.MaxValue));
        Assert.That(new LeaseTerms { FuelLimit = 0, PricePerMegaFuel = 5 }.MaxCostCredits(), Is.Zero);
    }

    private static ReadOnlySequence<byte> Segmented(byte[] bytes, int size)
    {
        Segment? first = null, last = null;
        for (var i = 0; i < bytes.Length; i += size)
        {
            var chunk = bytes.AsMemory(i, Math.Min(size, bytes.Length - i));
            if (first is null)
            {
                first = last = new Segment(chunk, 0);
            }
            else
            {
                last = last!.Append(chunk);
            }
        }
        return new ReadOnlySequence<byte>(first!, 0, last!, last!.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }

    [Test]
    public void Reject_FromAProviderBuiltBeforeTheLeaseLimit_DecodesWithNoLimit_AndOneWithItKeepsIt()
    {
        // A reject as a build before LeaseLimit writes it: the union's tag and three fields (request id, reason, detail).
        var buffer = new ArrayBufferWriter<byte>();
        var writer = new MessagePackWriter(buffer);
        writer.WriteArrayHeader(2);
        writer.Write(2);
        writer.WriteArrayHeader(3);
        writer.Write(5UL);
        writer.Write((int)LeaseRejectReason.Busy);
        writer.Write("4 leases held here already (at most 4 per requester)");
        writer.Flush();
        Assert.That(LeaseCodec.TryDeserialize(buffer.WrittenMemory.ToArray(), Options, out var old), Is.EqualTo(DecodeStatus.Done));
        Assert.That(old, Is.TypeOf<LeaseReject>());
        Assert.That(((LeaseReject)old!).LeaseLimit, Is.Null, "no limit said: the requester learns it from its own count, as before");

        var now = new LeaseReject { RequestId = 5, Reason = LeaseRejectReason.Busy, Detail = "full", LeaseLimit = 4 };
        Assert.That(LeaseCodec.TryDeserialize(LeaseCodec.Serialize(now), Options, out var decoded), Is.EqualTo(DecodeStatus.Done));
        Assert.That(((LeaseReject)decoded!).LeaseLimit, Is.EqualTo(4));
    }
}
