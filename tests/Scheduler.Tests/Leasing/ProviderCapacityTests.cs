using Potluck.Protocol.Identity;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Tests.Leasing;

public class ProviderCapacityTests
{
    private static readonly DateTimeOffset T0 = LeaseHarness.T0;

    [Test]
    public void Reserve_BeyondCoresOrMemory_Fails_AndReleaseIsIdempotent()
    {
        var capacity = new ProviderCapacity(2, 100);
        Assert.That(capacity.TryReserve(60, out var a), Is.True);
        Assert.That(capacity.TryReserve(60, out _), Is.False, "memory short");
        Assert.That(capacity.TryReserve(40, out var b), Is.True);
        Assert.That(capacity.TryReserve(0, out _), Is.False, "cores short");
        a.Dispose();
        a.Dispose();
        Assert.That(capacity.CoresInUse, Is.EqualTo(1));
        Assert.That(capacity.MemoryInUse, Is.EqualTo(40));
        b.Dispose();
        Assert.That(capacity.AvailableCores, Is.EqualTo(2));
    }

    /// <summary>
    /// Many requesters, many leases, random interleavings of requests, retries, accepts, completions, cancels and
    /// time jumps, all through the real state machines: the provider never holds more leases than cores, never runs
    /// more tasks than cores, and every finished lease has given its core back.
    /// </summary>
    [FsCheck.NUnit.Property(MaxTest = 60)]
    public bool ConcurrentRequests_NeverExceedAdvertisedCores(int seed, byte coreCount) => Scenario(seed, coreCount).Ok;

    [Test]
    public void ConcurrentRequests_ScenarioReallySaturatesTheProvider()
    {
        var runs = Enumerable.Range(0, 10).Select(seed => Scenario(seed, 1)).ToList();
        Assert.That(runs.All(r => r.Ok));
        Assert.That(runs.Count(r => r.Peak == 2), Is.GreaterThan(5), "both cores were in use at once");
        Assert.That(runs.Sum(r => r.BusyRejects), Is.GreaterThan(10), "requests were turned away as busy");
        Assert.That(runs.Sum(r => r.Executions), Is.GreaterThan(10), "tasks ran");
    }

    private static (bool Ok, int Peak, int BusyRejects, int Executions) Scenario(int seed, byte coreCount)
    {
        var busy = 0;
        var executions = 0;
        var random = new Random(seed);
        var cores = 1 + coreCount % 4;
        // Chunks trickle in over many virtual seconds here: a long input grace keeps leases receiving rather than expiring.
        var options = new LeaseOptions { MaxChunkBytes = 64, InputGrace = TimeSpan.FromMinutes(10) };
        var capacity = new ProviderCapacity(cores, 1L << 40);
        var providerKey = PrivateKey.FromRandom(new Random(1));
        var registry = new ProviderLeaseRegistry(providerKey, new ProviderPolicy { PricePerMegaFuel = 1 }, capacity, new FakeModuleCache(), options);
        var requesterKeys = Enumerable.Range(0, 6).Select(i => PrivateKey.FromRandom(new Random(100 + i))).ToArray();
        var requesters = new List<(PrivateKey Key, RequesterLease Lease)>();
        var inFlight = new List<(PrivateKey Key, LeaseMessage Message, bool ToProvider)>();
        var running = new HashSet<ProviderLease>();
        var now = T0;

        void FromProvider(PrivateKey requester, LeaseStep step, ProviderLease? lease)
        {
            inFlight.AddRange(step.Send.Select(m => (requester, m, false)));
            busy += step.Send.Count(m => m is LeaseReject { Reason: LeaseRejectReason.Busy });
            if (step.Execute is not null && lease is not null)
            {
                executions++;
                running.Add(lease);
            }
            if (step.Outcome is not null && lease is not null)
            {
                running.Remove(lease);
            }
        }

        for (var op = 0; op < 300; op++)
        {
            switch (random.Next(20))
            {
                case 0:
                case 1:
                    {
                        var key = requesterKeys[random.Next(requesterKeys.Length)];
                        var work = LeaseHarness.Work(moduleSize: random.Next(1, 200), inputSize: random.Next(0, 200), deadline: TimeSpan.FromMinutes(10)) with { Deadline = now + TimeSpan.FromMinutes(random.Next(1, 10)) };
                        var lease = new RequesterLease(key, providerKey.PublicKey, (ulong)random.NextInt64(), work, options);
                        requesters.Add((key, lease));
                        inFlight.AddRange(lease.Start(now).Send.Select(m => (key, m, true)));
                        break;
                    }
                case >= 2 and <= 13:
                    if (inFlight.Count > 0)
                    {
                        // A stream keeps order: deliver the oldest message of a randomly chosen lease and direction.
                        var pick = inFlight[random.Next(inFlight.Count)];
                        var i = inFlight.FindIndex(f => f.Key == pick.Key && f.ToProvider == pick.ToProvider && f.Message.RequestId == pick.Message.RequestId);
                        var (key, message, toProvider) = inFlight[i];
                        var duplicate = random.Next(5) == 0;
                        if (!duplicate)
                        {
                            inFlight.RemoveAt(i);
                        }
                        if (toProvider)
                        {
                            var dispatch = registry.Handle(key.PublicKey, message, now);
                            FromProvider(key, dispatch.Step, dispatch.Lease);
                        }
                        else
                        {
                            var lease = requesters.FirstOrDefault(r => r.Key == key && r.Lease.RequestId == message.RequestId).Lease;
                            if (lease is not null)
                            {
                                inFlight.AddRange(lease.Handle(message, now).Send.Select(m => (key, m, true)));
                            }
                        }
                    }
                    break;
                case 14:
                case 15:
                    if (running.Count > 0)
                    {
                        var lease = running.ElementAt(random.Next(running.Count));
                        var step = random.Next(4) == 0 ? lease.Cancel("operator", now) : lease.OnExecutionCompleted(new ExecutionReport(ExecutionStatus.Success, 1, 0, new byte[] { 1 }), now);
                        FromProvider(requesterKeys.First(k => k.PeerId == lease.Requester), step, lease);
                    }
                    break;
                case 16:
                    if (requesters.Count > 0)
                    {
                        var (key, lease) = requesters[random.Next(requesters.Count)];
                        inFlight.AddRange(lease.Cancel("gave up", now).Send.Select(m => (key, m, true)));
                    }
                    break;
                default:
                    now += TimeSpan.FromSeconds(random.Next(1, 8));
                    foreach (var lease in registry.Leases.ToList())
                    {
                        FromProvider(requesterKeys.First(k => k.PeerId == lease.Requester), lease.OnTimer(now), lease);
                    }
                    foreach (var (key, lease) in requesters)
                    {
                        inFlight.AddRange(lease.OnTimer(now).Send.Select(m => (key, m, true)));
                    }
                    registry.Prune(now);
                    break;
            }
            var live = registry.Leases.Count(l => !l.IsFinished);
            var executing = registry.Leases.Count(l => l.IsRunning);
            if (capacity.CoresInUse > cores || live != capacity.CoresInUse || executing > cores || running.Count > cores)
            {
                TestContext.Out.WriteLine($"seed {seed}: op {op} in use {capacity.CoresInUse}/{cores}, live {live}, executing {executing}");
                return (false, capacity.PeakCoresInUse, busy, executions);
            }
        }
        return (capacity.PeakCoresInUse <= cores, capacity.PeakCoresInUse, busy, executions);
    }
}
