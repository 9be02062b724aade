using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Tests.Yamux;

/// <summary>
/// The node's muxer memory is shared out in scopes (peer, address, /24 and the system, as go-libp2p's resource manager
/// does): strangers holding idle streams up to every cap they have cannot take the windows an honest newcomer needs.
/// </summary>
[Category("Adversarial")]
public class YamuxMemoryScopeTests
{
    private const long Window = YamuxOptions.InitialStreamWindow;

    private static readonly Random Keys = new(9);

    private static PeerId NewPeer() => PrivateKey.FromRandom(Keys).PeerId;

    private static YamuxSession Connection(ResourceManager resources, PeerId peer, string ip) =>
        new(new YamuxOptions(), initiator: false, (id, o) => new YamuxStreamState(id, o),
            resources.MemoryFor(peer, Multiaddr.Parse($"/ip4/{ip}/tcp/4001")));

    private static int OpenInbound(YamuxSession session, int count)
    {
        var opened = 0;
        for (var i = 0; i < count; i++)
        {
            if (session.OnHeader(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Syn, 1 + 2 * (uint)i, 0), 0).Opened is not null)
            {
                opened++;
            }
        }
        return opened;
    }

    [Test]
    public void SixteenIdentitiesFromOneAddress_Holding64IdleStreamsEach_CannotLockANewPeerOut()
    {
        var resources = new ResourceManager(new HostOptions(), new VirtualClock());
        var limits = resources.Limits;

        // The attack the load runner found: 16 identities from one address, 64 idle ping streams each (1,024 windows,
        // the whole 256 MiB node budget when nothing shares it out).
        var attackers = Enumerable.Range(0, 16).Select(_ => Connection(resources, NewPeer(), "203.0.113.7")).ToList();
        var held = attackers.Sum(a => OpenInbound(a, 64));

        Assert.That(held, Is.EqualTo((int)(limits.MaxMuxerMemoryPerAddress / Window)), "the address's share: 256 windows at the 64 MiB default");
        Assert.That(resources.RefusedIn(ResourceManager.Scopes.AddressMuxerMemory), Is.EqualTo(16 * 64 - held));
        Assert.That(resources.Memory.Reserved, Is.EqualTo(limits.MaxMuxerMemoryPerAddress));

        // An honest newcomer from elsewhere opens as many streams as its own share allows, none refused.
        var honest = Connection(resources, NewPeer(), "198.51.100.20");
        Assert.That(OpenInbound(honest, 100), Is.EqualTo(100));
        Assert.That(resources.RefusedIn(ResourceManager.Scopes.MuxerMemory), Is.Zero, "the system budget was never reached");
    }

    [Test]
    public void ManyAddressesInOneSubnet_TakeAtMostTheSubnetsShare_ANewPeerElsewhereIsServed()
    {
        var resources = new ResourceManager(new HostOptions(), new VirtualClock());
        var limits = resources.Limits;

        // 64 addresses in one /24 (each within the per-address share), 8 identities each, 16 streams per identity.
        var held = 0;
        for (var host = 1; host <= 64; host++)
        {
            for (var p = 0; p < 8; p++)
            {
                held += OpenInbound(Connection(resources, NewPeer(), $"192.0.2.{host}"), 16);
            }
        }

        Assert.That(held, Is.EqualTo((int)(limits.MaxMuxerMemoryPerSubnet / Window)), "the /24's share: 512 windows at the 128 MiB default");
        Assert.That(resources.RefusedIn(ResourceManager.Scopes.SubnetMuxerMemory), Is.EqualTo(64 * 8 * 16 - held));

        var honest = Connection(resources, NewPeer(), "198.51.100.20");
        Assert.That(OpenInbound(honest, 128), Is.EqualTo(128), "a whole per-connection share of windows");
    }

    [Test]
    public void APeerOverItsOwnShare_GetsItsStreamsRefusedWithRst_AnotherPeerFromTheSameAddressIsNot()
    {
        var resources = new ResourceManager(new HostOptions(), new VirtualClock());
        var limits = resources.Limits;
        var greedy = NewPeer();

        // Four connections (the per-peer connection cap), 64 streams each: 256 windows asked, 128 fit the peer's 32 MiB.
        var connections = Enumerable.Range(0, 4).Select(_ => Connection(resources, greedy, "203.0.113.7")).ToList();
        var held = connections.Sum(c => OpenInbound(c, 64));

        Assert.That(held, Is.EqualTo((int)(limits.MaxMuxerMemoryPerPeer / Window)));
        Assert.That(resources.MemoryOfPeer(greedy), Is.EqualTo(limits.MaxMuxerMemoryPerPeer));
        Assert.That(resources.RefusedIn(ResourceManager.Scopes.PeerMuxerMemory), Is.EqualTo(256 - held));
        var rsts = 0;
        foreach (var c in connections)
        {
            while (c.TryTakeControl(out var h))
            {
                rsts += h.Flags.HasFlag(YamuxFlags.Rst) ? 1 : 0;
            }
        }
        Assert.That(rsts, Is.EqualTo(256 - held), "every refused stream is answered with RST");

        // Our own stream to the greedy peer is over its share too: a typed error, not a crash.
        var outbound = new YamuxSession(new YamuxOptions(), initiator: true, (id, o) => new YamuxStreamState(id, o),
            resources.MemoryFor(greedy, Multiaddr.Parse("/ip4/203.0.113.7/tcp/4001")));
        var e = Assert.Throws<ResourceLimitException>(() => outbound.OpenOutbound());
        Assert.That(Failures.Classify(e!).Kind, Is.EqualTo(FailureKind.ResourceLimit));

        var neighbour = Connection(resources, NewPeer(), "203.0.113.7");
        Assert.That(OpenInbound(neighbour, 64), Is.EqualTo(64));

        // Closing the greedy peer's connections returns everything to every scope; nothing of it is left behind.
        foreach (var c in connections)
        {
            c.ReleaseAllMemory();
        }
        Assert.That(resources.MemoryOfPeer(greedy), Is.Zero);
        Assert.That(resources.Memory.Reserved, Is.EqualTo(64 * Window), "only the neighbour's windows");
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
            var outcome = session.OnHeader(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.None, stream.Id, (uint)granted), 0);
            Assert.That(outcome.Violation, Is.Null);
            YamuxSession.OnDelivered(stream, granted);
            session.OnConsumed(stream, granted, now: i);
        }

        var options = new YamuxOptions();
        Assert.That(stream.RecvWindow, Is.EqualTo(options.MaxStreamWindow), "16 MiB: a full window for bulk transfer");
        Assert.That(resources.MemoryOfPeer(peer), Is.EqualTo((long)options.MaxStreamWindow));
        Assert.That(resources.Refusals, Is.Empty);
    }
}
