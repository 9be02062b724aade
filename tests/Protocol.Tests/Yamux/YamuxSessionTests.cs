using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Tests.Yamux;

/// <summary>The pure state machine: headers and time in, decisions out, no pipes or tasks.</summary>
public class YamuxSessionTests
{
    private const uint Window = YamuxOptions.InitialStreamWindow;

    [Test]
    public void Consuming_LessThanHalfTheWindow_QueuesNoUpdate_HalfQueuesExactlyTheConsumedBytes()
    {
        var (session, stream) = SessionWithInboundStream(new YamuxOptions());
        Receive(session, stream, Window / 2);

        Assert.That(session.OnConsumed(stream, Window / 2 - 1, now: 0), Is.False);
        Assert.That(session.OnConsumed(stream, 1, now: 0), Is.True);
        Assert.That(stream.PendingDelta, Is.EqualTo(Window / 2));
        Assert.That(stream.RecvWindow, Is.EqualTo(Window), "no RTT known: no auto-tuning");
    }

    [Test]
    public void AutoTune_WindowConsumedWithinFourRtts_Doubles()
    {
        var (session, stream) = SessionWithInboundStream(new YamuxOptions());
        session.Rtt = 100;
        Receive(session, stream, Window);

        Assert.That(session.OnConsumed(stream, Window, now: 399), Is.True);
        Assert.That(stream.RecvWindow, Is.EqualTo(2 * Window));
        Assert.That(stream.PendingDelta, Is.EqualTo(2 * Window), "the consumed bytes plus the growth");
        Assert.That(stream.RecvAvailable, Is.EqualTo(2 * Window));
    }

    [Test]
    public void AutoTune_SlowConsumer_KeepsTheWindow()
    {
        var (session, stream) = SessionWithInboundStream(new YamuxOptions());
        session.Rtt = 100;
        Receive(session, stream, Window);

        session.OnConsumed(stream, Window, now: 400);
        Assert.That(stream.RecvWindow, Is.EqualTo(Window));
    }

    [Test]
    public void AutoTune_NeverExceedsMaxStreamWindow()
    {
        var options = new YamuxOptions { MaxStreamWindow = 3 * Window };
        var (session, stream) = SessionWithInboundStream(options);
        session.Rtt = 1_000_000;
        for (var i = 0; i < 10; i++)
        {
            var granted = stream.RecvAvailable;
            Receive(session, stream, (uint)granted);
            session.OnConsumed(stream, granted, now: i);
        }

        Assert.That(stream.RecvWindow, Is.EqualTo(3 * Window));
    }

    [Test]
    public void Data_BeyondTheGrantedWindow_IsAViolation_UntilAnUpdateGrantsIt()
    {
        var (session, stream) = SessionWithInboundStream(new YamuxOptions());
        Receive(session, stream, Window);

        var over = session.OnHeader(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.None, stream.Id, 1), 0);
        Assert.That(over.Violation, Does.Contain("exceeds the receive window"));

        (session, stream) = SessionWithInboundStream(new YamuxOptions());
        Receive(session, stream, Window);
        session.OnConsumed(stream, Window, 0);
        var after = session.OnHeader(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.None, stream.Id, Window), 0);
        Assert.That(after.Violation, Is.Null);
        Assert.That(after.Deliver, Is.True);
    }

    [Test]
    public void WindowUpdate_OverflowingTheSendWindow_IsAViolation()
    {
        var (session, stream) = SessionWithInboundStream(new YamuxOptions());
        var outcome = session.OnHeader(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.None, stream.Id, uint.MaxValue), 0);
        Assert.That(outcome.Violation, Does.Contain("overflows"));
    }

    [Test]
    public void InboundCap_ReachedRefusesWithRst_AndDrainsTheSynPayload()
    {
        var session = new YamuxSession(new YamuxOptions { MaxInboundStreams = 1 }, initiator: false, (id, o) => new YamuxStreamState(id, o));
        Assert.That(session.OnHeader(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, 1, 0), 0).Opened, Is.Not.Null);

        var refused = session.OnHeader(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Syn, 3, 10), 0);

        Assert.That(refused.Opened, Is.Null);
        Assert.That(refused.Deliver, Is.False);
        Assert.That(refused.PayloadLength, Is.EqualTo(10u));
        Assert.That(session.TryTakeControl(out var rst), Is.True);
        Assert.That(rst, Is.EqualTo(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Rst, 3, 0)));
        Assert.That(session.StreamCount, Is.EqualTo(1));
    }

    [Test]
    public void FinBothWays_RemovesTheStream()
    {
        var (session, stream) = SessionWithInboundStream(new YamuxOptions());
        var fin = session.OnHeader(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.Fin, stream.Id, 0), 0);
        Assert.That(fin.FinAfterPayload, Is.True);
        Assert.That(session.StreamCount, Is.EqualTo(1), "still open for writing");

        session.OnDataSent(stream, 0, fin: true, moreBuffered: false);
        Assert.That(session.StreamCount, Is.Zero);
        Assert.That(session.InboundCount, Is.Zero);
    }

    [Test]
    public void OutboundIds_AreOddForTheInitiator_AndEvenForTheResponder()
    {
        var client = new YamuxSession(new YamuxOptions(), initiator: true, (id, o) => new YamuxStreamState(id, o));
        var server = new YamuxSession(new YamuxOptions(), initiator: false, (id, o) => new YamuxStreamState(id, o));
        Assert.That(new[] { client.OpenOutbound().Id, client.OpenOutbound().Id }, Is.EqualTo(new uint[] { 1, 3 }));
        Assert.That(new[] { server.OpenOutbound().Id, server.OpenOutbound().Id }, Is.EqualTo(new uint[] { 2, 4 }));
    }

    private static (YamuxSession Session, YamuxStreamState Stream) SessionWithInboundStream(YamuxOptions options)
    {
        var session = new YamuxSession(options, initiator: false, (id, outbound) => new YamuxStreamState(id, outbound));
        var opened = session.OnHeader(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, 1, 0), now: 0);
        return (session, opened.Opened!);
    }

    private static void Receive(YamuxSession session, YamuxStreamState stream, uint length)
    {
        var outcome = session.OnHeader(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.None, stream.Id, length), 0);
        Assert.That(outcome.Violation, Is.Null);
        Assert.That(session.TryBuffer(stream, length), Is.True);
    }
}
