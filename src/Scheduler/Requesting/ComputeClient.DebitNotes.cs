using Microsoft.Extensions.Logging;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Metrics;

namespace Potluck.Scheduler.Requesting;

/// <summary>
/// The requester's side of debit notes (<see cref="DebitNoteSlicing"/>): each note of a running lease is checked
/// (<see cref="DebitNoteBook"/>) and paid by a receipt for its slice, reserved and settled durably before it leaves, then
/// delivered (and retried) like any receipt; a note that does not check is not paid, and the provider stops.
/// </summary>
public sealed partial class ComputeClient
{
    private long _debitNotesPaid;
    private long _debitNotesRefused;

    /// <summary>Debit notes this requester paid.</summary>
    public long DebitNotesPaid => Interlocked.Read(ref _debitNotesPaid);

    /// <summary>Debit notes this requester refused (they did not check against the terms and what was paid).</summary>
    public long DebitNotesRefused => Interlocked.Read(ref _debitNotesRefused);

    /// <summary>Test hook: asked before each note that checks is paid; false leaves it unpaid (a requester that stops paying).</summary>
    internal Func<SignedDebitNote, bool>? PayDebitNote { get; set; }

    /// <summary>One lease's notes: checked, paid, and what they paid so far.</summary>
    private sealed class DebitNotePayer(ComputeClient client, RequesterLease lease, PeerId provider, byte[] leaseId)
    {
        private DebitNoteBook? _book;

        public long PaidAmount => _book?.PaidAmount ?? 0;

        public ulong PaidFuel => _book?.PaidFuel ?? 0;

        /// <summary>Called by the lease's runner, in order, for every note (on the channel's read loop: nothing here waits on the network).</summary>
        public void OnNote(LeaseDebitNote message) => client.PayNote(this, message);

        /// <summary>Made once the terms are known (a note can only come after them).</summary>
        public DebitNoteBook? Book => _book ??= lease.Terms is { DebitNoteFuel: > 0 } terms
            ? new DebitNoteBook(terms, leaseId, client._key.PeerId, provider, client._options.Lease.MaxDebitNotesPerLease)
            : null;

        public PeerId Provider => provider;
    }

    private void PayNote(DebitNotePayer payer, LeaseDebitNote message)
    {
        var book = payer.Book;
        var decoded = SignedDebitNote.Decode(message.Note, _options.Credits);
        var verdict = book is null ? DebitNoteVerdict.NotThisLease : !decoded.IsValid ? DebitNoteVerdict.Invalid : book.Check(decoded.Value!);
        if (verdict != DebitNoteVerdict.Valid)
        {
            Interlocked.Increment(ref _debitNotesRefused);
            _instruments.DebitNote(LeaseRole.Requester, "refused");
            LogDebitNoteRefused(_log, payer.Provider, verdict);
            return;
        }
        var note = decoded.Value!;
        if (PayDebitNote?.Invoke(note) == false)
        {
            return;
        }
        var receipt = SignedReceipt.Create(note.Payment(_time.GetUtcNow()), _key);
        var sliceId = receipt.Receipt.LeaseId;
        // As for a lease: reserved, then settled (durably) before the receipt leaves; a slice has one receipt id, so it is
        // never paid twice, and a crash between the two leaves a reservation that the next start releases.
        var reserved = _ledger.ReservePayment(sliceId, payer.Provider, receipt.Receipt.Amount);
        var settled = reserved is LedgerResult.Reserved or LedgerResult.AlreadyReserved ? _ledger.Settle(receipt) : reserved;
        if (settled is not (LedgerResult.Recorded or LedgerResult.AlreadyRecorded))
        {
            LogPaymentFailed(_log, payer.Provider, "debit note: " + settled);
            return;
        }
        book!.Paid(note);
        if (settled is LedgerResult.Recorded)
        {
            _instruments.CreditsSpent(receipt.Receipt.Amount);
        }
        Interlocked.Increment(ref _debitNotesPaid);
        _instruments.DebitNote(LeaseRole.Requester, "paid");
        StartDelivery(payer.Provider, sliceId, receipt.EnvelopeBytes);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Debit note from {Provider} refused: {Verdict}")]
    private static partial void LogDebitNoteRefused(ILogger logger, PeerId provider, DebitNoteVerdict verdict);
}
