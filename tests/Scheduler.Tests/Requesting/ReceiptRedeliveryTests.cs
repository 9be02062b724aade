using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Requesting;
using Potluck.Scheduler.Tests.Ledger;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Requesting;

/// <summary>
/// A receipt the requester settled but could not hand over is sent again while the node runs (<see cref="ReceiptRedelivery"/>,
/// as ComputeClient runs it), on virtual time driven by a <see cref="VirtualTimeDriver"/>, against a real requester ledger;
/// the delivery is a fake that fails while the provider is away and, once it is back, acknowledges as a provider would.
/// </summary>
public class ReceiptRedeliveryTests
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(30);

    [Test]
    public void Requesting_ReceiptUndelivered_SentAgainEachIntervalWhileRunning_UntilAcknowledged_ThenNotAgain()
    {
        using var dir = new TempDir();
        VirtualTimeDriver.Run(async d =>
        {
            var t0 = d.Clock.GetUtcNow();
            using var ledger = LedgerFactory.Open(dir.Path, Requester, Options, d.Clock);
            var receipt = MakeReceipt(Lease(1), Requester, Provider);
            Assert.That(ledger.ReservePayment(receipt.Receipt.LeaseId, Provider.PeerId, receipt.Receipt.Amount), Is.EqualTo(LedgerResult.Reserved));
            Assert.That(ledger.Settle(receipt), Is.EqualTo(LedgerResult.Recorded));
            var attempts = new List<DateTimeOffset>();
            var providerAway = true;
            Task<bool> Deliver(PeerId provider, byte[] leaseId, byte[] envelope, CancellationToken ct)
            {
                Assert.That(provider, Is.EqualTo(Provider.PeerId));
                Assert.That(envelope, Is.EqualTo(receipt.EnvelopeBytes));
                attempts.Add(d.Clock.GetUtcNow());
                return Task.FromResult(!providerAway && ledger.MarkDelivered(leaseId) == LedgerResult.Delivered);
            }
            using var stop = new CancellationTokenSource();
            var run = new ReceiptRedelivery(ledger, Deliver, d.Clock, Interval).RunAsync(stop.Token);

            Assert.That(attempts, Is.EqualTo(new[] { t0 }), "sent at once when the node starts");
            await Task.Delay(Interval - TimeSpan.FromMilliseconds(1), d.Clock);
            Assert.That(attempts, Has.Count.EqualTo(1), "not a millisecond early (the clock's timers count whole milliseconds)");
            await Task.Delay(Interval, d.Clock);
            Assert.That(attempts, Is.EqualTo(new[] { t0, t0 + Interval }), "sent again after the interval, the node still running");
            Assert.That(ledger.UndeliveredReceipts(), Is.EqualTo(new[] { receipt.EnvelopeBytes }), "still owed to the provider");

            providerAway = false;
            await Task.Delay(TimeSpan.FromMilliseconds(2), d.Clock);
            Assert.That(attempts, Is.EqualTo(new[] { t0, t0 + Interval, t0 + 2 * Interval }));
            Assert.That(ledger.UndeliveredReceipts(), Is.Empty, "acknowledged: delivered");
            Assert.That(ledger.Reservations(PaymentState.Delivered), Has.Count.EqualTo(1));

            await Task.Delay(10 * Interval, d.Clock);
            Assert.That(attempts, Has.Count.EqualTo(3), "a delivered receipt is not sent again");
            stop.Cancel();
            await Task.WhenAny(run);
            Assert.That(run.IsCanceled, Is.True, "stops with the node");
        });
    }
}
