using System.Buffers;
using System.Text;
using MessagePack;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

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

    /// <summary>
    /// The signature when the payload is the advertisement's own encoding (<see cref="Envelope"/> rebuilds the exact bytes
    /// from it: 64 B held instead of the whole envelope, ~0.3 KiB); otherwise the whole envelope as it came.
    /// </summary>
    private readonly byte[] _signatureOrEnvelope;

    private readonly bool _wholeEnvelope;

    /// <param name="key">
    /// The signer's key, checked against <paramref name="provider"/>; kept as its protobuf bytes (<see cref="Key"/> decodes
    /// it when asked), or not at all when the provider's id already holds them.
    /// </param>
    internal VerifiedAdvertisement(Advertisement ad, PeerId provider, PublicKey key, byte[] signatureOrEnvelope, bool wholeEnvelope, int envelopeLength)
    {
        Ad = ad;
        Provider = provider;
        _key = AdvertisementCodec.IsIdentityHashed(provider) ? null : key.ToProtobuf();
        _signatureOrEnvelope = signatureOrEnvelope;
        _wholeEnvelope = wholeEnvelope;
        EnvelopeLength = envelopeLength;
    }

    /// <summary>The length of the signed envelope this advertisement came in.</summary>
    public int EnvelopeLength { get; }

    /// <summary>
    /// The signed envelope exactly as it came (what a book sample hands on: the provider's signature covers these bytes,
    /// so a receiver checks them as it would the provider's own).
    /// </summary>
    public byte[] Envelope()
    {
        if (_wholeEnvelope)
        {
            return _signatureOrEnvelope;
        }
        var payload = MessagePackSerializer.Serialize(Ad, MessagePackSerializerOptions.Standard);
        return _key is { } key ? AdEnvelope.Encode(key, payload, _signatureOrEnvelope) : AdEnvelope.Encode(Provider.Bytes[2..], payload, _signatureOrEnvelope);
    }

    /// <summary>An identity multihash (code 0): the id's bytes after the 2-byte prefix are the key's protobuf.</summary>
    public Advertisement Ad { get; }

    public PeerId Provider { get; }

    /// <summary>
    /// The provider's key, decoded when asked (a book holds up to 1,024 advertisements on every node and uses a key only
    /// for the providers it leases from: bytes, ~60 B, instead of a decoded key, ~220 B), through <see cref="Credits.KeyCache"/>:
    /// every lease asks for its provider's key, and the one key object a cache hit returns keeps what it derived before (its
    /// peer id, and the library's key its checks use) where a fresh decode per lease made both again.
    /// </summary>
    public PublicKey Key => Credits.KeyCache.TryPublicKey(_key ?? Provider.Bytes[2..], out var key) ? key : throw new InvalidOperationException("a checked key no longer decodes");

    /// <summary>
    /// The listen addresses, parsed from <see cref="Advertisement.ListenAddresses"/> (checked when opened) each time they are
    /// asked for: a node dials few of the providers it holds advertisements from.
    /// </summary>
    public IReadOnlyList<Multiaddr> Addresses => Ad.ListenAddresses.Select(raw => Multiaddr.TryFromBytes(raw, out var a) ? a : null)
        .OfType<Multiaddr>().ToArray();

    public DateTimeOffset IssuedAt => DateTimeOffset.FromUnixTimeMilliseconds(Ad.IssuedAtUnixMs);

    public DateTimeOffset ExpiresAt => DateTimeOffset.FromUnixTimeMilliseconds(Ad.ExpiresAtUnixMs);

    public bool IsBusy => Ad.AvailableCores <= 0;

    /// <summary>
    /// Advertisements equal by content, so the nodes of one process may keep one instance (<see cref="SharedValues"/>):
    /// the same provider, key bytes, signature (or whole envelope) bytes and every field of the advertisement, byte arrays
    /// by their bytes; equal exactly when the envelopes they came in are. Never by reference or a hash alone.
    /// </summary>
    internal static IEqualityComparer<VerifiedAdvertisement> ByContent { get; } = new ContentComparer();

    private sealed class ContentComparer : IEqualityComparer<VerifiedAdvertisement>
    {
        public bool Equals(VerifiedAdvertisement? x, VerifiedAdvertisement? y)
        {
            if (ReferenceEquals(x, y))
            {
                return true;
            }
            if (x is null || y is null)
            {
                return false;
            }
            return x._wholeEnvelope == y._wholeEnvelope && x.EnvelopeLength == y.EnvelopeLength && x.Provider == y.Provider
                && x._signatureOrEnvelope.AsSpan().SequenceEqual(y._signatureOrEnvelope)
                && (x._key is null ? y._key is null : y._key is not null && x._key.AsSpan().SequenceEqual(y._key))
                && SameContent(x.Ad, y.Ad);
        }

        public int GetHashCode(VerifiedAdvertisement ad)
        {
            var h = new HashCode();
            h.AddBytes(ad._signatureOrEnvelope);
            h.AddBytes(ad.Provider.Bytes);
            h.Add(ad.Ad.Sequence);
            return h.ToHashCode();
        }
    }

    /// <summary>
    /// Every field of <see cref="Advertisement"/> (its 13 keys; <c>AdvertisementSharingTests</c> fails when one is added and
    /// not compared here), byte arrays by content.
    /// </summary>
    internal static bool SameContent(Advertisement a, Advertisement b)
    {
        if (a.Sequence != b.Sequence || a.IssuedAtUnixMs != b.IssuedAtUnixMs || a.ExpiresAtUnixMs != b.ExpiresAtUnixMs
            || a.Cores != b.Cores || a.AvailableCores != b.AvailableCores || a.MemoryBytes != b.MemoryBytes
            || a.SpeedFuelPerSecond != b.SpeedFuelPerSecond || a.PricePerMegaFuel != b.PricePerMegaFuel || a.Policy != b.Policy
            || !string.Equals(a.Runtime, b.Runtime, StringComparison.Ordinal)
            || !string.Equals(a.RuntimeVersion, b.RuntimeVersion, StringComparison.Ordinal)
            || !a.PeerId.AsSpan().SequenceEqual(b.PeerId) || a.ListenAddresses.Length != b.ListenAddresses.Length)
        {
            return false;
        }
        for (var i = 0; i < a.ListenAddresses.Length; i++)
        {
            if (!a.ListenAddresses[i].AsSpan().SequenceEqual(b.ListenAddresses[i]))
            {
                return false;
            }
        }
        return true;
    }
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
        // The payload as our own encoder writes it (every Potluck provider's): keep the signature only, and rebuild the
        // envelope when a sample hands it on; else (another encoder's bytes) keep the envelope itself.
        var canonical = MessagePackSerializer.Serialize(ad, MessagePackSerializerOptions.Standard).AsSpan().SequenceEqual(payload.Span)
            && keyBytes.Span.SequenceEqual(IsIdentityHashed(provider) ? provider.Bytes[2..] : key.ToProtobuf());
        verified = canonical
            ? new VerifiedAdvertisement(ad, provider, key, signature.ToArray(), wholeEnvelope: false, bytes.Length)
            : new VerifiedAdvertisement(ad, provider, key, bytes, wholeEnvelope: true, bytes.Length);
        return AdVerdict.Accepted;
    }

    internal static bool IsIdentityHashed(PeerId provider) => provider.Bytes is [0x00, _, _, ..];

    /// <summary>
    /// The provider and sequence an envelope claims, read without checking its signature (so not to be believed: only to
    /// skip an envelope whose provider's advertisement the book already holds at that sequence or a newer one, which
    /// the book would refuse whatever its signature). False when it does not parse that far.
    /// </summary>
    public static bool TryPeek(ReadOnlySpan<byte> envelope, AdvertisementOptions options, out PeerId provider, out ulong sequence)
    {
        provider = default;
        sequence = 0;
        if (envelope.Length > options.MaxEnvelopeBytes)
        {
            return false;
        }
        var bytes = envelope.ToArray();
        if (!AdEnvelope.TryDecode(bytes, out _, out var payload, out _))
        {
            return false;
        }
        try
        {
            var reader = new MessagePackReader(payload);
            if (reader.NextMessagePackType != MessagePackType.Array || reader.ReadArrayHeader() < 3
                || reader.NextMessagePackType != MessagePackType.Binary || reader.ReadBytes() is not { } id
                || id.Length > 64 || !PeerId.TryFromBytes(id.IsSingleSegment ? id.FirstSpan : id.ToArray(), out provider))
            {
                return false;
            }
            reader.Skip();
            if (reader.NextMessagePackType != MessagePackType.Integer)
            {
                return false;
            }
            sequence = reader.ReadUInt64();
            return true;
        }
        catch (Exception e) when (UntrustedMessagePack.IsMalformed(e))
        {
            return false;
        }
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
