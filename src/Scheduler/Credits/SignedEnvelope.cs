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
        envelope = null;
        var status = EnvelopeView.TryRead(bytes, options, out var view);
        if (status == EnvelopeStatus.Valid)
        {
            envelope = new SignedEnvelope { Payload = view.Payload.ToArray(), PublicKey = view.PublicKey.ToArray(), Signature = view.Signature.ToArray() };
        }
        return status;
    }

    /// <summary>Checks the signature under <paramref name="domain"/> and returns the signer's key.</summary>
    public EnvelopeStatus Open(string domain, out PublicKey? signer) => Open(domain, Payload, PublicKey, Signature, out signer);

    /// <summary>Checks a signature under <paramref name="domain"/> over fields given as spans; the signer's key when it verifies.</summary>
    internal static EnvelopeStatus Open(string domain, ReadOnlySpan<byte> payload, ReadOnlySpan<byte> publicKey, ReadOnlySpan<byte> signature, out PublicKey? signer)
    {
        signer = null;
        if (!KeyCache.TryPublicKey(publicKey, out var key) || !VerifyOver(key, domain, payload, signature))
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

/// <summary>
/// A signed envelope read in place: its three fields are slices of the bytes it was read from, not copies (MessagePack's
/// formatter copies each into an array of its own, about a third of a kilobyte per envelope, and an envelope is read
/// several times per lease). The same checks in the same order as <see cref="SignedEnvelope.TryDecode"/>, which is built on
/// it: the envelope's size before any byte is read, one MessagePack array of three byte strings and nothing after it, then
/// the payload's size. Valid only while those bytes are unchanged: decoders copy what they keep.
/// </summary>
internal readonly struct EnvelopeView
{
    private EnvelopeView(ReadOnlyMemory<byte> payload, ReadOnlyMemory<byte> publicKey, ReadOnlyMemory<byte> signature)
    {
        Payload = payload;
        PublicKey = publicKey;
        Signature = signature;
    }

    /// <summary>The payload bytes exactly as signed.</summary>
    public ReadOnlyMemory<byte> Payload { get; }

    /// <summary>The signer's key as a libp2p <c>PublicKey</c> protobuf.</summary>
    public ReadOnlyMemory<byte> PublicKey { get; }

    public ReadOnlyMemory<byte> Signature { get; }

    /// <summary>Checks the signature under <paramref name="domain"/> and returns the signer's key.</summary>
    public EnvelopeStatus Open(string domain, out PublicKey? signer) =>
        SignedEnvelope.Open(domain, Payload.Span, PublicKey.Span, Signature.Span, out signer);

    /// <summary>Reads an envelope from untrusted bytes (see <see cref="SignedEnvelope.TryDecode"/>); nothing is copied.</summary>
    public static EnvelopeStatus TryRead(ReadOnlyMemory<byte> bytes, CreditsOptions options, out EnvelopeView view)
    {
        ArgumentNullException.ThrowIfNull(options);
        view = default;
        if (bytes.Length > options.MaxEnvelopeBytes)
        {
            return EnvelopeStatus.TooLarge;
        }
        if (!TryReadUnbounded(bytes, out view))
        {
            return EnvelopeStatus.Malformed;
        }
        if (view.Payload.Length > options.MaxPayloadBytes)
        {
            view = default;
            return EnvelopeStatus.TooLarge;
        }
        return EnvelopeStatus.Valid;
    }

    /// <summary>
    /// Reads an envelope without size limits (bytes this node stored or checked already); false when malformed. What
    /// MessagePack's formatter for <see cref="SignedEnvelope"/> accepts, read with the same reader calls (an array header,
    /// then each field as <c>ReadBytes</c>: bin, nil for a missing field): an array of exactly three fields is read in place;
    /// a longer one (the formatter skips the extra fields) goes through the formatter itself, so the same inputs are
    /// accepted and refused as before.
    /// </summary>
    public static bool TryReadUnbounded(ReadOnlyMemory<byte> bytes, out EnvelopeView view)
    {
        view = default;
        try
        {
            var reader = new MessagePackReader(bytes);
            if (reader.TryReadNil())
            {
                return false;
            }
            var count = reader.ReadArrayHeader();
            if (count != 3)
            {
                if (count < 3 || !SignedEnvelope.TryDeserialize(bytes, out SignedEnvelope? decoded)
                    || decoded.Payload is null || decoded.PublicKey is null || decoded.Signature is null)
                {
                    return false;
                }
                view = new(decoded.Payload, decoded.PublicKey, decoded.Signature);
                return true;
            }
            if (!TryField(bytes, ref reader, out var payload) || !TryField(bytes, ref reader, out var key) || !TryField(bytes, ref reader, out var signature)
                || reader.Consumed != bytes.Length)
            {
                return false;
            }
            view = new(payload, key, signature);
            return true;
        }
        catch (Exception)
        {
            // The reader throws several types for malformed input (a bad code, too few bytes, a declared length past the
            // end); MessagePackSerializer wrapped every one of them as malformed, and so does this. It reads a bounded
            // buffer in place and allocates nothing from a declared length.
            return false;
        }
    }

    /// <summary>One field: a byte string read in place (its offset in <paramref name="bytes"/> is where the reader was after its header).</summary>
    private static bool TryField(ReadOnlyMemory<byte> bytes, ref MessagePackReader reader, out ReadOnlyMemory<byte> field)
    {
        field = default;
        if (reader.ReadBytes() is not { } sequence)
        {
            return false; // nil: the formatter leaves the field null, which is malformed
        }
        var end = (int)reader.Consumed;
        field = bytes.Slice(end - (int)sequence.Length, (int)sequence.Length);
        return true;
    }
}
