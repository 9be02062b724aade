using System.Globalization;
using System.Net;
using System.Text;
using ScottPlot;

namespace Potluck.Node.Simulation;

/// <summary>
/// <c>potluck sim --report file.html</c>: the report's figures as a page, with pictures where people would rather look
/// than read (drawn by ScottPlot as inline SVG): the lease latency distribution, credits earned against fuel
/// supplied per provider, and cheaters caught over time.
/// </summary>
public static class SimHtmlReport
{
    public static string Render(SimReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var b = new StringBuilder();
        b.Append("<!doctype html><html><head><meta charset=\"utf-8\"><title>potluck sim</title>")
         .Append("<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}pre{background:#f6f6f6;padding:1em}</style></head><body>")
         .Append("<h1>potluck sim: ").Append(report.Nodes.ToString(CultureInfo.InvariantCulture)).Append(" nodes, seed ")
         .Append(report.Seed.ToString(CultureInfo.InvariantCulture)).Append("</h1>")
         .Append("<pre>").Append(WebUtility.HtmlEncode(report.ToText())).Append("</pre>");
        b.Append("<h2>Lease latency (virtual time)</h2>").Append(LatencyHistogram(report));
        b.Append("<h2>Credits earned against fuel supplied, per provider</h2>").Append(CreditsAgainstFuel(report));
        b.Append("<h2>Cheaters caught over time</h2>").Append(CaughtOverTime(report));
        b.Append("<h2>JSON</h2><pre>").Append(WebUtility.HtmlEncode(report.ToJson())).Append("</pre></body></html>");
        return b.ToString();
    }

    private static string LatencyHistogram(SimReport report)
    {
        var plot = new Plot();
        var samples = report.LatencySamplesMs;
        if (samples.Count > 0)
        {
            var max = samples.Max();
            var bins = Math.Clamp(samples.Count / 5, 5, 60);
            var width = Math.Max(1e-3, max / bins);
            var counts = new double[bins + 1];
            foreach (var s in samples)
            {
                counts[Math.Min(bins, (int)(s / width))]++;
            }
            var positions = Enumerable.Range(0, bins + 1).Select(i => (i + 0.5) * width).ToArray();
            var bars = plot.Add.Bars(positions, counts);
            foreach (var bar in bars.Bars)
            {
                bar.Size = width * 0.9;
            }
        }
        plot.XLabel("lease latency, ms (virtual)");
        plot.YLabel("tasks");
        return plot.GetSvgXml(900, 400);
    }

    private static string CreditsAgainstFuel(SimReport report)
    {
        var plot = new Plot();
        var honest = report.ProviderPoints.Where(p => !p.Adversary).ToList();
        var adversaries = report.ProviderPoints.Where(p => p.Adversary).ToList();
        if (honest.Count > 0)
        {
            var h = plot.Add.ScatterPoints(honest.Select(p => (double)p.Fuel).ToArray(), honest.Select(p => (double)p.Credits).ToArray());
            h.LegendText = "honest";
        }
        if (adversaries.Count > 0)
        {
            var a = plot.Add.ScatterPoints(adversaries.Select(p => (double)p.Fuel).ToArray(), adversaries.Select(p => (double)p.Credits).ToArray());
            a.LegendText = "adversary";
            a.MarkerShape = MarkerShape.OpenCircle;
        }
        plot.XLabel("fuel supplied (completed tasks)");
        plot.YLabel("credits earned");
        plot.ShowLegend();
        return plot.GetSvgXml(900, 400);
    }

    private static string CaughtOverTime(SimReport report)
    {
        var plot = new Plot();
        var times = report.CaughtAtS;
        if (times.Count > 0)
        {
            var xs = new List<double> { 0 };
            var ys = new List<double> { 0 };
            for (var i = 0; i < times.Count; i++)
            {
                xs.Add(times[i]);
                ys.Add(i);
                xs.Add(times[i]);
                ys.Add(i + 1);
            }
            plot.Add.ScatterLine(xs.ToArray(), ys.ToArray());
        }
        plot.XLabel("virtual time, s");
        plot.YLabel($"cheaters caught (of {report.Cheaters.Count})");
        return plot.GetSvgXml(900, 400);
    }
}
