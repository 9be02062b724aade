using Potluck.Protocol.Identity;
using Microsoft.Extensions.Logging;

namespace Potluck.Protocol.Noise;

/// <summary>Log messages of the Noise folder. Keys and payloads are never logged.</summary>
internal static partial class NoiseLog
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Debug, Message = "Noise handshake with {Peer} complete (initiator: {Initiator}, early muxers: {MuxerCount})")]
    public static partial void HandshakeCompleted(this ILogger logger, PeerId peer, bool initiator, int muxerCount);

    [LoggerMessage(EventId = 2, Level = LogLevel.Debug, Message = "Noise handshake failed: {Reason}")]
    public static partial void HandshakeViolation(this ILogger logger, string reason);

    [LoggerMessage(EventId = 3, Level = LogLevel.Debug, Message = "Noise handshake aborted")]
    public static partial void HandshakeAborted(this ILogger logger, Exception exception);

    [LoggerMessage(EventId = 4, Level = LogLevel.Debug, Message = "Noise transport violation, closing the connection: {Reason}")]
    public static partial void TransportViolation(this ILogger logger, string reason);

    [LoggerMessage(EventId = 5, Level = LogLevel.Debug, Message = "Noise transport I/O ended with an error")]
    public static partial void TransportError(this ILogger logger, Exception exception);

    [LoggerMessage(EventId = 6, Level = LogLevel.Error, Message = "Noise channel failed unexpectedly")]
    public static partial void Unexpected(this ILogger logger, Exception exception);
}
