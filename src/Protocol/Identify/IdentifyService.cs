using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Identify;

/// <summary>Limits on identify messages, which the remote controls.</summary>
public sealed record IdentifyOptions
{
    /// <summary>Largest identify message accepted. Default 64 KiB (go-libp2p uses a similar bound).</summary>
    public int MaxMessageSize { get; init; } = 64 * 1024;

    /// <summary>Listen addresses read from one message. Default 64.</summary>
    public int MaxListenAddresses { get; init; } = 64;

    /// <summary>Messages read on one stream (go-libp2p may split a large record). Default 4.</summary>
    public int MaxMessagesPerStream { get; init; } = 4;

    /// <summary>Identify exchange must finish within this. Default 15 s.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>What we report as our agent. Default "potluck/&lt;assembly version&gt;".</summary>
    public string AgentVersion { get; init; } = "potluck/" + (typeof(IdentifyOptions).Assembly.GetName().Version?.ToString(3) ?? "0.0.0");

    /// <summary>What we report as our protocol version. Default "ipfs/0.1.0", as go-libp2p and js-libp2p send.</summary>
    public string ProtocolVersion { get; init; } = "ipfs/0.1.0";
}

/// <summary>What identify learned about a peer.</summary>
public sealed record IdentifyResult(
    PeerId Peer,
    string? ProtocolVersion,
    string? AgentVersion,
    IReadOnlyList<Multiaddr> ListenAddresses,
    IReadOnlyList<string> Protocols,
    Multiaddr? ObservedAddress,
    Multiaddr? LocalAddress = null);

/// <summary>
/// Identify (<c>/ipfs/id/1.0.0</c>) and identify push (<c>/ipfs/id/push/1.0.0</c>) per
/// https://github.com/libp2p/specs/blob/master/identify/README.md. On every new connection the host asks the
/// remote who it is and records its protocols, listen addresses, key and agent in the peer store; when our
/// protocols or addresses change it pushes the new record to connected peers. Deviation: signed peer records
/// are accepted but not sent or verified (the public key in the message is checked against the peer id).
/// </summary>
public sealed partial class IdentifyService : IAsyncDisposable
{
    public const string ProtocolId = "/ipfs/id/1.0.0";
    public const string PushProtocolId = "/ipfs/id/push/1.0.0";

    /// <summary>Distinct protocol ids and versions a node shares between the results it keeps (more are kept as sent).</summary>
    internal const int MaxSharedStrings = 512;

    private readonly IHost _host;
    private readonly IdentifyOptions _options;
    private readonly NodeRuntime _runtime;
    private readonly ILogger<IdentifyService> _log;
    private readonly BackgroundWork _work;
    /// <summary>
    /// Per peer: its <see cref="IdentifyResult"/> once identify told us on its current connection (kept while it stays
    /// connected), or, before that, the source that callers of <see cref="WhenIdentifiedAsync"/> wait on. A result is
    /// kept as itself, not as a completed source and its task (~95 bytes more a connected peer).
    /// </summary>
    private readonly Dictionary<PeerId, object> _pending = [];
    // The strings of a result are kept as long as the peer is connected (in _pending, and by whoever listens): peers of
    // one network send the same protocol ids and versions, so each is held once per node, not once per connection.
    private readonly StringInterner _strings = new(MaxSharedStrings);
    private readonly object _gate = new();
    private int _pushScheduled;

    public IdentifyService(IHost host, IdentifyOptions options, NodeRuntime runtime, ILoggerFactory loggers)
    {
        _host = host;
        _options = options;
        _runtime = runtime;
        _log = loggers.CreateLogger<IdentifyService>();
        _work = runtime.CreateBackgroundWork("identify", _log);
        host.SetStreamHandler(ProtocolId, HandleIdentifyAsync);
        host.SetStreamHandler(PushProtocolId, HandlePushAsync);
        host.Connected += OnConnected;
        host.Disconnected += OnDisconnected;
        host.LocalInfoChanged += OnLocalInfoChanged;
    }

    /// <summary>Raised when identify (or a push) told us about a peer.</summary>
    public event Action<IdentifyResult>? Identified;

    /// <summary>Completes when the first identify exchange with the peer on its current connection finishes.</summary>
    public Task<IdentifyResult> WhenIdentifiedAsync(PeerId peer, CancellationToken ct)
    {
        lock (_gate)
        {
            if (!_pending.TryGetValue(peer, out var held))
            {
                _pending[peer] = held = new TaskCompletionSource<IdentifyResult>(TaskCreationOptions.RunContinuationsAsynchronously);
            }
            return held is IdentifyResult result
                ? LoopSafeWait.WaitAsync(Task.FromResult(result), ct)
                : LoopSafeWait.WaitAsync(((TaskCompletionSource<IdentifyResult>)held).Task, ct);
        }
    }

    /// <summary>Peers held now: identified (a result each) and waited on (a source each), for tests of the representation.</summary>
    internal (int Identified, int Waited) Held
    {
        get
        {
            lock (_gate)
            {
                var identified = _pending.Values.Count(v => v is IdentifyResult);
                return (identified, _pending.Count - identified);
            }
        }
    }

    private void OnConnected(IConnection connection) => _work.Run("identify", () => IdentifyAsync(connection));

    /// <summary>Asks the remote who it is, over a new stream on <paramref name="connection"/>; null when that fails.</summary>
    public async Task<IdentifyResult?> IdentifyAsync(IConnection connection)
    {
        var stopping = _work.Stopping;
        using var timeout = new CancellationTokenSource(_options.Timeout, _runtime.Time);
        using var linked = _work.Link(timeout.Token);
        try
        {
            var opening = await connection.TryOpenStreamAsync([ProtocolId], linked.Token);
            if (opening.Failure is { } refused)
            {
                LogIdentifyFailed(connection.RemotePeer, refused.Kind, refused.Reason);
                return null;
            }
            await using var stream = opening.Stream!;
            await stream.Output.CompleteAsync();
            var message = await ReadMessagesAsync(stream, linked.Token);
            var result = Apply(connection.RemotePeer, message) with { LocalAddress = connection.LocalAddress };
            Complete(connection.RemotePeer, result);
            return result;
        }
        catch (Exception e)
        {
            var failure = Failures.Classify(e, stopping);
            if (failure.Kind == FailureKind.Internal)
            {
                LogIdentifyBug(connection.RemotePeer, e);
            }
            else if (failure.Kind != FailureKind.Cancelled)
            {
                LogIdentifyFailed(connection.RemotePeer, failure.Kind, failure.Reason);
            }
            return null;
        }
    }

    private void Complete(PeerId peer, IdentifyResult result)
    {
        TaskCompletionSource<IdentifyResult>? waiting;
        lock (_gate)
        {
            waiting = _pending.GetValueOrDefault(peer) as TaskCompletionSource<IdentifyResult>;
            _pending[peer] = result; // a later result replaces an earlier one, as a new completed source did
        }
        waiting?.TrySetResult(result);
        Identified?.Invoke(result);
    }

    private void OnDisconnected(IConnection connection)
    {
        if (_host.Connections.Any(c => c.RemotePeer == connection.RemotePeer))
        {
            return;
        }
        lock (_gate)
        {
            if (_pending.TryGetValue(connection.RemotePeer, out var held) && held is IdentifyResult)
            {
                _pending.Remove(connection.RemotePeer);
            }
        }
    }

    private async Task HandleIdentifyAsync(IStream stream, CancellationToken ct)
    {
        var message = BuildMessage(stream.Connection.RemoteAddress);
        await LengthPrefixed.WriteAsync(stream.Output, message.ToByteArray(), ct);
        await stream.Output.CompleteAsync();
    }

    private async Task HandlePushAsync(IStream stream, CancellationToken ct)
    {
        using var timeout = new CancellationTokenSource(_options.Timeout, _runtime.Time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, ct);
        var message = await ReadMessagesAsync(stream, linked.Token);
        var result = Apply(stream.RemotePeer, message) with { LocalAddress = stream.Connection.LocalAddress };
        Identified?.Invoke(result);
    }

    private async Task<Pb.Identify> ReadMessagesAsync(IStream stream, CancellationToken ct)
    {
        var merged = new Pb.Identify();
        for (var i = 0; i < _options.MaxMessagesPerStream; i++)
        {
            var bytes = await LengthPrefixed.ReadAsync(stream.Input, _options.MaxMessageSize, ProtocolId, ct);
            if (bytes is null)
            {
                return merged;
            }
            try
            {
                merged.MergeFrom(bytes);
            }
            catch (InvalidProtocolBufferException e)
            {
                throw new ProtocolViolationException(ProtocolId, "malformed identify message", e, ViolationCode.Malformed);
            }
            if (merged.ListenAddrs.Count > _options.MaxListenAddresses * _options.MaxMessagesPerStream)
            {
                throw new ProtocolViolationException(ProtocolId, "too many listen addresses", ViolationCode.TooLarge);
            }
        }
        return merged;
    }

    internal Pb.Identify BuildMessage(Multiaddr observed)
    {
        var message = new Pb.Identify
        {
            ProtocolVersion = _options.ProtocolVersion,
            AgentVersion = _options.AgentVersion,
            PublicKey = ByteString.CopyFrom(_host.PublicKey.ToProtobuf()),
            ObservedAddr = ByteString.CopyFrom(observed.ToBytes()),
        };
        foreach (var a in _host.ListenAddresses)
        {
            message.ListenAddrs.Add(ByteString.CopyFrom(a.ToBytes()));
        }
        message.Protocols.AddRange(_host.Protocols);
        return message;
    }

    private IdentifyResult Apply(PeerId peer, Pb.Identify message)
    {
        if (message.HasPublicKey)
        {
            if (!PublicKey.TryFromProtobuf(message.PublicKey.Span, out var key) || !_host.Peers.SetPublicKey(peer, key))
            {
                throw new ProtocolViolationException(ProtocolId, "public key does not match the peer id", ViolationCode.WrongPeer);
            }
        }
        var addresses = new List<Multiaddr>();
        foreach (var raw in message.ListenAddrs.Take(_options.MaxListenAddresses))
        {
            if (Multiaddr.TryFromBytes(raw.Span, out var a))
            {
                addresses.Add(_runtime.SharedValues.Share(a.WithoutPeer())); // the peer's addresses, as every node connected to it holds them
            }
        }
        Multiaddr? observed = message.HasObservedAddr && Multiaddr.TryFromBytes(message.ObservedAddr.Span, out var o) ? _runtime.SharedValues.Share(o) : null;
        var protocols = _protocolLists.Intern(_strings.InternAll(message.Protocols)); // one array per distinct list, not per peer
        var agentVersion = message.HasAgentVersion ? _strings.Intern(message.AgentVersion) : null;
        var protocolVersion = message.HasProtocolVersion ? _strings.Intern(message.ProtocolVersion) : null;
        _host.Peers.ReplaceSelfReportedAddresses(peer, addresses);
        _host.Peers.SetProtocols(peer, protocols);
        _host.Peers.SetAgent(peer, agentVersion, protocolVersion);
        LogIdentified(peer, agentVersion ?? "?", protocols.Length, addresses.Count);
        return new IdentifyResult(peer, protocolVersion, agentVersion, addresses, protocols, observed);
    }

    private void OnLocalInfoChanged()
    {
        // Coalesce bursts of handler registrations into one push.
        if (Interlocked.Exchange(ref _pushScheduled, 1) == 0)
        {
            _work.Run("identify push", async () =>
            {
                await Task.Yield();
                Volatile.Write(ref _pushScheduled, 0);
                await PushAsync();
            });
        }
    }

    /// <summary>Sends our current record to every connected peer that speaks identify push.</summary>
    public async Task PushAsync()
    {
        var stopping = _work.Stopping;
        foreach (var connection in _host.Connections)
        {
            if (stopping.IsCancellationRequested)
            {
                return;
            }
            if (!_host.Peers.SupportsProtocol(connection.RemotePeer, PushProtocolId))
            {
                continue;
            }
            try
            {
                using var timeout = new CancellationTokenSource(_options.Timeout, _runtime.Time);
                using var linked = _work.Link(timeout.Token);
                var opening = await connection.TryOpenStreamAsync([PushProtocolId], linked.Token);
                if (opening.Failure is { } refused)
                {
                    LogPushFailed(connection.RemotePeer, refused.Kind, refused.Reason);
                    continue;
                }
                await using var stream = opening.Stream!;
                await LengthPrefixed.WriteAsync(stream.Output, BuildMessage(connection.RemoteAddress).ToByteArray(), linked.Token);
                await stream.Output.CompleteAsync();
            }
            catch (Exception e)
            {
                var failure = Failures.Classify(e, stopping);
                if (failure.Kind == FailureKind.Internal)
                {
                    LogIdentifyBug(connection.RemotePeer, e);
                }
                else if (failure.Kind != FailureKind.Cancelled)
                {
                    LogPushFailed(connection.RemotePeer, failure.Kind, failure.Reason);
                }
            }
        }
    }

    /// <summary>Stops reacting to the host and waits for the exchanges still running (they are cancelled).</summary>
    public async ValueTask DisposeAsync()
    {
        _host.Connected -= OnConnected;
        _host.Disconnected -= OnDisconnected;
        _host.LocalInfoChanged -= OnLocalInfoChanged;
        await _work.DisposeAsync();
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Identified {Peer}: {Agent}, {Protocols} protocols, {Addresses} addresses")]
    private partial void LogIdentified(PeerId peer, string agent, int protocols, int addresses);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Identify with {Peer} failed: {Kind}: {Reason}")]
    private partial void LogIdentifyFailed(PeerId peer, FailureKind kind, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Identify push to {Peer} failed: {Kind}: {Reason}")]
    private partial void LogPushFailed(PeerId peer, FailureKind kind, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Identify with {Peer} failed unexpectedly")]
    private partial void LogIdentifyBug(PeerId peer, Exception e);

    // Declared last, so the compiler-generated names of the members above (which events_hash hashes) stay as they were.
    private readonly StringListInterner _protocolLists = new(PeerStore.MaxInternedLists);
}
