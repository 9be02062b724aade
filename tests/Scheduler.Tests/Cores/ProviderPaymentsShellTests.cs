using System.Security.Cryptography;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Cores;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Providing;
using Potluck.Scheduler.Tests.Leasing;
using Potluck.Scheduler.Tests.Ledger;

namespace Potluck.Scheduler.Tests.Cores;

/// <summary>
/// Providing: the provider's payment decisions. One lease's <see cref="DebitNoteCore"/> in a real
/// <see cref="CoreShell{TStep}"/> on a <see cref="VirtualClock"/> (time moves only when a test advances it), with effects that
/// do what ProviderService's do against a real provider <see cref="CreditLedger"/> (the owed slice written before the note
/// leaves; the run let go on or stopped; the lease cancelled), and receipts taken through <see cref="ProviderAccounts.Record"/>,
/// the path ProviderService takes. Each test asserts what the honest provider ends with: its ledger (owed, earned), the
/// run, the lease.
/// </summary>
public class ProviderPaymentsShellTests
{
    private static readonly DateTimeOffset T0 = LeaseHarness.T0;
    private const long Slice = 1L << 24;
    private const long Price = 10;
    private static readonly TimeSpan Window = TimeSpan.FromSeconds(10);
    private static readonly CreditsOptions Options = CreditsFixtures.Options with { Holdback = TimeSpan.Zero };
    private static PrivateKey ProviderKey => CreditsFixtures.Provider;
    private static PrivateKey RequesterKey => CreditsFixtures.Requester;
    private static PeerId Requester => RequesterKey.PeerId;

    private static long Cost(long fuel) => Receipt.TryComputeAmount((ulong)fuel, Price, out var amount) ? amount : throw new OverflowException();

    [Test]
    public void Providing_HonestRequester_EachNotePaid_RunGoesOn_OwedClearedOnce()
    {
        using var h = new PaymentsHarness();

        h.SliceDue(0);
        Assert.That(h.Sent, Has.Count.EqualTo(1));
        Assert.That(h.Run, Is.Empty, "the run waits at the boundary");
        Assert.That(h.Ledger.Unpaid(Requester), Is.EqualTo(Cost(Slice)), "owed, durably, before the note left");
        var first = h.Pay(h.Sent[0]);
        Assert.That(first.Status, Is.EqualTo(ReceiptAckStatus.Recorded));
        Assert.That(h.Run, Is.EqualTo(new[] { true }), "paid: the run goes on");
        Assert.That(h.Ledger.Unpaid(Requester), Is.Zero);

        var replay = h.Pay(h.Sent[0]);
        Assert.That(replay.Status, Is.EqualTo(ReceiptAckStatus.AlreadyRecorded), "the same receipt again is acknowledged, not written");
        Assert.That(h.Run, Has.Count.EqualTo(1), "a replayed payment resumes nothing");
        Assert.That(h.Ledger.Requester(Requester).Consumed, Is.EqualTo(Cost(Slice)), "earned once");

        h.Time.Advance(TimeSpan.FromMinutes(1));
        h.SliceDue(1);
        Assert.That(h.Sent[1].Note.PaidBefore, Is.EqualTo(Cost(Slice)), "the next note names what the first paid");
        Assert.That(h.Sent[1].Note.CumulativeAmount, Is.EqualTo(Cost(2 * Slice)));
        Assert.That(h.Pay(h.Sent[1]).Status, Is.EqualTo(ReceiptAckStatus.Recorded));
        Assert.That(h.Run, Is.EqualTo(new[] { true, true }));
        Assert.That(h.Core.PaidAmount, Is.EqualTo(Cost(2 * Slice)), "what the final receipt's PaidBefore must name");
        Assert.That((h.Ledger.Unpaid(Requester), h.Ledger.Requester(Requester).Consumed), Is.EqualTo((0L, Cost(2 * Slice))));
        Assert.That(h.Cancelled, Is.Null);
        Assert.That(h.Time.PendingTimers, Is.Zero, "no window runs while nothing is pending");
    }

    [Test, Category("Adversarial")]
    public void Providing_ReplayedReceiptsFloodWhileTheLoopIsBusy_TheNextNotesPaymentIsNotLost_QueueBounded()
    {
        using var h = new PaymentsHarness();
        h.SliceDue(0);
        Assert.That(h.Pay(h.Sent[0]).Status, Is.EqualTo(ReceiptAckStatus.Recorded));

        // Note 1 leaves, and the shell's loop is still busy with it (a slow write, a busy thread) while receipts arrive.
        var busy = new TaskCompletionSource();
        h.HoldSend = busy;
        h.SliceDue(1);
        Assert.That(h.Sent, Has.Count.EqualTo(2));
        var replays = new List<ReceiptAck>();
        for (var i = 0; i < 40; i++)
        {
            replays.Add(h.Pay(h.Sent[0])); // the first note's receipt, again and again
        }
        var genuine = h.Pay(h.Sent[1]);
        for (var i = 0; i < 40; i++)
        {
            replays.Add(h.Pay(h.Sent[0]));
        }
        busy.SetResult();
        h.Time.Advance(2 * Window);

        Assert.That(genuine.Status, Is.EqualTo(ReceiptAckStatus.Recorded));
        Assert.That(h.Run, Is.EqualTo(new[] { true, true }), "paid: the run went on");
        Assert.That(h.Cancelled, Is.Null, "not ended at the window as unpaid");
        Assert.That(h.Core.PaidAmount, Is.EqualTo(Cost(2 * Slice)));
        Assert.That(h.Ledger.Unpaid(Requester), Is.Zero);
        Assert.That(h.Ledger.Requester(Requester).Consumed, Is.EqualTo(Cost(2 * Slice)), "earned: the two notes, once each");
        Assert.That(replays.Select(a => a.Status).Distinct(), Is.EqualTo(new[] { ReceiptAckStatus.AlreadyRecorded }), "each replay answered, none written");
        Assert.That(h.Payments.Duplicates, Is.EqualTo(80), "every replay dropped before the core's queue");
        Assert.That(h.MostPending, Is.LessThanOrEqualTo(1), "the queue held the genuine payment alone");
    }

    [Test]
    public void Providing_DebitNotePaymentRefused_RunStoppedAtTheWindow_RequesterOwesOneSlice_PaidOnlyWhatItSigned()
    {
        using var h = new PaymentsHarness();
        h.SliceDue(0);
        h.Pay(h.Sent[0]);
        h.SliceDue(1);
        var sentAt = h.Time.GetUtcNow();

        // The requester answers the note with a receipt for less than it says (as if the slice were cheaper).
        var note = h.Sent[1];
        var shortPaid = h.Pay(note, r => new Receipt
        {
            ReceiptId = r.ReceiptId, LeaseId = r.LeaseId, Requester = r.Requester, Provider = r.Provider, AttestationHash = r.AttestationHash,
            FuelUsed = r.FuelUsed - 1_000_000, PricePerMillionFuel = r.PricePerMillionFuel, PaidBefore = r.PaidBefore,
            Amount = Cost((long)r.FuelUsed - 1_000_000) - r.PaidBefore, TimestampUnixMs = r.TimestampUnixMs,
        });
        Assert.That(shortPaid.Status, Is.EqualTo(ReceiptAckStatus.Refused));
        Assert.That(shortPaid.Detail, Does.StartWith("debit note payment: "));
        Assert.That(h.Ledger.Requester(Requester).Consumed - h.Ledger.Unpaid(Requester), Is.EqualTo(Cost(Slice)), "nothing written for it");

        h.Time.Advance(Window - TimeSpan.FromTicks(1));
        Assert.That(h.Cancelled, Is.Null, "not a tick early");
        h.Time.Advance(TimeSpan.FromTicks(1));

        Assert.That(h.Cancelled, Is.EqualTo(sentAt + Window), "stopped when the window ran out");
        Assert.That(h.Run, Is.EqualTo(new[] { true, false }), "the run stopped at the unpaid note");
        Assert.That(h.Core.IsEnded && h.Shell.IsEnded, Is.True);
        Assert.That(h.Core.PaidAmount, Is.EqualTo(Cost(Slice)), "paid: the one slice it signed");
        Assert.That(h.Ledger.Unpaid(Requester), Is.EqualTo(Cost(2 * Slice) - Cost(Slice)), "unpaid: one slice, no more");
        h.SliceDue(2);
        Assert.That(h.Sent, Has.Count.EqualTo(2), "no note after the end");
    }

    [Test]
    public void Providing_NoteUnanswered_StoppedAtTheWindowOnVirtualTime_ALatePaymentIsKeptButResumesNothing()
    {
        using var h = new PaymentsHarness();
        h.Time.Advance(TimeSpan.FromMinutes(3));
        h.SliceDue(0);

        h.Time.Advance(Window - TimeSpan.FromTicks(1));
        Assert.That((h.Cancelled, h.Run.Count), Is.EqualTo(((DateTimeOffset?)null, 0)));
        h.Time.Advance(TimeSpan.FromTicks(1));
        Assert.That(h.Cancelled, Is.EqualTo(T0 + TimeSpan.FromMinutes(3) + Window));
        Assert.That(h.Run, Is.EqualTo(new[] { false }));
        Assert.That(h.Ledger.Unpaid(Requester), Is.EqualTo(Cost(Slice)), "owes the slice it took");

        var late = h.Pay(h.Sent[0]);
        Assert.That(late.Status, Is.EqualTo(ReceiptAckStatus.Recorded), "the slice was owed: a late payment is still taken");
        Assert.That(h.Ledger.Unpaid(Requester), Is.Zero);
        Assert.That(h.Run, Is.EqualTo(new[] { false }), "the stopped run stays stopped");
    }

    [Test]
    public void Providing_SliceOutOfOrderOrAtTheFuelLimit_Halts_NoNoteNothingOwed()
    {
        using var h = new PaymentsHarness(fuelLimit: 2 * Slice);

        h.SliceDue(1);
        Assert.That((h.Sent.Count, h.Run.Single()), Is.EqualTo((0, false)), "slice 1 before slice 0");
        h.SliceDue(0);
        h.SliceDue(0);
        Assert.That(h.Run, Is.EqualTo(new[] { false, false }), "a second boundary while a note is pending halts");
        h.Pay(h.Sent[0]);
        h.SliceDue(1);
        Assert.That(h.Sent, Has.Count.EqualTo(1), "(k + 1) × slice at the fuel limit: no note, the final receipt pays it");
        Assert.That(h.Run, Is.EqualTo(new[] { false, false, true, false }));
        Assert.That(h.Ledger.Unpaid(Requester), Is.Zero);
    }

    [Test]
    public void Providing_PaymentForTheWrongSlice_RefusedOrIgnored_NoteStaysPending()
    {
        using var h = new PaymentsHarness();
        h.SliceDue(0);
        var other = new PaymentsHarness.Lease(78);
        var elsewhere = h.Pay(h.Sent[0], r => new Receipt
        {
            ReceiptId = Receipt.ComputeId(other.SliceId(0), ProviderKey.PeerId, Requester), LeaseId = other.SliceId(0), Requester = r.Requester,
            Provider = r.Provider, AttestationHash = r.AttestationHash, FuelUsed = r.FuelUsed, PricePerMillionFuel = r.PricePerMillionFuel,
            PaidBefore = r.PaidBefore, Amount = r.Amount, TimestampUnixMs = r.TimestampUnixMs,
        });

        Assert.That(elsewhere.Status, Is.EqualTo(ReceiptAckStatus.Refused), "a slice of a lease never owed here");
        Assert.That(elsewhere.Detail, Is.EqualTo(nameof(LedgerResult.NotOwed)));
        Assert.That((h.Run.Count, h.Core.Pending is not null), Is.EqualTo((0, true)));
        Assert.That(h.Ledger.Unpaid(Requester), Is.EqualTo(Cost(Slice)));
    }

    [Test]
    public void Providing_ReceiptForAnotherProvidersLease_Refused_NoWrite_OwedUnchanged()
    {
        using var h = new PaymentsHarness();
        var lease = h.Completed(fuel: 3_000_000);

        var forOther = CreditsFixtures.MakeReceipt(lease.Id, RequesterKey, CreditsFixtures.Stranger, fuel: 3_000_000, price: Price);
        var ack = h.Receive(forOther, lease.Expected);

        Assert.That(ack.Status, Is.EqualTo(ReceiptAckStatus.Refused));
        Assert.That(ack.Detail, Is.EqualTo("not a receipt for this provider"));
        h.AssertOwedUnchanged(lease);
    }

    [TestCase(true, TestName = "Providing_ReceiptForMoreThanAgreed_RememberedLease_Refused_NoWrite_OwedUnchanged")]
    [TestCase(false, TestName = "Providing_ReceiptForMoreThanAgreed_LeaseForgotten_LedgerRefuses_NoWrite_OwedUnchanged")]
    public void Providing_ReceiptForMoreThanAgreed(bool remembered)
    {
        using var h = new PaymentsHarness();
        var lease = h.Completed(fuel: 3_000_000);

        var inflated = CreditsFixtures.MakeReceipt(lease.Id, RequesterKey, ProviderKey, fuel: 30_000_000, price: Price);
        var ack = h.Receive(inflated, remembered ? lease.Expected : null);

        Assert.That(ack.Status, Is.EqualTo(ReceiptAckStatus.Refused));
        Assert.That(ack.Detail, remembered ? Is.Not.EqualTo(nameof(LedgerResult.ExceedsOwed)) : Is.EqualTo(nameof(LedgerResult.ExceedsOwed)));
        h.AssertOwedUnchanged(lease);
    }

    [TestCase(true, TestName = "Providing_ReceiptOfLongMaxValue_RememberedLease_Refused_NoWrite_OwedUnchanged")]
    [TestCase(false, TestName = "Providing_ReceiptOfLongMaxValue_LeaseForgotten_LedgerRefuses_NoWrite_OwedUnchanged")]
    public void Providing_ReceiptOfLongMaxValue(bool remembered)
    {
        using var h = new PaymentsHarness();
        var lease = h.Completed(fuel: 3_000_000);
        // ceil((2^64 − 2) × 500,000 / 10^6) = 2^63 − 1: a receipt whose own arithmetic holds, for all the credit there is.
        var huge = SignedReceipt.Create(new Receipt
        {
            ReceiptId = Receipt.ComputeId(lease.Id, ProviderKey.PeerId, Requester), LeaseId = lease.Id, Requester = Requester.ToBytes(),
            Provider = ProviderKey.PeerId.ToBytes(), AttestationHash = lease.Attestation.Hash, FuelUsed = ulong.MaxValue - 1,
            PricePerMillionFuel = 500_000, Amount = long.MaxValue, TimestampUnixMs = T0.ToUnixTimeMilliseconds(),
        }, RequesterKey);

        var ack = h.Receive(huge, remembered ? lease.Expected : null);

        Assert.That(ack.Status, Is.EqualTo(ReceiptAckStatus.Refused));
        h.AssertOwedUnchanged(lease);
        Assert.That(h.Pay(lease).Status, Is.EqualTo(ReceiptAckStatus.Recorded), "the honest receipt is still taken afterwards");
        Assert.That(h.Ledger.Requester(Requester).Consumed, Is.EqualTo(lease.Amount), "the balance is what the lease cost");
    }

    [Test]
    public void Providing_SettleAndReplay_OwedClearedExactlyOnce_ASecondReceiptForTheLeaseRefused()
    {
        using var h = new PaymentsHarness();
        var lease = h.Completed(fuel: 3_000_000);
        var other = h.Completed(fuel: 5_000_000, requestId: 79);
        Assert.That(h.Ledger.Unpaid(Requester), Is.EqualTo(lease.Amount + other.Amount));

        Assert.That(h.Pay(lease).Status, Is.EqualTo(ReceiptAckStatus.Recorded));
        Assert.That(h.Ledger.Unpaid(Requester), Is.EqualTo(other.Amount), "this lease's owed cleared, the other's not");
        Assert.That(h.Pay(lease).Status, Is.EqualTo(ReceiptAckStatus.AlreadyRecorded), "a replay writes nothing");
        var later = h.Receive(SignedReceipt.Create(Receipt.For(lease.Attestation, Price, T0 + TimeSpan.FromHours(1)), RequesterKey), lease.Expected);
        Assert.That(later.Status, Is.EqualTo(ReceiptAckStatus.Refused), "another receipt for a paid lease");
        Assert.That(later.Detail, Is.EqualTo(nameof(LedgerResult.Conflict)));

        var record = h.Ledger.Requester(Requester);
        Assert.That((record.Consumed, record.Unpaid), Is.EqualTo((lease.Amount + other.Amount, other.Amount)), "earned once, owed once");
    }

    [Test]
    public void Providing_RequesterOverTheCreditLimit_RefusedUntilItSuppliesWork_PayingAloneDoesNotRaiseTheLimit()
    {
        using var h = new PaymentsHarness();
        var limit = 2 * Cost(Slice);
        var lease = h.Completed(fuel: 3 * Slice);
        Assert.That(ProviderAccounts.IsStranger(Requester, h.Ledger.Requester(Requester), null), Is.True);

        var refusal = ProviderAccounts.OverCredit(h.Ledger.Requester(Requester), limit);
        Assert.That(refusal, Is.EqualTo($"owes {lease.Amount} (unpaid leases {lease.Amount}, paid 0, supplied 0), over the credit limit of {limit}"));

        h.Pay(lease);
        Assert.That(ProviderAccounts.OverCredit(h.Ledger.Requester(Requester), limit), Does.Contain("unpaid leases 0, paid " + lease.Amount),
            "still over: credit is what it took beyond what it gave, paid or not (receipts mint nothing)");

        // The requester runs a lease for this provider, which pays it: what it supplied offsets what it took.
        var supplied = CreditsFixtures.MakeReceipt(CreditsFixtures.Lease(5), ProviderKey, RequesterKey, fuel: 3 * Slice, price: Price);
        Assert.That(h.Ledger.ReservePayment(supplied.Receipt.LeaseId, Requester, supplied.Receipt.Amount), Is.EqualTo(LedgerResult.Reserved));
        Assert.That(h.Ledger.Settle(supplied), Is.EqualTo(LedgerResult.Recorded));

        var record = h.Ledger.Requester(Requester);
        Assert.That((record.Debt, ProviderAccounts.OverCredit(record, limit)), Is.EqualTo((0L, (string?)null)), "admitted again");
        Assert.That(ProviderAccounts.IsStranger(Requester, record, null), Is.False, "and served as one in good standing");
    }

    [Test]
    public void Providing_StrangerWithVerifiedStanding_AskedOnlyWhenItOwesNothingHere()
    {
        using var h = new PaymentsHarness();
        var asked = 0;
        bool Standing(PeerId _)
        {
            asked++;
            return true;
        }

        Assert.That(ProviderAccounts.IsStranger(Requester, h.Ledger.Requester(Requester), Standing), Is.False, "its own chain speaks for it");
        h.Completed(fuel: Slice);
        Assert.That(ProviderAccounts.IsStranger(Requester, h.Ledger.Requester(Requester), Standing), Is.True, "unpaid here: a stranger");
        Assert.That(asked, Is.EqualTo(1), "the history is not asked while it owes here");
    }

    /// <summary>
    /// One lease of a provider paid as it goes: the core in its shell on virtual time, the provider's ledger, and the
    /// effects ProviderService carries out, recorded.
    /// </summary>
    private sealed class PaymentsHarness : ICoreEffects<DebitNoteStep>, IDisposable
    {
        private readonly TempDir _dir = new();
        private readonly Lease _lease = new(77);

        public PaymentsHarness(long fuelLimit = 64 * Slice)
        {
            Ledger = LedgerFactory.Open(_dir.Path, ProviderKey, Options, Time);
            var terms = new LeaseTerms { RequestId = _lease.RequestId, FuelLimit = fuelLimit, PricePerMegaFuel = Price, DebitNoteFuel = Slice };
            Core = new DebitNoteCore(terms, _lease.Id, Requester, ProviderKey.PeerId, Window, note => SignedDebitNote.Create(note, ProviderKey));
            Shell = new CoreShell<DebitNoteStep>(this, Time, DebitNotePayments.ShellOptions);
            Payments = new DebitNotePayments(Core, Shell);
        }

        public VirtualClock Time { get; } = new(T0);

        public CreditLedger Ledger { get; }

        public DebitNoteCore Core { get; }

        public CoreShell<DebitNoteStep> Shell { get; }

        /// <summary>Where recorded payments reach the core, as ProviderService posts them.</summary>
        public DebitNotePayments Payments { get; }

        /// <summary>When set, sending the next note (after its slice is written as owed) waits for it: the shell's loop is busy meanwhile.</summary>
        public TaskCompletionSource? HoldSend { get; set; }

        /// <summary>The most events the shell held waiting after a payment was posted.</summary>
        public int MostPending { get; private set; }

        /// <summary>Notes sent, in order.</summary>
        public List<SignedDebitNote> Sent { get; } = [];

        /// <summary>What the waiting run was told at each boundary: true to go on, false to stop.</summary>
        public List<bool> Run { get; } = [];

        /// <summary>When the lease was cancelled for an unpaid note.</summary>
        public DateTimeOffset? Cancelled { get; private set; }

        public void SliceDue(int index) => Shell.Post(now => Core.OnSliceDue(index, now));

        /// <summary>The requester pays a note (as its receipt says, or changed by <paramref name="tamper"/> and signed by it).</summary>
        public ReceiptAck Pay(SignedDebitNote note, Func<Receipt, Receipt>? tamper = null)
        {
            var payment = note.Payment(Time.GetUtcNow());
            return Receive(SignedReceipt.Create(tamper?.Invoke(payment) ?? payment, RequesterKey), null);
        }

        /// <summary>The honest receipt for a completed lease.</summary>
        public ReceiptAck Pay(CompletedLease lease) =>
            Receive(SignedReceipt.Create(Receipt.For(lease.Attestation, Price, T0), RequesterKey), lease.Expected);

        /// <summary>A receipt as ProviderService takes it; a slice's payment, once written, is the core's event.</summary>
        public ReceiptAck Receive(SignedReceipt receipt, ReceiptExpectation? lease)
        {
            var note = DebitNoteSlicing.TryParseSliceLeaseId(receipt.Receipt.LeaseId, out var requestId, out var index) && requestId == _lease.RequestId
                ? Sent.FirstOrDefault(n => n.Note.SliceIndex == index)
                : null;
            var (ack, written) = ProviderAccounts.Record(receipt, ProviderKey.PeerId, lease, note?.Expectation(), Ledger);
            if (note is not null && written is { } result && ProviderAccounts.IsPaid(result))
            {
                Payments.Paid(index);
                MostPending = Math.Max(MostPending, Shell.Pending);
            }
            return ack;
        }

        /// <summary>A lease completed here and recorded as owed, as ProviderService records one before its result leaves.</summary>
        public CompletedLease Completed(long fuel, ulong requestId = 80)
        {
            var id = ExecutionMapping.LeaseId(requestId);
            var attestation = SignedAttestation.Create(CreditsFixtures.MakeAttestation(id, RequesterKey, ProviderKey, (ulong)fuel), ProviderKey);
            var amount = Cost(fuel);
            Assert.That(Ledger.RecordOwed(id, Requester, amount), Is.EqualTo(LedgerResult.Owed));
            return new CompletedLease(id, attestation, amount, ReceiptExpectation.For(attestation, Price), Ledger.Requester(Requester));
        }

        public void AssertOwedUnchanged(CompletedLease lease)
        {
            Assert.That(Ledger.Requester(Requester), Is.EqualTo(lease.Before), "no write: owed and earned as they were");
            Assert.That(Ledger.Unpaid(Requester), Is.EqualTo(lease.Amount));
        }

        public CoreWake WakeOf(DebitNoteStep step) => step.Wake;

        public ValueTask PerformAsync(DebitNoteStep step, CancellationToken ct)
        {
            switch (step.Action)
            {
                case DebitNoteAction.Send:
                    Ledger.RecordOwed(step.OwedLeaseId, Requester, step.OwedAmount);
                    Sent.Add(step.Note!);
                    if (HoldSend is { } hold)
                    {
                        HoldSend = null;
                        return new ValueTask(hold.Task);
                    }
                    break;
                case DebitNoteAction.Resume:
                    Run.Add(true);
                    break;
                case DebitNoteAction.Halt:
                    Run.Add(false);
                    break;
                case DebitNoteAction.Unpaid:
                    Run.Add(false);
                    Cancelled = Time.GetUtcNow();
                    break;
            }
            return ValueTask.CompletedTask;
        }

        public DebitNoteStep OnTimer(DateTimeOffset now) => Core.OnTimer(now);

        public DebitNoteStep OnEffectFailed(DebitNoteStep step, Exception error, DateTimeOffset now) => Core.OnFailed(step, now);

        public void Dispose()
        {
            Shell.Stop();
            Ledger.Dispose();
            _dir.Dispose();
        }

        public sealed record Lease(ulong RequestId)
        {
            public byte[] Id { get; } = ExecutionMapping.LeaseId(RequestId);

            public byte[] SliceId(int index) => DebitNoteSlicing.SliceLeaseId(Id, index);
        }

        public sealed record CompletedLease(byte[] Id, SignedAttestation Attestation, long Amount, ReceiptExpectation Expected, RequesterRecord Before);
    }
}
