using System.Text;
using MessagePack;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;

namespace Potluck.Scheduler.Advertising;

/// <summary>Why an advertisement was accepted or turned away.</summary>
public enum AdVerdict
{
    Accepted,
    /// <summary>The envelope is over <see cref="AdvertisementOptions.MaxEnvelopeBytes"/>.</summary>
    TooLarge,
    /// <summary>Not a well-formed envelope or advertisement, or a field out of bounds.</summary>
    Malformed,
    /// <summary>The signature does not verify against the enclosed key.</summary>
    BadSignature,
    /// <summary>The advertised peer id is not the signer's.</summary>
    PeerMismatch,
    /// <summary>Already expired (or issued further in the future than the clock skew allows).</summary>
    Expired,
    /// <summary>Claims to live longer than <see cref="AdvertisementOptions.MaxLifetime"/>.</summary>
    LifetimeTooLong,
    /// <summary>A replay: the book holds this provider's advertisement with the same or a higher sequence.</summary>
    OldSequence,
    /// <summary>The book is full of advertisements that live longer than this one.</summary>
    BookFull,
}

/// <summary>An advertisement whose signature, signer and fields have been checked.</summary>
public sealed class VerifiedAdvertisement
{
    /// <summary>The key's protobuf bytes; null when the provider's id is its key, identity-hashed (every Ed25519 key).</summary>
    private readonly byte[]? _key;

    /// <param name="key">
    /// The signer's key, checked against <paramref name="provider"/>; kept as its protobuf bytes (<see cref="Key"/> decodes
    /// it when asked), or not at all when the provider's id already holds them.
    /// </param>
    internal VerifiedAdvertisement(Advertisement ad, PeerId provider, PublicKey key)
    {
        Ad = ad;
        Provider = provider;
        _key = IsIdentityHashed(provider) ? null : key.ToProtobuf();
    }

    /// <summary>An identity multihash (code 0): the id's bytes after the 2-byte prefix are the key's protobuf.</summary>
    private static bool IsIdentityHashed(PeerId provider) => provider.Bytes is [0x00, _, _, ..];

    public Advertisement Ad { get; }

    public PeerId Provider { get; }

    /// <summary>
    /// The provider's key, decoded when asked (a book holds up to 1,024 advertisements on every node and uses a key only
    /// for the providers it leases from: bytes, ~60 B, instead of a decoded key, ~220 B).
    /// </summary>
    public PublicKey Key => PublicKey.TryFromProtobuf(_key ?? Provider.Bytes[2..], out var key) ? key : throw new InvalidOperationException("a checked key no longer decodes");

    /// <summary>
    /// The listen addresses, parsed from <see cref="Advertisement.ListenAddresses"/> (checked when opened) each time they are
    /// asked for: a node dials few of the providers it holds advertisements from.
    /// </summary>
    public IReadOnlyList<Multiaddr> Addresses => Ad.ListenAddresses.Select(raw => Multiaddr.TryFromBytes(raw, out var a) ? a : null)
        .OfType<Multiaddr>().ToArray();

    public DateTimeOffset IssuedAt => DateTimeOffset.FromUnixTimeMilliseconds(Ad.IssuedAtUnixMs);

    public DateTimeOffset ExpiresAt => DateTimeOffset.FromUnixTimeMilliseconds(Ad.ExpiresAtUnixMs);

    public bool IsBusy => Ad.AvailableCores <= 0;
}

/// <summary>
/// Signs and opens advertisements. The envelope is a MessagePack array
/// [public key (libp2p protobuf), payload (the advertisement's exact bytes), signature], and the signature covers
/// <see cref="AdvertisementProtocol.SignatureDomain"/> followed by the payload. Opening checks the size first,
/// then the envelope, the signature, the signer and the fields; it knows nothing of time or sequences, which
/// <see cref="AdvertisementBook"/> checks.
/// </summary>
/// <remarks>A minimal envelope local to advertisements, to be unified with the ledger's SignedEnvelope.</remarks>
public static class AdvertisementCodec
{
    private static readonly byte[] Domain = Encoding.UTF8.GetBytes(AdvertisementProtocol.SignatureDomain);

    internal static readonly MessagePackSerializerOptions Untrusted =
        MessagePackSerializerOptions.Standard.WithSecurity(MessagePackSecurity.UntrustedData);

    /// <summary>Serializes <paramref name="ad"/> and signs those exact bytes.</summary>
    public static byte[] Sign(Advertisement ad, PrivateKey key)
    {
        var payload = MessagePackSerializer.Serialize(ad, MessagePackSerializerOptions.Standard);
        var signature = key.Sign(SignedBytes(payload));
        return AdEnvelope.Encode(key.PublicKey.ToProtobuf(), payload, signature);
    }

    /// <summary>Opens an envelope; on <see cref="AdVerdict.Accepted"/>, <paramref name="verified"/> is set.</summary>
    public static AdVerdict TryOpen(ReadOnlySpan<byte> envelope, AdvertisementOptions options, out VerifiedAdvertisement? verified)
    {
        verified = null;
        if (envelope.Length > options.MaxEnvelopeBytes)
        {
            return AdVerdict.TooLarge;
        }
        var bytes = envelope.ToArray();
        if (!AdEnvelope.TryDecode(bytes, out var keyBytes, out var payload, out var signature))
        {
            return AdVerdict.Malformed;
        }
        if (!PublicKey.TryFromProtobuf(keyBytes.Span, out var key))
        {
            return AdVerdict.Malformed;
        }
        if (!key.Verify(SignedBytes(payload.Span), signature.Span))
        {
            return AdVerdict.BadSignature;
        }
        Advertisement ad;
        try
        {
            ad = MessagePackSerializer.Deserialize<Advertisement>(payload, Untrusted);
        }
        catch (MessagePackSerializationException)
        {
            return AdVerdict.Malformed;
        }
        if (ad is null || !TryValidate(ad, options, out var provider))
        {
            return AdVerdict.Malformed;
        }
        if (!provider.Matches(key))
        {
            return AdVerdict.PeerMismatch;
        }
        // Every provider of a release names the same runtime and version: one string each for every book.
        var (runtime, version) = (RuntimeNames.Intern(ad.Runtime), RuntimeNames.Intern(ad.RuntimeVersion));
        if (!ReferenceEquals(runtime, ad.Runtime) || !ReferenceEquals(version, ad.RuntimeVersion))
        {
            ad = ad with { Runtime = runtime, RuntimeVersion = version };
        }
        verified = new VerifiedAdvertisement(ad, provider, key);
        return AdVerdict.Accepted;
    }

    /// <summary>
    /// Runtime names and versions that advertisements share, process-wide (immutable strings; a book holds up to
    /// <see cref="AdvertisementOptions.MaxProviders"/> ads, each had its own two copies); beyond this many distinct
    /// strings an ad keeps its own, so a flood of made-up names costs what it did before.
    /// </summary>
    private static readonly Potluck.Protocol.Runtime.StringInterner RuntimeNames = new(64);

    /// <summary>Distinct runtime strings shared now (tests).</summary>
    internal static int SharedRuntimeNames => RuntimeNames.Count;

    private static bool TryValidate(Advertisement ad, AdvertisementOptions options, out PeerId provider)
    {
        provider = default;
        if (ad.PeerId is null || !PeerId.TryFromBytes(ad.PeerId, out provider))
        {
            return false;
        }
        if (ad.ListenAddresses is null || ad.ListenAddresses.Length > options.MaxListenAddresses)
        {
            return false;
        }
        foreach (var raw in ad.ListenAddresses)
        {
            if (raw is null || raw.Length > Multiaddr.MaxBytes || !Multiaddr.TryFromBytes(raw, out _))
            {
                return false;
            }
        }
        return ad.Runtime is not null && ad.Runtime.Length <= options.MaxRuntimeLength
            && ad.RuntimeVersion is not null && ad.RuntimeVersion.Length <= options.MaxRuntimeLength
            && ad.Cores > 0 && ad.Cores <= options.MaxCores
            && ad.AvailableCores >= 0 && ad.AvailableCores <= ad.Cores
            && ad.MemoryBytes >= 0 && ad.SpeedFuelPerSecond >= 0 && ad.PricePerMegaFuel >= 0
            && ad.IssuedAtUnixMs >= 0 && ad.ExpiresAtUnixMs > ad.IssuedAtUnixMs
            && ad.ExpiresAtUnixMs <= DateTimeOffset.MaxValue.ToUnixTimeMilliseconds();
    }

    private static byte[] SignedBytes(ReadOnlySpan<byte> payload)
    {
        var signed = new byte[Domain.Length + payload.Length];
        Domain.CopyTo(signed, 0);
        payload.CopyTo(signed.AsSpan(Domain.Length));
        return signed;
    }
}

/// <summary>The three-field signed envelope, written and read by hand so no resolver is involved.</summary>
internal static class AdEnvelope
{
    public static byte[] Encode(ReadOnlySpan<byte> key, ReadOnlySpan<byte> payload, ReadOnlySpan<byte> signature)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(key.Length + payload.Length + signature.Length + 16);
        var writer = new MessagePackWriter(buffer);
        writer.WriteArrayHeader(3);
        writer.Write(key);
        writer.Write(payload);
        writer.Write(signature);
        writer.Flush();
        return buffer.WrittenSpan.ToArray();
    }

    public static bool TryDecode(ReadOnlyMemory<byte> bytes, out ReadOnlyMemory<byte> key, out ReadOnlyMemory<byte> payload, out ReadOnlyMemory<byte> signature)
    {
        key = payload = signature = default;
        try
        {
            var reader = new MessagePackReader(bytes);
            if (reader.NextMessagePackType != MessagePackType.Array || reader.ReadArrayHeader() != 3)
            {
                return false;
            }
            if (!TryReadBin(ref reader, bytes, out key) || !TryReadBin(ref reader, bytes, out payload) || !TryReadBin(ref reader, bytes, out signature))
            {
                return false;
            }
            return reader.End;
        }
        catch (Exception e) when (UntrustedMessagePack.IsMalformed(e))
        {
            return false;
        }
    }

    private static bool TryReadBin(ref MessagePackReader reader, ReadOnlyMemory<byte> whole, out ReadOnlyMemory<byte> value)
    {
        value = default;
        if (reader.NextMessagePackType != MessagePackType.Binary)
        {
            return false;
        }
        var seq = reader.ReadBytes();
        if (seq is null)
        {
            return false;
        }
        var start = (int)reader.Consumed - (int)seq.Value.Length;
        value = whole.Slice(start, (int)seq.Value.Length);
        return true;
    }
}
