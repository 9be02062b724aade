using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>A peer's outbound queue: no buffer while empty, order, the bound, completion, and its reader woken on the scheduler.</summary>
public class OutboundQueueTests
{
    private const string Topic = "/potluck/test/1";

    [Test]
    public void IdleQueue_HoldsNoBuffer_AndABurstAfterItIsReadInOrder() => VirtualTimeDriver.Run(async d =>
    {
        var queue = new OutboundQueue(16, d.CreateRuntime(1).PipeScheduler);
        Assert.That(queue.HoldsBuffer, Is.False, "a new queue holds no buffer");
        for (var burst = 0; burst < 3; burst++)
        {
            var wait = queue.WaitToReadAsync().AsTask();
            await d.IdleAsync();
            Assert.That(wait.IsCompleted, Is.False, "an empty queue parks its reader");
            for (byte i = 0; i < 5; i++)
            {
                Assert.That(queue.TryWrite([(byte)(burst * 10 + i)]), Is.True);
            }
            Assert.That(await wait, Is.True);
            var read = new List<byte>();
            while (queue.TryRead(out var rpc))
            {
                read.Add(rpc[0]);
            }
            Assert.That(read, Is.EqualTo(Enumerable.Range(burst * 10, 5).Select(i => (byte)i)), $"burst {burst} in order");
            Assert.That(queue.HoldsBuffer, Is.False, "the buffer goes with the last RPC read");
        }
    });

    [Test]
    public void FullQueue_RefusesTheRpc_AndTakesMoreOnceOneIsRead()
    {
        var queue = new OutboundQueue(2, System.IO.Pipelines.PipeScheduler.Inline);
        Assert.That(queue.TryWrite([1]) && queue.TryWrite([2]), Is.True);
        Assert.That(queue.TryWrite([3]), Is.False, "full at the bound: refused, not grown");
        Assert.That(queue.TryRead(out var first) && first[0] == 1, Is.True);
        Assert.That(queue.TryWrite([4]), Is.True);
        Assert.That(queue.TryRead(out var second) && second[0] == 2 && queue.TryRead(out var third) && third[0] == 4, Is.True);
        Assert.That(queue.TryRead(out _), Is.False);
    }

    [Test]
    public void Complete_EndsAParkedWaitWithFalse_DropsWhatIsQueued_AndRefusesMore() => VirtualTimeDriver.Run(async d =>
    {
        var scheduler = d.CreateRuntime(2).PipeScheduler;
        var parked = new OutboundQueue(4, scheduler);
        var wait = parked.WaitToReadAsync().AsTask();
        await d.IdleAsync();
        parked.Complete();
        Assert.That(await wait, Is.False, "closing the session ends the reader's wait without a token");
        Assert.That(parked.TryWrite([1]), Is.False);

        var holding = new OutboundQueue(4, scheduler);
        Assert.That(holding.TryWrite([1]), Is.True);
        holding.Complete();
        Assert.That(holding.HoldsBuffer, Is.False, "what was queued for a closed session is dropped");
        Assert.That(await holding.WaitToReadAsync(), Is.False);
        Assert.That(holding.TryRead(out _), Is.False);
    });

    [Test]
    public void AWrite_WakesTheParkedReaderOnTheScheduler_NotInsideTheWrite() => VirtualTimeDriver.Run(async d =>
    {
        var queue = new OutboundQueue(4, d.CreateRuntime(3).PipeScheduler);
        var woke = false;
        var reader = ReadOneAsync();
        await d.IdleAsync();
        Assert.That(queue.TryWrite([7]), Is.True);
        Assert.That(woke, Is.False, "the writer (the router, under its lock) does not run the reader");
        await reader;
        Assert.That(woke, Is.True);

        async Task ReadOneAsync()
        {
            Assert.That(await queue.WaitToReadAsync(), Is.True);
            woke = true;
        }
    });

    [Test]
    public void TwoNodes_ABurstIsDeliveredInOrder_AndNoPeerKeepsAQueueWhenIdle() => VirtualTimeDriver.Run(async d =>
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

        for (var i = 0; i < 40; i++)
        {
            await net.Services[0].PublishAsync(Topic, BitConverter.GetBytes(i), ct);
        }
        for (var i = 0; i < 40; i++)
        {
            var m = await subscription.Messages.ReadAsync(ct);
            Assert.That(BitConverter.ToInt32(m.Data.Span), Is.EqualTo(i), $"seed {net.Seed}: the burst arrives in order");
        }
        await d.IdleAsync();
        Assert.That(net.Services.Select(s => s.PeersHoldingOutboundBuffers), Is.All.EqualTo(0), "after the burst: every queue dropped");
    });
}
