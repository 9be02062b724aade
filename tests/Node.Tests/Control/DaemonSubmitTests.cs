using System.Text;
using System.Text.Json.Nodes;
using Potluck.Node.Cli;
using Potluck.Node.Control;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Control;

/// <summary>`potluck submit` while a node runs on the data directory: the running node takes the task (no second node).</summary>
[CancelAfter(240_000)]
public class DaemonSubmitTests
{
    private string _root = "";

    [SetUp]
    public void SetUp() => _root = Path.Combine(Path.GetTempPath(), "potluck-daemon-submit-" + Guid.NewGuid().ToString("N"));

    [TearDown]
    public void TearDown() => ProcessTests.DeleteDir(_root);

    private static async Task<(int Code, string Out, string Err)> Cli(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await Commands.RunAsync(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Test]
    public async Task Submit_WithADaemonOnTheDataDir_GoesThroughIt_SingleBatchStderrExitCodeAndReasons(CancellationToken ct)
    {
        var daemonDir = Path.Combine(_root, "daemon");
        await using var provider = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--data-dir", Path.Combine(_root, "provider"), "--cores", "1");
        var (providerId, providerAddress) = await ProcessTests.StartedAsync(provider, ct);
        await using var daemon = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--data-dir", daemonDir, "--bootstrap", providerAddress);
        var (daemonId, _) = await ProcessTests.StartedAsync(daemon, ct);
        await daemon.WaitForLineAsync(l => l.StartsWith($"Connected to {providerId}", StringComparison.Ordinal), ct);
        var hashchain = Path.Combine(Potluck.Tests.RepositoryRoot.FullPath, "samples", "hashchain", "hashchain.wasm");
        var seed = Path.Combine(_root, "seed.txt");
        await File.WriteAllTextAsync(seed, "hello", ct);

        // One task: handed to the daemon, which pays from its own ledger; no requester node or directory of its own.
        var (code, output, err) = await Cli("submit", hashchain, "--input", seed, "--data-dir", daemonDir, "--", "100");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output, Is.EqualTo(ComputeCluster.HashChain("hello"u8.ToArray(), 100)));
        Assert.That(err, Does.Contain($"handing the task to the node running on {daemonDir} ({daemonId})").And.Contain($"success on {providerId}"));
        Assert.That(Directory.Exists(Path.Combine(daemonDir, "requester")), Is.False, "no second node");
        await using (var control = await ControlClient.ConnectAsync(daemonDir, null, ct))
        {
            var status = await control.CallAsync(NodeControl.StatusMethod, null, ct);
            Assert.That(status!["credits"]!["spent_total"]!.GetValue<long>(), Is.GreaterThan(0), "the daemon paid");
        }

        // A batch of 6 on the provider's one core, through the daemon: every output right.
        var inputs = Path.Combine(_root, "inputs");
        Directory.CreateDirectory(inputs);
        for (var i = 0; i < 6; i++)
        {
            await File.WriteAllTextAsync(Path.Combine(inputs, $"in{i}"), $"seed {i}", ct);
        }
        (code, output, err) = await Cli("submit", hashchain, "--batch", inputs, "--parallel", "6", "--data-dir", daemonDir, "--json", "--", "50");
        Assert.That(code, Is.EqualTo(0), err);
        var summary = JsonNode.Parse(output)!;
        Assert.That((summary["done"]!.GetValue<int>(), summary["failed"]!.GetValue<int>()), Is.EqualTo((6, 0)), err);
        for (var i = 0; i < 6; i++)
        {
            Assert.That(await File.ReadAllTextAsync(Path.Combine(inputs + ".out", $"in{i}"), ct), Is.EqualTo(ComputeCluster.HashChain(Encoding.UTF8.GetBytes($"seed {i}"), 50)));
        }

        // The task's stderr and exit code reach the submitter through the daemon too.
        var exitcode = Path.Combine(Potluck.Tests.RepositoryRoot.FullPath, "samples", "testmods", "exitcode.wasm");
        (code, output, err) = await Cli("submit", exitcode, "--input", seed, "--data-dir", daemonDir, "--", "5");
        Assert.That(code, Is.EqualTo(5), err);
        Assert.That(output, Is.EqualTo("hello"));
        Assert.That(err, Does.Contain("argc=2\n").And.Contain("exited with code 5"));

        // No provider fits: the reason is named, in the message and in --json.
        (code, output, err) = await Cli("submit", hashchain, "--input", seed, "--data-dir", daemonDir, "--max-price", "0", "--json", "--", "10");
        Assert.That(code, Is.EqualTo(1), err);
        var failure = JsonNode.Parse(output)!;
        Assert.That(failure["reasons"]!["too expensive"]!.GetValue<int>(), Is.EqualTo(1), output);
        Assert.That(failure["error"]!.GetValue<string>(), Does.Contain("too expensive").And.Not.Contain("excluded"));
        Assert.That(err, Does.Contain("no provider fits"));
    }
}
