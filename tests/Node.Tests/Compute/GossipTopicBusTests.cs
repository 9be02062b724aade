using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Node.Compute;
using Potluck.Protocol.Host;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Topics;

namespace Potluck.Node.Tests.Compute;

/// <summary>
/// <see cref="GossipTopicBus"/> hands the handler what the validator made of that very message. A message that never met
/// the router's validation (a node's own, delivered back to it under <c>DeliverOwnMessages</c>) is validated once in the
/// pump before it is handled, and one the validator does not accept is never handled.
/// </summary>
public class GossipTopicBusTests
{
    private const string Topic = "potluck/test/bus";

    [Test]
    public void OwnMessageDeliveredBack_IsValidatedOnceBeforeItIsHandled_AndARejectedOneNeverIs() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var nodes = new TestNodes(d, seed: 31);
        var node = await nodes.Builder(nodes.Options())
            .Configure(o => o with { Gossip = o.Gossip with { DeliverOwnMessages = true } })
            .StartAsync();
        await using var owned = node;
        var bus = new GossipTopicBus(node.Gossip, NullLogger<GossipTopicBus>.Instance);
        var validated = new List<byte>();
        var made = new Dictionary<byte, object>();
        var handled = new List<(byte Data, object Validated)>();
        var last = new TaskCompletionSource();
        using var subscription = bus.Subscribe(Topic, (TopicMessage m, out object? v) =>
        {
            var b = m.Data.Span[0];
            validated.Add(b);
            v = made[b] = new object();
            return b == 0 ? TopicVerdict.Reject : TopicVerdict.Accept;
        }, (m, v, _) =>
        {
            handled.Add((m.Data.Span[0], v));
            if (m.Data.Span[0] == 2)
            {
                last.TrySetResult();
            }
            return ValueTask.CompletedTask;
        });

        foreach (var b in new byte[] { 1, 0, 2 })
        {
            await bus.PublishAsync(Topic, new[] { b }, ct);
        }
        await last.Task;

        Assert.That(validated, Is.EqualTo(new byte[] { 1, 0, 2 }), "each own message validated once, in the pump");
        Assert.That(handled.Select(h => h.Data), Is.EqualTo(new byte[] { 1, 2 }), "the rejected one never handled");
        Assert.That(handled.All(h => ReferenceEquals(h.Validated, made[h.Data])), Is.True, "each with its own validation's object");
    });
    /// <summary>
    /// A budgeted topic's messages over budget are ignored at the peer they came from, but only a peer that authored them is
    /// penalised: an honest relay (here B, forwarding A's 60 messages to C, whose budget for the topic is a burst of 3) is
    /// never pushed towards a ban for the volume of what it relays, while the same flood of B's own messages bans B. On
    /// main's code every refusal cost the relay score, so C banned B for A's messages (the chain's gossip at a busy network's
    /// rate of payments would ban honest mesh peers the same way).
    /// </summary>
    [Test]
    [Category("Adversarial")]
    public void OverBudgetMessages_CostARelayNoScore_ButAnAuthorFloodingItsOwnIsBanned() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var nodes = new TestNodes(d, seed: 32);
        await using var a = await nodes.Builder(nodes.Options()).StartAsync();
        await using var b = await nodes.Builder(nodes.Options()).StartAsync();
        await using var c = await nodes.Builder(nodes.Options()).StartAsync();
        var budget = PeerBudgets.FraudProofs;
        var burst = c.Host.Budgets.Options.FraudProofs.Burst;
        var busA = new GossipTopicBus(a.Gossip, NullLogger<GossipTopicBus>.Instance);
        var busB = new GossipTopicBus(b.Gossip, NullLogger<GossipTopicBus>.Instance);
        var busC = new GossipTopicBus(c.Gossip, NullLogger<GossipTopicBus>.Instance, c.Host.Budgets,
            new Dictionary<string, string> { [Topic] = budget }, c.Host.PeerId);
        var atB = 0;
        var atC = 0;
        TopicValidator<object> Counting(Action count) => (TopicMessage m, out object? v) =>
        {
            count();
            v = new object();
            return TopicVerdict.Accept;
        };
        using var subA = busA.Subscribe(Topic, Counting(() => { }), (_, _, _) => ValueTask.CompletedTask);
        using var subB = busB.Subscribe(Topic, Counting(() => atB++), (_, _, _) => ValueTask.CompletedTask);
        using var subC = busC.Subscribe(Topic, Counting(() => atC++), (_, _, _) => ValueTask.CompletedTask);
        await a.Host.ConnectAsync(b.Host.ListenAddresses[0].WithPeer(b.Host.PeerId), ct);
        await b.Host.ConnectAsync(c.Host.ListenAddresses[0].WithPeer(c.Host.PeerId), ct);
        await b.Gossip.WaitUntilAsync(s => s.MeshPeers(Topic).Count == 2, ct);
        await c.Gossip.WaitUntilAsync(s => s.MeshPeers(Topic).Count == 1, ct);
        long RefusedAtC() => c.Host.Budgets.Refused.GetValueOrDefault(budget);

        const int flood = 60;
        for (var i = 0; i < flood; i++)
        {
            await busA.PublishAsync(Topic, new[] { (byte)1, (byte)i }, ct);
        }
        await c.Gossip.WaitUntilAsync(_ => atC + RefusedAtC() == flood, ct);

        Assert.That(atB, Is.EqualTo(flood), "B, with no budget on the topic, took and forwarded all of A's messages");
        Assert.That(atC, Is.EqualTo(burst), "C served B's burst and ignored the rest");
        Assert.That(RefusedAtC(), Is.EqualTo(flood - burst));
        Assert.That(c.Host.Budgets.ScoreOf(b.Host.PeerId), Is.Zero, "the relay lost no score for A's volume");
        Assert.That(c.Host.Budgets.Bans, Is.Zero);
        Assert.That(c.Host.Connections.Any(x => x.RemotePeer == b.Host.PeerId), Is.True, "and stays connected");

        atC = 0;
        var refusedBefore = RefusedAtC();
        for (var i = 0; i < flood; i++)
        {
            await busB.PublishAsync(Topic, new[] { (byte)2, (byte)i }, ct);
        }
        await c.Gossip.WaitUntilAsync(_ => c.Host.Budgets.Bans == 1, ct);
        Assert.That(atC, Is.Zero, "B's bucket was still empty: none of its own flood was served");
        Assert.That(RefusedAtC() - refusedBefore, Is.AtLeast(50), "B banned at -50 for flooding what it authored");
    });
}
