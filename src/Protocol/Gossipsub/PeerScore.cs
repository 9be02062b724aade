using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Gossipsub;

/// <summary>
/// The v1.1 score function (gossipsub-v1.1.md, "The Score Function"): per topic P₁ time in mesh, P₂ first
/// deliveries, P₃ mesh delivery deficit, P₃b mesh failure penalty, P₄ invalid messages; then P₅ application
/// score, P₆ IP colocation and P₇ behaviour penalty. Counters decay every <see cref="PeerScoreParams.DecayInterval"/>.
/// A disconnected peer that carries a penalty (and a score not above 0) is remembered for
/// <see cref="PeerScoreParams.RetainScore"/>, so it cannot shed the penalty by reconnecting; one with nothing to hold
/// against it is forgotten at once (it would start from the same place anyway). At most
/// <see cref="PeerScoreParams.MaxRetainedPeers"/> are remembered: beyond it the least penalised go first.
/// A pure data structure: time comes in as arguments.
/// </summary>
internal sealed class PeerScore
{
    private readonly PeerScoreParams _params;
    private readonly Dictionary<PeerId, PeerStats> _peers = [];
    private readonly Dictionary<string, HashSet<PeerId>> _peersByIp = new(StringComparer.Ordinal);
    /// <summary>One instance of each topic name the records hold (each RPC decodes its own copy), at most <see cref="MaxTopicNames"/>.</summary>
    private readonly HashSet<string> _topicNames = new(StringComparer.Ordinal);
    private const int MaxTopicNames = 256;
    private readonly SeenCache _records;
    /// <summary>The longest mesh delivery window of any topic: past it no copy of a valid message counts for anyone.</summary>
    private readonly TimeSpan _maxWindow;
    /// <summary>Valid messages in the order they were validated, to settle them (let go of their peers, keep the id and expiry) after <see cref="_maxWindow"/>.</summary>
    private readonly Queue<SeenKey> _toSettle = new();
    private DateTimeOffset _lastDecay;
    private int _retained;
    private long _expiredTotal;
    private long _evictedTotal;

    /// <summary>A score with its own table of delivery records, each kept <paramref name="deliveryTtl"/>.</summary>
    public PeerScore(PeerScoreParams parameters, TimeSpan deliveryTtl, DateTimeOffset now)
        : this(parameters, new SeenCache(deliveryTtl, SeenKeys.Random()), now)
    {
    }

    /// <summary>
    /// A score that keeps its delivery records in the router's seen cache (one entry per message for both);
    /// <see cref="Refresh"/> prunes that cache.
    /// </summary>
    public PeerScore(PeerScoreParams parameters, SeenCache records, DateTimeOffset now)
    {
        _params = parameters;
        _records = records;
        _lastDecay = now;
        _maxWindow = parameters.Topics.Values.Append(parameters.DefaultTopic)
            .Select(tp => tp?.MeshMessageDeliveriesWindow ?? TimeSpan.Zero)
            .DefaultIfEmpty(TimeSpan.Zero).Max();
    }

    public void AddPeer(PeerId peer, string? ip)
    {
        if (!_peers.TryGetValue(peer, out var stats))
        {
            _peers[peer] = stats = new PeerStats();
        }
        else if (!stats.Connected)
        {
            _retained--; // back within retain_score: its penalties come back with it
        }
        stats.Connected = true;
        stats.Ip = ip;
        if (ip is not null)
        {
            if (!_peersByIp.TryGetValue(ip, out var set))
            {
                _peersByIp[ip] = set = [];
            }
            set.Add(peer);
        }
    }

    /// <param name="owesPromise">The peer has IWANT promises outstanding: kept so that breaking them still costs it (P₇).</param>
    public void RemovePeer(PeerId peer, DateTimeOffset now, bool owesPromise = false)
    {
        if (!_peers.TryGetValue(peer, out var stats))
        {
            return;
        }
        if (stats.Ip is { } ip && _peersByIp.TryGetValue(ip, out var set))
        {
            set.Remove(peer);
            if (set.Count == 0)
            {
                _peersByIp.Remove(ip);
            }
        }
        if (!stats.Connected)
        {
            return;
        }
        if (Score(peer, now) > 0)
        {
            _peers.Remove(peer);
            return;
        }
        foreach (var (topic, ts) in stats.Topics)
        {
            if (ts.InMesh && TopicParams(topic) is { } tp)
            {
                ApplyMeshFailure(ts, tp);
            }
            ts.InMesh = false;
        }
        if (!owesPromise && !HasPenalty(stats))
        {
            _peers.Remove(peer); // nothing held against it: a reconnect starts from the same place
            return;
        }
        stats.Connected = false;
        stats.Expire = now + _params.RetainScore;
        _retained++;
        if (_retained > _params.MaxRetainedPeers)
        {
            ForgetLeastPenalised(now);
        }
    }

    /// <summary>Disconnected peers remembered now (each with a penalty), at most <see cref="PeerScoreParams.MaxRetainedPeers"/>.</summary>
    public int RetainedPeers => _retained;

    /// <summary>Retained records dropped so far: retain_score ended, or evicted over the cap.</summary>
    public (long Expired, long Evicted) Forgotten => (_expiredTotal, _evictedTotal);

    /// <summary>Peers with a score record now: the connected ones and the retained ones.</summary>
    public int TrackedPeers => _peers.Count;

    /// <summary>Whether the record holds anything that lowers the score (P₃ deficit, P₃b, P₄, P₇).</summary>
    private bool HasPenalty(PeerStats stats)
    {
        if (stats.BehaviourPenalty > 0)
        {
            return true;
        }
        foreach (var (topic, ts) in stats.Topics)
        {
            if (ts.InvalidDeliveries > 0 || ts.MeshFailurePenalty > 0
                || (ts.MeshDeliveriesActive && TopicParams(topic) is { } tp && ts.MeshDeliveries < tp.MeshMessageDeliveriesThreshold))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// Over the cap: forgets an eighth of the retained peers, the least penalised (highest score) first, so a flood of
    /// fresh identities with small penalties cannot push out the record of a peer that earned a large one.
    /// </summary>
    private void ForgetLeastPenalised(DateTimeOffset now)
    {
        var excess = _retained - _params.MaxRetainedPeers;
        var victims = _peers.Where(kv => !kv.Value.Connected)
            .Select(kv => (Peer: kv.Key, Score: Score(kv.Key, now), kv.Value.Expire))
            .OrderByDescending(v => v.Score).ThenBy(v => v.Expire)
            .Take(Math.Max(excess, _params.MaxRetainedPeers / 8))
            .ToList();
        foreach (var v in victims)
        {
            _peers.Remove(v.Peer);
            _retained--;
        }
        _evictedTotal += victims.Count;
    }

    public void Graft(PeerId peer, string topic, DateTimeOffset now)
    {
        if (Topic(peer, topic) is { } ts)
        {
            ts.InMesh = true;
            ts.GraftTime = now.UtcTicks;
            ts.MeshDeliveriesActive = false;
        }
    }

    public void Prune(PeerId peer, string topic)
    {
        if (Topic(peer, topic) is { } ts && TopicParams(topic) is { } tp)
        {
            ApplyMeshFailure(ts, tp);
            ts.InMesh = false;
        }
    }

    private static void ApplyMeshFailure(TopicStats ts, TopicScoreParams tp)
    {
        if (ts.MeshDeliveriesActive && ts.MeshDeliveries < tp.MeshMessageDeliveriesThreshold)
        {
            var deficit = tp.MeshMessageDeliveriesThreshold - ts.MeshDeliveries;
            ts.MeshFailurePenalty += deficit * deficit;
        }
    }

    /// <summary>P₇: adds behaviour penalty counts (GRAFT in backoff, broken IWANT promises, a full queue).</summary>
    public void AddPenalty(PeerId peer, double count)
    {
        if (_peers.TryGetValue(peer, out var stats))
        {
            stats.BehaviourPenalty += count;
        }
    }

    /// <summary>The first valid delivery of a message: P₂ for the sender, and P₃ when it is a mesh peer.</summary>
    public void DeliverMessage(SeenKey id, PeerId from, string topic, DateTimeOffset now)
    {
        ref var record = ref _records.GetOrAdd(id, now);
        record.Status = DeliveryStatus.Valid;
        record.Validated = now.UtcTicks;
        record.AddPeer(from);
        _toSettle.Enqueue(id);
        if (Topic(from, topic) is { } ts && TopicParams(topic) is { } tp)
        {
            ts.FirstDeliveries = Math.Min(ts.FirstDeliveries + 1, tp.FirstMessageDeliveriesCap);
            if (ts.InMesh)
            {
                ts.MeshDeliveries = Math.Min(ts.MeshDeliveries + 1, tp.MeshMessageDeliveriesCap);
            }
        }
    }

    /// <summary>The application rejected the message: P₄ for the sender, and later for whoever repeats it.</summary>
    public void RejectMessage(SeenKey id, PeerId from, string topic, DateTimeOffset now)
    {
        ref var record = ref _records.GetOrAdd(id, now);
        record.Status = DeliveryStatus.Invalid;
        record.AddPeer(from);
        MarkInvalid(from, topic);
    }

    /// <summary>
    /// The application ignored the message: no penalty for anyone, now or for a later copy, so the record keeps no
    /// peers (go-libp2p lets go of them too).
    /// </summary>
    public void IgnoreMessage(SeenKey id, PeerId from, DateTimeOffset now)
    {
        ref var record = ref _records.GetOrAdd(id, now);
        record.Status = DeliveryStatus.Ignored;
        record.ReleasePeers();
    }

    /// <summary>A message that failed before it had an id we trust (bad signature, oversized): P₄, nothing recorded.</summary>
    public void MarkInvalid(PeerId from, string topic)
    {
        if (Topic(from, topic) is { } ts)
        {
            ts.InvalidDeliveries += 1;
        }
    }

    /// <summary>
    /// A later copy of a message: counts once per peer, toward P₃ for a mesh peer within the topic's mesh delivery
    /// window after validation, toward P₄ for every peer that repeats an invalid one (for as long as it is remembered).
    /// Past the longest window a valid message's copies count for nothing, whoever sends them: they are not recorded.
    /// </summary>
    public void DuplicateMessage(SeenKey id, PeerId from, string topic, DateTimeOffset now)
    {
        ref var record = ref _records.Find(id);
        if (Unsafe.IsNullRef(ref record))
        {
            if (_records.IsSettled(id))
            {
                // A valid message past every window (as below).
                _ = Topic(from, topic);
            }
            return;
        }
        switch (record.Status)
        {
            case DeliveryStatus.Valid:
                var validated = new DateTimeOffset(record.Validated, TimeSpan.Zero);
                if (now > validated + _maxWindow)
                {
                    // Counts for nothing. The record of the peer's topic is made as before (a peer's topics are summed
                    // in the order they were first met, so the score's rounding stays what it was).
                    _ = Topic(from, topic);
                    return;
                }
                if (!record.AddPeer(from))
                {
                    return;
                }
                if (Topic(from, topic) is { InMesh: true } ts && TopicParams(topic) is { } tp
                    && now <= validated + tp.MeshMessageDeliveriesWindow)
                {
                    ts.MeshDeliveries = Math.Min(ts.MeshDeliveries + 1, tp.MeshMessageDeliveriesCap);
                }
                break;
            case DeliveryStatus.Invalid:
                if (record.AddPeer(from))
                {
                    MarkInvalid(from, topic);
                }
                break;
        }
    }

    /// <summary>For tests: a peer's counters in a topic, or null when it has none there (reading them creates nothing).</summary>
    internal (double FirstDeliveries, double MeshDeliveries, double InvalidDeliveries, double MeshFailurePenalty)? Counters(PeerId peer, string topic) =>
        _peers.TryGetValue(peer, out var stats) && stats.Topics.TryGetValue(topic, out var ts)
            ? (ts.FirstDeliveries, ts.MeshDeliveries, ts.InvalidDeliveries, ts.MeshFailurePenalty)
            : null;

    /// <summary>The key a message id has in the delivery records (what the message methods take).</summary>
    public SeenKey KeyOf(MessageId id) => _records.KeyOf(id);

    /// <summary>For tests and diagnostics: delivery records held (with the ids seen and never scored), and those holding an array of peers.</summary>
    internal (int Records, int WithPeerArrays) DeliveryRecords => (_records.Count, _records.RecordsWithPeerArrays());

    public double Score(PeerId peer, DateTimeOffset now)
    {
        if (!_peers.TryGetValue(peer, out var stats))
        {
            return 0;
        }
        double score = 0;
        foreach (var (topic, ts) in stats.Topics)
        {
            if (TopicParams(topic) is not { } tp)
            {
                continue;
            }
            double t = 0;
            if (ts.InMesh && tp.TimeInMeshQuantum > TimeSpan.Zero)
            {
                var p1 = Math.Min((now - new DateTimeOffset(ts.GraftTime, TimeSpan.Zero)) / tp.TimeInMeshQuantum, tp.TimeInMeshCap);
                t += Math.Max(0, p1) * tp.TimeInMeshWeight;
            }
            t += ts.FirstDeliveries * tp.FirstMessageDeliveriesWeight;
            if (ts.MeshDeliveriesActive && ts.MeshDeliveries < tp.MeshMessageDeliveriesThreshold)
            {
                var deficit = tp.MeshMessageDeliveriesThreshold - ts.MeshDeliveries;
                t += deficit * deficit * tp.MeshMessageDeliveriesWeight;
            }
            t += ts.MeshFailurePenalty * tp.MeshFailurePenaltyWeight;
            t += ts.InvalidDeliveries * ts.InvalidDeliveries * tp.InvalidMessageDeliveriesWeight;
            score += t * tp.TopicWeight;
        }
        if (_params.TopicScoreCap > 0 && score > _params.TopicScoreCap)
        {
            score = _params.TopicScoreCap;
        }
        score += _params.AppSpecificScore(peer) * _params.AppSpecificWeight;
        if (stats.Ip is { } ip && !_params.IPColocationFactorWhitelist.Contains(ip)
            && _peersByIp.TryGetValue(ip, out var colocated) && colocated.Count > _params.IPColocationFactorThreshold)
        {
            var surplus = colocated.Count - _params.IPColocationFactorThreshold;
            score += surplus * surplus * _params.IPColocationFactorWeight;
        }
        if (stats.BehaviourPenalty > _params.BehaviourPenaltyThreshold)
        {
            var excess = stats.BehaviourPenalty - _params.BehaviourPenaltyThreshold;
            score += excess * excess * _params.BehaviourPenaltyWeight;
        }
        return score;
    }

    /// <summary>Decays counters once per decay interval, activates P₃, forgets expired peers and deliveries.</summary>
    public void Refresh(DateTimeOffset now)
    {
        _records.Prune(now);
        ReleasePeers(now);
        _records.GiveBackSlack();
        if (now - _lastDecay < _params.DecayInterval)
        {
            return;
        }
        _lastDecay = now;
        List<PeerId>? expired = null;
        foreach (var (peer, stats) in _peers)
        {
            if (!stats.Connected && stats.Expire <= now)
            {
                (expired ??= []).Add(peer);
                continue;
            }
            foreach (var (topic, ts) in stats.Topics)
            {
                if (TopicParams(topic) is not { } tp)
                {
                    continue;
                }
                ts.FirstDeliveries = Decay(ts.FirstDeliveries, tp.FirstMessageDeliveriesDecay);
                ts.MeshDeliveries = Decay(ts.MeshDeliveries, tp.MeshMessageDeliveriesDecay);
                ts.MeshFailurePenalty = Decay(ts.MeshFailurePenalty, tp.MeshFailurePenaltyDecay);
                ts.InvalidDeliveries = Decay(ts.InvalidDeliveries, tp.InvalidMessageDeliveriesDecay);
                if (ts.InMesh && now - new DateTimeOffset(ts.GraftTime, TimeSpan.Zero) > tp.MeshMessageDeliveriesActivation)
                {
                    ts.MeshDeliveriesActive = true;
                }
            }
            stats.BehaviourPenalty = Decay(stats.BehaviourPenalty, _params.BehaviourPenaltyDecay);
        }
        if (expired is not null)
        {
            foreach (var p in expired)
            {
                _peers.Remove(p);
                _retained--;
            }
            _expiredTotal += expired.Count;
        }
    }

    private double Decay(double value, double factor)
    {
        var v = value * factor;
        return v < _params.DecayToZero ? 0 : v;
    }

    private TopicScoreParams? TopicParams(string topic) =>
        _params.Topics.TryGetValue(topic, out var tp) ? tp : _params.DefaultTopic;

    private TopicStats? Topic(PeerId peer, string topic)
    {
        if (!_peers.TryGetValue(peer, out var stats) || TopicParams(topic) is null)
        {
            return null;
        }
        if (!stats.Topics.TryGetValue(topic, out var ts))
        {
            stats.Topics.Add(ts = new TopicStats(TopicName(topic)));
        }
        return ts;
    }

    /// <summary>
    /// Settles valid messages validated more than the longest mesh delivery window ago (<see cref="SeenCache.Settle"/>):
    /// no later copy can count for or against anyone (<see cref="DuplicateMessage"/> no longer records them), so only
    /// "seen?" and the expiry are kept.
    /// </summary>
    private void ReleasePeers(DateTimeOffset now)
    {
        while (_toSettle.TryPeek(out var head))
        {
            ref var record = ref _records.Find(head);
            if (!Unsafe.IsNullRef(ref record) && record.Status == DeliveryStatus.Valid
                && now <= new DateTimeOffset(record.Validated, TimeSpan.Zero) + _maxWindow)
            {
                break;
            }
            _toSettle.Dequeue();
            if (!Unsafe.IsNullRef(ref record) && record.Status == DeliveryStatus.Valid)
            {
                _records.Settle(head);
            }
        }
        // The queue's array is the busiest heartbeat's (a queue never shrinks by itself): given back once a quarter or
        // less of it is in use, as the records' table is.
        if (Slack.TrimTo(_toSettle.Count, _toSettle.EnsureCapacity(0), SeenCache.MinFullCapacity) is > 0 and var slots)
        {
            _toSettle.TrimExcess(slots);
        }
    }

    /// <summary>For tests: the slots of the queue of valid messages waiting to settle.</summary>
    internal int SettleQueueCapacity => _toSettle.EnsureCapacity(0);

    /// <summary>For tests: the delivery records' entries (full records, digest-and-expiry ones) and their tables' slots.</summary>
    internal (int Full, int Settled) RecordEntries => _records.Entries;

    /// <inheritdoc cref="RecordEntries"/>
    internal (int Full, int Settled) RecordSlots => _records.Capacity;

    /// <summary>For tests: topic names held once for every record (at most 256).</summary>
    internal int TopicNamesHeld => _topicNames.Count;

    /// <summary>The records' one instance of a topic's name (a peer's own copy when the table is full).</summary>
    private string TopicName(string topic)
    {
        if (_topicNames.TryGetValue(topic, out var name))
        {
            return name;
        }
        if (_topicNames.Count < MaxTopicNames)
        {
            _topicNames.Add(topic);
        }
        return topic;
    }

    private sealed class PeerStats
    {
        public bool Connected { get; set; }
        public DateTimeOffset Expire { get; set; }
        public string? Ip { get; set; }
        public double BehaviourPenalty { get; set; }
        /// <summary>The peer's topic records, in the order first met (a field: a mutable struct).</summary>
        public TopicList Topics;
    }

    /// <summary>
    /// A peer's topic records in the order first met (the score sums them in that order), linked through the records
    /// themselves: a peer has a handful, and a <c>Dictionary</c> of them cost ~190 B per peer beyond the records.
    /// Lookups walk the list; its length is bounded by the topics with score parameters that reach <see cref="Topic"/>.
    /// </summary>
    private struct TopicList
    {
        private TopicStats? _first;
        private TopicStats? _last;

        public readonly bool TryGetValue(string topic, [MaybeNullWhen(false)] out TopicStats stats)
        {
            for (var t = _first; t is not null; t = t.Next)
            {
                if (string.Equals(t.Topic, topic, StringComparison.Ordinal))
                {
                    stats = t;
                    return true;
                }
            }
            stats = null;
            return false;
        }

        public void Add(TopicStats stats)
        {
            if (_last is null)
            {
                _first = stats;
            }
            else
            {
                _last.Next = stats;
            }
            _last = stats;
        }

        public readonly Enumerator GetEnumerator() => new(_first);

        public struct Enumerator(TopicStats? first)
        {
            private TopicStats? _next = first;
            private TopicStats? _current;

            public readonly KeyValuePair<string, TopicStats> Current => new(_current!.Topic, _current);

            public bool MoveNext()
            {
                _current = _next;
                _next = _current?.Next;
                return _current is not null;
            }
        }
    }

    private sealed class TopicStats(string topic)
    {
        public string Topic { get; } = topic;
        /// <summary>The peer's next topic record (<see cref="TopicList"/>).</summary>
        public TopicStats? Next { get; set; }
        public bool InMesh { get; set; }
        /// <summary>When the peer was grafted, in UTC ticks (8 bytes where a <see cref="DateTimeOffset"/> takes 16: 80 bytes a record, not 88).</summary>
        public long GraftTime { get; set; }
        public double FirstDeliveries { get; set; }
        public double MeshDeliveries { get; set; }
        public bool MeshDeliveriesActive { get; set; }
        public double MeshFailurePenalty { get; set; }
        public double InvalidDeliveries { get; set; }
    }
}
