using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.AutoNat;

/// <summary>The outcome of one dial request we sent.</summary>
/// <param name="NonceReceived">Whether the server's dial-back reached us with our nonce: a reachable verdict counts only with it.</param>
public sealed record AutoNatProbe(PeerId Server, AutoNatResponseStatus Status, Multiaddr? Address,
    AutoNatDialStatus DialStatus, bool NonceReceived)
{
    /// <summary>True: dialled back with our nonce; false: the server could not dial it; null: no verdict.</summary>
    public bool? Reachable => Status != AutoNatResponseStatus.Ok ? null
        : DialStatus == AutoNatDialStatus.Ok ? (NonceReceived ? true : null)
        : DialStatus == AutoNatDialStatus.DialError ? false
        : null;
}

/// <summary>
/// AutoNAT v2 (https://github.com/libp2p/specs/blob/master/autonat/autonat-v2.md), client and server, with the address
/// manager of observed addresses. Server: answers <c>/libp2p/autonat/2/dial-request</c> within rate limits, dials
/// exactly one requested address on a fresh connection that nothing else uses, sends the nonce on
/// <c>/libp2p/autonat/2/dial-back</c>, and before dialling an IP other than the requester's asks for
/// <see cref="AutoNatOptions.DialDataBytes"/> of dial data (the amplification guard). Client: tests its bound and
/// observed addresses one per request against connected servers, counts a "reachable" only when the dial-back brought
/// its nonce, and calls an address public or private once <see cref="AutoNatOptions.Confirmations"/> distinct
/// servers agree. Deviation: the server dials back from its own identity (the spec allows a separate one).
/// </summary>
public sealed partial class AutoNatService : IAsyncDisposable
{
    public const string DialRequestProtocolId = "/libp2p/autonat/2/dial-request";
    public const string DialBackProtocolId = "/libp2p/autonat/2/dial-back";
    private const int MaxDialDataChunk = 4096;

    /// <summary>Failed (address, server) pairs remembered at most; past it, those older than the recheck interval go, then the oldest.</summary>
    internal const int MaxFailedServers = 1024;

    private void RememberFailedLocked(Multiaddr address, PeerId server)
    {
        var now = _runtime.Time.GetUtcNow();
        _failedServers[(address, server)] = now;
        if (_failedServers.Count > MaxFailedServers)
        {
            foreach (var stale in _failedServers.Where(kv => now - kv.Value >= _options.RecheckInterval).Select(kv => kv.Key).ToArray())
            {
                _failedServers.Remove(stale);
            }
            while (_failedServers.Count > MaxFailedServers)
            {
                _failedServers.Remove(_failedServers.MinBy(kv => kv.Value).Key);
            }
        }
    }

    private readonly Libp2pHost _host;
    private readonly AutoNatOptions _options;
    private readonly NodeRuntime _runtime;
    private readonly ILogger<AutoNatService> _log;
    private readonly BackgroundWork _work;
    private readonly ReachabilityTracker _tracker;
    private readonly object _gate = new();
    private readonly Dictionary<ulong, Pending> _pending = [];
    private readonly Queue<DateTimeOffset> _served = new();
    private readonly Dictionary<PeerId, Queue<DateTimeOffset>> _servedPerPeer = [];
    private readonly Queue<DateTimeOffset> _dialDataServed = new();
    private readonly Dictionary<(Multiaddr, PeerId), DateTimeOffset> _failedServers = [];
    private readonly IdentifyService? _identify;
    private int _dialsInFlight;
    private Reachability _overall = Reachability.Unknown;
    private int _probeScheduled;

    private sealed class Pending
    {
        public Multiaddr? ReceivedOn { get; set; }
    }

    public AutoNatService(Libp2pHost host, AutoNatOptions options, NodeRuntime runtime, ILoggerFactory loggers, IdentifyService? identify)
    {
        var problems = options.Validate();
        if (problems.Count > 0)
        {
            throw new ArgumentException(string.Join("; ", problems), nameof(options));
        }
        _host = host;
        _options = options;
        _runtime = runtime;
        _log = loggers.CreateLogger<AutoNatService>();
        _work = runtime.CreateBackgroundWork("autonat", _log);
        _tracker = new ReachabilityTracker(options);
        _identify = identify;
        if (options.Server)
        {
            host.SetStreamHandler(DialRequestProtocolId, HandleDialRequestAsync);
        }
        if (options.Client)
        {
            host.SetStreamHandler(DialBackProtocolId, HandleDialBackAsync);
            if (identify is not null)
            {
                identify.Identified += OnIdentified;
            }
        }
    }

    /// <summary>Raised when an address's verdict, or the node's, changed.</summary>
    public event Action? Changed;

    /// <summary>The node as a whole: public when any address is, private when all tested ones are.</summary>
    public Reachability Reachability
    {
        get
        {
            lock (_gate)
            {
                return _overall;
            }
        }
    }

    /// <summary>Every address we test (bound and observed) with its verdict.</summary>
    public IReadOnlyList<AddressReachability> Addresses
    {
        get
        {
            lock (_gate)
            {
                return _tracker.Snapshot(CandidatesLocked());
            }
        }
    }

    /// <summary>Dial requests answered, refused for a limit, and dial data bytes received (for metrics and tests).</summary>
    public long RequestsServed => Interlocked.Read(ref _requestsServed);

    public long RequestsRejected => Interlocked.Read(ref _requestsRejected);

    public long DialBacks => Interlocked.Read(ref _dialBacks);

    public long DialDataReceived => Interlocked.Read(ref _dialDataReceived);

    private long _requestsServed;
    private long _requestsRejected;
    private long _dialBacks;
    private long _dialDataReceived;

    /// <summary>Starts the client's probing (every <see cref="AutoNatOptions.ProbeInterval"/>).</summary>
    public void Start()
    {
        if (_options.Client)
        {
            _work.Run("autonat probe loop", ProbeLoopAsync);
        }
    }

    /// <summary>
    /// The advertised form of the bound addresses: those found private are dropped, observed addresses found public
    /// are added (a NAT's port mapping, or a public IP the interfaces do not show).
    /// </summary>
    public IReadOnlyList<Multiaddr> Rewrite(IReadOnlyList<Multiaddr> bound)
    {
        lock (_gate)
        {
            var result = bound.Where(a => _tracker.StatusOf(a) != Reachability.Private).ToList();
            foreach (var o in _tracker.ActivatedObserved)
            {
                if (_tracker.StatusOf(o) == Reachability.Public && !result.Contains(o))
                {
                    result.Add(o);
                }
            }
            return result;
        }
    }

    /// <summary>Bound addresses and activated observed ones; none for a node that does not listen (it wants no inbound).</summary>
    private IReadOnlyList<Multiaddr> CandidatesLocked() => _host.BoundAddresses.Count == 0 ? [] :
        _host.BoundAddresses.Concat(_tracker.ActivatedObserved)
            .Select(a => a.WithoutPeer())
            .Where(a => ReachabilityTracker.IsTestable(a, _options.AllowPrivateAddresses))
            .Distinct()
            .ToArray();

    private void OnIdentified(IdentifyResult result)
    {
        if (result.ObservedAddress is { } observed)
        {
            lock (_gate)
            {
                _tracker.AddObserved(result.Peer, observed, _runtime.Time.GetUtcNow());
            }
        }
        if (result.Protocols.Contains(DialRequestProtocolId) && Interlocked.Exchange(ref _probeScheduled, 1) == 0)
        {
            // A new server: probe soon rather than at the next tick.
            _work.Run("autonat probe", async () =>
            {
                await Task.Yield();
                Volatile.Write(ref _probeScheduled, 0);
                await ProbeDueAsync(_work.Stopping);
            });
        }
    }

    private async Task ProbeLoopAsync()
    {
        var stopping = _work.Stopping;
        while (!stopping.IsCancellationRequested)
        {
            await Task.Delay(_options.ProbeInterval, _runtime.Time, stopping);
            await ProbeDueAsync(stopping);
        }
    }

    /// <summary>Tests each address that is due against one server that has not judged it lately.</summary>
    public async Task ProbeDueAsync(CancellationToken ct)
    {
        Multiaddr[] due;
        lock (_gate)
        {
            due = [.. _tracker.DueForProbe(CandidatesLocked(), _runtime.Time.GetUtcNow())];
        }
        foreach (var address in due)
        {
            var now = _runtime.Time.GetUtcNow();
            PeerId? server;
            lock (_gate)
            {
                server = _host.Connections
                    .Where(c => !c.IsClosed && c.RemoteAddress.Find(Multiaddr.P2pCircuit) is null)
                    .Select(c => c.RemotePeer)
                    .Distinct()
                    .Where(p => _host.Peers.SupportsProtocol(p, DialRequestProtocolId)
                        && !_tracker.HasRecentResult(address, p, now)
                        && !(_failedServers.TryGetValue((address, p), out var failed) && now - failed < _options.RecheckInterval))
                    .OrderBy(p => p.ToString(), StringComparer.Ordinal)
                    .Cast<PeerId?>()
                    .FirstOrDefault();
            }
            if (server is not { } s)
            {
                continue;
            }
            try
            {
                var probe = await ProbeAsync(s, [address], ct);
                if (probe.Reachable is { } reachable && probe.Address == address)
                {
                    Record(address, s, reachable);
                }
                else
                {
                    lock (_gate)
                    {
                        RememberFailedLocked(address, s);
                    }
                }
            }
            catch (Exception e) when (Failures.Classify(e, ct).Kind is not FailureKind.Internal and not FailureKind.Cancelled)
            {
                LogProbeFailed(s, address, e.Message);
                lock (_gate)
                {
                    RememberFailedLocked(address, s);
                }
            }
        }
    }

    private void Record(Multiaddr address, PeerId server, bool reachable)
    {
        bool changed;
        Reachability overall;
        lock (_gate)
        {
            changed = _tracker.Record(address, server, reachable, _runtime.Time.GetUtcNow());
            overall = _tracker.Overall(CandidatesLocked());
            changed |= overall != _overall;
            _overall = overall;
        }
        LogVerdict(address, server, reachable);
        if (changed)
        {
            LogReachability(overall);
            Changed?.Invoke();
        }
    }

    /// <summary>
    /// Asks <paramref name="server"/> to dial one of <paramref name="addresses"/> (in order of priority) and waits for
    /// its answer; pays dial data up to <see cref="AutoNatOptions.MaxDialDataToSend"/> when asked.
    /// </summary>
    public async Task<AutoNatProbe> ProbeAsync(PeerId server, IReadOnlyList<Multiaddr> addresses, CancellationToken ct)
    {
        using var timeout = new CancellationTokenSource(_options.RequestTimeout, _runtime.Time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, timeout.Token);
        var nonce = _runtime.SecureRandom.NextUInt64();
        var pending = new Pending();
        lock (_gate)
        {
            _pending[nonce] = pending;
        }
        try
        {
            using var dialReason = DialReason.Use(DialReason.AutoNat);
            await using var stream = await _host.NewStreamAsync(server, [DialRequestProtocolId], linked.Token);
            var request = new Pb.DialRequest { Nonce = nonce };
            request.Addrs.AddRange(addresses.Select(a => ByteString.CopyFrom(a.WithoutPeer().ToBytes())));
            await WriteAsync(stream, new Pb.Message { DialRequest = request }, linked.Token);
            var paid = false;
            while (true)
            {
                var message = await ReadMessageAsync(stream, DialRequestProtocolId, linked.Token)
                    ?? throw new ProtocolViolationException(DialRequestProtocolId, "server closed the stream without a response", ViolationCode.Malformed);
                if (message.MsgCase == Pb.Message.MsgOneofCase.DialDataRequest)
                {
                    var ask = message.DialDataRequest;
                    if (paid || ask.AddrIdx >= addresses.Count || ask.NumBytes > (ulong)_options.MaxDialDataToSend)
                    {
                        stream.Reset();
                        throw new ProtocolViolationException(DialRequestProtocolId,
                            $"server asked {ask.NumBytes} bytes of dial data for address {ask.AddrIdx}{(paid ? " a second time" : "")}; we pay at most {_options.MaxDialDataToSend}, once", ViolationCode.InvalidValue);
                    }
                    // Once per request: a server that asks again would make us send without end.
                    paid = true;
                    await SendDialDataAsync(stream, (long)ask.NumBytes, linked.Token);
                    continue;
                }
                if (message.MsgCase != Pb.Message.MsgOneofCase.DialResponse)
                {
                    throw new ProtocolViolationException(DialRequestProtocolId, $"server sent {message.MsgCase}, not a response", ViolationCode.UnexpectedMessage);
                }
                var response = message.DialResponse;
                if (!Enum.IsDefined(response.Status) || !Enum.IsDefined(response.DialStatus))
                {
                    // The spec: discard responses with status codes we do not understand.
                    return new AutoNatProbe(server, AutoNatResponseStatus.InternalError, null, AutoNatDialStatus.Unused, false);
                }
                Multiaddr? chosen = response.Status == Pb.DialResponse.Types.ResponseStatus.Ok && response.AddrIdx < addresses.Count
                    ? addresses[(int)response.AddrIdx].WithoutPeer() : null;
                bool received;
                lock (_gate)
                {
                    received = pending.ReceivedOn is { } on && chosen is not null && SameTransport(on, chosen);
                }
                return new AutoNatProbe(server, (AutoNatResponseStatus)response.Status, chosen, (AutoNatDialStatus)response.DialStatus, received);
            }
        }
        finally
        {
            lock (_gate)
            {
                _pending.Remove(nonce);
            }
        }
    }

    /// <summary>The spec's check: the dial-back came in on a connection of the same transport as the address tested.</summary>
    private static bool SameTransport(Multiaddr local, Multiaddr tested)
    {
        var a = local.Components;
        var b = tested.Components;
        if (a.Count == 0 || b.Count == 0)
        {
            return false;
        }
        bool IsIp(MultiaddrProtocol p) => p == Multiaddr.Ip4 || p == Multiaddr.Ip6;
        if (a[0].Protocol == Multiaddr.Memory || b[0].Protocol == Multiaddr.Memory)
        {
            return a[0].Protocol == b[0].Protocol;
        }
        return IsIp(a[0].Protocol) && IsIp(b[0].Protocol) && a.Count > 1 && b.Count > 1 && a[1].Protocol == b[1].Protocol;
    }

    private static async Task SendDialDataAsync(IStream stream, long bytes, CancellationToken ct)
    {
        var chunk = new Pb.Message { DialDataResponse = new Pb.DialDataResponse { Data = ByteString.CopyFrom(new byte[MaxDialDataChunk]) } }.ToByteArray();
        for (long sent = 0; sent < bytes; sent += MaxDialDataChunk)
        {
            LengthPrefixed.Write(stream.Output, chunk);
            var flush = await stream.Output.FlushAsync(ct);
            if (flush.IsCompleted)
            {
                return;
            }
        }
    }

    private async Task HandleDialBackAsync(IStream stream, CancellationToken ct)
    {
        using var timeout = new CancellationTokenSource(_options.DialBackTimeout, _runtime.Time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, timeout.Token);
        var bytes = await LengthPrefixed.ReadAsync(stream.Input, 64, DialBackProtocolId, linked.Token);
        if (bytes is null)
        {
            return;
        }
        Pb.DialBack message;
        try
        {
            message = Pb.DialBack.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new ProtocolViolationException(DialBackProtocolId, "dial-back does not decode", e, ViolationCode.Malformed);
        }
        bool known;
        lock (_gate)
        {
            known = _pending.TryGetValue(message.Nonce, out var pending);
            if (known && stream.Connection.Direction == Direction.Inbound && stream.Connection.RemoteAddress.Find(Multiaddr.P2pCircuit) is null)
            {
                pending!.ReceivedOn = stream.Connection.LocalAddress;
            }
        }
        if (!known)
        {
            // Not a nonce of ours: no answer, so a server cannot learn anything from guessing.
            LogUnknownNonce(stream.RemotePeer);
            stream.Reset();
            return;
        }
        await LengthPrefixed.WriteAsync(stream.Output, new Pb.DialBackResponse { Status = Pb.DialBackResponse.Types.DialBackStatus.Ok }.ToByteArray(), linked.Token);
        await stream.Output.CompleteAsync();
    }

    private async Task HandleDialRequestAsync(IStream stream, CancellationToken ct)
    {
        using var timeout = new CancellationTokenSource(_options.RequestTimeout, _runtime.Time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, timeout.Token);
        var peer = stream.RemotePeer;
        var message = await ReadMessageAsync(stream, DialRequestProtocolId, linked.Token);
        if (message is null)
        {
            return;
        }
        if (message.MsgCase != Pb.Message.MsgOneofCase.DialRequest)
        {
            throw new ProtocolViolationException(DialRequestProtocolId, $"expected a dial request, got {message.MsgCase}", ViolationCode.UnexpectedMessage);
        }
        var request = message.DialRequest;
        if (request.Addrs.Count > _options.MaxAddressesPerRequest)
        {
            throw new ProtocolViolationException(DialRequestProtocolId,
                $"dial request with {request.Addrs.Count} addresses (at most {_options.MaxAddressesPerRequest})", ViolationCode.TooLarge);
        }
        var relayed = stream.Connection.RemoteAddress.Find(Multiaddr.P2pCircuit) is not null;
        if (relayed || !TryAdmit(peer))
        {
            Interlocked.Increment(ref _requestsRejected);
            LogRejected(peer, relayed ? "relayed connection" : "rate limit");
            await RespondAsync(stream, Pb.DialResponse.Types.ResponseStatus.ERequestRejected, 0, Pb.DialStatus.Unused, linked.Token);
            return;
        }
        var index = -1;
        Multiaddr? chosen = null;
        for (var i = 0; i < request.Addrs.Count; i++)
        {
            if (Multiaddr.TryFromBytes(request.Addrs[i].Span, out var a)
                && (a.PeerId is null || a.PeerId == peer)
                && ReachabilityTracker.IsTestable(a.WithoutPeer(), _options.AllowPrivateAddresses)
                && _host.CanDial(a.WithoutPeer()))
            {
                (index, chosen) = (i, a.WithoutPeer());
                break;
            }
        }
        if (chosen is null)
        {
            await RespondAsync(stream, Pb.DialResponse.Types.ResponseStatus.EDialRefused, 0, Pb.DialStatus.Unused, linked.Token);
            return;
        }
        if (ReachabilityTracker.HostPart(chosen) != ReachabilityTracker.HostPart(stream.Connection.RemoteAddress))
        {
            // The amplification guard: another IP is dialled only once the requester has spent more than the dial costs.
            if (!TryTake(_dialDataServed, _options.ServerDialDataRequestsPerMinute))
            {
                Interlocked.Increment(ref _requestsRejected);
                LogRejected(peer, "dial-data rate limit");
                await RespondAsync(stream, Pb.DialResponse.Types.ResponseStatus.ERequestRejected, 0, Pb.DialStatus.Unused, linked.Token);
                return;
            }
            await WriteAsync(stream, new Pb.Message
            {
                DialDataRequest = new Pb.DialDataRequest { AddrIdx = (uint)index, NumBytes = (ulong)_options.DialDataBytes },
            }, linked.Token);
            long received = 0;
            while (received < _options.DialDataBytes)
            {
                var data = await ReadMessageAsync(stream, DialRequestProtocolId, linked.Token);
                if (data is null)
                {
                    LogRejected(peer, $"stopped paying after {received} bytes of dial data");
                    return;
                }
                if (data.MsgCase != Pb.Message.MsgOneofCase.DialDataResponse)
                {
                    throw new ProtocolViolationException(DialRequestProtocolId, $"expected dial data, got {data.MsgCase}", ViolationCode.UnexpectedMessage);
                }
                if (data.DialDataResponse.Data.Length > MaxDialDataChunk)
                {
                    throw new ProtocolViolationException(DialRequestProtocolId,
                        $"dial data chunk of {data.DialDataResponse.Data.Length} bytes (at most {MaxDialDataChunk})", ViolationCode.TooLarge);
                }
                received += data.DialDataResponse.Data.Length;
                Interlocked.Add(ref _dialDataReceived, data.DialDataResponse.Data.Length);
            }
        }
        if (Interlocked.Increment(ref _dialsInFlight) > _options.ServerMaxConcurrentDials)
        {
            Interlocked.Decrement(ref _dialsInFlight);
            Interlocked.Increment(ref _requestsRejected);
            await RespondAsync(stream, Pb.DialResponse.Types.ResponseStatus.ERequestRejected, 0, Pb.DialStatus.Unused, linked.Token);
            return;
        }
        Pb.DialStatus status;
        try
        {
            status = await DialBackAsync(chosen, request.Nonce, linked.Token);
        }
        finally
        {
            Interlocked.Decrement(ref _dialsInFlight);
        }
        Interlocked.Increment(ref _requestsServed);
        LogServed(peer, chosen, status);
        await RespondAsync(stream, Pb.DialResponse.Types.ResponseStatus.Ok, (uint)index, status, linked.Token);
        await stream.Output.CompleteAsync();
    }

    private async Task<Pb.DialStatus> DialBackAsync(Multiaddr address, ulong nonce, CancellationToken ct)
    {
        using var timeout = new CancellationTokenSource(_options.DialBackTimeout, _runtime.Time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, timeout.Token);
        Interlocked.Increment(ref _dialBacks);
        IConnection connection;
        try
        {
            connection = await _host.DialUnregisteredAsync(address, linked.Token);
        }
        catch (Exception e) when (Failures.Classify(e, ct).Kind is not FailureKind.Internal and not FailureKind.Cancelled)
        {
            return Pb.DialStatus.EDialError;
        }
        try
        {
            await using var stream = await connection.OpenStreamAsync([DialBackProtocolId], linked.Token);
            await LengthPrefixed.WriteAsync(stream.Output, new Pb.DialBack { Nonce = nonce }.ToByteArray(), linked.Token);
            var answer = await LengthPrefixed.ReadAsync(stream.Input, 64, DialBackProtocolId, linked.Token);
            return answer is not null && Pb.DialBackResponse.Parser.ParseFrom(answer).Status == Pb.DialBackResponse.Types.DialBackStatus.Ok
                ? Pb.DialStatus.Ok : Pb.DialStatus.EDialBackError;
        }
        catch (Exception e) when (e is InvalidProtocolBufferException || Failures.Classify(e, ct).Kind is not FailureKind.Internal and not FailureKind.Cancelled)
        {
            return Pb.DialStatus.EDialBackError;
        }
        finally
        {
            await connection.CloseAsync();
        }
    }

    private bool TryAdmit(PeerId peer)
    {
        lock (_gate)
        {
            var now = _runtime.Time.GetUtcNow();
            if (!_servedPerPeer.TryGetValue(peer, out var perPeer))
            {
                // Bounded: peers with no request in the last minute are forgotten first.
                if (_servedPerPeer.Count >= 1024)
                {
                    foreach (var idle in _servedPerPeer.Where(kv => Trim(kv.Value, now) == 0).Select(kv => kv.Key).ToArray())
                    {
                        _servedPerPeer.Remove(idle);
                    }
                    if (_servedPerPeer.Count >= 1024)
                    {
                        return false;
                    }
                }
                _servedPerPeer[peer] = perPeer = new Queue<DateTimeOffset>();
            }
            if (Trim(_served, now) >= _options.ServerRequestsPerMinute || Trim(perPeer, now) >= _options.ServerRequestsPerPeerPerMinute)
            {
                return false;
            }
            _served.Enqueue(now);
            perPeer.Enqueue(now);
            return true;
        }
    }

    private bool TryTake(Queue<DateTimeOffset> window, int perMinute)
    {
        lock (_gate)
        {
            var now = _runtime.Time.GetUtcNow();
            if (Trim(window, now) >= perMinute)
            {
                return false;
            }
            window.Enqueue(now);
            return true;
        }
    }

    private static int Trim(Queue<DateTimeOffset> window, DateTimeOffset now)
    {
        while (window.Count > 0 && now - window.Peek() >= TimeSpan.FromMinutes(1))
        {
            window.Dequeue();
        }
        return window.Count;
    }

    private async Task<Pb.Message?> ReadMessageAsync(IStream stream, string protocol, CancellationToken ct)
    {
        var bytes = await LengthPrefixed.ReadAsync(stream.Input, _options.MaxMessageSize, protocol, ct);
        if (bytes is null)
        {
            return null;
        }
        try
        {
            return Pb.Message.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new ProtocolViolationException(protocol, "message does not decode", e, ViolationCode.Malformed);
        }
    }

    private static async Task WriteAsync(IStream stream, Pb.Message message, CancellationToken ct) =>
        await LengthPrefixed.WriteAsync(stream.Output, message.ToByteArray(), ct);

    private static Task RespondAsync(IStream stream, Pb.DialResponse.Types.ResponseStatus status, uint index, Pb.DialStatus dialStatus, CancellationToken ct) =>
        WriteAsync(stream, new Pb.Message { DialResponse = new Pb.DialResponse { Status = status, AddrIdx = index, DialStatus = dialStatus } }, ct);

    public async ValueTask DisposeAsync()
    {
        if (_identify is not null)
        {
            _identify.Identified -= OnIdentified;
        }
        await _work.DisposeAsync();
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "autonat: {Server} judged {Address}: {Reachable}")]
    private partial void LogVerdict(Multiaddr address, PeerId server, bool reachable);

    [LoggerMessage(Level = LogLevel.Information, Message = "autonat: this node is now {Reachability}")]
    private partial void LogReachability(Reachability reachability);

    [LoggerMessage(Level = LogLevel.Debug, Message = "autonat: probing {Address} with {Server} failed: {Reason}")]
    private partial void LogProbeFailed(PeerId server, Multiaddr address, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "autonat: dial-back from {Peer} with a nonce we never sent")]
    private partial void LogUnknownNonce(PeerId peer);

    [LoggerMessage(Level = LogLevel.Debug, Message = "autonat: request from {Peer} rejected: {Reason}")]
    private partial void LogRejected(PeerId peer, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "autonat: dialled {Address} for {Peer}: {Status}")]
    private partial void LogServed(PeerId peer, Multiaddr address, Pb.DialStatus status);
}
