using Potluck.Protocol.Multiformats;

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
public sealed class DialException : IOException
{
    public DialException(DialFailure failure, string message, Multiaddr? address = null, Exception? inner = null)
        : base(message, inner)
    {
        Failure = failure;
        Address = address;
    }

    public DialFailure Failure { get; }

    public Multiaddr? Address { get; }
}
