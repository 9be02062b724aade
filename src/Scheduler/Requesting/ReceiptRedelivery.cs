using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;

namespace Potluck.Scheduler.Requesting;

/// <summary>
/// The requester's retry of payments it settled but could not hand over (a provider away, a broken stream, a timeout): every
/// receipt the ledger holds as Settled is sent again at once when the node starts and then every
/// <see cref="ComputeClientOptions.ReceiptRetryInterval"/> while it runs, on the injected clock; a delivery marks its
/// receipt delivered in the ledger when the provider acknowledges it, so each is sent until it is, and the provider counts
/// a receipt id once. The delivery itself (lease stream or <c>/potluck/receipt/1.0.0</c>) is handed in.
/// </summary>
/// <param name="deliver">Sends one receipt (provider, lease id, envelope); true once acknowledged (and marked delivered).</param>
internal sealed class ReceiptRedelivery(CreditLedger ledger, Func<PeerId, byte[], byte[], CancellationToken, Task<bool>> deliver,
    TimeProvider time, TimeSpan interval)
{
    /// <summary>Sends every settled, unacknowledged receipt again; returns how many are now delivered.</summary>
    public async Task<int> RedeliverAsync(CancellationToken ct)
    {
        var delivered = 0;
        foreach (var r in ledger.Reservations(PaymentState.Settled))
        {
            if (r.Receipt is { } receipt && await deliver(r.Provider, r.LeaseId, receipt, ct))
            {
                delivered++;
            }
        }
        return delivered;
    }

    /// <summary>Sends unacknowledged receipts again now and every interval until <paramref name="ct"/> is cancelled.</summary>
    public async Task RunAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            if (ledger.Reservations(PaymentState.Settled).Count > 0)
            {
                await RedeliverAsync(ct);
            }
            await Task.Delay(interval, time, ct);
        }
    }
}
