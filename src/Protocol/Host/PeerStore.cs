using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.Host;

/// <summary>Where an address was learned, which decides how much it is trusted and how long it is kept.</summary>
public enum AddressSource
{
    /// <summary>Configured or typed by the user.</summary>
    Manual,
    /// <summary>The peer told us itself (identify, signed advertisement).</summary>
    Identify,
    /// <summary>A third party told us (DHT, mDNS, gossip).</summary>
    Discovery,
    /// <summary>We saw the peer connect from it.</summary>
    Observed,
}

/// <summary>What the node knows about one peer. A snapshot: later changes make a new one.</summary>
public sealed record PeerInfo(
    PeerId Id,
    IReadOnlyList<Multiaddr> Addresses,
    IReadOnlyList<string> Protocols,
    PublicKey? PublicKey,
    string? AgentVersion,
    string? ProtocolVersion,
    TimeSpan? Latency,
    DateTimeOffset LastSeen);

/// <summary>Limits on what the peer store keeps about remote peers, which remote peers control.</summary>
public sealed record PeerStoreOptions
{
    /// <summary>Addresses kept per peer (go-libp2p keeps a similar handful); older ones are dropped first. Default 32.</summary>
    public int MaxAddressesPerPeer { get; init; } = 32;

    /// <summary>Protocols kept per peer, as go-libp2p caps identify's list. Default 128.</summary>
    public int MaxProtocolsPerPeer { get; init; } = 128;

    /// <summary>Longest protocol id kept. Default 256 characters.</summary>
    public int MaxProtocolLength { get; init; } = 256;

    /// <summary>Peers kept; the least recently seen are evicted beyond it. Default 10,000.</summary>
    public int MaxPeers { get; init; } = 10_000;
}

/// <summary>
/// The peer store: addresses, protocols, public keys and measured latency of known peers, bounded by
/// <see cref="PeerStoreOptions"/>. Thread-safe. Persistence is the owner's business (see <see cref="Snapshot"/>).
/// </summary>
public sealed class PeerStore : IPeerStore
{
    private readonly object _gate = new();
    private readonly Dictionary<PeerId, Entry> _peers = [];
    private readonly PeerStoreOptions _options;
    private readonly TimeProvider _time;

    public PeerStore(PeerStoreOptions options, TimeProvider time)
    {
        _options = options;
        _time = time;
    }

    /// <summary>Raised (outside the lock) when a peer's addresses or protocols change.</summary>
    public event Action<PeerId>? Updated;

    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _peers.Count;
            }
        }
    }

    public void AddAddresses(PeerId peer, IEnumerable<Multiaddr> addresses, AddressSource source)
    {
        var changed = false;
        lock (_gate)
        {
            var e = GetOrAdd(peer);
            foreach (var a in addresses)
            {
                var bare = a.WithoutPeer();
                if (bare.Components.Count == 0)
                {
                    continue;
                }
                var index = e.Addresses.FindIndex(x => x.Address == bare);
                if (index >= 0)
                {
                    var existing = e.Addresses[index];
                    e.Addresses[index] = existing with { Source = source < existing.Source ? source : existing.Source, LastSeen = _time.GetUtcNow() };
                    continue;
                }
                e.Addresses.Add(new AddressEntry(bare, source, _time.GetUtcNow()));
                changed = true;
                if (e.Addresses.Count > _options.MaxAddressesPerPeer)
                {
                    // Drop the weakest, oldest address: third-party hints go before the peer's own word.
                    var victim = e.Addresses.OrderByDescending(x => x.Source).ThenBy(x => x.LastSeen).First();
                    e.Addresses.Remove(victim);
                }
            }
        }
        if (changed)
        {
            Updated?.Invoke(peer);
        }
    }

    /// <summary>Replaces the addresses the peer reported about itself (identify).</summary>
    public void ReplaceSelfReportedAddresses(PeerId peer, IEnumerable<Multiaddr> addresses)
    {
        lock (_gate)
        {
            GetOrAdd(peer).Addresses.RemoveAll(x => x.Source == AddressSource.Identify);
        }
        AddAddresses(peer, addresses, AddressSource.Identify);
    }

    public void RemoveAddress(PeerId peer, Multiaddr address)
    {
        lock (_gate)
        {
            if (_peers.TryGetValue(peer, out var e))
            {
                var bare = address.WithoutPeer();
                e.Addresses.RemoveAll(x => x.Address == bare);
            }
        }
    }

    public void SetProtocols(PeerId peer, IEnumerable<string> protocols)
    {
        lock (_gate)
        {
            GetOrAdd(peer).Protocols = protocols
                .Where(p => p.Length > 0 && p.Length <= _options.MaxProtocolLength)
                .Distinct(StringComparer.Ordinal)
                .Take(_options.MaxProtocolsPerPeer)
                .ToArray();
        }
        Updated?.Invoke(peer);
    }

    /// <summary>Records the peer's key if it matches the peer id; returns false on a mismatch.</summary>
    public bool SetPublicKey(PeerId peer, PublicKey key)
    {
        if (!peer.Matches(key))
        {
            return false;
        }
        lock (_gate)
        {
            GetOrAdd(peer).PublicKey = key;
        }
        return true;
    }

    public void SetAgent(PeerId peer, string? agentVersion, string? protocolVersion)
    {
        lock (_gate)
        {
            var e = GetOrAdd(peer);
            e.AgentVersion = Truncate(agentVersion, _options.MaxProtocolLength);
            e.ProtocolVersion = Truncate(protocolVersion, _options.MaxProtocolLength);
        }
    }

    /// <summary>Folds a round-trip measurement into the peer's latency (EWMA, α = 0.2 as go-libp2p's metrics do).</summary>
    public void RecordLatency(PeerId peer, TimeSpan rtt)
    {
        lock (_gate)
        {
            var e = GetOrAdd(peer);
            e.Latency = e.Latency is { } old ? TimeSpan.FromTicks((long)(old.Ticks * 0.8 + rtt.Ticks * 0.2)) : rtt;
        }
    }

    public void MarkSeen(PeerId peer)
    {
        lock (_gate)
        {
            GetOrAdd(peer).LastSeen = _time.GetUtcNow();
        }
    }

    public PeerInfo? Get(PeerId peer)
    {
        lock (_gate)
        {
            return _peers.TryGetValue(peer, out var e) ? e.ToInfo(peer) : null;
        }
    }

    public IReadOnlyList<Multiaddr> GetAddresses(PeerId peer)
    {
        lock (_gate)
        {
            return _peers.TryGetValue(peer, out var e)
                ? e.Addresses.OrderBy(x => x.Source).ThenByDescending(x => x.LastSeen).Select(x => x.Address).ToArray()
                : [];
        }
    }

    public PublicKey? GetPublicKey(PeerId peer)
    {
        lock (_gate)
        {
            return _peers.TryGetValue(peer, out var e) ? e.PublicKey : null;
        }
    }

    public bool SupportsProtocol(PeerId peer, string protocol)
    {
        lock (_gate)
        {
            return _peers.TryGetValue(peer, out var e) && e.Protocols.Contains(protocol, StringComparer.Ordinal);
        }
    }

    /// <summary>A copy of everything known, for listing and persistence.</summary>
    public IReadOnlyList<PeerInfo> Snapshot()
    {
        lock (_gate)
        {
            return _peers.Select(kv => kv.Value.ToInfo(kv.Key)).ToArray();
        }
    }

    public void Remove(PeerId peer)
    {
        lock (_gate)
        {
            _peers.Remove(peer);
        }
    }

    private Entry GetOrAdd(PeerId peer)
    {
        if (!_peers.TryGetValue(peer, out var e))
        {
            if (_peers.Count >= _options.MaxPeers)
            {
                var oldest = _peers.MinBy(kv => kv.Value.LastSeen).Key;
                _peers.Remove(oldest);
            }
            e = new Entry { LastSeen = _time.GetUtcNow() };
            _peers[peer] = e;
        }
        return e;
    }

    private static string? Truncate(string? s, int max) => s is null ? null : s.Length <= max ? s : s[..max];

    private sealed record AddressEntry(Multiaddr Address, AddressSource Source, DateTimeOffset LastSeen);

    private sealed class Entry
    {
        public List<AddressEntry> Addresses { get; } = [];
        public string[] Protocols { get; set; } = [];
        public PublicKey? PublicKey { get; set; }
        public string? AgentVersion { get; set; }
        public string? ProtocolVersion { get; set; }
        public TimeSpan? Latency { get; set; }
        public DateTimeOffset LastSeen { get; set; }

        public PeerInfo ToInfo(PeerId id) => new(
            id,
            Addresses.OrderBy(x => x.Source).ThenByDescending(x => x.LastSeen).Select(x => x.Address).ToArray(),
            Protocols,
            PublicKey,
            AgentVersion,
            ProtocolVersion,
            Latency,
            LastSeen);
    }
}
