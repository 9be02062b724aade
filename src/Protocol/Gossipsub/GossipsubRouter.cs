using System.Buffers.Binary;
using Google.Protobuf;
using Google.Protobuf.Collections;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Metrics;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Gossipsub;

/// <summary>A peer offered by PRUNE peer exchange, for the host to learn and perhaps dial.</summary>
/// <summary>A node's meshes counted (<see cref="GossipsubRouter.CountMeshes"/>).</summary>
public readonly record struct MeshCensus(int Topics, int Memberships, int Distinct, int InOneMesh);

public sealed record PeerExchangeHint(PeerId Peer, byte[]? SignedPeerRecord, string Topic);

/// <summary>One RPC for one peer.</summary>
internal readonly record struct OutboundRpc(PeerId Peer, Pb.RPC Rpc);

/// <summary>What the router wants done after the events since the last <see cref="GossipsubRouter.Drain"/>.</summary>
internal sealed class RouterOutput
{
    /// <summary>Nothing to do; shared (whoever drains reads an output, never changes it).</summary>
    public static readonly RouterOutput None = new();

    public List<OutboundRpc> Rpcs { get; } = [];

    public List<GossipMessage> Deliveries { get; } = [];

    public List<PeerExchangeHint> PeerExchange { get; } = [];

    /// <summary>Peers whose membership in any mesh changed: true when now in at least one mesh.</summary>
    public List<(PeerId Peer, bool InMesh)> MeshMembership { get; } = [];
}

/// <summary>Counters for tests, simulations and metrics.</summary>
internal sealed class RouterCounters
{
    public long MessagesReceived { get; set; }
    public long Duplicates { get; set; }
    public long Delivered { get; set; }
    public long Rejected { get; set; }
    public long Ignored { get; set; }
    public long InvalidSignatures { get; set; }
    public long Oversized { get; set; }
    public long GraylistedRpcs { get; set; }
    public long IHaveIgnored { get; set; }
    public long IWantSent { get; set; }
    public long IWantServed { get; set; }
    public long BrokenPromises { get; set; }
    public long GraftsDuringBackoff { get; set; }

    /// <summary>Peers this node grafted because they were in another of its meshes (<see cref="GossipsubOptions.PreferMeshOverlap"/>).</summary>
    public long OverlapGrafts { get; set; }
    public long IDontWantSent { get; set; }
    public long IDontWantHonoured { get; set; }
    public long IDontWantReceived { get; set; }

    /// <summary>Sends, IHAVE entries and IWANT replies of a message with an audience withheld from a peer that does not speak it.</summary>
    public long Withheld { get; set; }

    // How meshes changed, for simulations' breakdowns: peers grafted when joining a topic, inbound grafts accepted (up to
    // D_hi, and over it from peers we dialed), grafts of a heartbeat below D_lo, for D_out and opportunistic ones, peers
    // pruned by a heartbeat over D_hi, and mesh peers that pruned us.
    public long JoinGrafts { get; set; }
    public long InboundGrafts { get; set; }
    public long InboundGraftsAboveDHigh { get; set; }
    public long BelowDLowGrafts { get; set; }
    public long DOutGrafts { get; set; }
    public long OpportunisticGrafts { get; set; }
    public long ShrunkAway { get; set; }
    public long PrunedByPeer { get; set; }

    /// <summary>The mesh counters above, in their order (<see cref="MeshChangeNames"/>).</summary>
    public long[] MeshChanges() =>
        [JoinGrafts, InboundGrafts, InboundGraftsAboveDHigh, BelowDLowGrafts, DOutGrafts, OpportunisticGrafts, ShrunkAway, PrunedByPeer];

    public static readonly string[] MeshChangeNames =
        ["join", "inbound", "inbound_over_d_hi", "below_d_lo", "d_out", "opportunistic", "shrunk_away", "pruned_by_peer"];

    /// <summary>Per topic: where first copies and duplicates came from (for simulations' breakdowns; a few topics per node).</summary>
    public Dictionary<string, TopicCounters> ByTopic { get; } = new(StringComparer.Ordinal);

    public TopicCounters Topic(string topic)
    {
        if (!ByTopic.TryGetValue(topic, out var c))
        {
            ByTopic[topic] = c = new TopicCounters();
        }
        return c;
    }
}

/// <summary>
/// One topic's message counters. A copy's sender is the message's author (its publish: flood publish or the author's
/// mesh), a peer in our mesh for the topic (its forward), or another peer (an IWANT answer, a fanout publish, or a peer
/// that has us in its mesh while we do not have it in ours).
/// </summary>
internal sealed class TopicCounters
{
    public const int FromAuthor = 0, FromMesh = 1, FromOther = 2;

    public long Delivered { get; set; }
    public long Ignored { get; set; }
    public long Rejected { get; set; }
    public long[] First { get; } = new long[3];
    public long[] Duplicates { get; } = new long[3];
    public long Published { get; set; }
    public long PublishTargets { get; set; }
    public long Forwarded { get; set; }
    public long IWantServed { get; set; }

    public long[] ToArray() =>
        [Delivered, Ignored, Rejected, First[0], First[1], First[2], Duplicates[0], Duplicates[1], Duplicates[2], Published, PublishTargets, Forwarded, IWantServed];

    public static readonly string[] Names =
        ["delivered", "ignored", "rejected", "first_author", "first_mesh", "first_other", "dup_author", "dup_mesh", "dup_other", "published", "publish_targets", "forwarded", "iwant_served"];
}

/// <summary>
/// The gossipsub v1.1/v1.2 router as a pure state machine: peers, RPCs, publishes, subscriptions and heartbeats
/// with the time go in; per-peer RPCs, deliveries, peer-exchange hints and mesh membership changes come out of
/// <see cref="Drain"/>. No I/O, no clock, randomness from the injected seeded <see cref="Random"/>; not thread-safe
/// (the shell serialises calls). Specs: gossipsub-v1.0.md and gossipsub-v1.1.md at
/// https://github.com/libp2p/specs/tree/master/pubsub/gossipsub, with v1.2's IDONTWANT (gossipsub-v1.2.md). Deviations:
/// no explicit (direct) peers, validation is synchronous, and PX carries peer ids only (no signed peer records of our own).
/// </summary>
internal sealed class GossipsubRouter
{
    private readonly PeerId _local;
    private readonly ISigner? _key;
    private readonly GossipsubOptions _options;
    private readonly Random _random;
    private readonly Func<Pb.Message, byte[]> _messageId;
    private readonly Dictionary<PeerId, PeerState> _peers = [];
    private readonly Dictionary<string, PeerIdSet> _topics = new(StringComparer.Ordinal);
    private readonly Dictionary<string, PeerIdSet> _mesh = new(StringComparer.Ordinal);
    private readonly Dictionary<string, PeerIdSet> _fanout = new(StringComparer.Ordinal);
    private readonly Dictionary<string, DateTimeOffset> _fanoutLastPublished = new(StringComparer.Ordinal);
    private readonly HashSet<string> _subscriptions = new(StringComparer.Ordinal);
    /// <summary>
    /// Per topic, peers we will not graft (or accept a graft from) until a time (UTC ticks: 24 bytes an entry, not 32).
    /// Swept every 15 heartbeats (go-libp2p-pubsub's clearBackoff); a topic's table is then trimmed when it holds under a
    /// quarter of its slots, so a burst of prunes leaves no slots behind. Only the sweep enumerates it.
    /// </summary>
    private readonly Dictionary<string, Dictionary<PeerId, long>> _backoff = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Func<GossipMessage, ValidationResult>> _validators = new(StringComparer.Ordinal);
    private readonly Dictionary<MessageId, Dictionary<PeerId, DateTimeOffset>> _promises = [];
    private readonly MessageCache _mcache;
    private readonly SeenCache _seen;
    private readonly PeerScore _score;
    private readonly Dictionary<PeerId, Outgoing> _outbox = [];
    private readonly RouterOutput _pending = new();
    private readonly PeerIdSet _meshChanged = [];
    private readonly ProtocolInstruments? _instruments;
    /// <summary>Messages other routers of this process hold, found by content (a simulated mesh's); null: none shared.</summary>
    private readonly WeakShareTable<Pb.Message>? _sharedMessages;
    /// <summary>Where a simulated mesh's routers find the one array of a message id and of an author's peer id; <see cref="SharedValues.None"/>: each keeps its own.</summary>
    private readonly SharedValues _sharedValues;
    private ulong _seqno;
    private long _ticks;

    /// <param name="instruments">The node's metrics (the service's); null in simulations, which read <see cref="Counters"/>.</param>
    /// <param name="seenKey">The seen table's secret key (<see cref="SeenKeys"/>, 16 bytes of the node's security randomness); null: from the OS.</param>
    /// <param name="sharedMessages">
    /// Where the routers of one process (a simulated mesh's nodes) find the instance of a message another one holds
    /// (<see cref="SharedValues"/>, by <see cref="MessageContent"/>: every field's bytes, never the id): a message seen first
    /// with a valid signature, or published, is validated, delivered, cached and forwarded as that instance, so a mesh keeps
    /// one copy of each message instead of one a node. Null (a daemon's router): every router keeps the copy it decoded.
    /// </param>
    /// <param name="sharedValues">
    /// Where the routers of one process find the array of a message id (and of a delivered message's author) another one
    /// holds, equal byte for byte: a message's id is kept by every node that caches or delivers it. Null or
    /// <see cref="SharedValues.None"/> (a daemon's router): each keeps its own.
    /// </param>
    public GossipsubRouter(PeerId local, ISigner? key, GossipsubOptions options, Random random, DateTimeOffset now, ulong? firstSeqno = null,
        ProtocolInstruments? instruments = null, byte[]? seenKey = null, WeakShareTable<Pb.Message>? sharedMessages = null,
        SharedValues? sharedValues = null)
    {
        options.Validate();
        if (options.SignaturePolicy == SignaturePolicy.StrictSign && key is null)
        {
            throw new ArgumentException("StrictSign needs the node's private key", nameof(key));
        }
        if (options.SignaturePolicy == SignaturePolicy.StrictNoSign && options.MessageIdFunction is null)
        {
            throw new ArgumentException("StrictNoSign messages have no from/seqno: set a content-based MessageIdFunction", nameof(options));
        }
        _local = local;
        _key = key;
        _options = options;
        _random = random;
        _messageId = options.MessageIdFunction is { } f
            ? m => f(m.Topic, m.From.Span, m.Seqno.Span, m.Data.Span)
            : DefaultMessageId;
        _mcache = new MessageCache(options.HistoryLength, options.HistoryGossip);
        _seen = new SeenCache(options.SeenTtl, seenKey is null ? SeenKeys.Random() : new SeenKeys(seenKey));
        _score = new PeerScore(options.Score, _seen, now); // its delivery records live in the seen cache
        _seqno = firstSeqno ?? (ulong)random.NextInt64();
        _instruments = instruments;
        _sharedMessages = sharedMessages;
        _sharedValues = sharedValues ?? SharedValues.None;
    }

    /// <summary>The id with the array equal to its own that other routers of this process hold, else the id as it is.</summary>
    private MessageId Shared(MessageId id) => _sharedValues.Enabled ? new MessageId(_sharedValues.ShareMessageId(id.Raw)) : id;

    /// <summary>The instance of <paramref name="message"/> other routers of this process hold (equal in every field), else <paramref name="message"/>.</summary>
    private Pb.Message Shared(Pb.Message message) =>
        _sharedMessages is { } table && MessageContent.Shareable(message) ? table.Share(message) : message;

    /// <summary>For tests: the id the cache keeps for <paramref name="id"/> (its array), else null.</summary>
    internal MessageId? CachedId(MessageId id) => _mcache.StoredId(id);

    /// <summary>For tests: the message cached under <paramref name="id"/> (the instance this router serves on IWANT), else null.</summary>
    internal Pb.Message? Cached(MessageId id) => _mcache.TryGet(id, out var message) ? message : null;

    public RouterCounters Counters { get; } = new();

    public PeerId LocalPeer => _local;

    /// <summary>
    /// Whether a peer's identify lists a protocol: asked for a message with an audience (<see cref="GossipMessage.Audience"/>,
    /// <see cref="Publish"/>'s <c>audience</c>), which is published, forwarded, advertised in IHAVE and served on IWANT only
    /// to peers that speak it. Null (a router without a peer store): such a message goes to no peer.
    /// </summary>
    public Func<PeerId, string, bool>? Speaks { get; set; }

    /// <summary>Whether <paramref name="peer"/> may be sent a message with <paramref name="audience"/>; counts a refusal.</summary>
    private bool Reaches(PeerId peer, string? audience)
    {
        if (audience is null || (Speaks is { } speaks && speaks(peer, audience)))
        {
            return true;
        }
        Counters.Withheld++;
        return false;
    }

    /// <summary>The spec's default id: the author's peer id bytes followed by the seqno bytes.</summary>
    public static byte[] DefaultMessageId(Pb.Message message)
    {
        var id = new byte[message.From.Length + message.Seqno.Length];
        message.From.Span.CopyTo(id);
        message.Seqno.Span.CopyTo(id.AsSpan(message.From.Length));
        return id;
    }

    // ---------------------------------------------------------------- introspection

    public IReadOnlyCollection<string> Subscriptions => _subscriptions;

    public IReadOnlyList<PeerId> Peers => [.. _peers.Keys];

    public IReadOnlyList<PeerId> TopicPeers(string topic) => _topics.TryGetValue(topic, out var s) ? [.. s] : [];

    public IReadOnlyList<PeerId> MeshPeers(string topic) => _mesh.TryGetValue(topic, out var s) ? [.. s] : [];

    /// <summary>
    /// The node's meshes at once: topics it has a mesh for, mesh memberships summed over topics, distinct mesh peers,
    /// and those in exactly one topic's mesh (their connection is protected for that one mesh alone).
    /// </summary>
    public MeshCensus CountMeshes()
    {
        var byPeer = new Dictionary<PeerId, int>();
        var memberships = 0;
        foreach (var mesh in _mesh.Values)
        {
            memberships += mesh.Count;
            foreach (var p in mesh)
            {
                byPeer[p] = byPeer.GetValueOrDefault(p) + 1;
            }
        }
        return new MeshCensus(_mesh.Count, memberships, byPeer.Count, byPeer.Values.Count(n => n == 1));
    }

    public IReadOnlyList<PeerId> FanoutPeers(string topic) => _fanout.TryGetValue(topic, out var s) ? [.. s] : [];

    public double Score(PeerId peer, DateTimeOffset now) => _score.Score(peer, now);

    public bool IsBackedOff(PeerId peer, string topic, DateTimeOffset now) =>
        _backoff.TryGetValue(topic, out var b) && b.TryGetValue(peer, out var until) && until > now.UtcTicks;

    /// <summary>Entries and slots of a topic's backoff table (tests).</summary>
    internal (int Entries, int Slots) BackoffTable(string topic) =>
        _backoff.TryGetValue(topic, out var b) ? (b.Count, b.Capacity) : (0, 0);

    public bool HasSeen(MessageId id) => _seen.Contains(_seen.KeyOf(id));

    /// <summary>For tests and diagnostics: seen messages with their delivery records, and those records that hold an array of peers.</summary>
    internal (int Records, int WithPeerArrays) SeenRecords => _score.DeliveryRecords;

    /// <summary>For tests: a peer's score counters in a topic (null when it has none there).</summary>
    internal (double FirstDeliveries, double MeshDeliveries, double InvalidDeliveries, double MeshFailurePenalty)? ScoreCounters(PeerId peer, string topic) =>
        _score.Counters(peer, topic);

    public int CachedMessages => _mcache.Count;

    /// <summary>Peers with a score record: the connected ones and disconnected ones retained for a penalty.</summary>
    public int ScoredPeers => _score.TrackedPeers;

    /// <summary>Disconnected peers whose score is retained (each carries a penalty), at most <see cref="PeerScoreParams.MaxRetainedPeers"/>.</summary>
    public int RetainedScores => _score.RetainedPeers;

    /// <summary>Retained scores dropped so far: retain_score ended, or evicted over the cap.</summary>
    public (long Expired, long Evicted) ForgottenScores => _score.Forgotten;

    // ---------------------------------------------------------------- peers

    public void AddPeer(PeerId peer, string protocol, bool outbound, string? ip, DateTimeOffset now)
    {
        if (peer == _local || _peers.ContainsKey(peer))
        {
            return;
        }
        _peers[peer] = new PeerState(protocol, outbound, ip);
        _score.AddPeer(peer, ip);
        if (_subscriptions.Count > 0)
        {
            var o = Out(peer);
            foreach (var t in _subscriptions)
            {
                o.Subscriptions.Add(new Pb.RPC.Types.SubOpts { Subscribe = true, Topicid = t });
            }
        }
    }

    public void RemovePeer(PeerId peer, DateTimeOffset now)
    {
        if (!_peers.Remove(peer, out var state))
        {
            return;
        }
        foreach (var t in state.Topics)
        {
            RemoveFromTopic(t, peer);
        }
        if (state.InAnyMesh(_mesh, peer))
        {
            _meshChanged.Add(peer);
        }
        foreach (var m in _mesh.Values)
        {
            m.Remove(peer);
        }
        foreach (var f in _fanout.Values)
        {
            f.Remove(peer);
        }
        _score.RemovePeer(peer, now, owesPromise: _promises.Values.Any(byPeer => byPeer.ContainsKey(peer)));
        _outbox.Remove(peer);
    }

    /// <summary>The shell dropped an RPC for the peer because its queue was full: a small behaviour penalty.</summary>
    public void SendQueueFull(PeerId peer) => _score.AddPenalty(peer, 0.1);

    /// <summary>The peer sent bytes that are not an RPC: one behaviour penalty.</summary>
    public void MalformedRpc(PeerId peer) => _score.AddPenalty(peer, 1);

    // ---------------------------------------------------------------- local API

    public void SetValidator(string topic, Func<GossipMessage, ValidationResult>? validator)
    {
        if (validator is null)
        {
            _validators.Remove(topic);
        }
        else
        {
            _validators[topic] = validator;
        }
    }

    public void Subscribe(string topic, DateTimeOffset now)
    {
        ValidateTopic(topic);
        if (!_subscriptions.Add(topic))
        {
            return;
        }
        foreach (var p in _peers.Keys)
        {
            Out(p).Subscriptions.Add(new Pb.RPC.Types.SubOpts { Subscribe = true, Topicid = topic });
        }
        // Join: fanout peers first, then other subscribers, up to D (gossipsub-v1.0.md, "JOIN").
        var mesh = new PeerIdSet();
        _mesh[topic] = mesh;
        if (_fanout.Remove(topic, out var fanout))
        {
            foreach (var p in Shuffled(fanout))
            {
                if (mesh.Count >= _options.D)
                {
                    break;
                }
                if (!IsBackedOff(p, topic, now) && _score.Score(p, now) >= 0)
                {
                    Graft(p, topic, mesh, now);
                    Counters.JoinGrafts++;
                }
            }
            _fanoutLastPublished.Remove(topic);
        }
        if (mesh.Count < _options.D)
        {
            foreach (var p in PickForMesh(topic, Candidates(topic, mesh, now, s => s >= 0), _options.D - mesh.Count))
            {
                Graft(p, topic, mesh, now);
                Counters.JoinGrafts++;
            }
        }
    }

    public void Unsubscribe(string topic, DateTimeOffset now)
    {
        if (!_subscriptions.Remove(topic))
        {
            return;
        }
        foreach (var p in _peers.Keys)
        {
            Out(p).Subscriptions.Add(new Pb.RPC.Types.SubOpts { Subscribe = false, Topicid = topic });
        }
        if (_mesh.Remove(topic, out var mesh))
        {
            foreach (var p in mesh)
            {
                _score.Prune(p, topic);
                SendPrune(p, topic, doPx: true, _options.UnsubscribeBackoff, now);
                _meshChanged.Add(p);
            }
        }
    }

    /// <summary>
    /// Signs (by policy) and sends our own message; returns its id and how many peers it went to. With an
    /// <paramref name="audience"/> (a protocol id), only peers that speak it are sent or told of it (<see cref="Speaks"/>).
    /// </summary>
    public (MessageId Id, int Peers) Publish(string topic, ReadOnlyMemory<byte> data, DateTimeOffset now, string? audience = null)
    {
        ValidateTopic(topic);
        var message = new Pb.Message { Topic = topic, Data = ByteString.CopyFrom(data.Span) };
        if (_options.SignaturePolicy == SignaturePolicy.StrictSign)
        {
            var seqno = new byte[8];
            BinaryPrimitives.WriteUInt64BigEndian(seqno, ++_seqno);
            message.From = ByteString.CopyFrom(_local.Bytes);
            message.Seqno = ByteString.CopyFrom(seqno);
            MessageSigning.Sign(message, _key!);
        }
        if (message.CalculateSize() > _options.MaxMessageSize)
        {
            throw new ArgumentException($"message is over the {_options.MaxMessageSize}-byte limit", nameof(data));
        }
        var id = new MessageId(_messageId(message));
        if (!_seen.Add(_seen.KeyOf(id), now))
        {
            throw new InvalidOperationException("a message with this id was already seen (duplicate publish)");
        }
        message = Shared(message);
        id = Shared(id);
        _instruments?.GossipPublished();
        _mcache.Put(id, message, audience);
        if (_options.DeliverOwnMessages && _subscriptions.Contains(topic))
        {
            _pending.Deliveries.Add(ToGossip(message, id, _local));
        }
        IEnumerable<PeerId> targets;
        if (_options.FloodPublish)
        {
            targets = _topics.TryGetValue(topic, out var subscribers)
                ? subscribers.Where(p => _score.Score(p, now) >= _options.Thresholds.PublishThreshold).ToArray()
                : [];
        }
        else if (_mesh.TryGetValue(topic, out var mesh))
        {
            targets = mesh;
        }
        else
        {
            if (!_fanout.TryGetValue(topic, out var fanout))
            {
                fanout = [.. Candidates(topic, [], now, s => s >= _options.Thresholds.PublishThreshold).Take(_options.D)];
                _fanout[topic] = fanout;
            }
            _fanoutLastPublished[topic] = now;
            targets = fanout;
        }
        if (!_options.FloodPublish)
        {
            targets = targets.Concat(FloodsubSubscribers(topic, default, message.From)
                .Where(p => _score.Score(p, now) >= _options.Thresholds.PublishThreshold)).ToArray();
        }
        var count = 0;
        foreach (var p in targets)
        {
            if (!Reaches(p, audience))
            {
                continue;
            }
            Out(p).Messages.Add(message);
            count++;
        }
        var tc = Counters.Topic(topic);
        tc.Published++;
        tc.PublishTargets += count;
        return (id, count);
    }

    // ---------------------------------------------------------------- remote input

    public void HandleRpc(PeerId from, Pb.RPC rpc, DateTimeOffset now)
    {
        if (!_peers.TryGetValue(from, out var state))
        {
            return;
        }
        if (_score.Score(from, now) < _options.Thresholds.GraylistThreshold)
        {
            Counters.GraylistedRpcs++;
            return;
        }
        var subs = Math.Min(rpc.Subscriptions.Count, _options.MaxSubscriptionsPerRpc);
        for (var i = 0; i < subs; i++)
        {
            HandleSubscription(from, state, rpc.Subscriptions[i], now);
        }
        var messages = Math.Min(rpc.Publish.Count, _options.MaxMessagesPerRpc);
        for (var i = 0; i < messages; i++)
        {
            HandleMessage(from, rpc.Publish[i], now);
        }
        if (rpc.Control is { } control && !state.IsFloodsub)
        {
            HandleControl(from, state, control, now);
        }
    }

    private void HandleSubscription(PeerId from, PeerState state, Pb.RPC.Types.SubOpts sub, DateTimeOffset now)
    {
        var topic = sub.Topicid;
        if (!IsValidTopic(topic))
        {
            return;
        }
        if (sub.Subscribe)
        {
            if (state.Topics.Contains(topic) || state.Topics.Count >= _options.MaxTopicsPerPeer)
            {
                return;
            }
            if (_subscriptions.TryGetValue(topic, out var ours))
            {
                topic = ours; // one instance of a topic we joined, not each peer's own copy
            }
            state.Topics.Add(topic);
            if (!_topics.TryGetValue(topic, out var set))
            {
                _topics[topic] = set = [];
            }
            set.Add(from);
        }
        else if (state.Topics.Remove(topic))
        {
            RemoveFromTopic(topic, from);
            if (_mesh.TryGetValue(topic, out var mesh) && mesh.Remove(from))
            {
                _score.Prune(from, topic);
                _meshChanged.Add(from);
            }
            if (_fanout.TryGetValue(topic, out var fanout))
            {
                fanout.Remove(from);
            }
        }
    }

    private void RemoveFromTopic(string topic, PeerId peer)
    {
        if (_topics.TryGetValue(topic, out var set) && set.Remove(peer) && set.Count == 0)
        {
            _topics.Remove(topic);
        }
    }

    private void HandleMessage(PeerId from, Pb.Message message, DateTimeOffset now)
    {
        Counters.MessagesReceived++;
        _instruments?.GossipReceived();
        if (!message.HasTopic || !_subscriptions.Contains(message.Topic))
        {
            return;
        }
        var topic = message.Topic;
        if (message.CalculateSize() > _options.MaxMessageSize)
        {
            Counters.Oversized++;
            _instruments?.GossipRejected("oversized");
            _score.MarkInvalid(from, topic);
            return;
        }
        // The spec's id (author, then seqno) is built on the stack: a duplicate, most of the copies a node receives, is
        // found in the seen table without an array of its own; the id becomes an object only for a message seen first.
        var defaultId = _options.MessageIdFunction is null;
        var idLength = defaultId ? message.From.Length + message.Seqno.Length : 0;
        Span<byte> spec = defaultId ? idLength <= 256 ? stackalloc byte[256] : new byte[idLength] : default;
        var id = default(MessageId);
        if (defaultId)
        {
            spec = spec[..idLength];
            message.From.Span.CopyTo(spec);
            message.Seqno.Span.CopyTo(spec[message.From.Length..]);
        }
        else
        {
            id = new MessageId(_messageId(message));
            idLength = id.Span.Length;
        }
        if (idLength == 0 || idLength > _options.MaxMessageIdLength * 4)
        {
            _instruments?.GossipRejected("malformed");
            _score.MarkInvalid(from, topic);
            return;
        }
        var key = defaultId ? _seen.KeyOf(spec) : _seen.KeyOf(id);
        var topicCounters = Counters.Topic(topic);
        var relation = message.From.Length > 0 && from.Bytes.SequenceEqual(message.From.Span) ? TopicCounters.FromAuthor
            : _mesh.TryGetValue(topic, out var ourMesh) && ourMesh.Contains(from) ? TopicCounters.FromMesh : TopicCounters.FromOther;
        if (_seen.Contains(key))
        {
            topicCounters.Duplicates[relation]++;
            Counters.Duplicates++;
            _instruments?.GossipDuplicate();
            _score.DuplicateMessage(key, from, topic, now);
            return;
        }
        if (MessageSigning.Verify(message, _options.SignaturePolicy) != SignatureFailure.None)
        {
            Counters.InvalidSignatures++;
            _instruments?.GossipRejected("invalid_signature");
            _score.MarkInvalid(from, topic);
            return;
        }
        if (defaultId)
        {
            id = new MessageId(spec.ToArray());
        }
        _seen.Add(key, now);
        _promises.Remove(id);
        // From here on the message is the instance of these bytes other routers of the process hold, if any (equal in every
        // field: what is validated, delivered, cached and forwarded is exactly what came); a daemon's router keeps its own.
        message = Shared(message);
        id = Shared(id);
        SendIDontWant(message, id, from, topic);
        var gossip = ToGossip(message, id, from);
        var result = ValidationResult.Accept;
        if (_validators.TryGetValue(topic, out var validator))
        {
            try
            {
                result = validator(gossip);
            }
            catch (Exception)
            {
                // A throwing validator is the application's bug; the message is dropped without blaming the peer.
                result = ValidationResult.Ignore;
            }
        }
        switch (result)
        {
            case ValidationResult.Accept:
                topicCounters.Delivered++;
                topicCounters.First[relation]++;
                Counters.Delivered++;
                _instruments?.GossipDelivered();
                _score.DeliverMessage(key, from, topic, now);
                _mcache.Put(id, message, gossip.Audience);
                _pending.Deliveries.Add(gossip);
                Forward(message, key, from, topic, gossip.Audience);
                break;
            case ValidationResult.Reject:
                topicCounters.Rejected++;
                Counters.Rejected++;
                _instruments?.GossipRejected("rejected");
                _score.RejectMessage(key, from, topic, now);
                break;
            default:
                topicCounters.Ignored++;
                Counters.Ignored++;
                _instruments?.GossipRejected("ignored");
                _score.IgnoreMessage(key, from, now);
                break;
        }
    }

    /// <summary>
    /// v1.2: on the first copy of a large message, before validating it, tell the topic's other mesh peers that speak v1.2
    /// not to send it (the copies they would send are the duplicates this saves).
    /// </summary>
    private void SendIDontWant(Pb.Message message, MessageId id, PeerId source, string topic)
    {
        if (message.Data.Length < _options.IDontWantMinDataSize || !_mesh.TryGetValue(topic, out var mesh))
        {
            return;
        }
        ByteString? raw = null; // one copy of the id for every peer told (ByteStrings are immutable)
        foreach (var p in mesh)
        {
            if (p == source || !_peers.TryGetValue(p, out var state) || !state.IsV12)
            {
                continue;
            }
            var control = Out(p).Control;
            if (control.Idontwant.Count == 0)
            {
                control.Idontwant.Add(new Pb.ControlIDontWant());
            }
            control.Idontwant[0].MessageIDs.Add(raw ??= ByteString.CopyFrom(id.Span));
            Counters.IDontWantSent++;
        }
    }

    private void HandleIDontWant(PeerState state, IList<Pb.ControlIDontWant> entries, ref int budget)
    {
        foreach (var entry in entries)
        {
            foreach (var raw in entry.MessageIDs)
            {
                if (budget <= 0 || state.IDontWantThisHeartbeat >= _options.MaxIDontWantPerHeartbeat)
                {
                    return;
                }
                budget--;
                if (raw.Length == 0 || raw.Length > _options.MaxMessageIdLength * 4)
                {
                    continue;
                }
                state.IDontWantThisHeartbeat++;
                Counters.IDontWantReceived++;
                (state.DontWant ??= [])[_seen.KeyOf(raw.Span)] = _ticks;
            }
        }
    }

    private void Forward(Pb.Message message, SeenKey id, PeerId source, string topic, string? audience)
    {
        var author = message.From;
        foreach (var p in FloodsubSubscribers(topic, source, author))
        {
            if (Reaches(p, audience))
            {
                Out(p).Messages.Add(message);
            }
        }
        if (!_mesh.TryGetValue(topic, out var mesh))
        {
            return;
        }
        var forwarded = 0;
        foreach (var p in mesh)
        {
            if (p == source || (author.Length > 0 && p.Bytes.SequenceEqual(author.Span)))
            {
                continue;
            }
            if (_peers.TryGetValue(p, out var state) && state.DontWant is { } dontWant && dontWant.ContainsKey(id))
            {
                Counters.IDontWantHonoured++;
                continue;
            }
            if (!Reaches(p, audience))
            {
                continue;
            }
            Out(p).Messages.Add(message);
            forwarded++;
        }
        Counters.Topic(topic).Forwarded += forwarded;
    }

    /// <summary>Floodsub peers subscribed to <paramref name="topic"/>, other than the one a message came from and its author (spec: floodsub compatibility).</summary>
    private IEnumerable<PeerId> FloodsubSubscribers(string topic, PeerId source, ByteString author)
    {
        if (!_topics.TryGetValue(topic, out var subscribers))
        {
            yield break;
        }
        foreach (var p in subscribers)
        {
            if (p != source && _peers.TryGetValue(p, out var state) && state.IsFloodsub
                && !(author.Length > 0 && p.Bytes.SequenceEqual(author.Span)))
            {
                yield return p;
            }
        }
    }

    private bool IsFloodsubPeer(PeerId peer) => _peers.TryGetValue(peer, out var state) && state.IsFloodsub;

    private void HandleControl(PeerId from, PeerState state, Pb.ControlMessage control, DateTimeOffset now)
    {
        var budget = _options.MaxControlEntriesPerRpc;
        var score = _score.Score(from, now);
        if (control.Ihave.Count > 0)
        {
            HandleIHave(from, state, control.Ihave, score, ref budget, now);
        }
        if (control.Iwant.Count > 0)
        {
            HandleIWant(from, state, control.Iwant, score, ref budget);
        }
        for (var i = 0; i < control.Graft.Count && budget > 0; i++, budget--)
        {
            HandleGraft(from, state, control.Graft[i].TopicID, score, now);
        }
        for (var i = 0; i < control.Prune.Count && budget > 0; i++, budget--)
        {
            HandlePrune(from, state, control.Prune[i], now);
        }
        if (control.Idontwant.Count > 0 && state.IsV12)
        {
            HandleIDontWant(state, control.Idontwant, ref budget);
        }
    }

    private void HandleIHave(PeerId from, PeerState state, IList<Pb.ControlIHave> ihaves, double score, ref int budget, DateTimeOffset now)
    {
        if (score < _options.Thresholds.GossipThreshold)
        {
            Counters.IHaveIgnored++;
            return;
        }
        if (++state.IHaveThisHeartbeat > _options.MaxIHaveMessages || state.IAskedThisHeartbeat >= _options.MaxIHaveLength)
        {
            Counters.IHaveIgnored++;
            return;
        }
        var wanted = new HashSet<MessageId>();
        var room = _options.MaxIHaveLength - state.IAskedThisHeartbeat;
        foreach (var ihave in ihaves)
        {
            if (budget-- <= 0)
            {
                break;
            }
            if (!_mesh.ContainsKey(ihave.TopicID))
            {
                continue;
            }
            foreach (var raw in ihave.MessageIDs)
            {
                if (raw.Length == 0 || raw.Length > _options.MaxMessageIdLength)
                {
                    continue;
                }
                if (!_seen.Contains(_seen.KeyOf(raw.Span)))
                {
                    wanted.Add(new MessageId(raw.ToByteArray()));
                }
                if (wanted.Count >= room * 2)
                {
                    break;
                }
            }
        }
        if (wanted.Count == 0)
        {
            return;
        }
        var ask = Shuffled(wanted).Take(room).ToArray();
        state.IAskedThisHeartbeat += ask.Length;
        var iwant = new Pb.ControlIWant();
        foreach (var id in ask)
        {
            iwant.MessageIDs.Add(ByteString.CopyFrom(id.Span));
        }
        Out(from).Control.Iwant.Add(iwant);
        Counters.IWantSent += ask.Length;
        // Track one promise per IWANT, as go does: the peer must deliver it within the follow-up time (P₇).
        var tracked = ask[_random.Next(ask.Length)];
        if (!_promises.TryGetValue(tracked, out var byPeer))
        {
            _promises[tracked] = byPeer = [];
        }
        byPeer.TryAdd(from, now + _options.IWantFollowupTime);
    }

    private void HandleIWant(PeerId from, PeerState state, IList<Pb.ControlIWant> iwants, double score, ref int budget)
    {
        if (score < _options.Thresholds.GossipThreshold)
        {
            return;
        }
        foreach (var iwant in iwants)
        {
            if (budget-- <= 0)
            {
                return;
            }
            foreach (var raw in iwant.MessageIDs)
            {
                if (state.IWantServedThisHeartbeat >= _options.MaxIWantReplies)
                {
                    return;
                }
                if (raw.Length == 0 || raw.Length > _options.MaxMessageIdLength)
                {
                    continue;
                }
                var message = _mcache.GetForPeer(new MessageId(raw.ToByteArray()), from, _options.GossipRetransmission, Reaches);
                if (message is null)
                {
                    continue;
                }
                state.IWantServedThisHeartbeat++;
                Counters.IWantServed++;
                Counters.Topic(message.Topic).IWantServed++;
                Out(from).Messages.Add(message);
            }
        }
    }

    private void HandleGraft(PeerId from, PeerState state, string topic, double score, DateTimeOffset now)
    {
        if (!_mesh.TryGetValue(topic, out var mesh))
        {
            // Not our topic: refuse without PX, so as not to leak peers of topics we don't know.
            if (IsValidTopic(topic))
            {
                SendPrune(from, topic, doPx: false, _options.PruneBackoff, now);
            }
            return;
        }
        if (mesh.Contains(from))
        {
            return;
        }
        if (_backoff.TryGetValue(topic, out var b) && b.TryGetValue(from, out var untilTicks) && untilTicks > now.UtcTicks)
        {
            var until = new DateTimeOffset(untilTicks, TimeSpan.Zero);
            Counters.GraftsDuringBackoff++;
            _score.AddPenalty(from, 1);
            if (now < until - _options.PruneBackoff + _options.GraftFloodThreshold)
            {
                _score.AddPenalty(from, 1);
            }
            SendPrune(from, topic, doPx: false, _options.PruneBackoff, now);
            return;
        }
        if (score < 0)
        {
            SendPrune(from, topic, doPx: false, _options.PruneBackoff, now);
            return;
        }
        if (mesh.Count >= _options.DHigh && !state.Outbound)
        {
            SendPrune(from, topic, doPx: true, _options.PruneBackoff, now);
            return;
        }
        mesh.Add(from);
        if (mesh.Count > _options.DHigh)
        {
            Counters.InboundGraftsAboveDHigh++; // from a peer we dialed: accepted over D_hi, the next heartbeat shrinks the mesh
        }
        else
        {
            Counters.InboundGrafts++;
        }
        _score.Graft(from, topic, now);
        _meshChanged.Add(from);
    }

    private void HandlePrune(PeerId from, PeerState state, Pb.ControlPrune prune, DateTimeOffset now)
    {
        var topic = prune.TopicID;
        if (!_mesh.TryGetValue(topic, out var mesh))
        {
            return;
        }
        if (mesh.Remove(from))
        {
            Counters.PrunedByPeer++;
            _score.Prune(from, topic);
            _meshChanged.Add(from);
        }
        var backoff = _options.PruneBackoff;
        if (state.IsV11 && prune.HasBackoff)
        {
            backoff = prune.Backoff >= (ulong)_options.MaxBackoff.TotalSeconds
                ? _options.MaxBackoff
                : TimeSpan.FromSeconds(prune.Backoff);
        }
        AddBackoff(from, topic, backoff, now);
        if (prune.Peers.Count == 0 || !state.IsV11)
        {
            return;
        }
        if (_score.Score(from, now) < _options.Thresholds.AcceptPXThreshold)
        {
            return;
        }
        var taken = 0;
        foreach (var info in prune.Peers)
        {
            if (taken >= _options.PrunePeers)
            {
                break;
            }
            if (!PeerId.TryFromBytes(info.PeerID.Span, out var peer) || peer == _local || _peers.ContainsKey(peer))
            {
                continue;
            }
            var record = info.HasSignedPeerRecord && info.SignedPeerRecord.Length <= 4096 ? info.SignedPeerRecord.ToByteArray() : null;
            _pending.PeerExchange.Add(new PeerExchangeHint(peer, record, topic));
            taken++;
        }
    }

    // ---------------------------------------------------------------- heartbeat

    public void Heartbeat(DateTimeOffset now)
    {
        _ticks++;
        foreach (var s in _peers.Values)
        {
            s.IHaveThisHeartbeat = 0;
            s.IAskedThisHeartbeat = 0;
            s.IWantServedThisHeartbeat = 0;
            s.IDontWantThisHeartbeat = 0;
            if (s.DontWant is { } dontWant)
            {
                foreach (var (id, at) in dontWant.ToArray())
                {
                    if (_ticks - at >= _options.IDontWantTtlHeartbeats)
                    {
                        dontWant.Remove(id);
                    }
                }
                if (dontWant.Count == 0)
                {
                    s.DontWant = null; // an empty table still costs ~80 B per peer
                }
            }
        }
        _score.Refresh(now);
        ApplyBrokenPromises(now);
        var scores = new Dictionary<PeerId, double>();
        double ScoreOf(PeerId p)
        {
            if (!scores.TryGetValue(p, out var s))
            {
                scores[p] = s = _score.Score(p, now);
            }
            return s;
        }

        foreach (var (topic, mesh) in _mesh)
        {
            foreach (var p in mesh.Where(p => ScoreOf(p) < 0).ToArray())
            {
                Prune(p, topic, mesh, doPx: false, now);
            }
            if (mesh.Count < _options.DLow)
            {
                foreach (var p in PickForMesh(topic, Candidates(topic, mesh, now, s => s >= 0, ScoreOf), _options.D - mesh.Count))
                {
                    Graft(p, topic, mesh, now);
                    Counters.BelowDLowGrafts++;
                }
            }
            if (mesh.Count > _options.DHigh)
            {
                Counters.ShrunkAway += mesh.Count - _options.D;
                ShrinkMesh(topic, mesh, ScoreOf, now);
            }
            if (mesh.Count >= _options.DLow)
            {
                var outbound = mesh.Count(p => _peers[p].Outbound);
                if (outbound < _options.DOut)
                {
                    foreach (var p in PickForMesh(topic, Candidates(topic, mesh, now, s => s >= 0, ScoreOf).Where(p => _peers[p].Outbound), _options.DOut - outbound))
                    {
                        Graft(p, topic, mesh, now);
                        Counters.DOutGrafts++;
                    }
                }
            }
            if (_options.OpportunisticGraftTicks > 0 && _ticks % _options.OpportunisticGraftTicks == 0 && mesh.Count > 1)
            {
                var sorted = mesh.Select(ScoreOf).Order().ToArray();
                var median = sorted[sorted.Length / 2];
                if (median < _options.Thresholds.OpportunisticGraftThreshold)
                {
                    foreach (var p in PickForMesh(topic, Candidates(topic, mesh, now, s => s > median, ScoreOf), _options.OpportunisticGraftPeers))
                    {
                        Graft(p, topic, mesh, now);
                        Counters.OpportunisticGrafts++;
                    }
                }
            }
            EmitGossip(topic, mesh, ScoreOf);
        }

        foreach (var topic in _fanoutLastPublished.Where(kv => kv.Value + _options.FanoutTtl < now).Select(kv => kv.Key).ToArray())
        {
            _fanout.Remove(topic);
            _fanoutLastPublished.Remove(topic);
        }
        foreach (var (topic, fanout) in _fanout)
        {
            fanout.RemoveWhere(p => !_topics.TryGetValue(topic, out var subs) || !subs.Contains(p)
                                    || ScoreOf(p) < _options.Thresholds.PublishThreshold);
            if (fanout.Count < _options.D)
            {
                foreach (var p in Candidates(topic, fanout, now, s => s >= _options.Thresholds.PublishThreshold, ScoreOf, ignoreBackoff: true)
                             .Take(_options.D - fanout.Count))
                {
                    fanout.Add(p);
                }
            }
            EmitGossip(topic, fanout, ScoreOf);
        }

        _mcache.Shift(); // the seen cache was pruned by _score.Refresh above
        if (_ticks % 15 == 0)
        {
            var nowTicks = now.UtcTicks;
            foreach (var b in _backoff.Values)
            {
                foreach (var p in b.Where(kv => kv.Value <= nowTicks).Select(kv => kv.Key).ToArray())
                {
                    b.Remove(p);
                }
                if (b.Count > 0 && b.Count < b.Capacity / 4)
                {
                    b.TrimExcess();
                }
            }
            foreach (var t in _backoff.Where(kv => kv.Value.Count == 0).Select(kv => kv.Key).ToArray())
            {
                _backoff.Remove(t);
            }
        }
    }

    private void ShrinkMesh(string topic, PeerIdSet mesh, Func<PeerId, double> scoreOf, DateTimeOffset now)
    {
        // Keep the D_score best, fill to D at random, then make sure D_out of the kept are outbound.
        var byScore = Shuffled(mesh).OrderByDescending(scoreOf).ToList();
        var best = byScore.Take(_options.DScore).ToList();
        var rest = Shuffled(byScore.Skip(_options.DScore)).ToList();
        var ordered = best.Concat(rest).ToList();
        var keep = ordered.Take(_options.D).ToList();
        var outbound = keep.Count(p => _peers[p].Outbound);
        if (outbound < _options.DOut)
        {
            var extra = ordered.Skip(_options.D).Where(p => _peers[p].Outbound).Take(_options.DOut - outbound).ToList();
            for (var i = keep.Count - 1; i >= 0 && extra.Count > 0; i--)
            {
                if (!_peers[keep[i]].Outbound)
                {
                    keep[i] = extra[^1];
                    extra.RemoveAt(extra.Count - 1);
                }
            }
        }
        var kept = keep.ToHashSet();
        foreach (var p in mesh.Where(p => !kept.Contains(p)).ToArray())
        {
            Prune(p, topic, mesh, doPx: true, now);
        }
    }

    private void EmitGossip(string topic, PeerIdSet exclude, Func<PeerId, double> scoreOf)
    {
        var ids = _mcache.GossipIds(topic);
        if (ids.Count == 0 || !_topics.TryGetValue(topic, out var subscribers))
        {
            return;
        }
        if (ids.Count > _options.MaxIHaveLength)
        {
            ids = Shuffled(ids).Take(_options.MaxIHaveLength).ToList();
        }
        var candidates = Shuffled(subscribers.Where(p => !exclude.Contains(p) && !IsFloodsubPeer(p) && scoreOf(p) >= _options.Thresholds.GossipThreshold)).ToList();
        var target = Math.Max(_options.DLazy, (int)(_options.GossipFactor * candidates.Count));
        ByteString[]? wrapped = null; // one wrapper per id, shared by every peer's IHAVE (ByteStrings are immutable)
        string?[]? audiences = null; // per id, the audience of a restricted message; null while none is
        foreach (var p in candidates.Take(target))
        {
            if (wrapped is null)
            {
                wrapped = new ByteString[ids.Count];
                for (var i = 0; i < wrapped.Length; i++)
                {
                    wrapped[i] = UnsafeByteOperations.UnsafeWrap(ids[i].Raw);
                    if (_mcache.AudienceOf(ids[i]) is { } audience)
                    {
                        (audiences ??= new string?[ids.Count])[i] = audience;
                    }
                }
            }
            var ihave = new Pb.ControlIHave { TopicID = topic };
            if (audiences is null)
            {
                ihave.MessageIDs.AddRange(wrapped);
            }
            else
            {
                // A restricted message is advertised only to a peer that speaks its audience (it would be refused the IWANT).
                for (var i = 0; i < wrapped.Length; i++)
                {
                    if (Reaches(p, audiences[i]))
                    {
                        ihave.MessageIDs.Add(wrapped[i]);
                    }
                }
                if (ihave.MessageIDs.Count == 0)
                {
                    continue;
                }
            }
            Out(p).Control.Ihave.Add(ihave);
        }
    }

    private void ApplyBrokenPromises(DateTimeOffset now)
    {
        List<MessageId>? done = null;
        foreach (var (id, byPeer) in _promises)
        {
            foreach (var (peer, expiry) in byPeer.ToArray())
            {
                if (expiry <= now)
                {
                    byPeer.Remove(peer);
                    Counters.BrokenPromises++;
                    _score.AddPenalty(peer, 1);
                }
            }
            if (byPeer.Count == 0)
            {
                (done ??= []).Add(id);
            }
        }
        done?.ForEach(id => _promises.Remove(id));
    }

    // ---------------------------------------------------------------- output

    /// <summary>Everything to do since the last call: RPCs packed per peer within <see cref="GossipsubOptions.MaxRpcSize"/>.</summary>
    public RouterOutput Drain()
    {
        if (_outbox.Count == 0 && _pending.Deliveries.Count == 0 && _pending.PeerExchange.Count == 0 && _meshChanged.Count == 0)
        {
            return RouterOutput.None; // a duplicate, or a heartbeat with nothing to say: no output made for it
        }
        var output = new RouterOutput();
        foreach (var (peer, o) in _outbox)
        {
            Pack(peer, o, output.Rpcs);
        }
        _outbox.Clear();
        output.Deliveries.AddRange(_pending.Deliveries);
        output.PeerExchange.AddRange(_pending.PeerExchange);
        _pending.Deliveries.Clear();
        _pending.PeerExchange.Clear();
        foreach (var p in _meshChanged)
        {
            output.MeshMembership.Add((p, _mesh.Values.Any(m => m.Contains(p))));
        }
        _meshChanged.Clear();
        return output;
    }

    private void Pack(PeerId peer, Outgoing o, List<OutboundRpc> into)
    {
        // No closures and no control record unless there is control to send: this runs for every peer a drain sends to
        // (a forwarded message's mesh peers, each heartbeat's gossip), so its garbage is per copy of every message.
        var rpc = new Pb.RPC();
        var size = 0;
        if (o.PendingSubscriptions is { } subscriptions)
        {
            rpc.Subscriptions.AddRange(subscriptions);
            size = rpc.CalculateSize();
        }
        // Control entries and messages are packed greedily; an RPC is cut before it would pass MaxRpcSize.
        if (o.PendingControl is { } control)
        {
            // IDONTWANT in an RPC of its own, ahead of everything else: it only helps if it gets there before the copy it
            // refuses is sent, so it must not wait behind the (large) messages queued with it.
            if (control.Idontwant.Count > 0)
            {
                PackControl(peer, control.Idontwant, static c => c.Idontwant, ref rpc, ref size, into);
                into.Add(new OutboundRpc(peer, rpc));
                rpc = new Pb.RPC();
                size = 0;
            }
            PackControl(peer, control.Graft, static c => c.Graft, ref rpc, ref size, into);
            PackControl(peer, control.Prune, static c => c.Prune, ref rpc, ref size, into);
            PackControl(peer, control.Iwant, static c => c.Iwant, ref rpc, ref size, into);
            PackControl(peer, control.Ihave, static c => c.Ihave, ref rpc, ref size, into);
        }
        if (o.PendingMessages is { } messages)
        {
            foreach (var m in messages)
            {
                var ms = m.CalculateSize() + 8;
                CutIfFull(peer, ms, ref rpc, ref size, into);
                rpc.Publish.Add(m);
                size += ms;
            }
        }
        if (size > 0 || rpc.Subscriptions.Count > 0)
        {
            into.Add(new OutboundRpc(peer, rpc));
        }
    }

    private void PackControl<T>(PeerId peer, RepeatedField<T> entries, Func<Pb.ControlMessage, RepeatedField<T>> field,
        ref Pb.RPC rpc, ref int size, List<OutboundRpc> into)
        where T : IMessage
    {
        foreach (var e in entries)
        {
            var es = e.CalculateSize() + 8;
            CutIfFull(peer, es, ref rpc, ref size, into);
            field(rpc.Control ??= new Pb.ControlMessage()).Add(e);
            size += es;
        }
    }

    /// <summary>Sends the RPC packed so far and starts a new one when <paramref name="adding"/> more bytes would pass MaxRpcSize.</summary>
    private void CutIfFull(PeerId peer, int adding, ref Pb.RPC rpc, ref int size, List<OutboundRpc> into)
    {
        if (size + adding > _options.MaxRpcSize && size > 0)
        {
            into.Add(new OutboundRpc(peer, rpc));
            rpc = new Pb.RPC();
            size = 0;
        }
    }

    // ---------------------------------------------------------------- helpers

    private Outgoing Out(PeerId peer)
    {
        if (!_outbox.TryGetValue(peer, out var o))
        {
            _outbox[peer] = o = new Outgoing();
        }
        return o;
    }

    private void Graft(PeerId peer, string topic, PeerIdSet mesh, DateTimeOffset now)
    {
        if (mesh.Add(peer))
        {
            _score.Graft(peer, topic, now);
            _meshChanged.Add(peer);
            Out(peer).Control.Graft.Add(new Pb.ControlGraft { TopicID = topic });
        }
    }

    private void Prune(PeerId peer, string topic, PeerIdSet mesh, bool doPx, DateTimeOffset now)
    {
        if (mesh.Remove(peer))
        {
            _score.Prune(peer, topic);
            _meshChanged.Add(peer);
            SendPrune(peer, topic, doPx, _options.PruneBackoff, now);
        }
    }

    private void SendPrune(PeerId peer, string topic, bool doPx, TimeSpan backoff, DateTimeOffset now)
    {
        AddBackoff(peer, topic, backoff, now);
        if (!_peers.TryGetValue(peer, out var state))
        {
            return;
        }
        var prune = new Pb.ControlPrune { TopicID = topic };
        if (state.IsV11)
        {
            prune.Backoff = (ulong)backoff.TotalSeconds;
            if (doPx && _options.PeerExchange && _topics.TryGetValue(topic, out var subscribers))
            {
                foreach (var p in Shuffled(subscribers.Where(p => p != peer && _score.Score(p, now) >= 0)).Take(_options.PrunePeers))
                {
                    prune.Peers.Add(new Pb.PeerInfo { PeerID = ByteString.CopyFrom(p.Bytes) });
                }
            }
        }
        Out(peer).Control.Prune.Add(prune);
    }

    private void AddBackoff(PeerId peer, string topic, TimeSpan duration, DateTimeOffset now)
    {
        if (!_backoff.TryGetValue(topic, out var b))
        {
            _backoff[topic] = b = [];
        }
        var until = (now + duration).UtcTicks;
        if (!b.TryGetValue(peer, out var existing) || existing < until)
        {
            b[peer] = until;
        }
    }

    private IEnumerable<PeerId> Candidates(string topic, PeerIdSet exclude, DateTimeOffset now, Func<double, bool> scoreOk,
        Func<PeerId, double>? scoreOf = null, bool ignoreBackoff = false)
    {
        if (!_topics.TryGetValue(topic, out var subscribers))
        {
            return [];
        }
        scoreOf ??= p => _score.Score(p, now);
        return Shuffled(subscribers.Where(p => !exclude.Contains(p) && !IsFloodsubPeer(p) && (ignoreBackoff || !IsBackedOff(p, topic, now)) && scoreOk(scoreOf(p))));
    }

    /// <summary>
    /// Up to <paramref name="count"/> of <paramref name="shuffled"/> (eligible candidates in random order) to graft into
    /// <paramref name="topic"/>'s mesh. With <see cref="GossipsubOptions.PreferMeshOverlap"/>: first, in their random
    /// order, candidates already in another of our meshes (their connection is protected already, so the mesh costs no
    /// further connection), at most count − f of them, f = ⌈count·fresh/D⌉ ≥ 1; then f or more at random from those in
    /// none of our other meshes; then any others. When no candidate is in another mesh, the first count, as without it.
    /// Takes no randomness of its own: the run's random sequence is the same with or without the preference.
    /// </summary>
    private IEnumerable<PeerId> PickForMesh(string topic, IEnumerable<PeerId> shuffled, int count)
    {
        if (count <= 0)
        {
            return [];
        }
        if (!_options.PreferMeshOverlap || _mesh.Count < 2)
        {
            return shuffled.Take(count);
        }
        var all = shuffled as PeerId[] ?? shuffled.ToArray();
        if (all.Length <= count)
        {
            return all;
        }
        var inOther = new HashSet<PeerId>();
        foreach (var (t, m) in _mesh)
        {
            if (!string.Equals(t, topic, StringComparison.Ordinal))
            {
                inOther.UnionWith(m);
            }
        }
        var fresh = Math.Max(1, (count * _options.MeshOverlapFreshPeers + _options.D - 1) / _options.D);
        var picks = new List<PeerId>(count);
        foreach (var p in all)
        {
            if (picks.Count >= count - fresh)
            {
                break;
            }
            if (inOther.Contains(p))
            {
                picks.Add(p);
            }
        }
        if (picks.Count == 0)
        {
            return all.Take(count);
        }
        Counters.OverlapGrafts += picks.Count;
        foreach (var p in all)
        {
            if (picks.Count >= count)
            {
                return picks;
            }
            if (!inOther.Contains(p))
            {
                picks.Add(p);
            }
        }
        foreach (var p in all)
        {
            if (picks.Count >= count)
            {
                break;
            }
            if (!picks.Contains(p))
            {
                picks.Add(p);
            }
        }
        return picks;
    }

    private T[] Shuffled<T>(IEnumerable<T> items)
    {
        var array = items.ToArray();
        _random.Shuffle(array);
        return array;
    }

    private bool IsValidTopic(string topic) => topic.Length > 0 && topic.Length <= _options.MaxTopicLength;

    private void ValidateTopic(string topic)
    {
        if (!IsValidTopic(topic))
        {
            throw new ArgumentException($"a topic is 1 to {_options.MaxTopicLength} characters", nameof(topic));
        }
    }

    private GossipMessage ToGossip(Pb.Message message, MessageId id, PeerId receivedFrom)
    {
        PeerId? author = message.HasFrom && PeerId.TryFromBytes(message.From.Span, out var a) ? _sharedValues.Share(a) : null;
        return new GossipMessage(message.Topic, message.Data.Memory, id, author, GossipMessage.ReadSeqno(message.Seqno.Span), receivedFrom);
    }

    private sealed class PeerState(string protocol, bool outbound, string? ip)
    {
        public string Protocol { get; } = protocol;
        public bool IsV11 { get; } = protocol is GossipsubProtocol.V11 or GossipsubProtocol.V12;
        /// <summary>Speaks v1.2: sends and honours IDONTWANT.</summary>
        public bool IsV12 { get; } = protocol == GossipsubProtocol.V12;
        /// <summary>Message ids this peer asked not to be sent (their seen-table keys), with the heartbeat they were asked in; null while none.</summary>
        public Dictionary<SeenKey, long>? DontWant { get; set; }
        public int IDontWantThisHeartbeat { get; set; }
        /// <summary>A floodsub peer: never in a mesh, sent no control, given every message of the topics it subscribed to.</summary>
        public bool IsFloodsub { get; } = protocol == GossipsubProtocol.Floodsub;
        public bool Outbound { get; } = outbound;
        public string? Ip { get; } = ip;
        /// <summary>A field, not a property: the set is a struct, added to and removed from in place.</summary>
        public TopicSet Topics;
        public int IHaveThisHeartbeat { get; set; }
        public int IAskedThisHeartbeat { get; set; }
        public int IWantServedThisHeartbeat { get; set; }

        public bool InAnyMesh(Dictionary<string, PeerIdSet> meshes, PeerId self) => meshes.Values.Any(m => m.Contains(self));
    }

    /// <summary>What one drain sends one peer; each part made when first used (most drains forward messages only).</summary>
    private sealed class Outgoing
    {
        private List<Pb.RPC.Types.SubOpts>? _subscriptions;
        private List<Pb.Message>? _messages;
        private Pb.ControlMessage? _control;

        public List<Pb.RPC.Types.SubOpts> Subscriptions => _subscriptions ??= [];
        public List<Pb.Message> Messages => _messages ??= [];
        public Pb.ControlMessage Control => _control ??= new();

        public List<Pb.RPC.Types.SubOpts>? PendingSubscriptions => _subscriptions;
        public List<Pb.Message>? PendingMessages => _messages;
        public Pb.ControlMessage? PendingControl => _control;
    }
}

/// <summary>Gossipsub protocol ids.</summary>
public static class GossipsubProtocol
{
    /// <summary>gossipsub v1.2 (v1.1 and IDONTWANT).</summary>
    public const string V12 = "/meshsub/1.2.0";

    /// <summary>gossipsub v1.1 (scoring, PX, backoff).</summary>
    public const string V11 = "/meshsub/1.1.0";

    /// <summary>gossipsub v1.0.</summary>
    public const string V10 = "/meshsub/1.0.0";

    /// <summary>floodsub (https://github.com/libp2p/specs/tree/master/pubsub): the same RPC, no control; gossipsub floods to such peers.</summary>
    public const string Floodsub = "/floodsub/1.0.0";
}
