using System.IO.Pipelines;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Runtime;
using ByteQueue = Potluck.Protocol.Gossipsub.OutboundQueue<byte[]>;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// A peer's outbound queue: no buffer while empty, order, the bound, completion, and a writer that runs only while
/// there is something to write, scheduled (never run inside the write) and never two at once.
/// </summary>
public class OutboundQueueTests
{
    private const string Topic = "/potluck/test/1";

    /// <summary>A writer as the service runs it: takes everything, then asks again; counts its runs.</summary>
    private sealed class Writer
    {
        public ByteQueue Queue { get; set; } = null!;
        public List<byte> Written { get; } = [];
        public int Runs { get; private set; }
        public int Running { get; private set; }
        public bool SawCompleted { get; private set; }

        public void Run(object? state)
        {
            Assert.That(state, Is.SameAs(this), "the state given at construction");
            Assert.That(Running, Is.Zero, "never two writers at once");
            Running++;
            Runs++;
            try
            {
                while (true)
                {
                    switch (Queue.Next())
                    {
                        case ByteQueue.Step.Parked:
                            return;
                        case ByteQueue.Step.Completed:
                            SawCompleted = true;
                            return;
                    }
                    while (Queue.TryRead(out var rpc))
                    {
                        Written.Add(rpc[0]);
                    }
                }
            }
            finally
            {
                Running--;
            }
        }
    }

    private static (ByteQueue Queue, Writer Writer) Make(int capacity, PipeScheduler scheduler)
    {
        var writer = new Writer();
        writer.Queue = new ByteQueue(capacity, scheduler, writer.Run, writer);
        return (writer.Queue, writer);
    }

    [Test]
    public void IdleQueue_HoldsNoBufferAndRunsNoWriter_AndBurstsAfterTheWriterReturnedArriveInOrder() => VirtualTimeDriver.Run(async d =>
    {
        var (queue, writer) = Make(16, d.CreateRuntime(1).PipeScheduler);
        Assert.That(queue.HoldsBuffer, Is.False, "a new queue holds no buffer");
        queue.Attach();
        writer.Run(writer); // the stream opened: the opener writes what waits, here nothing
        Assert.That(queue.ReaderRunning, Is.False, "an empty queue keeps no writer");
        for (var burst = 0; burst < 3; burst++)
        {
            for (byte i = 0; i < 5; i++)
            {
                Assert.That(queue.TryWrite([(byte)(burst * 10 + i)]), Is.True);
            }
            Assert.That(writer.Runs, Is.EqualTo(burst + 1), "scheduled, not yet run");
            await d.IdleAsync();
            Assert.That(writer.Runs, Is.EqualTo(burst + 2), "one run per burst: five RPCs, one wake");
            Assert.That(queue.ReaderRunning, Is.False, "the writer returned");
            Assert.That(queue.HoldsBuffer, Is.False, "the buffer goes with the last RPC read");
        }
        Assert.That(writer.Written, Is.EqualTo(new[] { 0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 20, 21, 22, 23, 24 }.Select(i => (byte)i)), "every burst, in order");
    });

    [Test]
    public void RpcsQueuedBeforeTheStreamOpens_WaitForTheOpener_WhichWritesThemFirst() => VirtualTimeDriver.Run(async d =>
    {
        var (queue, writer) = Make(16, d.CreateRuntime(4).PipeScheduler);
        Assert.That(queue.TryWrite([1]) && queue.TryWrite([2]), Is.True);
        await d.IdleAsync();
        Assert.That(writer.Runs, Is.Zero, "no writer before the stream is open");
        queue.Attach();
        writer.Run(writer);
        Assert.That(writer.Written, Is.EqualTo(new byte[] { 1, 2 }));
        Assert.Throws<InvalidOperationException>(() => queue.Attach(), "one writer per queue");
        Assert.Throws<InvalidOperationException>(() => queue.Next(), "a returned writer asks nothing");
    });

    [Test]
    public void FullQueue_RefusesTheRpc_AndTakesMoreOnceOneIsRead()
    {
        var (queue, _) = Make(2, PipeScheduler.Inline);
        Assert.That(queue.TryWrite([1]) && queue.TryWrite([2]), Is.True);
        Assert.That(queue.TryWrite([3]), Is.False, "full at the bound: refused, not grown");
        Assert.That(queue.TryRead(out var first) && first[0] == 1, Is.True);
        Assert.That(queue.TryWrite([4]), Is.True);
        Assert.That(queue.TryRead(out var second) && second[0] == 2 && queue.TryRead(out var third) && third[0] == 4, Is.True);
        Assert.That(queue.TryRead(out _), Is.False);
    }

    [Test]
    public void Complete_SchedulesAnIdleWriterToClose_DropsWhatIsQueued_AndRefusesMore() => VirtualTimeDriver.Run(async d =>
    {
        var scheduler = d.CreateRuntime(2).PipeScheduler;
        var (idle, idleWriter) = Make(4, scheduler);
        idle.Attach();
        idleWriter.Run(idleWriter);
        idle.Complete();
        Assert.That(idleWriter.SawCompleted, Is.False, "scheduled, not run inside Complete");
        await d.IdleAsync();
        Assert.That(idleWriter.SawCompleted, Is.True, "closing the session wakes the writer to close its stream");
        Assert.That(idle.TryWrite([1]), Is.False);
        idle.Complete();
        await d.IdleAsync();
        Assert.That(idleWriter.Runs, Is.EqualTo(2), "completed once");

        var (holding, holdingWriter) = Make(4, scheduler);
        Assert.That(holding.TryWrite([1]), Is.True);
        holding.Complete();
        Assert.That(holding.HoldsBuffer, Is.False, "what was queued for a closed session is dropped");
        holding.Attach();
        holdingWriter.Run(holdingWriter);
        Assert.That(holdingWriter.SawCompleted && holdingWriter.Written.Count == 0, Is.True, "an opener after the close closes at once");
        Assert.That(holding.TryRead(out _), Is.False);
    });

    [Test]
    public void AWrite_SchedulesTheWriter_NotInsideTheWrite_AndNotTwiceWhileItRuns() => VirtualTimeDriver.Run(async d =>
    {
        var (queue, writer) = Make(8, d.CreateRuntime(3).PipeScheduler);
        queue.Attach();
        writer.Run(writer);
        Assert.That(queue.TryWrite([7]), Is.True);
        Assert.That(writer.Runs, Is.EqualTo(1), "the writer (the router, under its lock) does not run the writer");
        Assert.That(queue.ReaderRunning, Is.True, "scheduled");
        Assert.That(queue.TryWrite([8]) && queue.TryWrite([9]), Is.True);
        await d.IdleAsync();
        Assert.That(writer.Runs, Is.EqualTo(2), "three RPCs while scheduled: one run");
        Assert.That(writer.Written, Is.EqualTo(new byte[] { 7, 8, 9 }));
    });

    [Test]
    public void TwoNodes_BurstsAreDeliveredInOrder_AndNoPeerKeepsAQueueOrAWriterWhenIdle() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var net = await GossipHostNetwork.StartAsync(d, 2, 1, seed: 5, ct);
        var subscription = net.Services[1].Subscribe(Topic);
        net.Services[0].Subscribe(Topic);
        await net.WaitForSubscriptionsAsync(Topic, ct);
        await net.AdvanceHeartbeatsAsync(3);
        await net.WaitForMeshAsync(Topic, 1, ct);
        await d.IdleAsync();
        Assert.That(net.Services.Select(s => s.PeersHoldingOutboundBuffers), Is.All.EqualTo(0), "idle: no peer holds a queue");
        Assert.That(net.Services.Select(s => s.PeersWithOutboundWriters), Is.All.EqualTo(0), "idle: no peer keeps a writer");

        var next = 0;
        for (var burst = 0; burst < 3; burst++)
        {
            // Each burst after the writers returned: the first RPC schedules a writer again, the rest follow in order.
            for (var i = 0; i < 40; i++)
            {
                await net.Services[0].PublishAsync(Topic, BitConverter.GetBytes(burst * 40 + i), ct);
            }
            for (var i = 0; i < 40; i++)
            {
                var m = await subscription.Messages.ReadAsync(ct);
                Assert.That(BitConverter.ToInt32(m.Data.Span), Is.EqualTo(next++), $"seed {net.Seed}: burst {burst} arrives in order");
            }
            await d.IdleAsync();
            Assert.That(net.Services.Select(s => s.PeersHoldingOutboundBuffers), Is.All.EqualTo(0), $"after burst {burst}: every queue dropped");
            Assert.That(net.Services.Select(s => s.PeersWithOutboundWriters), Is.All.EqualTo(0), $"after burst {burst}: every writer returned");
            await net.AdvanceHeartbeatsAsync(1);
        }
    });
}
