using System.IO.Pipelines;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Host;

/// <summary>Which side opened a connection or stream.</summary>
public enum Direction
{
    Inbound,
    Outbound,
}

/// <summary>A negotiated protocol stream to a peer. Output.Complete() half-closes; <see cref="Reset"/> aborts.</summary>
public interface IStream : IDuplexPipe, IAsyncDisposable
{
    /// <summary>The protocol id multistream-select agreed on.</summary>
    string Protocol { get; }

    IConnection Connection { get; }

    PeerId RemotePeer => Connection.RemotePeer;

    Direction Direction { get; }

    void Reset();
}

/// <summary>An upgraded (secured, multiplexed) connection to one peer.</summary>
public interface IConnection
{
    /// <summary>Unique within this host, for logs.</summary>
    long Id { get; }

    PeerId RemotePeer { get; }

    PublicKey RemotePublicKey { get; }

    Multiaddr LocalAddress { get; }

    Multiaddr RemoteAddress { get; }

    Direction Direction { get; }

    DateTimeOffset Opened { get; }

    int StreamCount { get; }

    bool IsClosed { get; }

    /// <summary>
    /// Completes when the connection has ended: faulted when it failed under us (reset, partitioned, a broken muxer),
    /// successfully when either side closed it.
    /// </summary>
    Task Completion { get; }

    /// <summary>
    /// Opens a stream speaking the first of <paramref name="protocols"/> the remote supports. Throws
    /// <see cref="ProtocolNotSupportedException"/> when it supports none, <see cref="PeerGoneException"/> when the
    /// connection or stream went away, <see cref="ProtocolViolationException"/> on a broken negotiation.
    /// </summary>
    ValueTask<IStream> OpenStreamAsync(IReadOnlyList<string> protocols, CancellationToken ct);

    /// <summary>
    /// <see cref="OpenStreamAsync"/> with the expected failures as a result instead of an exception: the remote supports
    /// none of <paramref name="protocols"/> (<see cref="FailureKind.Unsupported"/>), or the connection or stream went away
    /// (<see cref="FailureKind.PeerGone"/>). For callers that meet them often (a peer that is no provider, a connection
    /// trimmed meanwhile). Violations and cancellation still throw.
    /// </summary>
    async ValueTask<StreamOpening> TryOpenStreamAsync(IReadOnlyList<string> protocols, CancellationToken ct)
    {
        try
        {
            return StreamOpening.Opened(await OpenStreamAsync(protocols, ct));
        }
        catch (Exception e) when (e is ProtocolNotSupportedException or PeerGoneException)
        {
            return StreamOpening.Failed(e);
        }
    }

    ValueTask CloseAsync();
}

/// <summary>
/// What <see cref="IConnection.TryOpenStreamAsync"/> or <see cref="IHost.TryNewStreamAsync"/> got: the <see cref="Stream"/>,
/// or the <see cref="Failure"/> that says why not (<see cref="FailureKind.Unsupported"/> or <see cref="FailureKind.PeerGone"/>).
/// </summary>
public readonly struct StreamOpening
{
    private readonly Multistream.Negotiation _negotiation;
    private readonly Exception? _cause;
    private readonly Failure? _failure;

    private StreamOpening(IStream? stream, Multistream.Negotiation negotiation, Exception? cause, Failure? failure)
    {
        Stream = stream;
        _negotiation = negotiation;
        _cause = cause;
        _failure = failure;
    }

    /// <summary>The open stream; null when it could not be opened.</summary>
    public IStream? Stream { get; }

    /// <summary>Why there is no stream; null when there is.</summary>
    public Failure? Failure => _failure;

    /// <summary>The exception <see cref="IConnection.OpenStreamAsync"/> throws for this failure. Only for a failed opening.</summary>
    public Exception ToException() => _cause ?? _negotiation.ToException();

    internal static StreamOpening Opened(IStream stream) => new(stream, default, null, null);

    /// <summary>The negotiation ended without a protocol (not supported, or the stream ended).</summary>
    internal static StreamOpening Refused(Multistream.Negotiation negotiation) => new(null, negotiation, null, negotiation.Failure);

    /// <summary>A failure met as an exception (kept, so the throwing API raises the very same one).</summary>
    internal static StreamOpening Failed(Exception cause) => new(null, default, cause, Failures.Classify(cause));

    /// <summary>As <see cref="Failed(Exception)"/>, classified by the caller (against its own stop token).</summary>
    internal static StreamOpening Failed(Exception cause, Failure failure) => new(null, default, cause, failure);
}

/// <summary>
/// Handles one inbound stream. The host's one catch site decides what a failure tears down: a protocol violation
/// resets the stream (or closes the connection when its radius says so), a peer that went away or a cancellation
/// ends it quietly, and anything else is a bug, logged at Error, and resets the stream.
/// </summary>
public delegate Task StreamHandler(IStream stream, CancellationToken ct);

/// <summary>
/// A libp2p host (go-libp2p's <c>core/host.Host</c>): identity, listeners, connections, stream handlers, the peer
/// store and the connection manager. What protocols, the Scheduler and the Node layer see of the network; they never
/// touch a transport, security or muxer type.
/// </summary>
public interface IHost : IAsyncDisposable
{
    PeerId PeerId { get; }

    PublicKey PublicKey { get; }

    /// <summary>The node's identity, to sign as ourselves (gossip messages, peer records).</summary>
    ISigner Signer { get; }

    /// <summary>Bound listen addresses, without the /p2p suffix.</summary>
    IReadOnlyList<Multiaddr> ListenAddresses { get; }

    IPeerStore Peers { get; }

    /// <summary>Protection, tags and trimming of connections.</summary>
    IConnectionManager ConnectionManager { get; }

    /// <summary>Per-peer request budgets and misbehaviour scores; a peer that falls to the threshold is disconnected and banned for a while.</summary>
    PeerBudgets Budgets { get; }

    /// <summary>Every inbound stream of <paramref name="protocol"/> spends one token of <paramref name="budget"/> (a <see cref="PeerBudgets"/> constant); over budget, it is reset before its handler runs.</summary>
    void BudgetInboundStreams(string protocol, string budget);

    IReadOnlyCollection<string> Protocols { get; }

    /// <summary>All open connections.</summary>
    IReadOnlyList<IConnection> Connections { get; }

    event Action<IConnection>? Connected;

    event Action<IConnection>? Disconnected;

    /// <summary>Raised when the set of protocols or listen addresses changes (identify push listens).</summary>
    event Action? LocalInfoChanged;

    void SetStreamHandler(string protocol, StreamHandler handler);

    void RemoveStreamHandler(string protocol);

    /// <summary>Starts listening on the given addresses.</summary>
    Task StartAsync(IEnumerable<Multiaddr> listen, CancellationToken ct);

    /// <summary>Dials an address (which may end in /p2p/&lt;peer&gt;), reusing an existing connection to that peer.</summary>
    ValueTask<IConnection> ConnectAsync(Multiaddr address, CancellationToken ct);

    /// <summary>Returns an open connection to the peer, dialing its known addresses if needed.</summary>
    ValueTask<IConnection> ConnectAsync(PeerId peer, CancellationToken ct);

    /// <summary>
    /// Adds a place to look for a peer's addresses when a dial by peer id finds none in the peer store (the
    /// advertisements a compute client holds: their providers are not put into the peer store until dialled). What it
    /// returns is added to the peer store, then dialled. Called outside the host's locks; null or empty: not known there.
    /// </summary>
    void AddAddressSource(Func<PeerId, IReadOnlyList<Multiaddr>?> source);

    /// <summary>Opens a stream to the peer speaking the first of <paramref name="protocols"/> it supports.</summary>
    ValueTask<IStream> NewStreamAsync(PeerId peer, IReadOnlyList<string> protocols, CancellationToken ct);

    /// <summary>
    /// <see cref="NewStreamAsync"/> with the expected failures of opening the stream as a result
    /// (<see cref="IConnection.TryOpenStreamAsync"/>); a failed dial still throws its <see cref="DialException"/>.
    /// </summary>
    async ValueTask<StreamOpening> TryNewStreamAsync(PeerId peer, IReadOnlyList<string> protocols, CancellationToken ct)
    {
        var connection = await ConnectAsync(peer, ct);
        return await connection.TryOpenStreamAsync(protocols, ct);
    }

    /// <summary>Closes every connection to the peer.</summary>
    ValueTask DisconnectAsync(PeerId peer);
}
