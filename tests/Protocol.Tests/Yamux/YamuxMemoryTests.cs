using Potluck.Protocol.Runtime;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Tests.Yamux;

/// <summary>Receive windows are memory the remote may fill: a connection's and a host's are bounded, and every byte is returned.</summary>
[Category("Adversarial")]
public class YamuxMemoryTests
{
    private static YamuxSession Server(YamuxOptions options, MemoryBudget? budget = null) =>
        new(options, initiator: false, (id, o) => new YamuxStreamState(id, o), budget);

    private static int OpenInbound(YamuxSession session, int count, uint firstId = 1)
    {
        var opened = 0;
        for (var i = 0; i < count; i++)
        {
            if (session.OnHeader(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, firstId + 2 * (uint)i, 0), 0).Opened is not null)
            {
                opened++;
            }
        }
        return opened;
    }

    [Test]
    public void AThousandInboundStreams_GetWindowsOnlyUpToTheConnectionsMemory_TheRestAreRefusedWithRst()
    {
        var options = new YamuxOptions { AcceptBacklog = 1000 };
        var session = Server(options);

        var opened = OpenInbound(session, 1000);

        Assert.That(opened, Is.EqualTo((int)(options.MaxConnectionMemory / YamuxOptions.InitialStreamWindow)), "128 at the 32 MiB default");
        Assert.That(session.ReservedMemory, Is.EqualTo(options.MaxConnectionMemory));
        Assert.That(session.RefusedForMemory, Is.EqualTo(1000 - opened));
        var rsts = 0;
        while (session.TryTakeControl(out var h))
        {
            rsts += h.Flags.HasFlag(YamuxFlags.Rst) ? 1 : 0;
        }
        Assert.That(rsts, Is.EqualTo(1000 - opened));
    }

    [Test]
    public void TheHostsBudget_IsSharedByConnections_AndReturnedWhenStreamsAndConnectionsEnd()
    {
        var budget = new MemoryBudget(3 * YamuxOptions.InitialStreamWindow, "muxer memory");
        var options = new YamuxOptions();
        var a = Server(options, budget);
        var b = Server(options, budget);

        Assert.That(OpenInbound(a, 2), Is.EqualTo(2));
        Assert.That(OpenInbound(b, 2), Is.EqualTo(1), "one window left in the host's budget");
        Assert.That(budget.Reserved, Is.EqualTo(3 * YamuxOptions.InitialStreamWindow));
        Assert.That(budget.Refused, Is.EqualTo(1));

        // The remote resets one of a's streams: its window returns, and b may open another.
        a.OnHeader(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Rst, 1, 0), 0);
        Assert.That(OpenInbound(b, 1, firstId: 101), Is.EqualTo(1));

        a.ReleaseAllMemory();
        b.ReleaseAllMemory();
        Assert.That(budget.Reserved, Is.Zero, "a closed connection returns everything it held");
        a.OnHeader(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Rst, 3, 0), 0);
        Assert.That(budget.Reserved, Is.Zero, "nothing is returned twice");
    }

    [Test]
    public void OpeningOurOwnStreamPastTheMemory_ThrowsAResourceLimit()
    {
        var client = new YamuxSession(new YamuxOptions { MaxConnectionMemory = 2 * YamuxOptions.InitialStreamWindow }, initiator: true,
            (id, o) => new YamuxStreamState(id, o));
        client.OpenOutbound();
        client.OpenOutbound();

        var e = Assert.Throws<ResourceLimitException>(() => client.OpenOutbound());
        Assert.That(Failures.Classify(e!).Kind, Is.EqualTo(FailureKind.ResourceLimit));
    }
}
