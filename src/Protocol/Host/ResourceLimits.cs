namespace Potluck.Protocol.Host;

/// <summary>
/// The resource manager's limits (<see cref="ResourceManager"/>), in the spirit of go-libp2p's scopes: system →
/// address (one IP, and its /24 or /64) → peer → connection → stream → protocol. Defaults fit a home machine: a few
/// hundred peers, a few hundred MiB at most for what strangers can make the node hold. The system-wide connection and
/// handshake caps are <see cref="HostOptions.MaxConnections"/> and <see cref="HostOptions.MaxPendingInbound"/>.
/// </summary>
public sealed record ResourceLimits
{
    /// <summary>Connections to one peer at once (both directions); more are closed after the handshake names the peer. Default 4.</summary>
    public int MaxConnectionsPerPeer { get; init; } = 4;

    /// <summary>Inbound connections (in handshake or open) from one IP address; more are refused before any handshake. Default 16.</summary>
    public int MaxConnectionsPerAddress { get; init; } = 16;

    /// <summary>Inbound connections from one IPv4 /24 or IPv6 /64; more are refused before any handshake. Default 64.</summary>
    public int MaxConnectionsPerSubnet { get; init; } = 64;

    /// <summary>
    /// Inbound handshakes in flight from one IP address, so stalled handshakes from one place cannot take the slots
    /// everyone shares (<see cref="HostOptions.MaxPendingInbound"/>). Default 4.
    /// </summary>
    public int MaxPendingInboundPerAddress { get; init; } = 4;

    /// <summary>Inbound handshakes in flight from one IPv4 /24 or IPv6 /64. Default 16.</summary>
    public int MaxPendingInboundPerSubnet { get; init; } = 16;

    /// <summary>
    /// When every handshake slot (<see cref="HostOptions.MaxPendingInbound"/>) is taken and a socket arrives from an address
    /// with no handshake in flight, the oldest handshake of the most crowded address scope (its /24 or /64, else its IP) is
    /// dropped to make room, provided it has run at least this long: stalled handshakes from many addresses then hold the
    /// slots for this long instead of the whole <see cref="HostOptions.HandshakeTimeout"/>. Default 2 s.
    /// </summary>
    public TimeSpan HandshakeEvictionAge { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Inbound streams one peer may have being handled at once, over all its connections; more are reset. Default 256.</summary>
    public int MaxInboundStreamsPerPeer { get; init; } = 256;

    /// <summary>Inbound streams of one protocol one peer may have being handled at once; more are reset. Default 64.</summary>
    public int MaxInboundStreamsPerProtocol { get; init; } = 64;

    /// <summary>
    /// Memory all muxed connections together may reserve for what remotes can make the node hold: Yamux windows grown
    /// beyond the initial 256 KiB, reserved whole (refused: the window is not grown, backpressure) and bytes buffered in stream inputs, not
    /// yet read, beyond <c>yamux:freeReceiveBuffer</c> (64 KiB) per connection (refused: that stream is reset). An idle
    /// stream reserves nothing. So the muxers' buffers hold at most this plus 64 KiB per connection
    /// (<see cref="HostOptions.MaxConnections"/>: 256 MiB + 400 × 64 KiB = 281 MiB at the defaults). Default 256 MiB.
    /// </summary>
    public long MaxMuxerMemory { get; init; } = 256L * 1024 * 1024;

    /// <summary>
    /// Share of <see cref="MaxMuxerMemory"/> the connections of one peer may reserve together, so no one peer can take
    /// the node's memory (its windows are not grown past it, its streams that buffer past it are reset). It can make the
    /// node buffer at most this plus 64 KiB per connection (4 × 64 KiB). Default 32 MiB.
    /// </summary>
    public long MaxMuxerMemoryPerPeer { get; init; } = 32L * 1024 * 1024;

    /// <summary>
    /// Share of <see cref="MaxMuxerMemory"/> the connections from one IP address may reserve together, however many
    /// identities they use. Default 64 MiB (a quarter of the node's).
    /// </summary>
    public long MaxMuxerMemoryPerAddress { get; init; } = 64L * 1024 * 1024;

    /// <summary>Share of <see cref="MaxMuxerMemory"/> the connections from one IPv4 /24 or IPv6 /64 may reserve together. Default 128 MiB (half).</summary>
    public long MaxMuxerMemoryPerSubnet { get; init; } = 128L * 1024 * 1024;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> for a value that cannot work.</summary>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxConnectionsPerPeer, 1, nameof(MaxConnectionsPerPeer));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxConnectionsPerAddress, 1, nameof(MaxConnectionsPerAddress));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxConnectionsPerSubnet, 1, nameof(MaxConnectionsPerSubnet));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxPendingInboundPerAddress, 1, nameof(MaxPendingInboundPerAddress));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxPendingInboundPerSubnet, 1, nameof(MaxPendingInboundPerSubnet));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxInboundStreamsPerPeer, 1, nameof(MaxInboundStreamsPerPeer));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxInboundStreamsPerProtocol, 1, nameof(MaxInboundStreamsPerProtocol));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxMuxerMemory, 256L * 1024, nameof(MaxMuxerMemory));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxMuxerMemoryPerPeer, 256L * 1024, nameof(MaxMuxerMemoryPerPeer));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxMuxerMemoryPerAddress, 256L * 1024, nameof(MaxMuxerMemoryPerAddress));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxMuxerMemoryPerSubnet, 256L * 1024, nameof(MaxMuxerMemoryPerSubnet));
        ArgumentOutOfRangeException.ThrowIfLessThan(HandshakeEvictionAge, TimeSpan.Zero, nameof(HandshakeEvictionAge));
    }
}
