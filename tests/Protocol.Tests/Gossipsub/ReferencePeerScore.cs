using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// The test oracle: <c>PeerScore</c> as it was before its delivery records were made compact (f27e63c), verbatim but
/// for its name: one <c>DeliveryRecord</c> object per message with a <c>HashSet&lt;PeerId&gt;</c> of every peer that
/// delivered it, kept for the whole TTL. <c>CompactDeliveryRecordTests</c> drives it and the product's
/// <see cref="PeerScore"/> with the same calls and asserts the same counters and scores.
/// </summary>
internal sealed class ReferencePeerScore
{
    private readonly PeerScoreParams _params;
    private readonly TimeSpan _deliveryTtl;
    private readonly Dictionary<PeerId, PeerStats> _peers = [];
    private readonly Dictionary<string, HashSet<PeerId>> _peersByIp = new(StringComparer.Ordinal);
    private readonly Dictionary<MessageId, DeliveryRecord> _deliveries = [];
    private readonly Queue<(MessageId Id, DateTimeOffset Expiry)> _deliveryOrder = new();
    private DateTimeOffset _lastDecay;
    private int _retained;
    private long _expiredTotal;
    private long _evictedTotal;

    public ReferencePeerScore(PeerScoreParams parameters, TimeSpan deliveryTtl, DateTimeOffset now)
    {
        _params = parameters;
        _deliveryTtl = deliveryTtl;
        _lastDecay = now;
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
            ts.GraftTime = now;
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
    public void DeliverMessage(MessageId id, PeerId from, string topic, DateTimeOffset now)
    {
        var record = Record(id, now);
        record.Status = DeliveryStatus.Valid;
        record.Validated = now;
        record.Peers.Add(from);
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
    public void RejectMessage(MessageId id, PeerId from, string topic, DateTimeOffset now)
    {
        var record = Record(id, now);
        record.Status = DeliveryStatus.Invalid;
        record.Peers.Add(from);
        MarkInvalid(from, topic);
    }

    /// <summary>The application ignored the message: no penalty for anyone.</summary>
    public void IgnoreMessage(MessageId id, PeerId from, DateTimeOffset now)
    {
        var record = Record(id, now);
        record.Status = DeliveryStatus.Ignored;
        record.Peers.Add(from);
    }

    /// <summary>A message that failed before it had an id we trust (bad signature, oversized): P₄, nothing recorded.</summary>
    public void MarkInvalid(PeerId from, string topic)
    {
        if (Topic(from, topic) is { } ts)
        {
            ts.InvalidDeliveries += 1;
        }
    }

    public void DuplicateMessage(MessageId id, PeerId from, string topic, DateTimeOffset now)
    {
        if (!_deliveries.TryGetValue(id, out var record) || !record.Peers.Add(from))
        {
            return;
        }
        switch (record.Status)
        {
            case DeliveryStatus.Valid:
                if (Topic(from, topic) is { InMesh: true } ts && TopicParams(topic) is { } tp
                    && now <= record.Validated + tp.MeshMessageDeliveriesWindow)
                {
                    ts.MeshDeliveries = Math.Min(ts.MeshDeliveries + 1, tp.MeshMessageDeliveriesCap);
                }
                break;
            case DeliveryStatus.Invalid:
                MarkInvalid(from, topic);
                break;
        }
    }

    /// <summary>Added for the comparison (not in the original): a peer's counters in a topic, or null when it has none there.</summary>
    internal (double FirstDeliveries, double MeshDeliveries, double InvalidDeliveries, double MeshFailurePenalty)? Counters(PeerId peer, string topic) =>
        _peers.TryGetValue(peer, out var stats) && stats.Topics.TryGetValue(topic, out var ts)
            ? (ts.FirstDeliveries, ts.MeshDeliveries, ts.InvalidDeliveries, ts.MeshFailurePenalty)
            : null;

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
                var p1 = Math.Min((now - ts.GraftTime) / tp.TimeInMeshQuantum, tp.TimeInMeshCap);
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
        while (_deliveryOrder.TryPeek(out var head) && head.Expiry <= now)
        {
            _deliveryOrder.Dequeue();
            _deliveries.Remove(head.Id);
        }
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
                if (ts.InMesh && now - ts.GraftTime > tp.MeshMessageDeliveriesActivation)
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
            stats.Topics[topic] = ts = new TopicStats();
        }
        return ts;
    }

    private DeliveryRecord Record(MessageId id, DateTimeOffset now)
    {
        if (!_deliveries.TryGetValue(id, out var record))
        {
            _deliveries[id] = record = new DeliveryRecord();
            _deliveryOrder.Enqueue((id, now + _deliveryTtl));
        }
        return record;
    }

    private enum DeliveryStatus { Unknown, Valid, Invalid, Ignored }

    private sealed class DeliveryRecord
    {
        public DeliveryStatus Status { get; set; }
        public DateTimeOffset Validated { get; set; }
        public HashSet<PeerId> Peers { get; } = [];
    }

    private sealed class PeerStats
    {
        public bool Connected { get; set; }
        public DateTimeOffset Expire { get; set; }
        public string? Ip { get; set; }
        public double BehaviourPenalty { get; set; }
        public Dictionary<string, TopicStats> Topics { get; } = new(StringComparer.Ordinal);
    }

    private sealed class TopicStats
    {
        public bool InMesh { get; set; }
        public DateTimeOffset GraftTime { get; set; }
        public double FirstDeliveries { get; set; }
        public double MeshDeliveries { get; set; }
        public bool MeshDeliveriesActive { get; set; }
        public double MeshFailurePenalty { get; set; }
        public double InvalidDeliveries { get; set; }
    }
}
