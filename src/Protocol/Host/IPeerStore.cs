using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.Host;

/// <summary>
/// What the node knows about other peers (go-libp2p's <c>peerstore.Peerstore</c>): addresses with where they were
/// learned, protocols, public keys, agent strings and measured latency, each bounded by <see cref="PeerStoreOptions"/>.
/// Thread-safe. Persistence is the owner's business (see <see cref="Snapshot"/>).
/// </summary>
public interface IPeerStore
{
    /// <summary>Raised (outside any lock) when a peer's addresses or protocols change.</summary>
    event Action<PeerId>? Updated;

    /// <summary>Peers known.</summary>
    int Count { get; }

    /// <summary>Adds addresses (a trailing /p2p is dropped); a known address keeps the most trusted source.</summary>
    void AddAddresses(PeerId peer, IEnumerable<Multiaddr> addresses, AddressSource source);

    /// <summary>
    /// Adds addresses a third party told us (<see cref="AddressSource.Discovery"/>), kept for the TTL of
    /// <paramref name="channel"/> when the peer is not connected. A store without per-channel TTLs adds them as any
    /// discovered address.
    /// </summary>
    void AddDiscoveredAddresses(PeerId peer, IEnumerable<Multiaddr> addresses, DiscoveryChannel channel) =>
        AddAddresses(peer, addresses, AddressSource.Discovery);

    /// <summary>Replaces the addresses the peer reported about itself (identify).</summary>
    void ReplaceSelfReportedAddresses(PeerId peer, IEnumerable<Multiaddr> addresses);

    void RemoveAddress(PeerId peer, Multiaddr address);

    /// <summary>Replaces the peer's protocols (bounded in count and length).</summary>
    void SetProtocols(PeerId peer, IEnumerable<string> protocols);

    /// <summary>Records the peer's key if it matches the peer id; returns false on a mismatch.</summary>
    bool SetPublicKey(PeerId peer, PublicKey key);

    void SetAgent(PeerId peer, string? agentVersion, string? protocolVersion);

    /// <summary>Folds a round-trip measurement into the peer's latency.</summary>
    void RecordLatency(PeerId peer, TimeSpan rtt);

    void MarkSeen(PeerId peer);

    PeerInfo? Get(PeerId peer);

    /// <summary>The peer's addresses, most trusted and most recently seen first.</summary>
    IReadOnlyList<Multiaddr> GetAddresses(PeerId peer);

    PublicKey? GetPublicKey(PeerId peer);

    bool SupportsProtocol(PeerId peer, string protocol);

    /// <summary>A copy of everything known, for listing and persistence.</summary>
    IReadOnlyList<PeerInfo> Snapshot();

    void Remove(PeerId peer);

    /// <summary>
    /// Keeps the peers <paramref name="keep"/> says yes to from being forgotten or evicted (e.g. the DHT routing table's);
    /// called outside the store's lock. A store that never forgets may ignore it.
    /// </summary>
    void Retain(Func<PeerId, bool> keep)
    {
    }
}
