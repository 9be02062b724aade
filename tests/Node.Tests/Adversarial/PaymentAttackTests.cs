using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Adversaries;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Providing;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>Payment a provider can enforce: receipts only for its own leases and at most what they owe; no service without pay.</summary>
[Category("Adversarial")]
public class PaymentAttackTests
{
    private static readonly byte[] HashChain = ComputeCluster.Sample("hashchain");

    private static LeaseWork Work(TrustCluster cluster, string seed, long maxPrice) => new()
    {
        Module = HashChain,
        Input = new TaskPayload(["100"], Encoding.UTF8.GetBytes(seed)).Encode(),
        FuelLimit = 200_000_000,
        MemoryLimitBytes = 32L << 20,
        Deadline = cluster.Time.GetUtcNow() + TimeSpan.FromMinutes(5),
        MaxPricePerMegaFuel = maxPrice,
    };

    private static FreeloadingRequester Freeloader(TrustCluster.Member member) =>
        new(member.Potluck.Host, member.Key, member.Potluck.Runtime, NullLogger.Instance);

    [Test]
    public void ForgedReceipts_ForLeasesThatNeverWere_OrBeyondTheAgreedAmount_WriteNothing() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 84);
        var provider = await cluster.AddAsync("provider", provide: true, price: 10);
        var stranger = await cluster.AddAsync("stranger", provide: false);
        await stranger.Client.WaitForProvidersAsync(1, ct);
        var providerKey = stranger.Client.Providers().Single().Key;
        await using var forger = Freeloader(stranger);
        var balance = provider.Ledger.Balance();
        var entries = provider.Ledger.Recent(1000).Count;
        var now = cluster.Time.GetUtcNow();

        // 5 credits for a lease that never existed.
        var never = await forger.SendReceiptAsync(provider.PeerId, forger.ForgeReceipt(provider.PeerId, [1, 2, 3, 4, 5, 6, 7, 8], 500_000, 10_000_000, now), ct);
        // long.MaxValue micro-credits: would overflow the balance.
        var huge = await forger.SendReceiptAsync(provider.PeerId, forger.ForgeReceipt(provider.PeerId, [9, 9, 9, 9, 9, 9, 9, 9], long.MaxValue, 1_000_000, now), ct);
        // A flood of zero receipts, each for a lease of its own.
        var zeros = 0;
        for (var i = 0; i < 300; i++)
        {
            var ack = await forger.SendReceiptAsync(provider.PeerId, forger.ForgeReceipt(provider.PeerId, FreeloadingRequester.LeaseIdOf((ulong)i + 100), 0, 10, now), ct);
            zeros += ack.Status == ReceiptAckStatus.Refused ? 1 : 0;
        }

        Assert.That(never.Status, Is.EqualTo(ReceiptAckStatus.Refused), never.Detail);
        Assert.That(huge.Status, Is.EqualTo(ReceiptAckStatus.Refused), huge.Detail);
        Assert.That(zeros, Is.EqualTo(300), "every receipt for a lease that never was is refused");
        Assert.That(provider.Ledger.Balance(), Is.EqualTo(balance), "nothing credited");
        Assert.That(provider.Ledger.Recent(1000), Has.Count.EqualTo(entries), "nothing written");

        // A real lease: a receipt for more than it owes is refused; the right one is recorded, once.
        var outcome = await forger.LeaseAsync(providerKey, Work(cluster, "real", 50), ct);
        Assert.That(outcome.Kind, Is.EqualTo(LeaseOutcomeKind.Completed), outcome.Detail);
        var leaseId = FreeloadingRequester.LeaseIdOf(outcome.Terms!.Terms is { } t && LeaseCodec.TryDecodeTerms(t, new LeaseOptions(), out var terms) ? terms.RequestId : 0);
        var fuel = (ulong)outcome.Result!.FuelUsed;
        var inflated = await forger.SendReceiptAsync(provider.PeerId, forger.ForgeReceipt(provider.PeerId, leaseId, fuel, 10_000, now), ct);
        Assert.That(inflated.Status, Is.EqualTo(ReceiptAckStatus.Refused), "more than the agreed price × fuel");
        Assert.That(provider.Ledger.Balance(), Is.EqualTo(balance));
        Assert.That(provider.Ledger.Unpaid(stranger.PeerId), Is.GreaterThan(0), "the lease is owed, durably");
    });

    [Test]
    public void RequesterThatNeverPays_GetsNoNewLeaseBeyondTheCreditLimit_WhileAPayingRequesterIsServed() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 85);
        const long limit = 1_000_000;
        var provider = await cluster.AddAsync("provider", provide: true, price: 1_000_000,
            configure: c => c with { Provider = c.Provider with { CreditLimitPerRequester = limit } });
        var freeloaderNode = await cluster.AddAsync("freeloader", provide: false);
        var payer = await cluster.AddAsync("payer", provide: false, grant: 1_000_000_000);
        await freeloaderNode.Client.WaitForProvidersAsync(1, ct);
        await payer.Client.WaitForProvidersAsync(1, ct);
        var providerKey = freeloaderNode.Client.Providers().Single().Key;
        await using var freeloader = Freeloader(freeloaderNode);

        var completed = 0;
        long perLease = 0;
        LeaseOutcome? last = null;
        for (var i = 0; i < 40; i++)
        {
            last = await freeloader.LeaseAsync(providerKey, Work(cluster, $"free {i}", 2_000_000), ct);
            if (last.Kind != LeaseOutcomeKind.Completed)
            {
                break;
            }
            completed++;
            perLease = Math.Max(perLease, (last.Result!.FuelUsed * 1_000_000 + 999_999) / 1_000_000);
        }

        Assert.That(completed, Is.GreaterThan(0), "a stranger gets some work on credit");
        Assert.That(last!.Kind, Is.EqualTo(LeaseOutcomeKind.Rejected), "then no new lease until it pays");
        Assert.That(last.Detail, Does.Contain("unpaid"));
        Assert.That(provider.Ledger.Unpaid(freeloaderNode.PeerId), Is.LessThanOrEqualTo(limit + perLease), "unpaid work stays bounded by the credit limit");
        Assert.That(provider.Provider.RefusedUnpaid, Is.EqualTo(1));

        var paid = await payer.Node.SubmitAsync(OutcomeAttackTests.HashTask("payer", 100, maxPrice: 2_000_000), ct);
        await payer.Client.WhenReceiptsDeliveredAsync(ct);
        Assert.That(paid.Status, Is.EqualTo(ExecutionStatus.Success), paid.Error);
        Assert.That(TrustCluster.Earned(provider, payer), Is.EqualTo(paid.Cost).And.GreaterThan(0), "a paying requester is still served, and pays");
        Assert.That(provider.Ledger.Unpaid(payer.PeerId), Is.Zero);
    });

    [Test]
    public void ReceiptThatCouldNotBeDelivered_IsSentAgainWhileTheNodeRuns() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 86);
        var requester = await cluster.AddAsync("requester", provide: false);
        var provider = await cluster.AddAsync("provider", provide: true, price: 10);
        await requester.Client.WaitForProvidersAsync(1, ct);
        var a = requester.Potluck.Host.ListenAddresses[0];
        var b = provider.Potluck.Host.ListenAddresses[0];
        // The link breaks just as the receipt is settled, before it is handed over.
        requester.Client.AttemptEnded += attempt =>
        {
            if (attempt.Paid > 0)
            {
                cluster.Network.Partition(a, b);
            }
        };

        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("owed", 100), ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        Assert.That(requester.Ledger.Reservations(PaymentState.Settled), Has.Count.EqualTo(1), "the receipt could not be delivered");
        Assert.That(provider.Ledger.Unpaid(requester.PeerId), Is.GreaterThan(0), "the provider knows it is owed");

        cluster.Network.Heal(a, b);
        await Task.Delay(TimeSpan.FromMinutes(1), cluster.Time, ct);

        Assert.That(requester.Ledger.Reservations(PaymentState.Settled), Is.Empty, "sent again without a restart");
        Assert.That(TrustCluster.Earned(provider, requester), Is.EqualTo(result.Cost).And.GreaterThan(0));
        Assert.That(provider.Ledger.Unpaid(requester.PeerId), Is.Zero);
    });
}
