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
        await using var node = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--data-dir", _dataDir);
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
        await using var first = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--data-dir", _dataDir);
        var line = await first.WaitForLineAsync(l => l.StartsWith("Listening on ", StringComparison.Ordinal), ct);
        var bound = line["Listening on ".Length..line.IndexOf("/p2p/", StringComparison.Ordinal)];

        await using var second = PotluckProcess.Start("run", "--listen", bound, "--data-dir", _dataDir + "-2");
        var (code, _) = await second.WaitForExitAsync(ct);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(second.Stderr, Does.Contain("already in use").And.Contain("--listen"));
        Directory.Delete(_dataDir + "-2", true);
    }
}
