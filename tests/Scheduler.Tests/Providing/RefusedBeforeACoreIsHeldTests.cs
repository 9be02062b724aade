using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Providing;

namespace Potluck.Scheduler.Tests.Providing;

/// <summary>
/// Providing: a real <see cref="Scheduler.Providing.ProviderService"/> behind a real host (<see cref="ProviderHarness"/>), on
/// virtual time. A requester over its credit limit, one offering less than the advertised price, and one asking for more
/// leases at once than the per-requester cap is refused before any core is held (the provider's core accounting never rose;
/// the executor was never handed a task); a squatter whose input never comes loses its core at the input window exactly; a
/// requester that pays its notes, replays and all, runs to the end.
/// </summary>
public class RefusedBeforeACoreIsHeldTests
{
    private static long Cost(long fuel) => Receipt.TryComputeAmount((ulong)fuel, ProviderHarness.Price, out var amount) ? amount : throw new OverflowException();

    [Test, Category("Adversarial")]
    public void Providing_RequesterOverItsCreditLimit_RefusedWithTheReason_NoCoreHeld() => VirtualTimeDriver.Run(async d =>
    {
        await using var h = await ProviderHarness.StartAsync(d, seed: 801, o => o with { CreditLimitPerRequester = 1_000 });
        Assert.That(h.Ledger.RecordOwed(ExecutionMapping.LeaseId(1), h.Requester, 1_001), Is.EqualTo(LedgerResult.Owed), "an earlier lease left unpaid");
        var stream = await h.OpenAsync();

        await stream.RequestAsync(2, h.Work());
        await d.IdleAsync();

        var reject = stream.Received.OfType<LeaseReject>().Single();
        Assert.That(reject.Reason, Is.EqualTo(LeaseRejectReason.Policy));
        Assert.That(reject.Detail, Does.StartWith("owes 1001 ").And.EndWith("over the credit limit of 1000"));
        Assert.That(stream.Received.OfType<LeaseOffer>(), Is.Empty, "no terms offered");
        Assert.That((h.Service.Capacity.CoresInUse, h.Service.Capacity.PeakCoresInUse, h.Executor.Runs), Is.EqualTo((0, 0, 0)), "no core was ever held");
        Assert.That(h.Service.RefusedUnpaid, Is.EqualTo(1));
        Assert.That(h.Ledger.Unpaid(h.Requester), Is.EqualTo(1_001), "nothing more owed");
    });

    [Test, Category("Adversarial")]
    public void Providing_PriceBelowTheAdvertisement_RefusedWithThePrice_NoCoreHeld() => VirtualTimeDriver.Run(async d =>
    {
        await using var h = await ProviderHarness.StartAsync(d, seed: 802);
        var stream = await h.OpenAsync();

        await stream.RequestAsync(1, h.Work(maxPrice: ProviderHarness.Price - 1));
        await d.IdleAsync();

        var reject = stream.Received.OfType<LeaseReject>().Single();
        Assert.That(reject.Reason, Is.EqualTo(LeaseRejectReason.Price));
        Assert.That(reject.Detail, Is.EqualTo($"price is {ProviderHarness.Price} per million fuel"));
        Assert.That(stream.Received.OfType<LeaseOffer>(), Is.Empty);
        Assert.That((h.Service.Capacity.CoresInUse, h.Service.Capacity.PeakCoresInUse, h.Executor.Runs), Is.EqualTo((0, 0, 0)), "no core was ever held");
        Assert.That(h.Ledger.Unpaid(h.Requester), Is.Zero);
    });

    [Test, Category("Adversarial")]
    public void Providing_MoreLeasesAtOnceThanThePerRequesterCap_TheExtraRefused_NoCoreForIt() => VirtualTimeDriver.Run(async d =>
    {
        await using var h = await ProviderHarness.StartAsync(d, seed: 803, o => o with { MaxLeasesPerRequester = 2 });
        var stream = await h.OpenAsync();
        stream.Drop = m => m is LeaseData; // accepted, then held: the squatter's way to keep cores

        for (ulong id = 1; id <= 3; id++)
        {
            await stream.RequestAsync(id, h.Work());
        }
        await d.IdleAsync();

        Assert.That(stream.Received.OfType<LeaseOffer>().Select(o => o.RequestId), Is.EqualTo(new ulong[] { 1, 2 }));
        var reject = stream.Received.OfType<LeaseReject>().Single();
        Assert.That((reject.RequestId, reject.Reason), Is.EqualTo((3UL, LeaseRejectReason.Busy)));
        Assert.That(reject.Detail, Is.EqualTo("2 leases held here already (at most 2 per requester)"));
        Assert.That((h.Service.Capacity.CoresInUse, h.Service.Capacity.PeakCoresInUse), Is.EqualTo((2, 2)), "two of the four cores, never a third");
        Assert.That(h.Service.RefusedOverLimit, Is.EqualTo(1));

        await stream.SendAsync([new LeaseCancel { RequestId = 1, Reason = "done with it" }]);
        await stream.RequestAsync(4, h.Work());
        await d.IdleAsync();
        Assert.That(stream.Received.OfType<LeaseOffer>().Select(o => o.RequestId), Is.EqualTo(new ulong[] { 1, 2, 4 }), "below the cap again: served");
        Assert.That((h.Service.Capacity.CoresInUse, h.Service.Capacity.PeakCoresInUse), Is.EqualTo((2, 2)));
    });

    [Test, Category("Adversarial")]
    public void Providing_InputNeverArrives_LeaseEnded_CoreReleasedAtTheInputWindowExactly() => VirtualTimeDriver.Run(async d =>
    {
        // The window: InputGrace (10 s) plus the content's transfer time at the slowest rate allowed (1,300 bytes at 1,300 B/s).
        await using var h = await ProviderHarness.StartAsync(d, seed: 804, o => o with { Lease = o.Lease with { MinContentBytesPerSecond = 1_300 } });
        var window = h.Options.Lease.InputGrace + TimeSpan.FromSeconds(1);
        var stream = await h.OpenAsync();
        stream.Drop = m => m is LeaseData;

        var accepted = h.Time.GetUtcNow();
        await stream.RequestAsync(1, h.Work());
        await d.IdleAsync();
        Assert.That(stream.Received.OfType<LeaseOffer>().Count(), Is.EqualTo(1));
        Assert.That(h.Time.GetUtcNow(), Is.EqualTo(accepted), "offered and accepted without time passing");
        Assert.That(h.Service.Capacity.CoresInUse, Is.EqualTo(1), "an accepted lease holds its core");

        await Task.Delay(window - TimeSpan.FromMilliseconds(1), h.Time);
        Assert.That((h.Service.Capacity.CoresInUse, h.Ended.Count), Is.EqualTo((1, 0)), "not a millisecond early");
        await Task.Delay(TimeSpan.FromMilliseconds(2), h.Time);

        var (outcome, at) = h.Ended[1];
        Assert.That((outcome.Kind, outcome.Detail), Is.EqualTo((LeaseOutcomeKind.Expired, "module and input did not arrive in time")));
        Assert.That(at, Is.EqualTo(accepted + window), "ended at the window");
        Assert.That(h.Service.Capacity.CoresInUse, Is.Zero, "its core is free again");
        Assert.That(h.Executor.Runs, Is.Zero);
        Assert.That(stream.Received.OfType<LeaseCancel>().Single().Reason, Is.EqualTo("input not received in time"));
        Assert.That(h.Ledger.Unpaid(h.Requester), Is.Zero, "nothing ran, nothing is owed");
    });

    [Test]
    public void Providing_RequesterThatPaysItsNotes_IsNotStopped_EvenWhileReplayingOldReceipts() => VirtualTimeDriver.Run(async d =>
    {
        const long slice = 1_000_000;
        await using var h = await ProviderHarness.StartAsync(d, seed: 805, o => o with { Lease = o.Lease with { DebitNoteFuel = slice } });
        h.Executor.Slices = 3;
        h.Executor.Fuel = 3 * slice + slice / 2;
        var stream = await h.OpenAsync();
        stream.ReplaysBeforeEachPayment = 50; // each earlier receipt sent again before the next note is paid

        await stream.RequestAsync(1, h.Work(debitNotes: true));
        await d.IdleAsync();

        var result = stream.Received.OfType<LeaseResult>().Single();
        Assert.That((result.Status, result.FuelUsed), Is.EqualTo((ExecutionStatus.Success, h.Executor.Fuel)));
        Assert.That(h.Ended[1].Outcome.Kind, Is.EqualTo(LeaseOutcomeKind.Completed));
        Assert.That((h.Service.DebitNotesSent, h.Service.DebitNotesPaid, h.Service.DebitNotesUnpaid), Is.EqualTo((3L, 3L, 0L)));
        Assert.That(h.Service.DebitPaymentReplays, Is.EqualTo(2 * 50), "the replays were answered and posted nowhere");
        Assert.That(stream.Acks.Count(a => a.Status == ReceiptAckStatus.Recorded), Is.EqualTo(3));
        Assert.That(stream.Acks.Count(a => a.Status == ReceiptAckStatus.AlreadyRecorded), Is.EqualTo(100));
        var record = h.Ledger.Requester(h.Requester);
        Assert.That(record.Consumed - record.Unpaid, Is.EqualTo(Cost(3 * slice)), "three notes paid, once each");
        Assert.That(record.Unpaid, Is.EqualTo(Cost(h.Executor.Fuel) - Cost(3 * slice)), "the rest is owed for the final receipt");
        Assert.That(h.Service.Capacity.CoresInUse, Is.Zero);

        await stream.RequestAsync(2, h.Work(debitNotes: true));
        await d.IdleAsync();
        Assert.That(stream.Received.OfType<LeaseReject>(), Is.Empty, "a paying requester is served again");
        Assert.That(stream.Received.OfType<LeaseResult>().Count(), Is.EqualTo(2));
    });
}
