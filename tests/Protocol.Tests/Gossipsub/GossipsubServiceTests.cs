using System.Buffers;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Gossipsub;

public class GossipsubServiceTests
{
    private const string Topic = "/potluck/test/1";

    [Test]
    public void Mesh_SixteenNodes_PublishedMessageReachesEverySubscriberOnce() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var net = await GossipHostNetwork.StartAsync(d, 16, 3, seed: 3, ct, o => o with { FloodPublish = false });
        var subscriptions = net.Services.Select(s => s.Subscribe(Topic)).ToArray();
        await net.WaitForSubscriptionsAsync(Topic, ct);
        await net.AdvanceHeartbeatsAsync(3);
        await net.WaitForMeshAsync(Topic, 4, ct);

        var id = await net.Services[5].PublishAsync(Topic, "hello"u8.ToArray(), ct);

        for (var i = 0; i < 16; i++)
        {
            if (i == 5)
            {
                continue;
            }
            var m = await subscriptions[i].Messages.ReadAsync(ct);
            Assert.That(m.Id, Is.EqualTo(id), $"seed {net.Seed}, node {i}");
            Assert.That(m.Data.ToArray(), Is.EqualTo("hello"u8.ToArray()));
            Assert.That(m.Author, Is.EqualTo(net.Nodes[5].Host.PeerId));
        }
        await net.Services[0].PublishAsync(Topic, "second"u8.ToArray(), ct);
        for (var i = 1; i < 16; i++)
        {
            var m = await subscriptions[i].Messages.ReadAsync(ct);
            Assert.That(m.Data.ToArray(), Is.EqualTo("second"u8.ToArray()), $"seed {net.Seed}, node {i}: nothing delivered twice in between");
        }
        var duplicates = net.Services.Sum(s => s.Counters.Duplicates);
        TestContext.Out.WriteLine($"seed {net.Seed}: 2 messages, 15 receivers each, {duplicates} duplicates seen so far");
    });

    [Test]
    public void TwoNodes_MeshProtectsPeerAndValidatorRejectLowersScore() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var net = await GossipHostNetwork.StartAsync(d, 2, 1, seed: 1, ct);
        var a = net.Services[0];
        var b = net.Services[1];
        var bPeer = net.Nodes[1].Host.PeerId;
        using var subA = a.Subscribe(Topic);
        using var subB = b.Subscribe(Topic);
        await net.WaitForSubscriptionsAsync(Topic, ct);
        await net.AdvanceHeartbeatsAsync(1);
        await a.WaitUntilAsync(s => s.MeshPeers(Topic).Count == 1, ct);
        await b.WaitUntilAsync(s => s.MeshPeers(Topic).Count == 1, ct);
        a.SetValidator(Topic, m => m.Data.Span[0] == 0 ? ValidationResult.Reject : ValidationResult.Accept);

        await b.PublishAsync(Topic, new byte[] { 0 }, ct);
        await a.WaitUntilAsync(s => s.Counters.Rejected == 1, ct);
        Assert.That(a.Score(bPeer), Is.LessThan(0));
        await b.PublishAsync(Topic, new byte[] { 1 }, ct);

        var m = await subA.Messages.ReadAsync(ct);
        Assert.That(m.Data.ToArray(), Is.EqualTo(new byte[] { 1 }), "the rejected message is never delivered");
    });

    /// <summary>
    /// What a validator made of a message (<see cref="GossipMessage.Validated"/>) is delivered with that message and no other;
    /// a message it rejected is never delivered; and a flood of distinct accepted messages to a reader that does not read
    /// keeps at most the subscription's buffer of them (and so of what their validator made), the rest dropped.
    /// </summary>
    [Test]
    public void ValidatedForm_IsDeliveredWithItsMessage_RejectedNeverDelivered_AndAFloodKeepsAtMostTheBuffer() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        const int buffer = 8;
        const int flood = 40;
        await using var net = await GossipHostNetwork.StartAsync(d, 2, 1, seed: 11, ct, o => o with { SubscriptionBuffer = buffer });
        var a = net.Services[0];
        var b = net.Services[1];
        using var subA = a.Subscribe(Topic);
        using var subB = b.Subscribe(Topic);
        await net.WaitForSubscriptionsAsync(Topic, ct);
        await net.AdvanceHeartbeatsAsync(1);
        await a.WaitUntilAsync(s => s.MeshPeers(Topic).Count == 1, ct);
        var made = new Dictionary<byte, object>();
        a.SetValidator(Topic, m =>
        {
            if (m.Data.Span[0] == 0)
            {
                m.Validated = new object();
                return ValidationResult.Reject;
            }
            m.Validated = made[m.Data.Span[0]] = new object();
            return ValidationResult.Accept;
        });

        await b.PublishAsync(Topic, new byte[] { 0 }, ct);
        for (var i = 1; i <= flood; i++)
        {
            await b.PublishAsync(Topic, new[] { (byte)i }, ct);
        }
        await a.WaitUntilAsync(s => s.Counters.Delivered == flood && s.Counters.Rejected == 1, ct);

        var delivered = new List<GossipMessage>();
        while (subA.Messages.TryRead(out var m))
        {
            delivered.Add(m);
        }
        Assert.That(delivered, Has.Count.EqualTo(buffer), "a reader that does not read holds at most its buffer");
        Assert.That(subA.Dropped, Is.EqualTo(flood - buffer));
        Assert.That(delivered.Select(m => m.Data.Span[0]), Is.EqualTo(Enumerable.Range(1, buffer).Select(i => (byte)i)), "the rejected message never delivered");
        Assert.That(delivered.All(m => ReferenceEquals(m.Validated, made[m.Data.Span[0]])), Is.True, "each with what its own validation made");
    });

    [Test]
    public void MalformedRpc_FromPeer_ResetsStreamAndLowersScore_ServiceKeepsWorking() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var net = await GossipHostNetwork.StartAsync(d, 3, 2, seed: 2, ct);
        var a = net.Services[0];
        var attacker = net.Nodes[1].Host;
        using var sub = a.Subscribe(Topic);
        using var other = net.Services[2].Subscribe(Topic);
        await net.Services[2].WaitUntilAsync(s => s.Peers(Topic).Count == 1, ct);
        // The attacker's own gossip stream reaches a first (a sees its subscription on it); the raw stream below then
        // replaces it, rather than racing it and being replaced itself before its bytes are read.
        using var attackerSub = net.Services[1].Subscribe("attacker-own-stream");
        await a.WaitUntilAsync(s => s.Peers("attacker-own-stream").Contains(attacker.PeerId), ct);

        await using (var raw = await attacker.NewStreamAsync(net.Nodes[0].Host.PeerId, [GossipsubService.ProtocolIdV11], ct))
        {
            await LengthPrefixed.WriteAsync(raw.Output, new byte[] { 0x0a, 0xff, 0xff, 0xff }, ct);
            await a.WaitUntilAsync(s => s.Score(attacker.PeerId) < 0, ct);
        }

        Assert.That(a.Score(attacker.PeerId), Is.LessThan(0));
        await net.Services[2].PublishAsync(Topic, new byte[] { 7 }, ct);
        Assert.That((await sub.Messages.ReadAsync(ct)).Data.ToArray(), Is.EqualTo(new byte[] { 7 }));
    });

    [Test]
    public void OversizedFrame_IsRefusedBeforeAllocation_AndPenalised() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var net = await GossipHostNetwork.StartAsync(d, 2, 1, seed: 4, ct, o => o with { MaxRpcSize = 4096, MaxMessageSize = 2048 });
        var a = net.Services[0];
        var bHost = net.Nodes[1].Host;
        // b's own gossip stream reaches a first (a sees b's subscription on it); the raw stream below then
        // replaces it, rather than racing it and being replaced itself.
        using var bSub = net.Services[1].Subscribe(Topic);
        await a.WaitUntilAsync(s => s.Peers(Topic).Contains(bHost.PeerId), ct);

        await using var raw = await bHost.NewStreamAsync(net.Nodes[0].Host.PeerId, [GossipsubService.ProtocolIdV11], ct);
        raw.Output.Write(Varint.Encode(1 << 30));
        await raw.Output.FlushAsync(ct);

        await a.WaitUntilAsync(s => s.Score(bHost.PeerId) < 0, ct);
        Assert.That(a.Score(bHost.PeerId), Is.LessThan(0));
    });

    /// <summary>
    /// A membership (<see cref="GossipsubService.Join"/>) keeps the topic joined as a subscription does (announced, meshed,
    /// messages validated and delivered by the router) but buffers nothing: its reader is complete and empty from the
    /// start, so a flood bigger than the subscription buffer drops nothing and holds nothing; a subscription beside it
    /// still gets every later message; disposing the last of them leaves the topic.
    /// </summary>
    [Test]
    public void Join_KeepsTheTopicJoined_AndBuffersNothing() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        const int buffer = 8;
        const int flood = 40;
        await using var net = await GossipHostNetwork.StartAsync(d, 2, 1, seed: 12, ct, o => o with { SubscriptionBuffer = buffer });
        var a = net.Services[0];
        var b = net.Services[1];
        var bPeer = net.Nodes[1].Host.PeerId;
        using var subA = a.Subscribe(Topic);
        var membership = b.Join(Topic);
        Assert.That(membership.Delivers, Is.False);
        Assert.That(membership.Messages.Completion.IsCompleted, Is.True, "nothing is ever delivered to a membership");
        await a.WaitUntilAsync(s => s.Peers(Topic).Contains(bPeer), ct);
        await net.AdvanceHeartbeatsAsync(1);
        await b.WaitUntilAsync(s => s.MeshPeers(Topic).Count == 1, ct);

        for (var i = 1; i <= flood; i++)
        {
            await a.PublishAsync(Topic, new[] { (byte)i }, ct);
        }
        await b.WaitUntilAsync(s => s.Counters.Delivered == flood, ct);
        Assert.That(membership.Messages.TryRead(out _), Is.False);
        Assert.That(await membership.Messages.WaitToReadAsync(ct), Is.False);
        Assert.That(membership.Dropped, Is.Zero, "nothing buffered, so nothing dropped");

        using (var subB = b.Subscribe(Topic))
        {
            await a.PublishAsync(Topic, new byte[] { 200 }, ct);
            Assert.That((await subB.Messages.ReadAsync(ct)).Data.ToArray(), Is.EqualTo(new byte[] { 200 }));
        }
        await net.AdvanceHeartbeatsAsync(1);
        Assert.That(a.Peers(Topic), Does.Contain(bPeer), "the membership still keeps the topic joined");

        membership.Dispose();
        await a.WaitUntilAsync(s => !s.Peers(Topic).Contains(bPeer), ct);
        Assert.That(b.MeshPeers(Topic), Is.Empty);
    });

    [Test]
    public void Unsubscribe_LastSubscription_LeavesTopicAndCompletesReader() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var net = await GossipHostNetwork.StartAsync(d, 2, 1, seed: 5, ct);
        var sub = net.Services[0].Subscribe(Topic);
        await net.Services[1].WaitUntilAsync(s => s.Peers(Topic).Count == 1, ct);

        sub.Dispose();

        await net.Services[1].WaitUntilAsync(s => s.Peers(Topic).Count == 0, ct);
        Assert.That(await sub.Messages.WaitToReadAsync(ct), Is.False);
        Assert.That(net.Services[0].MeshPeers(Topic), Is.Empty);
    });

    [Test]
    public void MeshPeerCutOffByAPartition_IsRedialedOnceTheLinkHeals_AndMessagesFlowAgain() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var net = await GossipHostNetwork.StartAsync(d, 2, 1, seed: 7, ct);
        var (a, b, subB) = await TwoMeshedAsync(net, ct);
        var (aAddress, bAddress) = (net.Nodes[0].Host.ListenAddresses[0], net.Nodes[1].Host.ListenAddresses[0]);
        var bPeer = net.Nodes[1].Host.PeerId;

        net.Network.Partition(aAddress, bAddress); // the connection breaks; redials fail while the cut lasts
        await a.WaitUntilAsync(s => s.Peers(Topic).Count == 0, ct);
        await net.AdvanceHeartbeatsAsync(15);
        Assert.That(net.Nodes[0].Host.ConnectionManager.IsConnected(bPeer), Is.False, "cut off");
        net.Network.Heal(aAddress, bAddress);
        // Nothing else dials here (no DHT, no leases): only gossip's redial of its broken mesh peer can join them again,
        // within the longest wait between redials (ReconnectMaxDelay + 25 %).
        await net.AdvanceHeartbeatsAsync(6);

        Assert.That(net.Nodes[0].Host.ConnectionManager.IsConnected(bPeer), Is.True, "redialed after the heal");
        await a.WaitUntilAsync(s => s.Peers(Topic).Contains(bPeer), ct);
        var id = await a.PublishAsync(Topic, "after the heal"u8.ToArray(), ct);
        var m = await subB.Messages.ReadAsync(ct);
        Assert.That(m.Id, Is.EqualTo(id));
        Assert.That(b.Peers(Topic), Does.Contain(net.Nodes[0].Host.PeerId));
    });

    [Test]
    public void MeshPeerThatClosedTheConnection_IsNotRedialed() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var net = await GossipHostNetwork.StartAsync(d, 2, 1, seed: 7, ct);
        var (a, _, _) = await TwoMeshedAsync(net, ct);
        var aPeer = net.Nodes[0].Host.PeerId;

        // b closes (a trim, a shutdown): a hears a clean end, not a failure, and must not chase it.
        foreach (var c in net.Nodes[1].Host.ConnectionManager.ConnectionsTo(aPeer))
        {
            await c.CloseAsync();
        }
        await a.WaitUntilAsync(s => s.Peers(Topic).Count == 0, ct);
        await net.AdvanceHeartbeatsAsync(60);

        Assert.That(net.Nodes[0].Host.ConnectionManager.IsConnected(net.Nodes[1].Host.PeerId), Is.False);
        Assert.That(net.Nodes[1].Host.ConnectionManager.IsConnected(aPeer), Is.False);
    });

    /// <summary>Two connected nodes subscribed to <see cref="Topic"/>, each in the other's mesh.</summary>
    private static async Task<(GossipsubService A, GossipsubService B, GossipSubscription SubB)> TwoMeshedAsync(GossipHostNetwork net, CancellationToken ct)
    {
        var (a, b) = (net.Services[0], net.Services[1]);
        a.Subscribe(Topic);
        var subB = b.Subscribe(Topic);
        await net.WaitForSubscriptionsAsync(Topic, ct);
        await net.AdvanceHeartbeatsAsync(1);
        await a.WaitUntilAsync(s => s.MeshPeers(Topic).Count == 1, ct);
        await b.WaitUntilAsync(s => s.MeshPeers(Topic).Count == 1, ct);
        return (a, b, subB);
    }
}
