using Potluck.Node.Simulation;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Leasing;

namespace Potluck.Node.Tests.Simulation;

/// <summary>
/// A lease to a provider it cannot reach (README, "Slow leases in the simulation"): a stream that broke or could not be
/// opened on a connection is repeated after <see cref="LeaseOptions.LostStreamRetry"/>, but a provider whose dial fails is
/// retried at <see cref="LeaseOptions.RetryInterval"/>: repeating at once would only spend the lease's attempts.
/// </summary>
[Category("fast")]
public class SimLeaseRetryTests
{
    [Test]
    public void ProviderCutOffForAMoment_LeaseWaitsItsRetryInterval_AndCompletesOnceTheLinkHeals()
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
            Assert.That(submitted.IsCompleted, Is.False, "the lease still waits for the provider it could not reach");
            mesh.Heal([requester], [only]);
            return (await submitted, only.Index);
        });

        Assert.That(record.Completed, Is.True, record.Error);
        Assert.That(record.ProviderIndex, Is.EqualTo(provider));
        Assert.That(record.History, Has.Count.EqualTo(1), "one lease: its attempts were not spent while the link was cut");
        Assert.That(record.Latency, Is.GreaterThanOrEqualTo(options.RetryInterval), "the request was repeated at the retry interval");
        Assert.That(record.Latency, Is.LessThan(options.RetryInterval * 2), "and went through at the first repeat after the heal");
    }
}
