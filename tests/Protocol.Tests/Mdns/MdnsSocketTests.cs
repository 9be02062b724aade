using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Mdns;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport.Tcp;

namespace Potluck.Protocol.Tests.Mdns;

/// <summary>
/// Real multicast, but never on the machine's interfaces: the outer test re-runs the inner one inside a fresh
/// user + network namespace (<c>unshare -rn</c>) whose only interface is loopback with multicast switched on.
/// The inner test refuses to run anywhere else.
/// </summary>
[CancelAfter(180_000)]
public class MdnsSocketTests
{
    private const string InsideVariable = "POTLUCK_MDNS_NETNS";

    [Test]
    public async Task RealSockets_InsidePrivateNetworkNamespace_TwoPeersDiscoverEachOther(CancellationToken ct)
    {
        await Potluck.Tests.NetworkNamespace.RunInsideAsync(typeof(MdnsSocketTests).Assembly.Location, "InNamespace_TwoServicesOnLoopback", InsideVariable, ct);
    }

    [Test]
    public async Task InNamespace_TwoServicesOnLoopback_DiscoverEachOther(CancellationToken ct)
    {
        Potluck.Tests.NetworkNamespace.RequireInside(InsideVariable);
        // Real sockets on the thread pool; only mDNS's query timer runs on a clock the test moves.
        var time = new VirtualClock();
        var runtime = NodeRuntime.WithTime(time);
        var random = new Random(5);
        await using var a = Libp2pHost.Create(PrivateKey.FromRandom(random), [new TcpTransport(new TcpTransportOptions(), runtime)], new Libp2pHostSettings(), runtime, NullLoggerFactory.Instance);
        await using var b = Libp2pHost.Create(PrivateKey.FromRandom(random), [new TcpTransport(new TcpTransportOptions(), runtime)], new Libp2pHostSettings(), runtime, NullLoggerFactory.Instance);
        await a.StartAsync([Multiaddr.Parse("/ip4/127.0.0.1/tcp/0")], ct);
        await b.StartAsync([Multiaddr.Parse("/ip4/127.0.0.1/tcp/0")], ct);
        var options = new MdnsOptions();
        await using var ma = new MdnsService(a, options, runtime, NullLoggerFactory.Instance);
        await using var mb = new MdnsService(b, options, runtime, NullLoggerFactory.Instance);
        var aSeenByB = new TaskCompletionSource<MdnsPeer>(TaskCreationOptions.RunContinuationsAsynchronously);
        var bSeenByA = new TaskCompletionSource<MdnsPeer>(TaskCreationOptions.RunContinuationsAsynchronously);
        mb.PeerDiscovered += p => { if (p.Peer == a.PeerId) aSeenByB.TrySetResult(p); };
        ma.PeerDiscovered += p => { if (p.Peer == b.PeerId) bSeenByA.TrySetResult(p); };

        ma.Start();
        mb.Start();
        // b's start-up query is answered by a.
        var seenA = await aSeenByB.Task.WaitAsync(ct);
        Assert.That(seenA.Addresses, Does.Contain(a.ListenAddresses[0]));
        // a's next periodic query (virtual time) is answered by b.
        time.Advance(options.QueryInterval);
        var seenB = await bSeenByA.Task.WaitAsync(ct);
        Assert.That(seenB.Addresses, Does.Contain(b.ListenAddresses[0]));
        Assert.That(a.Peers.GetAddresses(b.PeerId), Does.Contain(b.ListenAddresses[0]));
        Assert.That(b.Peers.GetAddresses(a.PeerId), Does.Contain(a.ListenAddresses[0]));
    }
}
