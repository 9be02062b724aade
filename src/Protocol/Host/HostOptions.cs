namespace Potluck.Protocol.Host;

/// <summary>Limits and timeouts of the host and its connection manager, each with a documented default.</summary>
public sealed record HostOptions
{
    /// <summary>Connections allowed at once; inbound ones past it are closed before any handshake. Default 400.</summary>
    public int MaxConnections { get; init; } = 400;

    /// <summary>
    /// Inbound connections still in their handshake at once (shared fairly: see <see cref="ResourceLimits.MaxPendingInboundPerAddress"/>).
    /// Default 128.
    /// </summary>
    public int MaxPendingInbound { get; init; } = 128;

    /// <summary>Transport dial plus security and muxer negotiation, for one address. Default 15 s.</summary>
    public TimeSpan DialTimeout { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>An inbound connection must finish its upgrade within this. Default 10 s.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>An inbound stream must finish multistream-select within this. Default 10 s.</summary>
    public TimeSpan StreamNegotiationTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// A connection with no streams for this long is closed unless its peer is protected (see
    /// <see cref="IConnectionManager.Protect"/>: gossip protects its mesh peers). Zero or negative disables. Default 2 min.
    /// </summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>
    /// Above this many connections the connection manager trims back to <see cref="LowWater"/>, closing the
    /// connections of the unprotected peers with the lowest tag values first (go-libp2p's connmgr high watermark).
    /// Connections that have not identified come first, then idle ones (no streams), then the lowest tag values.
    /// Zero disables trimming (only <see cref="MaxConnections"/> applies). Default 320, so a busy node keeps room for
    /// new peers below <see cref="MaxConnections"/>; a full node also closes one such connection to admit a new one.
    /// </summary>
    public int HighWater { get; init; } = 320;

    /// <summary>What trimming brings the connection count down to. Default 256.</summary>
    public int LowWater { get; init; } = 256;

    /// <summary>
    /// Connections younger than this are not trimmed (go-libp2p's grace period), except at <see cref="MaxConnections"/>,
    /// where young ones give way down to <see cref="HighWater"/>, and when a dial of this node's own needs room. Default 20 s.
    /// </summary>
    public TimeSpan TrimGracePeriod { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>
    /// How often the connection manager checks its count against <see cref="HighWater"/> and trims when over it: go-libp2p
    /// connmgr's silence period, the interval of its trim ticker. A node whose young connections' grace runs out is back
    /// at <see cref="LowWater"/> within this (the check ran every quarter of <see cref="IdleTimeout"/>, 30 s, before).
    /// A connection that takes the count over <see cref="HighWater"/> also trims at once, every time: go's connmgr once
    /// rate-limited those to one per silence period, but a join's finished young connections (<see cref="TrimFinishedYoung"/>)
    /// go one opening at a time, and with the limit hosts stayed above their high watermark between ticks. Zero or
    /// negative: no tick (only openings trim). Default 10 s (go's default).
    /// </summary>
    public TimeSpan TrimInterval { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// A connection's grace period (<see cref="TrimGracePeriod"/>) ends early once the exchange it was opened for is over:
    /// it has carried a stream of a protocol not in <see cref="BackgroundProtocols"/>, carries none now and no stream but
    /// background ones, and its peer is identified and untagged. Trimming (over <see cref="HighWater"/>, down to
    /// <see cref="LowWater"/>) and making room then treat it as one past its grace period; a protected peer's stays. A
    /// lookup's connections are the common case (a joining node's self-lookup asks about k peers it is not connected to,
    /// and each of them is one more connection at both ends for the grace period).
    /// go-libp2p's connmgr keeps every young connection for its grace period (1 min); rust-libp2p closes one as soon as no
    /// protocol handler keeps it alive (after the swarm's idle connection timeout; kad's handler kept one 10 s once its
    /// requests were over): this is between the two. Over the high watermark such a connection goes at once; below it
    /// <see cref="TrimIdle"/> closes it as one past its grace once it has carried no other stream for
    /// <see cref="IdleConnectionTimeout"/> (a joining node's lookups are over within a second or two, so its connections
    /// that no mesh took go 10–20 s after it joined, not 20–30 s). Default true.
    /// </summary>
    public bool TrimFinishedYoung { get; init; } = true;

    /// <summary>
    /// Closes idle connections below <see cref="HighWater"/> too, on every trim tick (<see cref="TrimInterval"/>): a
    /// connection past its grace period (<see cref="TrimGracePeriod"/>) to an identified, unprotected, untagged peer that
    /// carries no stream but background ones (<see cref="BackgroundProtocols"/>: gossip, identify, ping; none still
    /// negotiating) and has carried no other stream for <see cref="IdleConnectionTimeout"/> (a connection that only ever
    /// carried gossip to a peer in none of this node's meshes, or one whose lookup or lease is long over), the longest
    /// unused first, while more than <see cref="IdleTrimFloor"/> connections are open. Without it such connections stay
    /// for the node's life below the high watermark (go-libp2p's connmgr trims only above it); rust-libp2p closes them:
    /// its gossipsub handler keeps a connection alive only to a mesh peer, and the swarm closes a connection no handler
    /// keeps alive after its idle connection timeout. Gossip protects its mesh peers, the relay its reservations; Kademlia's
    /// routing table needs no live connection. Default true.
    /// </summary>
    public bool TrimIdle { get; init; } = true;

    /// <summary>
    /// How long a connection must have carried no stream but background ones before <see cref="TrimIdle"/> closes it (a
    /// connection that never carried one counts from its opening; it is also always past <see cref="TrimGracePeriod"/>).
    /// Default 10 s (rust-libp2p's Kademlia handler kept a connection 10 s after its last request; with the trim tick a
    /// connection goes 10–20 s after its last use). Must be positive.
    /// </summary>
    public TimeSpan IdleConnectionTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// <see cref="TrimIdle"/> never takes the open connections below this many. Default 12: gossipsub's D (6) mesh peers
    /// and D_lazy (6) peers to gossip to, for a node in a single topic (a node in several topics usually holds more mesh
    /// peers than this, each a gossip target for the topics whose mesh it is not in). At least 0.
    /// </summary>
    public int IdleTrimFloor { get; init; } = 12;

    /// <summary>
    /// Stream protocols (prefixes) every connection carries while open, which do not count as a use of it for
    /// <see cref="TrimFinishedYoung"/> (or Kademlia's close after a lookup): gossip (a mesh peer is protected instead),
    /// identify, ping. Default <see cref="DefaultBackgroundProtocols"/>.
    /// </summary>
    public IReadOnlyList<string> BackgroundProtocols { get; init; } = DefaultBackgroundProtocols;

    /// <summary>/meshsub/, /floodsub/, /ipfs/id/, /ipfs/ping/.</summary>
    public static IReadOnlyList<string> DefaultBackgroundProtocols { get; } = ["/meshsub/", "/floodsub/", "/ipfs/id/", "/ipfs/ping/"];

    /// <summary>Whether <paramref name="protocol"/> is one of <see cref="BackgroundProtocols"/>.</summary>
    public bool IsBackground(string protocol)
    {
        foreach (var prefix in BackgroundProtocols)
        {
            if (protocol.StartsWith(prefix, StringComparison.Ordinal))
            {
                return true;
            }
        }
        return false;
    }

    public PeerStoreOptions PeerStore { get; init; } = new();

    /// <summary>Limits per address, subnet, peer, stream and protocol, and the muxers' memory (the resource manager's scopes).</summary>
    public ResourceLimits Resources { get; init; } = new();

    /// <summary>Per-peer budgets for Potluck's protocols and the misbehaviour score that bans a peer.</summary>
    public PeerBudgetOptions Budgets { get; init; } = new();
}
