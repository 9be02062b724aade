using System.IO.Pipelines;
using System.Text;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport;
using Potluck.Protocol.Transport.Memory;

namespace Potluck.Protocol.Tests.Host;

/// <summary>
/// The resource manager under attack: what a flood of identities, stalled handshakes or streams from one place can
/// hold, and that an honest newcomer is still admitted and served while it lasts.
/// </summary>
[Category("Adversarial")]
public class ResourceManagerTests
{
    /// <summary>The 20 bytes a multistream-select header is on the wire: a varint length, then the id and a newline.</summary>
    private static readonly byte[] MultistreamHeader = [19, .. Encoding.ASCII.GetBytes("/multistream/1.0.0\n")];

    [Test]
    public void FourHundredFreshIdentitiesFromOneAddress_HoldOnlyThatAddresssShare_AndAnHonestPeerIsServed() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d);
        var server = await hosts.StartAsync();
        var limits = server.Host.Options.Resources;
        using var metrics = new Potluck.Tests.MetricRecorder(server.Host.Instruments.Meter);

        // One transport is one address: 400 hosts with fresh keys dial from it, 100 all at once (within the listen backlog), then 300 one after another.
        var attackerAddress = hosts.Network.CreateTransport();
        var random = new Random(7);
        var attackers = Enumerable.Range(0, 400)
            .Select(_ => hosts.Own(Libp2pHost.Create(PrivateKey.FromRandom(random), [attackerAddress], new Libp2pHostSettings(), hosts.NextRuntime(), hosts.Loggers)))
            .ToList();
        async Task<bool> DialAsync(Libp2pHost attacker)
        {
            try
            {
                await attacker.ConnectAsync(server.Address, ct);
                return true;
            }
            catch (DialException)
            {
                return false;
            }
        }
        var inBurst = (await Task.WhenAll(attackers.Take(100).Select(DialAsync))).Count(ok => ok);
        var connected = inBurst;
        foreach (var attacker in attackers.Skip(100))
        {
            connected += await DialAsync(attacker) ? 1 : 0;
        }

        var honest = await hosts.StartAsync();
        await honest.Host.ConnectAsync(server.Address, ct);
        var rtts = await honest.Ping.PingAsync(server.Host.PeerId, 1, ct);

        Assert.That(rtts, Has.Count.EqualTo(1), "a newcomer from another address connects and is served");
        Assert.That(inBurst, Is.EqualTo(limits.MaxPendingInboundPerAddress), "a burst from one address gets its share of handshake slots");
        Assert.That(connected, Is.EqualTo(limits.MaxConnectionsPerAddress), "one address holds its share of connections and no more");
        var refused = server.Host.Resources.RefusedIn(ResourceManager.Scopes.AddressConnections)
                      + server.Host.Resources.RefusedIn(ResourceManager.Scopes.AddressHandshakes);
        Assert.That(refused, Is.EqualTo(400 - limits.MaxConnectionsPerAddress), "every other one refused before its handshake, and counted");
        metrics.Observe();
        Assert.That(metrics.Sum("potluck.resources.refused", "scope=" + ResourceManager.Scopes.AddressConnections)
                    + metrics.Sum("potluck.resources.refused", "scope=" + ResourceManager.Scopes.AddressHandshakes), Is.EqualTo(refused),
            "the node's metrics count the refusals by scope");
        Assert.That(server.Host.Connections.Count(c => c.RemotePeer != honest.Host.PeerId), Is.EqualTo(limits.MaxConnectionsPerAddress));
    });

    [Test]
    public void StalledMultistreamHeadersFromOneAddress_TakeOnlyTheirShareOfHandshakeSlots_AnHonestPeerConnectsMeanwhile() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d);
        var server = await hosts.StartAsync(o => o with { HandshakeTimeout = TimeSpan.FromSeconds(10) });
        var limits = server.Host.Options.Resources;
        var attacker = hosts.Network.CreateTransport();
        var started = hosts.Time.GetUtcNow();

        // 128 sockets send the multistream header and stall.
        var raws = new List<IRawConnection>();
        for (var i = 0; i < 128; i++)
        {
            var raw = await attacker.DialAsync(server.Host.ListenAddresses[0], ct);
            await raw.Output.WriteAsync(MultistreamHeader, ct);
            raws.Add(raw);
        }
        await d.IdleAsync();
        var closedAtOnce = 0;
        foreach (var raw in raws)
        {
            if (await ClosedByServerAsync(raw))
            {
                closedAtOnce++;
            }
        }

        var honest = await hosts.StartAsync();
        await honest.Host.ConnectAsync(server.Address, ct);
        var rtts = await honest.Ping.PingAsync(server.Host.PeerId, 1, ct);

        Assert.That(rtts, Has.Count.EqualTo(1));
        Assert.That(hosts.Time.GetUtcNow() - started, Is.LessThan(TimeSpan.FromSeconds(10)), "served while the stalled sockets still hold their slots");
        Assert.That(closedAtOnce, Is.EqualTo(128 - limits.MaxPendingInboundPerAddress), "refused before any handshake byte was answered");
        Assert.That(server.Host.Resources.RefusedIn(ResourceManager.Scopes.AddressHandshakes), Is.EqualTo(128 - limits.MaxPendingInboundPerAddress));
        Assert.That(server.Host.Resources.PendingInbound, Is.EqualTo(limits.MaxPendingInboundPerAddress));

        await Task.Delay(TimeSpan.FromSeconds(10), hosts.Time);
        await d.IdleAsync();
        Assert.That(server.Host.Resources.PendingInbound, Is.Zero, "the stalled ones are dropped at the handshake timeout");
        foreach (var raw in raws)
        {
            await raw.DisposeAsync();
        }
    });

    [Test]
    public void StalledHandshakesFrom128AddressesIn8Subnets_ANewAddressEvictsTheOldestOfTheMostCrowdedScope()
    {
        var clock = new VirtualClock();
        var resources = new ResourceManager(new HostOptions(), clock);
        var limits = resources.Limits;
        ResourceManager.Admission? Admit(string address, out string refusedBy) =>
            resources.TryAdmitInbound(Multiaddr.Parse($"/ip4/{address}/tcp/40000"), 0, () => false, out refusedBy);

        // 128 stalled handshakes: 16 addresses in each of 8 /24s take every slot; the ones from 127.0.3.0/24 come a second later.
        var stalled = new List<(string Address, ResourceManager.Admission Admission)>();
        for (var subnet = 0; subnet < 8; subnet++)
        {
            if (subnet == 3)
            {
                clock.Advance(TimeSpan.FromSeconds(1));
            }
            for (var host = 1; host <= 16; host++)
            {
                var address = $"127.0.{subnet}.{host}";
                stalled.Add((address, Admit(address, out _) ?? throw new AssertionException($"{address} refused")));
            }
        }
        Assert.That(resources.PendingInbound, Is.EqualTo(128));

        // A newcomer before any of them has stalled for the eviction age: refused, nothing evicted.
        Assert.That(Admit("127.0.9.1", out var early), Is.Null);
        Assert.That(early, Is.EqualTo(ResourceManager.Scopes.SystemHandshakes));
        Assert.That(stalled.Count(s => s.Admission.Evicted.IsCancellationRequested), Is.Zero);

        clock.Advance(limits.HandshakeEvictionAge);
        // An address that already has a handshake in flight evicts nothing (one place cannot churn the slots).
        Assert.That(Admit("127.0.5.7", out var again), Is.Null);
        Assert.That(again, Is.EqualTo(ResourceManager.Scopes.SystemHandshakes));
        // Newcomers from fresh addresses are admitted; each evicts the oldest handshake of a crowded subnet.
        var newcomer = Admit("127.0.9.1", out _);
        Assert.That(newcomer, Is.Not.Null, "a newcomer is admitted while the stalled handshakes are still within their timeout");
        Assert.That(stalled.Where(s => s.Admission.Evicted.IsCancellationRequested).Select(s => s.Address), Is.EqualTo(new[] { "127.0.0.1" }),
            "the oldest of a full subnet makes room");
        Assert.That(resources.PendingInbound, Is.EqualTo(128));
        var second = Admit("10.1.2.3", out _);
        Assert.That(second, Is.Not.Null);
        Assert.That(stalled.Where(s => s.Admission.Evicted.IsCancellationRequested).Select(s => s.Address), Is.EquivalentTo(new[] { "127.0.0.1", "127.0.1.1" }),
            "then the oldest of the next most crowded subnet (127.0.0.0/24 now has 15)");
        Assert.That(resources.RefusedIn(ResourceManager.Scopes.EvictedHandshakes), Is.EqualTo(2));
        // An evicted handshake's slot is not freed twice when its upgrade ends.
        stalled[0].Admission.Dispose();
        Assert.That(resources.PendingInbound, Is.EqualTo(128));

        // Handshakes younger than the eviction age are never evicted: the newcomers themselves are safe.
        newcomer!.HandshakeEnded();
        second!.HandshakeEnded();
        for (var i = 0; i < 2; i++)
        {
            Assert.That(Admit($"192.0.2.{i + 1}", out _), Is.Not.Null);
        }
        var fresh = new List<ResourceManager.Admission>();
        for (var i = 0; i < 200; i++)
        {
            if (Admit($"198.51.{i}.1", out _) is { } a)
            {
                fresh.Add(a);
            }
        }
        Assert.That(fresh.Count, Is.EqualTo(126), "each fresh address evicts one stalled handshake old enough, and no more than there are");
        Assert.That(resources.PendingInbound, Is.EqualTo(128));
    }

    [Test]
    public void StalledHandshakesFrom128Addresses_FillEverySlot_AnHonestNewcomerIsServedLongBeforeTheirTimeout() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d);
        var server = await hosts.StartAsync(o => o with { HandshakeTimeout = TimeSpan.FromSeconds(10) });
        var limits = server.Host.Options.Resources;
        var started = hosts.Time.GetUtcNow();

        // 128 sockets from 128 addresses send the multistream header and stall: every handshake slot is taken.
        var raws = new List<IRawConnection>();
        for (var i = 0; i < server.Host.Options.MaxPendingInbound; i++)
        {
            var raw = await hosts.Network.CreateTransport().DialAsync(server.Host.ListenAddresses[0], ct);
            await raw.Output.WriteAsync(MultistreamHeader, ct);
            raws.Add(raw);
        }
        await d.IdleAsync();
        Assert.That(server.Host.Resources.PendingInbound, Is.EqualTo(server.Host.Options.MaxPendingInbound), "each is one address's only handshake: all were admitted");

        await Task.Delay(limits.HandshakeEvictionAge, hosts.Time);
        var honest = await hosts.StartAsync();
        await honest.Host.ConnectAsync(server.Address, ct);
        var rtts = await honest.Ping.PingAsync(server.Host.PeerId, 1, ct);

        Assert.That(rtts, Has.Count.EqualTo(1), "the newcomer connects and is served");
        Assert.That(hosts.Time.GetUtcNow() - started, Is.LessThan(TimeSpan.FromSeconds(10)), "while the stalled handshakes are within their timeout");
        Assert.That(server.Host.Resources.RefusedIn(ResourceManager.Scopes.EvictedHandshakes), Is.EqualTo(1), "one stalled handshake made room");
        await d.IdleAsync();
        var closed = 0;
        foreach (var raw in raws)
        {
            closed += await ClosedByServerAsync(raw) ? 1 : 0;
        }
        Assert.That(closed, Is.EqualTo(1), "the evicted socket is closed by the server; the others still wait");
        foreach (var raw in raws)
        {
            await raw.DisposeAsync();
        }
    });

    [Test]
    public void FullNode_ClosesAnUnidentifiedConnectionToAdmitANewcomer_ButRefusesBeforeTheHandshakeWhenNothingCanGo() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d);
        var server = await hosts.StartAsync(o => o with { MaxConnections = 8, HighWater = 0, TrimGracePeriod = TimeSpan.FromSeconds(20) });
        var random = new Random(11);

        // Eight strangers from eight addresses that never identify (bare hosts: no identify service) fill the node.
        var strangers = new List<Libp2pHost>();
        for (var i = 0; i < 8; i++)
        {
            var stranger = hosts.Own(Libp2pHost.Create(PrivateKey.FromRandom(random), [hosts.Network.CreateTransport()], new Libp2pHostSettings(), hosts.NextRuntime(), hosts.Loggers));
            await stranger.ConnectAsync(server.Address, ct);
            strangers.Add(stranger);
        }
        await d.IdleAsync();
        Assert.That(server.Host.Connections, Has.Count.EqualTo(8));

        // Within the grace period nothing may go: the next one is refused before its handshake.
        var early = await hosts.StartAsync();
        var refused = await AsyncAssert.ThrowsAsync<DialException>(async () => await early.Host.ConnectAsync(server.Address, ct));
        Assert.That(refused.InnerException, Is.InstanceOf<PeerGoneException>(), "hung up on before the handshake");
        Assert.That(refused.Message, Does.Contain("it may be full"), "a refusal before the handshake is not only a swarm-key mismatch");
        Assert.That(server.Host.Resources.RefusedIn(ResourceManager.Scopes.SystemConnections), Is.EqualTo(1));

        // Past it, a stranger that never identified makes room for the honest newcomer, who is served.
        await Task.Delay(TimeSpan.FromSeconds(21), hosts.Time);
        var honest = await hosts.StartAsync();
        await honest.Host.ConnectAsync(server.Address, ct);
        var rtts = await honest.Ping.PingAsync(server.Host.PeerId, 1, ct);
        await d.IdleAsync();

        Assert.That(rtts, Has.Count.EqualTo(1));
        Assert.That(server.Host.Connections, Has.Count.EqualTo(8), "never more than the cap");
        Assert.That(server.Host.Connections.Select(c => c.RemotePeer), Does.Contain(honest.Host.PeerId));
        Assert.That(strangers.Count(s => s.Connections.Count == 0), Is.EqualTo(1), "exactly one stranger was closed");
    });

    [Test]
    public void ConnectionsPerPeer_PastTheLimit_AreRefusedAfterTheHandshakeNamesThePeer() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d);
        var server = await hosts.StartAsync(o => o with { Resources = o.Resources with { MaxConnectionsPerPeer = 2 } });
        var key = PrivateKey.FromRandom(new Random(3));

        // The same identity from three addresses: three hosts with one key (their own connection managers know nothing of each other).
        var copies = Enumerable.Range(0, 3)
            .Select(_ => hosts.Own(Libp2pHost.Create(key, [hosts.Network.CreateTransport()], new Libp2pHostSettings(), hosts.NextRuntime(), hosts.Loggers)))
            .ToList();
        await copies[0].ConnectAsync(server.Address, ct);
        await copies[1].ConnectAsync(server.Address, ct);
        await copies[2].ConnectAsync(server.Address, ct); // the handshake completes; the server then hangs up
        await d.IdleAsync();

        Assert.That(server.Host.ConnectionManager.ConnectionsTo(key.PeerId), Has.Count.EqualTo(2));
        Assert.That(server.Host.Resources.RefusedIn(ResourceManager.Scopes.PeerConnections), Is.EqualTo(1));
        Assert.That(copies[2].Connections, Is.Empty);
    });

    [Test]
    public void BannedPeer_IsRefused_UntilTheBanEnds() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d);
        var server = await hosts.StartAsync();
        var peer = await hosts.StartAsync();
        server.Host.Resources.Ban(peer.Host.PeerId, TimeSpan.FromMinutes(5));

        await peer.Host.ConnectAsync(server.Address, ct);
        await d.IdleAsync();
        Assert.That(server.Host.Connections, Is.Empty);
        Assert.That(server.Host.Resources.RefusedIn(ResourceManager.Scopes.Banned), Is.EqualTo(1));

        await Task.Delay(TimeSpan.FromMinutes(5), hosts.Time);
        Assert.That(await peer.Ping.PingAsync(server.Host.PeerId, 1, ct), Has.Count.EqualTo(1));
    });

    [Test]
    public void InboundStreamsPastTheProtocolLimit_AreReset_AndThePeersOtherProtocolsAreStillServed() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var hosts = new TestHosts(d);
        var server = await hosts.StartAsync(o => o with { Resources = o.Resources with { MaxInboundStreamsPerProtocol = 8 } });
        var held = 0;
        var release = new TaskCompletionSource();
        server.Host.SetStreamHandler("/test/hold/1", async (stream, token) =>
        {
            held++;
            await release.Task.WaitAsync(token);
        });
        var client = await hosts.StartAsync();
        await client.Host.ConnectAsync(server.Address, ct);

        var streams = new List<IStream>();
        var reset = 0;
        for (var i = 0; i < 12; i++)
        {
            try
            {
                var stream = await client.Host.NewStreamAsync(server.Host.PeerId, ["/test/hold/1"], ct);
                streams.Add(stream);
                await stream.Output.WriteAsync(new byte[] { 1 }, ct);
                await d.IdleAsync();
                var read = stream.Input.ReadAsync(ct);
                Assert.That(read.IsCompleted, Is.False, "a stream within the limit is held open by its handler");
            }
            catch (StreamResetException)
            {
                reset++;
            }
        }

        Assert.That(held, Is.EqualTo(8));
        Assert.That(reset, Is.EqualTo(4), "the client sees each refusal as a reset stream");
        Assert.That(server.Host.Resources.RefusedIn(ResourceManager.Scopes.ProtocolStreams), Is.EqualTo(4));
        Assert.That(await client.Ping.PingAsync(server.Host.PeerId, 1, ct), Has.Count.EqualTo(1), "ping is another protocol's scope");
        Assert.That(server.Host.Connections, Has.Count.EqualTo(1), "a refused stream is reset, the connection stays");

        release.SetResult();
        foreach (var s in streams)
        {
            await s.DisposeAsync();
        }
    });

    [Test]
    public void KeysOf_GroupsIPv4By24_IPv6By64_AndMemoryByWholeAddress()
    {
        Assert.That(ResourceManager.KeysOf(Multiaddr.Parse("/ip4/203.0.113.7/tcp/4100")), Is.EqualTo(("203.0.113.7", (string?)"203.0.113.0/24")));
        Assert.That(ResourceManager.KeysOf(Multiaddr.Parse("/ip6/2001:db8:1:2:3:4:5:6/tcp/4100")), Is.EqualTo(("2001:db8:1:2:3:4:5:6", (string?)"2001:db8:1:2::/64")));
        Assert.That(ResourceManager.KeysOf(Multiaddr.Parse("/memory/5")), Is.EqualTo(("/memory/5", (string?)null)));
    }

    /// <summary>True when the server closed the socket (it reads to the end without our writing more).</summary>
    private static async Task<bool> ClosedByServerAsync(IRawConnection raw)
    {
        while (true)
        {
            var read = raw.Input.ReadAsync();
            if (!read.IsCompleted)
            {
                return false; // the server is still waiting for us: its handshake runs
            }
            ReadResult result;
            try
            {
                result = await read;
            }
            catch (Exception e) when (Failures.Classify(e).Kind == FailureKind.PeerGone)
            {
                return true;
            }
            raw.Input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted || result.IsCanceled)
            {
                return true;
            }
        }
    }
}
