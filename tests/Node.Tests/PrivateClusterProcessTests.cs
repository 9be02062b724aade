using System.Text.Json.Nodes;
using Potluck.Node.Cli;

namespace Potluck.Node.Tests;

/// <summary>Three real `potluck run` processes on loopback as a private cluster (one swarm key), and a batch across them.</summary>
[CancelAfter(240_000)]
public class PrivateClusterProcessTests
{
    private string _root = "";

    [SetUp]
    public void SetUp() => _root = Path.Combine(Path.GetTempPath(), "potluck-cluster-" + Guid.NewGuid().ToString("N"));

    [TearDown]
    public void TearDown() => ProcessTests.DeleteDir(_root);

    private static async Task<JsonObject> JsonAsync(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await Commands.RunAsync([.. args, "--json"], stdout, stderr);
        Assert.That(code, Is.EqualTo(0), stderr.ToString());
        return JsonNode.Parse(stdout.ToString())!.AsObject();
    }

    [Test]
    public async Task ThreeNodes_WithOneSwarmKey_RunABatch_EveryOutputRight_LedgersAgree_AndAResumeRunsNothingTwice(CancellationToken ct)
    {
        Directory.CreateDirectory(_root);
        var key = Path.Combine(_root, "swarm.key");
        await using (var generate = PotluckProcess.Start("swarm-key", "generate", "--out", key))
        {
            Assert.That((await generate.WaitForExitAsync(ct)).Code, Is.EqualTo(0), generate.Stderr);
        }
        if (!OperatingSystem.IsWindows())
        {
            Assert.That(File.GetUnixFileMode(key), Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite));
        }

        var dirs = Enumerable.Range(0, 3).Select(i => Path.Combine(_root, $"node{i}")).ToArray();
        await using var first = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--swarm-key", key, "--cores", "1", "--data-dir", dirs[0]);
        var (id0, address0) = await ProcessTests.StartedAsync(first, ct);
        await using var second = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--swarm-key", key, "--cores", "1",
            "--bootstrap", address0, "--data-dir", dirs[1]);
        var (id1, _) = await ProcessTests.StartedAsync(second, ct);
        await using var third = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--swarm-key", key, "--cores", "1",
            "--bootstrap", address0, "--data-dir", dirs[2]);
        var (id2, _) = await ProcessTests.StartedAsync(third, ct);
        await first.WaitForLineAsync(l => l.StartsWith($"Connected to {id2}", StringComparison.Ordinal), ct);

        // A stranger without the key is refused, and told why.
        await using (var stranger = PotluckProcess.Start("ping", address0, "--count", "1"))
        {
            var (code, _) = await stranger.WaitForExitAsync(ct);
            Assert.That(code, Is.EqualTo(1));
            Assert.That(stranger.Stderr, Does.Contain("it is likely a private network; give its swarm key with --swarm-key"), stranger.Stderr);
        }


        var inputs = Path.Combine(_root, "inputs");
        Directory.CreateDirectory(inputs);
        for (var i = 0; i < 8; i++)
        {
            await File.WriteAllTextAsync(Path.Combine(inputs, $"seed{i}.txt"), $"seed {i}", ct);
        }
        var module = Path.Combine(Potluck.Tests.RepositoryRoot.FullPath, "samples", "hashchain", "hashchain.wasm");
        var requester = Path.Combine(_root, "requester");
        var outDir = Path.Combine(_root, "outputs");
        string[] submit = ["submit", module, "--batch", inputs, "--out", outDir, "--bootstrap", address0, "--no-mdns", "--swarm-key", key,
            "--data-dir", requester, "--parallel", "4", "--replicas", "1", "--", "2000"];
        await using (var batch = PotluckProcess.Start(submit))
        {
            var (code, _) = await batch.WaitForExitAsync(ct);
            Assert.That(code, Is.EqualTo(0), batch.Stderr);
            Assert.That(batch.Stderr, Does.Contain("batch of 8: 8 done now, 0 done before, 0 failed"));
        }
        for (var i = 0; i < 8; i++)
        {
            Assert.That(await File.ReadAllTextAsync(Path.Combine(outDir, $"seed{i}.txt"), ct),
                Is.EqualTo(Compute.ComputeCluster.HashChain(System.Text.Encoding.UTF8.GetBytes($"seed {i}"), 2000)), $"seed{i}");
        }

        // Run again: everything is done, nothing is submitted or paid twice.
        await using (var again = PotluckProcess.Start(submit))
        {
            var (code, _) = await again.WaitForExitAsync(ct);
            Assert.That(code, Is.EqualTo(0), again.Stderr);
            Assert.That(again.Stderr, Does.Contain("batch of 8: 0 done now, 8 done before, 0 failed"));
        }

        var spent = await JsonAsync("ledger", "--data-dir", requester, "--count", "100");
        var paid = spent["entries"]!.AsArray().Where(e => e!["kind"]!.GetValue<string>() == "spent").Sum(e => -e!["amount"]!.GetValue<long>());
        Assert.That(spent["entries"]!.AsArray().Count(e => e!["kind"]!.GetValue<string>() == "spent"), Is.EqualTo(8), "one payment per input");
        long earned = 0;
        var providersPaid = 0;
        foreach (var dir in dirs)
        {
            var ledger = await JsonAsync("ledger", "--data-dir", dir, "--count", "100");
            var mine = ledger["entries"]!.AsArray().Where(e => e!["kind"]!.GetValue<string>() == "earned").Sum(e => e!["amount"]!.GetValue<long>());
            earned += mine;
            providersPaid += mine > 0 ? 1 : 0;
        }
        Assert.That(paid, Is.GreaterThan(0));
        Assert.That(earned, Is.EqualTo(paid), "what the requester paid is what the providers earned");
        Assert.That(providersPaid, Is.GreaterThanOrEqualTo(2), "the batch spread over more than one provider");
        Assert.That(first.Stderr, Does.Contain("did not speak libp2p: likely a node without this node's swarm key, or with another one"),
            "the listener says what the stranger's failed handshake likely was");
        _ = (id1, id2);
    }
}
