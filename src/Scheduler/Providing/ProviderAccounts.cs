using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;

namespace Potluck.Scheduler.Providing;

/// <summary>
/// The provider's decisions on what a requester owes and pays, as pure functions of what the ledger and the remembered
/// leases hold (no clock, no I/O): whether a receipt may be written at all (this provider's, exactly what the lease or the
/// debit note it pays asks: same lease, parties, fuel, price, attestation or note hash, and what earlier notes paid; checked
/// arithmetic in <see cref="SignedReceipt.Check"/>), how the ledger's answer is acknowledged, and whether a requester's
/// debt keeps it from a new lease. The durable half of the same rules is <see cref="CreditLedger.RecordOwed"/> /
/// <see cref="CreditLedger.RecordEarned"/>: a receipt is written only for a lease recorded as owed, for at most the amount
/// owed, once. ProviderService reads the inputs and carries out the answers.
/// </summary>
public static class ProviderAccounts
{
    /// <summary>
    /// The checks before any write. <paramref name="lease"/>: what the completed lease the receipt names asks, when this
    /// node still remembers it; <paramref name="slice"/>: what the debit note the receipt pays asks, when it still holds it.
    /// Null when the receipt may go to the ledger (which writes it only for a lease owed here), else the refusal.
    /// </summary>
    public static ReceiptAck? CheckReceipt(SignedReceipt receipt, PeerId self, ReceiptExpectation? lease, ReceiptExpectation? slice)
    {
        ArgumentNullException.ThrowIfNull(receipt);
        if (receipt.Provider != self)
        {
            return Refused("not a receipt for this provider");
        }
        if (lease is not null && receipt.Check(lease) is var leaseCheck && leaseCheck != VerifyStatus.Valid)
        {
            return Refused(leaseCheck.ToString());
        }
        if (slice is not null && receipt.Check(slice) is var sliceCheck && sliceCheck != VerifyStatus.Valid)
        {
            return Refused("debit note payment: " + sliceCheck);
        }
        return null;
    }

    /// <summary>
    /// A receipt as the provider takes it: the checks of <see cref="CheckReceipt"/>, then, only if they pass, the ledger
    /// (<see cref="CreditLedger.RecordEarned"/>: written only for a lease owed here, at most the amount owed, once).
    /// Returns the acknowledgement and what the ledger did (null when nothing was asked of it).
    /// </summary>
    public static (ReceiptAck Ack, LedgerResult? Written) Record(SignedReceipt receipt, PeerId self, ReceiptExpectation? lease,
        ReceiptExpectation? slice, CreditLedger ledger)
    {
        ArgumentNullException.ThrowIfNull(ledger);
        if (CheckReceipt(receipt, self, lease, slice) is { } refused)
        {
            return (refused, null);
        }
        var result = ledger.RecordEarned(receipt);
        return (Answer(result), result);
    }

    /// <summary>Whether the ledger holds the receipt now (written now, or before): what it pays is paid.</summary>
    public static bool IsPaid(LedgerResult result) => result is LedgerResult.Recorded or LedgerResult.AlreadyRecorded;

    /// <summary>The acknowledgement for what the ledger did with a receipt that passed <see cref="CheckReceipt"/>.</summary>
    public static ReceiptAck Answer(LedgerResult result) => result switch
    {
        LedgerResult.Recorded => new ReceiptAck { Status = ReceiptAckStatus.Recorded },
        LedgerResult.AlreadyRecorded => new ReceiptAck { Status = ReceiptAckStatus.AlreadyRecorded },
        _ => Refused(result.ToString()),
    };

    /// <summary>
    /// Whether a requester has standing here for a new lease: it supplied this node work and owes nothing beyond it, or it
    /// has nothing unpaid here and its own chain shows verified standing (<paramref name="verifiedStanding"/>, asked only then).
    /// </summary>
    public static bool IsStranger(PeerId requester, RequesterRecord record, Func<PeerId, bool>? verifiedStanding) =>
        !(record.Supplied > 0 && record.Debt <= 0) && !(record.Unpaid == 0 && verifiedStanding?.Invoke(requester) == true);

    /// <summary>
    /// Why a requester gets no new lease for its debt (what it took here beyond what it supplied here, paid or not, over
    /// <paramref name="creditLimit"/>); null when its debt is within the limit.
    /// </summary>
    public static string? OverCredit(RequesterRecord record, long creditLimit) =>
        record.Debt > creditLimit
            ? $"owes {record.Debt} (unpaid leases {record.Unpaid}, paid {record.Consumed - record.Unpaid}, supplied {record.Supplied}), over the credit limit of {creditLimit}"
            : null;

    private static ReceiptAck Refused(string detail) => new() { Status = ReceiptAckStatus.Refused, Detail = detail };
}
