using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Potluck.Node.Simulation;

/// <summary>
/// What the .NET runtime spent on a run, for <see cref="SimReport"/>: exceptions thrown (first chance, by type) and the
/// GC's collections and pause time, from the moment <see cref="Start"/> was called. Process-wide figures: one run per
/// process (<c>potluck sim</c>). With <c>POTLUCK_SIM_EXCEPTION_SITES=1</c> each throw also records its site (the
/// innermost Potluck frames of the stack: costly, for finding where they come from), printed by <see cref="DescribeSites"/>.
/// </summary>
public sealed class SimRuntimeFigures : IDisposable
{
    private readonly ConcurrentDictionary<string, long> _byType = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, long>? _bySite;
    private readonly int[] _collectionsAtStart = [GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2)];
    private readonly TimeSpan _pauseAtStart = GC.GetTotalPauseDuration();
    private readonly Stopwatch _wall = Stopwatch.StartNew();
    private int _outOfMemory;

    /// <summary>
    /// Whether an out-of-memory error has been thrown since <see cref="Start"/> (first chance: caught or not). Only a flag,
    /// set where it was thrown; the command that runs the mesh polls it and stops the run (a mesh that lost work to it, or
    /// whose loop it broke, must not report as if it had room, nor hang).
    /// </summary>
    public bool OutOfMemorySeen => Volatile.Read(ref _outOfMemory) != 0;

    private SimRuntimeFigures(bool sites)
    {
        _bySite = sites ? new ConcurrentDictionary<string, long>(StringComparer.Ordinal) : null;
        AppDomain.CurrentDomain.FirstChanceException += OnFirstChance;
    }

    /// <summary>Starts counting; dispose to stop.</summary>
    public static SimRuntimeFigures Start() =>
        new(Environment.GetEnvironmentVariable("POTLUCK_SIM_EXCEPTION_SITES") is "1" or "true");

    private void OnFirstChance(object? sender, System.Runtime.ExceptionServices.FirstChanceExceptionEventArgs e)
    {
        if (e.Exception is OutOfMemoryException)
        {
            Volatile.Write(ref _outOfMemory, 1);
        }
        var type = e.Exception.GetType().Name;
        _byType.AddOrUpdate(type, 1, (_, n) => n + 1);
        if (_bySite is not null)
        {
            _bySite.AddOrUpdate(type + " at " + Site(new StackTrace(2, false)), 1, (_, n) => n + 1);
        }
    }

    /// <summary>The innermost three frames of Potluck code (methods of async state machines by their method's name).</summary>
    private static string Site(StackTrace trace)
    {
        var frames = new List<string>(3);
        foreach (var frame in trace.GetFrames())
        {
            var method = frame.GetMethod();
            var type = method?.DeclaringType;
            if (type?.FullName is not { } name || !name.StartsWith("Potluck.", StringComparison.Ordinal))
            {
                continue;
            }
            // Async state machines are nested types named <Method>d__N: show Outer.Method.
            var shown = type.Name.StartsWith('<') && type.DeclaringType is { } outer
                ? outer.Name + "." + type.Name[1..type.Name.IndexOf('>', StringComparison.Ordinal)]
                : type.Name + "." + method!.Name;
            if (frames.Count == 0 || frames[^1] != shown)
            {
                frames.Add(shown);
            }
            if (frames.Count == 3)
            {
                break;
            }
        }
        return frames.Count == 0 ? "(no Potluck frame)" : string.Join(" < ", frames);
    }

    /// <summary>The figures since <see cref="Start"/>.</summary>
    public SimReport.RuntimeFigures Snapshot()
    {
        var wall = _wall.Elapsed.TotalSeconds;
        var pause = (GC.GetTotalPauseDuration() - _pauseAtStart).TotalSeconds;
        var byType = _byType.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal)
            .ToDictionary(kv => kv.Key, kv => kv.Value);
        return new SimReport.RuntimeFigures(
            byType.Values.Sum(), byType,
            GC.CollectionCount(0) - _collectionsAtStart[0], GC.CollectionCount(1) - _collectionsAtStart[1],
            GC.CollectionCount(2) - _collectionsAtStart[2], pause, wall <= 0 ? 0 : pause / wall);
    }

    /// <summary>The <paramref name="top"/> most frequent throw sites, one per line; empty unless sites were recorded.</summary>
    public string DescribeSites(int top = 25)
    {
        if (_bySite is null)
        {
            return "";
        }
        var b = new StringBuilder();
        foreach (var (site, n) in _bySite.OrderByDescending(kv => kv.Value).Take(top))
        {
            b.AppendLine(string.Create(CultureInfo.InvariantCulture, $"{n,8} {site}"));
        }
        return b.ToString();
    }

    public void Dispose() => AppDomain.CurrentDomain.FirstChanceException -= OnFirstChance;
}
