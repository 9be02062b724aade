namespace Potluck.Protocol.Transport.Memory;

/// <summary>
/// How a simulated link treats the bytes crossing it, set with <see cref="SimulatedNetwork.SetLink"/> or
/// <see cref="SimulatedNetwork.SetEndpoint"/>. Conditions are fixed when a connection opens; partitions
/// (<see cref="SimulatedNetwork.Partition"/>) also act on open connections.
/// </summary>
/// <remarks>
/// Only latency is modelled today. Loss (for a reliable stream: retransmission delay) and bandwidth belong
/// here too and would be applied where latency is, in <see cref="DelayLine"/>.
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
}
