using Potluck.Node.Simulation;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Leasing;

namespace Potluck.Node.Tests.Simulation;

/// <summary>
/// A lease to a provider it cannot reach (README, "Slow leases in the simulation"): a stream that broke or could not be
/// opened on a connection is repeated after <see cref="LeaseOptions.LostStreamRetry"/>; a provider whose dial fails ends
/// the lease at once as <see cref="LeaseOutcomeKind.Unreachable"/>, and the job asks it again after its busy backoff
/// (1 s, doubling) without counting it as an attempt.
/// </summary>
[Category("fast")]
public class SimLeaseRetryTests
{
    [Test]
    public void ProviderCutOffForAMoment_JobAsksAgainAfterItsBackoff_AndCompletesOnceTheLinkHeals()
    {
        var options = new LeaseOptions();
        var (record, provider) = VirtualTimeDriver.Run(async d =>
        {
            await using var mesh = await SimulatedMesh.StartAsync(d, new MeshOptions { Nodes = 4, Providers = 1, Seed = 3, StandIns = MeshStandIns.All });
            await mesh.SettleAsync(TimeSpan.FromSeconds(10));
            var requester = mesh.Requesters.First();
            var only = mesh.Providers.Single();
            mesh.Partition([requester], [only]);

            var submitted = mesh.SubmitAsync(requester, SimulatedMesh.HashChainTask(mesh.Random, 50));
            await mesh.SettleAsync(options.RetryInterval / 2);
            Assert.That(submitted.IsCompleted, Is.False, "the job still waits for the provider it could not reach");
            mesh.Heal([requester], [only]);
            return (await submitted, only.Index);
        });

        Assert.That(record.Completed, Is.True, record.Error);
        Assert.That(record.ProviderIndex, Is.EqualTo(provider));
        Assert.That(record.History.SkipLast(1).Select(a => a.Outcome), Is.Not.Empty.And.All.EqualTo(LeaseOutcomeKind.Unreachable),
            "while the link was cut each lease ended unreachable, and the job did not give up");
        Assert.That(record.History[^1].Outcome, Is.EqualTo(LeaseOutcomeKind.Completed));
        Assert.That(record.Latency, Is.GreaterThanOrEqualTo(options.RetryInterval / 2), "not before the heal");
        Assert.That(record.Latency, Is.LessThan(options.RetryInterval), "and at the job's first ask after the heal, not a lease retry interval later");
    }
}
