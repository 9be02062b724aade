using System.Net.Sockets;
using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.Transport;

/// <summary>Why a transport operation failed, independent of the transport that failed.</summary>
public enum TransportError
{
    /// <summary>Nothing listens at the address (TCP RST, or no in-memory listener).</summary>
    ConnectionRefused,
    /// <summary>No route to the host or network, or a simulated partition.</summary>
    Unreachable,
    /// <summary>The connect timeout elapsed.</summary>
    TimedOut,
    /// <summary>The name in a /dns, /dns4 or /dns6 address did not resolve.</summary>
    ResolutionFailed,
    /// <summary>Another listener holds the address.</summary>
    AddressInUse,
    /// <summary>The address is not local to this machine (or not valid to bind).</summary>
    AddressNotAvailable,
    /// <summary>The transport cannot handle this kind of address.</summary>
    UnsupportedAddress,
    /// <summary>An established connection was reset or broken.</summary>
    ConnectionReset,
    /// <summary>Any other failure; see the inner exception.</summary>
    Other,
}

/// <summary>
/// A dial, listen or established connection failed at the transport level. Derives from
/// <see cref="IOException"/> so stream code that already handles I/O failures handles this too.
/// </summary>
public sealed class TransportException : IOException
{
    public TransportException(Multiaddr address, TransportError error, string message, Exception? inner = null)
        : base(message, inner)
    {
        Address = address;
        Error = error;
    }

    /// <summary>The address that was dialled, bound, or the remote address of the broken connection.</summary>
    public Multiaddr Address { get; }

    public TransportError Error { get; }

    internal static TransportError Classify(SocketError error) => error switch
    {
        SocketError.ConnectionRefused => TransportError.ConnectionRefused,
        SocketError.NetworkUnreachable or SocketError.HostUnreachable or SocketError.NetworkDown or SocketError.HostDown
            => TransportError.Unreachable,
        SocketError.TimedOut => TransportError.TimedOut,
        SocketError.HostNotFound or SocketError.TryAgain or SocketError.NoData or SocketError.NoRecovery
            => TransportError.ResolutionFailed,
        SocketError.AddressAlreadyInUse => TransportError.AddressInUse,
        SocketError.AddressNotAvailable => TransportError.AddressNotAvailable,
        SocketError.AddressFamilyNotSupported or SocketError.ProtocolFamilyNotSupported => TransportError.UnsupportedAddress,
        SocketError.ConnectionReset or SocketError.ConnectionAborted or SocketError.Shutdown or SocketError.NetworkReset
            => TransportError.ConnectionReset,
        _ => TransportError.Other,
    };

    internal static string Describe(TransportError error) => error switch
    {
        TransportError.ConnectionRefused => "connection refused",
        TransportError.Unreachable => "unreachable",
        TransportError.TimedOut => "timed out",
        TransportError.ResolutionFailed => "name did not resolve",
        TransportError.AddressInUse => "address already in use",
        TransportError.AddressNotAvailable => "address not available",
        TransportError.UnsupportedAddress => "unsupported address",
        TransportError.ConnectionReset => "connection reset",
        _ => "transport failure",
    };

    internal static TransportException FromSocket(Multiaddr address, string operation, SocketException e)
    {
        var error = Classify(e.SocketErrorCode);
        return new TransportException(address, error, $"{operation} {address}: {Describe(error)} ({e.SocketErrorCode})", e);
    }
}
