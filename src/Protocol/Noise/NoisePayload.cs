using System.Text;
using Google.Protobuf;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Noise.Proto;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Noise;

/// <summary>What a verified handshake payload proved about the remote.</summary>
internal sealed record NoiseRemoteIdentity(PublicKey Key, PeerId Peer, IReadOnlyList<string> EarlyMuxers);

/// <summary>
/// The libp2p handshake payload: the identity key, its signature over
/// <c>"noise-libp2p-static-key:" ‖ Noise static public key</c>, and the extensions.
/// </summary>
internal static class NoisePayload
{
    private const string Protocol = NoiseSecurity.ProtocolId;

    public static ReadOnlySpan<byte> SignaturePrefix => "noise-libp2p-static-key:"u8;

    /// <summary>The bytes the identity key signs for <paramref name="staticPublicKey"/>.</summary>
    public static byte[] SignedData(ReadOnlySpan<byte> staticPublicKey)
    {
        var data = new byte[SignaturePrefix.Length + staticPublicKey.Length];
        SignaturePrefix.CopyTo(data);
        staticPublicKey.CopyTo(data.AsSpan(SignaturePrefix.Length));
        return data;
    }

    public static byte[] Encode(PublicKey identity, ReadOnlySpan<byte> signature, IReadOnlyList<string> earlyMuxers)
    {
        var payload = new NoiseHandshakePayload
        {
            IdentityKey = ByteString.CopyFrom(identity.ToProtobuf()),
            IdentitySig = ByteString.CopyFrom(signature),
        };
        if (earlyMuxers.Count > 0)
        {
            payload.Extensions = new NoiseExtensions();
            payload.Extensions.StreamMuxers.AddRange(earlyMuxers);
        }
        return payload.ToByteArray();
    }

    /// <summary>
    /// Parses the remote's payload and checks its signature over <paramref name="remoteStaticKey"/>.
    /// Throws <see cref="ProtocolViolationException"/> on anything malformed, unsigned or over the limits.
    /// </summary>
    public static NoiseRemoteIdentity Verify(ReadOnlySpan<byte> payload, ReadOnlySpan<byte> remoteStaticKey, NoiseOptions options)
    {
        if (payload.Length > NoiseHandshakeState.MaxMessageLength)
        {
            throw new ProtocolViolationException(Protocol, "handshake payload too large", ViolationCode.TooLarge, BlastRadius.Connection);
        }
        NoiseHandshakePayload message;
        try
        {
            message = NoiseHandshakePayload.Parser.ParseFrom(payload);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new ProtocolViolationException(Protocol, "handshake payload is not a valid protobuf", e, ViolationCode.Malformed, BlastRadius.Connection);
        }
        if (message.IdentityKey.IsEmpty || !PublicKey.TryFromProtobuf(message.IdentityKey.Span, out var key))
        {
            throw new ProtocolViolationException(Protocol, "handshake payload has no valid identity key", ViolationCode.Malformed, BlastRadius.Connection);
        }
        if (message.IdentitySig.IsEmpty || !key.Verify(SignedData(remoteStaticKey), message.IdentitySig.Span))
        {
            throw new ProtocolViolationException(Protocol, "identity signature over the Noise static key does not verify", ViolationCode.BadSignature, BlastRadius.Connection);
        }
        IReadOnlyList<string> muxers = [];
        if (message.Extensions is { StreamMuxers.Count: > 0 } extensions)
        {
            if (extensions.StreamMuxers.Count > options.MaxRemoteEarlyMuxers)
            {
                throw new ProtocolViolationException(Protocol, $"{extensions.StreamMuxers.Count} early muxers offered, the limit is {options.MaxRemoteEarlyMuxers}", ViolationCode.TooLarge, BlastRadius.Connection);
            }
            var list = new string[extensions.StreamMuxers.Count];
            for (var i = 0; i < list.Length; i++)
            {
                var name = extensions.StreamMuxers[i];
                if (name.Length == 0 || Encoding.UTF8.GetByteCount(name) > options.MaxEarlyMuxerLength)
                {
                    throw new ProtocolViolationException(Protocol, "early muxer name empty or too long", ViolationCode.TooLarge, BlastRadius.Connection);
                }
                list[i] = name;
            }
            muxers = list;
        }
        return new NoiseRemoteIdentity(key, key.ToPeerId(), muxers);
    }
}
