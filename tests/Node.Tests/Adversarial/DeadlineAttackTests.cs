using System.Text;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Adversaries;
using Potluck.Scheduler.Leasing;
using Potluck.Node.Tests.Compute;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>Deadlines follow from the fuel limit and the provider's speed: nobody holds the other side for a day with a tiny task.</summary>
[Category("Adversarial")]
public class DeadlineAttackTests
{
    [Test]
    public void ProviderThatTakesATinyTaskAndNeverAnswers_HoldsTheRequesterSecondsNotTheDayItAskedFor() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var cluster = new TrustCluster(d, seed: 94);
        var requester = await cluster.AddAsync("requester", provide: false);
        StallingExecutor? stalling = null;
        // Cheapest, so chosen first; heartbeats keep its lease alive, but no result ever comes.
        var staller = await cluster.AddAsync("staller", provide: true, price: 5, decorate: _ => stalling = new StallingExecutor());
        var honest = await cluster.AddAsync("honest", provide: true, price: 10);
        await requester.Client.WaitForProvidersAsync(2, ct);
        var ended = new List<LeaseOutcome>();
        staller.Provider.LeaseEnded += (_, _, outcome) => ended.Add(outcome);
        var started = cluster.Time.GetUtcNow();

        // The requester is willing to wait a day; the fuel limit (2·10^8 at the default 5·10^8 fuel/s) says under a second.
        var result = await requester.Node.SubmitAsync(OutcomeAttackTests.HashTask("slow", 50) with { Deadline = TimeSpan.FromDays(1) }, ct);
        await requester.Client.WhenReceiptsDeliveredAsync(ct);
        var waited = cluster.Time.GetUtcNow() - started;

        Assert.That(stalling!.Stalled, Is.EqualTo(1), "the staller took the task");
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("slow"u8.ToArray(), 50)));
        Assert.That(result.Provider, Is.EqualTo(honest.PeerId), "the task completed elsewhere");
        Assert.That(waited, Is.LessThan(TimeSpan.FromMinutes(1)), "held for the fuel-derived deadline (30 s minimum run time plus the input's grace), not a day");
        Assert.That(ended.Single().Kind, Is.EqualTo(LeaseOutcomeKind.Expired), "the staller's lease ended at its deadline");
        Assert.That(staller.Provider.Capacity.CoresInUse, Is.Zero, "and its core is free");
        Assert.That(TrustCluster.Spent(requester, staller), Is.Zero, "nothing paid for no result");
    });
}
