using System.IO.Pipelines;
using Potluck.Protocol.Identity;

namespace Potluck.Protocol.Security;

/// <summary>An authenticated, encrypted byte stream to a known peer.</summary>
public interface ISecureChannel : IDuplexPipe, IAsyncDisposable
{
    PeerId RemotePeer { get; }

    PublicKey RemotePublicKey { get; }

    /// <summary>Stream muxers the remote offered inside the handshake (Noise extensions), if any.</summary>
    IReadOnlyList<string> RemoteEarlyMuxers { get; }
}

/// <summary>A security handshake negotiated by multistream-select (e.g. <c>/noise</c>).</summary>
public interface ISecurityProtocol
{
    string ProtocolId { get; }

    /// <summary>
    /// Runs the handshake over <paramref name="insecure"/>. When <paramref name="expectedRemote"/> is set,
    /// a remote that proves another identity fails the handshake.
    /// </summary>
    ValueTask<ISecureChannel> SecureAsync(IDuplexPipe insecure, bool initiator, PeerId? expectedRemote, CancellationToken ct);
}
