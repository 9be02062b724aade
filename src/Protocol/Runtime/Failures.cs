using System.Net.Sockets;

namespace Potluck.Protocol.Runtime;

/// <summary>Who failed, in the terms a catch site needs to decide what to do and how loudly to log it.</summary>
public enum FailureKind
{
    /// <summary>Our own shutdown, or the caller's cancellation: quiet.</summary>
    Cancelled,

    /// <summary>The remote closed, reset, stopped answering within a deadline, or could not be reached: Debug.</summary>
    PeerGone,

    /// <summary>The remote broke a protocol rule; see <see cref="Failure.Radius"/> for what is torn down: Debug, and the peer's score.</summary>
    ProtocolViolation,

    /// <summary>The remote does not speak the protocol we asked for (multistream-select answered "na"): Debug.</summary>
    Unsupported,

    /// <summary>A limit refused the work (a stream, connection, memory or rate budget): counted, Debug.</summary>
    ResourceLimit,

    /// <summary>Anything else: a bug of ours or a fault of this machine (disk, database). Logged at Error.</summary>
    Internal,
}

/// <summary>How far a failure reaches: what the catch site tears down.</summary>
public enum BlastRadius
{
    /// <summary>Reset this stream (or request); the connection and the peer stay.</summary>
    Stream,

    /// <summary>Close the whole connection (bad framing, a MAC failure, a bad muxer header).</summary>
    Connection,
}

/// <summary>Why a protocol violation was declared, as a stable code for metrics and peer scoring.</summary>
public enum ViolationCode
{
    /// <summary>Bytes that do not decode (bad varint, truncated or malformed message).</summary>
    Malformed,

    /// <summary>A length or count over the limit we allow.</summary>
    TooLarge,

    /// <summary>A message that is well formed but not allowed in the current state.</summary>
    UnexpectedMessage,

    /// <summary>A signature, MAC or identity that does not check out.</summary>
    BadSignature,

    /// <summary>A value that is out of range or contradicts the agreement (an amount over the terms, a wrong id).</summary>
    InvalidValue,

    /// <summary>The remote is a different peer than the one dialed.</summary>
    WrongPeer,

    /// <summary>Any other rule.</summary>
    Other,
}

/// <summary>Implemented by Potluck's own exceptions so the classifier needs no list of types.</summary>
public interface IClassifiedFailure
{
    FailureKind Kind { get; }

    BlastRadius Radius { get; }
}

/// <summary>A classified exception: who failed, how far it reaches, and a message fit for a Debug log line.</summary>
public readonly record struct Failure(FailureKind Kind, BlastRadius Radius, string Reason)
{
    /// <summary>True for what a remote peer did (gone, violated, unsupported, refused by a limit); false for cancellation and our own faults.</summary>
    public bool IsRemote => Kind is FailureKind.PeerGone or FailureKind.ProtocolViolation or FailureKind.Unsupported or FailureKind.ResourceLimit;
}

/// <summary>
/// The one classifier every catch site uses (DESIGN §5): a violation resets the stream or closes the connection,
/// a peer that went away is a Debug line, a limit is counted, cancellation on shutdown is quiet, and anything else is
/// our bug, logged at Error. <see cref="InvalidOperationException"/> is never taken to mean "the peer went away":
/// code that reads from a stream the remote closed gets a <see cref="PeerGoneException"/> or a
/// <see cref="StreamResetException"/>.
/// </summary>
public static class Failures
{
    /// <summary>Classifies <paramref name="e"/>; <paramref name="stopping"/> is the owner's stop token (a cancellation it caused is quiet).</summary>
    public static Failure Classify(Exception e, CancellationToken stopping = default)
    {
        ArgumentNullException.ThrowIfNull(e);
        if (e is AggregateException { InnerExceptions.Count: 1 } single)
        {
            return Classify(single.InnerExceptions[0], stopping);
        }
        return e switch
        {
            IClassifiedFailure c => new Failure(c.Kind, c.Radius, e.Message),
            OperationCanceledException when stopping.IsCancellationRequested => new Failure(FailureKind.Cancelled, BlastRadius.Stream, "stopping"),
            // A cancellation that is not our shutdown is a deadline that passed: the remote did not answer in time.
            OperationCanceledException => new Failure(FailureKind.PeerGone, BlastRadius.Stream, "timed out"),
            // Disposed under our feet: a component we own was closed (shutdown, or a connection torn down).
            ObjectDisposedException => new Failure(FailureKind.Cancelled, BlastRadius.Stream, e.Message),
            IOException or SocketException => new Failure(FailureKind.PeerGone, BlastRadius.Stream, e.Message),
            InvalidDataException or Google.Protobuf.InvalidProtocolBufferException
                => new Failure(FailureKind.ProtocolViolation, BlastRadius.Stream, e.Message),
            _ => new Failure(FailureKind.Internal, BlastRadius.Stream, e.Message),
        };
    }

    /// <summary>Whether <paramref name="e"/> is something a remote peer can cause (as opposed to cancellation or our bug).</summary>
    public static bool IsRemote(Exception e, CancellationToken stopping = default) => Classify(e, stopping).IsRemote;

    /// <summary>Whether <paramref name="e"/> is expected in normal operation (anything but <see cref="FailureKind.Internal"/>).</summary>
    public static bool IsExpected(Exception e, CancellationToken stopping = default) => Classify(e, stopping).Kind != FailureKind.Internal;
}

/// <summary>The remote went away: it closed or reset the stream or connection, or could not be reached.</summary>
public class PeerGoneException : IOException, IClassifiedFailure
{
    public PeerGoneException(string message, Exception? inner = null) : base(message, inner) { }

    public virtual FailureKind Kind => FailureKind.PeerGone;

    public BlastRadius Radius => BlastRadius.Stream;
}

/// <summary>A limit refused the work: which scope (e.g. "yamux streams per connection") and the limit that was reached.</summary>
public class ResourceLimitException : Exception, IClassifiedFailure
{
    public ResourceLimitException(string scope, long limit, string? message = null)
        : base(message ?? $"{scope}: limit of {limit} reached")
    {
        Scope = scope;
        Limit = limit;
    }

    /// <summary>The scope whose limit was reached, e.g. "connections per peer".</summary>
    public string Scope { get; }

    /// <summary>The limit that was reached.</summary>
    public long Limit { get; }

    public FailureKind Kind => FailureKind.ResourceLimit;

    public BlastRadius Radius => BlastRadius.Stream;
}
