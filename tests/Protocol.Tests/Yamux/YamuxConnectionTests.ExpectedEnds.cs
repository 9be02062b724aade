using Potluck.Protocol.Framing;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Tests.Yamux;

/// <summary>The expected ends of streams and connections taken as values (no exception), and the throwing API kept.</summary>
public partial class YamuxConnectionTests
{
    [Test]
    public async Task RemoteReset_TryReadFramed_GivesTheMessageThenTheResetAsItsCause()
    {
        var (connection, peer) = Start(initiator: false);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Syn, 1, 2), [1, 0xAA]);
        var stream = await connection.AcceptStreamAsync(default).AsTask().WaitAsync(HangGuard);

        var first = await LengthPrefixed.TryReadAsync(stream.Input, 16, "/test", default).AsTask().WaitAsync(HangGuard);
        var reading = LengthPrefixed.TryReadAsync(stream.Input, 16, "/test", default).AsTask();
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Rst, 1, 0));
        var second = await reading.WaitAsync(HangGuard);

        Assert.That(first.Message, Is.EqualTo(new byte[] { 0xAA }));
        Assert.That(first.Cause, Is.Null);
        Assert.That(second.Message, Is.Null);
        Assert.That(second.Cause, Is.InstanceOf<StreamResetException>());
        Assert.That(second.Failure?.Kind, Is.EqualTo(FailureKind.PeerGone));
        Assert.ThrowsAsync<StreamResetException>(async () => await stream.Input.ReadAsync(), "the plain read still throws it");
    }

    [Test]
    public async Task RemoteFin_TryReadFramed_IsACleanEnd()
    {
        var (connection, peer) = Start(initiator: false);
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Syn | YamuxFlags.Fin, 1, 0));
        var stream = await connection.AcceptStreamAsync(default).AsTask().WaitAsync(HangGuard);

        var read = await LengthPrefixed.TryReadAsync(stream.Input, 16, "/test", default).AsTask().WaitAsync(HangGuard);

        Assert.That(read.Message, Is.Null);
        Assert.That(read.Cause, Is.Null);
        Assert.That(read.Failure, Is.Null);
    }

    [Test]
    public async Task Close_EndsAPendingTryAcceptWithNull_AndAcceptAndAPendingPingThrowPeerGone()
    {
        var (connection, _) = Start(initiator: false);
        var accepting = connection.TryAcceptStreamAsync(default).AsTask();
        var ping = connection.PingAsync(default).AsTask();

        await connection.DisposeAsync().AsTask().WaitAsync(HangGuard);

        Assert.That(await accepting.WaitAsync(HangGuard), Is.Null);
        Assert.That(await connection.TryAcceptStreamAsync(default).AsTask().WaitAsync(HangGuard), Is.Null);
        Assert.ThrowsAsync<PeerGoneException>(async () => await connection.AcceptStreamAsync(default));
        Assert.ThrowsAsync<PeerGoneException>(async () => await ping.WaitAsync(HangGuard));
        Assert.ThrowsAsync<PeerGoneException>(async () => await connection.PingAsync(default));
    }
}
