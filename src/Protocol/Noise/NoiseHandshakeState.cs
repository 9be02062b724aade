using System.Security.Cryptography;

namespace Potluck.Protocol.Noise;

/// <summary>
/// The Noise <c>HandshakeState</c> for exactly one pattern, <c>Noise_XX_25519_ChaChaPoly_SHA256</c>:
/// <code>
///   -> e
///   &lt;- e, ee, s, es
///   -> s, se
/// </code>
/// A pure state machine: messages in, messages out, no I/O. Malformed messages throw
/// <see cref="ProtocolViolationException"/> and leave the state unusable.
/// </summary>
internal sealed class NoiseHandshakeState : IDisposable
{
    public const int DhLength = X25519KeyPair.Length;
    public const int TagLength = NoiseCipherState.TagLength;

    /// <summary>The largest Noise message (handshake or transport) on the libp2p wire.</summary>
    public const int MaxMessageLength = 65535;

    private const string Protocol = NoiseSecurity.ProtocolId;

    private readonly bool _initiator;
    private readonly X25519KeyPair _static;
    private readonly NoiseSymmetricState _symmetric;
    private readonly byte[] _remoteEphemeral = new byte[DhLength];
    private readonly byte[] _remoteStatic = new byte[DhLength];
    private X25519KeyPair? _ephemeral;
    private int _index;
    private bool _failed;

    /// <param name="staticKey">Our static key pair; not owned (it may be shared by many handshakes).</param>
    /// <param name="ephemeral">A fixed ephemeral key for test vectors; owned. Null: a fresh random one.</param>
    public NoiseHandshakeState(bool initiator, X25519KeyPair staticKey, ReadOnlySpan<byte> prologue,
                               X25519KeyPair? ephemeral = null)
    {
        _initiator = initiator;
        _static = staticKey;
        _ephemeral = ephemeral;
        _symmetric = new NoiseSymmetricState("Noise_XX_25519_ChaChaPoly_SHA256"u8);
        _symmetric.MixHash(prologue);
    }

    public bool IsInitiator => _initiator;

    /// <summary>Index of the next handshake message (0, 1, 2); 3 once the handshake is complete.</summary>
    public int MessageIndex => _index;

    public bool IsComplete => _index == 3;

    /// <summary>True when the next message is ours to write.</summary>
    public bool IsWriteTurn => !IsComplete && (_index == 1) != _initiator;

    public ReadOnlySpan<byte> HandshakeHash => _symmetric.HandshakeHash;

    /// <summary>The remote's static key; valid once it has been received.</summary>
    public ReadOnlySpan<byte> RemoteStaticKey => _remoteStatic;

    public ReadOnlySpan<byte> LocalStaticKey => _static.PublicKey;

    /// <summary>Length of the message <see cref="WriteMessage"/> will produce for a payload of this size.</summary>
    public int MessageLength(int payloadLength) => _index switch
    {
        0 => DhLength + payloadLength,
        1 => DhLength + DhLength + TagLength + payloadLength + TagLength,
        _ => DhLength + TagLength + payloadLength + TagLength,
    };

    /// <summary>Smallest valid message at the current index (all tokens, empty payload).</summary>
    public int MinimumMessageLength => MessageLength(0);

    /// <summary>Writes the next handshake message; returns its length.</summary>
    public int WriteMessage(ReadOnlySpan<byte> payload, Span<byte> message)
    {
        if (_failed || !IsWriteTurn)
        {
            throw new InvalidOperationException("not this side's turn to write a handshake message");
        }
        var length = MessageLength(payload.Length);
        if (length > MaxMessageLength || message.Length < length)
        {
            throw new ArgumentException("payload too large for a Noise message", nameof(payload));
        }
        var pos = 0;
        try
        {
            switch (_index)
            {
                case 0: // -> e
                    pos += WriteEphemeral(message);
                    break;
                case 1: // <- e, ee, s, es
                    pos += WriteEphemeral(message);
                    MixDh(_ephemeral!, _remoteEphemeral);
                    pos += _symmetric.EncryptAndHash(_static.PublicKey, message[pos..]);
                    MixDh(_static, _remoteEphemeral);
                    break;
                default: // -> s, se
                    pos += _symmetric.EncryptAndHash(_static.PublicKey, message[pos..]);
                    MixDh(_static, _remoteEphemeral);
                    break;
            }
            pos += _symmetric.EncryptAndHash(payload, message[pos..]);
        }
        catch
        {
            _failed = true;
            throw;
        }
        _index++;
        if (IsComplete)
        {
            DropEphemeral();
        }
        return pos;
    }

    /// <summary>
    /// Reads the remote's next handshake message; the decrypted payload goes to <paramref name="payload"/>
    /// (at least <c>message.Length</c> bytes). Returns the payload length.
    /// </summary>
    public int ReadMessage(ReadOnlySpan<byte> message, Span<byte> payload)
    {
        if (_failed || IsWriteTurn || IsComplete)
        {
            throw new InvalidOperationException("not this side's turn to read a handshake message");
        }
        if (message.Length > MaxMessageLength || message.Length < MinimumMessageLength)
        {
            _failed = true;
            throw new ProtocolViolationException(Protocol, $"handshake message {_index + 1} has {message.Length} bytes, the minimum is {MinimumMessageLength}");
        }
        var pos = 0;
        try
        {
            switch (_index)
            {
                case 0: // -> e
                    pos += ReadEphemeral(message);
                    break;
                case 1: // <- e, ee, s, es
                    pos += ReadEphemeral(message);
                    MixDh(_ephemeral!, _remoteEphemeral);
                    pos += ReadStatic(message[pos..]);
                    MixDh(_ephemeral!, _remoteStatic);
                    break;
                default: // -> s, se
                    pos += ReadStatic(message[pos..]);
                    MixDh(_ephemeral!, _remoteStatic);
                    break;
            }
            if (!_symmetric.TryDecryptAndHash(message[pos..], payload, out var written))
            {
                throw new ProtocolViolationException(Protocol, $"handshake message {_index + 1}: payload failed authentication");
            }
            _index++;
            if (IsComplete)
            {
                DropEphemeral();
            }
            return written;
        }
        catch
        {
            _failed = true;
            throw;
        }
    }

    /// <summary>The transport ciphers once the handshake is complete.</summary>
    public (NoiseCipherState Send, NoiseCipherState Receive) Split()
    {
        if (!IsComplete || _failed)
        {
            throw new InvalidOperationException("the handshake is not complete");
        }
        var (first, second) = _symmetric.Split();
        return _initiator ? (first, second) : (second, first);
    }

    private int WriteEphemeral(Span<byte> message)
    {
        _ephemeral ??= X25519KeyPair.Generate();
        _ephemeral.PublicKey.CopyTo(message);
        _symmetric.MixHash(_ephemeral.PublicKey);
        return DhLength;
    }

    private int ReadEphemeral(ReadOnlySpan<byte> message)
    {
        message[..DhLength].CopyTo(_remoteEphemeral);
        _symmetric.MixHash(_remoteEphemeral);
        return DhLength;
    }

    private int ReadStatic(ReadOnlySpan<byte> message)
    {
        const int length = DhLength + TagLength;
        if (!_symmetric.TryDecryptAndHash(message[..length], _remoteStatic, out _))
        {
            throw new ProtocolViolationException(Protocol, $"handshake message {_index + 1}: static key failed authentication");
        }
        return length;
    }

    private void MixDh(X25519KeyPair local, ReadOnlySpan<byte> remote)
    {
        Span<byte> shared = stackalloc byte[DhLength];
        if (!local.TryAgree(remote, shared))
        {
            throw new ProtocolViolationException(Protocol, $"handshake message {_index + 1}: low-order X25519 key");
        }
        _symmetric.MixKey(shared);
        CryptographicOperations.ZeroMemory(shared);
    }

    private void DropEphemeral()
    {
        _ephemeral?.Dispose();
        _ephemeral = null;
    }

    public void Dispose()
    {
        DropEphemeral();
        _symmetric.Dispose();
    }
}
