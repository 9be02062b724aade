using System.Diagnostics;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Mdns;
using Potluck.Protocol.Multiformats;
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
        if (Environment.GetEnvironmentVariable(InsideVariable) == "1")
        {
            Assert.Ignore("this is the inner run");
        }
        if (!OperatingSystem.IsLinux() || await RunAsync("unshare", ["-rn", "true"], null, ct) is not (0, _))
        {
            Assert.Ignore("unshare -rn is not permitted here");
        }
        var dll = typeof(MdnsSocketTests).Assembly.Location;
        const string script = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo && " +
                              "exec dotnet test \"$0\" --filter \"FullyQualifiedName~InNamespace_TwoServicesOnLoopback\"";
        var (code, output) = await RunAsync("unshare", ["-rn", "sh", "-c", script, dll], new() { [InsideVariable] = "1" }, ct);
        Assert.That(code, Is.Zero, output);
        Assert.That(output, Does.Contain("Passed: 1").Or.Contain("Passed:     1"), output);
    }

    [Test]
    public async Task InNamespace_TwoServicesOnLoopback_DiscoverEachOther(CancellationToken ct)
    {
        if (Environment.GetEnvironmentVariable(InsideVariable) != "1")
        {
            Assert.Ignore("sends multicast: runs only inside the network namespace the outer test creates");
        }
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var random = new Random(5);
        await using var a = Libp2pHost.Create(PrivateKey.FromRandom(random), [new TcpTransport()], new Libp2pHostSettings(), NullLoggerFactory.Instance, time);
        await using var b = Libp2pHost.Create(PrivateKey.FromRandom(random), [new TcpTransport()], new Libp2pHostSettings(), NullLoggerFactory.Instance, time);
        await a.StartAsync([Multiaddr.Parse("/ip4/127.0.0.1/tcp/0")], ct);
        await b.StartAsync([Multiaddr.Parse("/ip4/127.0.0.1/tcp/0")], ct);
        var options = new MdnsOptions();
        await using var ma = new MdnsService(a, options, NullLoggerFactory.Instance, time, new Random(1));
        await using var mb = new MdnsService(b, options, NullLoggerFactory.Instance, time, new Random(2));
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

    private static async Task<(int Code, string Output)> RunAsync(string file, string[] args, Dictionary<string, string>? env, CancellationToken ct)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }
        foreach (var (k, v) in env ?? [])
        {
            info.Environment[k] = v;
        }
        try
        {
            using var process = Process.Start(info)!;
            var stdout = process.StandardOutput.ReadToEndAsync(ct);
            var stderr = process.StandardError.ReadToEndAsync(ct);
            try
            {
                await process.WaitForExitAsync(ct);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
                throw;
            }
            return (process.ExitCode, await stdout + await stderr);
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return (-1, e.Message);
        }
    }
}
