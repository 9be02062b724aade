using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Host;

/// <summary>What the connection manager knows about one peer's tags (go-libp2p's <c>connmgr.TagInfo</c>).</summary>
public sealed record ConnectionTagInfo(PeerId Peer, int Value, IReadOnlyDictionary<string, int> Tags, IReadOnlyList<string> ProtectedBy);

/// <summary>
/// The connection manager as protocols see it (go-libp2p's <c>core/connmgr.ConnManager</c>): which connections are
/// open, which peers must not be closed (<see cref="Protect"/>, per tag, as gossip protects its mesh peers) and how
/// much each peer is worth keeping (<see cref="TagPeer"/>: the sum of a peer's tag values decides who goes first when
/// the connection count is trimmed back from <see cref="HostOptions.HighWater"/> to <see cref="HostOptions.LowWater"/>).
/// Protected peers are never closed for being idle or by trimming. Thread-safe.
/// </summary>
public interface IConnectionManager
{
    /// <summary>Open connections.</summary>
    int ConnectionCount { get; }

    /// <summary>All open connections.</summary>
    IReadOnlyList<IConnection> Connections { get; }

    /// <summary>Open connections to <paramref name="peer"/>.</summary>
    IReadOnlyList<IConnection> ConnectionsTo(PeerId peer);

    /// <summary>Whether at least one connection to <paramref name="peer"/> is open.</summary>
    bool IsConnected(PeerId peer);

    /// <summary>Exempts the peer's connections from idle closing and trimming while any tag protects it.</summary>
    void Protect(PeerId peer, string tag);

    /// <summary>Removes one protection; returns whether the peer is still protected by another tag.</summary>
    bool Unprotect(PeerId peer, string tag);

    /// <summary>Whether <paramref name="tag"/> protects the peer, or with a null tag, whether any does.</summary>
    bool IsProtected(PeerId peer, string? tag = null);

    /// <summary>Sets the value of one of the peer's tags (a higher sum keeps its connections longer when trimming).</summary>
    void TagPeer(PeerId peer, string tag, int value);

    /// <summary>Removes one of the peer's tags.</summary>
    void UntagPeer(PeerId peer, string tag);

    /// <summary>Sets a tag to <paramref name="upsert"/> of its current value (0 when unset), atomically.</summary>
    void UpsertTag(PeerId peer, string tag, Func<int, int> upsert);

    /// <summary>The peer's tags and protections, or null when it has none.</summary>
    ConnectionTagInfo? GetTagInfo(PeerId peer);

    /// <summary>
    /// Closes connections of the least valuable unprotected peers (lowest tag sum, then longest idle) until at most
    /// <see cref="HostOptions.LowWater"/> remain; a no-op when trimming is off. Returns how many were closed.
    /// </summary>
    ValueTask<int> TrimOpenConnectionsAsync(CancellationToken ct);

    /// <summary>
    /// Whether <paramref name="peer"/> closed its last connection to us (we did not) within <paramref name="within"/> and
    /// no connection to it is open now: a peer that trims us is full, and dialling it again at once for something another
    /// peer can answer (a DHT query) only makes it close someone else. Remembers the most recent
    /// <see cref="ConnectionManager.MaxHungUpPeers"/> peers.
    /// </summary>
    bool HungUpRecently(PeerId peer, TimeSpan within) => false;

    /// <summary>
    /// Closes this host's connections to <paramref name="peer"/> when they were opened for a short exchange that is over
    /// (a DHT lookup's requests): only if every open connection to it was opened at or after <paramref name="openedSince"/>,
    /// the peer is unprotected and untagged, and no connection carries a stream whose protocol <paramref name="background"/>
    /// does not accept. Otherwise nothing closes. Returns how many connections it closed (reason <c>unused</c>). A node at
    /// its cap that closes these at once makes room now, instead of trimming a connection someone still uses later.
    /// </summary>
    int CloseUnused(PeerId peer, DateTimeOffset openedSince, Func<string, bool> background) => 0;

    /// <summary>
    /// How many more connections fit before this host starts closing others to make room: below
    /// <see cref="HostOptions.MaxConnections"/> and the trimming watermark <see cref="HostOptions.HighWater"/> (when on).
    /// Protocols that may dial many peers for one purpose (a DHT lookup) read it to dial fewer when connections are scarce.
    /// </summary>
    int FreeSlots => int.MaxValue;
}
