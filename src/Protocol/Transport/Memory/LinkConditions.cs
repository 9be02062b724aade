namespace Potluck.Protocol.Transport.Memory;

/// <summary>
/// How a simulated link treats the bytes crossing it, set with <see cref="SimulatedNetwork.SetLink"/> or
/// <see cref="SimulatedNetwork.SetEndpoint"/>. Conditions are fixed when a connection opens; partitions
/// (<see cref="SimulatedNetwork.Partition"/>) also act on open connections.
/// </summary>
/// <remarks>
/// The link is a reliable, ordered byte stream (as TCP is), so loss never drops bytes: a lost flush is delivered
/// one <see cref="RetransmitTimeout"/> late, and everything behind it waits for it (head-of-line blocking).
/// Bandwidth serialises flushes one after another: a flush of n bytes occupies the link for n / bandwidth.
/// Which flushes are lost is drawn from a per-connection generator seeded from the network's
/// <see cref="SimulatedNetworkOptions.Seed"/>, so a run on virtual time replays exactly.
/// </remarks>
public sealed record LinkConditions
{
    /// <summary>No delay at all: a connection is just two cross-wired pipes.</summary>
    public static LinkConditions Perfect { get; } = new();

    /// <summary>
    /// One-way delay: bytes flushed on one side become readable on the other this much virtual time later
    /// (on the network's <see cref="TimeProvider"/>). Default zero.
    /// </summary>
    public TimeSpan Latency { get; init; }

    /// <summary>Bytes per second each direction carries; 0 (the default) is unlimited.</summary>
    public long BandwidthBytesPerSecond { get; init; }

    /// <summary>Probability in [0, 1) that a flush is lost once and retransmitted. Default 0.</summary>
    public double Loss { get; init; }

    /// <summary>How late a lost flush arrives (a retransmission timeout). Default 200 ms, Linux TCP's minimum RTO.</summary>
    public TimeSpan RetransmitTimeout { get; init; } = TimeSpan.FromMilliseconds(200);

    /// <summary>True when bytes cross the link exactly as written, at once.</summary>
    public bool IsPerfect => Latency == TimeSpan.Zero && BandwidthBytesPerSecond == 0 && Loss == 0;

    /// <summary>
    /// What a link between two endpoints with these conditions gets: latencies add up, the narrower bandwidth
    /// applies, losses compound and the longer retransmission timeout applies.
    /// </summary>
    public LinkConditions Combine(LinkConditions other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return new LinkConditions
        {
            Latency = Latency + other.Latency,
            BandwidthBytesPerSecond = (BandwidthBytesPerSecond, other.BandwidthBytesPerSecond) switch
            {
                (0, var b) => b,
                (var a, 0) => a,
                var (a, b) => Math.Min(a, b),
            },
            Loss = 1 - ((1 - Loss) * (1 - other.Loss)),
            RetransmitTimeout = RetransmitTimeout > other.RetransmitTimeout ? RetransmitTimeout : other.RetransmitTimeout,
        };
    }
}
