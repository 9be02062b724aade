using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Host;

/// <summary>Why a dial failed, in words a user can act on.</summary>
public enum DialFailure
{
    Self,
    NoAddresses,
    NoTransport,
    Unreachable,
    Timeout,
    HandshakeFailed,
    WrongPeer,
    TooManyConnections,
    HostStopped,
}

/// <summary>A dial failed; <see cref="Failure"/> says why.</summary>
public sealed class DialException : IOException, IClassifiedFailure
{
    public DialException(DialFailure failure, string message, Multiaddr? address = null, Exception? inner = null)
        : base(message, inner)
    {
        Failure = failure;
        Address = address;
    }

    public DialFailure Failure { get; }

    public Multiaddr? Address { get; }

    /// <summary>A full node is a limit; a stopping host is our own shutdown; everything else is the remote being out of reach.</summary>
    public FailureKind Kind => Failure switch
    {
        DialFailure.TooManyConnections => FailureKind.ResourceLimit,
        DialFailure.HostStopped => FailureKind.Cancelled,
        _ => FailureKind.PeerGone,
    };

    public BlastRadius Radius => BlastRadius.Stream;
}
