using System.Diagnostics.Metrics;
using Potluck.Protocol.Host;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Metrics;

/// <summary>
/// The libp2p stack's metrics for one node (DESIGN §7): every instrument lives on one <see cref="Meter"/> named
/// <see cref="MeterName"/>, made by the node's own <see cref="IMeterFactory"/>, so fifty simulated nodes in one process
/// never share a counter (a listener tells them apart by <see cref="Meter.Scope"/>, the factory). Instrument names and
/// units follow OpenTelemetry's conventions; every tag value is one of a fixed set (directions, failure kinds, our own
/// protocol ids, DHT message types), never a string a remote chose, so a hostile peer cannot grow the series.
/// <list type="table">
/// <item><c>potluck.connections.opened</c>, <c>.closed</c> ({connection}; direction, and on <c>.closed</c> reason: trimmed,
/// room (closed to make room for a newcomer or a dial of ours), idle, local, remote) and <c>.current</c> (up-down)</item>
/// <item><c>potluck.dials</c> ({dial}; reason: one of <see cref="DialReason.All"/>): new outbound dials the host
/// started, by why (a caller joining a dial under way or finding a connection open is not counted)</item>
/// <item><c>potluck.handshakes.completed</c>, <c>.failed</c> ({handshake}; direction, and failure kind when failed) and
/// <c>potluck.handshake.duration</c> (s; direction, outcome): the upgrade from raw connection to muxed one</item>
/// <item><c>potluck.streams.opened</c> ({stream}; protocol, direction) and <c>potluck.streams.failed</c> ({stream};
/// protocol, kind: inbound streams that ended at the host's one catch site with anything but a clean end)</item>
/// <item><c>potluck.bytes.received</c>, <c>potluck.bytes.sent</c> (By): encrypted bytes on upgraded connections</item>
/// <item><c>potluck.gossip.messages.published</c>, <c>.received</c>, <c>.duplicates</c>, <c>.delivered</c> and
/// <c>.rejected</c> ({message}; reason: invalid_signature, oversized, malformed, rejected, ignored), and
/// <c>.dropped</c> ({message}: delivered, but a local subscriber's buffer was full)</item>
/// <item><c>potluck.resources.refused</c> ({refusal}, observable; scope: the resource manager's scope names) — what
/// the host's limits turned away</item>
/// <item><c>potluck.dht.queries</c> ({query}; type, outcome: ok or the failure kind) and <c>potluck.dht.lookups</c>
/// ({lookup}; type), <c>potluck.dht.mode_switches</c> ({switch}; mode: client or server)</item>
/// </list>
/// </summary>
public sealed class ProtocolInstruments
{
    public const string MeterName = "Potluck.Protocol";

    private readonly Counter<long> _connectionsOpened;
    private readonly Counter<long> _connectionsClosed;
    private readonly UpDownCounter<long> _connectionsCurrent;
    private readonly Counter<long> _handshakesCompleted;
    private readonly Counter<long> _handshakesFailed;
    private readonly Histogram<double> _handshakeDuration;
    private readonly Counter<long> _streamsOpened;
    private readonly Counter<long> _streamsFailed;
    private readonly Counter<long> _bytesReceived;
    private readonly Counter<long> _bytesSent;
    private readonly Counter<long> _gossipPublished;
    private readonly Counter<long> _gossipReceived;
    private readonly Counter<long> _gossipDuplicates;
    private readonly Counter<long> _gossipDelivered;
    private readonly Counter<long> _gossipRejected;
    private readonly Counter<long> _gossipDropped;
    private readonly Counter<long> _dhtQueries;
    private readonly Counter<long> _dhtLookups;
    private readonly Counter<long> _dhtModeSwitches;
    private readonly Counter<long> _dials;
    private readonly long[] _dialTotals = new long[DialReason.All.Count];
    private readonly long[] _closedTotals = new long[CloseReasons.Count];
    private readonly long[] _dhtQueryTotals = new long[4];
    private Func<IEnumerable<KeyValuePair<string, long>>>? _refusals;

    /// <summary>The reasons a connection closed, the tag values of <c>potluck.connections.closed</c>'s <c>reason</c>.</summary>
    public static IReadOnlyList<string> CloseReasons { get; } = ["trimmed", "room", "idle", "unused", "idle-trim", "local", "remote"];

    /// <summary>
    /// The instruments of one node, on a meter from <paramref name="meters"/> (the node's own factory). With
    /// <paramref name="sharedCounters"/> (a simulation stand-in, <c>NodeStandIns.SharedCounters</c>) the counters,
    /// histograms and up-down counters are made on that factory's meter instead: every node given the same factory gets
    /// the same instruments (a meter keeps one instrument per name), so a listener sees their sum over the nodes, and a
    /// node costs no instrument of its own for them. The totals this class keeps (<see cref="DialTotals"/>,
    /// <see cref="ClosedTotals"/>, DHT queries) and the observable instruments stay the node's own either way.
    /// </summary>
    public ProtocolInstruments(IMeterFactory meters, IMeterFactory? sharedCounters = null)
        : this((meters ?? throw new ArgumentNullException(nameof(meters))).Create(new MeterOptions(MeterName)),
            sharedCounters?.Create(new MeterOptions(MeterName)))
    {
    }

    private ProtocolInstruments(Meter meter, Meter? counters = null)
    {
        Meter = meter;
        CountersMeter = counters ?? meter;
        _connectionsOpened = CountersMeter.CreateCounter<long>("potluck.connections.opened", "{connection}", "Connections upgraded and registered");
        _connectionsClosed = CountersMeter.CreateCounter<long>("potluck.connections.closed", "{connection}", "Registered connections that closed");
        _connectionsCurrent = CountersMeter.CreateUpDownCounter<long>("potluck.connections.current", "{connection}", "Connections open now");
        _handshakesCompleted = CountersMeter.CreateCounter<long>("potluck.handshakes.completed", "{handshake}", "Upgrades (pnet, multistream-select, Noise, muxer) that succeeded");
        _handshakesFailed = CountersMeter.CreateCounter<long>("potluck.handshakes.failed", "{handshake}", "Upgrades that failed, by failure kind");
        _handshakeDuration = CountersMeter.CreateHistogram<double>("potluck.handshake.duration", "s", "Time from raw connection to muxed connection",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] });
        _streamsOpened = CountersMeter.CreateCounter<long>("potluck.streams.opened", "{stream}", "Streams whose protocol was agreed");
        _streamsFailed = CountersMeter.CreateCounter<long>("potluck.streams.failed", "{stream}", "Inbound streams that failed at the host's catch site, by failure kind");
        _bytesReceived = CountersMeter.CreateCounter<long>("potluck.bytes.received", "By", "Encrypted bytes received on upgraded connections");
        _bytesSent = CountersMeter.CreateCounter<long>("potluck.bytes.sent", "By", "Encrypted bytes sent on upgraded connections");
        _gossipPublished = CountersMeter.CreateCounter<long>("potluck.gossip.messages.published", "{message}", "Gossip messages this node published");
        _gossipReceived = CountersMeter.CreateCounter<long>("potluck.gossip.messages.received", "{message}", "Gossip messages received from peers");
        _gossipDuplicates = CountersMeter.CreateCounter<long>("potluck.gossip.messages.duplicates", "{message}", "Received gossip messages already seen");
        _gossipDelivered = CountersMeter.CreateCounter<long>("potluck.gossip.messages.delivered", "{message}", "Received gossip messages accepted and delivered");
        _gossipRejected = CountersMeter.CreateCounter<long>("potluck.gossip.messages.rejected", "{message}", "Received gossip messages refused, by reason");
        _gossipDropped = CountersMeter.CreateCounter<long>("potluck.gossip.messages.dropped", "{message}", "Delivered gossip messages dropped because a local subscriber fell behind");
        _dials = CountersMeter.CreateCounter<long>("potluck.dials", "{dial}", "New outbound dials started, by reason");
        _dhtQueries = CountersMeter.CreateCounter<long>("potluck.dht.queries", "{query}", "Kademlia requests sent, by type and outcome");
        _dhtLookups = CountersMeter.CreateCounter<long>("potluck.dht.lookups", "{lookup}", "Kademlia iterative lookups finished, by type");
        _dhtModeSwitches = CountersMeter.CreateCounter<long>("potluck.dht.mode_switches", "{switch}", "Kademlia client/server mode switches, by the mode switched to");
        meter.CreateObservableCounter("potluck.resources.refused", ObserveRefused, "{refusal}",
            "What the resource manager refused (connections, handshakes, streams, memory), by scope");
        meter.CreateObservableGauge("potluck.peers.tracked", ObservePeersTracked, "{peer}",
            "Peers each per-peer table holds now (peer store, budgets, gossip scores), by table");
        meter.CreateObservableCounter("potluck.peers.forgotten", ObservePeersForgotten, "{peer}",
            "Peers a per-peer table forgot: expired (TTL, idle, retain_score ended) or evicted at its cap, by table and reason");
    }

    /// <summary>The node's own meter: every instrument, or only the observable ones where the counters are shared.</summary>
    public Meter Meter { get; }

    /// <summary>The meter of the counters, histograms and up-down counters: <see cref="Meter"/> unless they are shared.</summary>
    public Meter CountersMeter { get; }

    /// <summary>
    /// Instruments nobody registered (a host or service built by hand, outside the node builder): on their own meter,
    /// not shared with any node's.
    /// </summary>
    internal static ProtocolInstruments Detached() => new(new Meter(MeterName));

    public void ConnectionOpened(Direction direction)
    {
        var tag = DirectionTag(direction);
        _connectionsOpened.Add(1, tag);
        _connectionsCurrent.Add(1, tag);
    }

    /// <param name="reason">One of <see cref="CloseReasons"/>; anything else counts as <c>local</c>.</param>
    public void ConnectionClosed(Direction direction, string reason = "local")
    {
        var tag = DirectionTag(direction);
        var index = IndexOf(CloseReasons, reason);
        Interlocked.Increment(ref _closedTotals[index]);
        _connectionsClosed.Add(1, tag, new("reason", CloseReasons[index]));
        _connectionsCurrent.Add(-1, tag);
    }

    /// <summary>A new outbound dial started, for <paramref name="reason"/> (one of <see cref="DialReason.All"/>).</summary>
    public void Dial(string reason)
    {
        var index = DialReason.IndexOf(reason);
        Interlocked.Increment(ref _dialTotals[index]);
        _dials.Add(1, new KeyValuePair<string, object?>("reason", DialReason.All[index]));
    }

    /// <summary>Dials started so far by reason (the totals of <c>potluck.dials</c>), in <see cref="DialReason.All"/>'s order.</summary>
    public long[] DialTotals() => (long[])_dialTotals.Clone();

    /// <summary>Connections closed so far by reason, in <see cref="CloseReasons"/>' order.</summary>
    public long[] ClosedTotals() => (long[])_closedTotals.Clone();

    private static int IndexOf(IReadOnlyList<string> set, string value)
    {
        for (var i = 0; i < set.Count; i++)
        {
            if (string.Equals(set[i], value, StringComparison.Ordinal))
            {
                return i;
            }
        }
        return 3; // "local"
    }

    public void HandshakeCompleted(Direction direction, TimeSpan duration)
    {
        var tag = DirectionTag(direction);
        _handshakesCompleted.Add(1, tag);
        _handshakeDuration.Record(duration.TotalSeconds, tag, new("outcome", "ok"));
    }

    public void HandshakeFailed(Direction direction, FailureKind kind, TimeSpan duration)
    {
        var tag = DirectionTag(direction);
        _handshakesFailed.Add(1, tag, new("kind", KindTag(kind)));
        _handshakeDuration.Record(duration.TotalSeconds, tag, new("outcome", "failed"));
    }

    /// <param name="protocol">A protocol id this node offered or has a handler for (never one the remote made up).</param>
    public void StreamOpened(string protocol, Direction direction) =>
        _streamsOpened.Add(1, new KeyValuePair<string, object?>("protocol", protocol), DirectionTag(direction));

    /// <param name="protocol">The agreed protocol id, or empty when the stream failed before one was agreed.</param>
    public void StreamFailed(string protocol, FailureKind kind) =>
        _streamsFailed.Add(1, new KeyValuePair<string, object?>("protocol", protocol), new("kind", KindTag(kind)));

    public void BytesReceived(long bytes) => _bytesReceived.Add(bytes);

    public void BytesSent(long bytes) => _bytesSent.Add(bytes);

    public void GossipPublished() => _gossipPublished.Add(1);

    public void GossipReceived() => _gossipReceived.Add(1);

    public void GossipDuplicate() => _gossipDuplicates.Add(1);

    public void GossipDelivered() => _gossipDelivered.Add(1);

    /// <param name="reason">One of <c>invalid_signature</c>, <c>oversized</c>, <c>malformed</c>, <c>rejected</c>, <c>ignored</c>.</param>
    public void GossipRejected(string reason) => _gossipRejected.Add(1, new KeyValuePair<string, object?>("reason", reason));

    public void GossipDropped() => _gossipDropped.Add(1);

    /// <param name="type">The DHT message type in lower case (<c>find_node</c>, <c>get_providers</c>, …).</param>
    /// <param name="failure">Null when the query was answered.</param>
    public void DhtQuery(string type, FailureKind? failure)
    {
        Interlocked.Increment(ref _dhtQueryTotals[failure switch { null => 0, FailureKind.Cancelled => 3, _ => 1 }]);
        _dhtQueries.Add(1, new KeyValuePair<string, object?>("type", type), new("outcome", failure is { } f ? KindTag(f) : "ok"));
    }

    /// <summary>A lookup's query not sent: the peer hung up on us moments ago (<c>outcome=backed-off</c>).</summary>
    public void DhtQuerySkipped(string type)
    {
        Interlocked.Increment(ref _dhtQueryTotals[2]);
        _dhtQueries.Add(1, new KeyValuePair<string, object?>("type", type), new("outcome", "backed-off"));
    }

    /// <summary>
    /// DHT requests so far (<c>potluck.dht.queries</c>'s totals): answered, failed (the peer's fault or a limit), not sent
    /// because backed off, cancelled (ours: the lookup ended with the request in flight).
    /// </summary>
    public long[] DhtQueryTotals() => (long[])_dhtQueryTotals.Clone();

    public void DhtLookup(string type) => _dhtLookups.Add(1, new KeyValuePair<string, object?>("type", type));

    public void DhtModeSwitch(string mode) => _dhtModeSwitches.Add(1, new KeyValuePair<string, object?>("mode", mode));

    /// <summary>
    /// <c>potluck.resources.refused</c>: what the resource manager and the per-peer budgets refused, by scope (e.g.
    /// "connections per address", "inbound streams per protocol", "muxer memory", "lease requests"), read from
    /// <paramref name="refusals"/> whenever the meter is collected.
    /// </summary>
    public void ObserveRefusals(Func<IEnumerable<KeyValuePair<string, long>>> refusals) => _refusals = refusals ?? throw new ArgumentNullException(nameof(refusals));

    /// <summary>
    /// A per-peer table for <c>potluck.peers.tracked</c> and <c>potluck.peers.forgotten</c>: how many peers it holds now,
    /// and how many it forgot so far because they expired or were evicted at its cap. Read when the meter is collected.
    /// </summary>
    public void ObservePeerTable(string table, Func<long> tracked, Func<(long Expired, long Evicted)> forgotten)
    {
        ArgumentNullException.ThrowIfNull(tracked);
        ArgumentNullException.ThrowIfNull(forgotten);
        lock (_peerTables)
        {
            _peerTables.Add((table, tracked, forgotten));
        }
    }

    private readonly List<(string Table, Func<long> Tracked, Func<(long Expired, long Evicted)> Forgotten)> _peerTables = [];

    private IEnumerable<Measurement<long>> ObservePeersTracked()
    {
        lock (_peerTables)
        {
            return _peerTables.Select(t => new Measurement<long>(t.Tracked(), new KeyValuePair<string, object?>("table", t.Table))).ToArray();
        }
    }

    private IEnumerable<Measurement<long>> ObservePeersForgotten()
    {
        lock (_peerTables)
        {
            return _peerTables.SelectMany(t =>
            {
                var (expired, evicted) = t.Forgotten();
                var table = new KeyValuePair<string, object?>("table", t.Table);
                return new[] { new Measurement<long>(expired, table, new("reason", "expired")), new Measurement<long>(evicted, table, new("reason", "evicted")) };
            }).ToArray();
        }
    }

    private IEnumerable<Measurement<long>> ObserveRefused()
    {
        if (_refusals is not { } source)
        {
            return [];
        }
        return source().Select(kv => new Measurement<long>(kv.Value, new KeyValuePair<string, object?>("scope", kv.Key)));
    }

    private static KeyValuePair<string, object?> DirectionTag(Direction direction) =>
        new("direction", direction == Direction.Inbound ? "inbound" : "outbound");

    /// <summary>A failure kind as a tag value.</summary>
    public static string KindTag(FailureKind kind) => kind switch
    {
        FailureKind.Cancelled => "cancelled",
        FailureKind.PeerGone => "peer_gone",
        FailureKind.ProtocolViolation => "protocol_violation",
        FailureKind.Unsupported => "unsupported",
        FailureKind.ResourceLimit => "resource_limit",
        _ => "internal",
    };
}
