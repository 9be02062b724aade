using System.Buffers;
using System.Diagnostics;
using System.Text;
using Google.Protobuf;
using Potluck.Protocol;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Kademlia;
using Potluck.Protocol.Mdns;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Multistream;
using Potluck.Protocol.Noise;
using Potluck.Protocol.Pnet;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Yamux;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Verification;

namespace Potluck.Fuzz;

/// <summary>
/// Feeds random and mutated inputs to every decoder a remote peer (or a file) can reach, and reports per decoder: the
/// inputs run, crashes (an exception a catch site would call our bug: <see cref="FailureKind.Internal"/>), hangs (one
/// input over the hang limit), and the largest allocation one input caused. Half the inputs are random bytes, half
/// are valid encodings mutated (bit flips, interesting bytes, inserted, deleted, duplicated and spliced runs,
/// truncation). Seeded: the same seed replays the same inputs; a crash prints the input in hex to reproduce it.
/// Usage: Fuzz [inputs per decoder = 1000000] [--seed N] [--only name[,name…]] [--hang-ms N]. Exit 1 on any crash or hang.
/// </summary>
public static class Program
{

    public static int Main(string[] args)
    {
        var count = 1_000_000L;
        var seed = 1;
        var hangMs = 2000;
        string[]? only = null;
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--seed": seed = int.Parse(args[++i]); break;
                case "--only": only = args[++i].Split(','); break;
                case "--hang-ms": hangMs = int.Parse(args[++i]); break;
                default: count = long.Parse(args[i]); break;
            }
        }
        var targets = Targets.All().Where(t => only is null || only.Contains(t.Name)).ToList();
        Console.WriteLine($"fuzz: {targets.Count} decoders, {count:N0} inputs each, seed {seed}, hang limit {hangMs} ms");
        Console.WriteLine();
        Console.WriteLine("| decoder | inputs | accepted | refused (typed) | crashes | hangs | largest allocation | µs/input |");
        Console.WriteLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        var failed = false;
        foreach (var target in targets)
        {
            var report = Fuzzer.Run(target, count, seed, hangMs);
            failed |= report.Crashes > 0 || report.Hangs > 0;
            Console.WriteLine($"| {target.Name} | {report.Inputs:N0} | {report.Accepted:N0} | {report.Refused:N0} | {report.Crashes} | {report.Hangs} | {Fuzzer.FormatBytes(report.MaxAllocated)} | {report.Elapsed.TotalMicroseconds / Math.Max(1, report.Inputs):F1} |");
            foreach (var (input, error) in report.Examples)
            {
                Console.Error.WriteLine($"  {target.Name} crash: {error.GetType().Name}: {error.Message}");
                Console.Error.WriteLine($"    input ({input.Length} bytes): {Convert.ToHexString(input)}");
                Console.Error.WriteLine($"    {error.StackTrace?.Split('\n').FirstOrDefault()?.Trim()}");
            }
        }
        Console.WriteLine();
        Console.WriteLine(failed ? "FAILED: crashes or hangs above" : "0 crashes, 0 hangs");
        return failed ? 1 : 0;
    }
}
