using System.Diagnostics.Tracing;
using System.Collections.Concurrent;
// Measurement only: at exit prints the process's allocated bytes, GC counts, pause and (GCJOIN_TYPES=1) allocation ticks by type
// and bytes promoted per generation, to the file named by GCJOIN_OUT.
internal class StartupHook
{
    static Listener? _l;
    public static void Initialize()
    {
        var outFile = Environment.GetEnvironmentVariable("GCJOIN_OUT");
        if (outFile is null) return;
        if (Environment.GetEnvironmentVariable("GCJOIN_TYPES") == "1") _l = new Listener();
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            using var w = new StreamWriter(outFile, append: true);
            w.WriteLine($"pid {Environment.ProcessId} allocated {GC.GetTotalAllocatedBytes(true)} gen0 {GC.CollectionCount(0)} gen1 {GC.CollectionCount(1)} gen2 {GC.CollectionCount(2)} pause_s {GC.GetTotalPauseDuration().TotalSeconds:F1} cpu_s {System.Diagnostics.Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds:F1}");
            if (_l is { } l)
            {
                w.WriteLine($"promoted gen0->1 {l.P0} gen1->2 {l.P1} gen2 {l.P2} gcs {l.Gcs} ticks {l.Ticks}");
                long total = l.ByType.Values.Sum();
                foreach (var kv in l.ByType.OrderByDescending(k => k.Value).Take(60))
                    w.WriteLine($"{kv.Value,16} {100.0 * kv.Value / total,6:F2}% {kv.Key}");
            }
        };
    }
    sealed class Listener : EventListener
    {
        public readonly ConcurrentDictionary<string, long> ByType = new();
        public long P0, P1, P2, Gcs, Ticks;
        protected override void OnEventSourceCreated(EventSource s)
        {
            if (s.Name == "Microsoft-Windows-DotNETRuntime") EnableEvents(s, EventLevel.Verbose, (EventKeywords)0x1);
        }
        protected override void OnEventWritten(EventWrittenEventArgs e)
        {
            if (e.EventName is null || e.Payload is null) return;
            if (e.EventName.StartsWith("GCAllocationTick"))
            {
                var i = e.PayloadNames!.IndexOf("TypeName"); var a = e.PayloadNames.IndexOf("AllocationAmount64");
                var amount = a >= 0 ? Convert.ToInt64(e.Payload[a]) : 100_000;
                var t = i >= 0 ? (string?)e.Payload[i] ?? "?" : "?";
                ByType.AddOrUpdate(t, amount, (_, v) => v + amount);
                Ticks++;
            }
            else if (e.EventName.StartsWith("GCHeapStats"))
            {
                var n = e.PayloadNames!;
                P0 += Convert.ToInt64(e.Payload[n.IndexOf("TotalPromotedSize0")]);
                P1 += Convert.ToInt64(e.Payload[n.IndexOf("TotalPromotedSize1")]);
                P2 += Convert.ToInt64(e.Payload[n.IndexOf("TotalPromotedSize2")]);
                Gcs++;
            }
        }
    }
}
