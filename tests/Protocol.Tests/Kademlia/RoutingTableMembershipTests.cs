using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Tests.Host;

namespace Potluck.Protocol.Tests.Kademlia;

/// <summary>
/// Who is in a <see cref="KademliaService"/>'s routing table, and when: a connected peer that identify shows to serve the
/// DHT is added on both sides without any lookup; a peer that does not serve it never is; a peer whose identify push drops
/// the protocol is removed; a peer gone from the network is removed at the first request it fails. Every change raises
/// <see cref="KademliaService.Changed"/>, which <see cref="KademliaService.WaitUntilAsync"/> waits on without polling.
/// </summary>
public class RoutingTableMembershipTests
{
    private static KademliaService Dht(TestHosts hosts, TestHosts.TestNode node, KademliaOptions? options = null) =>
        hosts.Own(new KademliaService(node.Host, options ?? new KademliaOptions(), node.Runtime, NullLoggerFactory.Instance));

    [Test]
    public void Identify_AddsAConnectedDhtServer_OnBothSides_WithoutALookup() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d, seed: 31);
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        var dhtA = Dht(hosts, a);
        var dhtB = Dht(hosts, b);
        var changesA = 0;
        dhtA.Changed += () => Interlocked.Increment(ref changesA);

        await b.Host.ConnectAsync(a.Address, ct);
        await dhtA.WaitUntilAsync(x => x.RoutingTablePeers().Contains(b.Host.PeerId), ct);
        await dhtB.WaitUntilAsync(x => x.RoutingTablePeers().Contains(a.Host.PeerId), ct);

        Assert.That(dhtA.RoutingTablePeers(), Is.EqualTo(new[] { b.Host.PeerId }));
        Assert.That(dhtB.RoutingTablePeers(), Is.EqualTo(new[] { a.Host.PeerId }));
        Assert.That(changesA, Is.EqualTo(1), "one addition, one change event (refreshes raise none)");
    });

    [Test]
    public void APeerWithoutTheDhtProtocol_IsNeverAdded() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d, seed: 32);
        var a = await hosts.StartAsync();
        var plain = await hosts.StartAsync();
        var other = await hosts.StartAsync();
        var dhtA = Dht(hosts, a);
        var dhtOther = Dht(hosts, other, new KademliaOptions { ProtocolId = "/other/kad/1.0.0" });

        await plain.Host.ConnectAsync(a.Address, ct);
        await other.Host.ConnectAsync(a.Address, ct);
        await a.Identify.WhenIdentifiedAsync(plain.Host.PeerId, ct);
        await a.Identify.WhenIdentifiedAsync(other.Host.PeerId, ct);

        Assert.That(dhtA.RoutingTablePeers(), Is.Empty, "identified, but neither speaks our DHT's protocol id");
        Assert.That(dhtOther.RoutingTablePeers(), Is.Empty);
    });

    [Test]
    public void APeerThatStopsServingTheDht_IsRemovedOnItsIdentifyPush() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d, seed: 33);
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        var dhtA = Dht(hosts, a);
        var dhtB = new KademliaService(b.Host, new KademliaOptions(), b.Runtime, NullLoggerFactory.Instance);
        await b.Host.ConnectAsync(a.Address, ct);
        await dhtA.WaitUntilAsync(x => x.RoutingTablePeers().Contains(b.Host.PeerId), ct);

        // b's DHT goes away: its handler is removed, identify pushes the shorter protocol list, a drops b.
        await dhtB.DisposeAsync();
        await dhtA.WaitUntilAsync(x => x.RoutingTableSize == 0, ct);

        Assert.That(a.Host.Connections.Select(c => c.RemotePeer), Does.Contain(b.Host.PeerId), "still connected: only the DHT role went");
    });

    [Test]
    public void APeerGoneFromTheNetwork_IsRemovedAtTheFirstRequestItFails() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d, seed: 34);
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        var c = await hosts.StartAsync();
        var dhtA = Dht(hosts, a);
        Dht(hosts, b);
        Dht(hosts, c);
        await b.Host.ConnectAsync(a.Address, ct);
        await c.Host.ConnectAsync(a.Address, ct);
        await dhtA.WaitUntilAsync(x => x.RoutingTableSize == 2, ct);

        // b disconnects and is no longer reachable: the table keeps it until a request to it fails.
        var gone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        a.Host.Disconnected += x =>
        {
            if (x.RemotePeer == b.Host.PeerId)
            {
                gone.TrySetResult();
            }
        };
        await b.Host.DisposeAsync();
        await gone.Task;
        Assert.That(dhtA.RoutingTablePeers(), Does.Contain(b.Host.PeerId), "a disconnect alone does not evict (as in go-libp2p's kad-dht)");

        var closest = await dhtA.GetClosestPeersAsync("membership"u8.ToArray(), ct);

        Assert.That(closest, Is.EqualTo(new[] { c.Host.PeerId }));
        Assert.That(dhtA.RoutingTablePeers(), Is.EqualTo(new[] { c.Host.PeerId }), "the failed peer was removed, the live one kept");
    });

    [Test]
    public void WaitUntil_AlreadyTrue_ReturnsAtOnce_Cancelled_Throws_AndAWaiterSeesALaterChange() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d, seed: 35);
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        var dhtA = Dht(hosts, a);
        Dht(hosts, b);

        var immediate = dhtA.WaitUntilAsync(x => x.RoutingTableSize == 0, ct);
        Assert.That(immediate.IsCompletedSuccessfully, Is.True, "the condition holds: no wait, no event needed");

        using var cancelled = new CancellationTokenSource();
        var never = dhtA.WaitUntilAsync(x => x.RoutingTableSize == 5, cancelled.Token);
        var waiter = dhtA.WaitUntilAsync(x => x.RoutingTablePeers().Contains(b.Host.PeerId), ct);
        Assert.That(waiter.IsCompleted, Is.False);

        await b.Host.ConnectAsync(a.Address, ct);
        await waiter;
        Assert.That(never.IsCompleted, Is.False, "a change that does not satisfy the condition does not end the wait");
        cancelled.Cancel(); // not CancelAsync: that completes on the thread pool, outside the driver's loop
        await AsyncAssert.ThrowsAsync<OperationCanceledException>(() => never);
    });

    [Test]
    public void SetMode_Client_DropsTheProtocolAndPeersDropUs_Server_BringsUsBack() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d, seed: 36);
        var a = await hosts.StartAsync();
        var b = await hosts.StartAsync();
        var dhtA = Dht(hosts, a);
        var dhtB = Dht(hosts, b);
        await b.Host.ConnectAsync(a.Address, ct);
        await dhtA.WaitUntilAsync(x => x.RoutingTablePeers().Contains(b.Host.PeerId), ct);
        await dhtB.WaitUntilAsync(x => x.RoutingTablePeers().Contains(a.Host.PeerId), ct);

        Assert.That(dhtB.SetMode(KademliaMode.Client), Is.True);
        Assert.That(dhtB.SetMode(KademliaMode.Client), Is.False, "already a client");
        Assert.That(dhtB.Mode, Is.EqualTo(KademliaMode.Client));
        Assert.That(b.Host.Protocols, Does.Not.Contain(KademliaService.DefaultProtocolId));
        await dhtA.WaitUntilAsync(x => x.RoutingTableSize == 0, ct); // b's identify push said it no longer serves
        Assert.That(dhtB.RoutingTablePeers(), Is.EqualTo(new[] { a.Host.PeerId }), "a client keeps its own table");
        Assert.That(await dhtB.GetClosestPeersAsync("as a client"u8.ToArray(), ct), Is.EqualTo(new[] { a.Host.PeerId }), "and still looks up");

        Assert.That(dhtB.SetMode(KademliaMode.Server), Is.True);
        await dhtA.WaitUntilAsync(x => x.RoutingTablePeers().Contains(b.Host.PeerId), ct);
        Assert.That(b.Host.Protocols, Does.Contain(KademliaService.DefaultProtocolId));
        Assert.That(await dhtA.GetClosestPeersAsync("served again"u8.ToArray(), ct), Is.EqualTo(new[] { b.Host.PeerId }), "b answers queries again");
    });
}
