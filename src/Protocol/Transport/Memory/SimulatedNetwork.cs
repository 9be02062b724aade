using System.Buffers.Binary;
using System.IO.Pipelines;
using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.Transport.Memory;

/// <summary>
/// An in-memory network of <c>/memory/&lt;u64&gt;</c> endpoints (the address form rust-libp2p's memory transport
/// uses), for tests and simulations of many nodes in one process. An instance owns its endpoints — there is no
/// process-wide hub — and schedules everything on the injected <see cref="TimeProvider"/>.
/// </summary>
/// <remarks>
/// <para>
/// Faults are set per link (<see cref="SetLink"/>, an unordered pair of addresses) or per endpoint
/// (<see cref="SetEndpoint"/>; a link without its own conditions adds up its two endpoints' latencies), and
/// partitions (<see cref="Partition"/> / <see cref="Heal"/>) refuse new dials and break open connections.
/// A transport dials from its first listen address (as libp2p TCP does with port reuse), or from a private
/// address it allocates once if it listens nowhere, so the conditions set between two nodes' listen addresses
/// govern traffic in both directions.
/// </para>
/// <para>
/// Conditions (<see cref="LinkConditions"/>) are latency, bandwidth and loss; loss is drawn per connection from
/// <see cref="SimulatedNetworkOptions.Seed"/>. Deviations from a real network: connection set-up is instantaneous
/// (latency delays bytes and the end of the stream, not the handshake); conditions are fixed when a connection
/// opens (a partition acts on open ones).
/// </para>
/// </remarks>
public sealed class SimulatedNetwork
{
    private readonly Lock _lock = new();
    private readonly SimulatedNetworkOptions _options;
    private readonly Dictionary<ulong, MemoryListener> _listeners = [];
    private readonly Dictionary<ulong, ulong> _aliases = [];
    private readonly HashSet<ulong> _ephemeral = [];
    private readonly Dictionary<LinkKey, LinkConditions> _links = [];
    private readonly Dictionary<ulong, LinkConditions> _endpoints = [];
    private readonly HashSet<LinkKey> _partitions = [];
    private readonly HashSet<ulong> _inboundBlocked = [];
    private readonly Dictionary<LinkKey, HashSet<MemoryConnectionPair>> _connections = [];
    private readonly Dictionary<ulong, TimeSpan> _nats = [];
    private readonly Dictionary<(ulong From, ulong To), DateTimeOffset> _natOutbound = [];
    private ulong _nextId = 1;
    private int _connectionCount;
    private long _connectionsOpened;

    /// <param name="time">The clock every delay runs on.</param>
    /// <param name="options">Limits; the defaults when null.</param>
    /// <param name="pipes">
    /// Where the connections' pipe continuations run: the <see cref="Runtime.EventLoop.PipeScheduler"/> of the loop the
    /// nodes run on under virtual time (so nothing escapes to the thread pool), the thread pool when null.
    /// </param>
    public SimulatedNetwork(TimeProvider time, SimulatedNetworkOptions? options = null, PipeScheduler? pipes = null)
    {
        ArgumentNullException.ThrowIfNull(time);
        TimeProvider = time;
        _options = options ?? new SimulatedNetworkOptions();
        _options.Validate();
        PipeScheduler = pipes ?? PipeScheduler.ThreadPool;
    }

    /// <summary>The clock every delay on this network runs on.</summary>
    public TimeProvider TimeProvider { get; }

    /// <summary>Where pipe continuations of this network's connections run.</summary>
    public PipeScheduler PipeScheduler { get; }

    /// <summary>Connections open now (both ends not yet disposed).</summary>
    public int ConnectionCount
    {
        get
        {
            lock (_lock)
            {
                return _connectionCount;
            }
        }
    }

    /// <summary>A transport for one node on this network.</summary>
    public MemoryTransport CreateTransport() => new(this);

    /// <summary>
    /// Sets the conditions between <paramref name="a"/> and <paramref name="b"/> (both directions) for connections
    /// opened from now on; they override the endpoints' own conditions.
    /// </summary>
    public void SetLink(Multiaddr a, Multiaddr b, LinkConditions conditions)
    {
        Validate(conditions);
        var key = LinkKey.Of(IdOf(a), IdOf(b));
        lock (_lock)
        {
            _links[key] = conditions;
        }
    }

    /// <summary>Removes conditions set with <see cref="SetLink"/>.</summary>
    public void ClearLink(Multiaddr a, Multiaddr b)
    {
        var key = LinkKey.Of(IdOf(a), IdOf(b));
        lock (_lock)
        {
            _links.Remove(key);
        }
    }

    /// <summary>Sets the conditions of every link of <paramref name="endpoint"/> that has none of its own (latencies add up).</summary>
    public void SetEndpoint(Multiaddr endpoint, LinkConditions conditions)
    {
        Validate(conditions);
        var id = IdOf(endpoint);
        lock (_lock)
        {
            _endpoints[id] = conditions;
        }
    }

    /// <summary>Cuts <paramref name="a"/> off from <paramref name="b"/>: dials between them fail, open connections break.</summary>
    public void Partition(Multiaddr a, Multiaddr b)
    {
        var key = LinkKey.Of(IdOf(a), IdOf(b));
        MemoryConnectionPair[] broken;
        lock (_lock)
        {
            _partitions.Add(key);
            if (!_connections.Remove(key, out var open))
            {
                return;
            }
            broken = [.. open];
            _connectionCount -= broken.Length;
        }
        foreach (var pair in broken)
        {
            pair.Break(new TransportException(pair.DialerSide.Remote, TransportError.ConnectionReset,
                $"connection {pair.DialerSide.Local} <-> {pair.DialerSide.Remote} broken: the link is partitioned"));
        }
    }

    /// <summary>Ends a <see cref="Partition"/>: new dials succeed again (broken connections stay broken).</summary>
    public void Heal(Multiaddr a, Multiaddr b)
    {
        var key = LinkKey.Of(IdOf(a), IdOf(b));
        lock (_lock)
        {
            _partitions.Remove(key);
        }
    }

    /// <summary>
    /// Puts <paramref name="endpoint"/> behind a NAT that keeps no port open: its own dials go out (from its listen
    /// address, so that is what others observe) and their connections work both ways, but every dial to it is refused,
    /// as a home router refuses unsolicited inbound connections. <see cref="AllowInbound"/> undoes it.
    /// </summary>
    public void BlockInbound(Multiaddr endpoint)
    {
        var id = IdOf(endpoint);
        lock (_lock)
        {
            _inboundBlocked.Add(id);
        }
    }

    /// <summary>Ends <see cref="BlockInbound"/>.</summary>
    public void AllowInbound(Multiaddr endpoint)
    {
        var id = IdOf(endpoint);
        lock (_lock)
        {
            _inboundBlocked.Remove(id);
        }
    }

    public bool IsPartitioned(Multiaddr a, Multiaddr b)
    {
        var key = LinkKey.Of(IdOf(a), IdOf(b));
        lock (_lock)
        {
            return _partitions.Contains(key);
        }
    }

    private static void Validate(LinkConditions conditions)
    {
        ArgumentNullException.ThrowIfNull(conditions);
        if (conditions.Latency < TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(conditions), conditions.Latency, "latency must not be negative");
        }
        if (conditions.BandwidthBytesPerSecond < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(conditions), conditions.BandwidthBytesPerSecond, "bandwidth must not be negative (0 is unlimited)");
        }
        if (!(conditions.Loss >= 0 && conditions.Loss < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(conditions), conditions.Loss, "loss must be in [0, 1)");
        }
        if (conditions.RetransmitTimeout < TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(conditions), conditions.RetransmitTimeout, "retransmission timeout must not be negative");
        }
    }

    private static ulong IdOf(Multiaddr address) =>
        TryGetId(address, out var id) ? id : throw new ArgumentException($"'{address}' is not a /memory/<id> address", nameof(address));

    /// <summary><c>/memory/&lt;id&gt;</c>, optionally followed by <c>/p2p/…</c>.</summary>
    internal static bool TryGetId(Multiaddr address, out ulong id)
    {
        id = 0;
        var c = address.Components;
        if (c.Count < 1 || c.Count > 2 || c[0].Protocol != Multiaddr.Memory || (c.Count == 2 && c[1].Protocol != Multiaddr.P2p))
        {
            return false;
        }
        id = BinaryPrimitives.ReadUInt64BigEndian(c[0].Value.Span);
        return true;
    }

    internal static Multiaddr AddressOf(ulong id) => Multiaddr.Parse($"/memory/{id}");

    private ulong AllocateId()
    {
        while (_listeners.ContainsKey(_nextId) || _ephemeral.Contains(_nextId) || _nextId == 0)
        {
            _nextId++;
        }
        return _nextId++;
    }

    internal MemoryListener Listen(MemoryTransport transport, Multiaddr at)
    {
        if (!TryGetId(at, out var id))
        {
            throw new TransportException(at, TransportError.UnsupportedAddress, $"listen on {at}: not a /memory/<id> address");
        }
        lock (_lock)
        {
            if (id == 0)
            {
                id = AllocateId();
            }
            else if (_listeners.ContainsKey(id) || _ephemeral.Contains(id))
            {
                throw new TransportException(at, TransportError.AddressInUse, $"listen on {at}: address already in use");
            }
            var listener = new MemoryListener(this, transport, id, AddressOf(id));
            _listeners.Add(id, listener);
            transport.ListenIds.Add(id);
            return listener;
        }
    }

    internal void Unlisten(MemoryListener listener)
    {
        lock (_lock)
        {
            if (_listeners.TryGetValue(listener.Id, out var current) && current == listener)
            {
                _listeners.Remove(listener.Id);
            }
            listener.Transport.ListenIds.Remove(listener.Id);
            listener.Close();
        }
    }

    /// <summary>
    /// Makes dials to <paramref name="alias"/> reach whatever listens on <paramref name="target"/>, as a NAT
    /// port mapping or a DNS name gives one listener a second address that it does not know as its own.
    /// </summary>
    public void AddAlias(Multiaddr alias, Multiaddr target)
    {
        var aliasId = IdOf(alias);
        var targetId = IdOf(target);
        lock (_lock)
        {
            _aliases[aliasId] = targetId;
        }
    }

    /// <summary>
    /// Puts <paramref name="endpoint"/> behind a NAT with endpoint-independent mapping and address-dependent filtering:
    /// dials to it are refused (<see cref="TransportError.Unreachable"/>) unless it dialed the dialer within
    /// <paramref name="filterWindow"/> (default 30 s) — the hole its own dial opened, as a home router's connection
    /// tracking keeps one. Dials from it go out as usual. Hole punching (DCUtR) is tested against this.
    /// </summary>
    public void PlaceBehindNat(Multiaddr endpoint, TimeSpan? filterWindow = null)
    {
        var id = IdOf(endpoint);
        lock (_lock)
        {
            _nats[id] = filterWindow ?? TimeSpan.FromSeconds(30);
        }
    }

    internal MemoryConnection Connect(MemoryTransport from, Multiaddr to)
    {
        if (!TryGetId(to, out var toId))
        {
            throw new TransportException(to, TransportError.UnsupportedAddress, $"dial {to}: not a /memory/<id> address");
        }
        lock (_lock)
        {
            if (_aliases.TryGetValue(toId, out var aliased))
            {
                toId = aliased;
            }
            ulong fromId;
            if (from.ListenIds.Count > 0)
            {
                fromId = from.ListenIds[0];
            }
            else
            {
                if (from.EphemeralId == 0)
                {
                    from.EphemeralId = AllocateId();
                    _ephemeral.Add(from.EphemeralId);
                }
                fromId = from.EphemeralId;
            }
            if (_nats.Count > 0 && !PassesNat(fromId, toId))
            {
                throw new TransportException(to, TransportError.Unreachable, $"dial {to}: unreachable (behind a NAT that has no hole for /memory/{fromId})");
            }
            if (_inboundBlocked.Contains(toId))
            {
                throw new TransportException(to, TransportError.Unreachable, $"dial {to}: unreachable (behind a NAT that refuses inbound connections)");
            }
            if (!_listeners.TryGetValue(toId, out var listener))
            {
                throw new TransportException(to, TransportError.ConnectionRefused, $"dial {to}: connection refused (nothing listens there)");
            }
            var key = LinkKey.Of(fromId, toId);
            if (_partitions.Contains(key))
            {
                throw new TransportException(to, TransportError.Unreachable, $"dial {to}: unreachable from /memory/{fromId} (partitioned)");
            }
            if (listener.PendingCount >= _options.ListenBacklog)
            {
                throw new TransportException(to, TransportError.ConnectionRefused, $"dial {to}: connection refused (backlog of {_options.ListenBacklog} full)");
            }
            // The dialer's address: its listener's own instance when it listens there (equal bytes; one object per node, not one per connection).
            var fromAddress = _listeners.TryGetValue(fromId, out var own) ? own.Address : AddressOf(fromId);
            var pair = new MemoryConnectionPair(this, key, fromAddress, listener.Address, ConditionsOf(key, fromId, toId), _options,
                unchecked((_options.Seed * -7046029254386353131L) + _connectionsOpened++));
            if (!listener.TryEnqueue(pair.ListenerSide))
            {
                throw new TransportException(to, TransportError.ConnectionRefused, $"dial {to}: connection refused (listener closing)");
            }
            if (!_connections.TryGetValue(key, out var set))
            {
                _connections[key] = set = [];
            }
            set.Add(pair);
            _connectionCount++;
            return pair.DialerSide;
        }
    }

    /// <summary>Records a NATed dialer's outbound hole and checks the target's NAT; under the lock.</summary>
    private bool PassesNat(ulong fromId, ulong toId)
    {
        var now = TimeProvider.GetUtcNow();
        if (_nats.ContainsKey(fromId))
        {
            _natOutbound[(fromId, toId)] = now;
        }
        if (!_nats.TryGetValue(toId, out var window))
        {
            return true;
        }
        return _natOutbound.TryGetValue((toId, fromId), out var opened) && now - opened <= window;
    }

    private LinkConditions ConditionsOf(LinkKey key, ulong a, ulong b)
    {
        if (_links.TryGetValue(key, out var link))
        {
            return link;
        }
        var conditions = LinkConditions.Perfect;
        if (_endpoints.TryGetValue(a, out var ca))
        {
            conditions = conditions.Combine(ca);
        }
        if (a != b && _endpoints.TryGetValue(b, out var cb))
        {
            conditions = conditions.Combine(cb);
        }
        return conditions;
    }

    /// <summary>Both ends of <paramref name="pair"/> were disposed.</summary>
    internal void Forget(MemoryConnectionPair pair)
    {
        lock (_lock)
        {
            if (_connections.TryGetValue(pair.Link, out var set) && set.Remove(pair))
            {
                _connectionCount--;
                if (set.Count == 0)
                {
                    _connections.Remove(pair.Link);
                }
            }
        }
    }
}

/// <summary>An unordered pair of endpoint ids.</summary>
internal readonly record struct LinkKey(ulong Low, ulong High)
{
    public static LinkKey Of(ulong a, ulong b) => a <= b ? new(a, b) : new(b, a);
}
