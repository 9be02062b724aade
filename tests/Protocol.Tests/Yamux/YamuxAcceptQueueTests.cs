using Potluck.Protocol.Runtime;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Tests.Yamux;

/// <summary>The accept queue: one parked accept and a queue made only when a stream arrives (no channel).</summary>
public partial class YamuxConnectionTests
{
    [Test]
    public void IdleConnection_HoldsNoAcceptQueue_AndAParkedAcceptGetsStreamsInOrder() => VirtualTimeDriver.Run(async d =>
    {
        var (connection, peer) = Start(initiator: false, d.CreateRuntime(2));
        var parked = connection.AcceptStreamAsync(default);
        await d.IdleAsync();
        Assert.That(parked.IsCompleted, Is.False, "nothing arrived yet");
        Assert.That(connection.HoldsAcceptQueue, Is.False, "an idle connection with an accept waiting holds no queue");

        await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, 1, 0));
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, 3, 0));
        var first = (YamuxStream)await parked;
        var second = (YamuxStream)await connection.AcceptStreamAsync(default);
        Assert.That((first.Id, second.Id), Is.EqualTo((1u, 3u)));
        // Each accept acknowledges its stream, as before.
        Assert.That((await peer.ReceiveUntilAsync(YamuxFrameType.WindowUpdate)).Flags, Is.EqualTo(YamuxFlags.Ack));
        await DisposeConnections();
    });

    [Test]
    public void ClosingTheConnection_HandsOutWhatArrivedFirst_ThenFailsTheAcceptWithPeerGone() => VirtualTimeDriver.Run(async d =>
    {
        var (connection, peer) = Start(initiator: false, d.CreateRuntime(3));
        await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, 1, 0));
        await d.IdleAsync();
        await connection.DisposeAsync();

        var queued = await connection.AcceptStreamAsync(default);
        Assert.That(((YamuxStream)queued).Id, Is.EqualTo(1u));
        var e = await AsyncAssert.ThrowsAsync<PeerGoneException>(async () => await connection.AcceptStreamAsync(default));
        Assert.That(e!.Message, Does.Contain("closed"));
        await DisposeConnections();
    });

    [Test]
    public void ConnectionClosedByAViolation_WakesAParkedAcceptWithPeerGone() => VirtualTimeDriver.Run(async d =>
    {
        var (connection, peer) = Start(initiator: false, d.CreateRuntime(4));
        var parked = connection.AcceptStreamAsync(default).AsTask();
        await d.IdleAsync();
        Assert.That(parked.IsCompleted, Is.False);

        var header = new byte[YamuxHeader.Size];
        new YamuxHeader(YamuxFrameType.Data, YamuxFlags.None, 0, uint.MaxValue).Write(header);
        await peer.SendRawAsync(header);
        await AsyncAssert.ThrowsAsync<PeerGoneException>(async () => await parked);
        await AsyncAssert.ThrowsAsync<ProtocolViolationException>(async () => await connection.Completion);
        await DisposeConnections();
    });

    [Test]
    public void CancelledAccept_EndsAlone_AndTheNextAcceptGetsTheStream() => VirtualTimeDriver.Run(async d =>
    {
        var (connection, peer) = Start(initiator: false, d.CreateRuntime(5));
        using var cancel = new CancellationTokenSource();
        var parked = connection.AcceptStreamAsync(cancel.Token).AsTask();
        await d.IdleAsync();
        cancel.Cancel();
        await AsyncAssert.ThrowsAsync<OperationCanceledException>(async () => await parked);
        await AsyncAssert.ThrowsAsync<OperationCanceledException>(async () => await connection.AcceptStreamAsync(cancel.Token));

        await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, 1, 0));
        var stream = await connection.AcceptStreamAsync(default);
        Assert.That(((YamuxStream)stream).Id, Is.EqualTo(1u));
        Assert.That(connection.Completion.IsCompleted, Is.False);
        await DisposeConnections();
    });

    [Test]
    public void SecondAcceptWhileOneWaits_IsRefused_TheFirstStillGetsTheStream() => VirtualTimeDriver.Run(async d =>
    {
        var (connection, peer) = Start(initiator: false, d.CreateRuntime(6));
        var first = connection.AcceptStreamAsync(default).AsTask();
        await AsyncAssert.ThrowsAsync<InvalidOperationException>(async () => await connection.AcceptStreamAsync(default));

        await peer.SendAsync(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, 1, 0));
        Assert.That(((YamuxStream)await first).Id, Is.EqualTo(1u));
        await DisposeConnections();
    });
}
