using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Metrics;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Gossipsub;

/// <summary>A local subscription to a topic; dispose to leave (the topic is left when its last subscription goes).</summary>
public sealed class GossipSubscription : IDisposable
{
    /// <summary>The reader of a subscription that delivers nothing (<see cref="GossipsubService.Join"/>): completed, empty.</summary>
    private static readonly ChannelReader<GossipMessage> Nothing = CompletedReader();

    /// <summary>The buffer of delivered messages; null for a membership that delivers nothing.</summary>
    private readonly Channel<GossipMessage>? _channel;
    private readonly Action<GossipSubscription> _dispose;
    private readonly ProtocolInstruments? _instruments;
    private long _dropped;
    private int _disposed;

    /// <param name="capacity">The buffer of delivered messages; 0: none, the topic is only kept joined (<see cref="GossipsubService.Join"/>).</param>
    internal GossipSubscription(string topic, int capacity, Action<GossipSubscription> dispose, ProtocolInstruments? instruments = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        Topic = topic;
        _dispose = dispose;
        _instruments = instruments;
        _channel = capacity == 0 ? null : Channel.CreateBounded<GossipMessage>(new BoundedChannelOptions(capacity)
        {
            SingleWriter = false,
            FullMode = BoundedChannelFullMode.Wait,
        });
    }

    public string Topic { get; }

    /// <summary>Whether messages are delivered to it (false: it only keeps the topic joined, <see cref="GossipsubService.Join"/>).</summary>
    public bool Delivers => _channel is not null;

    /// <summary>
    /// Messages delivered on the topic, in arrival order; completes when the subscription is disposed. For a membership
    /// that delivers nothing (<see cref="GossipsubService.Join"/>) it is empty and complete from the start.
    /// </summary>
    public ChannelReader<GossipMessage> Messages => _channel?.Reader ?? Nothing;

    /// <summary>Messages dropped because the reader fell more than the buffer behind.</summary>
    public long Dropped => Interlocked.Read(ref _dropped);

    internal void Deliver(GossipMessage message)
    {
        if (_channel is null)
        {
            return;
        }
        if (!_channel.Writer.TryWrite(message))
        {
            Interlocked.Increment(ref _dropped);
            _instruments?.GossipDropped();
        }
    }

    internal void Complete() => _channel?.Writer.TryComplete();

    private static ChannelReader<GossipMessage> CompletedReader()
    {
        var channel = Channel.CreateBounded<GossipMessage>(1);
        channel.Writer.Complete();
        return channel.Reader;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _dispose(this);
            Complete();
        }
    }
}

/// <summary>
/// Gossipsub v1.1 over an <see cref="IHost"/> (https://github.com/libp2p/specs/tree/master/pubsub/gossipsub):
/// serves <c>/meshsub/1.1.0</c> and <c>/meshsub/1.0.0</c>, keeps one long-lived outbound stream per peer for
/// sending (opened on every new connection; peers without gossipsub refuse it) and reads whatever inbound stream
/// the peer opens (a newer one replaces an older one). RPCs are unsigned-varint length-prefixed protobuf up to
/// <see cref="GossipsubOptions.MaxRpcSize"/>. Each peer has a bounded outbound queue: when full, RPCs are dropped
/// and the peer penalised rather than the queue grown. The protocol logic is <see cref="GossipsubRouter"/>, a pure
/// state machine this shell feeds under one lock; heartbeats run on the injected clock. Mesh peers are protected
/// from the host's idle timeout. Validators run synchronously under that lock and must be quick.
/// Deviations: see <see cref="GossipsubRouter"/>.
/// </summary>
public sealed partial class GossipsubService : IAsyncDisposable
{
    public const string ProtocolIdV11 = GossipsubProtocol.V11;
    public const string ProtocolIdV10 = GossipsubProtocol.V10;
    private const string ProtectTag = "gossipsub";

    private readonly IHost _host;
    private readonly GossipsubOptions _options;
    private readonly NodeRuntime _runtime;
    private readonly ILogger<GossipsubService> _log;
    private readonly TimeProvider _time;
    private readonly object _gate = new();
    private readonly GossipsubRouter _router;
    private readonly Dictionary<PeerId, PeerSession> _sessions = [];
    private readonly Dictionary<string, List<GossipSubscription>> _subscriptions = new(StringComparer.Ordinal);
    private readonly BackgroundWork _work;
    private readonly ITimer _heartbeat;
    private readonly ProtocolInstruments _instruments;
    private readonly Random _reconnectJitter;
    private readonly HashSet<PeerId> _reconnecting = [];
    /// <summary>Runs a peer's outbound writer (<see cref="OnOutboundReady"/>); one delegate for every peer's queue.</summary>
    private readonly Action<object?> _outboundReady;
    /// <summary>The background work's stop token, kept: a writer may run after the work was disposed (to close its stream).</summary>
    private readonly CancellationToken _stopping;
    private int _disposed;

    /// <param name="instruments">The node's metrics; null counts into instruments of the service's own.</param>
    public GossipsubService(IHost host, GossipsubOptions options, NodeRuntime runtime, ILoggerFactory loggers, ProtocolInstruments? instruments = null)
    {
        _instruments = instruments ?? ProtocolInstruments.Detached();
        _host = host;
        _options = options;
        _runtime = runtime;
        _time = runtime.Time;
        _log = loggers.CreateLogger<GossipsubService>();
        _work = runtime.CreateBackgroundWork("gossipsub", _log);
        _stopping = _work.Stopping;
        _outboundReady = OnOutboundReady;
        Span<byte> seqno = stackalloc byte[8];
        runtime.SecureRandom.Fill(seqno);
        _router = new GossipsubRouter(host.PeerId, host.Signer, options, runtime.CreateRandom("gossipsub"), _time.GetUtcNow(),
            BitConverter.ToUInt64(seqno), _instruments, runtime.CreateSecureRandom("gossipsub seen key").GetBytes(16),
            runtime.SharedValues.Table(MessageContent.Instance), // a simulated mesh's nodes keep one instance of each message
            runtime.SharedValues) // ... and of its id
        {
            // A message with an audience goes only to peers whose identify lists it (what identify told the peer store).
            Speaks = host.Peers.SupportsProtocol,
        };
        _reconnectJitter = runtime.CreateRandom("gossipsub reconnect");
        _instruments.ObservePeerTable("gossip scores", () => { lock (_gate) { return _router.ScoredPeers; } }, () => { lock (_gate) { return _router.ForgottenScores; } });
        if (options.Protocols.Count == 0 || options.Protocols.Any(p => p is not (GossipsubProtocol.V12 or GossipsubProtocol.V11 or GossipsubProtocol.V10 or GossipsubProtocol.Floodsub)))
        {
            throw new ArgumentException($"gossip protocols must be among {GossipsubProtocol.V12}, {GossipsubProtocol.V11}, {GossipsubProtocol.V10} and {GossipsubProtocol.Floodsub}", nameof(options));
        }
        foreach (var protocol in options.Protocols)
        {
            host.SetStreamHandler(protocol, HandleInboundAsync);
        }
        host.Connected += OnConnected;
        host.Disconnected += OnDisconnected;
        foreach (var c in host.Connections)
        {
            OnConnected(c);
        }
        _heartbeat = _time.CreateTimer(_ => Heartbeat(), null, options.HeartbeatInitialDelay, options.HeartbeatInterval);
    }

    /// <summary>Raised after every batch of router work (for tests that wait on a condition without a clock).</summary>
    internal event Action? Changed;

    internal RouterCounters Counters => _router.Counters;

    /// <summary>Peers whose inbound stream is being read now.</summary>
    internal int InboundStreams
    {
        get
        {
            lock (_gate)
            {
                return _sessions.Values.Count(s => s.HasInbound);
            }
        }
    }

    /// <summary>Peers whose outbound queue holds a buffer now (for tests: none once everything queued was written).</summary>
    internal int PeersHoldingOutboundBuffers
    {
        get
        {
            lock (_gate)
            {
                return _sessions.Values.Count(s => s.Queue.HoldsBuffer);
            }
        }
    }

    /// <summary>Peers whose outbound writer runs or is scheduled now (for tests: none once everything queued was written).</summary>
    internal int PeersWithOutboundWriters
    {
        get
        {
            lock (_gate)
            {
                return _sessions.Values.Count(s => s.Queue.ReaderRunning);
            }
        }
    }

    // ------------------------------------------------------------------ API

    /// <summary>Joins the topic (if not yet) and returns a new subscription to its messages.</summary>
    public GossipSubscription Subscribe(string topic) => Add(topic, Math.Max(1, _options.SubscriptionBuffer));

    /// <summary>
    /// Joins the topic as <see cref="Subscribe"/> does (the router subscribes, meshes and forwards) but delivers nothing:
    /// for a node that stays in a topic for the network's sake, or whose messages another subscription reads. No buffer,
    /// no reader to keep draining; its <see cref="GossipSubscription.Messages"/> is empty and complete. Dispose to leave
    /// (the topic stays joined while any other subscription to it lives).
    /// </summary>
    public GossipSubscription Join(string topic) => Add(topic, capacity: 0);

    private GossipSubscription Add(string topic, int capacity)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var subscription = new GossipSubscription(topic, capacity, Unsubscribe, _instruments);
        Run(now =>
        {
            if (!_subscriptions.TryGetValue(topic, out var list))
            {
                _subscriptions[topic] = list = [];
                _router.Subscribe(topic, now);
            }
            list.Add(subscription);
        });
        return subscription;
    }

    private void Unsubscribe(GossipSubscription subscription) => Run(now =>
    {
        if (_subscriptions.TryGetValue(subscription.Topic, out var list) && list.Remove(subscription) && list.Count == 0)
        {
            _subscriptions.Remove(subscription.Topic);
            _router.Unsubscribe(subscription.Topic, now);
        }
    });

    /// <summary>Publishes our own message (signed by policy); returns its id. Throws ArgumentException when too large.</summary>
    public ValueTask<MessageId> PublishAsync(string topic, ReadOnlyMemory<byte> data, CancellationToken ct = default) =>
        PublishAsync(topic, data, audience: null, ct);

    /// <summary>
    /// Publishes our own message as <see cref="PublishAsync(string, ReadOnlyMemory{byte}, CancellationToken)"/> does; with an
    /// <paramref name="audience"/> (a protocol id), only to peers whose identify lists it, and only they are told of it in
    /// IHAVE or served it on IWANT (<see cref="GossipMessage.Audience"/>).
    /// </summary>
    public ValueTask<MessageId> PublishAsync(string topic, ReadOnlyMemory<byte> data, string? audience, CancellationToken ct = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        ct.ThrowIfCancellationRequested();
        MessageId id = default;
        Run(now => id = _router.Publish(topic, data, now, audience).Id);
        return ValueTask.FromResult(id);
    }

    /// <summary>Sets (or with null removes) the topic's validator, run before delivery and forwarding.</summary>
    public void SetValidator(string topic, Func<GossipMessage, ValidationResult>? validator) => Run(_ => _router.SetValidator(topic, validator));

    /// <summary>Connected gossipsub peers subscribed to the topic.</summary>
    public IReadOnlyList<PeerId> Peers(string topic)
    {
        lock (_gate)
        {
            return _router.TopicPeers(topic);
        }
    }

    /// <summary>Our meshes counted over all topics: distinct peers, and those in one topic's mesh only.</summary>
    public MeshCensus CountMeshes()
    {
        lock (_gate)
        {
            return _router.CountMeshes();
        }
    }

    /// <summary>Topics we are subscribed to.</summary>
    public IReadOnlyList<string> Subscriptions
    {
        get
        {
            lock (_gate)
            {
                return [.. _router.Subscriptions];
            }
        }
    }

    /// <summary>Our mesh peers for the topic (empty when not subscribed).</summary>
    public IReadOnlyList<PeerId> MeshPeers(string topic)
    {
        lock (_gate)
        {
            return _router.MeshPeers(topic);
        }
    }

    /// <summary>Peers we send to for a topic we publish to without subscribing.</summary>
    public IReadOnlyList<PeerId> FanoutPeers(string topic)
    {
        lock (_gate)
        {
            return _router.FanoutPeers(topic);
        }
    }

    /// <summary>Peers the router keeps a score entry for (connected, or disconnected with a penalty retained).</summary>
    public int ScoredPeers
    {
        get
        {
            lock (_gate)
            {
                return _router.ScoredPeers;
            }
        }
    }

    /// <summary>All peers speaking gossipsub with us.</summary>
    public IReadOnlyList<PeerId> GossipPeers
    {
        get
        {
            lock (_gate)
            {
                return _router.Peers;
            }
        }
    }

    /// <summary>The peer's current v1.1 score.</summary>
    public double Score(PeerId peer)
    {
        lock (_gate)
        {
            return _router.Score(peer, _time.GetUtcNow());
        }
    }

    /// <summary>Completes when <paramref name="condition"/> holds, re-checked after every batch of router work.</summary>
    internal async Task WaitUntilAsync(Func<GossipsubService, bool> condition, CancellationToken ct)
    {
        while (true)
        {
            var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            void OnChanged() => signal.TrySetResult();
            Changed += OnChanged;
            try
            {
                if (condition(this))
                {
                    return;
                }
                await LoopSafeWait.WaitAsync(signal.Task, ct);
            }
            finally
            {
                Changed -= OnChanged;
            }
        }
    }

    // ------------------------------------------------------------------ router pump

    private void Run(Action<DateTimeOffset> work)
    {
        RouterOutput output;
        lock (_gate)
        {
            work(_time.GetUtcNow());
            output = _router.Drain();
            Dispatch(output);
        }
        AfterDispatch(output);
    }

    private void Heartbeat()
    {
        if (_disposed != 0)
        {
            return;
        }
        try
        {
            Run(now => _router.Heartbeat(now));
        }
        catch (Exception e)
        {
            // A timer callback: nothing above it catches. The router is pure, so whatever threw is a bug of ours.
            LogHeartbeatFailed(Failures.Classify(e).Kind, e);
        }
    }

    /// <summary>Queues RPCs and deliveries; under the lock so per-peer order is the router's order.</summary>
    private void Dispatch(RouterOutput output)
    {
        foreach (var (peer, rpc) in output.Rpcs)
        {
            if (!_sessions.TryGetValue(peer, out var session))
            {
                continue;
            }
            if (!session.Queue.TryWrite(rpc))
            {
                _router.SendQueueFull(peer);
                LogQueueFull(peer);
            }
        }
        foreach (var m in output.Deliveries)
        {
            if (_subscriptions.TryGetValue(m.Topic, out var list))
            {
                foreach (var s in list)
                {
                    s.Deliver(m);
                }
            }
        }
    }

    private void AfterDispatch(RouterOutput output)
    {
        foreach (var (peer, inMesh) in output.MeshMembership)
        {
            if (inMesh)
            {
                _host.ConnectionManager.Protect(peer, ProtectTag);
            }
            else
            {
                _host.ConnectionManager.Unprotect(peer, ProtectTag);
            }
        }
        foreach (var hint in output.PeerExchange)
        {
            if (hint.SignedPeerRecord is { } record && SignedPeerRecord.TryReadAddresses(record, hint.Peer, out var addresses) && addresses.Count > 0)
            {
                _host.Peers.AddDiscoveredAddresses(hint.Peer, addresses, DiscoveryChannel.PeerExchange);
            }
            if (_host.Peers.GetAddresses(hint.Peer).Count > 0)
            {
                _work.Run("px dial", ct => ConnectPxAsync(hint.Peer, ct));
            }
        }
        try
        {
            Changed?.Invoke();
        }
        catch (Exception e)
        {
            LogHeartbeatFailed(Failures.Classify(e).Kind, e);
        }
    }

    private async Task ConnectPxAsync(PeerId peer, CancellationToken stopping)
    {
        try
        {
            using var reason = DialReason.Use(DialReason.Gossip);
            await _host.ConnectAsync(peer, stopping);
        }
        catch (Exception e) when (Failures.Classify(e, stopping) is { Kind: not FailureKind.Internal } failure)
        {
            if (failure.Kind != FailureKind.Cancelled)
            {
                LogPxDialFailed(peer, failure.Reason);
            }
        }
    }

    // ------------------------------------------------------------------ peers and streams

    private PeerSession GetOrAddSession(PeerId peer)
    {
        if (!_sessions.TryGetValue(peer, out var session))
        {
            _sessions[peer] = session = new PeerSession(peer, _options.MaxOutboundQueue, _runtime.PipeScheduler, _outboundReady);
        }
        return session;
    }

    private void OnConnected(IConnection connection)
    {
        if (_disposed != 0)
        {
            return;
        }
        PeerSession session;
        lock (_gate)
        {
            session = GetOrAddSession(connection.RemotePeer);
            if (session.OutboundStarted)
            {
                return;
            }
            session.OutboundStarted = true;
        }
        _work.Run("outbound stream", ct => RunOutboundAsync(session, connection, ct));
    }

    private void OnDisconnected(IConnection connection)
    {
        var peer = connection.RemotePeer;
        if (_host.ConnectionManager.IsConnected(peer))
        {
            return;
        }
        var inMesh = _host.ConnectionManager.IsProtected(peer, ProtectTag); // gossip protects its mesh peers
        RemoveSession(peer, null);
        if (inMesh)
        {
            Reconnect(connection);
        }
    }

    /// <summary>
    /// When the connection to a mesh peer failed under us (its end faulted: reset, partitioned), rather than being closed
    /// by either side, redials the peer (<see cref="GossipsubOptions.ReconnectAttempts"/>); one redial loop per peer.
    /// </summary>
    private void Reconnect(IConnection connection)
    {
        var peer = connection.RemotePeer;
        lock (_gate)
        {
            if (_disposed != 0 || _options.ReconnectAttempts == 0 || _reconnecting.Count >= _options.MaxReconnecting || !_reconnecting.Add(peer))
            {
                return;
            }
        }
        _work.Run("mesh reconnect", ct => ReconnectAsync(connection, ct));
    }

    private async Task ReconnectAsync(IConnection connection, CancellationToken stopping)
    {
        var peer = connection.RemotePeer;
        try
        {
            await connection.Completion.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            if (!connection.Completion.IsFaulted)
            {
                return; // closed by us or by the peer: nothing to mend
            }
            var delay = _options.ReconnectDelay;
            for (var attempt = 1; attempt <= _options.ReconnectAttempts; attempt++)
            {
                TimeSpan wait;
                lock (_gate)
                {
                    wait = delay * (0.75 + (0.5 * _reconnectJitter.NextDouble()));
                }
                await Task.Delay(wait, _time, stopping);
                if (_host.ConnectionManager.IsConnected(peer))
                {
                    return; // it (or someone) dialed meanwhile
                }
                try
                {
                    using var reason = DialReason.Use(DialReason.Gossip);
                    await _host.ConnectAsync(peer, stopping);
                    return;
                }
                catch (Exception e) when (Failures.Classify(e, stopping) is { Kind: not (FailureKind.Internal or FailureKind.Cancelled) } failure)
                {
                    LogReconnectFailed(peer, attempt, failure.Reason);
                }
                delay = delay * 2 < _options.ReconnectMaxDelay ? delay * 2 : _options.ReconnectMaxDelay;
            }
        }
        finally
        {
            lock (_gate)
            {
                _reconnecting.Remove(peer);
            }
        }
    }

    private void RemoveSession(PeerId peer, PeerSession? only)
    {
        PeerSession? session = null;
        Run(now =>
        {
            if (_sessions.TryGetValue(peer, out session) && (only is null || ReferenceEquals(session, only)))
            {
                _sessions.Remove(peer);
                _router.RemovePeer(peer, now);
            }
            else
            {
                session = null;
            }
        });
        if (session is not null)
        {
            session.Close();
            _host.ConnectionManager.Unprotect(peer, ProtectTag);
        }
    }

    private void AddToRouter(PeerSession session, string protocol, IConnection connection)
    {
        Run(now =>
        {
            if (session.Added || !_sessions.TryGetValue(session.Peer, out var current) || !ReferenceEquals(current, session))
            {
                return;
            }
            session.Added = true;
            _router.AddPeer(session.Peer, protocol, connection.Direction == Direction.Outbound, IpOf(connection.RemoteAddress), now);
        });
    }

    private static string? IpOf(Multiaddr address) =>
        (address.Find(Multiaddr.Ip4) ?? address.Find(Multiaddr.Ip6)) is { } c ? c.ValueText : null;

    private async Task RunOutboundAsync(PeerSession session, IConnection connection, CancellationToken stopping)
    {
        StreamOpening opening;
        try
        {
            using var timeout = new CancellationTokenSource(_options.StreamOpenTimeout, _time);
            // Without the session: it closes only once the peer has no open connection (which ends the opening) or when
            // the service stops (stopping).
            using var linked = _work.Link(timeout.Token, stopping);
            opening = await connection.TryOpenStreamAsync(_options.Protocols, linked.Token);
        }
        catch (Exception e) when (Failures.Classify(e, stopping) is { Kind: not FailureKind.Internal } failure)
        {
            opening = StreamOpening.Failed(e, failure);
        }
        if (opening.Stream is not { } stream)
        {
            // The peer speaks no gossipsub, went away, or we are stopping: no outbound stream for now.
            var failure = opening.Failure!.Value;
            LogOutboundFailed(session.Peer, failure.Kind, failure.Reason);
            lock (_gate)
            {
                session.OutboundStarted = false;
            }
            if (!session.HasInbound)
            {
                RemoveSession(session.Peer, session);
            }
            return;
        }
        session.Outbound = stream;
        AddToRouter(session, stream.Protocol, connection);
        session.Queue.Attach();
        await WriteOutboundAsync(session, stream);
    }

    /// <summary>The peer's queue has RPCs for its idle writer, or was completed: run the writer (scheduled by the queue).</summary>
    private void OnOutboundReady(object? state)
    {
        var session = (PeerSession)state!;
        _work.Track("outbound stream", WriteOutboundAsync(session, session.Outbound!));
    }

    /// <summary>
    /// Writes what the peer's queue holds and flushes, until the queue is empty (then returns: no writer stays parked per
    /// peer; the queue schedules <see cref="OnOutboundReady"/> for the next RPC) or completed, or the stream fails (then
    /// closes the stream and, under a live session, forgets the peer and tries again a heartbeat later).
    /// </summary>
    private async ValueTask WriteOutboundAsync(PeerSession session, IStream stream)
    {
        var queue = session.Queue;
        var stopping = _stopping;
        var parked = false;
        try
        {
            while (true)
            {
                var step = queue.Next();
                if (step == OutboundQueue<Pb.RPC>.Step.Parked)
                {
                    parked = true;
                    return;
                }
                if (step == OutboundQueue<Pb.RPC>.Step.Completed)
                {
                    break;
                }
                while (queue.TryRead(out var rpc))
                {
                    RpcCodec.Write(stream.Output, rpc);
                }
                var flush = await stream.Output.FlushAsync(stopping);
                if (flush.IsCompleted || flush.IsCanceled)
                {
                    break;
                }
            }
        }
        catch (Exception e) when (Failures.Classify(e, stopping) is { Kind: not FailureKind.Internal } failure)
        {
            if (failure.Kind != FailureKind.Cancelled && !session.Closed)
            {
                LogOutboundFailed(session.Peer, failure.Kind, failure.Reason);
            }
        }
        finally
        {
            if (!parked)
            {
                stream.Reset();
                await stream.DisposeAsync();
            }
        }
        // The stream died under a live session: forget the peer and, as go does, try again a heartbeat later
        // while the connection lives (at most once per heartbeat per peer).
        if (!session.Closed)
        {
            RemoveSession(session.Peer, session);
            var connection = stream.Connection;
            _work.Run("outbound retry", ct => RetryLaterAsync(connection, ct));
        }
    }

    private async Task RetryLaterAsync(IConnection connection, CancellationToken stopping)
    {
        try
        {
            await Task.Delay(_options.HeartbeatInterval, _time, stopping);
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            return;
        }
        if (!connection.IsClosed && _disposed == 0)
        {
            OnConnected(connection);
        }
    }

    private async Task HandleInboundAsync(IStream stream, CancellationToken ct)
    {
        var peer = stream.RemotePeer;
        PeerSession session;
        IStream? previous;
        bool startOutbound;
        lock (_gate)
        {
            session = GetOrAddSession(peer);
            previous = session.Inbound;
            session.Inbound = stream;
            startOutbound = !session.OutboundStarted;
            session.OutboundStarted = true;
        }
        previous?.Reset();
        AddToRouter(session, stream.Protocol, stream.Connection);
        if (startOutbound)
        {
            StartOutbound(session, stream.Connection);
        }
        // No lambda in this method captures its locals: a closure of them would live as long as the stream is read
        // (~0.1 KiB per peer); the helpers below make theirs per call.
        // The reads take no token (one would keep a registration on the router's stop token and on the session's for the
        // stream's life): the stream's own end ends them. Closing the session resets its inbound stream, a newer inbound
        // stream resets this one, and the host closes every connection when it stops.
        // A yamux stream's frames are read by one reader parked as itself between messages (no second async method's
        // state machine, continuation and delegate parked beside this one's for the stream's life); any other input as before.
        var frames = ParkedFrameReader.For(stream.Input, _options.MaxRpcSize, ProtocolIdV11);
        try
        {
            while (true)
            {
                FramedRead read;
                try
                {
                    read = frames is not null
                        ? await frames.ReadAsync()
                        : await LengthPrefixed.TryReadAsync(stream.Input, _options.MaxRpcSize, ProtocolIdV11, CancellationToken.None);
                }
                catch (ProtocolViolationException)
                {
                    MalformedRpc(peer);
                    throw;
                }
                if (read.Failure is { Kind: FailureKind.PeerGone } gone)
                {
                    // Reset, or its connection closed (trimmed, or the peer left): the normal end of a long-lived stream,
                    // taken as a value rather than thrown up through the host's catch site.
                    LogInboundEnded(peer, gone.Kind, gone.Reason);
                    return;
                }
                if (read.Cause is { } other)
                {
                    System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(other); // a limit or a violation: the router's to count
                }
                if (read.Message is not { } body)
                {
                    return;
                }
                if (RpcCodec.TryDecode(body, _options.MaxRpcSize, out var rpc, out var error) != DecodeStatus.Done)
                {
                    MalformedRpc(peer);
                    throw new ProtocolViolationException(ProtocolIdV11, error ?? "malformed RPC", ViolationCode.Malformed);
                }
                HandleRpc(session, rpc);
            }
        }
        finally
        {
            lock (_gate)
            {
                if (ReferenceEquals(session.Inbound, stream))
                {
                    session.Inbound = null;
                }
            }
            if (!HasOpenConnection(peer))
            {
                RemoveSession(peer, session);
            }
        }
    }

    private void StartOutbound(PeerSession session, IConnection connection) =>
        _work.Run("outbound stream", stopping => RunOutboundAsync(session, connection, stopping));

    private void MalformedRpc(PeerId peer) => Run(_ => _router.MalformedRpc(peer));

    private void HandleRpc(PeerSession session, Pb.RPC rpc) => Run(now =>
    {
        if (_sessions.TryGetValue(session.Peer, out var current) && ReferenceEquals(current, session))
        {
            _router.HandleRpc(session.Peer, rpc, now);
        }
    });

    private bool HasOpenConnection(PeerId peer) => _host.ConnectionManager.IsConnected(peer);

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        await _heartbeat.DisposeAsync();
        _host.Connected -= OnConnected;
        _host.Disconnected -= OnDisconnected;
        foreach (var protocol in _options.Protocols)
        {
            _host.RemoveStreamHandler(protocol);
        }
        _host.RemoveStreamHandler(GossipsubProtocol.Floodsub);
        // Cancels the outbound streams, dials and retries now; waited for once the sessions are closed below.
        var stopped = _work.StopAsync();
        PeerSession[] sessions;
        List<GossipSubscription> subscriptions;
        lock (_gate)
        {
            sessions = [.. _sessions.Values];
            _sessions.Clear();
            subscriptions = _subscriptions.Values.SelectMany(l => l).ToList();
            _subscriptions.Clear();
        }
        foreach (var s in sessions)
        {
            s.Close();
        }
        foreach (var s in subscriptions)
        {
            s.Complete();
        }
        await stopped;
        await _work.DisposeAsync();
    }

    /// <summary>
    /// One peer's streams and queue. No cancellation source: closing completes the queue (its writer, scheduled, closes
    /// the outbound stream) and resets the inbound stream (ending its read); a source here kept a registration table and a
    /// free callback node for the session's life once anything had linked to it.
    /// </summary>
    private sealed class PeerSession
    {
        private volatile bool _closed;

        public PeerSession(PeerId peer, int capacity, System.IO.Pipelines.PipeScheduler scheduler, Action<object?> writer)
        {
            Peer = peer;
            Queue = new OutboundQueue<Pb.RPC>(capacity, scheduler, writer, this);
        }

        public PeerId Peer { get; }

        /// <summary>RPCs to send, bounded; holds no buffer while empty, and runs its writer only while there is something to write.</summary>
        public OutboundQueue<Pb.RPC> Queue { get; }

        /// <summary>Closed: removed from the service (its loops end without logging a failure).</summary>
        public bool Closed => _closed;

        public bool Added { get; set; }

        public bool OutboundStarted { get; set; }

        public IStream? Outbound { get; set; }

        public IStream? Inbound { get; set; }

        public bool HasInbound => Inbound is not null;

        public void Close()
        {
            _closed = true;
            Queue.Complete();
            Inbound?.Reset();
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Gossipsub outbound stream to {Peer} failed: {Kind}: {Reason}")]
    private partial void LogOutboundFailed(PeerId peer, FailureKind kind, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Gossipsub inbound stream from {Peer} ended: {Kind}: {Reason}")]
    private partial void LogInboundEnded(PeerId peer, FailureKind kind, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Gossipsub queue to {Peer} is full; RPC dropped")]
    private partial void LogQueueFull(PeerId peer);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Dialing PX peer {Peer} failed: {Reason}")]
    private partial void LogPxDialFailed(PeerId peer, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Redialing broken mesh peer {Peer} failed (attempt {Attempt}): {Reason}")]
    private partial void LogReconnectFailed(PeerId peer, int attempt, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Gossipsub heartbeat or event handler failed ({Kind})")]
    private partial void LogHeartbeatFailed(FailureKind kind, Exception e);
}
