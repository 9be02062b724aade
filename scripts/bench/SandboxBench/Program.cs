using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Scheduler.Sandbox;
using Wasmtime;

// Usage: Potluck.SandboxBench <repo root> <native bin dir> [runs] [calls] [--breakdown]
// Part 1, sandbox vs native: each sample natively (<name>.clang and <name>.gcc in the native dir, a
// process per run, timed from start to exit) and in the sandbox (fuel metering, epoch interruption,
// NaN canonicalisation and deterministic relaxed SIMD on), interleaved, best of <runs>. The sandbox is
// timed as a provider runs a task it has run before: the compiled module is in the sandbox's memory
// cache (compiled by a warm-up run, whose compile time is printed apart), and each timed call is one
// whole WasmSandbox.Execute: module lookup, store and instance creation, the run, and the result's
// hashes. Not counted: .NET start-up, compiling the module.
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

Console.WriteLine($"{"sample",-10} {"clang ms",9} {"gcc ms",8} {"sandbox ms",11} {"vs clang",9} {"vs gcc",7} {"compile ms",11} {"fuel",14}  same output");
var ratios = natives.ToDictionary(n => n, _ => new List<double>());
foreach (var (name, wargs, input) in workloads)
{
    var module = File.ReadAllBytes(Path.Combine(root, "samples", name, name + ".wasm"));
    var spec = new TaskSpec { Module = module, Args = wargs };

    var compile = Stopwatch.StartNew();
    var first = sandbox.Execute(spec with { Args = ["1"] }, input);
    var compileMs = first.ModuleSource == ModuleSource.Compiled ? compile.Elapsed.TotalMilliseconds : double.NaN;

    var bestSandbox = double.MaxValue;
    var bestNative = natives.ToDictionary(n => n, _ => double.MaxValue);
    var nativeOut = natives.ToDictionary(n => n, _ => Array.Empty<byte>());
    SandboxResult? result = null;
    for (var i = 0; i < runs; i++)
    {
        var sw = Stopwatch.StartNew();
        result = sandbox.Execute(spec, input);
        bestSandbox = Math.Min(bestSandbox, sw.Elapsed.TotalMilliseconds);
        if (result.Outcome != SandboxOutcome.Success) throw new InvalidOperationException($"{name}: {result.Outcome} {result.Error}");
        foreach (var n in natives)
        {
            var (ms, output) = RunNative(Path.Combine(nativeDir, $"{name}.{n}"), wargs, input);
            bestNative[n] = Math.Min(bestNative[n], ms);
            nativeOut[n] = output;
        }
    }

    var same = natives.All(n => result!.Stdout.Span.SequenceEqual(nativeOut[n])) ? "yes" : "NO";
    foreach (var n in natives) ratios[n].Add(bestSandbox / bestNative[n]);
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"{name,-10} {bestNative["clang"],9:F1} {bestNative["gcc"],8:F1} {bestSandbox,11:F1} {bestSandbox / bestNative["clang"],8:F2}x {bestSandbox / bestNative["gcc"],6:F2}x {compileMs,11:F1} {result!.FuelConsumed,14}  {same}"));
}
foreach (var n in natives)
{
    var geomean = Math.Exp(ratios[n].Average(Math.Log));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"geometric mean sandbox/native ({n}): {geomean:F2}x (target <= 2.5x)"));
}

// Part 2: per-call cost of a tiny module.
var tiny = new TaskSpec { Module = File.ReadAllBytes(Path.Combine(root, "samples", "testmods", "exitcode.wasm")), Args = ["0"], FuelLimit = 20_000_000 };
if (sandbox.Execute(tiny, default).Outcome != SandboxOutcome.Success) throw new InvalidOperationException("exitcode.wasm did not succeed");
Console.WriteLine();
Console.WriteLine($"per call, {calls} runs of samples/testmods/exitcode.wasm 0 (module cached):");
for (var round = 0; round < 2; round++)
{
    var (syncWall, syncCpu) = PerCall(calls, () => sandbox.Execute(tiny, default));
    var (asyncWall, asyncCpu) = PerCall(calls, () => sandbox.ExecuteAsync(tiny, default).GetAwaiter().GetResult());
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"  round {round + 1}: Execute {syncWall * 1000:F0} us (CPU {syncCpu * 1000:F0} us)   ExecuteAsync {asyncWall * 1000:F0} us (CPU {asyncCpu * 1000:F0} us)"));
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

static (double Ms, byte[] Output) RunNative(string path, string[] wargs, byte[] input)
{
    var psi = new ProcessStartInfo(path)
    {
        RedirectStandardInput = true,
        RedirectStandardOutput = true,
        UseShellExecute = false,
    };
    foreach (var a in wargs) psi.ArgumentList.Add(a);
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
    return (sw.Elapsed.TotalMilliseconds, output);
}
