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

/// <summary>Runs one decoder on random and mutated inputs and reports what happened (shared by the runner and the CI smoke test).</summary>
internal static class Fuzzer
{
    private const int MaxInputBytes = 4096;

    internal sealed record Report(long Inputs, long Accepted, long Refused, long Crashes, long Hangs, long MaxAllocated, TimeSpan Elapsed,
        List<(byte[] Input, Exception Error)> Examples);

    public static Report Run(Target target, long count, int seed, int hangMs)
    {
        var random = new Random(HashCode.Combine(seed, target.Name.Length, target.Name[0], target.Name[^1]));
        var mutator = new Mutator(random, target.Seeds);
        long accepted = 0, refused = 0, crashes = 0, hangs = 0, maxAllocated = 0;
        var examples = new List<(byte[], Exception)>();
        var total = Stopwatch.StartNew();
        var one = new Stopwatch();
        for (long i = 0; i < count; i++)
        {
            var input = (i & 1) == 0 ? mutator.Random() : mutator.Mutate();
            var before = GC.GetAllocatedBytesForCurrentThread();
            one.Restart();
            try
            {
                if (target.Run(input))
                {
                    accepted++;
                }
                else
                {
                    refused++;
                }
            }
            catch (Exception e) when (Failures.Classify(e).Kind != FailureKind.Internal)
            {
                refused++; // a typed error: what the catch site turns into a reset or a closed connection
            }
            catch (Exception e)
            {
                crashes++;
                if (examples.Count < 3)
                {
                    examples.Add((input, e));
                }
            }
            one.Stop();
            if (one.ElapsedMilliseconds > hangMs)
            {
                hangs++;
                if (examples.Count < 3)
                {
                    examples.Add((input, new TimeoutException($"one input took {one.ElapsedMilliseconds} ms")));
                }
            }
            maxAllocated = Math.Max(maxAllocated, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        return new Report(count, accepted, refused, crashes, hangs, maxAllocated, total.Elapsed, examples);
    }

    internal static string FormatBytes(long bytes) => bytes >= 1 << 20 ? $"{bytes / (double)(1 << 20):F1} MiB" : bytes >= 1024 ? $"{bytes / 1024.0:F1} KiB" : $"{bytes} B";

    /// <summary>Random inputs, and mutations of the seeds (valid encodings).</summary>
    private sealed class Mutator(Random random, byte[][] seeds)
    {
        private static readonly byte[] Interesting = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE, 0x40, 0x20, 0xC0, 0xC1, 0xDC, 0xDD, 0xDE, 0xDF, 0xCE, 0xCF, 0xD9, 0xDB, 0x92, 0x9F];

        public byte[] Random()
        {
            var length = random.Next(4) == 0 ? random.Next(MaxInputBytes) : random.Next(64);
            var bytes = new byte[length];
            random.NextBytes(bytes);
            return bytes;
        }

        public byte[] Mutate()
        {
            var data = new List<byte>(seeds[random.Next(seeds.Length)]);
            for (var n = 1 + random.Next(random.Next(2) == 0 ? 3 : 12); n > 0; n--)
            {
                switch (random.Next(8))
                {
                    case 0 when data.Count > 0:
                        data[random.Next(data.Count)] ^= (byte)(1 << random.Next(8));
                        break;
                    case 1 when data.Count > 0:
                        data[random.Next(data.Count)] = Interesting[random.Next(Interesting.Length)];
                        break;
                    case 2 when data.Count > 0:
                        data[random.Next(data.Count)] = (byte)random.Next(256);
                        break;
                    case 3:
                        var insert = new byte[random.Next(1, 16)];
                        random.NextBytes(insert);
                        data.InsertRange(random.Next(data.Count + 1), insert);
                        break;
                    case 4 when data.Count > 0:
                        var at = random.Next(data.Count);
                        data.RemoveRange(at, random.Next(1, Math.Min(16, data.Count - at) + 1));
                        break;
                    case 5 when data.Count > 0:
                        var from = random.Next(data.Count);
                        var run = data.GetRange(from, random.Next(1, Math.Min(32, data.Count - from) + 1));
                        data.InsertRange(random.Next(data.Count + 1), run);
                        break;
                    case 6:
                        var other = seeds[random.Next(seeds.Length)];
                        if (other.Length > 0)
                        {
                            var start = random.Next(other.Length);
                            data.InsertRange(random.Next(data.Count + 1), other.Skip(start).Take(random.Next(1, other.Length - start + 1)));
                        }
                        break;
                    case 7 when data.Count > 0:
                        var keep = random.Next(data.Count);
                        data.RemoveRange(keep, data.Count - keep);
                        break;
                }
            }
            if (data.Count > MaxInputBytes)
            {
                data.RemoveRange(MaxInputBytes, data.Count - MaxInputBytes);
            }
            return [.. data];
        }
    }
}
