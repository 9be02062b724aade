using Potluck.Node.Control;
using Potluck.Protocol.Runtime;

namespace Potluck.Node.Tests.Control;

/// <summary>/metrics: each node's own instruments, in the Prometheus text format, under the names Prometheus users expect.</summary>
[CancelAfter(30_000)]
public class MetricsExporterTests
{
    [Test]
    public void Export_HasTheNodesCountersWithPrometheusNames_AndOnlyItsOwn() => VirtualTimeDriver.Run(async d =>
    {
        // On virtual time: on the wall clock b's own background work (a lookup's dial) could land after its exporter
        // started and fail the last assertion under load.
        var ct = CancellationToken.None;
        await using var nodes = new TestNodes(d, seed: 11);
        var a = await nodes.StartAsync(nodes.Options());
        var b = await nodes.StartAsync(nodes.Options() with { Bootstrap = [a.FullAddresses[0]] });
        await b.Joined.WaitAsync(ct);
        var lonely = await nodes.StartAsync(nodes.Options());
        using var exporterB = new MetricsExporter(b);
        using var exporterLonely = new MetricsExporter(lonely);
        // One more connection after the exporters started listening.
        await lonely.Host.ConnectAsync(a.FullAddresses[0], ct);

        async Task<string> Export(MetricsExporter e)
        {
            using var stream = new MemoryStream();
            await e.WriteAsync(stream, ct);
            return System.Text.Encoding.UTF8.GetString(stream.ToArray());
        }
        var lonelyText = await Export(exporterLonely);
        TestContext.Out.WriteLine(lonelyText);
        Assert.That(lonelyText, Does.Contain("potluck_connections_opened_total"));
        Assert.That(lonelyText, Does.Contain("potluck_peers_connected 1"));
        Assert.That(lonelyText, Does.Contain("process_cpu_seconds_total"));
        var bText = await Export(exporterB);
        Assert.That(bText, Does.Not.Contain("potluck_connections_opened_total"), "b opened no connection after its exporter started: nodes do not share counters");
    });
}
