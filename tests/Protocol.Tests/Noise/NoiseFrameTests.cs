using System.Buffers;
using Potluck.Protocol.Noise;

namespace Potluck.Protocol.Tests.Noise;

public class NoiseFrameTests
{
    [Test]
    public void TryRead_WholeFrame_IsDoneAndSlicesTheBody()
    {
        var bytes = new byte[] { 0x00, 0x03, 1, 2, 3, 9 };
        var status = NoiseFrame.TryRead(new ReadOnlySequence<byte>(bytes), 0, out var message, out var end);
        Assert.That(status, Is.EqualTo(DecodeStatus.Done));
        Assert.That(message.ToArray(), Is.EqualTo(new byte[] { 1, 2, 3 }));
        Assert.That(new ReadOnlySequence<byte>(bytes).Slice(end).ToArray(), Is.EqualTo(new byte[] { 9 }));
    }

    [Test]
    public void TryRead_TruncatedHeaderOrBody_NeedsMoreData()
    {
        Assert.That(NoiseFrame.TryRead(new ReadOnlySequence<byte>([0xFF]), 0, out _, out _), Is.EqualTo(DecodeStatus.NeedMoreData));
        Assert.That(NoiseFrame.TryRead(new ReadOnlySequence<byte>([0xFF, 0xFF, 1, 2]), 0, out _, out _), Is.EqualTo(DecodeStatus.NeedMoreData));
    }

    [Test]
    public void TryRead_TransportFrameShorterThanTag_IsInvalid()
    {
        var bytes = new byte[] { 0x00, 0x0F }.Concat(new byte[15]).ToArray();
        Assert.That(NoiseFrame.TryRead(new ReadOnlySequence<byte>(bytes), 16, out _, out _), Is.EqualTo(DecodeStatus.Invalid));
    }

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public bool TryRead_RandomBytes_EndInDoneNeedMoreOrInvalidWithinBounds(byte[] bytes, bool transport)
    {
        var status = NoiseFrame.TryRead(new ReadOnlySequence<byte>(bytes), transport ? 16 : 0, out var message, out _);
        return status switch
        {
            DecodeStatus.Done => message.Length == ((bytes[0] << 8) | bytes[1]) && message.Length <= bytes.Length - 2,
            DecodeStatus.NeedMoreData => bytes.Length < 2 || ((bytes[0] << 8) | bytes[1]) > bytes.Length - 2,
            _ => transport && ((bytes[0] << 8) | bytes[1]) < 16,
        };
    }
}
