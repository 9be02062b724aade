using System.Buffers.Binary;

namespace Potluck.Scheduler.Leasing;

/// <summary>
/// Debit notes: long leases paid as they go, after Golem's debit notes (a provider's signed statement of what a running
/// activity has cost so far, which the requester accepts by paying, or the provider stops).
/// <para>
/// Design. A requester that can pay as it goes says so in its request (<see cref="LeaseRequest.AcceptsDebitNotes"/>, a
/// new MessagePack key older nodes skip, so they never see a note). A provider whose
/// <see cref="LeaseOptions.DebitNoteFuel"/> (<c>compute:provider:lease:debitNoteFuel</c>, 2^30; 0 off) is below the
/// lease's fuel limit names that slice in the terms both sign (<see cref="LeaseTerms.DebitNoteFuel"/>, a new key too), and
/// refuses such a lease to a requester that does not take notes (older nodes keep leases up to the slice; compatibility
/// ends where unbounded unpaid work would begin). Running the task,
/// the provider stops at each multiple of the slice (its sandbox checks the store's fuel at every epoch tick and blocks
/// there; Wasmtime writes the fuel back to the store at calls, so a loop that makes none is metered only when it next calls
/// or ends, and its work is then paid by the final receipt as a lease without notes would be) and sends a <see cref="Credits.SignedDebitNote"/>: lease, slice index k, cumulative fuel (k + 1) × slice, the
/// agreed price, the cumulative amount ceil(fuel × price / 10^6) and what earlier notes were paid. It records the slice
/// as owed (durably, as it records a finished lease) and runs on only when the requester pays it; without payment within
/// <see cref="LeaseOptions.DebitNoteTimeout"/> (10 s) it stops the task and cancels the lease, so the work a requester
/// can take unpaid is one slice (plus one epoch tick). The requester checks the note (<see cref="Credits.DebitNoteBook"/>:
/// the provider's signature, the lease, the next index and no other, the fuel exactly at the boundary and under the
/// limit, the agreed price, checked arithmetic) and pays it with an ordinary signed receipt for the slice's own lease id
/// (<see cref="SliceLeaseId"/>: the lease id and the index, so a slice has one receipt id and is never paid twice) whose
/// <see cref="Credits.Receipt.PaidBefore"/> names what earlier notes paid: reserved, settled, delivered, recorded as Earned,
/// retried and linked into both TrustChain histories exactly as a receipt is. The final receipt pays only the remainder
/// (<c>PaidBefore</c> = all notes): a lease's notes and receipt sum to exactly what one receipt would pay. A final
/// attestation that reports less fuel than the notes were paid for is not paid at all and counts as a failure of the
/// provider; what notes already paid is the provider's earnings and falls under the holdback
/// (<c>compute:credits:holdback</c>), forfeited on a proof of fraud like any other payment.
/// </para>
/// </summary>
public static class DebitNoteSlicing
{
    /// <summary>Length of a slice's lease id: the lease's 8-byte id and the slice index, big-endian.</summary>
    public const int SliceLeaseIdLength = 12;

    /// <summary>The slice a provider names in its terms for <paramref name="request"/>: 0 when the lease is paid once.</summary>
    public static long SliceFor(LeaseRequest request, LeaseOptions options) =>
        options.DebitNoteFuel > 0 && request.AcceptsDebitNotes && request.FuelLimit > options.DebitNoteFuel ? options.DebitNoteFuel : 0;

    /// <summary>
    /// Why a provider with debit notes on refuses a request above the slice that does not take them (an older requester,
    /// or one that would take a long task without paying as it goes); null when it does not.
    /// </summary>
    public static string? RefusesUnsliced(LeaseRequest request, LeaseOptions options) =>
        options.DebitNoteFuel > 0 && request.FuelLimit > options.DebitNoteFuel && !request.AcceptsDebitNotes
            ? $"a fuel limit over {options.DebitNoteFuel} is paid as it goes here: the request must take debit notes"
            : null;

    /// <summary>How many notes a lease of these terms can have: one per slice boundary below the fuel limit.</summary>
    public static long MaxNotes(LeaseTerms terms) =>
        terms.DebitNoteFuel <= 0 || terms.FuelLimit <= 0 ? 0 : (terms.FuelLimit - 1) / terms.DebitNoteFuel;

    /// <summary>The requester's check of the slicing in an offer; null when acceptable, else why not.</summary>
    public static string? CheckOffered(LeaseRequest request, LeaseTerms terms, LeaseOptions options)
    {
        if (terms.DebitNoteFuel == 0)
        {
            return null;
        }
        if (terms.DebitNoteFuel < 0 || !request.AcceptsDebitNotes)
        {
            return "offer slices a lease into debit notes the request did not ask for";
        }
        var notes = MaxNotes(terms);
        return notes > options.MaxDebitNotesPerLease
            ? $"offer slices the lease into {notes} debit notes (at most {options.MaxDebitNotesPerLease})"
            : null;
    }

    /// <summary>The lease id a slice's payment names: the lease id, then the index as 4 bytes big-endian.</summary>
    public static byte[] SliceLeaseId(ReadOnlySpan<byte> leaseId, int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        if (leaseId.Length != 8)
        {
            throw new ArgumentException("a lease id of the lease protocol is 8 bytes", nameof(leaseId));
        }
        var id = new byte[SliceLeaseIdLength];
        leaseId.CopyTo(id);
        BinaryPrimitives.WriteInt32BigEndian(id.AsSpan(8), index);
        return id;
    }

    /// <summary>Reads a slice's lease id: the lease's request id and the slice index.</summary>
    public static bool TryParseSliceLeaseId(ReadOnlySpan<byte> id, out ulong requestId, out int index)
    {
        requestId = 0;
        index = -1;
        if (id.Length != SliceLeaseIdLength)
        {
            return false;
        }
        requestId = BinaryPrimitives.ReadUInt64BigEndian(id);
        index = BinaryPrimitives.ReadInt32BigEndian(id[8..]);
        return index >= 0;
    }
}
