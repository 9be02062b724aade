using MessagePack;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Host;

namespace Potluck.Scheduler.Providing;

/// <summary>
/// <c>/potluck/receipt/1.0.0</c>: the requester opens a stream, sends one signed receipt envelope (unsigned-varint
/// length-prefixed, at most <see cref="Credits.CreditsOptions.MaxEnvelopeBytes"/>), and the provider answers one
/// <see cref="ReceiptAck"/> once the receipt is recorded in its ledger (or why not). Sending the same receipt again is
/// always safe: the ledger counts a receipt id once, and the provider acknowledges it again. Kept apart from the
/// lease stream so that receipts settled before a crash can be delivered after it, on a new connection; a provider
/// speaking <see cref="Leasing.LeaseProtocol.IdWithReceipts"/> also takes the first delivery on the lease stream
/// (<see cref="Leasing.LeaseReceipt"/>), recorded and acknowledged exactly as here.
/// </summary>
public static class ReceiptProtocol
{
    public const string Id = "/potluck/receipt/1.0.0";

    /// <summary>Largest acknowledgement accepted. 512 bytes.</summary>
    public const int MaxAckBytes = 512;

    private static readonly MessagePackSerializerOptions Untrusted =
        MessagePackSerializerOptions.Standard.WithSecurity(MessagePackSecurity.UntrustedData);

    internal static byte[] EncodeAck(ReceiptAck ack) => MessagePackSerializer.Serialize(ack, MessagePackSerializerOptions.Standard);

    internal static bool TryDecodeAck(ReadOnlyMemory<byte> bytes, out ReceiptAck ack)
    {
        ack = null!;
        try
        {
            var decoded = MessagePackSerializer.Deserialize<ReceiptAck>(bytes, Untrusted, out var read);
            if (decoded is null || read != bytes.Length || !Enum.IsDefined(decoded.Status) || decoded.Detail is null)
            {
                return false;
            }
            ack = decoded;
            return true;
        }
        catch (MessagePackSerializationException)
        {
            return false;
        }
    }

    /// <summary>Sends one receipt and waits for the acknowledgement (requester side).</summary>
    public static async Task<ReceiptAck> SendAsync(IStream stream, ReadOnlyMemory<byte> receipt, CancellationToken ct)
    {
        await LengthPrefixed.WriteAsync(stream.Output, receipt, ct);
        await stream.Output.CompleteAsync();
        var reply = await LengthPrefixed.ReadAsync(stream.Input, MaxAckBytes, Id, ct)
            ?? throw new Potluck.Protocol.ProtocolViolationException(Id, "stream ended without an acknowledgement");
        return TryDecodeAck(reply, out var ack) ? ack : throw new Potluck.Protocol.ProtocolViolationException(Id, "malformed acknowledgement");
    }
}

public enum ReceiptAckStatus
{
    /// <summary>Recorded now.</summary>
    Recorded = 0,
    /// <summary>Recorded before (a resend).</summary>
    AlreadyRecorded = 1,
    /// <summary>Not recorded: malformed, not ours, or not what the lease owes.</summary>
    Refused = 2,
}

/// <summary>The provider's answer to a receipt.</summary>
[MessagePackObject]
public sealed record ReceiptAck
{
    [Key(0)] public ReceiptAckStatus Status { get; init; }

    [Key(1)] public string Detail { get; init; } = "";

    /// <summary>True when the provider holds the receipt (now or from before): the requester may mark it delivered.</summary>
    [IgnoreMember] public bool Delivered => Status is ReceiptAckStatus.Recorded or ReceiptAckStatus.AlreadyRecorded;
}
