namespace Potluck.Node.Tests;

/// <summary>The real executable on loopback, as a user runs it.</summary>
[CancelAfter(120_000)]
public class ProcessTests
{
    private string _dataDir = "";

    [SetUp]
    public void SetUp() => _dataDir = Path.Combine(Path.GetTempPath(), "potluck-proc-" + Guid.NewGuid().ToString("N"));

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(_dataDir))
        {
            Directory.Delete(_dataDir, true);
        }
    }

    [Test]
    public async Task Run_PrintsFullListenAddress_AndPingAndPerfReachIt(CancellationToken ct)
    {
        await using var node = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--data-dir", _dataDir);
        var line = await node.WaitForLineAsync(l => l.StartsWith("Listening on ", StringComparison.Ordinal), ct);
        var address = line["Listening on ".Length..];
        Assert.That(address, Does.Match(@"^/ip4/127\.0\.0\.1/tcp/\d+/p2p/12D3KooW\w+$"));

        await using var ping = PotluckProcess.Start("ping", address, "--count", "2");
        var (pingCode, pingOut) = await ping.WaitForExitAsync(ct);
        Assert.That(pingCode, Is.EqualTo(0), ping.Stderr);
        Assert.That(pingOut, Does.Contain("seq=1 time=").And.Contain("seq=2 time=").And.Contain("2 pings: min/avg/max"));

        await using var perf = PotluckProcess.Start("perf", address, "--upload", "4MiB", "--download", "4MiB");
        var (perfCode, perfOut) = await perf.WaitForExitAsync(ct);
        Assert.That(perfCode, Is.EqualTo(0), perf.Stderr);
        Assert.That(perfOut, Does.Contain("upload:   4 MiB in").And.Contain("download: 4 MiB in"));
    }

    [Test]
    public async Task RunTwice_SecondBootstrapsThroughFirst_PeersOnEachShowsTheOther(CancellationToken ct)
    {
        var dirA = _dataDir + "-a";
        var dirB = _dataDir + "-b";
        try
        {
            await using var a = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--data-dir", dirA);
            var (idA, addressA) = await StartedAsync(a, ct);
            await using var b = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--bootstrap", addressA, "--data-dir", dirB);
            var (idB, _) = await StartedAsync(b, ct);
            await b.WaitForLineAsync(l => l.StartsWith($"Connected to {idA}", StringComparison.Ordinal), ct);
            await a.WaitForLineAsync(l => l.StartsWith($"Connected to {idB}", StringComparison.Ordinal), ct);

            var peersOfB = await PeersAsync(dirB, ct);
            Assert.That(peersOfB, Does.Contain(idA).And.Contain("outbound").And.Contain("1 peer"));
            Assert.That(peersOfB, Does.Match(@"\d+(\.\d+)? ms"), "latency is shown");
            var peersOfA = await PeersAsync(dirA, ct);
            Assert.That(peersOfA, Does.Contain(idB).And.Contain("inbound").And.Contain("potluck/"));
        }
        finally
        {
            DeleteDir(dirA);
            DeleteDir(dirB);
        }
    }

    [Test]
    public async Task Peers_WithNoNodeRunning_SaysHowToStartOne(CancellationToken ct)
    {
        await using var peers = PotluckProcess.Start("peers", "--data-dir", _dataDir);
        var (code, _) = await peers.WaitForExitAsync(ct);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(peers.Stderr, Does.Contain($"no node is running with data dir {_dataDir}; start one with potluck run"));
    }

    [Test]
    public async Task Run_Restarted_RedialsThePeerItKnew(CancellationToken ct)
    {
        var dirA = _dataDir + "-a";
        var dirB = _dataDir + "-b";
        try
        {
            await using var a = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--data-dir", dirA);
            var (idA, addressA) = await StartedAsync(a, ct);
            string idB;
            await using (var b = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--bootstrap", addressA, "--data-dir", dirB))
            {
                (idB, _) = await StartedAsync(b, ct);
                await b.WaitForLineAsync(l => l.StartsWith($"Connected to {idA}", StringComparison.Ordinal), ct);
                Assert.That(await b.StopAsync(ct), Is.EqualTo(0), "SIGTERM stops the node cleanly (and it saves its peers)");
            }
            // No --bootstrap this time: the peer store in the data dir is enough.
            await using var again = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--data-dir", dirB);
            var (idAgain, _) = await StartedAsync(again, ct);
            Assert.That(idAgain, Is.EqualTo(idB));
            await again.WaitForLineAsync(l => l.StartsWith($"Connected to {idA}", StringComparison.Ordinal), ct);
        }
        finally
        {
            DeleteDir(dirA);
            DeleteDir(dirB);
        }
    }

    /// <summary>Waits for the peer id and first listen address a starting node prints.</summary>
    internal static async Task<(string Id, string Address)> StartedAsync(PotluckProcess node, CancellationToken ct)
    {
        var id = (await node.WaitForLineAsync(l => l.StartsWith("Peer id: ", StringComparison.Ordinal), ct))["Peer id: ".Length..];
        var address = (await node.WaitForLineAsync(l => l.StartsWith("Listening on ", StringComparison.Ordinal), ct))["Listening on ".Length..];
        await node.WaitForLineAsync(l => l.StartsWith("Control API: ", StringComparison.Ordinal), ct);
        return (id, address);
    }

    internal static async Task<string> PeersAsync(string dataDir, CancellationToken ct)
    {
        await using var peers = PotluckProcess.Start("peers", "--data-dir", dataDir);
        var (code, output) = await peers.WaitForExitAsync(ct);
        Assert.That(code, Is.EqualTo(0), peers.Stderr);
        return output;
    }

    internal static void DeleteDir(string dir)
    {
        if (Directory.Exists(dir))
        {
            Directory.Delete(dir, true);
        }
    }

    [Test]
    public async Task Ping_NobodyListening_FailsWithAClearMessage(CancellationToken ct)
    {
        await using var ping = PotluckProcess.Start("ping", "/ip4/127.0.0.1/tcp/1", "--count", "1");
        var (code, _) = await ping.WaitForExitAsync(ct);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(ping.Stderr, Does.Contain("cannot reach /ip4/127.0.0.1/tcp/1"));
    }

    [Test]
    public async Task Run_OnAPortInUse_SaysToPickAnother(CancellationToken ct)
    {
        await using var first = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--data-dir", _dataDir);
        var line = await first.WaitForLineAsync(l => l.StartsWith("Listening on ", StringComparison.Ordinal), ct);
        var bound = line["Listening on ".Length..line.IndexOf("/p2p/", StringComparison.Ordinal)];

        await using var second = PotluckProcess.Start("run", "--listen", bound, "--no-mdns", "--data-dir", _dataDir + "-2");
        var (code, _) = await second.WaitForExitAsync(ct);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(second.Stderr, Does.Contain("already in use").And.Contain("--listen"));
        Directory.Delete(_dataDir + "-2", true);
    }

    [Test]
    public async Task Submit_RunsASampleOnAnotherNode_PrintsTheRightOutput_AndBothLedgersAgree(CancellationToken ct)
    {
        var requesterDir = _dataDir + "-requester";
        var seedFile = Path.Combine(Path.GetTempPath(), "potluck-seed-" + Guid.NewGuid().ToString("N"));
        try
        {
            await File.WriteAllTextAsync(seedFile, "hello", ct);
            await using var provider = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--data-dir", _dataDir);
            var line = await provider.WaitForLineAsync(l => l.StartsWith("Listening on ", StringComparison.Ordinal), ct);
            var address = line["Listening on ".Length..];
            var module = Path.Combine(RepoRoot(), "samples", "hashchain", "hashchain.wasm");

            await using var submit = PotluckProcess.Start("submit", module, "--input", seedFile, "--bootstrap", address, "--no-mdns",
                "--data-dir", requesterDir, "--", "1000");
            var (code, output) = await submit.WaitForExitAsync(ct);

            Assert.That(code, Is.EqualTo(0), submit.Stderr);
            Assert.That(output, Is.EqualTo(Compute.ComputeCluster.HashChain("hello"u8.ToArray(), 1000)));
            Assert.That(submit.Stderr, Does.Contain("success on " + address[(address.LastIndexOf('/') + 1)..]).And.Contain("cost"));

            await using var requesterLedger = PotluckProcess.Start("ledger", "--data-dir", requesterDir);
            var (_, spent) = await requesterLedger.WaitForExitAsync(ct);
            await using var providerLedger = PotluckProcess.Start("ledger", "--data-dir", _dataDir);
            var (_, earned) = await providerLedger.WaitForExitAsync(ct);
            var paid = System.Text.RegularExpressions.Regex.Match(spent, @"Spent\s+-(\d+\.\d+)").Groups[1].Value;
            Assert.That(paid, Is.Not.Empty, spent);
            Assert.That(earned, Does.Match(@"Earned\s+" + System.Text.RegularExpressions.Regex.Escape(paid)));
        }
        finally
        {
            File.Delete(seedFile);
            if (Directory.Exists(requesterDir))
            {
                Directory.Delete(requesterDir, true);
            }
        }
    }

    [Test]
    public async Task Run_CtrlC_StopsTheNodeCleanly(CancellationToken ct)
    {
        if (SignalIgnored(2))
        {
            Assert.Ignore("SIGINT is ignored by this test process (started in the background), so its children cannot receive it either");
        }
        await using var node = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--data-dir", _dataDir);
        await StartedAsync(node, ct);
        Assert.That(await node.StopAsync(ct, "INT"), Is.EqualTo(0), node.Transcript);
        Assert.That(node.Stderr, Does.Not.Contain("Exception"));
    }

    [Test]
    public async Task Ping_Terminated_WhileConnecting_SaysCancelled(CancellationToken ct)
    {
        // A listener that accepts and then says nothing: the ping is stuck in its handshake until it is told to stop.
        using var silent = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        silent.Start();
        var port = ((System.Net.IPEndPoint)silent.LocalEndpoint).Port;
        await using var ping = PotluckProcess.Start("ping", $"/ip4/127.0.0.1/tcp/{port}/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp");
        using var accepted = await silent.AcceptTcpClientAsync(ct);

        var code = await ping.StopAsync(ct);

        Assert.That(code, Is.EqualTo(1), ping.Transcript);
        Assert.That(ping.Stderr, Does.Contain("potluck ping: cancelled"));
    }

    /// <summary>Whether this process ignores the signal (Linux: /proc/self/status); ignored signals stay ignored in children.</summary>
    private static bool SignalIgnored(int signal)
    {
        const string status = "/proc/self/status";
        if (!File.Exists(status))
        {
            return false;
        }
        var line = File.ReadLines(status).FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
        return line is not null && (Convert.ToUInt64(line["SigIgn:".Length..].Trim(), 16) & (1UL << (signal - 1))) != 0;
    }

    private static string RepoRoot() => Potluck.Tests.RepositoryRoot.FullPath;
}
