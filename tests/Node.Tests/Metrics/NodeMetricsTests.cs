using System.Text;
using Potluck.Node.Hosting;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Requesting;
using Potluck.Tests;

namespace Potluck.Node.Tests.Metrics;

/// <summary>
/// Each instrument moves when its event happens, on whole nodes built by the node builder (on the virtual-time driver
/// where the parts allow it), and each node counts only its own (every node has its own meter factory, so its own meters).
/// </summary>
public class NodeMetricsTests
{
    private static readonly byte[] HashChain = Compute.ComputeCluster.Sample("hashchain");

    [Test]
    public void TwoNodes_Connect_EachCountsItsOwnConnectionHandshakeStreamsBytesAndDhtQueries() => VirtualTimeDriver.Run(async d =>
    {
        await using var nodes = new TestNodes(d, seed: 41);
        var a = await nodes.StartAsync(nodes.Options());
        await using var b = nodes.Builder(nodes.Options() with { Bootstrap = [a.FullAddresses[0]] }).Build();
        Assert.That(b.ProtocolMetrics.Meter, Is.Not.SameAs(a.ProtocolMetrics.Meter), "each node has its own meter");
        using var aMetrics = new MetricRecorder(a.ProtocolMetrics.Meter);
        using var bMetrics = new MetricRecorder(b.ProtocolMetrics.Meter);

        await b.StartAsync();
        await b.Joined;
        await Task.Delay(TimeSpan.FromSeconds(1), nodes.Time); // identify both ways

        Assert.That(aMetrics.Sum("potluck.connections.opened"), Is.EqualTo(1), "a counts only its own connection");
        Assert.That(aMetrics.Sum("potluck.connections.opened", "direction=inbound"), Is.EqualTo(1));
        Assert.That(bMetrics.Sum("potluck.connections.opened"), Is.EqualTo(1));
        Assert.That(bMetrics.Sum("potluck.connections.opened", "direction=outbound"), Is.EqualTo(1));
        Assert.That(aMetrics.Sum("potluck.connections.current", "direction=inbound"), Is.EqualTo(1));
        Assert.That(aMetrics.Sum("potluck.handshakes.completed", "direction=inbound"), Is.EqualTo(1));
        Assert.That(bMetrics.Sum("potluck.handshakes.completed", "direction=outbound"), Is.EqualTo(1));
        Assert.That(bMetrics.Sum("potluck.handshakes.failed"), Is.Zero);
        var durations = bMetrics.Values("potluck.handshake.duration", "outcome=ok");
        Assert.That(durations, Has.Count.EqualTo(1));
        Assert.That(durations[0], Is.Zero, "measured on the node's own (virtual) clock: on a link without latency no time passes");
        Assert.That(aMetrics.Sum("potluck.streams.opened", $"protocol={IdentifyService.ProtocolId}", "direction=inbound"), Is.GreaterThanOrEqualTo(1));
        Assert.That(bMetrics.Sum("potluck.streams.opened", $"protocol={IdentifyService.ProtocolId}", "direction=outbound"), Is.GreaterThanOrEqualTo(1));
        Assert.That(bMetrics.Sum("potluck.streams.opened", $"protocol={new KademliaOptions().ProtocolId}", "direction=outbound"), Is.GreaterThanOrEqualTo(1));
        Assert.That(bMetrics.Sum("potluck.dht.queries", "type=find_node", "outcome=ok"), Is.GreaterThanOrEqualTo(1), "the bootstrap lookup asked a");
        Assert.That(bMetrics.Sum("potluck.dht.lookups", "type=find_node"), Is.GreaterThanOrEqualTo(1));
        // Whatever one side sent encrypted, the other received (the link is quiet now).
        Assert.That(aMetrics.Sum("potluck.bytes.sent"), Is.GreaterThan(0));
        Assert.That(bMetrics.Sum("potluck.bytes.received"), Is.EqualTo(aMetrics.Sum("potluck.bytes.sent")));
        Assert.That(aMetrics.Sum("potluck.bytes.received"), Is.EqualTo(bMetrics.Sum("potluck.bytes.sent")));

        await b.StopAsync();
        await Task.Delay(TimeSpan.FromSeconds(1), nodes.Time);
        Assert.That(aMetrics.Sum("potluck.connections.closed", "direction=inbound"), Is.EqualTo(1));
        Assert.That(aMetrics.Sum("potluck.connections.current"), Is.Zero, "opened and closed balance");
    });

    [Test]
    public void Stranger_SendingGarbageInsteadOfAHandshake_CountsAsAFailedInboundHandshake_AndNoConnection() => VirtualTimeDriver.Run(async d =>
    {
        await using var nodes = new TestNodes(d, seed: 42);
        var a = await nodes.StartAsync(nodes.Options());
        using var metrics = new MetricRecorder(a.ProtocolMetrics.Meter);

        var raw = await nodes.Network.CreateTransport().DialAsync(a.Host.ListenAddresses[0], CancellationToken.None);
        await raw.Output.WriteAsync(Encoding.ASCII.GetBytes("\u0013not multistream at all\n"));
        await raw.Output.CompleteAsync();
        await Task.Delay(TimeSpan.FromSeconds(1), nodes.Time);
        await raw.DisposeAsync();

        Assert.That(metrics.Sum("potluck.handshakes.failed", "direction=inbound", "kind=protocol_violation"), Is.EqualTo(1));
        Assert.That(metrics.Values("potluck.handshake.duration", "outcome=failed"), Has.Count.EqualTo(1));
        Assert.That(metrics.Sum("potluck.handshakes.completed"), Is.Zero);
        Assert.That(metrics.Sum("potluck.connections.opened"), Is.Zero, "nothing was registered");
        Assert.That(a.Host.Connections, Is.Empty);
    });

    [Test]
    public void Strangers_OverTheHandshakeLimit_AreRefused_AndTheRefusalIsObservedByScope() => VirtualTimeDriver.Run(async d =>
    {
        await using var nodes = new TestNodes(d, seed: 46);
        await using var a = await nodes.Builder(nodes.Options())
            .Configure(o => o with { Host = o.Host with { MaxPendingInbound = 1 } })
            .StartAsync();
        using var metrics = new MetricRecorder(a.ProtocolMetrics.Meter);

        // Two sockets that never say a word: the first holds the one handshake slot, the second is refused before any byte.
        var transport = nodes.Network.CreateTransport();
        var first = await transport.DialAsync(a.Host.ListenAddresses[0], CancellationToken.None);
        await Task.Delay(TimeSpan.FromMilliseconds(10), nodes.Time);
        var second = await transport.DialAsync(a.Host.ListenAddresses[0], CancellationToken.None);
        await Task.Delay(TimeSpan.FromMilliseconds(10), nodes.Time);
        metrics.Observe();

        Assert.That(metrics.Values("potluck.resources.refused", $"scope={Protocol.Host.ResourceManager.Scopes.SystemHandshakes}"),
            Is.EqualTo(new[] { 1.0 }), "observed once, one refusal");
        await second.DisposeAsync();
        await first.DisposeAsync();
    });

    [Test]
    public void Peer_SendingAnOversizedDhtRequest_IsCountedAsAFailedStream_AndTheNodeStillAnswers() => VirtualTimeDriver.Run(async d =>
    {
        await using var nodes = new TestNodes(d, seed: 45);
        var a = await nodes.StartAsync(nodes.Options());
        var b = await nodes.StartAsync(nodes.Options() with { Bootstrap = [a.FullAddresses[0]] });
        await b.Joined;
        using var metrics = new MetricRecorder(a.ProtocolMetrics.Meter);

        // A length prefix far over the DHT's message limit: the request is refused before anything is read or allocated.
        var stream = await b.Host.NewStreamAsync(a.PeerId, [a.Dht.ProtocolId], CancellationToken.None);
        await stream.Output.WriteAsync(new byte[] { 0xff, 0xff, 0xff, 0xff, 0x0f });
        await stream.Output.FlushAsync();
        await Task.Delay(TimeSpan.FromSeconds(1), nodes.Time);
        stream.Reset();

        Assert.That(metrics.Sum("potluck.streams.failed", $"protocol={a.Dht.ProtocolId}", "kind=protocol_violation"), Is.EqualTo(1));
        Assert.That(a.Host.Connections, Has.Count.EqualTo(1), "a bad request on one stream resets that stream, not the connection");
        var closest = await b.Dht.GetClosestPeersAsync("some key"u8.ToArray(), CancellationToken.None);
        Assert.That(closest, Does.Contain(a.PeerId), "a still answers b's next request");
    });

    [Test]
    public void GossipMessage_IsCountedPublishedByItsAuthor_AndReceivedAndDeliveredByTheOther() => VirtualTimeDriver.Run(async d =>
    {
        await using var nodes = new TestNodes(d, seed: 43);
        var a = await nodes.StartAsync(nodes.Options());
        var b = await nodes.StartAsync(nodes.Options() with { Bootstrap = [a.FullAddresses[0]] });
        await b.Joined;
        using var aMetrics = new MetricRecorder(a.ProtocolMetrics.Meter);
        using var bMetrics = new MetricRecorder(b.ProtocolMetrics.Meter);
        using var aSub = a.JoinTopic("t");
        using var bSub = b.JoinTopic("t");
        await Task.Delay(TimeSpan.FromSeconds(3), nodes.Time); // the mesh forms

        await a.Gossip.PublishAsync("t", "hello"u8.ToArray(), CancellationToken.None);
        var got = await bSub.Messages.ReadAsync();
        Assert.That(Encoding.UTF8.GetString(got.Data.Span), Is.EqualTo("hello"));
        await Task.Delay(TimeSpan.FromSeconds(1), nodes.Time);

        Assert.That(aMetrics.Sum("potluck.gossip.messages.published"), Is.EqualTo(1));
        Assert.That(bMetrics.Sum("potluck.gossip.messages.published"), Is.Zero);
        Assert.That(bMetrics.Sum("potluck.gossip.messages.received"), Is.EqualTo(1));
        Assert.That(bMetrics.Sum("potluck.gossip.messages.delivered"), Is.EqualTo(1));
        Assert.That(bMetrics.Sum("potluck.gossip.messages.rejected"), Is.Zero);
    });

    /// <summary>
    /// On the compute cluster's nodes (thread pool, a fake clock): the requester side of a lease does not run on the
    /// virtual-time driver yet (its waits on TaskCompletionSources with WaitAsync complete on the thread pool).
    /// </summary>
    [Test]
    [CancelAfter(60_000)]
    public async Task Lease_RunEndToEnd_MovesEveryComputeInstrumentOnBothSides(CancellationToken ct)
    {
        await using var cluster = new Compute.ComputeCluster(44);
        var requesterMember = await cluster.AddAsync("requester", provide: false);
        var providerMember = await cluster.AddAsync("provider", provide: true);
        var (requester, provider) = (requesterMember.Potluck, providerMember.Potluck);
        using var providerMetrics = new MetricRecorder(provider.ComputeMetrics.Meter);
        using var requesterMetrics = new MetricRecorder(requester.ComputeMetrics.Meter);
        await requester.Compute!.Client.WaitForProvidersAsync(1, ct);

        var result = await requester.Compute.SubmitAsync(new TaskSubmission
        {
            Module = HashChain,
            Input = "seed"u8.ToArray(),
            Args = ["100"],
            Fuel = 200_000_000,
            MemoryBytes = 32L << 20,
            MaxPricePerMegaFuel = 50,
            VerifyRate = 1,
        }, ct);
        await requester.Compute.Client.WhenReceiptsDeliveredAsync(ct);

        Assert.That(result.Status, Is.EqualTo(Scheduler.Leasing.ExecutionStatus.Success), result.Error);
        Assert.That(result.Verified, Is.True);
        Assert.That(providerMetrics.Sum("potluck.leases.ended", "role=provider", "outcome=completed"), Is.EqualTo(1));
        Assert.That(providerMetrics.Sum("potluck.leases.active"), Is.Zero, "started and ended balance");
        Assert.That(requesterMetrics.Sum("potluck.leases.ended", "role=requester", "outcome=completed"), Is.EqualTo(1));
        Assert.That(requesterMetrics.Sum("potluck.leases.active"), Is.Zero);
        Assert.That(providerMetrics.Sum("potluck.tasks.run", "outcome=success"), Is.EqualTo(1), "the provider ran it");
        Assert.That(requesterMetrics.Sum("potluck.tasks.run", "outcome=success"), Is.EqualTo(1), "the requester re-ran it to verify");
        Assert.That(requesterMetrics.Sum("potluck.verifications", "verdict=match"), Is.EqualTo(1));
        Assert.That(providerMetrics.Sum("potluck.tasks.fuel"), Is.EqualTo((double)result.Fuel));
        Assert.That(requesterMetrics.Sum("potluck.tasks.fuel"), Is.EqualTo((double)result.Fuel), "the same run, the same fuel");
        Assert.That(providerMetrics.Values("potluck.sandbox.duration", "outcome=success"), Has.Count.EqualTo(1));
        Assert.That(result.Cost, Is.GreaterThan(0));
        Assert.That(requesterMetrics.Sum("potluck.credits.spent"), Is.EqualTo((double)result.Cost));
        Assert.That(providerMetrics.Sum("potluck.credits.earned"), Is.EqualTo((double)result.Cost), "earned what was spent");
        Assert.That(providerMetrics.Sum("potluck.receipts", "outcome=recorded"), Is.EqualTo(1));
        var earned = provider.Compute!.Ledger.Recent(10).Where(e => e.Kind == LedgerEntryKind.Earned).Sum(e => e.Amount);
        Assert.That(providerMetrics.Sum("potluck.credits.earned"), Is.EqualTo((double)earned), "the metric agrees with the ledger");
        await cluster.AssertLedgersConserveAsync();
    }
}
