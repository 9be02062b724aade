namespace Potluck.Protocol.Host;

/// <summary>Limits and timeouts of the host and its connection manager, each with a documented default.</summary>
public sealed record HostOptions
{
    /// <summary>Connections allowed at once; inbound ones past it are closed before any handshake. Default 400.</summary>
    public int MaxConnections { get; init; } = 400;

    /// <summary>Inbound connections still in their handshake at once. Default 128.</summary>
    public int MaxPendingInbound { get; init; } = 128;

    /// <summary>Transport dial plus security and muxer negotiation, for one address. Default 15 s.</summary>
    public TimeSpan DialTimeout { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>An inbound connection must finish its upgrade within this. Default 10 s.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>An inbound stream must finish multistream-select within this. Default 10 s.</summary>
    public TimeSpan StreamNegotiationTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// A connection with no streams for this long is closed unless protected (see <see cref="IHost"/> users
    /// such as gossip, which protect their mesh peers). Zero or negative disables. Default 2 min.
    /// </summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>Reported by identify. Default "potluck/&lt;assembly version&gt;".</summary>
    public string AgentVersion { get; init; } = "potluck/" + (typeof(HostOptions).Assembly.GetName().Version?.ToString(3) ?? "0.0.0");

    /// <summary>Reported by identify. Default "ipfs/0.1.0", as go-libp2p and js-libp2p send.</summary>
    public string ProtocolVersion { get; init; } = "ipfs/0.1.0";

    public PeerStoreOptions PeerStore { get; init; } = new();
}
