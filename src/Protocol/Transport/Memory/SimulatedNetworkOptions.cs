namespace Potluck.Protocol.Transport.Memory;

/// <summary>Limits of a <see cref="SimulatedNetwork"/>. Every value has a documented default.</summary>
public sealed record SimulatedNetworkOptions
{
    /// <summary>Connections a listener queues before <c>AcceptAsync</c> takes them; further dials are refused. Default 128.</summary>
    public int ListenBacklog { get; init; } = 128;

    /// <summary>
    /// Buffered bytes (unread, or with latency: still in flight) at which a writer is paused. Default 1 MiB.
    /// With latency this is the window: one direction carries at most this much per latency.
    /// </summary>
    public long PauseWriterThreshold { get; init; } = 1024 * 1024;

    /// <summary>Buffered bytes below which a paused writer resumes. Default 512 KiB.</summary>
    public long ResumeWriterThreshold { get; init; } = 512 * 1024;

    /// <summary>Size of the pooled pipe segments. Default 16 KiB.</summary>
    public int SegmentSize { get; init; } = 16 * 1024;

    /// <summary>Seed of the generators that decide which flushes a lossy link loses (one per connection, in order of opening). Default 0.</summary>
    public long Seed { get; init; }

    internal void Validate()
    {
        if (ListenBacklog <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(ListenBacklog), ListenBacklog, "must be positive");
        }
        if (SegmentSize <= 0 || PauseWriterThreshold < SegmentSize || ResumeWriterThreshold <= 0 || ResumeWriterThreshold > PauseWriterThreshold)
        {
            throw new ArgumentOutOfRangeException(nameof(PauseWriterThreshold),
                "need 0 < SegmentSize <= PauseWriterThreshold and 0 < ResumeWriterThreshold <= PauseWriterThreshold");
        }
    }
}
