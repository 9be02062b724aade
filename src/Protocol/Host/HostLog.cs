using Microsoft.Extensions.Logging;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Host;

/// <summary>
/// Log messages and scopes of the Host folder. Everything done on a connection runs inside a {Connection} and a
/// {Peer} scope (the scopes flow into the background work started within them: muxer loops, stream handlers, the
/// protocols' reactions to a new connection); a dial runs inside a {Peer} scope. A remote's misbehaviour is logged at
/// Debug, never above: a hostile peer must not flood the log.
/// </summary>
internal static partial class HostLog
{
    private static readonly Func<ILogger, PeerId, IDisposable?> s_peerScope =
        LoggerMessage.DefineScope<PeerId>("peer {Peer}");

    private static readonly Func<ILogger, long, IDisposable?> s_connectionScope =
        LoggerMessage.DefineScope<long>("connection {Connection}");

    /// <summary>A {Peer} scope: everything logged until it is disposed (in this flow and work started in it) names the peer.</summary>
    public static IDisposable? PeerScope(this ILogger logger, PeerId peer) => s_peerScope(logger, peer);

    /// <summary>A {Connection} scope, by the host-unique connection id.</summary>
    public static IDisposable? ConnectionScope(this ILogger logger, long connection) => s_connectionScope(logger, connection);

    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "Listening on {Address}")]
    public static partial void Listening(this ILogger logger, Multiaddr address);

    [LoggerMessage(EventId = 2, Level = LogLevel.Debug, Message = "Connection {Id} {Direction} to {Peer} at {Address}")]
    public static partial void Connected(this ILogger logger, long id, Direction direction, PeerId peer, Multiaddr address);

    [LoggerMessage(EventId = 3, Level = LogLevel.Debug, Message = "Connection {Id} to {Peer} closed")]
    public static partial void Disconnected(this ILogger logger, long id, PeerId peer);

    [LoggerMessage(EventId = 4, Level = LogLevel.Debug, Message = "Closing idle connection {Id} to {Peer}")]
    public static partial void IdleClose(this ILogger logger, long id, PeerId peer);

    [LoggerMessage(EventId = 19, Level = LogLevel.Debug, Message = "Closing connection {Id} to {Peer}: the exchange it was dialled for is over and connections are scarce")]
    public static partial void UnusedClose(this ILogger logger, long id, PeerId peer);

    [LoggerMessage(EventId = 20, Level = LogLevel.Debug, Message = "Closing idle connection {Id} to {Peer}: no stream but background ones since {LastUsed}, {Count} connections")]
    public static partial void IdleTrimmed(this ILogger logger, long id, PeerId peer, DateTimeOffset lastUsed, int count);

    [LoggerMessage(EventId = 5, Level = LogLevel.Debug, Message = "Trimming connection {Id} to {Peer} (tag value {Value}): {Count} connections, low water {LowWater}")]
    public static partial void Trimmed(this ILogger logger, long id, PeerId peer, int value, int count, int lowWater);

    [LoggerMessage(EventId = 6, Level = LogLevel.Warning, Message = "Accept on {Address} failed: {Kind}: {Reason}")]
    public static partial void AcceptFailed(this ILogger logger, Multiaddr address, FailureKind kind, string reason);

    [LoggerMessage(EventId = 7, Level = LogLevel.Debug, Message = "Refused inbound connection from {Remote} before the handshake: limit on {Scope}")]
    public static partial void InboundRefused(this ILogger logger, Multiaddr remote, string scope);

    [LoggerMessage(EventId = 8, Level = LogLevel.Debug, Message = "Inbound handshake from {Remote} timed out")]
    public static partial void InboundHandshakeTimeout(this ILogger logger, Multiaddr remote);

    [LoggerMessage(EventId = 9, Level = LogLevel.Debug, Message = "Inbound handshake from {Remote} failed: {Kind}: {Reason}")]
    public static partial void InboundHandshakeFailed(this ILogger logger, Multiaddr remote, FailureKind kind, string reason);

    [LoggerMessage(EventId = 30, Level = LogLevel.Warning, Message = "Inbound connection from {Remote} did not speak libp2p: likely a node {Which} (libp2p pnet); at most one such line a minute")]
    public static partial void InboundLikelySwarmKeyMismatch(this ILogger logger, Multiaddr remote, string which);

    [LoggerMessage(EventId = 10, Level = LogLevel.Error, Message = "Inbound handshake from {Remote} failed unexpectedly")]
    public static partial void InboundHandshakeBug(this ILogger logger, Multiaddr remote, Exception e);

    [LoggerMessage(EventId = 11, Level = LogLevel.Debug, Message = "Stream {Protocol} reset: {Kind}: {Reason}")]
    public static partial void StreamFailed(this ILogger logger, string protocol, FailureKind kind, string reason);

    [LoggerMessage(EventId = 12, Level = LogLevel.Debug, Message = "Closing the connection: {Protocol} violation ({Code}): {Reason}")]
    public static partial void ClosingForViolation(this ILogger logger, string protocol, ViolationCode code, string reason);

    [LoggerMessage(EventId = 13, Level = LogLevel.Error, Message = "Handler for {Protocol} failed")]
    public static partial void HandlerBug(this ILogger logger, string protocol, Exception e);

    [LoggerMessage(EventId = 14, Level = LogLevel.Error, Message = "A connection event handler threw")]
    public static partial void EventHandlerFailed(this ILogger logger, Exception e);

    [LoggerMessage(EventId = 16, Level = LogLevel.Debug, Message = "Refused connection to {Peer}: limit on {Scope}")]
    public static partial void ConnectionRefused(this ILogger logger, PeerId peer, string scope);

    [LoggerMessage(EventId = 17, Level = LogLevel.Debug, Message = "Reset an inbound stream: {Reason}")]
    public static partial void StreamRefused(this ILogger logger, string reason);

    [LoggerMessage(EventId = 18, Level = LogLevel.Debug, Message = "Banned {Peer} for {Duration}: its misbehaviour score reached the threshold")]
    public static partial void PeerBanned(this ILogger logger, PeerId peer, TimeSpan duration);

    [LoggerMessage(EventId = 15, Level = LogLevel.Error, Message = "Accepting streams failed unexpectedly")]
    public static partial void AcceptStreamBug(this ILogger logger, Exception e);
}
