using System.Security.Cryptography;
using MessagePack;
using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Credits;

/// <summary>How an attested task ended.</summary>
public enum AttestedOutcome : byte
{
    /// <summary>The module returned or called <c>proc_exit</c>; see <see cref="Attestation.ExitCode"/>.</summary>
    Exited = 0,
    /// <summary>The module trapped.</summary>
    Trapped = 1,
    /// <summary>The fuel budget ran out.</summary>
    OutOfFuel = 2,
    /// <summary>The wall-clock limit was hit.</summary>
    TimedOut = 3,
    /// <summary>The memory limit was hit.</summary>
    OutOfMemory = 4,
    /// <summary>The output exceeded its size limit.</summary>
    OutputTooLarge = 5,
    /// <summary>The runtime refused the module (not WebAssembly, or not a WASI command); nothing ran.</summary>
    InvalidModule = 6,
}

/// <summary>
/// A provider's signed statement of what it ran and what came out: the payload of an envelope signed under
/// <see cref="SignatureDomains.Attestation"/> by the provider. Together with the module and input it is
/// what a fraud proof needs to re-run the task. MessagePack array, integer keys 0–10.
/// </summary>
[MessagePackObject]
public sealed class Attestation
{
    public const int HashLength = 32;
    public const int MaxLeaseIdLength = 64;

    /// <summary>The lease id, 1–64 bytes, as the lease negotiation chose it.</summary>
    [Key(0)]
    public required byte[] LeaseId { get; init; }

    /// <summary>Requester peer id (multihash bytes).</summary>
    [Key(1)]
    public required byte[] Requester { get; init; }

    /// <summary>Provider peer id (multihash bytes); must be the signer.</summary>
    [Key(2)]
    public required byte[] Provider { get; init; }

    /// <summary>SHA-256 of the WASM module bytes.</summary>
    [Key(3)]
    public required byte[] ModuleHash { get; init; }

    /// <summary>SHA-256 of the input bytes.</summary>
    [Key(4)]
    public required byte[] InputHash { get; init; }

    /// <summary>SHA-256 of the output bytes.</summary>
    [Key(5)]
    public required byte[] OutputHash { get; init; }

    [Key(6)]
    public long OutputSize { get; init; }

    [Key(7)]
    public ulong FuelUsed { get; init; }

    [Key(8)]
    public AttestedOutcome Outcome { get; init; }

    /// <summary>The WASI exit code when <see cref="Outcome"/> is <see cref="AttestedOutcome.Exited"/>, else 0.</summary>
    [Key(9)]
    public int ExitCode { get; init; }

    /// <summary>When the provider signed, Unix milliseconds.</summary>
    [Key(10)]
    public long TimestampUnixMs { get; init; }

    internal bool IsWellFormed() =>
        LeaseId is { Length: > 0 and <= MaxLeaseIdLength }
        && Requester is not null && KeyCache.TryPeer(Requester, out _)
        && Provider is not null && KeyCache.TryPeer(Provider, out _)
        && ModuleHash is { Length: HashLength }
        && InputHash is { Length: HashLength }
        && OutputHash is { Length: HashLength }
        && OutputSize >= 0
        && Enum.IsDefined(Outcome);
}

/// <summary>What a requester holds and checks an attestation against.</summary>
public sealed record AttestationExpectation(
    byte[] LeaseId, PeerId Requester, PeerId Provider, byte[] ModuleHash, byte[] InputHash, byte[] OutputHash, long OutputSize)
{
    /// <summary>The expectation for an output the requester received, hashing module, input and output.</summary>
    public static AttestationExpectation For(
        byte[] leaseId, PeerId requester, PeerId provider, ReadOnlySpan<byte> module, ReadOnlySpan<byte> input, ReadOnlySpan<byte> output) =>
        new(leaseId, requester, provider, SHA256.HashData(module), SHA256.HashData(input), SHA256.HashData(output), output.Length);
}

/// <summary>
/// An attestation with its signature: <see cref="EnvelopeBytes"/> are the exact bytes that travel and are
/// stored; <see cref="Attestation"/> is decoded from them. Only obtainable by signing
/// (<see cref="Create"/>) or by a successful check (<see cref="Decode"/>, <see cref="Verify"/>).
/// </summary>
public sealed class SignedAttestation
{
    private SignedEnvelope? _envelope;

    private SignedAttestation(byte[] envelopeBytes, SignedEnvelope? envelope, ReadOnlySpan<byte> payload, Attestation attestation, PublicKey signer)
    {
        EnvelopeBytes = envelopeBytes;
        _envelope = envelope;
        Attestation = attestation;
        Signer = signer;
        Hash = SHA256.HashData(payload);
    }

    public byte[] EnvelopeBytes { get; }

    /// <summary>The envelope's fields, decoded from <see cref="EnvelopeBytes"/> when first asked for (a check reads them in place).</summary>
    public SignedEnvelope Envelope => _envelope ??= SignedEnvelope.TryDeserialize(EnvelopeBytes, out SignedEnvelope? e)
        ? e
        : throw new InvalidOperationException("checked envelope bytes no longer decode");

    public Attestation Attestation { get; }

    public PublicKey Signer { get; }

    /// <summary>SHA-256 of the signed payload bytes: what a <see cref="Receipt"/> refers to.</summary>
    public byte[] Hash { get; }

    /// <summary>Signs <paramref name="attestation"/> as its provider.</summary>
    /// <exception cref="ArgumentException">The attestation is malformed or names another provider than <paramref name="provider"/>.</exception>
    public static SignedAttestation Create(Attestation attestation, PrivateKey provider)
    {
        ArgumentNullException.ThrowIfNull(attestation);
        ArgumentNullException.ThrowIfNull(provider);
        if (!attestation.IsWellFormed())
        {
            throw new ArgumentException("malformed attestation", nameof(attestation));
        }
        if (!provider.PeerId.Bytes.SequenceEqual(attestation.Provider))
        {
            throw new ArgumentException("only the provider named in an attestation may sign it", nameof(provider));
        }
        var payload = MessagePackSerializer.Serialize(attestation, SignedEnvelope.Untrusted);
        var envelope = SignedEnvelope.Seal(provider, SignatureDomains.Attestation, payload);
        return new SignedAttestation(envelope.Encode(), envelope, payload, attestation, provider.PublicKey);
    }

    /// <summary>
    /// Decodes untrusted bytes and checks what anyone can check: size, shape, signature, and that the signer
    /// is the provider the attestation names.
    /// </summary>
    public static Verified<SignedAttestation> Decode(ReadOnlyMemory<byte> envelopeBytes, CreditsOptions options)
    {
        var status = EnvelopeView.TryRead(envelopeBytes, options, out var envelope);
        if (status != EnvelopeStatus.Valid)
        {
            return Verified<SignedAttestation>.Fail(status == EnvelopeStatus.TooLarge ? VerifyStatus.TooLarge : VerifyStatus.Malformed);
        }
        if (!SignedEnvelope.TryDeserialize(envelope.Payload, out Attestation? attestation) || !attestation.IsWellFormed())
        {
            return Verified<SignedAttestation>.Fail(VerifyStatus.Malformed);
        }
        if (envelope.Open(SignatureDomains.Attestation, out var signer) != EnvelopeStatus.Valid)
        {
            return Verified<SignedAttestation>.Fail(VerifyStatus.BadSignature);
        }
        if (!PeerId.FromPublicKey(signer!).Bytes.SequenceEqual(attestation.Provider))
        {
            return Verified<SignedAttestation>.Fail(VerifyStatus.WrongSigner);
        }
        return new(VerifyStatus.Valid, new SignedAttestation(envelopeBytes.ToArray(), null, envelope.Payload.Span, attestation, signer!));
    }

    /// <summary>
    /// The requester's check before it accepts an output: <see cref="Decode"/>, then lease, parties, hashes and
    /// output size against what the requester holds.
    /// </summary>
    public static Verified<SignedAttestation> Verify(ReadOnlyMemory<byte> envelopeBytes, AttestationExpectation expected, CreditsOptions options)
    {
        ArgumentNullException.ThrowIfNull(expected);
        var decoded = Decode(envelopeBytes, options);
        if (!decoded.IsValid)
        {
            return decoded;
        }
        var a = decoded.Value!.Attestation;
        var status =
            !a.LeaseId.AsSpan().SequenceEqual(expected.LeaseId) ? VerifyStatus.LeaseMismatch
            : !expected.Requester.Bytes.SequenceEqual(a.Requester) || !expected.Provider.Bytes.SequenceEqual(a.Provider) ? VerifyStatus.PartyMismatch
            : !a.ModuleHash.AsSpan().SequenceEqual(expected.ModuleHash) ? VerifyStatus.ModuleHashMismatch
            : !a.InputHash.AsSpan().SequenceEqual(expected.InputHash) ? VerifyStatus.InputHashMismatch
            : !a.OutputHash.AsSpan().SequenceEqual(expected.OutputHash) ? VerifyStatus.OutputHashMismatch
            : a.OutputSize != expected.OutputSize ? VerifyStatus.OutputSizeMismatch
            : VerifyStatus.Valid;
        return status == VerifyStatus.Valid ? decoded : Verified<SignedAttestation>.Fail(status);
    }
}
