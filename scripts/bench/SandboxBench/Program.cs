using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Scheduler.Sandbox;
using Wasmtime;

// Usage: Potluck.SandboxBench <repo root> <native bin dir> [runs] [calls] [--breakdown]
// Part 1, sandbox vs native: each sample natively (<name>.clang and <name>.gcc in the native dir, a
// process per run, timed from start to exit; CPU = the child's user + system time) and in the sandbox (fuel metering, epoch interruption,
// NaN canonicalisation and deterministic relaxed SIMD on), interleaved, best of <runs>. The sandbox is
// timed as a provider runs a task it has run before: the compiled module is in the sandbox's memory
// cache (compiled by a warm-up run, whose compile time is printed apart), and each timed call is one
// whole WasmSandbox.Execute: module lookup, store and instance creation, the run, and the result's
// hashes; CPU = this process's CPU time over the call. Not counted: .NET start-up, compiling the module.
// Part 2, per-call cost: <calls> runs of samples/testmods/exitcode.wasm (a no-op task), through
// Execute (on this thread) and ExecuteAsync (on the sandbox's runner threads, as providers call it).
// Part 3 (--breakdown), where the time goes: each sample on plain Wasmtime engines (Wasmtime's own
// WASI, output to /dev/null) with parts of the sandbox's instrumentation on, interleaved, best of <runs>.
var root = args[0];
var nativeDir = args[1];
var runs = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 3;
var calls = args.Length > 3 ? int.Parse(args[3], CultureInfo.InvariantCulture) : 2000;
var breakdown = args.Contains("--breakdown");

(string Name, string[] Args, byte[] Input)[] workloads =
[
    ("hashchain", ["2000000"], "potluck benchmark seed"u8.ToArray()),
    ("matmul", ["900"], []),
    ("render", ["1024", "768", "1000"], []),
];
string[] natives = ["clang", "gcc"];

using var sandbox = new WasmSandbox(
    new SandboxOptions { DefaultFuel = 2_000_000_000_000, DefaultDeadline = TimeSpan.FromMinutes(5), MaxStdoutBytes = 64 << 20 },
    NullLogger<WasmSandbox>.Instance);

Console.WriteLine("best of " + runs + ", ms: wall clock / CPU (the machine is shared: CPU time is the steadier figure)");
Console.WriteLine($"{"sample",-10} {"clang",13} {"gcc",13} {"sandbox",13}  {"vs clang",13} {"vs gcc",13} {"compile ms",10} {"fuel",12}  same output");
var wallRatios = natives.ToDictionary(n => n, _ => new List<double>());
var cpuRatios = natives.ToDictionary(n => n, _ => new List<double>());
foreach (var (name, wargs, input) in workloads)
{
    var module = File.ReadAllBytes(Path.Combine(root, "samples", name, name + ".wasm"));
    var spec = new TaskSpec { Module = module, Args = wargs };

    var compile = Stopwatch.StartNew();
    var first = sandbox.Execute(spec with { Args = ["1"] }, input);
    var compileMs = first.ModuleSource == ModuleSource.Compiled ? compile.Elapsed.TotalMilliseconds : double.NaN;

    var sandboxTime = new Best();
    var nativeTime = natives.ToDictionary(n => n, _ => new Best());
    var nativeOut = natives.ToDictionary(n => n, _ => Array.Empty<byte>());
    SandboxResult? result = null;
    for (var i = 0; i < runs; i++)
    {
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        result = sandbox.Execute(spec, input);
        sandboxTime.Add(sw.Elapsed.TotalMilliseconds, (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalMilliseconds);
        if (result.Outcome != SandboxOutcome.Success) throw new InvalidOperationException($"{name}: {result.Outcome} {result.Error}");
        foreach (var n in natives)
        {
            var (wall, cpuMs, output) = RunNative(Path.Combine(nativeDir, $"{name}.{n}"), wargs, input);
            nativeTime[n].Add(wall, cpuMs);
            nativeOut[n] = output;
        }
    }

    var same = natives.All(n => result!.Stdout.Span.SequenceEqual(nativeOut[n])) ? "yes" : "NO";
    foreach (var n in natives)
    {
        wallRatios[n].Add(sandboxTime.Wall / nativeTime[n].Wall);
        cpuRatios[n].Add(sandboxTime.Cpu / nativeTime[n].Cpu);
    }
    string Pair(double a, double b, string f) => string.Create(CultureInfo.InvariantCulture, $"{a.ToString(f, CultureInfo.InvariantCulture)} / {b.ToString(f, CultureInfo.InvariantCulture)}");
    string Ratio(string n) => Pair(sandboxTime.Wall / nativeTime[n].Wall, sandboxTime.Cpu / nativeTime[n].Cpu, "F2");
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"{name,-10} {Pair(nativeTime["clang"].Wall, nativeTime["clang"].Cpu, "F0"),13} {Pair(nativeTime["gcc"].Wall, nativeTime["gcc"].Cpu, "F0"),13} {Pair(sandboxTime.Wall, sandboxTime.Cpu, "F0"),13}  {Ratio("clang"),13} {Ratio("gcc"),13} {compileMs,10:F1} {result!.FuelConsumed,12}  {same}"));
}
foreach (var n in natives)
{
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"geometric mean sandbox/native ({n}): {Math.Exp(wallRatios[n].Average(Math.Log)):F2}x wall clock, {Math.Exp(cpuRatios[n].Average(Math.Log)):F2}x CPU (target <= 2.5x)"));
}

// Part 2: per-call cost of a tiny module.
var tiny = new TaskSpec { Module = File.ReadAllBytes(Path.Combine(root, "samples", "testmods", "exitcode.wasm")), Args = ["0"], FuelLimit = 20_000_000 };
if (sandbox.Execute(tiny, default).Outcome != SandboxOutcome.Success) throw new InvalidOperationException("exitcode.wasm did not succeed");
Console.WriteLine();
Console.WriteLine($"per call, {calls} runs of samples/testmods/exitcode.wasm 0 (module cached):");
// The same against a sandbox without the instance pool (compute:sandbox:instanceSlots 0: each run's memory mapped and
// unmapped as it goes), interleaved round by round.
using var unpooled = new WasmSandbox(sandbox.Options with { InstanceSlots = 0 }, NullLogger<WasmSandbox>.Instance);
if (unpooled.Execute(tiny, default).Outcome != SandboxOutcome.Success) throw new InvalidOperationException("exitcode.wasm did not succeed unpooled");
for (var round = 0; round < 3; round++)
{
    foreach (var (label, box) in new[] { ($"pooled ({sandbox.Options.InstanceSlots} slots)", sandbox), ("unpooled", unpooled) })
    {
        var (syncWall, syncCpu) = PerCall(calls, () => box.Execute(tiny, default));
        var (asyncWall, asyncCpu) = PerCall(calls, () => box.ExecuteAsync(tiny, default).GetAwaiter().GetResult());
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"  round {round + 1}, {label}: Execute {syncWall * 1000:F0} us (CPU {syncCpu * 1000:F0} us)   ExecuteAsync {asyncWall * 1000:F0} us (CPU {asyncCpu * 1000:F0} us)"));
    }
}

if (breakdown)
{
    Console.WriteLine();
    Breakdown(root, workloads, runs);
}

static void Breakdown(string root, (string Name, string[] Args, byte[] Input)[] workloads, int runs)
{
    string[] configs = ["none", "nan", "fuel+epoch", "nan+fuel+epoch"];
    Console.WriteLine("plain Wasmtime, ms (best of " + runs + "): instrumentation on = " + string.Join(", ", configs));
    var engines = configs.ToDictionary(c => c, c =>
    {
        using var config = new Config();
        config.WithFuelConsumption(c.Contains("fuel")).WithEpochInterruption(c.Contains("epoch"))
            .WithCraneliftNaNCanonicalization(c.Contains("nan")).WithRelaxedSIMD(true, deterministic: true)
            .WithWasmThreads(false).WithOptimizationLevel(OptimizationLevel.Speed);
        return new Engine(config);
    });
    var stdin = Path.GetTempFileName();
    try
    {
        foreach (var (name, wargs, input) in workloads)
        {
            File.WriteAllBytes(stdin, input);
            var wasm = File.ReadAllBytes(Path.Combine(root, "samples", name, name + ".wasm"));
            var modules = configs.ToDictionary(c => c, c => Module.FromBytes(engines[c], name, wasm));
            var best = configs.ToDictionary(c => c, _ => double.MaxValue);
            for (var r = 0; r < runs; r++)
            {
                foreach (var c in configs)
                {
                    using var linker = new Linker(engines[c]);
                    linker.DefineWasi();
                    using var store = new Store(engines[c]);
                    store.SetWasiConfiguration(new WasiConfiguration().WithArgs(["task.wasm", .. wargs])
                        .WithStandardOutput("/dev/null").WithStandardInput(stdin));
                    if (c.Contains("fuel")) store.Fuel = ulong.MaxValue / 2;
                    if (c.Contains("epoch")) store.SetEpochDeadline(ulong.MaxValue / 2);
                    var start = linker.Instantiate(store, modules[c]).GetAction("_start")!;
                    var sw = Stopwatch.StartNew();
                    try
                    {
                        start();
                    }
                    catch (WasmtimeException)
                    {
                        // proc_exit(0) ends the run with an exit "trap".
                    }
                    best[c] = Math.Min(best[c], sw.Elapsed.TotalMilliseconds);
                }
            }
            Console.WriteLine($"  {name,-10} " + string.Join("  ", configs.Select(c => string.Create(CultureInfo.InvariantCulture, $"{c} {best[c]:F0}"))));
        }
    }
    finally
    {
        File.Delete(stdin);
        foreach (var e in engines.Values) e.Dispose();
    }
}

static (double Wall, double Cpu) PerCall(int calls, Action call)
{
    var cpu = Process.GetCurrentProcess().TotalProcessorTime;
    var sw = Stopwatch.StartNew();
    for (var i = 0; i < calls; i++) call();
    var wall = sw.Elapsed.TotalMilliseconds / calls;
    return (wall, (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalMilliseconds / calls);
}

static (double Wall, double Cpu, byte[] Output) RunNative(string path, string[] wargs, byte[] input)
{
    var psi = new ProcessStartInfo(path)
    {
        RedirectStandardInput = true,
        RedirectStandardOutput = true,
        UseShellExecute = false,
    };
    foreach (var a in wargs) psi.ArgumentList.Add(a);
    var children = ChildrenCpuMs();
    var sw = Stopwatch.StartNew();
    using var p = Process.Start(psi)!;
    var copy = Task.Run(async () =>
    {
        using var ms = new MemoryStream();
        await p.StandardOutput.BaseStream.CopyToAsync(ms);
        return ms.ToArray();
    });
    p.StandardInput.BaseStream.Write(input);
    p.StandardInput.Close();
    var output = copy.GetAwaiter().GetResult();
    p.WaitForExit();
    var wall = sw.Elapsed.TotalMilliseconds;
    return (wall, ChildrenCpuMs() - children, output);
}

// User + system CPU of the waited-for children of this process (getrusage(RUSAGE_CHILDREN), Linux x86-64/arm64).
static double ChildrenCpuMs()
{
    if (Native.getrusage(-1, out var usage) != 0) return double.NaN;
    return (usage.UserSec + usage.SysSec) * 1000.0 + (usage.UserUsec + usage.SysUsec) / 1000.0;
}

[System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
internal struct RUsage
{
    public long UserSec;
    public long UserUsec;
    public long SysSec;
    public long SysUsec;
    public long MaxRss, IxRss, IdRss, IsRss, MinFlt, MajFlt, NSwap, InBlock, OuBlock, MsgSnd, MsgRcv, NSignals, NVcsw, NIvcsw;
}

internal static class Native
{
    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    public static extern int getrusage(int who, out RUsage usage);
}

/// <summary>Best wall-clock and best CPU time over runs, each on its own.</summary>
internal sealed class Best
{
    public double Wall { get; private set; } = double.MaxValue;
    public double Cpu { get; private set; } = double.MaxValue;

    public void Add(double wall, double cpu)
    {
        Wall = Math.Min(Wall, wall);
        Cpu = Math.Min(Cpu, cpu);
    }
}
