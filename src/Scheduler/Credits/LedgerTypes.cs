using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Credits;

/// <summary>What an entry records. Amounts are stored non-negative; the kind gives the sign.</summary>
public enum LedgerEntryKind
{
    /// <summary>The initial grant to a new node (+). Not backed by a receipt.</summary>
    Grant = 0,
    /// <summary>We were the provider of a receipt (+).</summary>
    Earned = 1,
    /// <summary>We were the requester of a receipt (−).</summary>
    Spent = 2,
}

/// <summary>
/// The requester's side of one lease's payment. Transitions, each one committed transaction:
/// <code>
///   (none) ──ReservePayment──▶ Reserved ──Settle──▶ Settled ──MarkDelivered──▶ Delivered
///                                  │
///                                  └────Release───▶ Released
/// </code>
/// Settled and Delivered always have their Spent entry (the trigger on the table enforces it); Released and
/// Delivered are final. See <see cref="CreditLedger"/> for the crash-recovery rules.
/// </summary>
public enum PaymentState
{
    /// <summary>Credits set aside for the lease (counted against <see cref="CreditLedger.Available"/>); no receipt yet.</summary>
    Reserved = 0,
    /// <summary>The receipt is signed, stored and counted as Spent, but the provider has not acknowledged it: resend it.</summary>
    Settled = 1,
    /// <summary>The provider acknowledged the receipt.</summary>
    Delivered = 2,
    /// <summary>Nothing is owed (the lease failed or was abandoned before a receipt was signed).</summary>
    Released = 3,
}

/// <summary>The outcome of a ledger operation. Each names exactly what did or did not change.</summary>
public enum LedgerResult
{
    /// <summary>A new entry was appended (for a Spent receipt with a reservation: and the reservation is Settled).</summary>
    Recorded,
    /// <summary>This exact receipt is already recorded: nothing changed.</summary>
    AlreadyRecorded,
    /// <summary>
    /// A different receipt (or reservation) with the same id is already recorded: nothing changed, the first
    /// one stands.
    /// </summary>
    Conflict,
    /// <summary>The receipt does not name this node as the provider (Earned) or requester (Spent).</summary>
    NotOurs,
    /// <summary>A new reservation was created.</summary>
    Reserved,
    /// <summary>The same reservation (lease, provider, maximum) exists already: nothing changed.</summary>
    AlreadyReserved,
    /// <summary>The reservation exceeds the available balance: nothing changed.</summary>
    InsufficientFunds,
    /// <summary>There is no reservation for the lease.</summary>
    NotReserved,
    /// <summary>The receipt's amount is above the reserved maximum: nothing changed.</summary>
    ExceedsReservation,
    /// <summary>The reservation went from Reserved to Released.</summary>
    Released,
    /// <summary>The reservation was released already (a released lease cannot be settled).</summary>
    AlreadyReleased,
    /// <summary>The reservation is settled already and cannot be released.</summary>
    AlreadySettled,
    /// <summary>The reservation went from Settled to Delivered.</summary>
    Delivered,
    /// <summary>The reservation was Delivered already.</summary>
    AlreadyDelivered,
    /// <summary>The reservation is not settled, so there is nothing to deliver.</summary>
    NotSettled,
    /// <summary>As a provider: the lease is now recorded as owed.</summary>
    Owed,
    /// <summary>As a provider: the lease was recorded as owed already; nothing changed.</summary>
    AlreadyOwed,
    /// <summary>As a provider: no lease of this requester is owed under this id (it never existed here): nothing written.</summary>
    NotOwed,
    /// <summary>As a provider: the receipt pays more than the lease owes: nothing written.</summary>
    ExceedsOwed,
}

/// <summary>One row of the append-only entries table.</summary>
public sealed record LedgerEntry(
    long Sequence,
    LedgerEntryKind Kind,
    byte[] ReceiptId,
    byte[]? LeaseId,
    PeerId Counterparty,
    long Amount,
    DateTimeOffset RecordedAt,
    byte[]? Receipt)
{
    /// <summary>The entry's effect on the balance.</summary>
    public long SignedAmount => Kind == LedgerEntryKind.Spent ? -Amount : Amount;
}

/// <summary>A requester's reservation for one lease; <see cref="Receipt"/> is the stored signed receipt once Settled.</summary>
public sealed record PaymentReservation(
    byte[] LeaseId,
    PeerId Provider,
    long MaxAmount,
    PaymentState State,
    byte[]? ReceiptId,
    byte[]? Receipt,
    DateTimeOffset CreatedAt);

/// <summary>The result of checking a proof of earnings.</summary>
/// <param name="Status">Valid, or why the receipt at <paramref name="FirstInvalid"/> was rejected.</param>
/// <param name="Total">Micro-credits earned, each receipt id counted once.</param>
/// <param name="Receipts">Distinct receipts counted.</param>
/// <param name="FirstInvalid">Index of the first rejected receipt, or −1.</param>
public readonly record struct ProofOfEarningsCheck(VerifyStatus Status, long Total, int Receipts, int FirstInvalid);

/// <summary>The ledger could not be read or written.</summary>
public class LedgerException : Exception
{
    public LedgerException(string message) : base(message) { }

    public LedgerException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>
/// The ledger file is not a valid Potluck ledger: not SQLite, damaged (integrity check failed), or a schema
/// this version does not know. Nothing was changed; move the file away (keeping it as evidence) to start anew.
/// </summary>
public sealed class LedgerCorruptException : LedgerException
{
    public LedgerCorruptException(string path, string detail, Exception? inner = null)
        : base($"ledger {path} is corrupt or not a Potluck ledger: {detail}", inner ?? new InvalidDataException(detail))
    {
        Path = path;
    }

    public string Path { get; }
}

/// <summary>Micro-credits earned and spent in all and since a moment, and how many receipts of each.</summary>
public sealed record LedgerTotals(long Earned, long Spent, long EarnedSince, long SpentSince, long EarnedCount, long SpentCount);
