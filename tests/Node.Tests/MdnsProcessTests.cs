namespace Potluck.Node.Tests;

/// <summary>
/// `potluck run` with no discovery flags, as a user starts it, with real mDNS multicast — but never on this machine's
/// interfaces: the outer test re-runs the inner one inside a fresh user + network namespace (<c>unshare -rn</c>) whose
/// only interface is loopback with multicast switched on. The inner test refuses to run anywhere else.
/// </summary>
public class MdnsProcessTests
{
    private const string InsideVariable = "POTLUCK_NODE_MDNS_NETNS";

    [Test]
    [CancelAfter(300_000)]
    public async Task RealProcesses_InsidePrivateNetworkNamespace_FindEachOtherByMdns_AndAThirdJoinsByBootstrap(CancellationToken ct)
    {
        await Potluck.Tests.NetworkNamespace.RunInsideAsync(typeof(MdnsProcessTests).Assembly.Location, "InNamespace_TwoNodesWithNoFlags", InsideVariable, ct);
    }

    [Test]
    [CancelAfter(200_000)]
    public async Task InNamespace_TwoNodesWithNoFlags_FindEachOther_AndAThirdJoinsThroughTheDht(CancellationToken ct)
    {
        Potluck.Tests.NetworkNamespace.RequireInside(InsideVariable);
        var root = Path.Combine(Path.GetTempPath(), "pl-mdns-" + Guid.NewGuid().ToString("N")[..12]);
        string[] dirs = [root + "-a", root + "-b", root + "-c"];
        try
        {
            // Two nodes, no discovery flags: only mDNS can introduce them. (--listen only avoids the fixed default port clashing.)
            await using var a = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--data-dir", dirs[0]);
            var (idA, addressA) = await ProcessTests.StartedAsync(a, ct);
            await using var b = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--data-dir", dirs[1]);
            var (idB, _) = await ProcessTests.StartedAsync(b, ct);
            await b.WaitForLineAsync(l => l.StartsWith($"Connected to {idA}", StringComparison.Ordinal), ct);
            await a.WaitForLineAsync(l => l.StartsWith($"Connected to {idB}", StringComparison.Ordinal), ct);
            Assert.That(await ProcessTests.PeersAsync(dirs[0], ct), Does.Contain(idB));
            Assert.That(await ProcessTests.PeersAsync(dirs[1], ct), Does.Contain(idA));

            // A third without mDNS, bootstrapping through A only, learns B from the DHT and connects to it.
            await using var c = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--bootstrap", addressA, "--data-dir", dirs[2]);
            var (idC, _) = await ProcessTests.StartedAsync(c, ct);
            await c.WaitForLineAsync(l => l.StartsWith($"Connected to {idA}", StringComparison.Ordinal), ct);
            await c.WaitForLineAsync(l => l.StartsWith($"Connected to {idB}", StringComparison.Ordinal), ct);
            var peersOfC = await ProcessTests.PeersAsync(dirs[2], ct);
            Assert.That(peersOfC, Does.Contain(idA).And.Contain(idB));
            Assert.That(peersOfC, Does.Not.Contain(idC));
        }
        finally
        {
            foreach (var dir in dirs)
            {
                ProcessTests.DeleteDir(dir);
            }
        }
    }
}
