using Potluck.Node.Hosting;
using Potluck.Node.Persistence;
using Potluck.Protocol.Host;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport;

namespace Potluck.Node.Tests.Discovery;

/// <summary>Composition on the in-memory network and virtual time: bootstrap, DHT, restarts, self-filtering.</summary>
public class NodeDiscoveryTests
{
    private static bool ConnectedTo(PotluckNode node, PotluckNode other) =>
        node.Host.Connections.Any(c => c.RemotePeer == other.PeerId && !c.IsClosed);

    [Test]
    public void Node_ComposesGossipDhtInServerMode_AndNoMdnsUnlessAsked() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var nodes = new TestNodes(d, seed: 1);
        var listener = await nodes.StartAsync(nodes.Options());
        var client = await nodes.StartAsync(nodes.Options() with { Listen = [] });

        Assert.That(listener.Dht.Mode, Is.EqualTo(KademliaMode.Server));
        Assert.That(client.Dht.Mode, Is.EqualTo(KademliaMode.Client));
        Assert.That(listener.Host.Protocols, Does.Contain(KademliaService.DefaultProtocolId).And.Contain("/meshsub/1.1.0"));
        Assert.That(client.Host.Protocols, Does.Not.Contain(KademliaService.DefaultProtocolId));
        Assert.That(listener.Mdns, Is.Null);
        Assert.That(client.Options.Kademlia.Mode, Is.EqualTo(KademliaMode.Server), "the caller's options object is not changed");
    });

    [Test]
    public void Bootstrap_ThroughOneNode_NodesFindEachOtherViaTheDht() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var nodes = new TestNodes(d, seed: 2);
        var seed = await nodes.StartAsync(nodes.Options());
        var bootstrap = seed.FullAddresses[0];
        var joined = new List<PotluckNode>();
        for (var i = 0; i < 9; i++)
        {
            var node = await nodes.StartAsync(nodes.Options() with { Bootstrap = [bootstrap] });
            await node.Joined.WaitAsync(ct);
            joined.Add(node);
        }

        Assert.That(joined.Select(n => n.Dht.RoutingTableSize), Has.All.GreaterThan(0));
        var last = joined[^1];
        Assert.That(last.Dht.RoutingTablePeers(), Is.EquivalentTo(joined.Take(8).Select(n => n.PeerId).Append(seed.PeerId)),
            "the last node learned every other node through the seed");
        // The first joiner has only ever dialed the seed, yet finds the last joiner by a DHT lookup.
        var first = joined[0];
        var found = await first.Dht.FindPeerAsync(last.PeerId, ct);
        Assert.That(found, Does.Contain(last.Host.ListenAddresses[0]));
        foreach (var n in joined.Append(seed))
        {
            Assert.That(n.Dht.RoutingTablePeers(), Does.Not.Contain(n.PeerId));
        }
    });

    [Test]
    public void Rebootstrap_WhenTheRoutingTableIsEmpty_DialsTheBootstrapPeerOnTheNextTick() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var nodes = new TestNodes(d, seed: 3);
        var seedKey = nodes.NewKey();
        var seedAddress = Multiaddr.Parse($"/memory/4242/p2p/{seedKey.PeerId}");
        var joiner = await nodes.StartAsync(nodes.Options() with { Bootstrap = [seedAddress] });
        await joiner.Joined.WaitAsync(ct);
        Assert.That(joiner.Dht.RoutingTableSize, Is.Zero, "the bootstrap peer is not up yet");

        var seed = await nodes.StartAsync(nodes.Options(seedKey, "/memory/4242"));
        var connected = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        joiner.Host.Connected += c =>
        {
            if (c.RemotePeer == seed.PeerId)
            {
                connected.TrySetResult();
            }
        };
        // The next re-bootstrap tick dials it: awaiting the connection lets virtual time run to that tick.
        await connected.Task;
        Assert.That(ConnectedTo(joiner, seed), Is.True);
    });

    [Test]
    public void FailedJoin_IsRetriedAfter1_2_4_8_16Seconds_ThenAtTheRegularInterval() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var nodes = new TestNodes(d, seed: 31);
        // Something listens where the bootstrap peer should be, but closes every connection at once: each join fails.
        await using var listener = await nodes.Network.CreateTransport().ListenAsync(Multiaddr.Parse("/memory/4343"), ct);
        var dials = new List<DateTimeOffset>();
        async Task RefuseAsync()
        {
            while (true)
            {
                IRawConnection raw;
                try
                {
                    raw = await listener.AcceptAsync(ct);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                dials.Add(nodes.Time.GetUtcNow());
                await raw.DisposeAsync();
            }
        }
        var refusing = RefuseAsync();
        var joiner = await nodes.StartAsync(nodes.Options() with { Bootstrap = [Multiaddr.Parse($"/memory/4343/p2p/{nodes.NewKey().PeerId}")] });
        await joiner.Joined.WaitAsync(ct);
        await Task.Delay(TimeSpan.FromSeconds(61), nodes.Time, ct);

        // Each attempt dials the bootstrap address and then bootstraps the DHT through it (a second dial, same moment).
        var attempts = dials.Select(t => Math.Round((t - dials[0]).TotalSeconds, 1)).Distinct().ToArray();
        Assert.That(attempts, Is.EqualTo(new double[] { 0, 1, 3, 7, 15, 31, 60 }),
            "retried after 1, 2, 4, 8, 16 s; then the regular 30 s check (the one due at 30 s runs at 31 s, after the last retry), at 60 s");
        await listener.DisposeAsync();
        await refusing;
    });

    [Test]
    public void JoinRetryOptions_OutOfRange_AreRefusedNamingTheKey()
    {
        var problems = PotluckOptionsValidator.Validate(new PotluckOptions { Discovery = new DiscoveryOptions { JoinRetryDelay = TimeSpan.Zero, JoinRetries = 21 } });
        Assert.That(problems, Has.Some.Contains("'discovery:joinRetryDelay' is 00:00:00; it must be a positive duration"));
        Assert.That(problems, Has.Some.Contains("'discovery:joinRetries' is 21; it must be 0 to 20"));
        Assert.That(PotluckOptionsValidator.Validate(new PotluckOptions { Discovery = new DiscoveryOptions { JoinRetries = 0 } }), Is.Empty, "0 retries: wait for the regular interval");
    }

    [Test]
    public void Restart_ReloadsPeerStoreAndTopics_RedialsMostRecentlySeenFirst_Bounded() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var nodes = new TestNodes(d, seed: 4);
        // `older` serves another DHT, so only the re-dial (not the DHT bootstrap) could reach it.
        var older = await nodes.StartAsync(nodes.Options() with { Kademlia = new KademliaOptions { ProtocolId = "/test/other-kad/1.0.0" } });
        var newer = await nodes.StartAsync(nodes.Options());
        var key = nodes.NewKey();
        var dataDir = nodes.NewDataDir();
        var options = nodes.Options(key) with { DataDir = dataDir };
        var node = await nodes.StartAsync(options);

        await node.Host.ConnectAsync(older.FullAddresses[0], ct);
        await node.Identify.WhenIdentifiedAsync(older.PeerId, ct);
        await node.Host.DisconnectAsync(older.PeerId);
        await Task.Delay(TimeSpan.FromMinutes(5), nodes.Time);
        await node.Host.ConnectAsync(newer.FullAddresses[0], ct);
        await node.Identify.WhenIdentifiedAsync(newer.PeerId, ct);
        using (node.JoinTopic("potluck/test/1"))
        {
        }
        await nodes.StopAsync(node);

        using (var db = PeerDatabase.Open(dataDir))
        {
            var saved = db.Load(100, 8, 128, 64);
            Assert.That(saved.Peers.Select(p => p.Id), Is.EqualTo(new[] { newer.PeerId, older.PeerId }), "most recently seen first");
            Assert.That(saved.Peers[0].Protocols, Does.Contain(KademliaService.DefaultProtocolId));
            Assert.That(saved.Peers[0].Addresses, Does.Contain(newer.Host.ListenAddresses[0]));
            Assert.That(saved.Topics, Is.EqualTo(new[] { "potluck/test/1" }));
        }

        var restarted = await nodes.StartAsync(nodes.Options(key) with
        {
            DataDir = dataDir,
            Discovery = new DiscoveryOptions { MaxRedialPeers = 1 },
        });
        await restarted.Joined.WaitAsync(ct);
        await restarted.Identify.WhenIdentifiedAsync(newer.PeerId, ct);

        Assert.That(ConnectedTo(restarted, newer), Is.True, "the most recently seen peer is re-dialed");
        Assert.That(ConnectedTo(restarted, older), Is.False, "only MaxRedialPeers are re-dialed");
        Assert.That(restarted.Host.Peers.GetAddresses(older.PeerId), Does.Contain(older.Host.ListenAddresses[0]), "but it is remembered");
        Assert.That(restarted.JoinedTopics, Is.EqualTo(new[] { "potluck/test/1" }), "topics are rejoined");
        Assert.That(restarted.Dht.RoutingTablePeers(), Does.Contain(newer.PeerId));
    });

    [Test]
    public void Restart_RejoinsGossipTopic_AndReceivesMessagesAgain() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var nodes = new TestNodes(d, seed: 5);
        var peer = await nodes.StartAsync(nodes.Options());
        using var peerSub = peer.JoinTopic("chat");
        var key = nodes.NewKey();
        var dataDir = nodes.NewDataDir();
        var node = await nodes.StartAsync(nodes.Options(key) with { DataDir = dataDir, Bootstrap = [peer.FullAddresses[0]] });
        await node.Joined.WaitAsync(ct);
        node.JoinTopic("chat").Dispose();
        await nodes.StopAsync(node);
        // The peer has noticed the old connection end before the restarted node (same id) connects: otherwise, on a
        // loaded machine, its gossip session could still ride the dying connection when the new one arrives.
        await peer.Gossip.WaitUntilAsync(g => !g.GossipPeers.Contains(key.PeerId), ct);

        var restarted = await nodes.StartAsync(nodes.Options(key) with { DataDir = dataDir });
        using var sub = restarted.Gossip.Subscribe("chat");
        await restarted.Joined.WaitAsync(ct);
        await restarted.Gossip.WaitUntilAsync(g => g.Peers("chat").Contains(peer.PeerId), ct);
        await peer.Gossip.WaitUntilAsync(g => g.Peers("chat").Contains(key.PeerId), ct);

        await peer.Gossip.PublishAsync("chat", "hello again"u8.ToArray(), ct);
        var message = await sub.Messages.ReadAsync(ct);
        Assert.That(message.Data.ToArray(), Is.EqualTo("hello again"u8.ToArray()));
    });

    [Test]
    public void SelfAddresses_AreNeverPersisted_NorRedialed() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var nodes = new TestNodes(d, seed: 6);
        var key = nodes.NewKey();
        var other = nodes.NewKey();
        var dataDir = nodes.NewDataDir();
        var own = Multiaddr.Parse("/memory/5151");
        // A previous run (or a confused peer) left our own id, and another peer "at" our own address, in the file.
        using (var db = PeerDatabase.Open(dataDir))
        {
            db.Save(new PersistedState(
            [
                new PersistedPeer(key.PeerId, [Multiaddr.Parse("/memory/6000")], [], nodes.Time.GetUtcNow()),
                new PersistedPeer(other.PeerId, [own, own.WithPeer(key.PeerId)], [KademliaService.DefaultProtocolId], nodes.Time.GetUtcNow()),
            ], []));
        }
        var node = await nodes.StartAsync(nodes.Options(key, own.ToString()) with { DataDir = dataDir });
        await node.Joined.WaitAsync(ct);

        Assert.That(node.Host.Peers.Get(key.PeerId), Is.Null, "our own id is not loaded");
        Assert.That(node.Host.Peers.GetAddresses(other.PeerId), Does.Not.Contain(own));
        Assert.That(node.Host.Connections, Is.Empty, "nothing to dial: no self-dial");

        // Learned at run time (e.g. from another peer): our own address under another id, and our own id.
        var third = await nodes.StartAsync(nodes.Options());
        await node.Host.ConnectAsync(third.FullAddresses[0], ct);
        await node.Identify.WhenIdentifiedAsync(third.PeerId, ct);
        node.Host.Peers.AddAddresses(third.PeerId, [own], AddressSource.Discovery);
        node.Host.Peers.AddAddresses(key.PeerId, [Multiaddr.Parse("/memory/7000")], AddressSource.Discovery);
        node.Host.Peers.SetPublicKey(key.PeerId, key.PublicKey);
        var state = node.CaptureState();
        Assert.That(state.Peers.Select(p => p.Id), Does.Not.Contain(key.PeerId));
        Assert.That(state.Peers.SelectMany(p => p.Addresses), Does.Not.Contain(own));
        Assert.That(state.Peers.Single(p => p.Id == third.PeerId).Addresses, Does.Contain(third.Host.ListenAddresses[0]));
    });
}
