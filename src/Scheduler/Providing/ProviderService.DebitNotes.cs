using Microsoft.Extensions.Logging;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Metrics;

namespace Potluck.Scheduler.Providing;

/// <summary>
/// The provider's side of debit notes (<see cref="DebitNoteSlicing"/>): at each slice boundary the running task waits while
/// a signed note goes to the requester, the slice is recorded as owed, and a timer runs; the receipt that pays the note
/// (checked against it exactly) lets the task run on, and no payment within <see cref="LeaseOptions.DebitNoteTimeout"/>
/// stops the task and cancels the lease.
/// </summary>
public sealed partial class ProviderService
{
    private readonly Dictionary<ProviderLease, DebitState> _debits = [];
    private readonly Dictionary<(PeerId, ulong, int), SignedDebitNote> _notes = [];
    private readonly Queue<(PeerId, ulong, int)> _noteOrder = new();
    private long _debitNotesSent;
    private long _debitNotesPaid;
    private long _debitNotesUnpaid;

    /// <summary>Debit notes sent to requesters.</summary>
    public long DebitNotesSent => Interlocked.Read(ref _debitNotesSent);

    /// <summary>Debit notes paid (the task ran on).</summary>
    public long DebitNotesPaid => Interlocked.Read(ref _debitNotesPaid);

    /// <summary>Leases stopped because a debit note was not paid in time.</summary>
    public long DebitNotesUnpaid => Interlocked.Read(ref _debitNotesUnpaid);

    /// <summary>Test hook: changes each note before it is signed (a provider that lies in its notes).</summary>
    internal Func<DebitNote, DebitNote>? TamperDebitNote { get; set; }

    private LeaseExecution WithDebitNotes(ProviderLease lease, LeaseExecution execution) =>
        lease.Terms.DebitNoteFuel > 0 ? execution with { DebitNoteDue = index => DebitNoteDueAsync(lease, index) } : execution;

    /// <summary>Micro-credits the lease's debit notes were paid (the final receipt pays the rest).</summary>
    private long PaidByNotes(ProviderLease lease)
    {
        lock (_gate)
        {
            return _debits.TryGetValue(lease, out var state) ? state.PaidAmount : 0;
        }
    }

    /// <summary>Called by the executor (on its own thread) at slice <paramref name="index"/>: true once paid, false to stop.</summary>
    private Task<bool> DebitNoteDueAsync(ProviderLease lease, int index)
    {
        SignedDebitNote note;
        DebitState state;
        var terms = lease.Terms;
        lock (_gate)
        {
            if (!_slots.ContainsKey(lease))
            {
                return Task.FromResult(false);
            }
            if (!_debits.TryGetValue(lease, out state!))
            {
                _debits[lease] = state = new DebitState();
            }
            var cumulative = ((UInt128)(ulong)index + 1UL) * (ulong)terms.DebitNoteFuel;
            if (index != state.Next || state.Waiter is not null || cumulative >= (ulong)terms.FuelLimit
                || !Receipt.TryComputeAmount((ulong)cumulative, (ulong)Math.Max(0, terms.PricePerMegaFuel), out var amount))
            {
                return Task.FromResult(false);
            }
            var draft = new DebitNote
            {
                LeaseId = ExecutionMapping.LeaseId(lease.RequestId),
                Requester = lease.Requester.ToBytes(),
                Provider = _key.PeerId.ToBytes(),
                SliceIndex = index,
                CumulativeFuel = (ulong)cumulative,
                PricePerMillionFuel = (ulong)Math.Max(0, terms.PricePerMegaFuel),
                CumulativeAmount = amount,
                PaidBefore = state.PaidAmount,
                TimestampUnixMs = _time.GetUtcNow().ToUnixTimeMilliseconds(),
            };
            note = SignedDebitNote.Create(TamperDebitNote?.Invoke(draft) ?? draft, _key);
            // Not RunContinuationsAsynchronously: the run takes its external-work mark again on the thread that pays (DebitNoteGate).
            state.Waiter = new TaskCompletionSource<bool>();
            state.Pending = note;
            state.PendingIndex = index;
            RememberNote(lease.Requester, lease.RequestId, index, note);
        }
        // Owed, durably, before the note leaves: the slice's receipt is accepted only for a slice recorded here, and an
        // unpaid slice counts against the requester's credit limit as an unpaid lease does.
        _ledger.RecordOwed(DebitNoteSlicing.SliceLeaseId(note.Note.LeaseId, index), lease.Requester, note.Note.Due);
        lock (_gate)
        {
            if (!_slots.TryGetValue(lease, out var slot) || state.Waiter is not { } waiter || !ReferenceEquals(state.Pending, note))
            {
                return Task.FromResult(false);
            }
            slot.Session?.Enqueue([new LeaseDebitNote { RequestId = lease.RequestId, Note = note.EnvelopeBytes }]);
            state.Timer = _time.CreateTimer(_ => _work.Run($"lease {lease.RequestId} debit note", () =>
            {
                OnDebitNoteTimeout(lease, index);
                return Task.CompletedTask;
            }), null, _options.Lease.DebitNoteTimeout, Timeout.InfiniteTimeSpan);
            Interlocked.Increment(ref _debitNotesSent);
            _instruments.DebitNote(LeaseRole.Provider, "sent");
            return waiter.Task;
        }
    }

    private void RememberNote(PeerId requester, ulong requestId, int index, SignedDebitNote note)
    {
        var key = (requester, requestId, index);
        if (_notes.TryAdd(key, note))
        {
            _noteOrder.Enqueue(key);
            while (_notes.Count > _options.MaxRememberedResults && _noteOrder.TryDequeue(out var old))
            {
                _notes.Remove(old);
            }
        }
    }

    /// <summary>
    /// A receipt for a slice (<see cref="DebitNoteSlicing.SliceLeaseId"/>): checked against the note this node sent (the same
    /// fuel, price, note hash and what was paid before), when it still holds it; null when it may be recorded.
    /// </summary>
    private ReceiptAck? CheckDebitPayment(SignedReceipt receipt)
    {
        if (!DebitNoteSlicing.TryParseSliceLeaseId(receipt.Receipt.LeaseId, out var requestId, out var index))
        {
            return null;
        }
        SignedDebitNote? note;
        lock (_gate)
        {
            _notes.TryGetValue((receipt.Requester, requestId, index), out note);
        }
        var check = note?.Expectation() is { } expected ? receipt.Check(expected) : VerifyStatus.Valid;
        return check == VerifyStatus.Valid ? null : new ReceiptAck { Status = ReceiptAckStatus.Refused, Detail = "debit note payment: " + check };
    }

    /// <summary>A slice's receipt was recorded: the task waiting on that note runs on.</summary>
    private void DebitNotePaid(SignedReceipt receipt)
    {
        if (!DebitNoteSlicing.TryParseSliceLeaseId(receipt.Receipt.LeaseId, out var requestId, out var index))
        {
            return;
        }
        lock (_gate)
        {
            if (_registry.Find(receipt.Requester, requestId) is not { } lease || !_debits.TryGetValue(lease, out var state)
                || state.Pending is null || state.PendingIndex != index || state.Waiter is not { } waiter)
            {
                return;
            }
            state.Timer?.Dispose();
            state.Timer = null;
            state.Next = index + 1;
            state.PaidAmount = state.Pending.Note.CumulativeAmount;
            state.Pending = null;
            state.Waiter = null;
            Interlocked.Increment(ref _debitNotesPaid);
            _instruments.DebitNote(LeaseRole.Provider, "paid");
            waiter.TrySetResult(true);
        }
    }

    private void OnDebitNoteTimeout(ProviderLease lease, int index)
    {
        Action? after = null;
        lock (_gate)
        {
            if (!_debits.TryGetValue(lease, out var state) || state.Pending is null || state.PendingIndex != index || state.Waiter is null)
            {
                return;
            }
            Interlocked.Increment(ref _debitNotesUnpaid);
            _instruments.DebitNote(LeaseRole.Provider, "unpaid");
            LogDebitNoteUnpaid(_log, lease.RequestId, lease.Requester, index);
            if (_slots.TryGetValue(lease, out var slot))
            {
                var now = _time.GetUtcNow();
                var step = lease.Cancel($"debit note {index} not paid within {_options.Lease.DebitNoteTimeout}", now);
                slot.Run?.Cancel();
                after = Apply(lease, slot, step, now);
            }
            EndDebitNotes(lease);
        }
        after?.Invoke();
    }

    /// <summary>The lease ended (under the lock): a task still waiting on a note stops.</summary>
    private void EndDebitNotes(ProviderLease lease)
    {
        if (_debits.Remove(lease, out var state))
        {
            state.Timer?.Dispose();
            state.Waiter?.TrySetResult(false);
        }
    }

    private sealed class DebitState
    {
        public int Next { get; set; }

        public long PaidAmount { get; set; }

        public SignedDebitNote? Pending { get; set; }

        public int PendingIndex { get; set; } = -1;

        public TaskCompletionSource<bool>? Waiter { get; set; }

        public ITimer? Timer { get; set; }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Lease {RequestId} of {Requester} stopped: debit note {Index} not paid in time")]
    private static partial void LogDebitNoteUnpaid(ILogger logger, ulong requestId, PeerId requester, int index);
}
