namespace Potluck.Protocol.Gossipsub;

/// <summary>How messages are authenticated (https://github.com/libp2p/specs/blob/master/pubsub/README.md#message-signing).</summary>
public enum SignaturePolicy
{
    /// <summary>Sign our messages; require a valid signature, <c>from</c> and <c>seqno</c> on every received one. The default.</summary>
    StrictSign,
    /// <summary>Send no <c>from</c>, <c>seqno</c>, <c>signature</c> or <c>key</c>, and reject messages that carry any of them.</summary>
    StrictNoSign,
}

/// <summary>Computes a message id from a message's fields (<paramref name="from"/> and <paramref name="seqno"/> are empty when absent).</summary>
public delegate byte[] MessageIdFunction(string topic, ReadOnlySpan<byte> from, ReadOnlySpan<byte> seqno, ReadOnlySpan<byte> data);

/// <summary>The outcome of the application's validation hook, as in go-libp2p-pubsub and js-libp2p-gossipsub.</summary>
public enum ValidationResult
{
    /// <summary>Deliver and forward.</summary>
    Accept,
    /// <summary>Invalid: drop, and penalise the peer that sent it (P₄).</summary>
    Reject,
    /// <summary>Drop without penalty (e.g. stale or not interesting).</summary>
    Ignore,
}

/// <summary>
/// Gossipsub parameters and limits. The overlay parameters are the spec's (gossipsub-v1.0.md, "Parameters");
/// every count or size a remote peer controls has a limit here, with its default documented.
/// </summary>
public sealed record GossipsubOptions
{
    /// <summary>D: the desired number of mesh peers per topic. Default 6.</summary>
    public int D { get; init; } = 6;

    /// <summary>D_lo: below this the heartbeat grafts up to D. Default 4.</summary>
    public int DLow { get; init; } = 4;

    /// <summary>D_hi: above this the heartbeat prunes down to D. Default 12.</summary>
    public int DHigh { get; init; } = 12;

    /// <summary>D_score: mesh peers kept by score when pruning an oversubscribed mesh. Default 4.</summary>
    public int DScore { get; init; } = 4;

    /// <summary>D_out: outbound connections the mesh keeps at least (must be below D_lo and at most D/2). Default 2.</summary>
    public int DOut { get; init; } = 2;

    /// <summary>D_lazy: peers (at least) receiving IHAVE gossip per topic per heartbeat. Default 6.</summary>
    public int DLazy { get; init; } = 6;

    /// <summary>Share of non-mesh peers that receive gossip, when that is more than D_lazy. Default 0.25.</summary>
    public double GossipFactor { get; init; } = 0.25;

    /// <summary>Heartbeat period. Default 1 s.</summary>
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Delay before the first heartbeat. Default 100 ms.</summary>
    public TimeSpan HeartbeatInitialDelay { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>mcache_len: heartbeats of history kept for IWANT. Default 5.</summary>
    public int HistoryLength { get; init; } = 5;

    /// <summary>mcache_gossip: most recent heartbeats of history advertised in IHAVE. Default 3.</summary>
    public int HistoryGossip { get; init; } = 3;

    /// <summary>How long a fanout topic is kept after our last publish to it. Default 60 s.</summary>
    public TimeSpan FanoutTtl { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>How long a seen message id is remembered (the seen cache TTL). Default 120 s, as go-libp2p-pubsub.</summary>
    public TimeSpan SeenTtl { get; init; } = TimeSpan.FromSeconds(120);

    /// <summary>Publish our own messages to every subscribed peer above the publish threshold (v1.1). Default true.</summary>
    public bool FloodPublish { get; init; } = true;

    /// <summary>Deliver our own published messages to our own subscriptions (go does; js calls it emitSelf). Default false.</summary>
    public bool DeliverOwnMessages { get; init; }

    /// <summary>
    /// The protocols the router speaks, most preferred first, from <see cref="GossipsubProtocol.V12"/>, <see cref="GossipsubProtocol.V11"/>,
    /// <see cref="GossipsubProtocol.V10"/> and <see cref="GossipsubProtocol.Floodsub"/>. Default gossipsub v1.2, v1.1 and v1.0.
    /// With floodsub listed, floodsub peers are flooded every message of the topics they join, as the gossipsub spec's
    /// floodsub compatibility says; with floodsub alone, every peer is one and the router is a floodsub router. Default v1.2, v1.1 and v1.0.
    /// </summary>
    public IReadOnlyList<string> Protocols { get; init; } = [GossipsubProtocol.V12, GossipsubProtocol.V11, GossipsubProtocol.V10];

    /// <summary>
    /// v1.2 IDONTWANT: on the first copy of a message at least this many bytes long (its data), tell the other mesh peers
    /// of its topic that speak v1.2 not to send it. Default 1,024 bytes, as go-libp2p-pubsub; 0 sends it for every message.
    /// </summary>
    public int IDontWantMinDataSize { get; init; } = 1024;

    /// <summary>Message ids a peer's IDONTWANTs may register per heartbeat; the rest are ignored. Default 1,000, as go-libp2p-pubsub.</summary>
    public int MaxIDontWantPerHeartbeat { get; init; } = 1000;

    /// <summary>Heartbeats an IDONTWANT is honoured for. Default 3, as go-libp2p-pubsub.</summary>
    public int IDontWantTtlHeartbeats { get; init; } = 3;

    /// <summary>Message signing. Default <see cref="SignaturePolicy.StrictSign"/>.</summary>
    public SignaturePolicy SignaturePolicy { get; init; } = SignaturePolicy.StrictSign;

    /// <summary>
    /// The message id function. Default (null): <c>from</c> ‖ <c>seqno</c>, as go and js. With
    /// <see cref="SignaturePolicy.StrictNoSign"/> supply a content-based one.
    /// </summary>
    public MessageIdFunction? MessageIdFunction { get; init; }

    /// <summary>Backoff after a PRUNE before re-grafting (sent to v1.1 peers). Default 60 s.</summary>
    public TimeSpan PruneBackoff { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Backoff sent in the PRUNEs of an unsubscribe. Default 10 s.</summary>
    public TimeSpan UnsubscribeBackoff { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Honour a remote backoff of at most this (larger values are clamped). Default 1 h.</summary>
    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromHours(1);

    /// <summary>A GRAFT this soon after we pruned the peer earns an extra behaviour penalty. Default 10 s.</summary>
    public TimeSpan GraftFloodThreshold { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Send peer exchange (PX) in our PRUNEs to v1.1 peers. Default true.</summary>
    public bool PeerExchange { get; init; } = true;

    /// <summary>Peers offered in one PRUNE, and peers taken from a received one. Default 16.</summary>
    public int PrunePeers { get; init; } = 16;

    /// <summary>Heartbeats between opportunistic graft rounds. Default 60.</summary>
    public int OpportunisticGraftTicks { get; init; } = 60;

    /// <summary>Peers grafted per opportunistic graft round. Default 2.</summary>
    public int OpportunisticGraftPeers { get; init; } = 2;

    /// <summary>
    /// A local selection policy, not on the wire: when the node grafts (joining a topic, a heartbeat below D_lo, the
    /// D_out quota, opportunistic grafting) it prefers eligible candidates (non-negative score, not backed off; above the
    /// median for opportunistic grafting; outbound for D_out) that are already in its mesh of another topic, so its
    /// meshes share peers and it protects fewer connections. <see cref="MeshOverlapFreshPeers"/> bounds the preference.
    /// With one topic, or no candidate in another mesh, the choice is exactly the one without it. Default on.
    /// </summary>
    public bool PreferMeshOverlap { get; init; } = true;

    /// <summary>
    /// Of every D peers one graft round picks (⌈k·this/D⌉ of k, at least one), this many are drawn at random from the
    /// eligible peers in none of the node's other meshes; only the rest may come by preference (at most D−1 of D with the
    /// default 1). So peers that hold one of a node's meshes cannot, by the preference, hold all of another one the node
    /// grafts. When no such peer is eligible, the rest are drawn from the others. 1 to D; D turns the preference off.
    /// Default 1.
    /// </summary>
    public int MeshOverlapFreshPeers { get; init; } = 1;

    /// <summary>Times one peer may fetch one message by IWANT. Default 3.</summary>
    public int GossipRetransmission { get; init; } = 3;

    /// <summary>How long a peer has to answer our IWANT before it counts as a broken promise (P₇). Default 3 s.</summary>
    public TimeSpan IWantFollowupTime { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>IHAVE messages accepted from one peer per heartbeat. Default 10.</summary>
    public int MaxIHaveMessages { get; init; } = 10;

    /// <summary>Message ids in one IHAVE we send, and ids we ask one peer for per heartbeat. Default 5000.</summary>
    public int MaxIHaveLength { get; init; } = 5000;

    /// <summary>Messages served to one peer by IWANT per heartbeat. Default 5000.</summary>
    public int MaxIWantReplies { get; init; } = 5000;

    /// <summary>Largest RPC read or written, framing excluded. Default 1 MiB, as go-libp2p-pubsub.</summary>
    public int MaxRpcSize { get; init; } = 1 << 20;

    /// <summary>Largest encoded Message (payload plus envelope) accepted or published. Default 1 MiB − 4 KiB, so one fits an RPC.</summary>
    public int MaxMessageSize { get; init; } = (1 << 20) - 4096;

    /// <summary>Messages taken from one RPC; the rest are dropped. Default 1024.</summary>
    public int MaxMessagesPerRpc { get; init; } = 1024;

    /// <summary>Subscription changes taken from one RPC; the rest are dropped. Default 128.</summary>
    public int MaxSubscriptionsPerRpc { get; init; } = 128;

    /// <summary>Topics one peer may be subscribed to in our view; further subscriptions are ignored. Default 256.</summary>
    public int MaxTopicsPerPeer { get; init; } = 256;

    /// <summary>Longest topic id accepted. Default 256 characters.</summary>
    public int MaxTopicLength { get; init; } = 256;

    /// <summary>Longest message id accepted in IHAVE/IWANT. Default 256 bytes.</summary>
    public int MaxMessageIdLength { get; init; } = 256;

    /// <summary>Control entries (IHAVE, IWANT, GRAFT, PRUNE together) taken from one RPC. Default 1024.</summary>
    public int MaxControlEntriesPerRpc { get; init; } = 1024;

    /// <summary>Opening our long-lived outbound stream to a peer (multistream-select included) must finish within this. Default 10 s.</summary>
    public TimeSpan StreamOpenTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Redials of a mesh peer whose connection broke (failed under us: reset, partitioned; not closed by either side,
    /// so a peer that trimmed or left us is not chased). Without them nothing mends the mesh where a partition cut it:
    /// once the link heals, the two sides stay apart until some unrelated dial crosses it. Each redial waits
    /// <see cref="ReconnectDelay"/> first, doubling up to <see cref="ReconnectMaxDelay"/>, each wait drawn from ±25 % of
    /// it (seeded) so the two ends and many peers do not dial in step. 0 turns them off. Default 10 (about 35 s).
    /// </summary>
    public int ReconnectAttempts { get; init; } = 10;

    /// <summary>Wait before the first redial of a broken mesh peer. Default 1 s.</summary>
    public TimeSpan ReconnectDelay { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Longest wait between two redials of a broken mesh peer. Default 4 s.</summary>
    public TimeSpan ReconnectMaxDelay { get; init; } = TimeSpan.FromSeconds(4);

    /// <summary>Broken mesh peers being redialled at once; more are left to other discovery. Default 32.</summary>
    public int MaxReconnecting { get; init; } = 32;

    /// <summary>RPCs queued for one peer; when full new ones are dropped and the peer is penalised. Default 256.</summary>
    public int MaxOutboundQueue { get; init; } = 256;

    /// <summary>Messages buffered per subscription for a slow reader; further ones are dropped for it. Default 1024.</summary>
    public int SubscriptionBuffer { get; init; } = 1024;

    /// <summary>Peer scoring parameters (v1.1).</summary>
    public PeerScoreParams Score { get; init; } = new();

    /// <summary>Score thresholds (v1.1).</summary>
    public PeerScoreThresholds Thresholds { get; init; } = new();

    internal void Validate()
    {
        if (D <= 0 || DLow <= 0 || DLow > D || DHigh < D || DScore < 0 || DScore > D || DOut < 0 || DOut >= DLow || DOut > D / 2 || DLazy < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(D), "need 0 < D_lo <= D <= D_hi, 0 <= D_score <= D, 0 <= D_out < D_lo and D_out <= D/2");
        }
        if (MeshOverlapFreshPeers < 1 || MeshOverlapFreshPeers > D)
        {
            throw new ArgumentOutOfRangeException(nameof(MeshOverlapFreshPeers), "need 1 <= MeshOverlapFreshPeers <= D");
        }
        if (HeartbeatInterval <= TimeSpan.Zero || HistoryLength <= 0 || HistoryGossip <= 0 || HistoryGossip > HistoryLength)
        {
            throw new ArgumentOutOfRangeException(nameof(HistoryGossip), "need a positive heartbeat and 0 < mcache_gossip <= mcache_len");
        }
        if (MaxRpcSize <= 0 || MaxMessageSize <= 0 || MaxMessageSize > MaxRpcSize - 64)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxMessageSize), "a message must fit an RPC");
        }
        if (ReconnectAttempts < 0 || MaxReconnecting < 0 || ReconnectDelay <= TimeSpan.Zero || ReconnectMaxDelay < ReconnectDelay)
        {
            throw new ArgumentOutOfRangeException(nameof(ReconnectAttempts), "need ReconnectAttempts >= 0, MaxReconnecting >= 0 and 0 < ReconnectDelay <= ReconnectMaxDelay");
        }
        if (Score.MaxRetainedPeers < 0 || Score.RetainScore < TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(Score), "need MaxRetainedPeers >= 0 and RetainScore >= 0");
        }
    }
}

/// <summary>
/// v1.1 score thresholds (gossipsub-v1.1.md, "Score Thresholds"). Defaults are js-libp2p-gossipsub's.
/// </summary>
public sealed record PeerScoreThresholds
{
    /// <summary>Below this no gossip is exchanged with the peer. Default −10.</summary>
    public double GossipThreshold { get; init; } = -10;

    /// <summary>Below this our own messages are not flood-published to the peer. Default −50.</summary>
    public double PublishThreshold { get; init; } = -50;

    /// <summary>Below this every RPC from the peer is ignored. Default −80.</summary>
    public double GraylistThreshold { get; init; } = -80;

    /// <summary>PX in a PRUNE is only followed when the pruning peer scores at least this. Default 10.</summary>
    public double AcceptPXThreshold { get; init; } = 10;

    /// <summary>A mesh whose median score is below this gets opportunistic grafts. Default 20.</summary>
    public double OpportunisticGraftThreshold { get; init; } = 20;
}

/// <summary>
/// v1.1 peer score parameters (gossipsub-v1.1.md, "The Score Function"). Defaults are js-libp2p-gossipsub's.
/// </summary>
public sealed record PeerScoreParams
{
    /// <summary>Per-topic parameters; topics not listed use <see cref="DefaultTopic"/> when it is set, else score nothing.</summary>
    public IReadOnlyDictionary<string, TopicScoreParams> Topics { get; init; } = new Dictionary<string, TopicScoreParams>(StringComparer.Ordinal);

    /// <summary>
    /// Parameters of topics not in <see cref="Topics"/>; null scores only listed topics. Default: js's topic
    /// defaults with P₃/P₃b off (their delivery threshold would prune every mesh peer of a quiet topic).
    /// </summary>
    public TopicScoreParams? DefaultTopic { get; init; } = new() { MeshMessageDeliveriesWeight = 0, MeshFailurePenaltyWeight = 0 };

    /// <summary>Cap on the positive sum of the topic scores (0: none). Default 10.</summary>
    public double TopicScoreCap { get; init; } = 10;

    /// <summary>P₅: the application's opinion of a peer. Default: 0 for everyone.</summary>
    public Func<Identity.PeerId, double> AppSpecificScore { get; init; } = _ => 0;

    /// <summary>P₅ weight. Default 10.</summary>
    public double AppSpecificWeight { get; init; } = 10;

    /// <summary>P₆ weight (negative). Default −5.</summary>
    public double IPColocationFactorWeight { get; init; } = -5;

    /// <summary>P₆: peers on one IP beyond this are penalised (the square of the surplus). Default 10.</summary>
    public double IPColocationFactorThreshold { get; init; } = 10;

    /// <summary>IPs exempt from P₆ (e.g. a test network), as strings. Default empty.</summary>
    public IReadOnlySet<string> IPColocationFactorWhitelist { get; init; } = new HashSet<string>(StringComparer.Ordinal);

    /// <summary>P₇ weight (negative). Default −10.</summary>
    public double BehaviourPenaltyWeight { get; init; } = -10;

    /// <summary>P₇: penalties up to this are free; the square of the surplus counts. Default 0.</summary>
    public double BehaviourPenaltyThreshold { get; init; }

    /// <summary>P₇ decay per decay interval. Default 0.2.</summary>
    public double BehaviourPenaltyDecay { get; init; } = 0.2;

    /// <summary>How often counters decay. Default 1 s.</summary>
    public TimeSpan DecayInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>A decayed counter below this becomes 0. Default 0.1.</summary>
    public double DecayToZero { get; init; } = 0.1;

    /// <summary>How long a disconnected peer's score is remembered (only one that carries a penalty). Default 1 h.</summary>
    public TimeSpan RetainScore { get; init; } = TimeSpan.FromHours(1);

    /// <summary>
    /// Disconnected peers' scores remembered at once; beyond it the least penalised are forgotten first. Default 4,096
    /// (a few hundred bytes each).
    /// </summary>
    public int MaxRetainedPeers { get; init; } = 4096;
}

/// <summary>v1.1 per-topic score parameters. Defaults are js-libp2p-gossipsub's <c>defaultTopicScoreParams</c>.</summary>
public sealed record TopicScoreParams
{
    /// <summary>Weight of this topic's score in the total. Default 0.5.</summary>
    public double TopicWeight { get; init; } = 0.5;

    /// <summary>P₁ weight. Default 1.</summary>
    public double TimeInMeshWeight { get; init; } = 1;

    /// <summary>P₁ unit. Default 1 s.</summary>
    public TimeSpan TimeInMeshQuantum { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>P₁ cap in quanta. Default 3600.</summary>
    public double TimeInMeshCap { get; init; } = 3600;

    /// <summary>P₂ weight. Default 1.</summary>
    public double FirstMessageDeliveriesWeight { get; init; } = 1;

    /// <summary>P₂ decay. Default 0.5.</summary>
    public double FirstMessageDeliveriesDecay { get; init; } = 0.5;

    /// <summary>P₂ cap. Default 2000.</summary>
    public double FirstMessageDeliveriesCap { get; init; } = 2000;

    /// <summary>P₃ weight (negative; 0 disables). Default −1.</summary>
    public double MeshMessageDeliveriesWeight { get; init; } = -1;

    /// <summary>P₃ decay. Default 0.5.</summary>
    public double MeshMessageDeliveriesDecay { get; init; } = 0.5;

    /// <summary>P₃ cap. Default 100.</summary>
    public double MeshMessageDeliveriesCap { get; init; } = 100;

    /// <summary>P₃: deliveries below this count as a deficit. Default 20.</summary>
    public double MeshMessageDeliveriesThreshold { get; init; } = 20;

    /// <summary>P₃: a duplicate this soon after the first delivery still counts. Default 10 ms.</summary>
    public TimeSpan MeshMessageDeliveriesWindow { get; init; } = TimeSpan.FromMilliseconds(10);

    /// <summary>P₃ starts counting this long after the graft. Default 5 s.</summary>
    public TimeSpan MeshMessageDeliveriesActivation { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>P₃b weight (negative; 0 disables). Default −1.</summary>
    public double MeshFailurePenaltyWeight { get; init; } = -1;

    /// <summary>P₃b decay. Default 0.5.</summary>
    public double MeshFailurePenaltyDecay { get; init; } = 0.5;

    /// <summary>P₄ weight (negative). Default −1.</summary>
    public double InvalidMessageDeliveriesWeight { get; init; } = -1;

    /// <summary>P₄ decay. Default 0.3.</summary>
    public double InvalidMessageDeliveriesDecay { get; init; } = 0.3;
}
