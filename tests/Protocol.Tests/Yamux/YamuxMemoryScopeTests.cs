using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Tests.Yamux;

/// <summary>
/// The node's muxer memory is shared out in scopes (peer, address, /24 and the system, as go-libp2p's resource manager
/// does) and reserved for what strangers can make it hold (bytes buffered unread, grown windows), not for idle streams:
/// strangers holding every idle stream their caps allow, from many subnets, cannot take what an honest newcomer needs,
/// and strangers who fill their streams with unread data are bounded by the scopes and get their own streams reset.
/// </summary>
[Category("Adversarial")]
public class YamuxMemoryScopeTests
{
    private const uint Window = YamuxOptions.InitialStreamWindow;

    private static readonly Random Keys = new(9);

    private static PeerId NewPeer() => PrivateKey.FromRandom(Keys).PeerId;

    private static YamuxSession Connection(ResourceManager resources, PeerId peer, string ip) =>
        new(new YamuxOptions(), initiator: false, (id, o) => new YamuxStreamState(id, o),
            resources.MemoryFor(peer, Multiaddr.Parse($"/ip4/{ip}/tcp/4001")));

    private static List<YamuxStreamState> OpenInbound(YamuxSession session, int count, uint firstId = 1)
    {
        var opened = new List<YamuxStreamState>();
        for (var i = 0; i < count; i++)
        {
            if (session.OnHeader(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, firstId + 2 * (uint)i, 0), 0).Opened is { } s)
            {
                opened.Add(s);
            }
        }
        return opened;
    }

    /// <summary>
    /// Connections spread as the caps allow: <paramref name="subnets"/> /24s, <paramref name="addressesPerSubnet"/>
    /// addresses in each and <paramref name="peersPerAddress"/> fresh identities (one connection each) per address.
    /// </summary>
    private static List<YamuxSession> Spread(ResourceManager resources, int subnets, int addressesPerSubnet, int peersPerAddress)
    {
        var sessions = new List<YamuxSession>();
        for (var net = 0; net < subnets; net++)
        {
            for (var host = 1; host <= addressesPerSubnet; host++)
            {
                for (var p = 0; p < peersPerAddress; p++)
                {
                    sessions.Add(Connection(resources, NewPeer(), $"10.{net}.0.{host}"));
                }
            }
        }
        return sessions;
    }

    /// <summary>A newcomer's 100 streams, each receiving a ping (32 bytes) that its application reads: how many worked.</summary>
    private static int HonestPings(YamuxSession honest, int count = 100)
    {
        var streams = OpenInbound(honest, count);
        var worked = 0;
        foreach (var s in streams)
        {
            if (YamuxMemoryTests.Fill(honest, s, 32))
            {
                honest.OnConsumed(s, 32, 0);
                worked++;
            }
        }
        return worked;
    }

    [Test]
    public void IdentitiesOnEightSubnets_HoldingEveryIdleStreamTheirCapsAllow_ReserveNothing_ANewcomerIsServed()
    {
        var resources = new ResourceManager(new HostOptions(), new VirtualClock());
        var limits = resources.Limits;

        // The attack left open when windows were reserved at open: 8 /24s x 5 addresses x 10 identities = 400 connections
        // (the node's connection cap; 50 per /24 and 10 per address are within those caps), each holding 256 idle streams
        // (the per-peer inbound stream cap; the accept backlog's size). 102,400 windows of 256 KiB: 25 GiB if reserved at
        // open, 100 times the node's 256 MiB budget.
        var attackers = Spread(resources, subnets: 8, addressesPerSubnet: 5, peersPerAddress: 10);
        var held = attackers.Sum(a => OpenInbound(a, limits.MaxInboundStreamsPerPeer).Count);

        Assert.That(attackers, Has.Count.EqualTo(new HostOptions().MaxConnections));
        Assert.That(held, Is.EqualTo(400 * 256), "idle streams are bounded by the stream caps, not by memory");
        Assert.That(resources.Memory.Reserved, Is.Zero, "an idle stream reserves nothing");
        Assert.That(resources.Refusals, Is.Empty);

        var honest = Connection(resources, NewPeer(), "198.51.100.20");
        Assert.That(HonestPings(honest), Is.EqualTo(100));
        Assert.That(YamuxMemoryTests.TakeResets(honest), Is.Zero);
    }

    [Test]
    public void IdentitiesOnFourSubnets_FillingTheirStreamsWithUnreadData_AreBoundedByTheScopes_TheyAreReset_TheNewcomerIsNot()
    {
        var resources = new ResourceManager(new HostOptions(), new VirtualClock());
        var limits = resources.Limits;
        var free = new YamuxOptions().FreeReceiveBuffer;

        // 4 /24s x 4 addresses x 16 identities = 256 connections, each within every connection cap; every one opens 16
        // streams and fills each with its whole 256 KiB window, which nobody reads: 1 GiB asked, 4 times the budget.
        var attackers = Spread(resources, subnets: 4, addressesPerSubnet: 4, peersPerAddress: 16);
        var filled = 0;
        var streams = 0;
        foreach (var a in attackers)
        {
            foreach (var s in OpenInbound(a, 16))
            {
                streams++;
                filled += YamuxMemoryTests.Fill(a, s, Window) ? 1 : 0;
            }
        }

        // Reserved: within the node's budget and each subnet's share. Buffered: at most that plus 64 KiB per connection.
        Assert.That(resources.Memory.Reserved, Is.LessThanOrEqualTo(limits.MaxMuxerMemory));
        Assert.That(resources.Memory.Reserved, Is.GreaterThan(limits.MaxMuxerMemory - (long)Window), "the attackers did fill it");
        var buffered = attackers.Sum(a => a.BufferedBytes);
        Assert.That(buffered, Is.EqualTo((long)filled * Window));
        Assert.That(buffered, Is.LessThanOrEqualTo(limits.MaxMuxerMemory + attackers.Count * free));
        Assert.That(attackers.Sum(a => a.ReservedMemory), Is.EqualTo(resources.Memory.Reserved));

        // Each offending stream was reset with RST; the refusals are counted by scope.
        var reset = attackers.Sum(a => a.ResetForMemory);
        Assert.That(reset, Is.EqualTo(streams - filled));
        Assert.That(reset, Is.GreaterThan(streams / 2));
        Assert.That(attackers.Sum(YamuxMemoryTests.TakeResets), Is.EqualTo(reset));
        Assert.That(resources.RefusedIn(ResourceManager.Scopes.MuxerMemory) + resources.RefusedIn(ResourceManager.Scopes.SubnetMuxerMemory),
            Is.EqualTo(reset));

        // A newcomer from a fifth /24 still gets its pings through: none of its streams is reset.
        var honest = Connection(resources, NewPeer(), "198.51.100.20");
        Assert.That(HonestPings(honest), Is.EqualTo(100));
        Assert.That(honest.ResetForMemory, Is.Zero);
        Assert.That(YamuxMemoryTests.TakeResets(honest), Is.Zero);
    }

    [Test]
    public void ManyAddressesInOneSubnet_BufferAtMostTheSubnetsShare_ANewPeerElsewhereCanBufferAsMuch()
    {
        var resources = new ResourceManager(new HostOptions(), new VirtualClock());
        var limits = resources.Limits;

        // 64 addresses in one /24 (the subnet's connection cap), one identity each, 16 full windows per connection.
        var filled = 0;
        for (var host = 1; host <= 64; host++)
        {
            var a = Connection(resources, NewPeer(), $"192.0.2.{host}");
            filled += OpenInbound(a, 16).Count(s => YamuxMemoryTests.Fill(a, s, Window));
        }

        // The /24 reserves its 128 MiB share (each connection's first 64 KiB is free).
        Assert.That(resources.Memory.Reserved, Is.LessThanOrEqualTo(limits.MaxMuxerMemoryPerSubnet));
        Assert.That(resources.Memory.Reserved, Is.GreaterThan(limits.MaxMuxerMemoryPerSubnet - (long)Window));
        Assert.That(resources.RefusedIn(ResourceManager.Scopes.SubnetMuxerMemory), Is.EqualTo(64 * 16 - filled));

        var honest = Connection(resources, NewPeer(), "198.51.100.20");
        Assert.That(OpenInbound(honest, 128).Count(s => YamuxMemoryTests.Fill(honest, s, Window)), Is.EqualTo(128),
            "a whole connection's worth of full windows (32 MiB and 64 KiB free)");

        // One window more is past the connection's own limit (yamux:maxConnectionMemory), counted in its scope.
        Assert.That(YamuxMemoryTests.Fill(honest, OpenInbound(honest, 1, firstId: 1001).Single(), Window), Is.False);
        Assert.That(resources.RefusedIn(ResourceManager.Scopes.ConnectionMuxerMemory), Is.EqualTo(1));
    }

    [Test]
    public void APeerOverItsOwnShare_GetsItsStreamsReset_AnotherPeerFromTheSameAddressIsNot()
    {
        var resources = new ResourceManager(new HostOptions(), new VirtualClock());
        var limits = resources.Limits;
        var greedy = NewPeer();

        // Four connections (the per-peer connection cap), 64 full windows each: 64 MiB asked of a 32 MiB share.
        var connections = Enumerable.Range(0, 4).Select(_ => Connection(resources, greedy, "203.0.113.7")).ToList();
        var filled = connections.Sum(c => OpenInbound(c, 64).Count(s => YamuxMemoryTests.Fill(c, s, Window)));

        Assert.That(resources.MemoryOfPeer(greedy), Is.LessThanOrEqualTo(limits.MaxMuxerMemoryPerPeer));
        Assert.That(resources.MemoryOfPeer(greedy), Is.GreaterThan(limits.MaxMuxerMemoryPerPeer - (long)Window));
        Assert.That(connections.Sum(c => c.BufferedBytes), Is.LessThanOrEqualTo(limits.MaxMuxerMemoryPerPeer + 4 * new YamuxOptions().FreeReceiveBuffer));
        Assert.That(resources.RefusedIn(ResourceManager.Scopes.PeerMuxerMemory), Is.EqualTo(256 - filled));
        Assert.That(connections.Sum(YamuxMemoryTests.TakeResets), Is.EqualTo(256 - filled), "every refused stream is answered with RST");

        // Our own stream to the greedy peer opens (opening costs nothing); what it sends there past its share resets it.
        var outbound = new YamuxSession(new YamuxOptions(), initiator: true, (id, o) => new YamuxStreamState(id, o),
            resources.MemoryFor(greedy, Multiaddr.Parse("/ip4/203.0.113.7/tcp/4001")));
        var ours = outbound.OpenOutbound();
        Assert.That(YamuxMemoryTests.Fill(outbound, ours, 64 * 1024), Is.True, "within the connection's free 64 KiB");
        Assert.That(YamuxMemoryTests.Fill(outbound, ours, Window - 64 * 1024), Is.False);
        Assert.That(ours.IsReset, Is.True);

        var neighbour = Connection(resources, NewPeer(), "203.0.113.7");
        Assert.That(OpenInbound(neighbour, 64).Count(s => YamuxMemoryTests.Fill(neighbour, s, Window)), Is.EqualTo(64));
        var neighbourReserved = resources.Memory.Reserved - resources.MemoryOfPeer(greedy);

        // Closing the greedy peer's connections returns everything to every scope; nothing of it is left behind.
        foreach (var c in connections.Append(outbound))
        {
            c.ReleaseAllMemory();
        }
        Assert.That(resources.MemoryOfPeer(greedy), Is.Zero);
        Assert.That(resources.Memory.Reserved, Is.EqualTo(neighbourReserved), "only the neighbour's");
        neighbour.ReleaseAllMemory();
        Assert.That(resources.Memory.Reserved, Is.Zero);
    }

    [Test]
    public void AnHonestBulkTransfer_StillAutoTunesItsWindowToTheMaximum_WithinItsPeersShare()
    {
        var resources = new ResourceManager(new HostOptions(), new VirtualClock());
        var peer = NewPeer();
        var session = Connection(resources, peer, "198.51.100.20");
        var stream = session.OnHeader(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, 1, 0), 0).Opened!;
        session.Rtt = 1_000_000;

        for (var i = 0; i < 10; i++)
        {
            var granted = stream.RecvAvailable;
            Assert.That(YamuxMemoryTests.Fill(session, stream, (uint)granted), Is.True);
            session.OnConsumed(stream, granted, now: i);
        }

        var options = new YamuxOptions();
        Assert.That(stream.RecvWindow, Is.EqualTo(options.MaxStreamWindow), "16 MiB: a full window for bulk transfer");
        Assert.That(resources.MemoryOfPeer(peer), Is.EqualTo((long)options.MaxStreamWindow), "a grown window is reserved whole");
        Assert.That(resources.Refusals, Is.Empty);
    }
}
