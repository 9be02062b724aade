using Potluck.Protocol.Transport.Memory;

namespace Potluck.Node.Simulation;

/// <summary>
/// The seeded network a <see cref="SimulatedMesh"/> runs on. Each node gets its own one-way access latency, drawn
/// from a log-normal distribution (median <see cref="LatencyMedian"/>, shape <see cref="LatencySigma"/>); a link's
/// latency is the sum of its two ends' (so link latencies are spread as real paths are, and the triangle
/// inequality holds). Every link carries <see cref="BandwidthBytesPerSecond"/> each way and loses a flush with
/// probability <see cref="Loss"/> (delivered a retransmission timeout late: the streams are reliable).
/// </summary>
public sealed record NetworkModel
{
    /// <summary>Median one-way access latency of a node. Default 20 ms (so a median link is 40 ms one way).</summary>
    public TimeSpan LatencyMedian { get; init; } = TimeSpan.FromMilliseconds(20);

    /// <summary>Shape (σ of the underlying normal) of the per-node latency distribution; 0 gives every node the median. Default 0.5.</summary>
    public double LatencySigma { get; init; } = 0.5;

    /// <summary>Per-node access latency cap, so a draw from the tail stays plausible. Default 500 ms.</summary>
    public TimeSpan LatencyMax { get; init; } = TimeSpan.FromMilliseconds(500);

    /// <summary>Bytes per second per direction per link; 0 is unlimited. Default 12.5 MB/s (100 Mbit/s).</summary>
    public long BandwidthBytesPerSecond { get; init; } = 12_500_000;

    /// <summary>Probability a flush is lost once (and retransmitted). Default 0.</summary>
    public double Loss { get; init; }

    /// <summary>The conditions of one node's access link, drawn from <paramref name="random"/>.</summary>
    public LinkConditions Draw(Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        // Box-Muller: a standard normal from two uniforms.
        var u1 = 1.0 - random.NextDouble();
        var u2 = random.NextDouble();
        var z = Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
        var ms = LatencyMedian.TotalMilliseconds * Math.Exp(LatencySigma * z);
        ms = Math.Min(ms, LatencyMax.TotalMilliseconds);
        return new LinkConditions
        {
            // Whole microseconds, so the trace does not depend on how doubles round to ticks.
            Latency = TimeSpan.FromMicroseconds(Math.Round(ms * 1000)),
            BandwidthBytesPerSecond = BandwidthBytesPerSecond,
            Loss = Loss,
        };
    }

    internal void Validate()
    {
        if (LatencyMedian < TimeSpan.Zero || LatencyMax < TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(LatencyMedian), "latencies must not be negative");
        }
        if (!(LatencySigma >= 0 && LatencySigma <= 3))
        {
            throw new ArgumentOutOfRangeException(nameof(LatencySigma), LatencySigma, "must be in [0, 3]");
        }
        if (BandwidthBytesPerSecond < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(BandwidthBytesPerSecond), BandwidthBytesPerSecond, "must not be negative (0 is unlimited)");
        }
        if (!(Loss >= 0 && Loss < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(Loss), Loss, "must be in [0, 1)");
        }
    }
}
