using System.Buffers;
using FsCheck;
using FsCheck.NUnit;
using Potluck.Protocol.Runtime;
using Property = FsCheck.NUnit.PropertyAttribute;
using Potluck.Protocol.Multistream;

namespace Potluck.Protocol.Tests.Multistream;

public class MultistreamMessageTests
{
    private static DecodeStatus Decode(ReadOnlySequence<byte> bytes, out string? text, out long consumed, int max = 1024)
    {
        var reader = new SequenceReader<byte>(bytes);
        var status = MultistreamMessage.TryRead(ref reader, max, out text, out _);
        consumed = reader.Consumed;
        return status;
    }

    [Test]
    public void Write_Header_IsTheSpecBytes()
    {
        var w = new ArrayBufferWriter<byte>();
        MultistreamMessage.Write(w, "/multistream/1.0.0");
        Assert.That(w.WrittenSpan.ToArray(), Is.EqualTo(new byte[] { 0x13 }.Concat("/multistream/1.0.0\n"u8.ToArray())));
        Assert.That(MultistreamMessage.EncodedLength("/multistream/1.0.0"), Is.EqualTo(20));
    }

    [Test]
    public void Decode_TruncatedBody_NeedsMoreDataAndConsumesNothing()
    {
        var bytes = MultistreamSelectTests.Msg("/noise");
        Assert.That(Decode(new(bytes.AsMemory(0, bytes.Length - 1)), out _, out var consumed), Is.EqualTo(DecodeStatus.NeedMoreData));
        Assert.That(consumed, Is.Zero);
        Assert.That(Decode(new(bytes.AsMemory(0, 0)), out _, out _), Is.EqualTo(DecodeStatus.NeedMoreData));
    }

    [Test]
    public void Decode_MessageSplitAcrossSegments_IsDone()
    {
        var bytes = MultistreamSelectTests.Msg("/ipfs/id/1.0.0").Concat(new byte[] { 9, 9 }).ToArray();
        var first = new Segment(bytes.AsMemory(0, 1));
        var last = first.Append(bytes.AsMemory(1, 5)).Append(bytes.AsMemory(6));
        var sequence = new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
        Assert.That(Decode(sequence, out var text, out var consumed), Is.EqualTo(DecodeStatus.Done));
        Assert.That(text, Is.EqualTo("/ipfs/id/1.0.0"));
        Assert.That(consumed, Is.EqualTo(bytes.Length - 2));
    }

    [Test]
    public void Decode_LengthOverLimit_IsInvalidWithoutWaitingForTheBody()
    {
        Assert.That(Decode(new(new byte[] { 0x0B }), out _, out _, max: 10), Is.EqualTo(DecodeStatus.Invalid));
        Assert.That(Decode(new(new byte[] { 0xFF, 0xFF, 0xFF, 0xFF, 0x0F }), out _, out _), Is.EqualTo(DecodeStatus.Invalid));
    }

    [Test]
    public void Decode_ZeroLengthOrNonMinimalVarint_IsInvalid()
    {
        Assert.That(Decode(new(new byte[] { 0x00 }), out _, out _), Is.EqualTo(DecodeStatus.Invalid));
        Assert.That(Decode(new(new byte[] { 0x82, 0x00, (byte)'a', (byte)'\n' }), out _, out _), Is.EqualTo(DecodeStatus.Invalid));
    }

    [Property]
    public bool RoundTrip_AnyProtocolText_DecodesToItself(NonNull<string> input)
    {
        var text = input.Get.Replace('\n', ' ');
        if (!IsValidUnicode(text))
        {
            return true;
        }
        var w = new ArrayBufferWriter<byte>();
        MultistreamMessage.Write(w, text);
        var status = Decode(new(w.WrittenMemory), out var decoded, out var consumed, max: 1 << 20);
        return status == DecodeStatus.Done && decoded == text && consumed == w.WrittenCount;
    }

    [Property]
    public bool Decode_AnyBytes_EndsInAStatusAndMovesOnlyOnDone(byte[] bytes)
    {
        var status = Decode(new(bytes), out var text, out var consumed);
        return status switch
        {
            DecodeStatus.Done => text is not null && consumed > 0 && consumed <= bytes.Length,
            DecodeStatus.NeedMoreData or DecodeStatus.Invalid => consumed == 0 && text is null,
            _ => false,
        };
    }

    [Property]
    public bool Handle_AnyBytesThenEndOfStream_EndsInViolationPeerGoneOrSelection(byte[] bytes)
    {
        return RunListener(bytes);
    }

    [Property]
    public bool Handle_AnyBytesStreamStillOpen_WaitsOrEndsInViolationOrSelection(byte[] bytes)
    {
        // Inline pipes: when the write returns, the listener has done all it can with these bytes.
        var (dialer, listener) = PipePair.Create();
        var listening = MultistreamSelect.HandleAsync(listener, ["/noise"], MultistreamOptions.Default, default).AsTask();
        dialer.Output.WriteAsync(bytes).AsTask().GetAwaiter().GetResult();
        if (!listening.IsCompleted)
        {
            return true; // needs more data
        }
        return listening.Status == TaskStatus.RanToCompletion
            ? listening.Result == "/noise"
            : listening.Exception?.InnerException is ProtocolViolationException;
    }

    [Property]
    public bool Handle_MutatedValidDialogue_EndsInViolationPeerGoneOrSelection(byte[] noise, int position)
    {
        var valid = MultistreamSelectTests.Msg("/multistream/1.0.0")
            .Concat(MultistreamSelectTests.Msg("/tls/1.0.0"))
            .Concat(MultistreamSelectTests.Msg("ls"))
            .Concat(MultistreamSelectTests.Msg("/noise"))
            .ToList();
        var at = (int)((uint)position % (valid.Count + 1));
        valid.InsertRange(at, noise ?? []);
        return RunListener(valid.ToArray());
    }

    private static bool RunListener(byte[] bytes)
    {
        var (dialer, listener) = PipePair.Create();
        dialer.Output.WriteAsync(bytes).AsTask().GetAwaiter().GetResult();
        dialer.Output.Complete();
        try
        {
            var selected = MultistreamSelect.HandleAsync(listener, ["/noise"], MultistreamOptions.Default, default)
                .AsTask().GetAwaiter().GetResult();
            return selected == "/noise";
        }
        catch (ProtocolViolationException)
        {
            return true;
        }
        catch (PeerGoneException)
        {
            return true; // the stream ended between two messages: the dialer went away, nothing was malformed
        }
    }

    private static bool IsValidUnicode(string s)
    {
        try
        {
            _ = new System.Text.UTF8Encoding(false, true).GetByteCount(s);
            return true;
        }
        catch (System.Text.EncoderFallbackException)
        {
            return false;
        }
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory) => Memory = memory;

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory) { RunningIndex = RunningIndex + Memory.Length };
            Next = next;
            return next;
        }
    }
}
