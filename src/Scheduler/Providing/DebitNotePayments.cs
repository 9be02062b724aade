using Potluck.Scheduler.Cores;

namespace Potluck.Scheduler.Providing;

/// <summary>What became of a recorded payment handed to <see cref="DebitNotePayments.Paid"/>.</summary>
public enum DebitNotePaymentPost : byte
{
    /// <summary>Queued for the core: the note it pays is settled when the core takes it.</summary>
    Posted,
    /// <summary>A payment of this note (or a later one) was posted already: a replay, answered by the ledger and dropped here, taking no queue slot.</summary>
    Duplicate,
    /// <summary>The core has ended (the note was left unpaid, or the lease is over): the ledger keeps the payment, the run stays stopped.</summary>
    Ended,
    /// <summary>The core's queue was full; nothing was posted, so a later copy of the same payment is posted (never reached while payments are deduplicated: see the summary).</summary>
    QueueFull,
}

/// <summary>
/// Where the recorded payments of one lease's debit notes reach its <see cref="DebitNoteCore"/>, in the
/// <see cref="CoreShell{TStep}"/> it runs in: each note's payment is posted once. A receipt the ledger holds already
/// (<see cref="Credits.LedgerResult.AlreadyRecorded"/>: a replay, or a retry whose acknowledgement was lost) is answered as
/// before, but a note whose payment was posted, or an earlier one, posts nothing, so a requester that floods replayed
/// receipts takes no slot of the core's bounded queue. Notes are paid in order and the next note is made only once the
/// pending one is paid, so the queue holds at most the slice due and one payment (plus the core's own timer): the genuine
/// payment of the pending note always finds room. (Posting every copy let replays fill the 16 slots of
/// <see cref="ShellOptions"/> while the loop was busy: the genuine payment was dropped, and the lease ended at its window
/// unpaid although the requester had paid.)
/// </summary>
public sealed class DebitNotePayments
{
    /// <summary>The shell one lease's debit notes run in: events held at once (a slice due, a payment, the timer).</summary>
    public static readonly CoreShellOptions ShellOptions = new() { Name = "provider debit notes", Capacity = 16 };

    private readonly DebitNoteCore _core;
    private readonly CoreShell<DebitNoteStep> _shell;
    private readonly Lock _lock = new();
    private int _posted = -1;
    private long _duplicates;

    public DebitNotePayments(DebitNoteCore core, CoreShell<DebitNoteStep> shell)
    {
        ArgumentNullException.ThrowIfNull(core);
        ArgumentNullException.ThrowIfNull(shell);
        _core = core;
        _shell = shell;
    }

    /// <summary>Recorded payments dropped here as replays (no queue slot taken).</summary>
    public long Duplicates => Interlocked.Read(ref _duplicates);

    /// <summary>
    /// The ledger holds a payment of slice <paramref name="index"/> (written now or before): posted to the core unless a
    /// payment of this note or a later one was posted already; the loop is run after (outside the lock) when posted.
    /// </summary>
    public DebitNotePaymentPost Paid(int index)
    {
        CorePost post;
        lock (_lock)
        {
            if (index <= _posted)
            {
                Interlocked.Increment(ref _duplicates);
                return DebitNotePaymentPost.Duplicate;
            }
            post = _shell.TryEnqueue(now => _core.OnPaid(index, now));
            if (post == CorePost.Accepted)
            {
                _posted = index;
            }
        }
        switch (post)
        {
            case CorePost.Accepted:
                _shell.Pump();
                return DebitNotePaymentPost.Posted;
            case CorePost.Stopped:
                return DebitNotePaymentPost.Ended;
            default:
                return DebitNotePaymentPost.QueueFull;
        }
    }
}
