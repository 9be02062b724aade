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
}
