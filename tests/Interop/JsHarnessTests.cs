using System.Security.Cryptography;

namespace Potluck.Interop.Tests;

/// <summary>
/// Proves the js test peer and its C# driver work, js ↔ js over loopback, before any Potluck code is
/// put against them. Needs Node 20+ and `npm ci --prefix tests/Interop/js`.
/// </summary>
[TestFixture]
[Category("Interop")]
[NonParallelizable]
public sealed class JsHarnessTests
{
    private const long MiB = 1024 * 1024;

    private JsPeer _a = null!;
    private JsPeer _b = null!;

    [OneTimeSetUp]
    public async Task StartPair()
    {
        var started = await Task.WhenAll(JsPeer.StartAsync(), JsPeer.StartAsync());
        (_a, _b) = (started[0], started[1]);
        await _a.DialAsync(_b.Addr);
    }

    [OneTimeTearDown]
    public async Task StopPair()
    {
        if (_a is not null)
        {
            await _a.DisposeAsync();
        }

        if (_b is not null)
        {
            await _b.DisposeAsync();
        }
    }

    [Test]
    public void Start_ReportsPeerIdAndLoopbackAddressEndingInPeerId()
    {
        Assert.That(_a.PeerId, Does.StartWith("12D3KooW"), "Ed25519 peer ids print as 12D3KooW…");
        Assert.That(_a.Addr, Does.StartWith("/ip4/127.0.0.1/tcp/").And.EndWith($"/p2p/{_a.PeerId}"));
        Assert.That(_a.PeerId, Is.Not.EqualTo(_b.PeerId));
    }

    [Test]
    public async Task Start_WithSeed_GivesTheSamePeerIdEveryTime()
    {
        var seed = Enumerable.Range(1, 32).Select(i => (byte)i).ToArray();
        string first;
        await using (var p = await JsPeer.StartAsync(new JsPeerOptions { Seed = seed }))
        {
            first = p.PeerId;
        }

        await using var again = await JsPeer.StartAsync(new JsPeerOptions { Seed = seed });
        Assert.That(again.PeerId, Is.EqualTo(first));
    }

    [Test]
    public async Task Ping_ConnectedPeer_ReturnsRoundTripTime()
    {
        var rtt = await _a.PingAsync(_b.PeerId);
        Assert.That(rtt, Is.GreaterThanOrEqualTo(TimeSpan.Zero).And.LessThan(TimeSpan.FromSeconds(5)));
    }

    [Test]
    public async Task Peers_AfterDial_ListsTheRemoteOnBothSides()
    {
        var fromA = await _a.PeersAsync();
        var fromB = await _b.PeersAsync();
        Assert.That(fromA.Select(c => c.Peer), Does.Contain(_b.PeerId));
        Assert.That(fromB.Select(c => c.Peer), Does.Contain(_a.PeerId));
        Assert.That(fromA.First(c => c.Peer == _b.PeerId).RemoteAddr, Does.StartWith("/ip4/127.0.0.1/tcp/"));
    }

    [Test]
    public async Task Identify_SeesRemoteProtocolsAgentAndAddresses()
    {
        var id = await _a.IdentifyAsync(_b.PeerId);
        Assert.Multiple(() =>
        {
            Assert.That(id.Peer, Is.EqualTo(_b.PeerId));
            Assert.That(id.Protocols, Is.SupersetOf(new[]
            {
                "/perf/1.0.0", "/potluck/echo/1.0.0", "/ipfs/ping/1.0.0", "/ipfs/id/1.0.0",
            }));
            Assert.That(id.AgentVersion, Does.StartWith("js-libp2p/"));
            Assert.That(id.ProtocolVersion, Is.Not.Null.And.Not.Empty);
            Assert.That(id.PublicKeyPresent, Is.True);
            Assert.That(id.ListenAddrs.Select(a => a.Split("/p2p/")[0]), Does.Contain(_b.Addr.Split("/p2p/")[0]));
        });
    }

    [Test]
    public async Task Identify_RightAfterDial_ReportsTheConnectionsOwnIdentifyRun()
    {
        await using var c = await JsPeer.StartAsync();
        await _a.DialAsync(c.Addr);
        var id = await _a.IdentifyAsync(c.PeerId);
        Assert.That(id.Protocols, Does.Contain("/perf/1.0.0"));
    }

    [Test]
    public async Task Echo_TenMiB_ComesBackIdentical()
    {
        var r = await _a.EchoAsync(_b.PeerId, 10 * MiB);
        Assert.Multiple(() =>
        {
            Assert.That(r.Sent, Is.EqualTo(10 * MiB));
            Assert.That(r.Received, Is.EqualTo(10 * MiB));
            Assert.That(r.Matched, Is.True);
        });
    }

    [Test]
    public async Task Echo_ZeroBytes_EndsCleanly()
    {
        var r = await _a.EchoAsync(_b.PeerId, 0);
        Assert.That((r.Received, r.Matched), Is.EqualTo((0L, true)));
    }

    [Test]
    public async Task Perf_SixtyFourMiBEachWay_TransfersExactCounts()
    {
        var r = await _a.PerfAsync(_b.Addr, 64 * MiB, 64 * MiB);
        TestContext.Out.WriteLine($"js↔js perf 64 MiB: up {r.UploadMBps:F1} MB/s, down {r.DownloadMBps:F1} MB/s");
        Assert.Multiple(() =>
        {
            Assert.That(r.UploadBytes, Is.EqualTo(64 * MiB));
            Assert.That(r.DownloadBytes, Is.EqualTo(64 * MiB));
            Assert.That(r.Upload, Is.GreaterThan(TimeSpan.Zero));
            Assert.That(r.Download, Is.GreaterThan(TimeSpan.Zero));
        });
    }

    [Test]
    public async Task Perf_DownloadOnly_ReceivesRequestedBytes()
    {
        var r = await _b.PerfAsync(_a.PeerId, 0, 3 * MiB + 7);
        Assert.That((r.UploadBytes, r.DownloadBytes), Is.EqualTo((0L, 3 * MiB + 7)));
    }

    [Test]
    public async Task Dial_NothingListening_FailsWithoutKillingThePeer()
    {
        // Bind and release a port so nothing listens on it. No /p2p/ part: js would reuse its open
        // connection to a peer id it is already connected to, whatever the address says.
        var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        var port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();

        Assert.That(async () => await _a.DialAsync($"/ip4/127.0.0.1/tcp/{port}"),
            Throws.TypeOf<JsPeerCommandException>());
        Assert.That(_a.HasExited, Is.False);
        Assert.That(await _a.PingAsync(_b.PeerId), Is.LessThan(TimeSpan.FromSeconds(5)));
    }

    [Test]
    public async Task Pnet_SameSwarmKey_Connects()
    {
        var key = WriteKey(RandomNumberGenerator.GetBytes(32));
        try
        {
            await using var x = await JsPeer.StartAsync(new JsPeerOptions { SwarmKeyPath = key });
            await using var y = await JsPeer.StartAsync(new JsPeerOptions { SwarmKeyPath = key });
            var dial = await x.DialAsync(y.Addr);
            Assert.That(dial.Peer, Is.EqualTo(y.PeerId));
            Assert.That((await x.EchoAsync(y.PeerId, 1 * MiB)).Matched, Is.True);
        }
        finally
        {
            File.Delete(key);
        }
    }

    [Test]
    public async Task Pnet_DifferentSwarmKeys_DialFailsAndBothPeersSurvive()
    {
        var keyX = WriteKey(RandomNumberGenerator.GetBytes(32));
        var keyY = WriteKey(RandomNumberGenerator.GetBytes(32));
        try
        {
            await using var x = await JsPeer.StartAsync(new JsPeerOptions { SwarmKeyPath = keyX });
            await using var y = await JsPeer.StartAsync(new JsPeerOptions { SwarmKeyPath = keyY });
            // Garbage after the pnet nonces either resets the connection at once or leaves Noise
            // waiting for a length that never arrives; a short dial timeout bounds the second case.
            var error = Assert.ThrowsAsync<JsPeerCommandException>(async () => await x.DialAsync(y.Addr, timeout: TimeSpan.FromSeconds(3)));
            TestContext.Out.WriteLine(error?.Message);
            Assert.Multiple(async () =>
            {
                Assert.That(x.HasExited || y.HasExited, Is.False, "a failed pnet handshake must not kill either process");
                Assert.That(await x.PeersAsync(), Is.Empty);
                Assert.That(await y.PeersAsync(), Is.Empty);
            });
        }
        finally
        {
            File.Delete(keyX);
            File.Delete(keyY);
        }
    }

    private static string WriteKey(byte[] key)
    {
        var path = Path.Combine(Path.GetTempPath(), $"potluck-swarm-{Guid.NewGuid():N}.key");
        JsPeer.WriteSwarmKey(path, key);
        return path;
    }
}
