using System.Diagnostics;
using System.Globalization;
using Potluck.Protocol.Runtime;

namespace Potluck.Node.Simulation;

/// <summary>
/// A run's memory against virtual time (<see cref="SimScenario.MemoryTrace"/>): a thread of its own writes a
/// <c>sample</c> line every 100 ms of wall time (wall s, virtual s, the phase last seen, RSS, peak RSS so far, GC committed,
/// heap at the last GC, all MiB), and the loop writes a <c>census</c> line at each progress point (connection ends per
/// node, young, protected). Reads only: the run's trace is the same with it and without it.
/// </summary>
public sealed class SimMemoryTrace : IDisposable
{
    private readonly TextWriter _out;
    private readonly VirtualClock _clock;
    private readonly Stopwatch _wall;
    private readonly Thread _thread;
    private readonly ManualResetEventSlim _stop = new();
    private volatile string _phase = "start";

    private SimMemoryTrace(TextWriter output, VirtualClock clock, Stopwatch wall)
    {
        _out = output;
        _clock = clock;
        _wall = wall;
        _thread = new Thread(Loop) { IsBackground = true, Name = "sim memory trace" };
    }

    /// <summary>Starts sampling to <paramref name="output"/>.</summary>
    public static SimMemoryTrace Start(TextWriter output, VirtualClock clock, Stopwatch wall)
    {
        var trace = new SimMemoryTrace(output, clock, wall);
        trace.Write("# sample wall_s virtual_s phase rss_mib peak_rss_mib gc_committed_mib gc_heap_mib");
        trace.Write("# census wall_s virtual_s phase ends_per_node young_per_node protected_per_node max_ends over_cap");
        trace._thread.Start();
        return trace;
    }

    /// <summary>Names what the run is doing now (the next samples carry it).</summary>
    public void Phase(string phase) => _phase = phase.Replace(' ', '_');

    /// <summary>Writes the connection ends now (on the loop).</summary>
    public void Census(string phase, ConnectionEndCensus ends)
    {
        Phase(phase);
        Write(string.Create(CultureInfo.InvariantCulture,
            $"census {_wall.Elapsed.TotalSeconds:F2} {_clock.Elapsed.TotalSeconds:F2} {_phase} {ends.PerNode:F2} {ends.PerNodeOf(ends.Young):F2} {ends.PerNodeOf(ends.Protected):F2} {ends.Max} {ends.OverCap}"));
    }

    private void Loop()
    {
        while (!_stop.Wait(100))
        {
            Sample();
        }
        Sample();
    }

    private void Sample()
    {
        var (rss, peak) = ReadStatus();
        var gc = GC.GetGCMemoryInfo();
        const double Mib = 1024 * 1024;
        Write(string.Create(CultureInfo.InvariantCulture,
            $"sample {_wall.Elapsed.TotalSeconds:F2} {_clock.Elapsed.TotalSeconds:F2} {_phase} {rss:F1} {peak:F1} {gc.TotalCommittedBytes / Mib:F1} {gc.HeapSizeBytes / Mib:F1}"));
    }

    /// <summary>VmRSS and VmHWM in MiB from <c>/proc/self/status</c>; the process's working set where there is none.</summary>
    private static (double Rss, double Peak) ReadStatus()
    {
        double rss = -1, peak = -1;
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                {
                    rss = Kib(line) / 1024;
                }
                else if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                {
                    peak = Kib(line) / 1024;
                }
            }
        }
        catch (IOException)
        {
        }
        if (rss < 0)
        {
            using var self = Process.GetCurrentProcess();
            rss = self.WorkingSet64 / (1024.0 * 1024);
            peak = self.PeakWorkingSet64 / (1024.0 * 1024);
        }
        return (rss, peak);
    }

    private static double Kib(string line) =>
        double.Parse(line.AsSpan(6).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture);

    private void Write(string line)
    {
        lock (_out)
        {
            _out.WriteLine(line);
            _out.Flush();
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _stop.Set();
        _thread.Join();
        _stop.Dispose();
    }
}
