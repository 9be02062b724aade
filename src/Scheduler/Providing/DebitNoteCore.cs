using Potluck.Protocol.Identity;
using Potluck.Scheduler.Cores;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Providing;

/// <summary>What a <see cref="DebitNoteCore"/> step asks of the provider's shell.</summary>
public enum DebitNoteAction : byte
{
    /// <summary>Nothing to do (a late or repeated event).</summary>
    Nothing,
    /// <summary>Record the note's slice as owed (durably), then send the note; the run waits for its payment.</summary>
    Send,
    /// <summary>The pending note was paid: the run goes on.</summary>
    Resume,
    /// <summary>The run stops at this boundary (a slice out of order, past the fuel limit, or the payments failed); the lease is not cancelled here.</summary>
    Halt,
    /// <summary>The pending note was not paid within the window: the run stops and the lease is cancelled.</summary>
    Unpaid,
}

/// <summary>One step of a <see cref="DebitNoteCore"/>: the action, the slice it concerns, the note sent (or left unpaid), and the clock.</summary>
public readonly record struct DebitNoteStep(DebitNoteAction Action, int Index, SignedDebitNote? Note, CoreWake Wake)
{
    public static DebitNoteStep Nothing => default;

    /// <summary>For <see cref="DebitNoteAction.Send"/>: the slice's own lease id, under which it is owed and paid (<see cref="DebitNoteSlicing.SliceLeaseId"/>).</summary>
    public byte[] OwedLeaseId => DebitNoteSlicing.SliceLeaseId(Note!.Note.LeaseId, Index);

    /// <summary>For <see cref="DebitNoteAction.Send"/>: what the slice adds to what the requester owes (the note's amount less what earlier notes paid).</summary>
    public long OwedAmount => Note!.Note.Due;
}

/// <summary>
/// The provider's payment decisions for one lease paid as it goes (<see cref="DebitNoteSlicing"/>), as a pure core: events
/// and <c>now</c> in, <see cref="DebitNoteStep"/>s out, no clock, no task, no randomness (signing is a deterministic function
/// handed in). At each slice boundary the next note (cumulative fuel (k + 1) × slice, the agreed price, checked arithmetic,
/// what earlier notes paid) is made and the run waits; the payment of that note and no other lets it go on; no payment by
/// <see cref="PayBy"/> ends the core with <see cref="DebitNoteAction.Unpaid"/> (the run stops, the lease is cancelled), so
/// what the requester can take unpaid is the one slice pending. Run in a <see cref="CoreShell{TStep}"/> whose effects
/// write the owed slice, send the note and wake or stop the run (ProviderService.DebitNotes.cs).
/// </summary>
public sealed class DebitNoteCore
{
    private readonly LeaseTerms _terms;
    private readonly byte[] _leaseId;
    private readonly PeerId _requester;
    private readonly PeerId _provider;
    private readonly TimeSpan _window;
    private readonly Func<DebitNote, SignedDebitNote> _sign;
    private int _pendingIndex = -1;

    /// <param name="leaseId">The lease's 8-byte id (<see cref="Execution.ExecutionMapping.LeaseId"/>).</param>
    /// <param name="window">How long a note may stay unpaid (<see cref="LeaseOptions.DebitNoteTimeout"/>).</param>
    /// <param name="sign">Signs a note as the provider (deterministic; a test hook may change the note first).</param>
    public DebitNoteCore(LeaseTerms terms, byte[] leaseId, PeerId requester, PeerId provider, TimeSpan window, Func<DebitNote, SignedDebitNote> sign)
    {
        ArgumentNullException.ThrowIfNull(terms);
        ArgumentNullException.ThrowIfNull(sign);
        _terms = terms;
        _leaseId = leaseId;
        _requester = requester;
        _provider = provider;
        _window = window;
        _sign = sign;
    }

    /// <summary>The slice whose note comes next.</summary>
    public int Next { get; private set; }

    /// <summary>Micro-credits the paid notes came to (cumulative): what the final receipt's <c>PaidBefore</c> must name.</summary>
    public long PaidAmount { get; private set; }

    /// <summary>The note sent and not yet paid, if any.</summary>
    public SignedDebitNote? Pending { get; private set; }

    /// <summary>When the pending note must be paid by.</summary>
    public DateTimeOffset? PayBy { get; private set; }

    /// <summary>The requester left a note unpaid, or the payments failed: no more notes, no more payments taken.</summary>
    public bool IsEnded { get; private set; }

    /// <summary>
    /// The run reached slice boundary <paramref name="index"/>: the next note is made and sent (after its slice is recorded as
    /// owed), or, for a boundary out of order, one while a note is pending, at or past the fuel limit, or an amount that
    /// overflows, the run halts there.
    /// </summary>
    public DebitNoteStep OnSliceDue(int index, DateTimeOffset now)
    {
        var price = (ulong)Math.Max(0, _terms.PricePerMegaFuel);
        var cumulative = ((UInt128)(ulong)Math.Max(0, index) + 1UL) * (ulong)Math.Max(0, _terms.DebitNoteFuel);
        if (IsEnded || index != Next || Pending is not null || cumulative >= (ulong)_terms.FuelLimit
            || !Receipt.TryComputeAmount((ulong)cumulative, price, out var amount))
        {
            return new DebitNoteStep(DebitNoteAction.Halt, index, null, CoreWake.Keep);
        }
        var draft = new DebitNote
        {
            LeaseId = _leaseId,
            Requester = _requester.ToBytes(),
            Provider = _provider.ToBytes(),
            SliceIndex = index,
            CumulativeFuel = (ulong)cumulative,
            PricePerMillionFuel = price,
            CumulativeAmount = amount,
            PaidBefore = PaidAmount,
            TimestampUnixMs = now.ToUnixTimeMilliseconds(),
        };
        Pending = _sign(draft);
        _pendingIndex = index;
        PayBy = now + _window;
        return new DebitNoteStep(DebitNoteAction.Send, index, Pending, CoreWake.WakeAt(PayBy.Value));
    }

    /// <summary>
    /// A receipt for slice <paramref name="index"/> was recorded (checked against the note by <see cref="ProviderAccounts"/>
    /// and the ledger first): the run goes on. A payment for any other slice, or after the core ended, changes nothing.
    /// </summary>
    public DebitNoteStep OnPaid(int index, DateTimeOffset now)
    {
        if (IsEnded || Pending is not { } paid || index != _pendingIndex)
        {
            return DebitNoteStep.Nothing;
        }
        Next = index + 1;
        PaidAmount = paid.Note.CumulativeAmount;
        Pending = null;
        PayBy = null;
        _pendingIndex = -1;
        return new DebitNoteStep(DebitNoteAction.Resume, index, null, CoreWake.Disarm);
    }

    /// <summary>The window ran out: a note still unpaid ends the lease (<see cref="DebitNoteAction.Unpaid"/>).</summary>
    public DebitNoteStep OnTimer(DateTimeOffset now)
    {
        if (IsEnded || Pending is not { } unpaid || now < PayBy)
        {
            return DebitNoteStep.Nothing;
        }
        IsEnded = true;
        return new DebitNoteStep(DebitNoteAction.Unpaid, _pendingIndex, unpaid, CoreWake.Ended);
    }

    /// <summary>Carrying out a step failed (the owed slice could not be written): the run halts and no more notes are made.</summary>
    public DebitNoteStep OnFailed(DebitNoteStep step, DateTimeOffset now)
    {
        IsEnded = true;
        return new DebitNoteStep(DebitNoteAction.Halt, step.Index, null, CoreWake.Ended);
    }
}
