using System.IO.Pipelines;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;

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

    ValueTask<IStream> OpenStreamAsync(IReadOnlyList<string> protocols, CancellationToken ct);

    ValueTask CloseAsync();
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

    /// <summary>Opens a stream to the peer speaking the first of <paramref name="protocols"/> it supports.</summary>
    ValueTask<IStream> NewStreamAsync(PeerId peer, IReadOnlyList<string> protocols, CancellationToken ct);

    /// <summary>Closes every connection to the peer.</summary>
    ValueTask DisconnectAsync(PeerId peer);
}
