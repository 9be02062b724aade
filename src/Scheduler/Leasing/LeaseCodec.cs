using System.Buffers;
using MessagePack;
using Potluck.Protocol;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Multiformats;

namespace Potluck.Scheduler.Leasing;

/// <summary>Protocol id of the lease stream protocol.</summary>
public static class LeaseProtocol
{
    public const string Id = "/potluck/lease/1.0.0";

    /// <summary>
    /// The same protocol, plus <see cref="LeaseReceipt"/> / <see cref="LeaseReceiptAck"/>: a requester whose lease
    /// stream speaks it delivers receipts on that stream instead of opening a receipt stream for each.
    /// </summary>
    public const string IdWithReceipts = "/potluck/lease/1.1.0";

    /// <summary>Length of a SHA-256 content address.</summary>
    public const int HashLength = 32;
}

/// <summary>
/// Frames lease messages: an unsigned-varint length, then the MessagePack union. The decoder checks the length
/// against <see cref="LeaseOptions.MaxFrameBytes"/> before allocating, deserialises with
/// <see cref="MessagePackSecurity.UntrustedData"/>, and validates every field bound; anything else is
/// <see cref="DecodeStatus.Invalid"/>.
/// </summary>
public static class LeaseCodec
{
    private static readonly MessagePackSerializerOptions Untrusted =
        MessagePackSerializerOptions.Standard.WithSecurity(MessagePackSecurity.UntrustedData);

    public static byte[] Serialize(LeaseMessage message) =>
        MessagePackSerializer.Serialize(message, MessagePackSerializerOptions.Standard);

    /// <summary>Writes one frame (length prefix and message).</summary>
    public static void WriteFrame(IBufferWriter<byte> writer, LeaseMessage message)
    {
        var body = Serialize(message);
        Varint.Write(writer, (ulong)body.Length);
        writer.Write(body);
    }

    public static byte[] EncodeFrame(LeaseMessage message)
    {
        var buffer = new ArrayBufferWriter<byte>();
        WriteFrame(buffer, message);
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>Decodes one frame from the front of <paramref name="buffer"/>, slicing past it on <see cref="DecodeStatus.Done"/>.</summary>
    public static DecodeStatus TryReadFrame(ref ReadOnlySequence<byte> buffer, LeaseOptions options, out LeaseMessage? message)
    {
        message = null;
        var rest = buffer;
        var status = LengthPrefixed.TryRead(ref rest, options.MaxFrameBytes, out var body);
        if (status != DecodeStatus.Done)
        {
            return status;
        }
        status = TryDeserialize(body, options, out message);
        if (status == DecodeStatus.Done)
        {
            buffer = rest;
        }
        return status;
    }

    /// <summary>Decodes one whole message body: <see cref="DecodeStatus.Done"/> or <see cref="DecodeStatus.Invalid"/>.</summary>
    public static DecodeStatus TryDeserialize(ReadOnlyMemory<byte> body, LeaseOptions options, out LeaseMessage? message)
    {
        message = null;
        if (body.Length > options.MaxFrameBytes)
        {
            return DecodeStatus.Invalid;
        }
        LeaseMessage? decoded;
        try
        {
            decoded = MessagePackSerializer.Deserialize<LeaseMessage>(body, Untrusted, out var read);
            if (read != body.Length)
            {
                return DecodeStatus.Invalid;
            }
        }
        catch (MessagePackSerializationException)
        {
            return DecodeStatus.Invalid;
        }
        if (decoded is null || !IsValid(decoded, options))
        {
            return DecodeStatus.Invalid;
        }
        message = decoded;
        return DecodeStatus.Done;
    }

    /// <summary>Decodes terms bytes from an offer, bounded and validated.</summary>
    public static bool TryDecodeTerms(ReadOnlyMemory<byte> bytes, LeaseOptions options, out LeaseTerms terms)
    {
        terms = null!;
        if (bytes.Length > options.MaxTermsBytes)
        {
            return false;
        }
        try
        {
            var decoded = MessagePackSerializer.Deserialize<LeaseTerms>(bytes, Untrusted, out var read);
            if (decoded is null || read != bytes.Length || !IsHash(decoded.ModuleHash) || !IsHash(decoded.InputHash)
                || decoded.Provider is null || decoded.Requester is null || decoded.RuntimeVersion is null
                || decoded.RuntimeVersion.Length > options.MaxReasonLength || !IsCommitment(decoded.AuditCommitment)
                || decoded.AuditRatePpm is < 0 or > Verification.LeaseAudit.AlwaysPpm)
            {
                return false;
            }
            terms = decoded;
            return true;
        }
        catch (MessagePackSerializationException)
        {
            return false;
        }
    }

    /// <summary>Decodes <see cref="SignedLeaseTerms"/> bytes (as an auditor holds them) and the terms inside, bounded.</summary>
    public static bool TryDecodeSignedTerms(ReadOnlyMemory<byte> bytes, LeaseOptions options, out SignedLeaseTerms signed, out LeaseTerms terms)
    {
        signed = null!;
        terms = null!;
        if (bytes.Length > options.MaxTermsBytes + 2 * options.MaxSignatureBytes + 16)
        {
            return false;
        }
        try
        {
            var decoded = MessagePackSerializer.Deserialize<SignedLeaseTerms>(bytes, Untrusted, out var read);
            if (decoded is null || read != bytes.Length || decoded.Terms is null || decoded.ProviderSignature is null
                || decoded.RequesterSignature is null || !TryDecodeTerms(decoded.Terms, options, out terms))
            {
                return false;
            }
            signed = decoded;
            return true;
        }
        catch (MessagePackSerializationException)
        {
            return false;
        }
    }

    /// <summary>The exact bytes of signed terms, as an auditor is handed them.</summary>
    public static byte[] SerializeSignedTerms(SignedLeaseTerms signed) =>
        MessagePackSerializer.Serialize(signed, MessagePackSerializerOptions.Standard);

    internal static bool IsCommitment(byte[]? commitment) => commitment is { Length: 0 or Verification.LeaseAudit.CommitmentLength };

    internal static byte[] SerializeTerms(LeaseTerms terms) =>
        MessagePackSerializer.Serialize(terms, MessagePackSerializerOptions.Standard);

    internal static bool IsHash(byte[]? hash) => hash is { Length: LeaseProtocol.HashLength };

    private static bool IsValid(LeaseMessage message, LeaseOptions o) => message switch
    {
        LeaseRequest r => IsHash(r.ModuleHash) && IsHash(r.InputHash)
            && r.ModuleSize > 0 && r.ModuleSize <= o.MaxModuleBytes && r.InputSize >= 0 && r.InputSize <= o.MaxInputBytes
            && r.FuelLimit > 0 && r.MemoryLimitBytes > 0 && r.DeadlineUnixMs > 0 && r.MaxPricePerMegaFuel >= 0
            && IsCommitment(r.AuditCommitment) && r.AuditRatePpm is >= 0 and <= Verification.LeaseAudit.AlwaysPpm,
        LeaseOffer f => f.Terms is not null && f.Terms.Length <= o.MaxTermsBytes
            && f.ProviderSignature is not null && f.ProviderSignature.Length <= o.MaxSignatureBytes,
        LeaseReject j => Enum.IsDefined(j.Reason) && j.Detail is not null && j.Detail.Length <= o.MaxReasonLength
            && j.LeaseLimit is null or >= 0,
        LeaseAccept a => a.RequesterSignature is not null && a.RequesterSignature.Length <= o.MaxSignatureBytes,
        LeaseData d => Enum.IsDefined(d.Kind) && d.Offset >= 0 && d.Bytes is not null && d.Bytes.Length > 0
            && d.Bytes.Length <= o.MaxChunkBytes,
        LeaseHeartbeat h => h.FuelUsed >= 0,
        LeaseCancel c => c.Reason is not null && c.Reason.Length <= o.MaxReasonLength,
        LeaseReceipt r => r.Envelope is not null && r.Envelope.Length > 0 && r.Envelope.Length <= o.MaxReceiptBytes,
        LeaseReceiptAck a => a.Ack is not null && a.Ack.Length <= o.MaxReceiptAckBytes,
        LeaseDebitNote n => n.Note is not null && n.Note.Length > 0 && n.Note.Length <= o.MaxReceiptBytes,
        LeaseResult s => Enum.IsDefined(s.Status) && s.FuelUsed >= 0 && IsHash(s.OutputHash) && s.OutputSize >= 0
            && (s.Output is null || (s.Output.Length <= o.MaxInlineOutputBytes && s.Output.Length == s.OutputSize))
            && s.Attestation is not null && s.Attestation.Length <= o.MaxAttestationBytes
            && (s.Stderr is null || s.Stderr.Length <= o.MaxStderrBytes),
        _ => false,
    };
}
