using System.Collections.Concurrent;
using System.Diagnostics.Tracing;

namespace Potluck.Benchmarks;

/// <summary>Tallies the runtime's GC AllocationTick samples (one per ~100 KB allocated) by type: where allocations come from.</summary>
internal sealed class AllocationListener : EventListener
{
    private readonly ConcurrentDictionary<string, long> _bytes = new();

    protected override void OnEventSourceCreated(EventSource source)
    {
        if (source.Name == "Microsoft-Windows-DotNETRuntime")
        {
            EnableEvents(source, EventLevel.Verbose, (EventKeywords)0x1 /* GC */);
        }
    }

    protected override void OnEventWritten(EventWrittenEventArgs e)
    {
        if (e.EventName?.StartsWith("GCAllocationTick", StringComparison.Ordinal) != true || e.Payload is null)
        {
            return;
        }
        var type = e.PayloadNames!.IndexOf("TypeName") is var t and >= 0 ? e.Payload[t]?.ToString() ?? "?" : "?";
        var amount = e.PayloadNames.IndexOf("AllocationAmount64") is var a and >= 0 ? Convert.ToInt64(e.Payload[a]) : 100_000;
        _bytes.AddOrUpdate(type, amount, (_, v) => v + amount);
    }

    public void Print()
    {
        foreach (var (type, bytes) in _bytes.OrderByDescending(kv => kv.Value).Take(12))
        {
            Console.WriteLine($"#   alloc {bytes >> 20,6} MiB  {type}");
        }
    }
}
