using System.Buffers;
using System.IO.Pipelines;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Tests.Host;

namespace Potluck.Protocol.Tests.Framing;

public class LengthPrefixedTests
{
    [Test]
    public void ReadAsync_MessageLargerThanTheYamuxWindow_ArrivesWhole() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d, seed: 3);
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        var received = new TaskCompletionSource<byte[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        b.Host.SetStreamHandler("/test/big/1.0.0", async (stream, token) =>
            received.TrySetResult((await LengthPrefixed.ReadAsync(stream.Input, 2 << 20, "test", token))!));
        await a.Host.ConnectAsync(b.Address, ct);

        var message = new byte[1 << 20]; // four times yamux's initial 256 KiB window
        new Random(1).NextBytes(message);
        await using var s = await a.Host.NewStreamAsync(b.Host.PeerId, ["/test/big/1.0.0"], ct);
        await LengthPrefixed.WriteAsync(s.Output, message, ct);

        Assert.That(await received.Task.WaitAsync(ct), Is.EqualTo(message));
    });

    [TestCase(new byte[] { }, true)]
    [TestCase(new byte[] { 0x80 }, false)]
    [TestCase(new byte[] { 0x05, 1, 2 }, false)]
    public async Task ReadAsync_StreamEndsEarly_NullOnlyBeforeAnyByte(byte[] bytes, bool cleanEnd)
    {
        var pipe = new Pipe();
        await pipe.Writer.WriteAsync(bytes);
        await pipe.Writer.CompleteAsync();
        if (cleanEnd)
        {
            Assert.That(await LengthPrefixed.ReadAsync(pipe.Reader, 100, "test", CancellationToken.None), Is.Null);
        }
        else
        {
            Assert.ThrowsAsync<ProtocolViolationException>(async () => await LengthPrefixed.ReadAsync(pipe.Reader, 100, "test", CancellationToken.None));
        }
    }

    [Test]
    public async Task ReadAsync_LengthOverTheLimit_IsRefusedBeforeReadingTheBody()
    {
        var pipe = new Pipe();
        var header = new ArrayBufferWriter<byte>();
        Potluck.Protocol.Multiformats.Varint.Write(header, 1UL << 32);
        await pipe.Writer.WriteAsync(header.WrittenMemory);
        Assert.ThrowsAsync<ProtocolViolationException>(async () => await LengthPrefixed.ReadAsync(pipe.Reader, 1024, "test", CancellationToken.None));
    }

    [Test]
    public async Task ReadAsync_TwoMessagesInOneBuffer_AreReadInTurn()
    {
        var pipe = new Pipe();
        LengthPrefixed.Write(pipe.Writer, [1, 2, 3]);
        LengthPrefixed.Write(pipe.Writer, []);
        LengthPrefixed.Write(pipe.Writer, [9]);
        await pipe.Writer.FlushAsync();
        await pipe.Writer.CompleteAsync();
        Assert.That(await LengthPrefixed.ReadAsync(pipe.Reader, 10, "t", default), Is.EqualTo(new byte[] { 1, 2, 3 }));
        Assert.That(await LengthPrefixed.ReadAsync(pipe.Reader, 10, "t", default), Is.Empty);
        Assert.That(await LengthPrefixed.ReadAsync(pipe.Reader, 10, "t", default), Is.EqualTo(new byte[] { 9 }));
        Assert.That(await LengthPrefixed.ReadAsync(pipe.Reader, 10, "t", default), Is.Null);
    }
}
