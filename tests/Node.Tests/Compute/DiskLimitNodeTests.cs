using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Node.Cli;
using Potluck.Node.Control;
using Potluck.Node.Tests.Adversarial;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Requesting;

namespace Potluck.Node.Tests.Compute;

/// <summary>
/// compute:provider:diskBytes on whole nodes (simulated network, virtual time, real files): a module larger than the limit
/// is refused and the requester is told "disk full"; the limit is shown by status and /metrics, set live by `config set`,
/// and what is on disk is counted again after a restart.
/// </summary>
public class DiskLimitNodeTests
{
    /// <summary>
    /// <paramref name="module"/> with a custom section of <paramref name="padding"/> bytes appended: still a valid module
    /// that runs as before, but larger, and a different one for each <paramref name="tag"/>.
    /// </summary>
    private static byte[] Padded(byte[] module, int padding, string tag)
    {
        var name = System.Text.Encoding.ASCII.GetBytes(tag);
        var body = new List<byte>();
        body.AddRange(Leb(name.Length));
        body.AddRange(name);
        body.AddRange(new byte[padding]);
        return [.. module, 0, .. Leb(body.Count), .. body];
    }

    private static IEnumerable<byte> Leb(int value)
    {
        var v = (uint)value;
        do
        {
            var b = (byte)(v & 0x7f);
            v >>= 7;
            yield return v == 0 ? b : (byte)(b | 0x80);
        }
        while (v != 0);
    }

    private static long OnDisk(TrustCluster.Member m) => new[] { "modules", "cache" }.Select(d => Path.Combine(m.DataDir, d)).Where(Directory.Exists)
        .SelectMany(d => new DirectoryInfo(d).GetFiles()).Where(f => f.Name.EndsWith("wasm", StringComparison.Ordinal)).Sum(f => f.Length);

    private static async Task<SubmissionException> ThrowsAsync(Func<Task> code)
    {
        try
        {
            await code();
        }
        catch (SubmissionException e)
        {
            return e;
        }
        Assert.Fail("expected a SubmissionException, nothing was thrown");
        return null!;
    }

    [Test]
    public void AModuleLargerThanTheLimit_IsRefused_TheRequesterIsToldDiskFull_AndStatusAndMetricsShowIt() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 201);
        var requester = await cluster.AddAsync("requester", provide: false);
        var provider = await cluster.AddAsync("provider", provide: true, configure: c => c with { Provider = c.Provider with { DiskBytes = 1 << 20 } });
        using var metrics = new MetricsExporter(provider.Potluck);
        await requester.Client.WaitForProvidersAsync(1, ct);

        var ok = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("fits", 10), ct);
        Assert.That(ok.Status, Is.EqualTo(ExecutionStatus.Success), ok.Error);
        var big = OutcomeAttackTests.HashTask("too big", 10) with { Module = Padded(OutcomeAttackTests.HashTask("", 1).Module.ToArray(), 1_200_000, "big") };
        var e = await ThrowsAsync(() => requester.Node.SubmitAsync(big, ct));

        Assert.That(e.Message, Does.Contain("refused: disk full"), e.Message);
        Assert.That(e.Reasons.Keys.Single(), Does.StartWith("refused: disk full: the module's").And.Contain("1048576 bytes offered"));
        Assert.That(provider.Provider.RefusedForDisk, Is.GreaterThanOrEqualTo(1));
        Assert.That(OnDisk(provider), Is.LessThanOrEqualTo(1 << 20).And.GreaterThan(0), "the module that fitted is kept, within the limit");

        var status = NodeControl.Status(provider.Potluck, cluster.Time.GetUtcNow());
        Assert.That(status["provider"]!["disk_bytes_limit"]!.GetValue<long>(), Is.EqualTo(1 << 20));
        Assert.That(status["provider"]!["disk_bytes_used"]!.GetValue<long>(), Is.EqualTo(OnDisk(provider)));
        var text = HomeCommands.FormatStatus(JsonNode.Parse(status.ToJsonString())!.AsObject());
        Assert.That(text, Does.Contain("Disk:").And.Contain("used of 1 MiB for others' modules").And.Contain("leases refused: disk full"), text);

        using var stream = new MemoryStream();
        await metrics.WriteAsync(stream, ct);
        var exported = System.Text.Encoding.UTF8.GetString(stream.ToArray());
        Assert.That(exported, Does.Contain($"potluck_provider_disk_bytes_used {OnDisk(provider)}")
            .And.Contain("potluck_provider_disk_limit_bytes 1048576")
            .And.Contain("potluck_leases_refused_total{reason=\"disk_full\"}"), exported);
    });

    [Test]
    public void TheLimitSetLive_EvictsDownToIt_AndARestartCountsWhatIsOnDisk() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 202);
        var requester = await cluster.AddAsync("requester", provide: false);
        var provider = await cluster.AddAsync("provider", provide: true);
        await requester.Client.WaitForProvidersAsync(1, ct);
        var hashChain = OutcomeAttackTests.HashTask("", 1).Module.ToArray();
        for (var i = 0; i < 3; i++)
        {
            var task = OutcomeAttackTests.HashTask($"t{i}", 10) with { Module = Padded(hashChain, 400_000, $"m{i}") };
            var result = await requester.Node.SubmitAsync(task, ct);
            Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        }
        var disk = provider.Node.Disk;
        Assert.That(disk.UsedBytes, Is.EqualTo(OnDisk(provider)).And.GreaterThan(3 * 400_000), "three modules and their compiled forms");

        var settings = new NodeSettings(provider.DataDir, null, []);
        await using var server = new ControlServer(provider.DataDir, new ControlOptions(), NullLoggerFactory.Instance);
        settings.Register(server, provider.Potluck);
        var answer = settings.Set("compute:provider:diskBytes", "1048576");

        Assert.That(answer["applied"]!.GetValue<string>(), Is.EqualTo("live"), answer.ToJsonString());
        Assert.That(disk.LimitBytes, Is.EqualTo(1 << 20));
        Assert.That(OnDisk(provider), Is.LessThanOrEqualTo(1 << 20).And.GreaterThan(0), "evicted down to the new limit at once");
        Assert.That(disk.UsedBytes, Is.EqualTo(OnDisk(provider)));
        Assert.That(settings.Get("compute:provider:diskBytes")["settings"]![0]!["value"]!.GetValue<string>(), Is.EqualTo("1048576"));
        Assert.That(settings.List(all: false)["settings"]!.AsArray().Select(r => r!["key"]!.GetValue<string>()), Does.Contain("compute:provider:diskBytes"));
        Assert.That(() => settings.Set("compute:provider:diskBytes", "1000"), Throws.TypeOf<ControlException>()
            .With.Message.Contains("'compute:provider:diskBytes' is 1000; it must be at least 1048576"));

        var before = OnDisk(provider);
        await cluster.StopAsync(provider);
        provider = await cluster.RestartAsync(provider);
        Assert.That(provider.Node.Disk.UsedBytes, Is.EqualTo(before), "counted again from the files at start");
        Assert.That(provider.Node.Disk.Files, Is.GreaterThan(0));
    });
}
