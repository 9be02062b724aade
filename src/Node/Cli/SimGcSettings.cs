using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Potluck.Node.Cli;

/// <summary>
/// The runtime settings <c>potluck sim</c> runs with (README "Simulated meshes" → "The garbage collector's share"). The
/// runtime reads them only at its start, so when any is unset <c>potluck sim</c> starts itself once more with the missing
/// ones in its environment: on Linux in place (execve: the same process id, no second runtime), elsewhere as a child it
/// waits for (its exit code is the command's). A setting already in the
/// environment, whatever its value, is left as it is; <c>POTLUCK_SIM_RUNTIME_DEFAULTS=0</c> runs with the environment as
/// given. Only <c>potluck sim</c>: the daemon's GC is the runtime's.
/// </summary>
internal static class SimGcSettings
{
    /// <summary>What <c>potluck sim</c> sets when the environment does not.</summary>
    public static readonly IReadOnlyList<KeyValuePair<string, string>> Defaults =
    [
        new("DOTNET_GCConserveMemory", "7"),
        new("DOTNET_GCgen0size", "0x4000000"),
        // Methods compiled once, optimised, instead of tier 0 first (with call counters, PGO probes and a second,
        // tier-1 body): 400 nodes, 38 MiB less peak RSS, no more CPU, the same trace (README).
        new("DOTNET_TieredCompilation", "0"),
    ];

    /// <summary>Set in the process started again (so it never starts a third), and read by the opt-out.</summary>
    public const string Marker = "POTLUCK_SIM_RUNTIME_DEFAULTS";

    /// <summary>The environment variables the runtime's settings are read from, for the report's line.</summary>
    internal static readonly string[] Shown =
    [
        "DOTNET_GCName", "DOTNET_GCConserveMemory", "DOTNET_GCgen0size", "DOTNET_GCgen0MaxBudget", "DOTNET_GCHeapHardLimit",
        "DOTNET_gcServer", "DOTNET_gcConcurrent", "DOTNET_TieredCompilation", "DOTNET_TieredPGO", "DOTNET_TC_QuickJitForLoops",
        "DOTNET_ReadyToRun",
    ];

    /// <summary>
    /// The settings to add before running <paramref name="args"/>: empty unless the command is <c>sim</c> (not its
    /// <c>--help</c>), the marker is unset and some default is missing from <paramref name="environment"/>; with
    /// <c>--heap-limit MIB</c>, <c>DOTNET_GCHeapHardLimit</c> among them (unless the caller set it).
    /// </summary>
    public static IReadOnlyList<KeyValuePair<string, string>> Missing(string[] args, Func<string, string?> environment)
    {
        if (args.Length == 0 || args[0] != "sim" || args.Any(a => a is "--help" or "-h" or "-?")
            || environment(Marker) is not null)
        {
            return [];
        }
        var wanted = Defaults.ToList();
        if (HeapLimitBytes(args) is { } bytes)
        {
            wanted.Add(new(HeapHardLimitVariable, HeapHardLimitValue(bytes)));
        }
        return wanted.Where(kv => environment(kv.Key) is null).ToList();
    }

    /// <summary><c>potluck sim</c>'s flag for the managed heap's hard limit, in MiB (<see cref="HeapLimitBytes"/>).</summary>
    public const string HeapLimitFlag = "--heap-limit";

    /// <summary>The smallest and largest <c>--heap-limit</c>, in MiB.</summary>
    public const int MinHeapLimitMiB = 32, MaxHeapLimitMiB = 1 << 20;

    /// <summary>The runtime's setting <c>--heap-limit</c> becomes (read only at the runtime's start).</summary>
    public const string HeapHardLimitVariable = "DOTNET_GCHeapHardLimit";

    /// <summary>The variable's value for <paramref name="bytes"/>: the runtime reads it as hexadecimal.</summary>
    public static string HeapHardLimitValue(long bytes) => "0x" + bytes.ToString("X", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>
    /// The bytes <c>--heap-limit MIB</c> (or <c>--heap-limit=MIB</c>) in <paramref name="args"/> asks for; null when it is
    /// absent or malformed (the command line's parser then says what is wrong and nothing is started again for it).
    /// </summary>
    public static long? HeapLimitBytes(string[] args)
    {
        for (var i = 1; i < args.Length; i++)
        {
            string text;
            if (args[i] == HeapLimitFlag && i + 1 < args.Length)
            {
                text = args[i + 1];
            }
            else if (args[i].StartsWith(HeapLimitFlag + "=", StringComparison.Ordinal) || args[i].StartsWith(HeapLimitFlag + ":", StringComparison.Ordinal))
            {
                text = args[i][(HeapLimitFlag.Length + 1)..];
            }
            else
            {
                continue;
            }
            return int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var mib)
                && mib is >= MinHeapLimitMiB and <= MaxHeapLimitMiB ? mib * (1L << 20) : null;
        }
        return null;
    }

    /// <summary>
    /// Why this process cannot honour <c>--heap-limit</c> (its runtime started with another hard limit, or none: a caller's
    /// own <c>DOTNET_GCHeapHardLimit</c>, or <c>POTLUCK_SIM_RUNTIME_DEFAULTS=0</c>); null when it runs with exactly the
    /// limit asked for. <paramref name="runtimeLimit"/>: the limit the runtime read at its start, 0 for none.
    /// </summary>
    public static string? HeapLimitMismatch(long wanted, ulong runtimeLimit)
    {
        if (runtimeLimit == (ulong)wanted)
        {
            return null;
        }
        var now = runtimeLimit == 0 ? "no heap limit" : $"a heap limit of {runtimeLimit >> 20} MiB ({HeapHardLimitVariable}={HeapHardLimitValue((long)runtimeLimit)})";
        return $"{HeapLimitFlag} {wanted >> 20}: this process runs with {now}, read when it started ({HeapHardLimitVariable} set by the caller, "
            + $"or {Marker}=0, keeps potluck sim from setting it); unset {HeapHardLimitVariable}, or drop {HeapLimitFlag} and set it yourself";
    }

    /// <summary>The hard limit the runtime read at its start (bytes; 0 when none).</summary>
    public static ulong RuntimeHeapLimit() =>
        GC.GetConfigurationVariables().TryGetValue("GCHeapHardLimit", out var value) && value is not null
            ? Convert.ToUInt64(value, System.Globalization.CultureInfo.InvariantCulture) : 0;

    /// <summary>
    /// How often <c>potluck sim</c> hands glibc's free pages back (<c>malloc_trim</c>, README "Simulated meshes" → "Native
    /// memory, accounted"): <c>POTLUCK_SIM_MALLOC_TRIM_MS</c>, 1,000 ms when unset, 0 never. A malformed value is refused.
    /// </summary>
    public static TimeSpan MallocTrimInterval(Func<string, string?> environment)
    {
        var text = environment(MallocTrimVariable);
        if (text is null)
        {
            return TimeSpan.FromSeconds(1);
        }
        if (!int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var ms))
        {
            throw new UsageException($"{MallocTrimVariable}: '{text}' is not a whole number of milliseconds (0 turns trimming off)");
        }
        return TimeSpan.FromMilliseconds(ms);
    }

    /// <summary>
    /// The harness's cap on gen2's growth between full collections (<see cref="Simulation.SimHeapPolicy"/>, README
    /// "Simulated meshes" → "The heap's gap at scale"): <c>POTLUCK_SIM_GEN2_GROWTH</c>, per cent of the live heap after the
    /// last full collection, <see cref="DefaultGen2GrowthPercent"/> when unset, 0 off (the runtime's own budget). Null
    /// when off; a malformed value is refused.
    /// </summary>
    public static Simulation.SimHeapPolicy? Gen2Policy(Func<string, string?> environment)
    {
        var text = environment(Gen2GrowthVariable);
        if (text is null)
        {
            return DefaultGen2GrowthPercent == 0 ? null : new Simulation.SimHeapPolicy(DefaultGen2GrowthPercent / 100.0);
        }
        if (!int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var percent)
            || percent > 1000)
        {
            throw new UsageException($"{Gen2GrowthVariable}: '{text}' is not a whole per cent from 0 to 1000 (0 leaves gen2 to the runtime)");
        }
        return percent == 0 ? null : new Simulation.SimHeapPolicy(percent / 100.0);
    }

    /// <summary>The environment variable <see cref="Gen2Policy"/> reads.</summary>
    public const string Gen2GrowthVariable = "POTLUCK_SIM_GEN2_GROWTH";

    /// <summary>
    /// What <see cref="Gen2Policy"/> uses when <see cref="Gen2GrowthVariable"/> is unset: 10 % (stop 39; 20 % at stop 38).
    /// At 10,000 nodes the peak comes in the work, where gen2 grew a third past the live heap between the runtime's own full
    /// collections: held to +20 %, stop 38's run peaked at 4,885 MiB against 5,411 without a cap. At 2,000 nodes the peak is
    /// in the warm-up (live ~650 MiB): at +20 % the heap reached +18 % with ~120 MiB committed above it; at +10 % it is
    /// collected at +9 %, peak 987 → 884 MiB (−10.5 %), CPU 418 → 427 s (+2.2 %), the same trace (README "What the peak
    /// holds beyond the live heap", stop 39). At 10,000 nodes it halves the growth above a ~3.4 GiB live heap for more
    /// full collections. 0 turns it off; 20 is stop 38's.
    /// </summary>
    public const int DefaultGen2GrowthPercent = 10;

    /// <summary>The environment variable <see cref="MallocTrimInterval"/> reads.</summary>
    public const string MallocTrimVariable = "POTLUCK_SIM_MALLOC_TRIM_MS";

    /// <summary>"DOTNET_GCConserveMemory=7, …" as this process runs with them (the runtime read these at its start).</summary>
    public static string Describe(Func<string, string?> environment)
    {
        var set = Shown.Select(name => environment(name) is { } value ? $"{name}={value}" : null).OfType<string>().ToList();
        var mode = System.Runtime.GCSettings.IsServerGC ? "server" : "workstation";
        return $"{mode} GC, latency mode {System.Runtime.GCSettings.LatencyMode}; "
            + (set.Count == 0 ? "no DOTNET_ settings (the runtime's defaults)" : string.Join(", ", set));
    }

    /// <summary>
    /// Runs <paramref name="args"/> in a new process of this program with the missing settings added, when there are any;
    /// null when there are none (run here). Signals: Ctrl-C reaches both (the terminal's group; this one waits), a
    /// SIGTERM to this process is passed on.
    /// </summary>
    public static int? RunAgainIfNeeded(string[] args)
    {
        var missing = Missing(args, Environment.GetEnvironmentVariable);
        if (missing.Count == 0 || Environment.ProcessPath is not { } self)
        {
            return null;
        }
        var start = new ProcessStartInfo(self) { UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet")
        {
            // `dotnet potluck.dll sim …`: the host needs the assembly again.
            start.ArgumentList.Add(Environment.GetCommandLineArgs()[0]);
        }
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        foreach (var (name, value) in missing)
        {
            start.Environment[name] = value;
        }
        start.Environment[Marker] = "1";
        if (OperatingSystem.IsLinux())
        {
            // Replace this process (same pid, stdio and signals; no waiting parent holding ~40 MiB of its own); returns
            // only when that fails, and then a child runs it instead.
            var argv = new List<string?> { self };
            argv.AddRange(start.ArgumentList);
            argv.Add(null);
            var envp = start.Environment.Select(kv => $"{kv.Key}={kv.Value}").Append(null).ToArray();
            try
            {
                _ = Execve(self, [.. argv], envp);
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
            {
                // no glibc: a child instead
            }
        }
        using var child = Process.Start(start);
        if (child is null)
        {
            return null;
        }
        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => c.Cancel = true);
        using var quit = PosixSignalRegistration.Create(PosixSignal.SIGQUIT, c => c.Cancel = true);
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c =>
        {
            c.Cancel = true;
            ThreadPool.QueueUserWorkItem(_ => PassOn(child, "TERM"));
        });
        // Should this process be ended regardless, the child ends with it.
        void OnExit(object? sender, EventArgs e)
        {
            if (!child.HasExited)
            {
                PassOn(child, "TERM");
                child.WaitForExit(TimeSpan.FromSeconds(10));
            }
        }
        AppDomain.CurrentDomain.ProcessExit += OnExit;
        child.WaitForExit();
        AppDomain.CurrentDomain.ProcessExit -= OnExit;
        return child.ExitCode;
    }

    /// <summary>Passes <paramref name="signal"/> ("TERM") on with kill(1); where that fails, ends the child.</summary>
    private static void PassOn(Process child, string signal)
    {
        try
        {
            using var kill = OperatingSystem.IsWindows() ? null
                : Process.Start("kill", ["-" + signal, child.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
            if (kill is null)
            {
                child.Kill();
            }
            else
            {
                kill.WaitForExit();
            }
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            try
            {
                child.Kill();
            }
            catch (InvalidOperationException)
            {
                // already gone
            }
        }
    }

#pragma warning disable SYSLIB1054 // LibraryImport generates unsafe code, which this project does not allow.
    [DllImport("libc.so.6", EntryPoint = "execve", SetLastError = true)]
    private static extern int Execve(string path, string?[] argv, string?[] envp);
#pragma warning restore SYSLIB1054
}
