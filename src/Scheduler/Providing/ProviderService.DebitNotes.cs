using Microsoft.Extensions.Logging;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Cores;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Metrics;

namespace Potluck.Scheduler.Providing;

/// <summary>
/// The provider's side of debit notes (<see cref="DebitNoteSlicing"/>): each lease paid as it goes has a
/// <see cref="DebitNoteCore"/> that decides (the next note, paid, unpaid past its window), run in its own
/// <see cref="CoreShell{TStep}"/> on the injected clock; this partial carries out its steps: the slice recorded as owed
/// (durably) before the note leaves, the note sent on the lease's stream, the waiting run let go on or stopped, and an unpaid
/// note's lease cancelled. The receipt that pays a note is checked against it exactly (<see cref="ProviderAccounts.CheckReceipt"/>).
/// </summary>
public sealed partial class ProviderService
{
    private readonly Dictionary<ProviderLease, DebitSlot> _debits = [];
    private readonly Dictionary<(PeerId, ulong, int), SignedDebitNote> _notes = [];
    private readonly Queue<(PeerId, ulong, int)> _noteOrder = new();
    private long _debitNotesSent;
    private long _debitNotesPaid;
    private long _debitNotesUnpaid;
    private long _debitPaymentReplays;

    /// <summary>Debit notes sent to requesters.</summary>
    public long DebitNotesSent => Interlocked.Read(ref _debitNotesSent);

    /// <summary>Debit notes paid (the task ran on).</summary>
    public long DebitNotesPaid => Interlocked.Read(ref _debitNotesPaid);

    /// <summary>Leases stopped because a debit note was not paid in time.</summary>
    public long DebitNotesUnpaid => Interlocked.Read(ref _debitNotesUnpaid);

    /// <summary>Receipts for debit notes whose payment had reached the lease's core already (replays): answered, posted nowhere.</summary>
    public long DebitPaymentReplays => Interlocked.Read(ref _debitPaymentReplays);

    /// <summary>Test hook: changes each note before it is signed (a provider that lies in its notes).</summary>
    internal Func<DebitNote, DebitNote>? TamperDebitNote { get; set; }

    private LeaseExecution WithDebitNotes(ProviderLease lease, LeaseExecution execution) =>
        lease.Terms.DebitNoteFuel > 0 ? execution with { DebitNoteDue = index => DebitNoteDueAsync(lease, index) } : execution;

    /// <summary>Micro-credits the lease's debit notes were paid (the final receipt pays the rest).</summary>
    private long PaidByNotes(ProviderLease lease)
    {
        lock (_gate)
        {
            return _debits.TryGetValue(lease, out var debit) ? debit.Core.PaidAmount : 0;
        }
    }

    /// <summary>Called by the executor (on its own thread) at slice <paramref name="index"/>: true once paid, false to stop.</summary>
    private Task<bool> DebitNoteDueAsync(ProviderLease lease, int index)
    {
        DebitSlot debit;
        TaskCompletionSource<bool> waiter;
        lock (_gate)
        {
            if (!_slots.ContainsKey(lease))
            {
                return Task.FromResult(false);
            }
            if (!_debits.TryGetValue(lease, out debit!))
            {
                _debits[lease] = debit = new DebitSlot(this, lease);
            }
            if (debit.Waiter is not null)
            {
                return Task.FromResult(false);
            }
            // Not RunContinuationsAsynchronously: the run takes its external-work mark again on the thread that pays (DebitNoteGate).
            debit.Waiter = waiter = new TaskCompletionSource<bool>();
        }
        if (debit.Shell.TryEnqueue(now => debit.Core.OnSliceDue(index, now)) != CorePost.Accepted)
        {
            debit.TakeWaiter();
            return Task.FromResult(false);
        }
        debit.Shell.Pump();
        return waiter.Task;
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

    /// <summary>The note a receipt for a slice (<see cref="DebitNoteSlicing.SliceLeaseId"/>) pays, when this node still holds it.</summary>
    private SignedDebitNote? SentNote(SignedReceipt receipt)
    {
        if (!DebitNoteSlicing.TryParseSliceLeaseId(receipt.Receipt.LeaseId, out var requestId, out var index))
        {
            return null;
        }
        lock (_gate)
        {
            return _notes.TryGetValue((receipt.Requester, requestId, index), out var note) ? note : null;
        }
    }

    /// <summary>A slice's receipt was recorded: the lease's core hears of it (the run waiting on that note goes on).</summary>
    private void DebitNotePaid(SignedReceipt receipt)
    {
        if (!DebitNoteSlicing.TryParseSliceLeaseId(receipt.Receipt.LeaseId, out var requestId, out var index))
        {
            return;
        }
        DebitSlot? debit;
        lock (_gate)
        {
            if (_registry.Find(receipt.Requester, requestId) is not { } lease || !_debits.TryGetValue(lease, out debit))
            {
                return;
            }
        }
        // Each note's payment is posted once: replayed receipts take no slot of the bounded queue (DebitNotePayments).
        if (debit.Payments.Paid(index) == DebitNotePaymentPost.Duplicate)
        {
            Interlocked.Increment(ref _debitPaymentReplays);
        }
    }

    /// <summary>The lease ended (under the lock): its debit notes' shell stops, and a task still waiting on a note stops.</summary>
    private void EndDebitNotes(ProviderLease lease)
    {
        if (_debits.Remove(lease, out var debit))
        {
            debit.Shell.Stop();
            var waiter = debit.Waiter;
            debit.Waiter = null;
            waiter?.TrySetResult(false);
        }
    }

    /// <summary>One lease's debit notes: its core, its shell, and the run waiting on a note; carries out the core's steps.</summary>
    private sealed class DebitSlot : ICoreEffects<DebitNoteStep>
    {
        private readonly ProviderService _service;
        private readonly ProviderLease _lease;

        public DebitSlot(ProviderService service, ProviderLease lease)
        {
            _service = service;
            _lease = lease;
            Core = new DebitNoteCore(lease.Terms, ExecutionMapping.LeaseId(lease.RequestId), lease.Requester, service._key.PeerId,
                service._options.Lease.DebitNoteTimeout, note => SignedDebitNote.Create(service.TamperDebitNote?.Invoke(note) ?? note, service._key));
            Shell = new CoreShell<DebitNoteStep>(this, service._time, DebitNotePayments.ShellOptions, service._work);
            Payments = new DebitNotePayments(Core, Shell);
        }

        public DebitNoteCore Core { get; }

        public CoreShell<DebitNoteStep> Shell { get; }

        /// <summary>Where the recorded payments of the lease's notes reach the core, each note's once.</summary>
        public DebitNotePayments Payments { get; }

        /// <summary>The run waiting at a slice boundary (under the service's lock).</summary>
        public TaskCompletionSource<bool>? Waiter { get; set; }

        public TaskCompletionSource<bool>? TakeWaiter()
        {
            lock (_service._gate)
            {
                var waiter = Waiter;
                Waiter = null;
                return waiter;
            }
        }

        public CoreWake WakeOf(DebitNoteStep step) => step.Wake;

        public ValueTask PerformAsync(DebitNoteStep step, CancellationToken ct)
        {
            switch (step.Action)
            {
                case DebitNoteAction.Send:
                    Send(step);
                    break;
                case DebitNoteAction.Resume:
                    Interlocked.Increment(ref _service._debitNotesPaid);
                    _service._instruments.DebitNote(LeaseRole.Provider, "paid");
                    TakeWaiter()?.TrySetResult(true);
                    break;
                case DebitNoteAction.Halt:
                    TakeWaiter()?.TrySetResult(false);
                    break;
                case DebitNoteAction.Unpaid:
                    Unpaid(step.Index);
                    break;
            }
            return ValueTask.CompletedTask;
        }

        public DebitNoteStep OnTimer(DateTimeOffset now) => Core.OnTimer(now);

        public DebitNoteStep OnEffectFailed(DebitNoteStep step, Exception error, DateTimeOffset now)
        {
            LogEffectFailed(_service._log, _lease.RequestId, error);
            return Core.OnFailed(step, now);
        }

        /// <summary>Owed, durably, before the note leaves: the slice's receipt is accepted only for a slice recorded here, and an unpaid slice counts against the requester's credit limit as an unpaid lease does.</summary>
        private void Send(DebitNoteStep step)
        {
            var note = step.Note!;
            lock (_service._gate)
            {
                _service.RememberNote(_lease.Requester, _lease.RequestId, step.Index, note);
            }
            _service._ledger.RecordOwed(step.OwedLeaseId, _lease.Requester, step.OwedAmount);
            lock (_service._gate)
            {
                if (!_service._slots.TryGetValue(_lease, out var slot) || Waiter is null)
                {
                    return; // the lease ended meanwhile: its end let the run go (EndDebitNotes)
                }
                slot.Session?.Enqueue([new LeaseDebitNote { RequestId = _lease.RequestId, Note = note.EnvelopeBytes }]);
                Interlocked.Increment(ref _service._debitNotesSent);
                _service._instruments.DebitNote(LeaseRole.Provider, "sent");
            }
        }

        /// <summary>The note was not paid within its window: the run stops and the lease is cancelled.</summary>
        private void Unpaid(int index)
        {
            Action? after = null;
            Interlocked.Increment(ref _service._debitNotesUnpaid);
            _service._instruments.DebitNote(LeaseRole.Provider, "unpaid");
            LogDebitNoteUnpaid(_service._log, _lease.RequestId, _lease.Requester, index);
            lock (_service._gate)
            {
                if (_service._slots.TryGetValue(_lease, out var slot))
                {
                    var now = _service._time.GetUtcNow();
                    var step = _lease.Cancel($"debit note {index} not paid within {_service._options.Lease.DebitNoteTimeout}", now);
                    slot.Run?.Cancel();
                    after = _service.Apply(_lease, slot, step, now);
                }
                _service.EndDebitNotes(_lease);
            }
            after?.Invoke();
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Lease {RequestId} of {Requester} stopped: debit note {Index} not paid in time")]
    private static partial void LogDebitNoteUnpaid(ILogger logger, ulong requestId, PeerId requester, int index);
}
