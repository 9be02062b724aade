namespace Potluck.Protocol.Transport.Tcp;

/// <summary>Tuning for <see cref="TcpTransport"/>. Every value has a documented default.</summary>
public sealed record TcpTransportOptions
{
    /// <summary>How long a dial (name resolution plus every connect attempt) may take. Default 10 s.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How long disposing a connection waits for already-flushed output to reach the kernel before the socket
    /// is closed regardless (a remote that stops reading cannot hold a disposal forever). Default 5 s.
    /// </summary>
    public TimeSpan CloseTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>The listen backlog: connections the kernel queues before <c>AcceptAsync</c> takes them. Default 512.</summary>
    public int ListenBacklog { get; init; } = 512;

    /// <summary>Disable Nagle's algorithm (TCP_NODELAY). Default true: the muxer batches writes itself.</summary>
    public bool NoDelay { get; init; } = true;

    /// <summary>
    /// Unsent output (and unread input) at which the writer of a connection's pipe is paused. Default 1 MiB.
    /// Bounds the memory one connection can hold in each direction.
    /// </summary>
    public long PauseWriterThreshold { get; init; } = 1024 * 1024;

    /// <summary>Buffered bytes below which a paused writer resumes. Default 512 KiB.</summary>
    public long ResumeWriterThreshold { get; init; } = 512 * 1024;

    /// <summary>Size of the pooled buffer segments the pipes use. Default 64 KiB.</summary>
    public int SegmentSize { get; init; } = 64 * 1024;

    /// <summary>
    /// Wait for data with a zero-byte receive before taking a buffer from the pool, so that idle connections
    /// hold no receive buffer (thousands of idle peers cost no memory). Skipped while data keeps arriving faster
    /// than it is read. Default true.
    /// </summary>
    public bool WaitForDataBeforeAllocatingBuffer { get; init; } = true;

    internal void Validate()
    {
        if (ConnectTimeout <= TimeSpan.Zero && ConnectTimeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(ConnectTimeout), ConnectTimeout, "must be positive or infinite");
        }
        if (CloseTimeout < TimeSpan.Zero && CloseTimeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(CloseTimeout), CloseTimeout, "must not be negative");
        }
        if (ListenBacklog <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(ListenBacklog), ListenBacklog, "must be positive");
        }
        if (SegmentSize < 4096)
        {
            throw new ArgumentOutOfRangeException(nameof(SegmentSize), SegmentSize, "must be at least 4096");
        }
        if (PauseWriterThreshold < SegmentSize || ResumeWriterThreshold <= 0 || ResumeWriterThreshold > PauseWriterThreshold)
        {
            throw new ArgumentOutOfRangeException(nameof(PauseWriterThreshold),
                "need SegmentSize <= PauseWriterThreshold and 0 < ResumeWriterThreshold <= PauseWriterThreshold");
        }
    }
}
