using Potluck.Protocol.Runtime;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Tests.Yamux;

/// <summary>
/// Memory is reserved for what a remote can make us hold (bytes buffered unread, grown windows), not for windows at open:
/// idle streams cost nothing, what a connection buffers is bounded by its memory and the host's, and every byte is returned.
/// </summary>
[Category("Adversarial")]
public class YamuxMemoryTests
{
    private const uint Window = YamuxOptions.InitialStreamWindow;

    private static YamuxSession Server(YamuxOptions options, IMemoryScope? budget = null) =>
        new(options, initiator: false, (id, o) => new YamuxStreamState(id, o), budget);

    private static List<YamuxStreamState> OpenInbound(YamuxSession session, int count, uint firstId = 1)
    {
        var opened = new List<YamuxStreamState>();
        for (var i = 0; i < count; i++)
        {
            if (session.OnHeader(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, firstId + 2 * (uint)i, 0), 0).Opened is { } s)
            {
                opened.Add(s);
            }
        }
        return opened;
    }

    /// <summary>The remote sends <paramref name="length"/> bytes on <paramref name="stream"/> and nobody reads them; true when they were buffered.</summary>
    internal static bool Fill(YamuxSession session, YamuxStreamState stream, uint length)
    {
        var outcome = session.OnHeader(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.None, stream.Id, length), 0);
        Assert.That(outcome.Violation, Is.Null, "within the window granted: never a protocol error");
        return outcome.Deliver && session.TryBuffer(stream, length);
    }

    /// <summary>Streams the session reset (RST queued for the writer).</summary>
    internal static int TakeResets(YamuxSession session)
    {
        var rsts = 0;
        while (session.TryTakeDirty(out _, out var work))
        {
            rsts += work.Rst ? 1 : 0;
        }
        while (session.TryTakeControl(out var h))
        {
            rsts += h.Flags.HasFlag(YamuxFlags.Rst) ? 1 : 0;
        }
        return rsts;
    }

    [Test]
    public void AThousandIdleStreams_ReserveNothing_FillingThemIsBoundedByTheConnectionsMemory_AndOnlyTheOverflowingStreamsAreReset()
    {
        var options = new YamuxOptions { AcceptBacklog = 1000 };
        var session = Server(options);

        var streams = OpenInbound(session, 1000);
        Assert.That(streams, Has.Count.EqualTo(1000), "the stream caps bound idle streams, not memory");
        Assert.That(session.ReservedMemory, Is.Zero);
        Assert.That(TakeResets(session), Is.Zero);

        // The remote fills every window it was granted (the spec's 256 KiB each) and we read nothing.
        var buffered = streams.Count(s => Fill(session, s, Window));

        // 32 MiB reserved plus the 64 KiB free: 128 whole windows; the 129th no longer fits.
        Assert.That(buffered, Is.EqualTo(128));
        Assert.That(session.BufferedBytes, Is.EqualTo(128L * Window));
        Assert.That(session.BufferedBytes, Is.LessThanOrEqualTo(options.MaxConnectionMemory + options.FreeReceiveBuffer));
        Assert.That(session.ReservedMemory, Is.EqualTo(128L * Window - options.FreeReceiveBuffer));
        Assert.That(session.ResetForMemory, Is.EqualTo(1000 - 128));
        Assert.That(TakeResets(session), Is.EqualTo(1000 - 128), "every stream that sent what we could not hold is answered with RST");
        Assert.That(session.StreamCount, Is.EqualTo(128), "the others go on");

        // Reading returns everything.
        foreach (var s in streams.Where(s => !s.IsReset))
        {
            session.OnConsumed(s, Window, 0);
        }
        Assert.That(session.ReservedMemory, Is.Zero);
        Assert.That(session.BufferedBytes, Is.Zero);
    }

    [Test]
    public void TheHostsBudget_IsSharedByConnections_AndReturnedWhenTheApplicationLetsGo()
    {
        var budget = new MemoryBudget(3 * Window, "muxer memory");
        var options = new YamuxOptions { FreeReceiveBuffer = 0 };
        var a = Server(options, budget);
        var b = Server(options, budget);
        var aStreams = OpenInbound(a, 2);
        var bStreams = OpenInbound(b, 2);
        Assert.That(budget.Reserved, Is.Zero, "four idle streams");

        Assert.That(aStreams.Count(s => Fill(a, s, Window)), Is.EqualTo(2));
        Assert.That(bStreams.Count(s => Fill(b, s, Window)), Is.EqualTo(1), "one window's worth left in the host's budget");
        Assert.That(budget.Reserved, Is.EqualTo(3 * Window));
        Assert.That(budget.Refused, Is.EqualTo(1));
        Assert.That(TakeResets(b), Is.EqualTo(1));

        // The remote resets one of a's streams: its unread bytes stay reserved until the application lets them go.
        a.OnHeader(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Rst, aStreams[0].Id, 0), 0);
        Assert.That(budget.Reserved, Is.EqualTo(3 * Window));
        a.OnLocalInputCompleted(aStreams[0], 0);
        Assert.That(budget.Reserved, Is.EqualTo(2 * Window));
        var more = OpenInbound(b, 1, firstId: 101).Single();
        Assert.That(Fill(b, more, Window), Is.True);

        a.ReleaseAllMemory();
        b.ReleaseAllMemory();
        Assert.That(budget.Reserved, Is.Zero, "a closed connection returns everything it held");
        a.OnLocalInputCompleted(aStreams[1], 0);
        a.OnHeader(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Rst, aStreams[1].Id, 0), 0);
        Assert.That(budget.Reserved, Is.Zero, "nothing is returned twice");
    }

    [Test]
    public void OurOwnStreams_OpenWithoutReserving_AndDataPastTheMemoryResetsOnlyTheStreamItCameOn()
    {
        var options = new YamuxOptions { MaxConnectionMemory = 2 * Window };
        var client = new YamuxSession(options, initiator: true, (id, o) => new YamuxStreamState(id, o));
        var streams = Enumerable.Range(0, 10).Select(_ => client.OpenOutbound()).ToList();
        Assert.That(client.ReservedMemory, Is.Zero, "opening costs nothing");
        TakeResets(client); // the SYNs

        var buffered = streams.Count(s => Fill(client, s, Window));

        // 512 KiB reserved plus 64 KiB free: two whole windows.
        Assert.That(buffered, Is.EqualTo(2));
        Assert.That(client.ResetForMemory, Is.EqualTo(8));
        Assert.That(streams.Take(2).All(s => !s.IsReset), Is.True);
        Assert.That(streams.Skip(2).All(s => s.IsReset), Is.True);
    }

    [Test]
    public void SmallMessagesOnManyStreams_FitTheFreeAmount_WhenTheBudgetIsExhausted()
    {
        var budget = new MemoryBudget(Window, "muxer memory");
        Assert.That(budget.TryReserve(Window), Is.True, "somebody else holds the whole budget");
        var session = Server(new YamuxOptions(), budget);
        var streams = OpenInbound(session, 200);

        // 200 pings of 32 bytes, none read yet: 6,400 bytes, within the 64 KiB the connection may buffer unreserved.
        Assert.That(streams.Count(s => Fill(session, s, 32)), Is.EqualTo(200));
        Assert.That(session.ReservedMemory, Is.Zero);
        Assert.That(TakeResets(session), Is.Zero);
    }

    [Test]
    public void AGrowthTheBudgetRefuses_KeepsTheWindow_TheStreamGoesOn()
    {
        // A grown window is reserved whole: room for 256 KiB -> 512 KiB -> 1 MiB, not for 2 MiB.
        var budget = new MemoryBudget(1024 * 1024, "muxer memory");
        var session = Server(new YamuxOptions(), budget);
        var stream = OpenInbound(session, 1).Single();
        session.Rtt = 1_000_000;

        for (var i = 0; i < 8; i++)
        {
            var granted = (uint)stream.RecvAvailable;
            Assert.That(Fill(session, stream, granted), Is.True, $"round {i}: the stream is never reset");
            session.OnConsumed(stream, granted, now: i);
        }

        Assert.That(stream.RecvWindow, Is.EqualTo(1024 * 1024), "not grown past what the budget allows");
        Assert.That(stream.IsReset, Is.False);
        Assert.That(budget.Reserved, Is.EqualTo(1024 * 1024), "the grown window, reserved whole; its buffered bytes never needed more");
        Assert.That(budget.Refused, Is.GreaterThan(0));
        Assert.That(stream.RecvAvailable, Is.EqualTo(1024 * 1024), "a full window granted again each round");
    }
}
