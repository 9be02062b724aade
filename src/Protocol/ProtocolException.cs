using Potluck.Protocol.Runtime;

namespace Potluck.Protocol;

/// <summary>
/// A remote peer broke a protocol rule. The blast radius decides what happens next: a stream-level
/// violation resets the stream, a connection-level one (bad framing, MAC failure) closes the connection.
/// Logged at Debug: a hostile peer must not be able to flood the log.
/// </summary>
public class ProtocolViolationException : Exception, IClassifiedFailure
{
    public ProtocolViolationException(string protocol, string reason, ViolationCode code = ViolationCode.Other, BlastRadius radius = BlastRadius.Stream)
        : base($"{protocol}: {reason}")
    {
        Protocol = protocol;
        Reason = reason;
        Code = code;
        Radius = radius;
    }

    public ProtocolViolationException(string protocol, string reason, Exception inner, ViolationCode code = ViolationCode.Other,
        BlastRadius radius = BlastRadius.Stream)
        : base($"{protocol}: {reason}", inner)
    {
        Protocol = protocol;
        Reason = reason;
        Code = code;
        Radius = radius;
    }

    /// <summary>Which rule was broken, for metrics and peer scoring.</summary>
    public ViolationCode Code { get; }

    /// <summary>What is torn down: the stream, or the whole connection (bad framing, MAC failure, bad muxer header).</summary>
    public BlastRadius Radius { get; }

    public FailureKind Kind => FailureKind.ProtocolViolation;

    /// <summary>The protocol whose rule was broken, e.g. "yamux" or "/noise".</summary>
    public string Protocol { get; }

    /// <summary>What was wrong, without any secret material.</summary>
    public string Reason { get; }
}

/// <summary>A stream was reset by the remote or by a local decision.</summary>
public sealed class StreamResetException : PeerGoneException
{
    public StreamResetException(string message) : base(message) { }
}

/// <summary>Both sides completed multistream-select without a protocol in common.</summary>
public sealed class ProtocolNotSupportedException : Exception, IClassifiedFailure
{
    public ProtocolNotSupportedException(IReadOnlyList<string> offered)
        : base(Describe(offered))
    {
        Offered = offered;
    }

    /// <summary>The message for <paramref name="offered"/>, also the reason of a negotiation's result.</summary>
    internal static string Describe(IReadOnlyList<string> offered) => $"the remote supports none of: {string.Join(", ", offered)}";

    public IReadOnlyList<string> Offered { get; }

    public FailureKind Kind => FailureKind.Unsupported;

    public BlastRadius Radius => BlastRadius.Stream;
}

/// <summary>The result of a bounded decoder looking at bytes it was handed.</summary>
public enum DecodeStatus
{
    /// <summary>A whole item was decoded and consumed.</summary>
    Done,
    /// <summary>The bytes are a valid prefix; nothing was consumed.</summary>
    NeedMoreData,
    /// <summary>The bytes can never become a valid item.</summary>
    Invalid,
}
