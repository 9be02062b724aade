using Potluck.Node.Hosting;
using Potluck.Node.Tests.Compute;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Requesting;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// Debit notes (<see cref="DebitNoteSlicing"/>): a long lease is paid slice by slice as it runs, so work taken unpaid stays
/// within one slice. Real sandboxes (a module that spins, calling a function, until its fuel runs out), real hosts on the simulated network and
/// virtual time; the sandbox's epoch ticks on the wall clock, so how many notes a run sends varies, never what is paid.
/// </summary>
public class DebitNoteAttackTests
{
    private const long Slice = 1L << 24;
    private const long Price = 10;
    /// <summary>Spins until its fuel runs out, calling a function each round (Wasmtime saves the fuel count at calls).</summary>
    private static readonly byte[] Loop = Wasmtime.Module.ConvertText(
        "(module (memory (export \"memory\") 1) (func $f) (func (export \"_start\") (loop $l (call $f) (br $l))))");

    /// <summary>
    /// Spins until its fuel runs out without a call: Wasmtime keeps its fuel count in a register, saved only where the
    /// sandbox's fences (FuelFence) make it (on main: only at the end, so no note ever came due).
    /// </summary>
    private static readonly byte[] CallFreeLoop = Wasmtime.Module.ConvertText(
        "(module (memory (export \"memory\") 1) (func (export \"_start\") (loop $l (br $l))))");

    private static long Cost(long fuel) => Receipt.TryComputeAmount((ulong)fuel, Price, out var amount) ? amount : throw new OverflowException();

    private static ComputeOptions Sliced(ComputeOptions c, TimeSpan? timeout = null, long? creditLimit = null) => c with
    {
        Provider = c.Provider with
        {
            Lease = c.Provider.Lease with { DebitNoteFuel = Slice, DebitNoteTimeout = timeout ?? TimeSpan.FromSeconds(10) },
            CreditLimitPerRequester = creditLimit ?? c.Provider.CreditLimitPerRequester,
        },
        Sandbox = c.Sandbox with { EpochTick = TimeSpan.FromMilliseconds(1) },
    };

    private static TaskSubmission LoopTask(long fuel, bool callFree = false) => new()
    {
        Module = callFree ? CallFreeLoop : Loop,
        Fuel = fuel,
        MemoryBytes = 32L << 20,
        MaxPricePerMegaFuel = 50,
    };

    [TestCase(false)]
    [TestCase(true)]
    public void HonestLongTask_IsPaidSliceBySlice_AndTheTotalsAreThoseOfOneReceipt(bool callFree) => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 310);
        var provider = await cluster.AddAsync("provider", provide: true, price: Price, configure: c => Sliced(c));
        var requester = await cluster.AddAsync("requester", provide: false);
        await requester.Client.WaitForProvidersAsync(1, ct);

        const long fuel = 8 * Slice;
        var result = await requester.Node.SubmitAsync(LoopTask(fuel, callFree), ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        await requester.Node.Chain!.WhenIdleAsync(ct);

        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.OutOfFuel), result.Error);
        Assert.That(result.Fuel, Is.EqualTo(fuel));
        var notes = provider.Provider.DebitNotesPaid;
        Assert.That(notes, Is.InRange(1L, 7L), "paid as it went: one note per slice boundary the run was seen to pass");
        Assert.That(requester.Client.DebitNotesPaid, Is.EqualTo(notes));
        Assert.That((provider.Provider.DebitNotesUnpaid, requester.Client.DebitNotesRefused), Is.EqualTo((0L, 0L)));
        Assert.That(result.Cost, Is.EqualTo(Cost(fuel)), "the notes and the final receipt cost what one receipt for the fuel would");
        Assert.That(TrustCluster.Earned(provider, requester), Is.EqualTo(Cost(fuel)), "the provider's ledger agrees");
        Assert.That(TrustCluster.Spent(requester, provider), Is.EqualTo(Cost(fuel)), "the requester's ledger agrees");
        Assert.That(provider.Ledger.Unpaid(requester.PeerId), Is.Zero);
        Assert.That(requester.Ledger.Reservations(PaymentState.Settled), Is.Empty, "every payment delivered");

        var mine = ChainAudit.Verify(requester.Ledger);
        var theirs = ChainAudit.Verify(provider.Ledger);
        Assert.That(mine.Problems, Is.Empty);
        Assert.That(theirs.Problems, Is.Empty);
        Assert.That((mine.PaymentsMade, theirs.PaymentsReceived, mine.Unlinked), Is.EqualTo((notes + 1, notes + 1, 0L)), "each note and the final receipt linked in both chains");
        Assert.That(mine.Proposals, Is.EqualTo(theirs.Agreements).And.InRange(1L, notes + 1), "in batch blocks: as many as the rounds they fell in");
        Assert.That(mine.Paid, Is.EqualTo(Cost(fuel)).And.EqualTo(theirs.Earned));
    });

    [TestCase(false)]
    [TestCase(true, Description = "a loop that makes no call: on main it ran to its end with no note asked, all of it unpaid")]
    [Category("Adversarial")]
    public void RequesterThatStopsPaying_IsStopped_OwesAtMostOneSlice_AndIsRefusedNewLeases(bool callFree) => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 311);
        // Credit for two slices: a requester that took three (two paid, one not) is over it.
        var provider = await cluster.AddAsync("provider", provide: true, price: Price,
            configure: c => Sliced(c, TimeSpan.FromSeconds(5), creditLimit: 2 * Cost(Slice)));
        var requester = await cluster.AddAsync("requester", provide: false);
        await requester.Client.WaitForProvidersAsync(1, ct);
        requester.Client.PayDebitNote = note => note.Note.SliceIndex < 2; // pays slices 0 and 1, never slice 2

        SubmissionResult? result = null;
        try
        {
            result = await requester.Node.SubmitAsync(LoopTask(64 * Slice, callFree), ct);
        }
        catch (SubmissionException)
        {
        }

        Assert.That(result, Is.Null, "no result without paying for the work");
        Assert.That(provider.Provider.DebitNotesUnpaid, Is.EqualTo(1), "the provider stopped at the unpaid note");
        Assert.That(provider.Provider.DebitNotesPaid, Is.EqualTo(2));
        Assert.That(TrustCluster.Earned(provider, requester), Is.EqualTo(Cost(2 * Slice)), "paid for two slices");
        Assert.That(TrustCluster.Spent(requester, provider), Is.EqualTo(Cost(2 * Slice)));
        var owed = provider.Ledger.Unpaid(requester.PeerId);
        Assert.That(owed, Is.EqualTo(Cost(3 * Slice) - Cost(2 * Slice)).And.LessThanOrEqualTo(Cost(Slice)), "unpaid work: one slice");
        SubmissionResult? after = null;
        try
        {
            after = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("after", 10), ct);
        }
        catch (SubmissionException)
        {
        }
        Assert.That(after, Is.Null);
        Assert.That(provider.Provider.RefusedUnpaid, Is.GreaterThanOrEqualTo(1), "no new lease: the requester is over its credit");
    });

    [TestCase("fuel")]
    [TestCase("price")]
    [TestCase("replay")]
    [Category("Adversarial")]
    public void ProviderLyingInANote_IsRefusedAndNotPaid(string lie) => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 312);
        var provider = await cluster.AddAsync("provider", provide: true, price: Price, configure: c => Sliced(c, TimeSpan.FromSeconds(5)));
        var requester = await cluster.AddAsync("requester", provide: false);
        await requester.Client.WaitForProvidersAsync(1, ct);
        long honest = 0;
        provider.Provider.TamperDebitNote = note =>
        {
            if (note.SliceIndex == 0)
            {
                honest = note.CumulativeAmount;
                return note;
            }
            var (fuel, price, index, paidBefore) = lie switch
            {
                "fuel" => (note.CumulativeFuel + Slice, note.PricePerMillionFuel, note.SliceIndex, note.PaidBefore),
                "price" => (note.CumulativeFuel, note.PricePerMillionFuel * 5, note.SliceIndex, note.PaidBefore),
                _ => ((ulong)Slice, note.PricePerMillionFuel, 0, 0L), // slice 0 again: paid twice?
            };
            Receipt.TryComputeAmount(fuel, price, out var amount);
            return new DebitNote
            {
                LeaseId = note.LeaseId, Requester = note.Requester, Provider = note.Provider, SliceIndex = index, CumulativeFuel = fuel,
                PricePerMillionFuel = price, CumulativeAmount = amount, PaidBefore = paidBefore, TimestampUnixMs = note.TimestampUnixMs + 1,
            };
        };

        try
        {
            await requester.Node.SubmitAsync(LoopTask(64 * Slice), ct);
        }
        catch (SubmissionException)
        {
        }
        await requester.Client.WhenReceiptsDeliveredAsync(ct);

        Assert.That(requester.Client.DebitNotesRefused, Is.GreaterThanOrEqualTo(1), "the lie is refused");
        Assert.That(requester.Client.DebitNotesPaid, Is.EqualTo(provider.Provider.DebitNotesPaid));
        Assert.That(TrustCluster.Spent(requester, provider), Is.EqualTo(honest * requester.Client.DebitNotesPaid), "only honest first slices paid");
        Assert.That(TrustCluster.Earned(provider, requester), Is.EqualTo(TrustCluster.Spent(requester, provider)));
        Assert.That(provider.Provider.DebitNotesUnpaid, Is.GreaterThanOrEqualTo(1), "the lying provider got nothing for it and stopped");
    });

    [Test, Category("Adversarial")]
    public void ProviderCrashingMidSlice_LosesNothing_AndCountsNothingTwice() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 313);
        var provider = await cluster.AddAsync("provider", provide: true, price: Price, configure: c => Sliced(c));
        var requester = await cluster.AddAsync("requester", provide: false);
        await requester.Client.WaitForProvidersAsync(1, ct);
        var paidOne = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        requester.Client.PayDebitNote = note =>
        {
            if (note.Note.SliceIndex == 1)
            {
                paidOne.TrySetResult();
            }
            return true;
        };

        var submission = requester.Node.SubmitAsync(LoopTask(8 * Slice), ct);
        await paidOne.Task;
        await cluster.StopAsync(provider); // mid-lease, the payment of slice 1 on its way or not
        var restarted = await cluster.RestartAsync(provider);
        SubmissionResult? result = null;
        try
        {
            result = await submission;
        }
        catch (SubmissionException)
        {
        }
        await Task.Delay(TimeSpan.FromMinutes(1), cluster.Time, ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);

        var earned = TrustCluster.Earned(restarted, requester);
        var spent = TrustCluster.Spent(requester, restarted);
        Assert.That(spent, Is.GreaterThanOrEqualTo(Cost(2 * Slice)), "slices 0 and 1 were paid before the crash");
        Assert.That(earned, Is.EqualTo(spent), "what was paid is earned, once: nothing lost, nothing twice");
        Assert.That(requester.Ledger.Reservations(PaymentState.Settled), Is.Empty, "every settled payment delivered after the restart");
        Assert.That(restarted.Ledger.Unpaid(requester.PeerId), Is.LessThanOrEqualTo(Cost(Slice)), "owed unpaid: at most the slice the crash cut off");
        if (result is not null)
        {
            Assert.That(result.Cost, Is.LessThanOrEqualTo(spent));
        }
    });
}
