using System.Net;
using System.Net.Sockets;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Host;

/// <summary>
/// The host's resource manager, after go-libp2p's <c>rcmgr</c>: every inbound connection is admitted against the
/// system, address (one IP) and subnet (/24 or /64) scopes before any handshake byte is read, every inbound stream
/// against its peer's and its protocol's scope, and muxer memory (grown windows and bytes buffered unread; not idle
/// streams) against the peer's, the address's, the subnet's and the system's shares of one memory budget
/// (<see cref="MemoryFor"/>). Whatever goes over a
/// limit is refused with a <see cref="ResourceLimitException"/> (or, for a socket that has named no peer yet, closed
/// before the handshake) and counted by scope in <see cref="Refusals"/>. Peers that misbehave can be banned for a
/// while (<see cref="Ban"/>): their connections are refused once the handshake names them.
/// </summary>
public sealed class ResourceManager
{
    private readonly HostOptions _options;
    private readonly ResourceLimits _limits;
    private readonly TimeProvider _time;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, int> _pendingByAddress = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _pendingBySubnet = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _connectionsByAddress = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _connectionsBySubnet = new(StringComparer.Ordinal);
    private readonly Dictionary<PeerId, int> _streamsByPeer = [];
    private readonly Dictionary<(PeerId, string), int> _streamsByProtocol = [];
    private readonly Dictionary<PeerId, DateTimeOffset> _banned = [];
    private readonly Dictionary<string, long> _refusals = new(StringComparer.Ordinal);
    private readonly Dictionary<PeerId, long> _memoryByPeer = [];
    private readonly Dictionary<string, long> _memoryByAddress = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _memoryBySubnet = new(StringComparer.Ordinal);
    private readonly LinkedList<Admission> _handshakes = new(); // in flight, oldest first
    private int _pending;

    public ResourceManager(HostOptions options, TimeProvider time)
    {
        _options = options;
        _limits = options.Resources;
        _limits.Validate();
        _time = time;
        Memory = new MemoryBudget(_limits.MaxMuxerMemory, "muxer memory");
    }

    /// <summary>Scope names, as they appear in <see cref="Refusals"/> and in <see cref="ResourceLimitException.Scope"/>.</summary>
    public static class Scopes
    {
        public const string SystemConnections = "system connections";
        public const string SystemHandshakes = "system handshakes";
        public const string AddressConnections = "connections per address";
        public const string SubnetConnections = "connections per subnet";
        public const string AddressHandshakes = "handshakes per address";
        public const string SubnetHandshakes = "handshakes per subnet";
        public const string EvictedHandshakes = "stalled handshakes evicted";
        public const string PeerConnections = "connections per peer";
        public const string PeerStreams = "inbound streams per peer";
        public const string ProtocolStreams = "inbound streams per protocol";
        public const string Banned = "banned peers";
        public const string MuxerMemory = "muxer memory";
        public const string PeerMuxerMemory = "muxer memory per peer";
        public const string AddressMuxerMemory = "muxer memory per address";
        public const string SubnetMuxerMemory = "muxer memory per subnet";
        public const string ConnectionMuxerMemory = "muxer memory per connection";
    }

    public ResourceLimits Limits => _limits;

    /// <summary>The memory every muxed connection reserves from (the system scope): grown windows and buffered bytes, not idle streams.</summary>
    public MemoryBudget Memory { get; }

    /// <summary>
    /// The memory scope of one connection to <paramref name="peer"/> at <paramref name="remote"/>: what its muxer
    /// reserves counts against the peer's, the address's and the subnet's shares
    /// (<see cref="ResourceLimits.MaxMuxerMemoryPerPeer"/> and the rest) and against <see cref="Memory"/>; a reservation
    /// that would pass any of them is refused and counted in that scope.
    /// </summary>
    public IMemoryScope MemoryFor(PeerId peer, Multiaddr remote)
    {
        var (address, subnet) = KeysOf(remote);
        return new ConnectionMemory(this, peer, address, subnet);
    }

    /// <summary>Muxer memory reserved now by <paramref name="peer"/>'s connections.</summary>
    public long MemoryOfPeer(PeerId peer)
    {
        lock (_gate)
        {
            return _memoryByPeer.GetValueOrDefault(peer);
        }
    }

    /// <summary>Inbound handshakes in flight.</summary>
    public int PendingInbound => Volatile.Read(ref _pending);

    /// <summary>How much was refused, by scope, since the host started (muxer memory included).</summary>
    public IReadOnlyDictionary<string, long> Refusals
    {
        get
        {
            lock (_gate)
            {
                var copy = new Dictionary<string, long>(_refusals, StringComparer.Ordinal);
                if (Memory.Refused > 0)
                {
                    copy[Scopes.MuxerMemory] = Memory.Refused;
                }
                return copy;
            }
        }
    }

    /// <summary>Refusals in one scope.</summary>
    public long RefusedIn(string scope) => Refusals.GetValueOrDefault(scope);

    /// <summary>
    /// Admits an inbound socket from <paramref name="remote"/> to its handshake, or says which scope refuses it.
    /// <paramref name="openConnections"/> is what the connection manager holds open now; a full node refuses here,
    /// before the handshake, unless <paramref name="makeRoom"/> frees a connection.
    /// </summary>
    internal Admission? TryAdmitInbound(Multiaddr remote, int openConnections, Func<bool> makeRoom, out string refusedBy)
    {
        var (address, subnet) = KeysOf(remote);
        Admission? evicted = null;
        lock (_gate)
        {
            if (_pending >= _options.MaxPendingInbound && Count(_pendingByAddress, address) == 0
                && (subnet is null || Count(_pendingBySubnet, subnet) < _limits.MaxPendingInboundPerSubnet))
            {
                // Every slot is taken and this address has none: make room by dropping a stalled handshake.
                evicted = EvictLocked();
            }
            refusedBy = _pending >= _options.MaxPendingInbound ? Scopes.SystemHandshakes
                : Count(_pendingByAddress, address) >= _limits.MaxPendingInboundPerAddress ? Scopes.AddressHandshakes
                : subnet is not null && Count(_pendingBySubnet, subnet) >= _limits.MaxPendingInboundPerSubnet ? Scopes.SubnetHandshakes
                : Count(_connectionsByAddress, address) >= _limits.MaxConnectionsPerAddress ? Scopes.AddressConnections
                : subnet is not null && Count(_connectionsBySubnet, subnet) >= _limits.MaxConnectionsPerSubnet ? Scopes.SubnetConnections
                : "";
            if (refusedBy.Length > 0)
            {
                Refused(refusedBy);
            }
        }
        evicted?.Evict();
        if (refusedBy.Length > 0)
        {
            return null;
        }
        // Handshakes in flight count against the system cap too: a full node must not complete handshakes it then drops.
        if (openConnections + Volatile.Read(ref _pending) >= _options.MaxConnections && !makeRoom())
        {
            refusedBy = Scopes.SystemConnections;
            lock (_gate)
            {
                Refused(refusedBy);
            }
            return null;
        }
        var admission = new Admission(this, address, subnet, _time.GetUtcNow());
        lock (_gate)
        {
            _pending++;
            Increment(_pendingByAddress, address);
            Increment(_connectionsByAddress, address);
            if (subnet is not null)
            {
                Increment(_pendingBySubnet, subnet);
                Increment(_connectionsBySubnet, subnet);
            }
            admission.Node = _handshakes.AddLast(admission);
        }
        return admission;
    }

    /// <summary>
    /// Frees the slot of the oldest handshake in the most crowded scope (its subnet, else its address) that has run at
    /// least <see cref="ResourceLimits.HandshakeEvictionAge"/>; null when none has. The caller calls
    /// <see cref="Admission.Evict"/> on it outside the lock.
    /// </summary>
    private Admission? EvictLocked()
    {
        var oldestAllowed = _time.GetUtcNow() - _limits.HandshakeEvictionAge;
        Admission? victim = null;
        var crowd = 0;
        for (var node = _handshakes.First; node is not null && node.Value.AdmittedAt <= oldestAllowed; node = node.Next)
        {
            var a = node.Value;
            var size = a.Subnet is not null ? Count(_pendingBySubnet, a.Subnet) : Count(_pendingByAddress, a.Address);
            if (size > crowd)
            {
                (victim, crowd) = (a, size);
            }
        }
        if (victim is null)
        {
            return null;
        }
        victim.EndHandshakeLocked();
        Refused(Scopes.EvictedHandshakes);
        return victim;
    }

    /// <summary>Whether <paramref name="peer"/> is banned now (and counts the refusal when it is).</summary>
    public bool IsBanned(PeerId peer, bool countRefusal = false)
    {
        lock (_gate)
        {
            if (!_banned.TryGetValue(peer, out var until))
            {
                return false;
            }
            if (_time.GetUtcNow() >= until)
            {
                _banned.Remove(peer);
                return false;
            }
            if (countRefusal)
            {
                Refused(Scopes.Banned);
            }
            return true;
        }
    }

    /// <summary>Refuses <paramref name="peer"/>'s connections until <paramref name="duration"/> has passed.</summary>
    public void Ban(PeerId peer, TimeSpan duration)
    {
        lock (_gate)
        {
            var until = _time.GetUtcNow() + duration;
            if (!_banned.TryGetValue(peer, out var current) || current < until)
            {
                _banned[peer] = until;
            }
            // Bans expire; a flood of bans must not grow this without bound.
            if (_banned.Count > 4 * _options.MaxConnections)
            {
                var now = _time.GetUtcNow();
                foreach (var expired in _banned.Where(kv => kv.Value <= now).Select(kv => kv.Key).ToArray())
                {
                    _banned.Remove(expired);
                }
            }
        }
    }

    /// <summary>Counts a refusal the caller made itself (e.g. connections per peer).</summary>
    internal void CountRefusal(string scope)
    {
        lock (_gate)
        {
            Refused(scope);
        }
    }

    /// <summary>Reserves an inbound stream for <paramref name="peer"/>; throws <see cref="ResourceLimitException"/> over the limit.</summary>
    internal StreamReservation ReserveInboundStream(PeerId peer)
    {
        lock (_gate)
        {
            if (Count(_streamsByPeer, peer) >= _limits.MaxInboundStreamsPerPeer)
            {
                Refused(Scopes.PeerStreams);
                throw new ResourceLimitException(Scopes.PeerStreams, _limits.MaxInboundStreamsPerPeer);
            }
            Increment(_streamsByPeer, peer);
        }
        return new StreamReservation(this, peer);
    }

    private static int Count<TKey>(Dictionary<TKey, int> counts, TKey key) where TKey : notnull => counts.GetValueOrDefault(key);

    private static void Increment<TKey>(Dictionary<TKey, int> counts, TKey key) where TKey : notnull =>
        counts[key] = counts.GetValueOrDefault(key) + 1;

    private static void Decrement<TKey>(Dictionary<TKey, int> counts, TKey key) where TKey : notnull
    {
        var left = counts.GetValueOrDefault(key) - 1;
        if (left <= 0)
        {
            counts.Remove(key);
        }
        else
        {
            counts[key] = left;
        }
    }

    private void Refused(string scope) => _refusals[scope] = _refusals.GetValueOrDefault(scope) + 1;

    /// <summary>The address scope (one IP, or the whole non-IP address) and the subnet scope (/24, /64; none for non-IP) of <paramref name="remote"/>.</summary>
    internal static (string Address, string? Subnet) KeysOf(Multiaddr remote)
    {
        var endpoint = remote.ToTcpEndPoint();
        if (endpoint is null)
        {
            return (remote.WithoutPeer().ToString(), null);
        }
        var ip = endpoint.Address.IsIPv4MappedToIPv6 ? endpoint.Address.MapToIPv4() : endpoint.Address;
        var bytes = ip.GetAddressBytes();
        if (ip.AddressFamily == AddressFamily.InterNetwork)
        {
            bytes[3] = 0;
            return (ip.ToString(), new IPAddress(bytes) + "/24");
        }
        bytes.AsSpan(8).Clear();
        return (ip.ToString(), new IPAddress(bytes) + "/64");
    }

    /// <summary>An inbound socket's place in the address scopes: its handshake slot until <see cref="HandshakeEnded"/>, its connection slot until disposed.</summary>
    internal sealed class Admission(ResourceManager owner, string address, string? subnet, DateTimeOffset admittedAt) : IDisposable
    {
        // Only while the handshake may still be evicted: dropped (with the registration table the handshake's linked source
        // left on it) when the handshake ends by itself, so a connection's life keeps none of it.
        private CancellationTokenSource? _evicted = new();
        private int _handshakeEnded;
        private int _disposed;

        public string Address => address;

        public string? Subnet => subnet;

        public DateTimeOffset AdmittedAt => admittedAt;

        /// <summary>Its place among the handshakes in flight (under the owner's lock).</summary>
        internal LinkedListNode<Admission>? Node { get; set; }

        /// <summary>
        /// Cancelled when the handshake is dropped to make room for a newcomer (the handshake must then end); once the
        /// handshake has ended by itself, a token that is never cancelled.
        /// </summary>
        public CancellationToken Evicted => Volatile.Read(ref _evicted)?.Token ?? CancellationToken.None;

        /// <summary>
        /// Frees the handshake slot (the connection slot stays until <see cref="Dispose"/>). When this call ends the handshake
        /// (it was not evicted), the eviction source goes too: nothing can evict it any more.
        /// </summary>
        public void HandshakeEnded()
        {
            bool ended;
            lock (owner._gate)
            {
                ended = EndHandshakeLocked();
            }
            if (ended)
            {
                Interlocked.Exchange(ref _evicted, null)?.Dispose();
            }
        }

        /// <summary>Under the owner's lock: frees the handshake slot; false when it was already freed.</summary>
        internal bool EndHandshakeLocked()
        {
            if (Interlocked.Exchange(ref _handshakeEnded, 1) != 0)
            {
                return false;
            }
            owner._pending--;
            Decrement(owner._pendingByAddress, address);
            if (subnet is not null)
            {
                Decrement(owner._pendingBySubnet, subnet);
            }
            if (Node is not null)
            {
                owner._handshakes.Remove(Node);
                Node = null;
            }
            return true;
        }

        /// <summary>Ends the handshake (its slot was freed by <see cref="EvictLocked"/>); called outside the lock.</summary>
        internal void Evict()
        {
            // Kept (never disposed) once evicted: it has no timer, and the eviction may race the connection's end. The
            // eviction ended the handshake first, so HandshakeEnded leaves this source alone.
            _evicted?.Cancel();
        }

        public void Dispose()
        {
            HandshakeEnded();
            if (Interlocked.Exchange(ref _disposed, 1) != 0)
            {
                return;
            }
            lock (owner._gate)
            {
                Decrement(owner._connectionsByAddress, address);
                if (subnet is not null)
                {
                    Decrement(owner._connectionsBySubnet, subnet);
                }
            }
        }
    }

    /// <summary>One connection's muxer memory, reserved in its peer's, address's and subnet's scopes and the system's.</summary>
    private sealed class ConnectionMemory(ResourceManager owner, PeerId peer, string address, string? subnet) : IMemoryScope
    {
        public bool TryReserve(long bytes)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(bytes);
            var limits = owner._limits;
            lock (owner._gate)
            {
                var refusedBy = owner._memoryByPeer.GetValueOrDefault(peer) + bytes > limits.MaxMuxerMemoryPerPeer ? Scopes.PeerMuxerMemory
                    : owner._memoryByAddress.GetValueOrDefault(address) + bytes > limits.MaxMuxerMemoryPerAddress ? Scopes.AddressMuxerMemory
                    : subnet is not null && owner._memoryBySubnet.GetValueOrDefault(subnet) + bytes > limits.MaxMuxerMemoryPerSubnet ? Scopes.SubnetMuxerMemory
                    : null;
                if (refusedBy is not null)
                {
                    owner.Refused(refusedBy);
                    return false;
                }
                if (!owner.Memory.TryReserve(bytes)) // counts its own refusals (scope "muxer memory")
                {
                    return false;
                }
                Add(owner._memoryByPeer, peer, bytes);
                Add(owner._memoryByAddress, address, bytes);
                if (subnet is not null)
                {
                    Add(owner._memoryBySubnet, subnet, bytes);
                }
                return true;
            }
        }

        public void CountConnectionRefusal() => owner.CountRefusal(Scopes.ConnectionMuxerMemory);

        public void Release(long bytes)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(bytes);
            lock (owner._gate)
            {
                Add(owner._memoryByPeer, peer, -bytes);
                Add(owner._memoryByAddress, address, -bytes);
                if (subnet is not null)
                {
                    Add(owner._memoryBySubnet, subnet, -bytes);
                }
                owner.Memory.Release(bytes);
            }
        }

        /// <summary>Adds to a scope's total; a scope at zero is forgotten, so strangers leave nothing behind.</summary>
        private static void Add<TKey>(Dictionary<TKey, long> totals, TKey key, long bytes) where TKey : notnull
        {
            var after = totals.GetValueOrDefault(key) + bytes;
            if (after < 0)
            {
                throw new InvalidOperationException($"{Scopes.MuxerMemory}: released more than was reserved ({after})");
            }
            if (after == 0)
            {
                totals.Remove(key);
            }
            else
            {
                totals[key] = after;
            }
        }
    }

    /// <summary>One inbound stream's place in its peer's scope and, once negotiated, its protocol's.</summary>
    internal sealed class StreamReservation(ResourceManager owner, PeerId peer) : IDisposable
    {
        private string? _protocol;
        private int _disposed;

        /// <summary>Adds the stream to <paramref name="protocol"/>'s scope; throws <see cref="ResourceLimitException"/> over the limit.</summary>
        public void SetProtocol(string protocol)
        {
            lock (owner._gate)
            {
                if (_protocol is not null)
                {
                    throw new InvalidOperationException("the stream's protocol is already set");
                }
                if (Count(owner._streamsByProtocol, (peer, protocol)) >= owner._limits.MaxInboundStreamsPerProtocol)
                {
                    owner.Refused(Scopes.ProtocolStreams);
                    throw new ResourceLimitException(Scopes.ProtocolStreams, owner._limits.MaxInboundStreamsPerProtocol,
                        $"{Scopes.ProtocolStreams} ({protocol}): limit of {owner._limits.MaxInboundStreamsPerProtocol} reached");
                }
                Increment(owner._streamsByProtocol, (peer, protocol));
                _protocol = protocol;
            }
        }

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0)
            {
                return;
            }
            lock (owner._gate)
            {
                Decrement(owner._streamsByPeer, peer);
                if (_protocol is not null)
                {
                    Decrement(owner._streamsByProtocol, (peer, _protocol));
                }
            }
        }
    }
}
