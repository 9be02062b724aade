using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

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

/// <summary>
/// Which third party told us an address (<see cref="AddressSource.Discovery"/>): it decides how long the address is
/// kept while we are not connected (<see cref="PeerStoreOptions"/>), as go-libp2p picks a TTL per call site.
/// </summary>
public enum DiscoveryChannel
{
    /// <summary>Any other third party (mDNS, an advertisement): <see cref="PeerStoreOptions.DiscoveredAddressTtl"/>.</summary>
    Other,
    /// <summary>A DHT answer (closer peers, provider records): <see cref="PeerStoreOptions.LookupAddressTtl"/>.</summary>
    DhtLookup,
    /// <summary>Gossipsub peer exchange (a signed peer record in a PRUNE): <see cref="PeerStoreOptions.PeerExchangeAddressTtl"/>.</summary>
    PeerExchange,
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

    /// <summary>
    /// Peers kept. Beyond it the least recently seen peer that is neither connected nor retained (in the DHT routing
    /// table) is forgotten; connected and retained peers are never evicted. Default 10,000.
    /// </summary>
    public int MaxPeers { get; init; } = 10_000;

    /// <summary>
    /// How long a peer's addresses are kept after its last connection closes (go-libp2p's RecentlyConnectedAddrTTL, which is
    /// 15 min there now); while connected they do not expire. Default 10 min.
    /// </summary>
    public TimeSpan RecentlyConnectedAddressTtl { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>
    /// How long an address another third party told us (mDNS, an advertisement; see <see cref="LookupAddressTtl"/> and
    /// <see cref="PeerExchangeAddressTtl"/> for the DHT's and gossip's) is kept if we never connect. Addresses typed or
    /// configured (manual) are kept. Default 10 min: longer than go-libp2p's 2 (its mDNS notifee and discovery callers
    /// pass addresses to <c>host.Connect</c>, which adds them with <c>peerstore.TempAddrTTL</c>) on purpose, since our
    /// mDNS hears a peer again only every <c>MdnsOptions.QueryInterval</c> (5 min) and a requester dials a provider it
    /// found by advertisement when it leases, not at once.
    /// </summary>
    public TimeSpan DiscoveredAddressTtl { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>
    /// How long an address a DHT answer gave (closer peers in a lookup, provider records) is kept if we never connect.
    /// Default 2 min, go-libp2p-kad-dht's: its query adds each closer peer with
    /// <c>maybeAddAddrs(next.ID, next.Addrs, pstore.TempAddrTTL)</c> (query.go), each provider a GET_PROVIDERS answer
    /// names with <c>peerstore.TempAddrTTL</c> too (routing.go, findProvidersAsyncRoutine), and go-libp2p's
    /// <c>core/peerstore.TempAddrTTL</c> is 2 min. A lookup that needs the peer again learns it again; a peer we
    /// connect to keeps its addresses while connected, then <see cref="RecentlyConnectedAddressTtl"/>.
    /// </summary>
    public TimeSpan LookupAddressTtl { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>
    /// How long an address from a gossipsub peer-exchange record is kept if we never connect. Default 2 min, as
    /// go-libp2p-pubsub's connector consumes a PX signed peer record with <c>peerstore.TempAddrTTL</c> (gossipsub.go)
    /// before it dials.
    /// </summary>
    public TimeSpan PeerExchangeAddressTtl { get; init; } = TimeSpan.FromMinutes(2);

    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxAddressesPerPeer, 1, nameof(MaxAddressesPerPeer));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxProtocolsPerPeer, 0, nameof(MaxProtocolsPerPeer));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxProtocolLength, 1, nameof(MaxProtocolLength));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxPeers, 1, nameof(MaxPeers));
        ArgumentOutOfRangeException.ThrowIfLessThan(RecentlyConnectedAddressTtl, TimeSpan.Zero, nameof(RecentlyConnectedAddressTtl));
        ArgumentOutOfRangeException.ThrowIfLessThan(DiscoveredAddressTtl, TimeSpan.Zero, nameof(DiscoveredAddressTtl));
        ArgumentOutOfRangeException.ThrowIfLessThan(LookupAddressTtl, TimeSpan.Zero, nameof(LookupAddressTtl));
        ArgumentOutOfRangeException.ThrowIfLessThan(PeerExchangeAddressTtl, TimeSpan.Zero, nameof(PeerExchangeAddressTtl));
    }
}

/// <summary>
/// The peer store: addresses, protocols, public keys and measured latency of known peers, bounded by
/// <see cref="PeerStoreOptions"/>. Thread-safe. Persistence is the owner's business (see <see cref="Snapshot"/>).
/// Bounded as go-libp2p's peerstore is: a connected peer's addresses stay while it is connected, then for
/// <see cref="PeerStoreOptions.RecentlyConnectedAddressTtl"/>; third-party addresses for their channel's TTL
/// (<see cref="PeerStoreOptions.LookupAddressTtl"/>, <see cref="PeerStoreOptions.PeerExchangeAddressTtl"/>,
/// <see cref="PeerStoreOptions.DiscoveredAddressTtl"/>); a peer that is not connected, not retained and has no live
/// address left is forgotten (keys, protocols, agent and all), and beyond <see cref="PeerStoreOptions.MaxPeers"/> the
/// least recently seen such peer goes first. Expired addresses are never returned; the sweep that forgets peers runs
/// at most once a <see cref="SweepInterval"/> as peers are added (and on <see cref="Sweep"/>).
/// </summary>
public sealed class PeerStore : IPeerStore
{
    /// <summary>How often (at most) adding a peer sweeps out forgotten ones.</summary>
    public static readonly TimeSpan SweepInterval = TimeSpan.FromSeconds(30);

    /// <summary>Distinct protocol and agent strings shared between peers (so 200 peers speaking the same 20 protocols hold 20 strings).</summary>
    private const int MaxInterned = 512;

    private readonly object _gate = new();
    private readonly Dictionary<PeerId, Entry> _peers = [];
    private readonly StringInterner _interned = new(MaxInterned);
    private readonly List<Func<PeerId, bool>> _retainers = [];
    private readonly PeerStoreOptions _options;
    private readonly TimeProvider _time;
    private DateTimeOffset _nextSweep;
    private long _forgotten;
    private long _evicted;
    private int _trimming;

    public PeerStore(PeerStoreOptions options, TimeProvider time)
    {
        options.Validate();
        _options = options;
        _time = time;
        _nextSweep = time.GetUtcNow() + SweepInterval;
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

    /// <summary>Peers forgotten so far: their addresses expired while not connected (TTL), or evicted at the cap.</summary>
    public (long Expired, long Evicted) Forgotten
    {
        get
        {
            lock (_gate)
            {
                return (_forgotten, _evicted);
            }
        }
    }

    /// <summary>
    /// Keeps the peers <paramref name="keep"/> says yes to (their entries and addresses), e.g. the DHT routing table's.
    /// Called outside the store's lock, so it may take its owner's.
    /// </summary>
    public void Retain(Func<PeerId, bool> keep)
    {
        ArgumentNullException.ThrowIfNull(keep);
        lock (_gate)
        {
            _retainers.Add(keep);
        }
    }

    /// <summary>A connection to <paramref name="peer"/> opened: its addresses stop expiring until the last one closes.</summary>
    public void Connected(PeerId peer)
    {
        lock (_gate)
        {
            var e = GetOrAdd(peer);
            e.Connections++;
            e.LastSeen = _time.GetUtcNow();
            for (var i = 0; i < e.Addresses.Count; i++)
            {
                if (!e.Addresses[i].Permanent)
                {
                    e.Addresses[i] = e.Addresses[i] with { Expires = DateTimeOffset.MaxValue };
                }
            }
        }
        TrimIfDue();
    }

    /// <summary>A connection to <paramref name="peer"/> closed; after the last, its addresses are kept for <see cref="PeerStoreOptions.RecentlyConnectedAddressTtl"/>.</summary>
    public void Disconnected(PeerId peer)
    {
        lock (_gate)
        {
            if (!_peers.TryGetValue(peer, out var e) || e.Connections == 0 || --e.Connections > 0)
            {
                return;
            }
            var now = _time.GetUtcNow();
            var until = now + _options.RecentlyConnectedAddressTtl;
            e.LastSeen = now;
            e.KeepUntil = until;
            for (var i = 0; i < e.Addresses.Count; i++)
            {
                if (!e.Addresses[i].Permanent && e.Addresses[i].Expires > until)
                {
                    e.Addresses[i] = e.Addresses[i] with { Expires = until };
                }
            }
        }
    }

    public void AddAddresses(PeerId peer, IEnumerable<Multiaddr> addresses, AddressSource source) =>
        AddAddresses(peer, addresses, source, ttl: null);

    /// <summary>
    /// Adds addresses kept for <paramref name="ttl"/> when the peer is not connected (<see cref="Timeout.InfiniteTimeSpan"/>:
    /// kept; null: by source, manual kept, others <see cref="PeerStoreOptions.DiscoveredAddressTtl"/>).
    /// </summary>
    public void AddAddresses(PeerId peer, IEnumerable<Multiaddr> addresses, AddressSource source, TimeSpan? ttl)
    {
        var changed = false;
        lock (_gate)
        {
            var now = _time.GetUtcNow();
            var e = GetOrAdd(peer);
            var permanent = ttl == Timeout.InfiniteTimeSpan || (ttl is null && source == AddressSource.Manual && e.Connections == 0);
            var expires = permanent || e.Connections > 0 ? DateTimeOffset.MaxValue : now + (ttl ?? _options.DiscoveredAddressTtl);
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
                    e.Addresses[index] = existing with
                    {
                        Source = source < existing.Source ? source : existing.Source,
                        LastSeen = now,
                        Permanent = existing.Permanent || permanent,
                        Expires = existing.Expires > expires ? existing.Expires : expires,
                    };
                    continue;
                }
                e.Addresses.Add(new AddressEntry(bare, source, now, expires, permanent));
                changed = true;
                if (e.Addresses.Count > _options.MaxAddressesPerPeer)
                {
                    // Drop an expired address first, else the weakest, oldest: third-party hints go before the peer's own word.
                    var victim = e.Addresses.OrderByDescending(x => x.Expires <= now).ThenByDescending(x => x.Source).ThenBy(x => x.LastSeen).First();
                    e.Addresses.Remove(victim);
                }
            }
        }
        if (changed)
        {
            Updated?.Invoke(peer);
        }
        TrimIfDue();
    }

    /// <summary>Adds addresses a third party told us, kept for <paramref name="channel"/>'s TTL when the peer is not connected.</summary>
    public void AddDiscoveredAddresses(PeerId peer, IEnumerable<Multiaddr> addresses, DiscoveryChannel channel) =>
        AddAddresses(peer, addresses, AddressSource.Discovery, channel switch
        {
            DiscoveryChannel.DhtLookup => _options.LookupAddressTtl,
            DiscoveryChannel.PeerExchange => _options.PeerExchangeAddressTtl,
            _ => _options.DiscoveredAddressTtl,
        });

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
            GetOrAdd(peer).Protocols = _protocolLists.Intern(protocols
                .Where(p => p.Length > 0 && p.Length <= _options.MaxProtocolLength)
                .Distinct(StringComparer.Ordinal)
                .Take(_options.MaxProtocolsPerPeer)
                .Select(Intern)
                .ToArray());
        }
        Updated?.Invoke(peer);
        TrimIfDue();
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
        TrimIfDue();
        return true;
    }

    public void SetAgent(PeerId peer, string? agentVersion, string? protocolVersion)
    {
        lock (_gate)
        {
            var e = GetOrAdd(peer);
            e.AgentVersion = Truncate(agentVersion, _options.MaxProtocolLength) is { } agent ? Intern(agent) : null;
            e.ProtocolVersion = Truncate(protocolVersion, _options.MaxProtocolLength) is { } version ? Intern(version) : null;
        }
        TrimIfDue();
    }

    /// <summary>Folds a round-trip measurement into the peer's latency (EWMA, α = 0.2 as go-libp2p's metrics do).</summary>
    public void RecordLatency(PeerId peer, TimeSpan rtt)
    {
        lock (_gate)
        {
            var e = GetOrAdd(peer);
            e.Latency = e.Latency is { } old ? TimeSpan.FromTicks((long)(old.Ticks * 0.8 + rtt.Ticks * 0.2)) : rtt;
        }
        TrimIfDue();
    }

    public void MarkSeen(PeerId peer)
    {
        lock (_gate)
        {
            GetOrAdd(peer).LastSeen = _time.GetUtcNow();
        }
        TrimIfDue();
    }

    public PeerInfo? Get(PeerId peer)
    {
        lock (_gate)
        {
            return _peers.TryGetValue(peer, out var e) ? e.ToInfo(peer, _time.GetUtcNow()) : null;
        }
    }

    public IReadOnlyList<Multiaddr> GetAddresses(PeerId peer)
    {
        lock (_gate)
        {
            return _peers.TryGetValue(peer, out var e) ? e.LiveAddresses(_time.GetUtcNow()) : [];
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
            var now = _time.GetUtcNow();
            return _peers.Select(kv => kv.Value.ToInfo(kv.Key, now)).ToArray();
        }
    }

    public void Remove(PeerId peer)
    {
        lock (_gate)
        {
            _peers.Remove(peer);
        }
    }

    /// <summary>
    /// Forgets now every peer that is not connected, not retained and has no live address (and was last connected
    /// more than <see cref="PeerStoreOptions.RecentlyConnectedAddressTtl"/> ago), then evicts down to the cap.
    /// </summary>
    public void Sweep()
    {
        lock (_gate)
        {
            _nextSweep = DateTimeOffset.MinValue;
        }
        TrimIfDue();
    }

    private Entry GetOrAdd(PeerId peer)
    {
        if (!_peers.TryGetValue(peer, out var e))
        {
            e = new Entry { LastSeen = _time.GetUtcNow() };
            _peers[peer] = e;
        }
        return e;
    }

    /// <summary>
    /// Sweeps when due, evicts when over the cap. Candidates are chosen under the lock, the retainers asked outside it
    /// (they take their owners' locks), and a candidate is removed only if it is still unconnected and unseen since.
    /// </summary>
    private void TrimIfDue()
    {
        List<(PeerId Peer, DateTimeOffset Seen, bool Expired)> candidates;
        Func<PeerId, bool>[] retainers;
        int excess;
        lock (_gate)
        {
            var now = _time.GetUtcNow();
            var sweep = now >= _nextSweep;
            excess = _peers.Count - _options.MaxPeers;
            if ((!sweep && excess <= 0) || _trimming != 0)
            {
                return;
            }
            _trimming = 1;
            if (sweep)
            {
                _nextSweep = now + SweepInterval;
            }
            candidates = [];
            foreach (var (peer, e) in _peers)
            {
                if (e.Connections > 0)
                {
                    continue;
                }
                var expired = sweep && e.IsForgettable(now);
                if (expired || excess > 0)
                {
                    candidates.Add((peer, e.LastSeen, expired));
                }
            }
            retainers = [.. _retainers];
        }
        try
        {
            // Expired ones first, then least recently seen: evict a sixteenth beyond the cap at a time, so a flood of
            // new identities pays for the sort once per many arrivals.
            candidates.Sort((a, b) => a.Expired != b.Expired ? (a.Expired ? -1 : 1) : a.Seen.CompareTo(b.Seen));
            var keep = candidates.Where(c => !retainers.Any(r => r(c.Peer))).ToList();
            lock (_gate)
            {
                var room = excess > 0 ? excess + _options.MaxPeers / 16 : 0;
                foreach (var (peer, seen, expired) in keep)
                {
                    if (!expired && room <= 0)
                    {
                        break;
                    }
                    if (!_peers.TryGetValue(peer, out var e) || e.Connections > 0 || e.LastSeen != seen)
                    {
                        continue;
                    }
                    _peers.Remove(peer);
                    if (expired)
                    {
                        _forgotten++;
                    }
                    else
                    {
                        _evicted++;
                    }
                    room--;
                }
            }
        }
        finally
        {
            lock (_gate)
            {
                _trimming = 0;
            }
        }
    }

    private string Intern(string s) => _interned.Intern(s);

    private static string? Truncate(string? s, int max) => s is null ? null : s.Length <= max ? s : s[..max];

    private sealed record AddressEntry(Multiaddr Address, AddressSource Source, DateTimeOffset LastSeen, DateTimeOffset Expires, bool Permanent);

    private sealed class Entry
    {
        public List<AddressEntry> Addresses { get; } = [];
        /// <summary>Shared with other peers' entries that hold the same list (<see cref="StringListInterner"/>): replaced, never written into.</summary>
        public string[] Protocols { get; set; } = [];
        public PublicKey? PublicKey { get; set; }
        public string? AgentVersion { get; set; }
        public string? ProtocolVersion { get; set; }
        public TimeSpan? Latency { get; set; }
        public DateTimeOffset LastSeen { get; set; }
        public int Connections { get; set; }
        public DateTimeOffset KeepUntil { get; set; }

        /// <summary>Not connected, no address left to dial it by, and not connected recently.</summary>
        public bool IsForgettable(DateTimeOffset now) =>
            Connections == 0 && now >= KeepUntil && !Addresses.Any(a => a.Expires > now);

        public Multiaddr[] LiveAddresses(DateTimeOffset now) =>
            Addresses.Where(x => x.Expires > now).OrderBy(x => x.Source).ThenByDescending(x => x.LastSeen).Select(x => x.Address).ToArray();

        public PeerInfo ToInfo(PeerId id, DateTimeOffset now) => new(
            id,
            LiveAddresses(now),
            Protocols,
            PublicKey,
            AgentVersion,
            ProtocolVersion,
            Latency,
            LastSeen);
    }

    // Declared last, so the compiler-generated names of the members above (which events_hash hashes) stay as they were.
    /// <summary>Distinct protocol lists shared between peers (the peers of one build send one list: one array, not one per peer).</summary>
    internal const int MaxInternedLists = 128;

    private readonly StringListInterner _protocolLists = new(MaxInternedLists);
}
