using System.Buffers;
using FsCheck;
using FsCheck.Fluent;
using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.Tests.Multiformats;

public class VarintTests
{
    /// <summary>Full-range 64-bit values (FsCheck's own ulong generator stays small).</summary>
    internal static Gen<ulong> AnyULong() =>
        Gen.Choose(int.MinValue, int.MaxValue).Two().Select(t => ((ulong)(uint)t.Item1 << 32) | (uint)t.Item2);

    /// <summary>Values below 2^63 spread evenly over bit lengths, so every varint size is well covered.</summary>
    private static Arbitrary<ulong> Below2To63() =>
        Gen.Choose(0, 63)
            .SelectMany(bits => AnyULong().Select(v => bits == 0 ? 0UL : v & ((1UL << bits) - 1)))
            .ToArbitrary();

    [Test]
    public void Generator_CoversEveryVarintSize()
    {
        var sizes = Below2To63().Generator.Sample(1000).Select(Varint.Size).ToHashSet();
        Assert.That(sizes, Is.EquivalentTo(Enumerable.Range(1, 9)));
    }

    [TestCase(0UL, "00")]
    [TestCase(1UL, "01")]
    [TestCase(127UL, "7f")]
    [TestCase(128UL, "8001")]
    [TestCase(255UL, "ff01")]
    [TestCase(300UL, "ac02")]
    [TestCase(16384UL, "808001")]
    [TestCase((1UL << 63) - 1, "ffffffffffffffff7f")]
    public void Encode_SpecExamples_MatchAndDecodeBack(ulong value, string hex)
    {
        var bytes = Varint.Encode(value);
        Assert.That(Convert.ToHexStringLower(bytes), Is.EqualTo(hex));
        Assert.That(Varint.Size(value), Is.EqualTo(bytes.Length));
        Assert.That(Varint.TryRead(bytes, out var decoded, out var consumed), Is.EqualTo(DecodeStatus.Done));
        Assert.That((decoded, consumed), Is.EqualTo((value, bytes.Length)));
    }

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public Property EncodeDecode_RoundTripsEveryValueBelow2To63() =>
        Prop.ForAll(Below2To63(), value =>
        {
            var bytes = Varint.Encode(value);
            var withTrailer = bytes.Concat(new byte[] { 0xAB, 0xCD }).ToArray();
            var spanOk = Varint.TryRead(withTrailer, out var decoded, out var consumed) == DecodeStatus.Done
                         && decoded == value && consumed == bytes.Length && bytes.Length == Varint.Size(value);
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(withTrailer));
            var readerOk = Varint.TryRead(ref reader, out var viaReader) == DecodeStatus.Done
                           && viaReader == value && reader.Consumed == bytes.Length;
            return spanOk && readerOk;
        });

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public Property EncodeDecode_RoundTripsAcrossEverySegmentSplit() =>
        Prop.ForAll(Below2To63(), value =>
        {
            var bytes = Varint.Encode(value);
            for (var split = 0; split <= bytes.Length; split++)
            {
                var reader = new SequenceReader<byte>(Segments(bytes[..split], bytes[split..], [0x01]));
                if (Varint.TryRead(ref reader, out var decoded) != DecodeStatus.Done || decoded != value || reader.Consumed != bytes.Length)
                {
                    return false;
                }
            }
            return true;
        });

    [Test]
    public void Write_ToBufferWriter_MatchesEncode()
    {
        var writer = new ArrayBufferWriter<byte>();
        Varint.Write(writer, 300);
        Varint.Write(writer, Varint.MaxValue);
        Assert.That(writer.WrittenSpan.ToArray(), Is.EqualTo(Varint.Encode(300).Concat(Varint.Encode(Varint.MaxValue)).ToArray()));
    }

    [TestCase(1UL << 63)]
    [TestCase(ulong.MaxValue)]
    public void Encode_ValueOf2To63OrMore_Throws(ulong value)
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Varint.Encode(value));
        Assert.Throws<ArgumentOutOfRangeException>(() => Varint.Size(value));
        Assert.Throws<ArgumentOutOfRangeException>(() => Varint.Write(new byte[16], value));
    }

    [TestCase("8000")]          // 0 in two bytes
    [TestCase("ff00")]          // 127 in two bytes
    [TestCase("808000")]        // 0 in three bytes
    [TestCase("ac8200")]        // 300 with a zero tail
    [TestCase("ffffffffffffffff00")]
    public void Decode_NonMinimalEncoding_IsInvalid(string hex)
    {
        var bytes = Convert.FromHexString(hex);
        Assert.That(Varint.TryRead(bytes, out var value, out var consumed), Is.EqualTo(DecodeStatus.Invalid));
        Assert.That((value, consumed), Is.EqualTo((0UL, 0)));
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes));
        Assert.That(Varint.TryRead(ref reader, out _), Is.EqualTo(DecodeStatus.Invalid));
        Assert.That(reader.Consumed, Is.Zero);
        Assert.Throws<FormatException>(() => Varint.Read(bytes, out _));
    }

    [TestCase("ffffffffffffffff80")]   // continuation bit on the ninth byte
    [TestCase("ffffffffffffffffff01")] // a ten-byte (protobuf-style) varint of 2^63
    [TestCase("80808080808080808001")]
    public void Decode_MoreThanNineBytes_IsInvalid(string hex)
    {
        var bytes = Convert.FromHexString(hex);
        Assert.That(Varint.TryRead(bytes, out _, out _), Is.EqualTo(DecodeStatus.Invalid));
        var reader = new SequenceReader<byte>(Segments(bytes[..3], bytes[3..]));
        Assert.That(Varint.TryRead(ref reader, out _), Is.EqualTo(DecodeStatus.Invalid));
        Assert.That(reader.Consumed, Is.Zero);
    }

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public Property Decode_EveryStrictPrefix_NeedsMoreData() =>
        Prop.ForAll(Below2To63(), value =>
        {
            var bytes = Varint.Encode(value);
            for (var length = 0; length < bytes.Length; length++)
            {
                var prefix = bytes[..length];
                if (Varint.TryRead(prefix, out var v, out var c) != DecodeStatus.NeedMoreData || v != 0 || c != 0)
                {
                    return false;
                }
                // The same prefix as a multi-segment sequence, one byte per segment.
                var reader = new SequenceReader<byte>(Segments(prefix.Select(b => new[] { b }).ToArray()));
                if (Varint.TryRead(ref reader, out _) != DecodeStatus.NeedMoreData || reader.Consumed != 0)
                {
                    return false;
                }
            }
            return true;
        });

    [Test]
    public void Decode_Empty_NeedsMoreData()
    {
        Assert.That(Varint.TryRead(ReadOnlySpan<byte>.Empty, out _, out _), Is.EqualTo(DecodeStatus.NeedMoreData));
        var reader = new SequenceReader<byte>(ReadOnlySequence<byte>.Empty);
        Assert.That(Varint.TryRead(ref reader, out _), Is.EqualTo(DecodeStatus.NeedMoreData));
        Assert.That(Assert.Throws<FormatException>(() => Varint.Read([0x80], out _))!.Message, Does.Contain("truncated"));
    }

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public bool Decode_RandomBytes_EndsInAStatusAndNeverOverreads(byte[] bytes)
    {
        var status = Varint.TryRead(bytes, out var value, out var consumed);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes));
        var readerStatus = Varint.TryRead(ref reader, out var readerValue);
        return status == readerStatus && value == readerValue && reader.Consumed == consumed && status switch
        {
            DecodeStatus.Done => consumed is >= 1 and <= Varint.MaxBytes && Varint.Encode(value).AsSpan().SequenceEqual(bytes.AsSpan(0, consumed)),
            DecodeStatus.NeedMoreData => bytes.Length < Varint.MaxBytes && consumed == 0,
            DecodeStatus.Invalid => consumed == 0,
            _ => false,
        };
    }

    /// <summary>A multi-segment sequence over the given chunks (empty chunks included).</summary>
    internal static ReadOnlySequence<byte> Segments(params byte[][] chunks)
    {
        if (chunks.Length == 0)
        {
            return ReadOnlySequence<byte>.Empty;
        }
        var first = new Segment(chunks[0], 0);
        var last = first;
        foreach (var chunk in chunks.Skip(1))
        {
            last = last.Append(chunk);
        }
        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
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
}
