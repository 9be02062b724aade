using Microsoft.Extensions.Logging;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Host;

/// <summary>
/// The host's connection manager, modelled on go-libp2p's <c>connmgr.BasicConnMgr</c>: the registry of open
/// connections per peer under <see cref="HostOptions.MaxConnections"/>, protection and tags per peer, a periodic tick
/// that closes idle connections (no stream for <see cref="HostOptions.IdleTimeout"/>), and one that trims the count back
/// to <see cref="HostOptions.LowWater"/> once it passes <see cref="HostOptions.HighWater"/> (every
/// <see cref="HostOptions.TrimInterval"/>, go's silence period; a connection that takes the count over the high watermark
/// also trims at once). Neither touches a protected
/// peer; below the high watermark it closes connections idle but for background streams (<see cref="HostOptions.TrimIdle"/>);
/// trimming spares connections younger than <see cref="HostOptions.TrimGracePeriod"/> (unless the exchange a young
/// one was opened for is over: <see cref="HostOptions.TrimFinishedYoung"/>) and closes the lowest tag values first.
/// Connection ids are numbered here, per host, so a replayed run numbers them the same.
/// Room is kept for new peers: trimming and <see cref="TryMakeRoom"/> (called when the node is full and a new
/// connection arrives) close the connections of peers that have not identified first, then idle ones (no streams),
/// then the lowest tag values; at most <see cref="ResourceLimits.MaxConnectionsPerPeer"/> connections per peer are kept.
/// </summary>
internal sealed class ConnectionManager : IConnectionManager, IAsyncDisposable
{
    private readonly HostOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _log;
    private readonly BackgroundWork _work;
    private readonly ResourceManager _resources;
    private readonly Func<PeerId, bool> _isIdentified;
    private readonly Lock _gate = new();
    /// <summary>
    /// Each connected peer's registered connections, an exactly sized array replaced on change (almost always one
    /// connection: 32 bytes, where a <see cref="List{T}"/> and its first array of four took 88); removed with the last.
    /// </summary>
    private readonly Dictionary<PeerId, Connection[]> _connections = [];
    /// <summary>
    /// Each protected peer's tags, an exactly sized array replaced on change (a few tags a peer, ours, never a remote's;
    /// read in sorted order only): 32–48 bytes a peer where a <see cref="HashSet{T}"/> took ~180.
    /// </summary>
    private readonly Dictionary<PeerId, string[]> _protected = [];
    private readonly Dictionary<PeerId, Dictionary<string, int>> _tags = [];
    /// <summary>
    /// Peers that hung up on us, with when (UTC ticks). An entry at least as old as the longest window anyone has asked
    /// <see cref="HungUpRecently"/> about answers no to every such question, so it is swept when the table has doubled
    /// since its last sweep (at 16 entries at least): the table holds the peers of the last window, not every peer that
    /// ever hung up (up to <see cref="MaxHungUpPeers"/>).
    /// </summary>
    private readonly Dictionary<PeerId, long> _hungUp = [];
    private long _longestHungUpWindowTicks = -1;
    private int _hungUpSweepAt = MinHungUpSweep;
    private const int MinHungUpSweep = 16;
    private ITimer? _timer;
    private ITimer? _trimTimer;
    private long _nextId;
    private int _count;
    private int _trimming;
    private bool _closed;

    public ConnectionManager(HostOptions options, NodeRuntime runtime, ILogger log, ResourceManager? resources = null,
        Func<PeerId, bool>? isIdentified = null)
    {
        _options = options;
        _resources = resources ?? new ResourceManager(options, runtime.Time);
        _isIdentified = isIdentified ?? (_ => true);
        _time = runtime.Time;
        _log = log;
        _work = runtime.CreateBackgroundWork("connection manager", log);
    }

    /// <summary>A fresh id for a connection being upgraded.</summary>
    public long NextConnectionId() => Interlocked.Increment(ref _nextId);

    /// <summary>Whether another connection fits under <see cref="HostOptions.MaxConnections"/> now.</summary>
    public bool HasRoom => OpenCount < _options.MaxConnections;

    public int ConnectionCount => Volatile.Read(ref _count);

    /// <inheritdoc />
    public int FreeSlots
    {
        get
        {
            var limit = _options.HighWater > 0 ? Math.Min(_options.MaxConnections, _options.HighWater) : _options.MaxConnections;
            return Math.Max(0, limit - OpenCount);
        }
    }

    /// <summary>Registered connections not yet closing (one chosen to make room is closing at once).</summary>
    public int OpenCount
    {
        get
        {
            lock (_gate)
            {
                return OpenCountLocked();
            }
        }
    }

    private int OpenCountLocked()
    {
        var open = 0;
        foreach (var list in _connections.Values)
        {
            foreach (var c in list)
            {
                if (!c.IsClosed)
                {
                    open++;
                }
            }
        }
        return open;
    }

    /// <summary>
    /// Closes one connection to make room for a new one: the least valuable that is unprotected and past its grace
    /// period (unidentified first, then idle, then by tag value). False when there is none: the newcomer is refused.
    /// </summary>
    public bool TryMakeRoom() => TryMakeRoom(spareYoung: true);

    /// <summary>
    /// <see cref="TryMakeRoom()"/>; with <paramref name="spareYoung"/> false (a dial this node makes itself, for a purpose of
    /// its own) a connection still in its grace period may go too when no older one can (<see cref="YoungCandidates"/>:
    /// ones still setting up last). An inbound newcomer (not yet known) never closes a young connection.
    /// </summary>
    public bool TryMakeRoom(bool spareYoung)
    {
        Connection? victim;
        lock (_gate)
        {
            var now = _time.GetUtcNow();
            victim = Candidates(now).FirstOrDefault().Connection
                ?? (spareYoung ? null : YoungCandidates(now).FirstOrDefault().Connection);
        }
        if (victim is null)
        {
            return false;
        }
        _log.Trimmed(victim.Id, victim.RemotePeer, TagValue(victim.RemotePeer), ConnectionCount, _options.LowWater);
        victim.CloseReason ??= "room";
        _work.Track("make room", victim.CloseAsync().AsTask());
        return true;
    }

    private int TagValue(PeerId peer)
    {
        lock (_gate)
        {
            return TagValueLocked(peer);
        }
    }

    /// <summary>
    /// Open, unprotected connections past their grace period, or young ones whose exchange is over
    /// (<see cref="HostOptions.TrimFinishedYoung"/>: their grace ends with it), the first to close first.
    /// </summary>
    private IEnumerable<(Connection Connection, int Value)> Candidates(DateTimeOffset now) =>
        Unprotected(_ => true)
            .Where(x => now - x.Connection.Opened >= _options.TrimGracePeriod || IsFinishedYoung(x.Connection, x.Value))
            .OrderBy(x => _isIdentified(x.Connection.RemotePeer) ? 1 : 0)
            .ThenBy(x => x.Connection.StreamCount == 0 ? 0 : 1)
            .ThenBy(x => x.Value)
            .ThenBy(x => x.Connection.LastActivity)
            .ThenBy(x => x.Connection.Id)
            .ToList();

    /// <summary>
    /// Open, unprotected connections still in their grace period, the first to close first when the grace period gives
    /// way at the hard limit. Not the order of <see cref="Candidates"/>: a young connection that has not identified yet
    /// is one being set up (a requester's lease dial mid-handshake, often the very newcomer whose arrival made the trim),
    /// not a stale one, so it goes last; of the rest the idle and least valuable go first, and the oldest first (a short
    /// exchange on it, such as a DHT request, is the likeliest to be over). Closing the newest first killed a lease's
    /// connection the instant a full provider accepted it, and the lease waited out its 5 s retry.
    /// </summary>
    private IEnumerable<(Connection Connection, int Value)> YoungCandidates(DateTimeOffset now) =>
        Unprotected(x => now - x.Opened < _options.TrimGracePeriod)
            .OrderBy(x => _isIdentified(x.Connection.RemotePeer) ? 0 : 1)
            .ThenBy(x => x.Connection.StreamCount == 0 ? 0 : 1)
            .ThenBy(x => x.Value)
            .ThenBy(x => x.Connection.Opened)
            .ThenBy(x => x.Connection.Id)
            .ToList();

    /// <summary>
    /// A young connection whose exchange is over (<see cref="HostOptions.TrimFinishedYoung"/>): its peer identified and
    /// untagged, it has carried a stream of a protocol that is not background and now carries no stream but background
    /// ones (a stream still negotiating counts as a use).
    /// </summary>
    private bool IsFinishedYoung(Connection connection, int value) =>
        _options.TrimFinishedYoung
        && value == 0
        && _isIdentified(connection.RemotePeer)
        && connection.Carried(p => !_options.IsBackground(p))
        && connection.StreamCount <= connection.OpenStreams(_options.IsBackground);

    private IEnumerable<(Connection Connection, int Value)> Unprotected(Func<Connection, bool> filter) =>
        _connections
            .Where(kv => !_protected.ContainsKey(kv.Key))
            .SelectMany(kv => kv.Value.Select(c => (Connection: c, Value: TagValueLocked(kv.Key))))
            .Where(x => !x.Connection.IsClosed && filter(x.Connection));

    public IReadOnlyList<IConnection> Connections
    {
        get
        {
            lock (_gate)
            {
                return _connections.Values.SelectMany(l => l).ToArray();
            }
        }
    }

    /// <summary>
    /// Starts the idle tick (a quarter of the idle timeout) and the trim tick (<see cref="HostOptions.TrimInterval"/>; when
    /// trimming or <see cref="HostOptions.TrimIdle"/> is on), each when on.
    /// </summary>
    public void Start()
    {
        lock (_gate)
        {
            if (_closed)
            {
                return;
            }
            if (_options.IdleTimeout > TimeSpan.Zero)
            {
                var period = TimeSpan.FromTicks(Math.Max(TimeSpan.FromSeconds(1).Ticks, _options.IdleTimeout.Ticks / 4));
                _timer ??= _time.CreateTimer(static s => ((ConnectionManager)s!).CloseIdle(), this, period, period);
            }
            if ((_options.HighWater > 0 || _options.TrimIdle) && _options.TrimInterval > TimeSpan.Zero)
            {
                _trimTimer ??= _time.CreateTimer(static s => ((ConnectionManager)s!).OnTrimTick(), this, _options.TrimInterval, _options.TrimInterval);
            }
        }
    }

    /// <summary>
    /// Registers an upgraded connection; false when the manager is closed, the peer is banned or has its share of
    /// connections, or the node is full and nothing can make room (the caller closes it). <paramref name="refusedBy"/>
    /// names the scope that refused.
    /// </summary>
    public bool TryAdd(Connection connection, out string refusedBy)
    {
        if (_resources.IsBanned(connection.RemotePeer, countRefusal: true))
        {
            refusedBy = ResourceManager.Scopes.Banned;
            return false;
        }
        bool trim;
        var madeRoom = false;
        while (true)
        {
            lock (_gate)
            {
                if (_closed)
                {
                    refusedBy = "closed";
                    return false;
                }
                var perPeer = _connections.TryGetValue(connection.RemotePeer, out var existing) ? existing.Count(c => !c.IsClosed) : 0;
                if (perPeer >= _options.Resources.MaxConnectionsPerPeer)
                {
                    refusedBy = ResourceManager.Scopes.PeerConnections;
                    _resources.CountRefusal(refusedBy);
                    return false;
                }
                if (OpenCountLocked() < _options.MaxConnections)
                {
                    break;
                }
            }
            if (madeRoom || !TryMakeRoom())
            {
                refusedBy = ResourceManager.Scopes.SystemConnections;
                _resources.CountRefusal(refusedBy);
                return false;
            }
            madeRoom = true;
        }
        lock (_gate)
        {
            _connections[connection.RemotePeer] = _connections.TryGetValue(connection.RemotePeer, out var list)
                ? [.. list, connection]
                : [connection];
            _count++;
            trim = _options.HighWater > 0 && _count > _options.HighWater;
        }
        if (trim)
        {
            _work.Run("trim", ct => TrimOpenConnectionsAsync(ct).AsTask());
        }
        refusedBy = "";
        return true;
    }

    /// <summary>Peers remembered for <see cref="HungUpRecently"/>; past it the oldest memory goes.</summary>
    public const int MaxHungUpPeers = 1024;

    /// <summary>Forgets a connection; false when it was not registered (or already forgotten).</summary>
    public bool Remove(Connection connection)
    {
        lock (_gate)
        {
            if (!_connections.TryGetValue(connection.RemotePeer, out var list))
            {
                return false;
            }
            var index = Array.IndexOf(list, connection);
            if (index < 0)
            {
                return false;
            }
            if (list.Length == 1)
            {
                _connections.Remove(connection.RemotePeer);
            }
            else
            {
                _connections[connection.RemotePeer] = [.. list.AsSpan(0, index), .. list.AsSpan(index + 1)];
            }
            _count--;
            if (!connection.ClosedLocally)
            {
                RememberHungUpLocked(connection.RemotePeer);
            }
            else
            {
                _hungUp.Remove(connection.RemotePeer);
            }
            return true;
        }
    }

    private void RememberHungUpLocked(PeerId peer)
    {
        var now = _time.GetUtcNow().UtcTicks;
        if (_hungUp.Count >= _hungUpSweepAt && !_hungUp.ContainsKey(peer))
        {
            SweepHungUpLocked(now);
        }
        if (_hungUp.Count >= MaxHungUpPeers && !_hungUp.ContainsKey(peer))
        {
            var oldest = _hungUp.MinBy(kv => kv.Value).Key;
            _hungUp.Remove(oldest);
        }
        _hungUp[peer] = now;
    }

    /// <summary>Drops the entries no question asked so far could answer yes to (older than the longest window).</summary>
    private void SweepHungUpLocked(long now)
    {
        if (_longestHungUpWindowTicks >= 0)
        {
            List<PeerId>? lapsed = null;
            foreach (var (peer, at) in _hungUp)
            {
                if (now - at >= _longestHungUpWindowTicks)
                {
                    (lapsed ??= []).Add(peer);
                }
            }
            foreach (var peer in lapsed ?? [])
            {
                _hungUp.Remove(peer);
            }
        }
        _hungUpSweepAt = Math.Max(MinHungUpSweep, 2 * _hungUp.Count);
    }

    /// <summary>Entries remembered for <see cref="HungUpRecently"/> (tests).</summary>
    internal int HungUpCount
    {
        get
        {
            lock (_gate)
            {
                return _hungUp.Count;
            }
        }
    }

    public bool HungUpRecently(PeerId peer, TimeSpan within)
    {
        lock (_gate)
        {
            if (within.Ticks > _longestHungUpWindowTicks)
            {
                _longestHungUpWindowTicks = within.Ticks;
            }
            if (!_hungUp.TryGetValue(peer, out var at))
            {
                return false;
            }
            if (_time.GetUtcNow().UtcTicks - at >= within.Ticks)
            {
                _hungUp.Remove(peer);
                return false;
            }
            return !_connections.ContainsKey(peer);
        }
    }

    /// <summary>
    /// An open connection to <paramref name="peer"/>, if any: a direct one before a relayed one, so new streams (a
    /// lease's included) move to the direct connection as soon as a hole punch makes one.
    /// </summary>
    public bool TryGet(PeerId peer, out Connection connection)
    {
        Connection? relayed = null;
        lock (_gate)
        {
            if (_connections.TryGetValue(peer, out var list))
            {
                foreach (var c in list)
                {
                    if (c.IsClosed)
                    {
                        continue;
                    }
                    if (!Libp2pHost.IsRelayed(c))
                    {
                        connection = c;
                        return true;
                    }
                    relayed ??= c;
                }
            }
        }
        connection = relayed!;
        return relayed is not null;
    }

    /// <summary>The array the manager keeps for <paramref name="peer"/>'s connections (null: none), for tests of its representation.</summary>
    internal Connection[]? HeldFor(PeerId peer)
    {
        lock (_gate)
        {
            return _connections.GetValueOrDefault(peer);
        }
    }

    /// <summary>Every registered connection to <paramref name="peer"/>, open or closing.</summary>
    public Connection[] Registered(PeerId peer)
    {
        lock (_gate)
        {
            return _connections.TryGetValue(peer, out var list) ? [.. list] : [];
        }
    }

    /// <summary>Refuses further connections and returns every registered one, for the host to close.</summary>
    public Connection[] Close()
    {
        lock (_gate)
        {
            _closed = true;
            _timer?.Dispose();
            _timer = null;
            _trimTimer?.Dispose();
            _trimTimer = null;
            return _connections.Values.SelectMany(l => l).ToArray();
        }
    }

    public IReadOnlyList<IConnection> ConnectionsTo(PeerId peer) => Registered(peer);

    public bool IsConnected(PeerId peer) => TryGet(peer, out _);

    public void Protect(PeerId peer, string tag)
    {
        ArgumentNullException.ThrowIfNull(tag);
        lock (_gate)
        {
            if (!_protected.TryGetValue(peer, out var tags))
            {
                _protected[peer] = [tag];
            }
            else if (Array.IndexOf(tags, tag) < 0)
            {
                _protected[peer] = [.. tags, tag];
            }
        }
    }

    public bool Unprotect(PeerId peer, string tag)
    {
        lock (_gate)
        {
            if (!_protected.TryGetValue(peer, out var tags))
            {
                return false;
            }
            var index = Array.IndexOf(tags, tag);
            if (index >= 0)
            {
                if (tags.Length == 1)
                {
                    _protected.Remove(peer);
                    return false;
                }
                _protected[peer] = [.. tags.AsSpan(0, index), .. tags.AsSpan(index + 1)];
            }
            return true;
        }
    }

    public bool IsProtected(PeerId peer, string? tag = null)
    {
        lock (_gate)
        {
            return _protected.TryGetValue(peer, out var tags) && (tag is null || Array.IndexOf(tags, tag) >= 0);
        }
    }

    public void TagPeer(PeerId peer, string tag, int value) => UpsertTag(peer, tag, _ => value);

    public void UntagPeer(PeerId peer, string tag)
    {
        lock (_gate)
        {
            if (_tags.TryGetValue(peer, out var tags) && tags.Remove(tag) && tags.Count == 0)
            {
                _tags.Remove(peer);
            }
        }
    }

    public void UpsertTag(PeerId peer, string tag, Func<int, int> upsert)
    {
        ArgumentNullException.ThrowIfNull(tag);
        ArgumentNullException.ThrowIfNull(upsert);
        lock (_gate)
        {
            if (!_tags.TryGetValue(peer, out var tags))
            {
                _tags[peer] = tags = new Dictionary<string, int>(StringComparer.Ordinal);
            }
            tags[tag] = upsert(tags.GetValueOrDefault(tag));
        }
    }

    public ConnectionTagInfo? GetTagInfo(PeerId peer)
    {
        lock (_gate)
        {
            var tags = _tags.GetValueOrDefault(peer);
            var protectedBy = _protected.GetValueOrDefault(peer);
            if (tags is null && protectedBy is null)
            {
                return null;
            }
            return new ConnectionTagInfo(peer, TagValueLocked(peer), new Dictionary<string, int>(tags ?? [], StringComparer.Ordinal),
                protectedBy?.Order(StringComparer.Ordinal).ToArray() ?? []);
        }
    }

    /// <inheritdoc />
    public int CloseUnused(PeerId peer, DateTimeOffset openedSince, Func<string, bool> background)
    {
        Connection[] victims;
        lock (_gate)
        {
            if (_closed || _protected.ContainsKey(peer) || TagValueLocked(peer) > 0 || !_connections.TryGetValue(peer, out var list))
            {
                return 0;
            }
            victims = list.Where(c => !c.IsClosed).ToArray();
            if (victims.Any(c => c.Opened < openedSince || c.OpenStreams(p => !background(p)) > 0))
            {
                return 0;
            }
        }
        foreach (var c in victims)
        {
            _log.UnusedClose(c.Id, c.RemotePeer);
            c.CloseReason ??= "unused";
            _work.Track("unused close", c.CloseAsync().AsTask());
        }
        return victims.Length;
    }

    public async ValueTask<int> TrimOpenConnectionsAsync(CancellationToken ct)
    {
        if (_options.HighWater <= 0 || Interlocked.Exchange(ref _trimming, 1) != 0)
        {
            return 0;
        }
        try
        {
            var victims = TrimVictims();
            foreach (var (connection, value, count) in victims)
            {
                ct.ThrowIfCancellationRequested();
                _log.Trimmed(connection.Id, connection.RemotePeer, value, count, _options.LowWater);
                connection.CloseReason ??= "trimmed";
                await connection.CloseAsync();
            }
            return victims.Count;
        }
        finally
        {
            Volatile.Write(ref _trimming, 0);
        }
    }

    /// <summary>
    /// Connections to close to get down to the low watermark: unprotected, past the grace period; unidentified first,
    /// then idle, then the least valuable; a young one whose exchange is over counts as past it (<see cref="IsFinishedYoung"/>).
    /// At the hard limit (<see cref="HostOptions.MaxConnections"/>) the grace period
    /// gives way as far as the high watermark (<see cref="YoungCandidates"/>, never the newcomer mid-handshake first): a node
    /// whose connections are all young (a burst of lookups just after it
    /// started) would otherwise refuse every newcomer and fail its own dials until the youngest is 20 s old.
    /// </summary>
    private List<(Connection Connection, int Value, int Count)> TrimVictims()
    {
        var now = _time.GetUtcNow();
        lock (_gate)
        {
            var open = OpenCountLocked();
            var excess = open - Math.Max(0, _options.LowWater);
            if (open <= _options.HighWater || excess <= 0)
            {
                return [];
            }
            var victims = Candidates(now).Take(excess).ToList();
            var over = open - victims.Count - _options.HighWater;
            if (open >= _options.MaxConnections && over > 0)
            {
                victims.AddRange(YoungCandidates(now).Where(x => !victims.Any(v => v.Connection == x.Connection)).Take(over));
            }
            return victims.Select(x => (x.Connection, x.Value, open)).ToList();
        }
    }

    private int TagValueLocked(PeerId peer) => _tags.TryGetValue(peer, out var tags) ? tags.Values.Sum() : 0;

    /// <summary>
    /// The trim tick: trims when over the high watermark (go's background loop), else closes idle connections
    /// (<see cref="HostOptions.TrimIdle"/>).
    /// </summary>
    private void OnTrimTick()
    {
        if (_options.HighWater > 0 && OpenCount > _options.HighWater)
        {
            _work.Run("trim", ct => TrimOpenConnectionsAsync(ct).AsTask());
        }
        else if (_options.TrimIdle)
        {
            _work.Run("idle trim", ct => TrimIdleConnectionsAsync(ct).AsTask());
        }
    }

    /// <summary>
    /// Closes the connections <see cref="HostOptions.TrimIdle"/> lets go (<see cref="IdleVictims"/>), whatever the count
    /// against the high watermark; returns how many. A no-op when the rule is off or a trim is under way.
    /// </summary>
    public async ValueTask<int> TrimIdleConnectionsAsync(CancellationToken ct)
    {
        if (!_options.TrimIdle || Interlocked.Exchange(ref _trimming, 1) != 0)
        {
            return 0;
        }
        try
        {
            var victims = IdleVictims();
            foreach (var (connection, lastUsed, count) in victims)
            {
                ct.ThrowIfCancellationRequested();
                _log.IdleTrimmed(connection.Id, connection.RemotePeer, lastUsed, count);
                connection.CloseReason ??= "idle-trim";
                await connection.CloseAsync();
            }
            return victims.Count;
        }
        finally
        {
            Volatile.Write(ref _trimming, 0);
        }
    }

    /// <summary>
    /// The idle connections <see cref="HostOptions.TrimIdle"/> closes now: past the grace period (or young with their
    /// exchange over, <see cref="HostOptions.TrimFinishedYoung"/>: their grace ends with it here too), to an identified,
    /// unprotected and untagged peer, carrying no stream but background ones (none negotiating), and no other stream
    /// opened or ended for <see cref="HostOptions.IdleConnectionTimeout"/>; the longest unused first, as many as keep
    /// <see cref="HostOptions.IdleTrimFloor"/> open.
    /// </summary>
    private List<(Connection Connection, DateTimeOffset LastUsed, int Count)> IdleVictims()
    {
        var now = _time.GetUtcNow();
        Func<string, bool> foreground = p => !_options.IsBackground(p);
        lock (_gate)
        {
            if (_closed)
            {
                return [];
            }
            var open = OpenCountLocked();
            var room = open - Math.Max(0, _options.IdleTrimFloor);
            if (room <= 0)
            {
                return [];
            }
            return Unprotected(_ => true)
                .Where(x => now - x.Connection.Opened >= _options.TrimGracePeriod || IsFinishedYoung(x.Connection, x.Value))
                .Where(x => x.Value == 0
                    && _isIdentified(x.Connection.RemotePeer)
                    && x.Connection.StreamCount <= x.Connection.OpenStreams(_options.IsBackground))
                .Select(x => (x.Connection, LastUsed: x.Connection.LastUsed(foreground)))
                .Where(x => now - x.LastUsed >= _options.IdleConnectionTimeout)
                .OrderBy(x => x.LastUsed)
                .ThenBy(x => x.Connection.Id)
                .Take(room)
                .Select(x => (x.Connection, x.LastUsed, open))
                .ToList();
        }
    }

    private void CloseIdle()
    {
        var cutoff = _time.GetUtcNow() - _options.IdleTimeout;
        List<Connection> idle = [];
        lock (_gate)
        {
            foreach (var (peer, list) in _connections)
            {
                if (_protected.ContainsKey(peer))
                {
                    continue;
                }
                idle.AddRange(list.Where(c => c.StreamCount == 0 && c.LastActivity < cutoff));
            }
        }
        foreach (var c in idle)
        {
            _log.IdleClose(c.Id, c.RemotePeer);
            c.CloseReason ??= "idle";
            _work.Track("idle close", c.CloseAsync());
        }
    }

    public async ValueTask DisposeAsync()
    {
        Close();
        await _work.DisposeAsync();
    }
}
