using Potluck.Node.Cli;

namespace Potluck.Node.Tests.Cli;

/// <summary>
/// `potluck sim` runs with its GC settings (README "The garbage collector's share"): started once more with the missing
/// ones in its environment, never when they are all set (whatever their values), never for another command.
/// </summary>
public class SimGcSettingsTests
{
    private static Func<string, string?> Env(params (string Name, string Value)[] set)
    {
        var d = set.ToDictionary(kv => kv.Name, kv => kv.Value);
        return name => d.TryGetValue(name, out var v) ? v : null;
    }

    [Test]
    public void AnEmptyEnvironmentGetsEveryDefault()
    {
        var missing = SimGcSettings.Missing(["sim", "--nodes", "400"], Env());
        Assert.That(missing, Is.EquivalentTo(SimGcSettings.Defaults));
        Assert.That(missing.Select(kv => kv.Key), Does.Contain("DOTNET_GCgen0size"));
    }

    [Test]
    public void SettingsAlreadySetAreKeptAndNothingStartsAgain()
    {
        var all = SimGcSettings.Defaults.Select(kv => (kv.Key, "1")).ToArray();
        Assert.That(SimGcSettings.Missing(["sim"], Env(all)), Is.Empty);
        // One set by the caller (another value): only the others are added.
        var first = SimGcSettings.Defaults[0].Key;
        var missing = SimGcSettings.Missing(["sim"], Env((first, "9")));
        Assert.That(missing.Select(kv => kv.Key), Does.Not.Contain(first));
        Assert.That(missing, Has.Count.EqualTo(SimGcSettings.Defaults.Count - 1));
    }

    [Test]
    public void OnlyTheSimCommandAndNeverTwice()
    {
        Assert.That(SimGcSettings.Missing(["run", "--listen", "/ip4/127.0.0.1/tcp/0"], Env()), Is.Empty);
        Assert.That(SimGcSettings.Missing([], Env()), Is.Empty);
        Assert.That(SimGcSettings.Missing(["sim", "--help"], Env()), Is.Empty);
        Assert.That(SimGcSettings.Missing(["sim"], Env((SimGcSettings.Marker, "1"))), Is.Empty);
        Assert.That(SimGcSettings.Missing(["sim"], Env((SimGcSettings.Marker, "0"))), Is.Empty);
    }

    [Test]
    public void TheReportLineNamesWhatWasSet()
    {
        var line = SimGcSettings.Describe(Env(("DOTNET_GCgen0size", "0x4000000"), ("DOTNET_GCName", "libclrgc.so"), ("HOME", "/root")));
        Assert.That(line, Does.Contain("DOTNET_GCgen0size=0x4000000").And.Contain("DOTNET_GCName=libclrgc.so"));
        Assert.That(line, Does.Not.Contain("HOME"));
        Assert.That(SimGcSettings.Describe(Env()), Does.Contain("the runtime's defaults"));
    }

    /// <summary>None of the settings the report shows, nor the marker, whatever the test's own environment holds.</summary>
    private static Dictionary<string, string?> Unset() =>
        SimGcSettings.Shown.Concat(SimGcSettings.Defaults.Select(kv => kv.Key)).Append(SimGcSettings.Marker)
            .Distinct().ToDictionary(name => name, _ => (string?)null);

    private static readonly string[] TinySim = ["sim", "--nodes", "2", "--providers", "1", "--tasks", "0", "--duration", "1", "--stand-ins", "all", "--quiet"];

    /// <summary>The built program, started without the settings, runs the mesh in a process that has them.</summary>
    [Test, CancelAfter(120_000)]
    public async Task ThePotluckProcessRunsTheSimWithTheDefaults(CancellationToken ct)
    {
        await using var sim = PotluckProcess.StartWith(Unset(), TinySim);
        var (code, output) = await sim.WaitForExitAsync(ct);
        Assert.That(code, Is.EqualTo(0), sim.Transcript);
        var line = output.Split('\n').Single(l => l.StartsWith("runtime settings:", StringComparison.Ordinal));
        foreach (var (name, value) in SimGcSettings.Defaults)
        {
            Assert.That(line, Does.Contain($"{name}={value}"));
        }
    }

    /// <summary>A caller's own values win, and opting out runs with the environment as given.</summary>
    [Test, CancelAfter(120_000)]
    public async Task TheCallersValuesWinAndTheOptOutHolds(CancellationToken ct)
    {
        var env = Unset();
        env[SimGcSettings.Defaults[0].Key] = "5";
        await using (var sim = PotluckProcess.StartWith(env, TinySim))
        {
            var (code, output) = await sim.WaitForExitAsync(ct);
            Assert.That(code, Is.EqualTo(0), sim.Transcript);
            Assert.That(output, Does.Contain($"{SimGcSettings.Defaults[0].Key}=5"));
        }
        var off = Unset();
        off[SimGcSettings.Marker] = "0";
        await using (var sim = PotluckProcess.StartWith(off, TinySim))
        {
            var (code, output) = await sim.WaitForExitAsync(ct);
            Assert.That(code, Is.EqualTo(0), sim.Transcript);
            Assert.That(output, Does.Contain("the runtime's defaults"));
        }
    }

    [Test]
    public void AHeapLimitBecomesTheRuntimesHardLimit()
    {
        var missing = SimGcSettings.Missing(["sim", "--nodes", "400", "--heap-limit", "512"], Env());
        Assert.That(missing, Does.Contain(new KeyValuePair<string, string>(SimGcSettings.HeapHardLimitVariable, "0x20000000")));
        Assert.That(SimGcSettings.Missing(["sim", "--heap-limit=3072"], Env()),
            Does.Contain(new KeyValuePair<string, string>(SimGcSettings.HeapHardLimitVariable, "0xC0000000")));
        // Malformed or out of range: nothing for it (the parser refuses the command line with a message).
        foreach (var bad in new[] { "abc", "-5", "0", "31", "1048577", "99999999999" })
        {
            Assert.That(SimGcSettings.Missing(["sim", "--heap-limit", bad], Env()).Select(kv => kv.Key),
                Does.Not.Contain(SimGcSettings.HeapHardLimitVariable), bad);
        }
        Assert.That(SimGcSettings.Missing(["sim", "--heap-limit"], Env()).Select(kv => kv.Key), Does.Not.Contain(SimGcSettings.HeapHardLimitVariable));
        // The caller's own value is left as it is (the run then refuses a mismatch, below); other commands get nothing.
        Assert.That(SimGcSettings.Missing(["sim", "--heap-limit", "512"], Env((SimGcSettings.HeapHardLimitVariable, "0x1000000"))).Select(kv => kv.Key),
            Does.Not.Contain(SimGcSettings.HeapHardLimitVariable));
        Assert.That(SimGcSettings.Missing(["run", "--heap-limit", "512"], Env()), Is.Empty);
    }

    [Test]
    public void ARunWithoutTheLimitItAskedForIsRefusedWithWhatToDo()
    {
        Assert.That(SimGcSettings.HeapLimitMismatch(512L << 20, 512UL << 20), Is.Null);
        Assert.That(SimGcSettings.HeapLimitMismatch(512L << 20, 0), Does.Contain("no heap limit").And.Contain("unset DOTNET_GCHeapHardLimit"));
        Assert.That(SimGcSettings.HeapLimitMismatch(512L << 20, 256UL << 20), Does.Contain("256 MiB").And.Contain("0x10000000"));
        Assert.That(Commands.Parse("sim", "--heap-limit", "8").Errors.Select(e => e.Message), Has.Some.Contains("--heap-limit '8' must be a whole number from 32"));
    }

    /// <summary>The flag seen while the run goes, and what the command tells the user about an out-of-memory error.</summary>
    [Test]
    public void AnOutOfMemoryErrorIsSeenAndExplained()
    {
        using var runtime = Potluck.Node.Simulation.SimRuntimeFigures.Start();
        Assert.That(runtime.OutOfMemorySeen, Is.False);
        try
        {
            throw new OutOfMemoryException("test");
        }
        catch (OutOfMemoryException)
        {
        }
        Assert.That(runtime.OutOfMemorySeen, Is.True);
        Assert.That(SimCommand.CaughtOutOfMemory(runtime.Snapshot()), Is.GreaterThanOrEqualTo(1));
        Assert.That(SimCommand.CaughtOutOfMemory(null), Is.Null);
        Assert.That(SimCommand.IsOutOfMemory(new AggregateException(new InvalidOperationException("x", new OutOfMemoryException()))), Is.True);
        Assert.That(SimCommand.IsOutOfMemory(new InvalidOperationException("x")), Is.False);
        Assert.That(SimCommand.OutOfMemoryAdvice(600UL << 20), Does.Contain("600 MiB").And.Contain("raise it"));
        Assert.That(SimCommand.OutOfMemoryAdvice(0), Does.Contain("fewer nodes"));
    }

    /// <summary>The built program with <c>--heap-limit</c> runs with that hard limit; a caller's different one is refused (exit 2).</summary>
    [Test, CancelAfter(120_000)]
    public async Task ThePotluckProcessRunsWithTheHeapLimitAsked(CancellationToken ct)
    {
        await using (var sim = PotluckProcess.StartWith(Unset(), [.. TinySim, "--heap-limit", "256"]))
        {
            var (code, output) = await sim.WaitForExitAsync(ct);
            Assert.That(code, Is.EqualTo(0), sim.Transcript);
            Assert.That(output, Does.Contain($"{SimGcSettings.HeapHardLimitVariable}=0x10000000"));
        }
        var env = Unset();
        env[SimGcSettings.HeapHardLimitVariable] = "0x20000000";
        await using (var sim = PotluckProcess.StartWith(env, [.. TinySim, "--heap-limit", "256"]))
        {
            var (code, output) = await sim.WaitForExitAsync(ct);
            Assert.That(code, Is.EqualTo(2), sim.Transcript);
            Assert.That(output, Is.Empty, "no report");
            Assert.That(sim.Transcript, Does.Contain("--heap-limit 256: this process runs with a heap limit of 512 MiB"));
            Assert.That(sim.Transcript, Does.Not.Contain("   at "));
        }
    }
}
