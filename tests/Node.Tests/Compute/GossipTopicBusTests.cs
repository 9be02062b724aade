using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Node.Compute;
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
}
