using System.Text.Json.Nodes;
using Potluck.Node.Cli;

namespace Potluck.Node.Tests.Cli;

/// <summary>`--json` on ping, perf and swarm-key generate: one JSON object on stdout, nothing else there.</summary>
[CancelAfter(120_000)]
public class JsonCommandTests
{
    private static async Task<(int Code, string Out, string Err)> Cli(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await Commands.RunAsync(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Test]
    public async Task SwarmKeyGenerate_Json_PrintsTheKey_OrOnlyWhereItWasWritten()
    {
        var (code, output, err) = await Cli("swarm-key", "generate", "--json");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(JsonNode.Parse(output)!["swarm_key"]!.GetValue<string>(), Does.StartWith("/key/swarm/psk/1.0.0/"));

        var dir = Path.Combine(Path.GetTempPath(), "potluck-json-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var path = Path.Combine(dir, "swarm.key");
            (code, output, err) = await Cli("swarm-key", "generate", "--out", path, "--json");
            Assert.That(code, Is.EqualTo(0), err);
            var written = JsonNode.Parse(output)!.AsObject();
            Assert.That(written["written"]!.GetValue<string>(), Is.EqualTo(path));
            Assert.That(written.ContainsKey("swarm_key"), Is.False, "the key itself is not printed when it went to a file");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public async Task PingAndPerf_Json_AgainstARunningNode(CancellationToken ct)
    {
        var dataDir = Path.Combine(Path.GetTempPath(), "potluck-json-node-" + Guid.NewGuid().ToString("N"));
        try
        {
            await using var node = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--data-dir", dataDir, "--no-provide");
            var (id, address) = await ProcessTests.StartedAsync(node, ct);

            var (code, output, err) = await Cli("ping", address, "--count", "3", "--json");
            Assert.That(code, Is.EqualTo(0), err);
            var ping = JsonNode.Parse(output)!;
            Assert.That(ping["peer_id"]!.GetValue<string>(), Is.EqualTo(id));
            Assert.That(ping["rtt_ms"]!.AsArray(), Has.Count.EqualTo(3));
            Assert.That(ping["min_ms"]!.GetValue<double>(), Is.LessThanOrEqualTo(ping["max_ms"]!.GetValue<double>()));

            (code, output, err) = await Cli("perf", address, "--upload", "1MiB", "--download", "1MiB", "--json");
            Assert.That(code, Is.EqualTo(0), err);
            var perf = JsonNode.Parse(output)!;
            Assert.That(perf["upload"]!["bytes"]!.GetValue<long>(), Is.EqualTo(1L << 20));
            Assert.That(perf["download"]!["bits_per_second"]!.GetValue<double>(), Is.GreaterThan(0));
        }
        finally
        {
            ProcessTests.DeleteDir(dataDir);
        }
    }
}
