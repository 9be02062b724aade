using System.Globalization;

namespace Potluck.Node.Simulation;

/// <summary>
/// Measurement only (<c>POTLUCK_SIM_BURST_PROBE</c>: 1, or a path P to hold at, for a heap dump, until P.mid and then P.end
/// exist): what the warm-up's first virtual instant allocates and leaves alive. Bytes allocated by the joins themselves,
/// by the writers they scheduled (an item posted after the joins runs after those and before what they post), and by the
/// rest of the instant (the loop run until idle, the clock not moved); the live heap (a full collection) before, after
/// each. It adds two loop items (the posted one and the idle wait), so a probed run counts two events more and its
/// <c>events_hash</c> differs; the trace does not (1,000 nodes: <c>8da5f83d…</c> with and without).
/// </summary>
internal sealed class BurstProbe
{
    private readonly Action<string>? _progress;
    private readonly long _allocatedBefore;
    private readonly long _heapBefore;
    private readonly string? _hold;

    private BurstProbe(Action<string>? progress, string? hold)
    {
        _progress = progress;
        _hold = hold;
        _heapBefore = GC.GetTotalMemory(forceFullCollection: true);
        _allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
    }

    public static BurstProbe? Start(Action<string>? progress)
    {
        var setting = Environment.GetEnvironmentVariable("POTLUCK_SIM_BURST_PROBE");
        if (string.IsNullOrEmpty(setting) || setting == "0")
        {
            return null;
        }
        return new BurstProbe(progress, setting == "1" ? null : setting);
    }

    public async Task AtInstantEndAsync(SimulatedMesh mesh)
    {
        var joined = GC.GetTotalAllocatedBytes(precise: true);
        var joinedLive = GC.GetTotalMemory(forceFullCollection: true);
        // Posted now, this runs after what the joins posted (the writers of every peer's queue) and before what those post.
        long midAllocated = 0, midLive = 0;
        mesh.Driver.Loop.Post(_ =>
        {
            midAllocated = GC.GetTotalAllocatedBytes(precise: true);
            midLive = GC.GetTotalMemory(forceFullCollection: true);
            Hold("after the writers of the joins' RPCs");
        }, null);
        await mesh.Driver.IdleAsync();
        var idle = GC.GetTotalAllocatedBytes(precise: true);
        var live = GC.GetTotalMemory(forceFullCollection: true);
        const double Kib = 1024;
        var n = mesh.Nodes.Count;
        _progress?.Invoke(string.Create(CultureInfo.InvariantCulture,
            $"burst probe at virtual {mesh.Elapsed.TotalSeconds:F2} s, KiB per node: allocated by the joins {(joined - _allocatedBefore) / Kib / n:F1}, then by their writers {(midAllocated - joined) / Kib / n:F1}, then by the rest of the instant {(idle - midAllocated) / Kib / n:F1}; live heap before {_heapBefore / Kib / n:F1}, after the joins +{(joinedLive - _heapBefore) / Kib / n:F1}, after their writers +{(midLive - _heapBefore) / Kib / n:F1}, at the instant's end +{(live - _heapBefore) / Kib / n:F1}"));
        Hold("at the instant's end");
    }

    private void Hold(string where)
    {
        if (_hold is null)
        {
            return;
        }
        var file = _hold + (where.StartsWith("at", StringComparison.Ordinal) ? ".end" : ".mid");
        Console.Error.WriteLine($"holding at the burst {where} (pid {Environment.ProcessId}) until {file} exists");
        while (!File.Exists(file))
        {
            Thread.Sleep(100);
        }
    }
}
