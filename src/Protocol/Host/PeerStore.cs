using System.Runtime.InteropServices;
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

    /// <summary>
    /// Distinct protocol lists shared between peers (peers running the same software report the same list, so each peer
    /// holds a reference, not its own array); a list beyond this many stays the peer's own.
    /// </summary>
    internal const int MaxInternedProtocolLists = 64;

    private readonly object _gate = new();
    private readonly Dictionary<PeerId, Entry> _peers = [];
    private readonly StringInterner _interned = new(MaxInterned);
    private readonly StringListInterner _protocolLists = new(MaxInternedProtocolLists);
    private readonly List<Func<PeerId, bool>> _retainers = [];
    private readonly PeerStoreOptions _options;
    private readonly TimeProvider _time;
    private DateTimeOffset _nextSweep;
    private long _forgotten;
    private long _evicted;
    private int _trimming;

    /// <summary>Where the ids and address bytes other nodes of this process hold are found (a simulated mesh's); <see cref="SharedValues.None"/> otherwise.</summary>
    private readonly SharedValues _shared;

    /// <param name="shared">
    /// Values shared with the other nodes of this process (<see cref="NodeRuntime.SharedValues"/>): a peer's id and each
    /// address are kept as the instance another node's store holds, if any. Null: <see cref="SharedValues.None"/>.
    /// </param>
    public PeerStore(PeerStoreOptions options, TimeProvider time, SharedValues? shared = null)
    {
        options.Validate();
        _options = options;
        _time = time;
        _shared = shared ?? SharedValues.None;
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
            var e = GetOrAddFull(peer);
            e.AddConnections(1);
            e.LastSeen = Ticks(_time.GetUtcNow());
            foreach (ref var a in e.Addresses)
            {
                if (!a.Permanent)
                {
                    a.Expires = Never;
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
            if (!_peers.TryGetValue(peer, out var found) || found is not FullEntry e || e.Connections == 0 || e.AddConnections(-1) > 0)
            {
                return;
            }
            var now = _time.GetUtcNow();
            var until = Ticks(now + _options.RecentlyConnectedAddressTtl);
            e.LastSeen = Ticks(now);
            e.SetKeepUntil(until);
            foreach (ref var a in e.Addresses)
            {
                if (!a.Permanent && a.Expires > until)
                {
                    a.Expires = until;
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
            var clock = _time.GetUtcNow();
            var now = Ticks(clock);
            var e = GetOrAdd(peer);
            var permanent = ttl == Timeout.InfiniteTimeSpan || (ttl is null && source == AddressSource.Manual && e.Connections == 0);
            var expires = permanent || e.Connections > 0 ? Never : Ticks(clock + (ttl ?? _options.DiscoveredAddressTtl));
            foreach (var a in addresses)
            {
                var bare = a.WithoutPeer();
                if (bare.Components.Count == 0)
                {
                    continue;
                }
                var bytes = bare.Bytes.Span;
                var index = e.IndexOf(bytes);
                if (index >= 0)
                {
                    ref var existing = ref e.Addresses[index];
                    existing.Source = source < existing.Source ? source : existing.Source;
                    existing.LastSeen = now;
                    existing.Permanent = existing.Permanent || permanent;
                    existing.Expires = existing.Expires > expires ? existing.Expires : expires;
                    continue;
                }
                e.Add(new AddressEntry(_shared.ShareAddressBytes(bytes.ToArray()), source, now, expires, permanent));
                changed = true;
                if (e.Addresses.Length > _options.MaxAddressesPerPeer)
                {
                    // Drop an expired address first, else the weakest, oldest: third-party hints go before the peer's own word.
                    e.RemoveAt(e.VictimIndex(now));
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
            GetOrAdd(peer).RemoveAll(static (in AddressEntry x, ReadOnlySpan<byte> _) => x.Source == AddressSource.Identify, []);
        }
        AddAddresses(peer, addresses, AddressSource.Identify);
    }

    public void RemoveAddress(PeerId peer, Multiaddr address)
    {
        lock (_gate)
        {
            if (_peers.TryGetValue(peer, out var e))
            {
                e.RemoveAll(static (in AddressEntry x, ReadOnlySpan<byte> bare) => x.Bytes.AsSpan().SequenceEqual(bare), address.WithoutPeer().Bytes.Span);
            }
        }
    }

    public void SetProtocols(PeerId peer, IEnumerable<string> protocols)
    {
        lock (_gate)
        {
            GetOrAddFull(peer).SetProtocols(InternList(protocols
                .Where(p => p.Length > 0 && p.Length <= _options.MaxProtocolLength)
                .Distinct(StringComparer.Ordinal)
                .Take(_options.MaxProtocolsPerPeer)
                .Select(Intern)
                .ToArray()));
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
            GetOrAddFull(peer).SetKey(peer, key);
        }
        TrimIfDue();
        return true;
    }

    public void SetAgent(PeerId peer, string? agentVersion, string? protocolVersion)
    {
        lock (_gate)
        {
            var e = GetOrAddFull(peer);
            e.SetAgent(
                Truncate(agentVersion, _options.MaxProtocolLength) is { } agent ? Intern(agent) : null,
                Truncate(protocolVersion, _options.MaxProtocolLength) is { } version ? Intern(version) : null);
        }
        TrimIfDue();
    }

    /// <summary>Folds a round-trip measurement into the peer's latency (EWMA, α = 0.2 as go-libp2p's metrics do).</summary>
    public void RecordLatency(PeerId peer, TimeSpan rtt)
    {
        lock (_gate)
        {
            var e = GetOrAddFull(peer);
            e.SetLatency(e.LatencyTicks != NoLatency ? (long)(e.LatencyTicks * 0.8 + rtt.Ticks * 0.2) : rtt.Ticks);
        }
        TrimIfDue();
    }

    public void MarkSeen(PeerId peer)
    {
        lock (_gate)
        {
            GetOrAdd(peer).LastSeen = Ticks(_time.GetUtcNow());
        }
        TrimIfDue();
    }

    public PeerInfo? Get(PeerId peer)
    {
        lock (_gate)
        {
            return _peers.TryGetValue(peer, out var e) ? e.ToInfo(peer, Ticks(_time.GetUtcNow())) : null;
        }
    }

    public IReadOnlyList<Multiaddr> GetAddresses(PeerId peer)
    {
        lock (_gate)
        {
            return _peers.TryGetValue(peer, out var e) ? e.LiveAddresses(Ticks(_time.GetUtcNow())) : [];
        }
    }

    public PublicKey? GetPublicKey(PeerId peer)
    {
        lock (_gate)
        {
            return _peers.TryGetValue(peer, out var e) ? e.Key(peer) : null;
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
            var now = Ticks(_time.GetUtcNow());
            return _peers.Select(kv => kv.Value.ToInfo(kv.Key, now)).ToArray();
        }
    }

    /// <summary>
    /// For tests and diagnostics: entries kept as addresses and a time only (peers a third party named that we never
    /// connected to, nor learned a key, protocol, agent or latency of), and full ones.
    /// </summary>
    internal (int AddressesOnly, int Full) EntryKinds
    {
        get
        {
            lock (_gate)
            {
                var full = _peers.Values.Count(e => e is FullEntry);
                return (_peers.Count - full, full);
            }
        }
    }

    /// <summary>Peers whose addresses take an array of their own (two or more addresses; tests).</summary>
    internal int PeersWithAddressArrays
    {
        get
        {
            lock (_gate)
            {
                return _peers.Values.Count(e => e.HasAddressArray);
            }
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
            e = new Entry { LastSeen = Ticks(_time.GetUtcNow()) };
            _peers[_shared.Share(peer)] = e;
        }
        return e;
    }

    /// <summary>
    /// The peer's full entry: made the first time something beyond addresses is known of it (a connection, a key,
    /// protocols, an agent, a latency), from its addresses-only entry if it had one. Replacing a dictionary value keeps
    /// the peer's place in the table, so the store enumerates its peers in the same order as before.
    /// </summary>
    private FullEntry GetOrAddFull(PeerId peer)
    {
        if (_peers.TryGetValue(peer, out var e))
        {
            if (e is FullEntry full)
            {
                return full;
            }
            var upgraded = new FullEntry(e);
            _peers[peer] = upgraded;
            return upgraded;
        }
        var added = new FullEntry { LastSeen = Ticks(_time.GetUtcNow()) };
        _peers[_shared.Share(peer)] = added;
        return added;
    }

    /// <summary>
    /// Sweeps when due, evicts when over the cap. Candidates are chosen under the lock, the retainers asked outside it
    /// (they take their owners' locks), and a candidate is removed only if it is still unconnected and unseen since.
    /// </summary>
    private void TrimIfDue()
    {
        List<(PeerId Peer, long Seen, bool Expired)> candidates;
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
                var expired = sweep && e.IsForgettable(Ticks(now));
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

    /// <summary>The kept list equal to <paramref name="list"/>, else the list itself (kept while there is room).</summary>
    private string[] InternList(string[] list) => _protocolLists.Intern(list);

    /// <summary>Distinct protocol lists held once for many peers now (tests and diagnostics).</summary>
    internal int InternedProtocolLists => _protocolLists.Count;

    private static string? Truncate(string? s, int max) => s is null ? null : s.Length <= max ? s : s[..max];

    /// <summary>Times are kept as UTC ticks (8 bytes, where a <see cref="DateTimeOffset"/> takes 16).</summary>
    private static long Ticks(DateTimeOffset t) => t.UtcTicks;

    private static DateTimeOffset FromTicks(long ticks) => new(ticks, TimeSpan.Zero);

    /// <summary>An address that does not expire (while connected, or permanent).</summary>
    private static readonly long Never = DateTimeOffset.MaxValue.UtcTicks;

    private const long NoLatency = long.MinValue;

    /// <summary>An entry's key is the one its peer id embeds (<see cref="Entry.Key"/>).</summary>
    private static readonly object KeyInId = new();

    /// <summary>
    /// One address of a peer: its binary multiaddr (the form that travels; a <see cref="Multiaddr"/> is made from it when
    /// the address is read) and how it was learned, inline in the peer's array: ~32 bytes and the bytes' array, where a
    /// record around a parsed multiaddr (its components, their values, its bytes and text) took ~300.
    /// </summary>
    private struct AddressEntry(byte[] bytes, AddressSource source, long lastSeen, long expires, bool permanent)
    {
        public readonly byte[] Bytes = bytes;
        public long LastSeen = lastSeen;
        public long Expires = expires;
        public AddressSource Source = source;
        public bool Permanent = permanent;
    }

    private delegate bool AddressPredicate(in AddressEntry entry, ReadOnlySpan<byte> argument);

    /// <summary>
    /// What the node knows about one peer, in one object. Its addresses: the only one inline in the object (almost every
    /// peer has exactly one: 120 bytes a peer where the object and a one-entry array took 88 + 56), two or more in an
    /// exactly sized array, in the order they came either way. This base holds addresses and when the peer was last
    /// seen, all the store knows of a peer a lookup or a peer exchange named (64 bytes); <see cref="FullEntry"/> adds the
    /// rest (120 bytes) once more is known. Read as a base, the rest is what a new entry holds: no connection, no
    /// protocols, no key, agent or latency.
    /// </summary>
    private class Entry
    {
        private AddressEntry _only;
        private AddressEntry[]? _several;
        public long LastSeen;

        private bool HasOnly => _only.Bytes is not null;

        public bool HasAddressArray => _several is not null;

        /// <summary>The peer's addresses, in the order they came: a view of the inline one or of the array (read and written in place).</summary>
        public Span<AddressEntry> Addresses =>
            _several is { } several ? several : HasOnly ? MemoryMarshal.CreateSpan(ref _only, 1) : default;
        public virtual string[] Protocols => [];
        public virtual string? AgentVersion => null;
        public virtual string? ProtocolVersion => null;
        public virtual long LatencyTicks => NoLatency;
        public virtual long KeepUntil => 0;
        public virtual int Connections => 0;

        public virtual PublicKey? Key(PeerId id) => null;

        /// <summary>For <see cref="FullEntry"/>: takes over <paramref name="from"/>'s addresses and time.</summary>
        protected void CopyFrom(Entry from)
        {
            _only = from._only;
            _several = from._several;
            LastSeen = from.LastSeen;
        }

        public int IndexOf(ReadOnlySpan<byte> bytes)
        {
            for (var i = 0; i < Addresses.Length; i++)
            {
                if (Addresses[i].Bytes.AsSpan().SequenceEqual(bytes))
                {
                    return i;
                }
            }
            return -1;
        }

        public void Add(AddressEntry entry)
        {
            if (_several is null && !HasOnly)
            {
                _only = entry;
                return;
            }
            var current = Addresses;
            var grown = new AddressEntry[current.Length + 1];
            current.CopyTo(grown);
            grown[^1] = entry;
            _several = grown;
            _only = default;
        }

        public void RemoveAt(int index)
        {
            if (_several is null)
            {
                ArgumentOutOfRangeException.ThrowIfNotEqual(index, 0);
                ArgumentOutOfRangeException.ThrowIfEqual(HasOnly, false);
                _only = default;
                return;
            }
            if (_several.Length == 2)
            {
                _only = _several[1 - index];
                _several = null;
                return;
            }
            var shrunk = new AddressEntry[_several.Length - 1];
            _several.AsSpan(0, index).CopyTo(shrunk);
            _several.AsSpan(index + 1).CopyTo(shrunk.AsSpan(index));
            _several = shrunk;
        }

        public void RemoveAll(AddressPredicate match, ReadOnlySpan<byte> argument)
        {
            for (var i = Addresses.Length - 1; i >= 0; i--)
            {
                if (match(in Addresses[i], argument))
                {
                    RemoveAt(i);
                }
            }
        }

        /// <summary>
        /// The address to drop at the cap: an expired one first, else the weakest source, else the least recently seen;
        /// the first such in order (as a stable sort by those keys picks it).
        /// </summary>
        public int VictimIndex(long now)
        {
            var best = 0;
            for (var i = 1; i < Addresses.Length; i++)
            {
                ref readonly var a = ref Addresses[i];
                ref readonly var b = ref Addresses[best];
                bool aExpired = a.Expires <= now, bExpired = b.Expires <= now;
                if (aExpired != bExpired)
                {
                    if (aExpired)
                    {
                        best = i;
                    }
                    continue;
                }
                if (a.Source != b.Source)
                {
                    if (a.Source > b.Source)
                    {
                        best = i;
                    }
                    continue;
                }
                if (a.LastSeen < b.LastSeen)
                {
                    best = i;
                }
            }
            return best;
        }

        /// <summary>Not connected, no address left to dial it by, and not connected recently.</summary>
        public bool IsForgettable(long now)
        {
            if (Connections != 0 || now < KeepUntil)
            {
                return false;
            }
            foreach (ref readonly var a in Addresses)
            {
                if (a.Expires > now)
                {
                    return false;
                }
            }
            return true;
        }

        /// <summary>The live addresses, the peer's own word first, then the most recently seen (a stable order).</summary>
        public Multiaddr[] LiveAddresses(long now)
        {
            var live = 0;
            foreach (ref readonly var a in Addresses)
            {
                if (a.Expires > now)
                {
                    live++;
                }
            }
            if (live == 0)
            {
                return [];
            }
            var order = new (AddressSource Source, long LastSeen, int Index)[live];
            var n = 0;
            for (var i = 0; i < Addresses.Length; i++)
            {
                if (Addresses[i].Expires > now)
                {
                    order[n++] = (Addresses[i].Source, Addresses[i].LastSeen, i);
                }
            }
            // By source, then most recently seen, ties in stored order: the order OrderBy(Source).ThenByDescending(LastSeen) gave.
            Array.Sort(order, static (x, y) => x.Source != y.Source ? x.Source.CompareTo(y.Source)
                : x.LastSeen != y.LastSeen ? y.LastSeen.CompareTo(x.LastSeen) : x.Index.CompareTo(y.Index));
            var result = new Multiaddr[live];
            for (var i = 0; i < live; i++)
            {
                result[i] = Multiaddr.FromBytes(Addresses[order[i].Index].Bytes);
            }
            return result;
        }

        public PeerInfo ToInfo(PeerId id, long now) => new(
            id,
            LiveAddresses(now),
            Protocols,
            Key(id),
            AgentVersion,
            ProtocolVersion,
            LatencyTicks == NoLatency ? null : TimeSpan.FromTicks(LatencyTicks),
            FromTicks(LastSeen));
    }

    /// <summary>
    /// A peer the node knows more of than addresses (<see cref="Entry"/>): it connected, or we learned its key, protocols,
    /// agent or latency. Never made an addresses-only entry again (what it holds stays known until it is forgotten).
    /// </summary>
    private sealed class FullEntry : Entry
    {
        public FullEntry()
        {
        }

        public FullEntry(Entry from) => CopyFrom(from);

        /// <summary>Shared with other peers' entries that hold the same list (<see cref="InternList"/>): replaced, never written into.</summary>
        private string[] _protocols = [];
        /// <summary>
        /// The peer's key: null while not known; <see cref="KeyInId"/> when it is the key the peer's identity-hashed id
        /// embeds (every Ed25519 peer: read back from the id when asked, ~100 bytes a peer not held); else the key.
        /// </summary>
        private object? _key;
        private string? _agentVersion;
        private string? _protocolVersion;
        private long _latencyTicks = NoLatency;
        private long _keepUntil;
        private int _connections;

        public override string[] Protocols => _protocols;
        public override string? AgentVersion => _agentVersion;
        public override string? ProtocolVersion => _protocolVersion;
        public override long LatencyTicks => _latencyTicks;
        public override long KeepUntil => _keepUntil;
        public override int Connections => _connections;

        public void SetProtocols(string[] protocols) => _protocols = protocols;
        public void SetAgent(string? agent, string? version) => (_agentVersion, _protocolVersion) = (agent, version);
        public void SetLatency(long ticks) => _latencyTicks = ticks;
        public void SetKeepUntil(long ticks) => _keepUntil = ticks;
        /// <summary>Counts a connection opened (+1) or closed (−1); returns the count after.</summary>
        public int AddConnections(int delta) => _connections += delta;

        /// <summary>
        /// Records <paramref name="key"/>, which matches <paramref name="id"/> (the caller checked). Only Ed25519 keys are
        /// read back from the id: that is a copy and a few checks, where a secp256k1 point would be decoded at each read.
        /// </summary>
        public void SetKey(PeerId id, PublicKey key) => _key = key.Type == KeyType.Ed25519 && id.EmbedsPublicKey ? KeyInId : key;

        public override PublicKey? Key(PeerId id) => _key switch
        {
            PublicKey key => key,
            null => null,
            _ => id.TryExtractPublicKey(),
        };
    }

    /// <summary>Identify's shared protocol lists (<see cref="StringListInterner"/>) stop at this many distinct lists.</summary>
    internal const int MaxInternedLists = 128;
}
