using System.Buffers;
using System.Text;
using MessagePack;
using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Credits;

/// <summary>
/// Domain-separation prefixes: a signature covers <c>UTF-8(domain) ‖ payload</c>, so a signature made for one
/// message type never verifies as another. Each domain is ASCII, ends with its only ':' and is therefore
/// never a prefix of another domain.
/// </summary>
public static class SignatureDomains
{
    public const string Attestation = "potluck-attestation:";
    public const string Receipt = "potluck-receipt:";
}

/// <summary>What decoding or opening an envelope found.</summary>
public enum EnvelopeStatus
{
    Valid,
    /// <summary>The envelope or its payload is over the size limit; nothing was decoded.</summary>
    TooLarge,
    /// <summary>Not a MessagePack envelope of three byte strings (or trailing bytes follow it).</summary>
    Malformed,
    /// <summary>The signer key does not parse, or the signature does not verify over domain ‖ payload.</summary>
    BadSignature,
}

/// <summary>
/// A signed message as it travels: the payload bytes exactly as signed, the signer's libp2p
/// <c>PublicKey</c> protobuf, and the signature over <c>UTF-8(domain) ‖ payload</c>
/// (see <see cref="SignatureDomains"/>). MessagePack array <c>[bin payload, bin key, bin signature]</c>.
/// The payload is never re-serialised: receivers decode it from these bytes and verify these bytes.
/// Modelled on libp2p's signed envelopes (https://github.com/libp2p/specs/blob/master/RFC/0002-signed-envelopes.md).
/// Deviations: MessagePack instead of protobuf; the signed bytes are <c>domain ‖ payload</c> with a
/// prefix-free ASCII domain instead of varint-length-prefixed domain, type and payload; and the payload type is
/// implied by the domain rather than carried, since every Potluck use knows which type it expects.
/// </summary>
[MessagePackObject]
public sealed class SignedEnvelope
{
    internal static readonly MessagePackSerializerOptions Untrusted =
        MessagePackSerializerOptions.Standard.WithSecurity(MessagePackSecurity.UntrustedData);

    [Key(0)]
    public required byte[] Payload { get; init; }

    /// <summary>The signer's key as a libp2p <c>PublicKey</c> protobuf.</summary>
    [Key(1)]
    public required byte[] PublicKey { get; init; }

    [Key(2)]
    public required byte[] Signature { get; init; }

    /// <summary>Signs <paramref name="payload"/> under <paramref name="domain"/>.</summary>
    public static SignedEnvelope Seal(PrivateKey key, string domain, byte[] payload)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(payload);
        return new SignedEnvelope
        {
            Payload = payload,
            PublicKey = key.PublicKey.ToProtobuf(),
            Signature = SignOver(key, domain, payload),
        };
    }

    public byte[] Encode() => MessagePackSerializer.Serialize(this, Untrusted);

    /// <summary>
    /// Decodes an envelope from untrusted bytes: the size limits are checked first, the whole input must be one
    /// envelope, and every field must be present. Does not check the signature (see <see cref="Open"/>).
    /// </summary>
    public static EnvelopeStatus TryDecode(ReadOnlyMemory<byte> bytes, CreditsOptions options, out SignedEnvelope? envelope)
    {
        ArgumentNullException.ThrowIfNull(options);
        envelope = null;
        if (bytes.Length > options.MaxEnvelopeBytes)
        {
            return EnvelopeStatus.TooLarge;
        }
        if (!TryDeserialize(bytes, out SignedEnvelope? decoded)
            || decoded.Payload is null || decoded.PublicKey is null || decoded.Signature is null)
        {
            return EnvelopeStatus.Malformed;
        }
        if (decoded.Payload.Length > options.MaxPayloadBytes)
        {
            return EnvelopeStatus.TooLarge;
        }
        envelope = decoded;
        return EnvelopeStatus.Valid;
    }

    /// <summary>Checks the signature under <paramref name="domain"/> and returns the signer's key.</summary>
    public EnvelopeStatus Open(string domain, out PublicKey? signer)
    {
        signer = null;
        if (!KeyCache.TryPublicKey(PublicKey, out var key)
            || !VerifyOver(key, domain, Payload, Signature))
        {
            return EnvelopeStatus.BadSignature;
        }
        signer = key;
        return EnvelopeStatus.Valid;
    }

    // Sign and verify over domain ‖ payload assembled in a pooled buffer (public bytes only): no copy of the payload per
    // signature or check.
    private static byte[] SignOver(PrivateKey key, string domain, ReadOnlySpan<byte> payload)
    {
        var input = ArrayPool<byte>.Shared.Rent(Encoding.ASCII.GetByteCount(domain) + payload.Length);
        try
        {
            return key.Sign(input.AsSpan(0, WriteSigningInput(domain, payload, input)));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(input);
        }
    }

    private static bool VerifyOver(PublicKey key, string domain, ReadOnlySpan<byte> payload, ReadOnlySpan<byte> signature)
    {
        var input = ArrayPool<byte>.Shared.Rent(Encoding.ASCII.GetByteCount(domain) + payload.Length);
        try
        {
            return key.Verify(input.AsSpan(0, WriteSigningInput(domain, payload, input)), signature);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(input);
        }
    }

    private static int WriteSigningInput(string domain, ReadOnlySpan<byte> payload, Span<byte> input)
    {
        var prefix = Encoding.ASCII.GetBytes(domain, input);
        payload.CopyTo(input[prefix..]);
        return prefix + payload.Length;
    }

    /// <summary>
    /// MessagePack with <see cref="MessagePackSecurity.UntrustedData"/>; false on any malformed input or when
    /// bytes follow the value.
    /// </summary>
    internal static bool TryDeserialize<T>(ReadOnlyMemory<byte> bytes, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out T? value)
        where T : class
    {
        value = null;
        try
        {
            var decoded = MessagePackSerializer.Deserialize<T>(bytes, Untrusted, out var read);
            if (read != bytes.Length || decoded is null)
            {
                return false;
            }
            value = decoded;
            return true;
        }
        catch (MessagePackSerializationException)
        {
            return false;
        }
    }
}
