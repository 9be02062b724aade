using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Providing;

namespace Potluck.Scheduler.Tests.Providing;

/// <summary>
/// A receipt flood on lease streams (<see cref="ProviderHarness"/>: a real provider on a real host, virtual time). A requester's
/// receipts, on all its streams, are answered one at a time in arrival order, with at most
/// <see cref="ProviderOptions.MaxQueuedReceipts"/> waiting; while that many wait a stream that sent one is read no further.
/// So a requester that sends receipts by the hundred (replays
/// of its own, and ones it signed for leases that never existed) holds only that many in the provider's memory and one
/// piece of its background work, every receipt is still answered in the order sent, its genuine debit-note payments are
/// recorded, and a requester on another stream is served and paid as if nothing happened.
/// </summary>
public class ReceiptFloodTests
{
    private const int Waiting = 4;
    private const long Slice = 1_000_000;

    private static long Cost(long fuel) => Receipt.TryComputeAmount((ulong)fuel, ProviderHarness.Price, out var amount) ? amount : throw new OverflowException();

    [Test, Category("Adversarial")]
    public void Providing_ReceiptFloodOnALeaseStream_AnsweredOneAtATimeInOrder_GenuinePaymentsRecorded_OtherRequesterPaid() => VirtualTimeDriver.Run(async d =>
    {
        const int replays = 200, forged = 200;
        await using var h = await ProviderHarness.StartAsync(d, seed: 806,
            o => o with { MaxQueuedReceipts = Waiting, Lease = o.Lease with { DebitNoteFuel = Slice } });
        h.Executor.Slices = 3;
        h.Executor.Fuel = 3 * Slice + Slice / 2;
        var flooder = await h.OpenAsync();
        flooder.ReplaysBeforeEachPayment = replays; // its last payment again, before each payment after the first
        flooder.ForgedBeforeEachPayment = forged;   // and receipts for leases that never existed, before every payment
        // Another identity on its own node (not the harness's seed: that one's first keys are the provider's and the flooder's).
        var honest = await h.OpenAsync(PrivateKey.FromRandom(new Random(9_806)));

        await flooder.RequestAsync(1, h.Work(debitNotes: true));
        await honest.RequestAsync(2, h.Work(debitNotes: true));
        await d.IdleAsync();

        // Bounded: never more than Waiting receipts waiting and one being answered on the flooder's stream (the honest
        // requester, one receipt at a time, may add its one); the bound was reached and held the reader back.
        Assert.That(h.Service.PeakReceiptsPending, Is.InRange(Waiting, Waiting + 2), "receipts read and not yet answered, at most");
        Assert.That(h.Service.ReceiptsHeldBack, Is.GreaterThan(0), "the flooder's stream was read no further while its queue was full");
        Assert.That(h.Service.ReceiptsPending, Is.Zero);

        // Every receipt the flooder sent is answered, in the order it was sent.
        var expected = new List<ReceiptAckStatus>();
        for (var note = 0; note < 3; note++)
        {
            expected.AddRange(Enumerable.Repeat(ReceiptAckStatus.AlreadyRecorded, note == 0 ? 0 : replays));
            expected.AddRange(Enumerable.Repeat(ReceiptAckStatus.Refused, forged));
            expected.Add(ReceiptAckStatus.Recorded);
        }
        Assert.That(flooder.Acks.Select(a => a.Status), Is.EqualTo(expected));

        // The flooder's genuine payments are recorded once each, the forged ones nowhere; it is stopped for nothing it paid.
        Assert.That(h.Ended[1].Outcome.Kind, Is.EqualTo(LeaseOutcomeKind.Completed));
        var flooderRecord = h.Ledger.Requester(h.Requester);
        Assert.That(flooderRecord.Consumed - flooderRecord.Unpaid, Is.EqualTo(Cost(3 * Slice)), "three notes paid, once each; no forged receipt written");
        Assert.That(h.Service.DebitPaymentReplays, Is.EqualTo(2 * replays));

        // The honest requester on its own stream: served to the end, every note paid and acknowledged at once.
        Assert.That(h.Ended[2].Outcome.Kind, Is.EqualTo(LeaseOutcomeKind.Completed));
        Assert.That(honest.Received.OfType<LeaseResult>().Single().FuelUsed, Is.EqualTo(h.Executor.Fuel));
        Assert.That(honest.Acks.Select(a => a.Status), Is.EqualTo(Enumerable.Repeat(ReceiptAckStatus.Recorded, 3)));
        var honestRecord = h.Ledger.Requester(honest.Key.PeerId);
        Assert.That(honestRecord.Consumed - honestRecord.Unpaid, Is.EqualTo(Cost(3 * Slice)), "the honest requester's three notes paid");
        Assert.That((h.Service.DebitNotesSent, h.Service.DebitNotesPaid, h.Service.DebitNotesUnpaid), Is.EqualTo((6L, 6L, 0L)));
        Assert.That(h.Service.Capacity.CoresInUse, Is.Zero);
    });

    [Test, Category("Adversarial")]
    public void Providing_ReceiptFloodWithoutALease_EachAnsweredRefused_NothingWritten_AtMostTheQueueHeld() => VirtualTimeDriver.Run(async d =>
    {
        const int flood = 1_000;
        await using var h = await ProviderHarness.StartAsync(d, seed: 807, o => o with { MaxQueuedReceipts = Waiting });
        var stream = await h.OpenAsync();
        var before = h.Ledger.Requester(h.Requester);

        for (var i = 0; i < flood; i++)
        {
            await stream.SendReceiptAsync((ulong)i, stream.Forged(h.Time.GetUtcNow()));
        }
        await d.IdleAsync();

        Assert.That(h.Service.PeakReceiptsPending, Is.InRange(Waiting, Waiting + 1), "the queue filled, and held no more (and the one being answered)");
        Assert.That(stream.Acks.Select(a => a.Status), Is.EqualTo(Enumerable.Repeat(ReceiptAckStatus.Refused, flood)), "every one answered");
        Assert.That(stream.Received.OfType<LeaseReceiptAck>().Select(a => a.RequestId), Is.EqualTo(Enumerable.Range(0, flood).Select(i => (ulong)i)), "in the order sent");
        Assert.That(h.Ledger.Requester(h.Requester), Is.EqualTo(before), "nothing written for any of them");
        Assert.That(h.Service.ReceiptsPending, Is.Zero);
    });

    [Test, Category("Adversarial")]
    public void Providing_ReceiptFloodOnSeveralStreamsOfOneRequester_ShareOneQueue_EachStreamAnsweredInOrder() => VirtualTimeDriver.Run(async d =>
    {
        const int streams = 3, flood = 300;
        await using var h = await ProviderHarness.StartAsync(d, seed: 808, o => o with { MaxQueuedReceipts = Waiting });
        var opened = new List<LeaseStream>();
        for (var s = 0; s < streams; s++)
        {
            opened.Add(await h.OpenAsync());
        }

        await Task.WhenAll(opened.Select(async stream =>
        {
            for (var i = 0; i < flood; i++)
            {
                await stream.SendReceiptAsync((ulong)i, stream.Forged(h.Time.GetUtcNow()));
            }
        }));
        await d.IdleAsync();

        // One queue for the requester, not one per stream: its Waiting, the one being answered, and at most one more each
        // stream read while waiting for room (a queue per stream would hold Waiting + 1 for each).
        Assert.That(h.Service.PeakReceiptsPending, Is.InRange(Waiting, Waiting + 1 + streams));
        foreach (var stream in opened)
        {
            Assert.That(stream.Received.OfType<LeaseReceiptAck>().Select(a => a.RequestId), Is.EqualTo(Enumerable.Range(0, flood).Select(i => (ulong)i)), "every one answered, in the order sent on its stream");
        }
        Assert.That(h.Service.ReceiptsPending, Is.Zero);
    });
}
