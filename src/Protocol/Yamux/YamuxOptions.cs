namespace Potluck.Protocol.Yamux;

/// <summary>Every yamux limit, each with its default. Call <see cref="Validate"/> (the muxer does) before use.</summary>
public sealed record YamuxOptions
{
    /// <summary>The window every stream starts with in both directions, fixed by the spec: 256 KiB.</summary>
    public const uint InitialStreamWindow = 256 * 1024;

    /// <summary>
    /// Largest receive window one stream may grow to by auto-tuning (go-yamux's MaxStreamWindowSize).
    /// Default 16 MiB. Setting it to <see cref="InitialStreamWindow"/> turns auto-tuning off. This is also
    /// the largest data frame accepted for a stream we no longer know (one we reset or closed).
    /// </summary>
    public uint MaxStreamWindow { get; init; } = 16 * 1024 * 1024;

    /// <summary>
    /// Memory one connection may reserve for what its remote can make us hold: a stream's whole window once auto-tuning
    /// grows it beyond the initial 256 KiB (reserved before it is granted; refused: the window is not grown) and bytes buffered in stream
    /// inputs, not yet read, beyond <see cref="FreeReceiveBuffer"/> (reserved as they arrive; refused: that stream is reset
    /// with RST). Idle streams reserve nothing: the initial window is not reserved at open. Default 32 MiB. The host also
    /// reserves all of it from its peer's, address's and subnet's shares of its system-wide budget
    /// (<c>host:resources:maxMuxerMemoryPerPeer</c>, <c>…PerAddress</c>, <c>…PerSubnet</c>, <c>…maxMuxerMemory</c>).
    /// </summary>
    public long MaxConnectionMemory { get; init; } = 32L * 1024 * 1024;

    /// <summary>
    /// Bytes buffered in a connection's stream inputs (over all its streams, beyond what grown windows back) that are not
    /// reserved from <see cref="MaxConnectionMemory"/> and the host's scopes, so that small messages (pings, identify,
    /// lease messages) are still received when strangers have filled the node's budget. What one connection can make
    /// us buffer is at most what it reserved plus this. Default 64 KiB.
    /// </summary>
    public long FreeReceiveBuffer { get; init; } = 64 * 1024;

    /// <summary>Most streams the remote may have open with us at once; more are refused with RST. Default 1000.</summary>
    public int MaxInboundStreams { get; init; } = 1000;

    /// <summary>Most streams we may have open to the remote at once; opening more throws. Default 1000.</summary>
    public int MaxOutboundStreams { get; init; } = 1000;

    /// <summary>Inbound streams waiting for <c>AcceptStreamAsync</c>; more are refused with RST. Default 256 (as go-yamux).</summary>
    public int AcceptBacklog { get; init; } = 256;

    /// <summary>
    /// Our streams the remote has not acknowledged yet; opening another waits for an ACK. Default 256, the
    /// libp2p yamux spec's "ACK backlog".
    /// </summary>
    public int MaxAckBacklog { get; init; } = 256;

    /// <summary>Largest data payload we put in one outbound frame; bigger writes are split. Default 128 KiB.</summary>
    public int MaxFramePayload { get; init; } = 128 * 1024;

    /// <summary>
    /// Bytes an application may have written to one stream that are not yet framed (waiting for send window)
    /// before its <c>FlushAsync</c> waits. Default 256 KiB.
    /// </summary>
    public int StreamSendBuffer { get; init; } = 256 * 1024;

    /// <summary>Bytes framed into the underlying pipe before it is flushed mid-batch. Default 256 KiB.</summary>
    public int WriteBatchSize { get; init; } = 256 * 1024;

    /// <summary>
    /// Remote-triggered control frames (ping replies, refusals) queued while the remote does not read;
    /// beyond this they are dropped. Default 1024.
    /// </summary>
    public int MaxPendingControlFrames { get; init; } = 1024;

    /// <summary>How long disposal waits to flush queued frames and GoAway before cutting the pipe. Default 5 s.</summary>
    public TimeSpan CloseTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Sends one ping when the session starts, to learn the RTT that window auto-tuning needs. Default true.</summary>
    public bool MeasureRttOnStart { get; init; } = true;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> for a value that cannot work.</summary>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxStreamWindow, InitialStreamWindow, nameof(MaxStreamWindow));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(MaxStreamWindow, (uint)int.MaxValue, nameof(MaxStreamWindow));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxConnectionMemory, (long)InitialStreamWindow, nameof(MaxConnectionMemory));
        ArgumentOutOfRangeException.ThrowIfNegative(FreeReceiveBuffer, nameof(FreeReceiveBuffer));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(FreeReceiveBuffer, MaxConnectionMemory, nameof(FreeReceiveBuffer));
        ArgumentOutOfRangeException.ThrowIfNegative(MaxInboundStreams, nameof(MaxInboundStreams));
        ArgumentOutOfRangeException.ThrowIfNegative(MaxOutboundStreams, nameof(MaxOutboundStreams));
        ArgumentOutOfRangeException.ThrowIfNegative(AcceptBacklog, nameof(AcceptBacklog));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxAckBacklog, 1, nameof(MaxAckBacklog));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxFramePayload, 1, nameof(MaxFramePayload));
        ArgumentOutOfRangeException.ThrowIfLessThan(StreamSendBuffer, 1, nameof(StreamSendBuffer));
        ArgumentOutOfRangeException.ThrowIfLessThan(WriteBatchSize, 1, nameof(WriteBatchSize));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxPendingControlFrames, 1, nameof(MaxPendingControlFrames));
        ArgumentOutOfRangeException.ThrowIfLessThan(CloseTimeout, TimeSpan.Zero, nameof(CloseTimeout));
    }
}
