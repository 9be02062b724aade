using System.Net;
using System.Net.Sockets;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Dcutr;

/// <summary>
/// Direct Connection Upgrade through Relay, <c>/libp2p/dcutr</c>
/// (https://github.com/libp2p/specs/blob/master/relay/DCUtR.md). When a relayed connection arrives, this node (B, the
/// inbound side) first dials the peer's public listen addresses (the unilateral upgrade); failing that it opens a DCUtR
/// stream over the relayed connection and, up to <see cref="DcutrOptions.Attempts"/> times on that one stream, sends
/// CONNECT with its observed addresses, measures the round trip to the peer's CONNECT, sends SYNC and dials after half
/// the round trip, while the peer (A) dials the moment SYNC arrives. The dials leave from the listen port, so two
/// SYNs crossing make one TCP connection (simultaneous open); B speaks first in its security handshake however the
/// connection came about (<see cref="Libp2pHost.DialForHolePunchAsync"/>, <see cref="Libp2pHost.ExpectHolePunch"/>),
/// as go-libp2p's simultaneous-connect dials do. Once a direct connection exists, new streams use it (the connection
/// manager prefers direct connections) and the relayed one is closed when it carries no stream.
/// </summary>
/// <remarks>
/// Bounds: messages over <see cref="DcutrOptions.MaxMessageSize"/> reset the stream; at most
/// <see cref="DcutrOptions.MaxAddresses"/> addresses of a CONNECT are dialed, never relayed or unspecified ones; a DCUtR
/// stream is accepted only over a relayed connection, one at a time per peer, and at most
/// <see cref="DcutrOptions.MaxStreamsPerPeer"/> per <see cref="DcutrOptions.RateWindow"/>; every read has the attempt's
/// deadline. The addresses sent are those the relay of the connection observed for us (identify's observedAddr) and
/// those two or more peers agree on, each also with our TCP listen port (the mapping a port-preserving NAT gives the
/// listen port); addresses one stranger claims are not repeated to others.
/// <para>
/// Port prediction (<see cref="PortPrediction"/>), an extension other implementations skip: each CONNECT also says how
/// the sender's NAT maps ports (<see cref="Mapping"/>, from identify's observed address against the connection's local
/// one). When one side keeps ports and the other changes them, each round the keeping side also sends
/// <see cref="DcutrOptions.PortPredictionSockets"/> SYNs from its listen port to random ports of the peer's IP, and the
/// changing side dials the keeping side's first address (its listen port) from as many fresh local ports; all such
/// sockets count against <see cref="DcutrOptions.PortPredictionBudget"/> per window, for the whole node.
/// </para>
/// </remarks>
public sealed partial class DcutrService : IAsyncDisposable
{
    public const string ProtocolId = "/libp2p/dcutr";

    private readonly Libp2pHost _host;
    private readonly IdentifyService? _identify;
    private readonly DcutrOptions _options;
    private readonly NodeRuntime _runtime;
    private readonly TimeProvider _time;
    private readonly ILogger<DcutrService> _log;
    private readonly BackgroundWork _work;
    private readonly Lock _gate = new();
    private readonly Dictionary<PeerId, Multiaddr> _observedBy = [];
    private readonly Queue<PeerId> _observers = new();
    private readonly Dictionary<PeerId, Queue<DateTimeOffset>> _inboundStreams = [];
    private readonly HashSet<PeerId> _active = [];
    private readonly Queue<bool> _portObservations = new();
    private readonly SocketBudget _predictionBudget;
    private readonly Random _random;
    private long _predictedDials;
    private long _punches;
    private long _successes;
    private long _refused;
    private long _dials;
    private const int MaxObservers = 64;
    private const int MaxRateTracked = 1024;

    public DcutrService(Libp2pHost host, IdentifyService? identify, DcutrOptions options, NodeRuntime runtime, ILoggerFactory loggers)
    {
        _host = host;
        _identify = identify;
        _options = options;
        _runtime = runtime;
        _time = runtime.Time;
        _log = loggers.CreateLogger<DcutrService>();
        _work = runtime.CreateBackgroundWork("dcutr", _log);
        _predictionBudget = new SocketBudget(options.PortPredictionBudget, options.RateWindow);
        _random = runtime.CreateRandom("dcutr/port-prediction");
        host.SetStreamHandler(ProtocolId, HandleAsync);
        host.Connected += OnConnected;
        if (identify is not null)
        {
            identify.Identified += OnIdentified;
        }
    }

    /// <summary>Raised when an upgrade this node drove ends, with the peer and how it went.</summary>
    public event Action<PeerId, HolePunchResult>? Finished;

    /// <summary>Raised on the answering side (A) at each SYNC, with the peer and the round (1 for the first attempt).</summary>
    public event Action<PeerId, int>? Synced;

    /// <summary>Start an upgrade on every inbound relayed connection. Default true; the NAT lab's prober drives them itself.</summary>
    public bool AutoUpgrade { get; set; } = true;

    /// <summary>Upgrades this node drove; those that ended with a direct connection; DCUtR streams refused (rate, not relayed).</summary>
    public (long Punches, long Successes, long Refused) Counts => (Interlocked.Read(ref _punches), Interlocked.Read(ref _successes), Interlocked.Read(ref _refused));

    /// <summary>Hole-punch dials this node started (each address of a round is one).</summary>
    public long DialsStarted => Interlocked.Read(ref _dials);

    /// <summary>Of those, port-prediction dials (SYNs to random ports of a peer, or fresh-port dials).</summary>
    public long PredictedDials => Interlocked.Read(ref _predictedDials);

    /// <summary>How this node's NAT maps ports, from the last <see cref="PortPrediction.Window"/> TCP observations.</summary>
    public PortMapping Mapping
    {
        get
        {
            lock (_gate)
            {
                return PortPrediction.Classify(_portObservations);
            }
        }
    }

    internal void OnIdentified(IdentifyResult result)
    {
        if (PortPrediction.PortPreserved(result.ObservedAddress, result.LocalAddress) is { } preserved)
        {
            ObservePort(preserved);
        }
        if (result.ObservedAddress is not { } observed || observed.Find(Multiaddr.P2pCircuit) is not null)
        {
            return;
        }
        lock (_gate)
        {
            if (!_observedBy.ContainsKey(result.Peer))
            {
                // The oldest goes before the newest comes: the queue never holds more than MaxObservers (64 slots, not
                // 128), and the table stops growing at the prime at MaxObservers (71 slots, not 89).
                while (_observers.Count >= MaxObservers && _observers.TryDequeue(out var oldest))
                {
                    _observedBy.Remove(oldest);
                }
                _observers.Enqueue(result.Peer);
                CappedGrowth.BeforeAdd(_observedBy, MaxObservers);
            }
            _observedBy[result.Peer] = _runtime.SharedValues.Share(observed.WithoutPeer());
        }
    }

    /// <summary>Observers held, the queue's and the table's slots (tests).</summary>
    internal (int Observers, int QueueSlots, int TableSlots) ObserverTables
    {
        get
        {
            lock (_gate)
            {
                return (_observedBy.Count, _observers.EnsureCapacity(0), _observedBy.Capacity);
            }
        }
    }

    /// <summary>Records one observation of our port mapping (true: an observer saw our local port unchanged).</summary>
    internal void ObservePort(bool preserved)
    {
        lock (_gate)
        {
            _portObservations.Enqueue(preserved);
            while (_portObservations.Count > PortPrediction.Window)
            {
                _portObservations.Dequeue();
            }
        }
    }

    /// <summary>
    /// What we tell the peer in CONNECT: the address the relay observed for us, those two or more observers agree on,
    /// each also with our TCP listen port; our own direct listen addresses when nobody observed any (a simulated network).
    /// </summary>
    internal IReadOnlyList<Multiaddr> OwnAddresses(PeerId? relay)
    {
        var preserving = Mapping == PortMapping.Preserving;
        var result = new List<Multiaddr>();
        lock (_gate)
        {
            if (relay is { } r && _observedBy.TryGetValue(r, out var fromRelay))
            {
                result.Add(fromRelay);
            }
            result.AddRange(_observedBy.Values.GroupBy(a => a).Where(g => g.Count() >= 2).Select(g => g.Key));
        }
        // Addresses the node advertises as public (AutoNAT confirmed them) are as good as observed ones.
        result.AddRange(_host.ListenAddresses.Where(a => a.Find(Multiaddr.Memory) is null && IsPublic(a)));
        var listenPorts = _host.BoundAddresses.Select(a => a.ToTcpEndPoint()).OfType<IPEndPoint>().Select(e => e.Port).Distinct().ToArray();
        var withListenPort = new List<Multiaddr>();
        foreach (var observed in result)
        {
            if (observed.ToTcpEndPoint() is { } endPoint)
            {
                foreach (var port in listenPorts)
                {
                    withListenPort.Add(Multiaddr.FromTcpEndPoint(new IPEndPoint(endPoint.Address, port)));
                }
            }
        }
        // Behind a port-keeping NAT the listen port's mapping comes first: port prediction's dials aim at the first address.
        result.InsertRange(preserving ? 0 : result.Count, withListenPort);
        if (result.Count == 0)
        {
            result.AddRange(_host.BoundAddresses.Where(a => a.Find(Multiaddr.P2pCircuit) is null && a.Find(Multiaddr.Memory) is not null));
        }
        return result.Distinct().Take(_options.MaxAddresses).ToArray();
    }

    private void OnConnected(IConnection connection)
    {
        if (AutoUpgrade && connection.Direction == Direction.Inbound && Libp2pHost.IsRelayed(connection))
        {
            _work.Run("dcutr upgrade", async stopping =>
            {
                try
                {
                    await UpgradeAsync(connection, stopping);
                }
                catch (Exception e) when (Failures.Classify(e, stopping).Kind != FailureKind.Internal)
                {
                    LogUpgradeFailed(connection.RemotePeer, e.Message);
                }
            });
        }
    }

    /// <summary>
    /// Drives the upgrade of <paramref name="relayed"/> (the inbound side's part, B): a unilateral dial to the peer's
    /// public addresses, then up to <see cref="DcutrOptions.Attempts"/> synchronised attempts over one DCUtR stream.
    /// </summary>
    public async Task<HolePunchResult> UpgradeAsync(IConnection relayed, CancellationToken ct)
    {
        var peer = relayed.RemotePeer;
        var started = _time.GetTimestamp();
        lock (_gate)
        {
            if (!_active.Add(peer))
            {
                return new HolePunchResult(false, 0, TimeSpan.Zero, null, "an upgrade with this peer is already running");
            }
        }
        Interlocked.Increment(ref _punches);
        HolePunchResult result;
        try
        {
            result = await UpgradeCoreAsync(relayed, started, ct);
        }
        finally
        {
            lock (_gate)
            {
                _active.Remove(peer);
            }
            _host.EndHolePunch(peer);
        }
        if (result.Success)
        {
            Interlocked.Increment(ref _successes);
            CloseWhenIdle(relayed);
        }
        LogFinished(peer, result.Success, result.Attempts, result.Elapsed.TotalMilliseconds, result.Failure);
        Finished?.Invoke(peer, result);
        return result;
    }

    private async Task<HolePunchResult> UpgradeCoreAsync(IConnection relayed, long started, CancellationToken ct)
    {
        var peer = relayed.RemotePeer;
        if (_identify is not null)
        {
            using var wait = new CancellationTokenSource(_options.AttemptTimeout, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, wait.Token);
            try
            {
                await _identify.WhenIdentifiedAsync(peer, linked.Token);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                // Not identified in time: try anyway; the peer resets the stream if it has no DCUtR.
            }
        }
        if (_host.Peers.Get(peer) is { Protocols.Count: > 0 } && !_host.Peers.SupportsProtocol(peer, ProtocolId))
        {
            return new HolePunchResult(false, 0, _time.GetElapsedTime(started), null, "the peer does not speak " + ProtocolId);
        }
        // Unilateral: the peer may be reachable at a public address it listens on.
        var publicAddresses = _host.Peers.GetAddresses(peer).Where(a => IsPublic(a) && _host.CanDialDirect(a)).Take(_options.MaxAddresses).ToArray();
        if (publicAddresses.Length > 0 && await DialAnyAsync(publicAddresses.Select(a => new PlannedDial(a, FromListenPort: true, Predicted: false)).ToArray(), peer, initiator: true, _options.UnilateralTimeout, ct) is not null)
        {
            return new HolePunchResult(true, 0, _time.GetElapsedTime(started), null, null, Unilateral: true);
        }
        var relay = RelayOf(relayed);
        TimeSpan? rtt = null;
        string failure = "no attempt made";
        var mine = Mapping;
        var jsRoles = FollowsJsRoles(peer);
        for (var attempt = 1; attempt <= _options.Attempts; attempt++)
        {
            // A stream per attempt, as js-libp2p and go-libp2p retry (a js A closes the stream after its dial).
            await using var stream = await OpenStreamAsync(relayed, ct);
            using var deadline = new CancellationTokenSource(_options.AttemptTimeout, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, deadline.Token);
            var sent = _time.GetTimestamp();
            await WriteAsync(stream, Pb.HolePunch.Types.Type.Connect, OwnAddresses(relay), mine, linked.Token);
            var answer = await ReadAsync(stream, linked.Token)
                ?? throw new ProtocolViolationException(ProtocolId, "the peer closed the stream instead of answering CONNECT", ViolationCode.UnexpectedMessage);
            rtt = _time.GetElapsedTime(sent);
            if (answer.Type != Pb.HolePunch.Types.Type.Connect)
            {
                throw new ProtocolViolationException(ProtocolId, $"expected CONNECT, got {answer.Type}", ViolationCode.UnexpectedMessage);
            }
            // No address we can dial (a js peer sends only addresses AutoNAT confirmed): still SYNC, its dial may reach us.
            var addresses = DialableAddresses(answer);
            var theirs = PortPrediction.FromWire(answer.HasPotluckPortMapping, answer.PotluckPortMapping);
            if (!jsRoles)
            {
                // Potluck's and go-libp2p's roles: B speaks first on any connection the punch makes. A js peer dials as
                // the initiator, so its dial arriving here is upgraded with this node as the responder (the default).
                _host.ExpectHolePunch(peer, addresses, _time.GetUtcNow() + _options.AttemptTimeout);
            }
            await WriteAsync(stream, Pb.HolePunch.Types.Type.Sync, [], PortMapping.Unknown, linked.Token);
            await Task.Delay(rtt.Value / 2, _time, linked.Token);
            var wait = addresses.Count == 0 ? _options.AttemptTimeout : TimeSpan.FromTicks(Math.Max(rtt.Value.Ticks * 2, TimeSpan.FromSeconds(1).Ticks));
            if (_host.DirectConnectionTo(peer) is not null
                || await DialAnyAsync(PlanDials(addresses, mine, theirs), peer, initiator: true, _options.AttemptTimeout, ct) is not null
                || await DirectConnectionAppearsAsync(peer, wait, linked.Token))
            {
                return new HolePunchResult(true, attempt, _time.GetElapsedTime(started), rtt, null);
            }
            failure = addresses.Count == 0 ? "the peer sent no address we can dial, and its dials did not reach us" : $"{attempt} attempt(s) made no direct connection";
        }
        return new HolePunchResult(false, _options.Attempts, _time.GetElapsedTime(started), rtt, failure);
    }

    /// <summary>
    /// Whether a direct connection to <paramref name="peer"/> exists or appears within <paramref name="wait"/>: when our
    /// dial lost the race, the peer's may still arrive (its SYN reached our NAT after ours left).
    /// </summary>
    private async Task<bool> DirectConnectionAppearsAsync(PeerId peer, TimeSpan wait, CancellationToken ct)
    {
        var appeared = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void OnDirect(IConnection c)
        {
            if (c.RemotePeer == peer && !Libp2pHost.IsRelayed(c))
            {
                appeared.TrySetResult();
            }
        }
        _host.Connected += OnDirect;
        try
        {
            if (_host.DirectConnectionTo(peer) is not null)
            {
                return true;
            }
            await LoopSafeWait.WaitAsync(appeared.Task, wait, _time, ct);
            return true;
        }
        catch (TimeoutException)
        {
            return _host.DirectConnectionTo(peer) is not null;
        }
        catch (OperationCanceledException)
        {
            return _host.DirectConnectionTo(peer) is not null;
        }
        finally
        {
            _host.Connected -= OnDirect;
        }
    }

    private async Task<IStream> OpenStreamAsync(IConnection relayed, CancellationToken ct)
    {
        using var deadline = new CancellationTokenSource(_options.AttemptTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, deadline.Token);
        return await relayed.OpenStreamAsync([ProtocolId], linked.Token);
    }

    /// <summary>
    /// A's part, one round per stream (B opens a new stream to retry): answer CONNECT with ours, and dial the moment
    /// SYNC arrives, as the responder (B speaks first), or with a js-libp2p B as the initiator of our own dials.
    /// </summary>
    private async Task HandleAsync(IStream stream, CancellationToken ct)
    {
        var peer = stream.RemotePeer;
        var round = 0;
        if (!Libp2pHost.IsRelayed(stream.Connection) || !Admit(peer, out round))
        {
            Interlocked.Increment(ref _refused);
            LogRefused(peer);
            stream.Reset();
            return;
        }
        try
        {
            var relay = RelayOf(stream.Connection);
            using var deadline = new CancellationTokenSource(_options.AttemptTimeout, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, deadline.Token);
            var connect = await ReadAsync(stream, linked.Token);
            if (connect is null)
            {
                return; // B gave up before it began
            }
            if (connect.Type != Pb.HolePunch.Types.Type.Connect)
            {
                throw new ProtocolViolationException(ProtocolId, $"expected CONNECT, got {connect.Type}", ViolationCode.UnexpectedMessage);
            }
            var addresses = DialableAddresses(connect);
            var theirs = PortPrediction.FromWire(connect.HasPotluckPortMapping, connect.PotluckPortMapping);
            var mine = Mapping;
            await WriteAsync(stream, Pb.HolePunch.Types.Type.Connect, OwnAddresses(relay), mine, linked.Token);
            var sync = await ReadAsync(stream, linked.Token)
                ?? throw new ProtocolViolationException(ProtocolId, "the stream ended before SYNC", ViolationCode.UnexpectedMessage);
            if (sync.Type != Pb.HolePunch.Types.Type.Sync)
            {
                throw new ProtocolViolationException(ProtocolId, $"expected SYNC, got {sync.Type}", ViolationCode.UnexpectedMessage);
            }
            var jsRoles = FollowsJsRoles(peer);
            Synced?.Invoke(peer, round);
            if (addresses.Count > 0 && _host.DirectConnectionTo(peer) is null)
            {
                // At once, and in the background: the stream ends now, and B's retry must not wait for this dial.
                var relayed = stream.Connection;
                var plan = PlanDials(addresses, mine, theirs);
                _work.Run("dcutr dial", async stopping =>
                {
                    if (await DialAnyAsync(plan, peer, initiator: jsRoles, _options.AttemptTimeout, stopping) is not null)
                    {
                        CloseWhenIdle(relayed);
                    }
                });
            }
        }
        finally
        {
            lock (_gate)
            {
                _active.Remove(peer);
            }
        }
    }

    /// <summary>
    /// One DCUtR stream per peer at a time, and at most <see cref="DcutrOptions.MaxStreamsPerPeer"/> per window;
    /// <paramref name="round"/> is the stream's number in the window (B's attempt).
    /// </summary>
    private bool Admit(PeerId peer, out int round)
    {
        round = 0;
        var now = _time.GetUtcNow();
        lock (_gate)
        {
            if (_active.Contains(peer))
            {
                return false;
            }
            if (!_inboundStreams.TryGetValue(peer, out var times))
            {
                if (_inboundStreams.Count >= MaxRateTracked)
                {
                    foreach (var idle in _inboundStreams.Where(kv => kv.Value.Count == 0 || now - kv.Value.Last() > _options.RateWindow).Select(kv => kv.Key).ToArray())
                    {
                        _inboundStreams.Remove(idle);
                    }
                    if (_inboundStreams.Count >= MaxRateTracked)
                    {
                        return false;
                    }
                }
                _inboundStreams[peer] = times = new Queue<DateTimeOffset>();
            }
            while (times.TryPeek(out var first) && now - first > _options.RateWindow)
            {
                times.Dequeue();
            }
            if (times.Count >= _options.MaxStreamsPerPeer)
            {
                return false;
            }
            times.Enqueue(now);
            round = times.Count;
            _active.Add(peer);
            return true;
        }
    }

    /// <summary>Dials every address at once; the first connection wins and the other dials are cancelled. Null when none succeeds.</summary>
    private async Task<IConnection?> DialAnyAsync(IReadOnlyList<PlannedDial> plan, PeerId peer, bool initiator, TimeSpan timeout, CancellationToken ct)
    {
        using var deadline = new CancellationTokenSource(timeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, deadline.Token);
        var dials = plan.Select(d => DialOneAsync(d, peer, initiator, linked.Token)).ToList();
        var predicted = plan.Select(d => d.Predicted).ToList();
        while (dials.Count > 0)
        {
            var done = await Task.WhenAny(dials);
            var index = dials.IndexOf(done);
            dials.RemoveAt(index);
            predicted.RemoveAt(index);
            if (await done is { } connection)
            {
                linked.Cancel();
                CloseExtraConnections(dials.Where((_, i) => predicted[i]).ToArray());
                return connection;
            }
        }
        return null;
    }

    /// <summary>
    /// Port-prediction dials that got through besides the winner (a full cone lets every fresh-port dial in): their
    /// connections are closed as they finish, so the peer is not left holding dozens of connections to this node.
    /// </summary>
    private void CloseExtraConnections(IReadOnlyList<Task<IConnection?>> losers)
    {
        if (losers.Count == 0)
        {
            return;
        }
        _work.Run("dcutr close extra", async _ =>
        {
            foreach (var loser in losers)
            {
                if (await loser is { } extra)
                {
                    await extra.CloseAsync();
                }
            }
        });
    }

    private async Task<IConnection?> DialOneAsync(PlannedDial dial, PeerId peer, bool initiator, CancellationToken ct)
    {
        try
        {
            if (dial.Predicted)
            {
                // The plain dials first: against a full cone one of them gets in at once, and hundreds of fresh-port
                // dials would all get in too (each a handshake the peer must answer).
                await Task.Delay(_options.PortPredictionDelay, _time, ct);
                if (_host.DirectConnectionTo(peer) is not null)
                {
                    return null;
                }
                Interlocked.Increment(ref _predictedDials);
            }
            Interlocked.Increment(ref _dials);
            return await _host.DialForHolePunchAsync(dial.Address, peer, initiator, ct, dial.FromListenPort);
        }
        catch (Exception e) when (Failures.Classify(e, ct).Kind != FailureKind.Internal || e is OperationCanceledException)
        {
            if (!dial.Predicted)
            {
                LogDialFailed(peer, dial.Address, e.Message); // hundreds of predicted dials fail by design: not logged one by one
            }
            return null;
        }
    }

    /// <summary>One dial of a round: where to, whether from the listen port, and whether it is a port-prediction dial.</summary>
    internal readonly record struct PlannedDial(Multiaddr Address, bool FromListenPort, bool Predicted);

    /// <summary>
    /// A round's dials: every address the peer sent, from the listen port; and, when port prediction fits the pair
    /// (<see cref="PortPrediction.RoleFor"/>), SYNs to random ports of the peer's first TCP address's IP, or dials of
    /// that address from fresh local ports, as many as the options and the node's budget allow.
    /// </summary>
    internal List<PlannedDial> PlanDials(IReadOnlyList<Multiaddr> addresses, PortMapping mine, PortMapping theirs)
    {
        var plan = addresses.Select(a => new PlannedDial(a, FromListenPort: true, Predicted: false)).ToList();
        var role = _options.PortPredictionSockets == 0 ? PredictionRole.None : PortPrediction.RoleFor(mine, theirs);
        var first = addresses.FirstOrDefault(a => a.ToTcpEndPoint() is not null);
        if (role == PredictionRole.None || first?.ToTcpEndPoint() is not { } target)
        {
            return plan;
        }
        lock (_gate)
        {
            var granted = _predictionBudget.Take(_options.PortPredictionSockets, _time.GetUtcNow());
            if (role == PredictionRole.FreshPorts)
            {
                plan.AddRange(Enumerable.Range(0, granted).Select(_ => new PlannedDial(first, FromListenPort: false, Predicted: true)));
            }
            else
            {
                var taken = addresses.Select(a => a.ToTcpEndPoint()).OfType<IPEndPoint>().Where(e => e.Address.Equals(target.Address)).Select(e => e.Port).ToHashSet();
                plan.AddRange(PortPrediction.PickPorts(_random, granted, taken)
                    .Select(port => new PlannedDial(Multiaddr.FromTcpEndPoint(new IPEndPoint(target.Address, port)), FromListenPort: true, Predicted: true)));
            }
        }
        LogPrediction(role, plan.Count - addresses.Count, first);
        return plan;
    }

    /// <summary>
    /// Whether the peer takes js-libp2p's roles in a punch (identify's agent version says js-libp2p): none but TCP's,
    /// measured in the NAT lab with @libp2p/dcutr 3.0.28 — both its A and its B dial as the initiator (B's
    /// <c>initiator: false</c> does not reach the upgrader) from a fresh port, and it upgrades a connection it accepts
    /// as the responder. So with js this node too is the initiator of its dials and the responder of what it accepts
    /// (no simultaneous open can happen: js's dials never leave from the port we dial). Potluck and go-libp2p let B
    /// speak first however the connection came about.
    /// </summary>
    private bool FollowsJsRoles(PeerId peer) =>
        _host.Peers.Get(peer)?.AgentVersion?.StartsWith("js-libp2p", StringComparison.Ordinal) == true;

    /// <summary>Closes the relayed connection once it carries no stream (or after the grace period), when a direct one exists.</summary>
    private void CloseWhenIdle(IConnection relayed)
    {
        _work.Run("close relayed", async stopping =>
        {
            var until = _time.GetUtcNow() + _options.RelayedCloseGrace;
            while (!relayed.IsClosed && Holding(relayed) > 0 && _time.GetUtcNow() < until)
            {
                await Task.Delay(TimeSpan.FromSeconds(1), _time, stopping);
            }
            if (!relayed.IsClosed && _host.DirectConnectionTo(relayed.RemotePeer) is not null)
            {
                LogRelayedClosed(relayed.RemotePeer);
                await relayed.CloseAsync();
            }
        });
    }

    /// <summary>Streams on <paramref name="connection"/> that must end before it closes: all but the long-lived protocols'.</summary>
    private int Holding(IConnection connection) => connection is Connection c
        ? c.OpenStreams(p => !_options.LongLivedProtocols.Any(l => p.StartsWith(l, StringComparison.Ordinal)))
        : connection.StreamCount;

    /// <summary>The addresses of a CONNECT we may dial: decodable, direct, dialable here, not unspecified; at most the limit.</summary>
    private List<Multiaddr> DialableAddresses(Pb.HolePunch message)
    {
        var result = new List<Multiaddr>();
        foreach (var bytes in message.ObsAddrs)
        {
            if (result.Count >= _options.MaxAddresses)
            {
                break;
            }
            if (!Multiaddr.TryFromBytes(bytes.Span, out var address) || address.Find(Multiaddr.P2pCircuit) is not null)
            {
                continue;
            }
            address = address.WithoutPeer();
            if (address.ToTcpEndPoint() is { } e && (e.Address.Equals(IPAddress.Any) || e.Address.Equals(IPAddress.IPv6Any) || e.Port == 0 || IsMulticast(e.Address)))
            {
                continue;
            }
            if (_host.CanDialDirect(address) && !result.Contains(address))
            {
                result.Add(address);
            }
        }
        return result;
    }

    private static bool IsMulticast(IPAddress ip) =>
        ip.AddressFamily == AddressFamily.InterNetwork ? (ip.GetAddressBytes()[0] & 0xF0) == 0xE0 : ip.IsIPv6Multicast;

    /// <summary>A direct address on a public IP (not private, loopback, link-local or shared), or a simulated one.</summary>
    internal static bool IsPublic(Multiaddr address)
    {
        if (address.Find(Multiaddr.P2pCircuit) is not null)
        {
            return false;
        }
        if (address.Find(Multiaddr.Memory) is not null)
        {
            return true;
        }
        if (address.ToTcpEndPoint() is not { } e)
        {
            return false;
        }
        var ip = e.Address;
        if (IPAddress.IsLoopback(ip) || ip.Equals(IPAddress.Any) || ip.Equals(IPAddress.IPv6Any))
        {
            return false;
        }
        if (ip.AddressFamily == AddressFamily.InterNetwork)
        {
            var b = ip.GetAddressBytes();
            return !(b[0] == 10 || (b[0] == 172 && (b[1] & 0xF0) == 16) || (b[0] == 192 && b[1] == 168)
                || (b[0] == 100 && (b[1] & 0xC0) == 64) || (b[0] == 169 && b[1] == 254) || b[0] == 0 || b[0] >= 224);
        }
        return !(ip.IsIPv6LinkLocal || ip.IsIPv6SiteLocal || ip.IsIPv6UniqueLocal || ip.IsIPv6Multicast);
    }

    /// <summary>The relay a relayed connection runs through: the /p2p before /p2p-circuit in its remote address.</summary>
    private static PeerId? RelayOf(IConnection connection)
    {
        PeerId? relay = null;
        foreach (var c in connection.RemoteAddress.Components)
        {
            if (c.Protocol == Multiaddr.P2pCircuit)
            {
                return relay;
            }
            if (c.Protocol == Multiaddr.P2p && PeerId.TryFromBytes(c.Value.Span, out var id))
            {
                relay = id;
            }
        }
        return null;
    }

    private static async Task WriteAsync(IStream stream, Pb.HolePunch.Types.Type type, IReadOnlyList<Multiaddr> addresses, PortMapping mapping, CancellationToken ct)
    {
        var message = new Pb.HolePunch { Type = type };
        if (mapping != PortMapping.Unknown)
        {
            message.PotluckPortMapping = (uint)mapping;
        }
        message.ObsAddrs.AddRange(addresses.Select(a => ByteString.CopyFrom(a.ToBytes())));
        await LengthPrefixed.WriteAsync(stream.Output, message.ToByteArray(), ct);
    }

    /// <summary>The next message; null when the stream ended cleanly. Over the size limit or undecodable: a protocol violation.</summary>
    private async Task<Pb.HolePunch?> ReadAsync(IStream stream, CancellationToken ct)
    {
        var bytes = await LengthPrefixed.ReadAsync(stream.Input, _options.MaxMessageSize, ProtocolId, ct);
        if (bytes is null)
        {
            return null;
        }
        Pb.HolePunch message;
        try
        {
            message = Pb.HolePunch.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new ProtocolViolationException(ProtocolId, "HolePunch message does not decode", e, ViolationCode.Malformed);
        }
        if (!message.HasType)
        {
            throw new ProtocolViolationException(ProtocolId, "HolePunch message without a type", ViolationCode.Malformed);
        }
        return message;
    }

    public async ValueTask DisposeAsync()
    {
        _host.Connected -= OnConnected;
        if (_identify is not null)
        {
            _identify.Identified -= OnIdentified;
        }
        _host.RemoveStreamHandler(ProtocolId);
        await _work.DisposeAsync();
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "dcutr: upgrade with {Peer}: success {Success} after {Attempts} attempt(s), {Ms} ms ({Failure})")]
    private partial void LogFinished(PeerId peer, bool success, int attempts, double ms, string? failure);

    [LoggerMessage(Level = LogLevel.Debug, Message = "dcutr: upgrade with {Peer} failed: {Reason}")]
    private partial void LogUpgradeFailed(PeerId peer, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "dcutr: port prediction, {Role}: {Count} predicted dial(s) around {Address}")]
    private partial void LogPrediction(PredictionRole role, int count, Multiaddr address);

    [LoggerMessage(Level = LogLevel.Debug, Message = "dcutr: refused a stream from {Peer} (not relayed, already running, or over its rate)")]
    private partial void LogRefused(PeerId peer);

    [LoggerMessage(Level = LogLevel.Debug, Message = "dcutr: dial to {Peer} at {Address} failed: {Reason}")]
    private partial void LogDialFailed(PeerId peer, Multiaddr address, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "dcutr: closing the relayed connection to {Peer}: a direct one carries its streams")]
    private partial void LogRelayedClosed(PeerId peer);
}
