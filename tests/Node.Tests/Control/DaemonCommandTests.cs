using System.Text.Json.Nodes;
using Potluck.Node.Cli;
using Potluck.Node.Control;

namespace Potluck.Node.Tests.Control;

/// <summary>Every operator command against a real `potluck run` process, as text and as --json.</summary>
[CancelAfter(180_000)]
public class DaemonCommandTests
{
    private string _dataDir = "";

    [SetUp]
    public void SetUp() => _dataDir = Path.Combine(Path.GetTempPath(), "potluck-daemon-" + Guid.NewGuid().ToString("N"));

    [TearDown]
    public void TearDown() => ProcessTests.DeleteDir(_dataDir);

    private async Task<(int Code, string Out, string Err)> Cli(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await Commands.RunAsync([.. args, "--data-dir", _dataDir], stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    private async Task<JsonObject> Json(params string[] args)
    {
        var (code, output, err) = await Cli([.. args, "--json"]);
        Assert.That(code, Is.EqualTo(0), $"{string.Join(' ', args)}: {err}");
        return JsonNode.Parse(output)!.AsObject();
    }

    [Test]
    public async Task EveryCommand_AgainstTheDaemon_TextAndJson_ConfigSetAppliesLive(CancellationToken ct)
    {
        await using var node = PotluckProcess.Start("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--data-dir", _dataDir, "--cores", "1");
        var (id, _) = await ProcessTests.StartedAsync(node, ct);

        var (code, text, err) = await Cli("status");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(text, Does.Contain($"Peer ID:      {id}").And.Contain("Uptime:").And.Contain("Reachability: loopback only")
            .And.Contain("Offering:     1 cores").And.Contain("State:        working").And.Contain("Balance:      0.000000 credits").And.Contain("No work:      no peers connected")
            .And.Contain("Disk:         0 B used of 1.5 GiB for others' modules"));
        var status = await Json("status");
        Assert.That(status["peer_id"]!.GetValue<string>(), Is.EqualTo(id));
        Assert.That(status["provider"]!["state"]!.GetValue<string>(), Is.EqualTo("working"));
        Assert.That(status["credits"]!["balance"]!.GetValue<long>(), Is.EqualTo(0), "no credit is minted: a new node starts at zero");

        await using (var client = await ControlClient.ConnectAsync(_dataDir, null, ct))
        {
            var metrics = await client.MetricsAsync(ct);
            Assert.That(metrics, Does.Contain("potluck_provider_working 1").And.Contain("potluck_provider_cores_offered 1")
                .And.Contain("potluck_ledger_balance_microcredits 0").And.Contain("process_cpu_seconds_total")
                .And.Contain("potluck_provider_disk_bytes_used 0").And.Contain("potluck_provider_disk_limit_bytes 1610612736"));
        }
        await using (var wrong = ControlClient.Create(ControlFiles.ReadEndpoint(_dataDir), "not-the-token-at-all", _dataDir))
        {
            Assert.That(Assert.ThrowsAsync<IOException>(() => wrong.MetricsAsync(ct))!.Message, Does.Contain("401"));
        }

        (code, text, err) = await Cli("peers");
        Assert.That((code, text), Is.EqualTo((0, "No connected peers." + Environment.NewLine)), err);
        Assert.That((await Json("peers"))["peers"]!.AsArray(), Is.Empty);
        (code, text, err) = await Cli("leases");
        Assert.That((code, text), Is.EqualTo((0, "No leases held." + Environment.NewLine)), err);
        Assert.That((await Json("leases"))["providing"]!.GetValue<bool>(), Is.True);
        (code, text, err) = await Cli("ledger");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(text, Does.Contain($"Node:      {id}").And.Contain("Balance:   0.000000 credits"));
        var ledger = await Json("ledger");
        Assert.That(ledger["balance"]!.GetValue<long>(), Is.Zero);
        Assert.That(ledger["unit"]!.GetValue<string>(), Is.EqualTo("micro-credits"));
        Assert.That((await Json("id"))["peer_id"]!.GetValue<string>(), Is.EqualTo(id));
        var versionOut = new StringWriter();
        Assert.That(await Commands.RunAsync(["version", "--json"], versionOut, new StringWriter()), Is.EqualTo(0));
        Assert.That(JsonNode.Parse(versionOut.ToString())!["version"]!.GetValue<string>(), Does.StartWith("potluck/"));

        (code, text, err) = await Cli("config", "list");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(text, Does.Contain("preferences:onlyWhenIdle").And.Contain("compute:provider:cores").And.Contain("preferences:idleCpuPercent")
            .And.Contain("compute:provider:diskBytes"));
        var get = await Json("config", "get", "preferences:idleCpuPercent");
        Assert.That(get["settings"]![0]!["value"]!.GetValue<string>(), Is.EqualTo("25"));

        // Changed while it runs: the node pauses at once, and the file keeps it for the next start.
        (code, text, err) = await Cli("config", "set", "preferences:hours:daily", "off");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(text, Does.Contain("preferences:hours:daily").And.Contain("Applied now"));
        status = await Json("status");
        Assert.That(status["provider"]!["state"]!.GetValue<string>(), Is.EqualTo("outside-hours"));
        Assert.That(status["why_no_work"]!.GetValue<string>(), Does.Contain("outside its hours"));
        Assert.That(File.ReadAllText(Path.Combine(_dataDir, "potluck.json")), Does.Contain("\"daily\": \"off\""));
        var cores = await Json("config", "set", "compute:provider:cores", "1");
        Assert.That(cores["applied"]!.GetValue<string>(), Is.EqualTo("live"));
        var disk = await Json("config", "set", "compute:provider:diskBytes", "1073741824");
        Assert.That(disk["applied"]!.GetValue<string>(), Is.EqualTo("live"));
        Assert.That((await Json("status"))["provider"]!["disk_bytes_limit"]!.GetValue<long>(), Is.EqualTo(1L << 30));
        var restart = await Json("config", "set", "compute:provider:pricePerMegaFuel", "12");
        Assert.That(restart["applied"]!.GetValue<string>(), Is.EqualTo("restart"));

        // Refused with what to fix; nothing written.
        (code, _, err) = await Cli("config", "set", "preferences:idleCpuPercent", "250");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("'preferences:idleCpuPercent' is 250; it must be above 0 and at most 100"));
        (code, _, err) = await Cli("config", "set", "preferences:idleCpuPercnt", "20");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("did you mean 'preferences:idleCpuPercent'"));
        (code, _, err) = await Cli("config", "set", "compute:provider:cores", "100000");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("offer at most"));
        (code, _, err) = await Cli("config", "get", "nope:nothing");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("'nope:nothing' is not a setting"));
        Assert.That(File.ReadAllText(Path.Combine(_dataDir, "potluck.json")), Does.Not.Contain("250").And.Not.Contain("100000"));

        Assert.That(await node.StopAsync(ct), Is.EqualTo(0));
        Assert.That(File.Exists(ControlFiles.EndpointPath(_dataDir)), Is.False);
        // With no node running, config works on the file, and the setting made live above is still there.
        var kept = await Json("config", "get", "preferences:hours:daily");
        Assert.That(kept["settings"]![0]!["value"]!.GetValue<string>(), Is.EqualTo("off"));
        (code, _, err) = await Cli("status");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.Contain("no node is running"));
    }
}
