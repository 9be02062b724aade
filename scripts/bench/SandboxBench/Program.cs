using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Scheduler.Sandbox;

// Usage: Potluck.SandboxBench <repo root> <native bin dir> <runs>
// Times each sample natively (a process per run) and in the sandbox (fuel metering, epoch
// interruption and NaN canonicalization on; module compiled once beforehand), best of <runs>.
var root = args[0];
var nativeDir = args[1];
var runs = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 3;

(string Name, string[] Args, byte[] Input)[] workloads =
[
    ("hashchain", ["2000000"], "potluck benchmark seed"u8.ToArray()),
    ("matmul", ["900"], []),
    ("render", ["1024", "768", "1000"], []),
];

using var sandbox = new WasmSandbox(
    new SandboxOptions { DefaultFuel = 2_000_000_000_000, DefaultDeadline = TimeSpan.FromMinutes(5), MaxStdoutBytes = 64 << 20 },
    NullLogger<WasmSandbox>.Instance);

Console.WriteLine($"{"sample",-10} {"native ms",10} {"sandbox ms",11} {"ratio",7} {"compile ms",11} {"fuel",16}  same output");
var ratios = new List<double>();
foreach (var (name, wargs, input) in workloads)
{
    var module = File.ReadAllBytes(Path.Combine(root, "samples", name, name + ".wasm"));
    var spec = new TaskSpec { Module = module, Args = wargs };

    var compile = Stopwatch.StartNew();
    var first = sandbox.Execute(spec with { Args = ["1"] }, input);
    var compileMs = first.ModuleSource == ModuleSource.Compiled ? compile.Elapsed.TotalMilliseconds : double.NaN;

    var bestSandbox = double.MaxValue;
    SandboxResult? result = null;
    for (var i = 0; i < runs; i++)
    {
        var sw = Stopwatch.StartNew();
        result = sandbox.Execute(spec, input);
        bestSandbox = Math.Min(bestSandbox, sw.Elapsed.TotalMilliseconds);
        if (result.Outcome != SandboxOutcome.Success) throw new InvalidOperationException($"{name}: {result.Outcome} {result.Error}");
    }

    var bestNative = double.MaxValue;
    byte[] nativeOut = [];
    for (var i = 0; i < runs; i++)
    {
        var psi = new ProcessStartInfo(Path.Combine(nativeDir, name))
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
        nativeOut = copy.GetAwaiter().GetResult();
        p.WaitForExit();
        bestNative = Math.Min(bestNative, sw.Elapsed.TotalMilliseconds);
    }

    var ratio = bestSandbox / bestNative;
    ratios.Add(ratio);
    var same = result!.Stdout.Span.SequenceEqual(nativeOut) ? "yes" : "NO";
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"{name,-10} {bestNative,10:F1} {bestSandbox,11:F1} {ratio,6:F2}x {compileMs,11:F1} {result.FuelConsumed,16}  {same}"));
}
var geomean = Math.Exp(ratios.Average(Math.Log));
Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"geometric mean sandbox/native: {geomean:F2}x (target <= 2.5x)"));
