using Microsoft.Diagnostics.Tracing;
using Microsoft.Diagnostics.Tracing.Etlx;
using Microsoft.Diagnostics.Tracing.Parsers.Clr;
// AllocationTick by type and by call site (the innermost N frames of Potluck/Google code), bytes estimated from the ticks.
var path = args[0]; int depth = args.Length > 1 ? int.Parse(args[1]) : 3; int top = args.Length > 2 ? int.Parse(args[2]) : 80;
string filter = args.Length > 3 ? args[3] : null;
var etlx = TraceLog.CreateFromEventPipeDataFile(path);
using var log = new TraceLog(etlx);
var bySite = new Dictionary<string, long>(); var byType = new Dictionary<string, long>(); long total = 0;
foreach (var e in log.Events)
{
    if (e is not GCAllocationTickTraceData t) continue;
    long amount = t.AllocationAmount64 > 0 ? t.AllocationAmount64 : t.AllocationAmount;
    total += amount;
    var type = t.TypeName;
    if (filter != null && !type.Contains(filter)) continue;
    byType[type] = byType.GetValueOrDefault(type) + amount;
    var frames = new List<string>();
    var cs = e.CallStack();
    string first = null;
    while (cs != null && frames.Count < depth)
    {
        var m = cs.CodeAddress.FullMethodName ?? "?";
        first ??= m;
        if (m.StartsWith("Potluck.") || m.StartsWith("Google.") || m.StartsWith("NSec"))
        {
            var s = m.Length > 110 ? m[..110] : m;
            if (frames.Count == 0 || frames[^1] != s) frames.Add(s);
        }
        cs = cs.Caller;
    }
    var key = (Environment.GetEnvironmentVariable("NOTYPE")=="1" ? "" : type) + "\n      " + string.Join("\n      < ", frames) + (frames.Count == 0 ? "(none) first=" + first : "");
    bySite[key] = bySite.GetValueOrDefault(key) + amount;
}
Console.WriteLine($"total {total / 1e6:F1} MB");
foreach (var kv in bySite.OrderByDescending(k => k.Value).Take(top))
    Console.WriteLine($"{kv.Value / 1e6,8:F1} MB {100.0 * kv.Value / total,5:F1}% {kv.Key}");
