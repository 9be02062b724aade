using System.IO.Pipelines;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Security;

/// <summary>
/// A <b>simulation stand-in</b> for Noise, named on the wire <c>/potluck/plaintext-sim/1.0.0</c> so no real node can
/// ever agree to it by mistake: each side sends its libp2p public key (protobuf, varint length-prefixed, at most
/// <see cref="MaxKeyBytes"/>), the initiator first, and the channel is the connection itself — no Diffie-Hellman, no
/// signature, no encryption. It proves nothing: a remote can claim any key. It exists so a simulated mesh of thousands of
/// nodes does not spend its memory and CPU on two pipes, two loops and ChaCha20-Poly1305 per connection; a report
/// that used it says so (<c>stand_ins</c>). The node builder refuses it on any transport but the simulated network.
/// <para>
/// Bounds: a key frame over <see cref="MaxKeyBytes"/>, a key that does not decode, or the wrong peer (when the dialer
/// named one) fail the handshake with a <see cref="ProtocolViolationException"/> that closes the connection.
/// </para>
/// </summary>
public sealed class PlaintextSimSecurity : ISecurityProtocol
{
    public const string Id = "/potluck/plaintext-sim/1.0.0";

    /// <summary>The largest key frame accepted (an RSA-4096 key is about 550 bytes; Ed25519 is 36).</summary>
    public const int MaxKeyBytes = 1024;

    /// <summary>What the stand-in is called in reports.</summary>
    public const string StandInName = "plaintext-sim security (public keys exchanged in the clear, no Noise handshake, no encryption)";

    private readonly byte[] _localKey;
    private readonly SharedValues _shared;

    /// <param name="shared">Values shared with the other nodes of this process (the remote's id kept as their instance); null: none.</param>
    public PlaintextSimSecurity(PublicKey local, SharedValues? shared = null)
    {
        ArgumentNullException.ThrowIfNull(local);
        _localKey = local.ToProtobuf();
        _shared = shared ?? SharedValues.None;
    }

    public string ProtocolId => Id;

    public async ValueTask<ISecureChannel> SecureAsync(IDuplexPipe insecure, bool initiator, PeerId? expectedRemote, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(insecure);
        try
        {
            PublicKey remote;
            if (initiator)
            {
                await WriteKeyAsync(insecure.Output, ct);
                remote = await ReadKeyAsync(insecure.Input, ct);
            }
            else
            {
                remote = await ReadKeyAsync(insecure.Input, ct);
                await WriteKeyAsync(insecure.Output, ct);
            }
            remote = _shared.Share(remote); // the key and id as other nodes of this process hold them (a simulation's)
            var peer = _shared.Share(remote.ToPeerId());
            if (expectedRemote is { IsEmpty: false } expected && expected != peer)
            {
                throw new ProtocolViolationException(Id, $"expected peer {expected}, the remote claimed {peer}", ViolationCode.WrongPeer, BlastRadius.Connection);
            }
            return new Channel(insecure, remote, peer);
        }
        catch
        {
            await CloseAsync(insecure);
            throw;
        }
    }

    private async ValueTask WriteKeyAsync(PipeWriter output, CancellationToken ct)
    {
        LengthPrefixed.Write(output, _localKey);
        var flush = await output.FlushAsync(ct);
        if (flush.IsCompleted)
        {
            throw new PeerGoneException("the connection closed during the plaintext-sim handshake");
        }
    }

    private static async ValueTask<PublicKey> ReadKeyAsync(PipeReader input, CancellationToken ct)
    {
        byte[] frame;
        try
        {
            frame = await LengthPrefixed.ReadAsync(input, MaxKeyBytes, Id, ct)
                ?? throw new PeerGoneException("the connection closed during the plaintext-sim handshake");
        }
        catch (ProtocolViolationException e) when (e.Radius != BlastRadius.Connection)
        {
            throw new ProtocolViolationException(Id, e.Reason, e, e.Code, BlastRadius.Connection);
        }
        return PublicKey.TryFromProtobuf(frame, out var key)
            ? key
            : throw new ProtocolViolationException(Id, "the remote's public key does not decode", ViolationCode.Malformed, BlastRadius.Connection);
    }

    private static async ValueTask CloseAsync(IDuplexPipe insecure)
    {
        try
        {
            await insecure.Input.CompleteAsync();
            await insecure.Output.CompleteAsync();
            if (insecure is IAsyncDisposable disposable)
            {
                await disposable.DisposeAsync();
            }
        }
        catch (Exception e) when (Failures.Classify(e).Kind != FailureKind.Internal)
        {
            // Best effort; the handshake's own failure is what the caller sees.
        }
    }

    /// <summary>The connection itself, with the identity the remote claimed.</summary>
    private sealed class Channel(IDuplexPipe transport, PublicKey remote, PeerId peer) : ISecureChannel
    {
        private int _disposed;

        public PipeReader Input => transport.Input;

        public PipeWriter Output => transport.Output;

        public PeerId RemotePeer => peer;

        public PublicKey RemotePublicKey => remote;

        public IReadOnlyList<string> RemoteEarlyMuxers => [];

        public async ValueTask DisposeAsync()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0)
            {
                return;
            }
            if (transport is IAsyncDisposable disposable)
            {
                await disposable.DisposeAsync();
            }
            else
            {
                transport.Input.CancelPendingRead();
                await transport.Output.CompleteAsync();
            }
        }
    }
}
