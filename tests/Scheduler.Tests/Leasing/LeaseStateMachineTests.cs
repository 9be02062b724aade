using System.Security.Cryptography;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Tests.Leasing;

public class LeaseStateMachineTests
{
    private static readonly DateTimeOffset T0 = LeaseHarness.T0;

    private static ExecutionReport Reverse(LeaseExecution e) =>
        new(ExecutionStatus.Success, 1_234_567, 0, e.Input.ToArray().Reverse().ToArray()) { Attestation = new byte[] { 9, 9, 9 } };

    [Test]
    public void HappyPath_RequestOfferAcceptTransferHeartbeatsResult_CompletesBothSides()
    {
        var h = new LeaseHarness(new LeaseOptions { MaxChunkBytes = 256 });
        var work = LeaseHarness.Work(moduleSize: 1000, inputSize: 600);
        h.StartRequester(work);
        h.Pump();

        Assert.That(h.Execution, Is.Not.Null, "module and input arrived, hashes checked, execution requested");
        Assert.That(h.Execution!.Module!.Value.ToArray(), Is.EqualTo(work.Module.ToArray()));
        Assert.That(h.Execution.Input.ToArray(), Is.EqualTo(work.Input.ToArray()));
        Assert.That(h.SentByRequester.OfType<LeaseData>().Count(), Is.EqualTo(4 + 3), "1000 bytes of module and 600 of input in 256-byte chunks");
        Assert.That(h.Capacity.CoresInUse, Is.EqualTo(1));

        // Run for a while: heartbeats flow both ways and nothing expires.
        h.RunUntil(T0 + TimeSpan.FromSeconds(60));
        Assert.That(h.SentByProvider.OfType<LeaseHeartbeat>().Count(), Is.GreaterThanOrEqualTo(12));
        Assert.That(h.SentByRequester.OfType<LeaseHeartbeat>().Count(), Is.GreaterThanOrEqualTo(11));
        Assert.That(h.RequesterOutcome, Is.Null);
        Assert.That(h.ProviderOutcome, Is.Null);

        h.CompleteExecution(Reverse(h.Execution));
        h.Pump();

        Assert.That(h.ProviderOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Completed));
        Assert.That(h.RequesterOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Completed));
        var result = h.RequesterOutcome.Result!;
        Assert.That(result.Output, Is.EqualTo(work.Input.ToArray().Reverse().ToArray()));
        Assert.That(result.OutputHash, Is.EqualTo(SHA256.HashData(result.Output!)));
        Assert.That(result.FuelUsed, Is.EqualTo(1_234_567));
        Assert.That(result.Attestation, Is.EqualTo(new byte[] { 9, 9, 9 }));
        Assert.That(h.Capacity.CoresInUse, Is.Zero, "the core is released");

        var terms = h.RequesterOutcome.Terms!;
        Assert.That(terms.Verify(h.ProviderKey.PublicKey, h.RequesterKey.PublicKey), Is.True, "both parties signed the same terms");
        Assert.That(h.ProviderOutcome.Terms!.Terms, Is.EqualTo(terms.Terms));
        Assert.That(h.Requester!.Terms!.PricePerMegaFuel, Is.EqualTo(10));
        Assert.That(h.Requester.Terms.CostOf(result.FuelUsed), Is.EqualTo(13), "1.234567 Mfuel at 10 credits, rounded up");
    }

    [Test]
    public void FinishedLease_LetsGoOfTheContentItReceived_AndStillAnswersRetries()
    {
        var h = new LeaseHarness();
        var work = LeaseHarness.Work(moduleSize: 5000, inputSize: 700);
        h.StartRequester(work);
        h.Pump();
        Assert.That(h.Provider!.HoldsContent, Is.True, "running: the module and input are the execution's");

        h.CompleteExecution(Reverse(h.Execution!));
        h.Pump();

        Assert.That(h.ProviderOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Completed));
        Assert.That(h.Provider.HoldsContent, Is.False, "finished: nothing received is kept while the registry remembers the lease");
        Assert.That(h.Registry.Leases, Does.Contain(h.Provider), "the lease itself is still remembered (retries)");
        var results = h.SentByProvider.OfType<LeaseResult>().Count();
        h.DeliverToProvider(h.SentByRequester.OfType<LeaseAccept>().First());
        Assert.That(h.SentByProvider.OfType<LeaseResult>().Count(), Is.EqualTo(results + 1), "a retried accept gets the result again");
        h.DeliverToProvider(h.SentByRequester.OfType<LeaseData>().First());
        Assert.That(h.ProviderOutcome.Kind, Is.EqualTo(LeaseOutcomeKind.Completed), "late data after the end changes nothing");
    }

    [Test]
    public void FailedLease_LetsGoOfTheContentItReceived()
    {
        var h = new LeaseHarness(new LeaseOptions { MaxChunkBytes = 256 });
        var work = LeaseHarness.Work(moduleSize: 5000, inputSize: 700);
        h.Drop = m => m is LeaseData { Kind: LeaseDataKind.Input };
        h.StartRequester(work);
        h.Pump();
        Assert.That(h.Provider!.HoldsContent, Is.True, "receiving: the module so far");

        h.RunUntil(T0 + TimeSpan.FromMinutes(11));

        Assert.That(h.ProviderOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Expired));
        Assert.That(h.Provider.HoldsContent, Is.False);
    }

    [Test]
    public void CachedModule_IsNotTransferred()
    {
        var h = new LeaseHarness();
        var work = LeaseHarness.Work();
        h.Modules.Held.Add(Convert.ToHexString(SHA256.HashData(work.Module.Span)));
        h.StartRequester(work);
        h.Pump();
        Assert.That(h.SentByRequester.OfType<LeaseData>().All(d => d.Kind == LeaseDataKind.Input), Is.True);
        Assert.That(h.Execution!.Module, Is.Null);
        Assert.That(h.Execution.ModuleHash.ToArray(), Is.EqualTo(SHA256.HashData(work.Module.Span)));
    }

    [Test]
    public void LargeOutput_TravelsAsHashOnly()
    {
        var h = new LeaseHarness(new LeaseOptions { MaxInlineOutputBytes = 16 });
        h.StartRequester(LeaseHarness.Work());
        h.Pump();
        var output = new byte[100];
        h.CompleteExecution(new ExecutionReport(ExecutionStatus.Success, 10, 0, output));
        h.Pump();
        var result = h.RequesterOutcome!.Result!;
        Assert.That(result.Output, Is.Null);
        Assert.That(result.OutputSize, Is.EqualTo(100));
        Assert.That(result.OutputHash, Is.EqualTo(SHA256.HashData(output)));
    }

    [TestCase(LeaseRejectReason.Price)]
    [TestCase(LeaseRejectReason.Policy)]
    [TestCase(LeaseRejectReason.UnknownModule)]
    [TestCase(LeaseRejectReason.Busy)]
    public void Request_ProviderDeclines_RequesterEndsRejectedWithTheReason(LeaseRejectReason reason)
    {
        var policy = new ProviderPolicy { PricePerMegaFuel = 10, AcceptUnknownModules = reason != LeaseRejectReason.UnknownModule, MaxFuel = 10_000_000 };
        var h = new LeaseHarness(policy: policy, cores: 1);
        if (reason == LeaseRejectReason.Busy)
        {
            Assert.That(h.Capacity.TryReserve(0, out _), Is.True, "someone else holds the only core");
        }
        var work = reason switch
        {
            LeaseRejectReason.Price => LeaseHarness.Work(maxPrice: 5),
            LeaseRejectReason.Policy => LeaseHarness.Work() with { FuelLimit = 20_000_000 },
            _ => LeaseHarness.Work(),
        };
        h.StartRequester(work);
        h.Pump();
        Assert.That(h.RequesterOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Rejected));
        Assert.That(h.RequesterOutcome.RejectReason, Is.EqualTo(reason));
        Assert.That(h.Provider, Is.Null, "no lease was created");
        Assert.That(h.Capacity.CoresInUse, Is.EqualTo(reason == LeaseRejectReason.Busy ? 1 : 0));
    }

    [Test]
    public void Request_DeadlineTooSoon_IsRejectedForPolicy()
    {
        var h = new LeaseHarness(policy: new ProviderPolicy { MinDeadlineLead = TimeSpan.FromSeconds(30) });
        h.StartRequester(LeaseHarness.Work(deadline: TimeSpan.FromSeconds(10)));
        h.Pump();
        Assert.That(h.RequesterOutcome!.RejectReason, Is.EqualTo(LeaseRejectReason.Policy));
        Assert.That(h.SentByProvider.OfType<LeaseReject>().Single().Detail, Does.Contain("deadline"));
    }

    [Test]
    public void DuplicateRequest_GetsTheSameOfferAndNoSecondLease()
    {
        var h = new LeaseHarness();
        h.StartRequester(LeaseHarness.Work());
        var request = h.ToProvider.Single();
        h.ToProvider.Clear();
        h.DeliverToProvider(request);
        h.DeliverToProvider(request);
        h.DeliverToProvider(request);
        var offers = h.SentByProvider.OfType<LeaseOffer>().ToList();
        Assert.That(offers.Count, Is.EqualTo(3));
        Assert.That(offers.Select(o => Convert.ToHexString(o.Terms)).Distinct().Count(), Is.EqualTo(1), "the same signed terms each time");
        Assert.That(h.Registry.Leases.Count(), Is.EqualTo(1));
        Assert.That(h.Capacity.CoresInUse, Is.EqualTo(1));
    }

    [Test]
    public void DuplicateRejectedRequest_GetsTheSameReject()
    {
        var h = new LeaseHarness();
        h.StartRequester(LeaseHarness.Work(maxPrice: 1));
        var request = h.ToProvider.Single();
        h.Pump();
        h.DeliverToProvider(request);
        var rejects = h.SentByProvider.OfType<LeaseReject>().ToList();
        Assert.That(rejects.Count, Is.EqualTo(2));
        Assert.That(rejects[1], Is.EqualTo(rejects[0]));
    }

    [Test]
    public void RequestIdReusedForDifferentWork_IsBadRequestAndLeavesTheLeaseAlone()
    {
        var h = new LeaseHarness();
        h.StartRequester(LeaseHarness.Work());
        h.Pump();
        var other = (LeaseRequest)h.SentByRequester[0] with { FuelLimit = 1 };
        h.DeliverToProvider(other);
        Assert.That(h.SentByProvider.OfType<LeaseReject>().Single().Reason, Is.EqualTo(LeaseRejectReason.BadRequest));
        Assert.That(h.ProviderOutcome, Is.Null);
        Assert.That(h.Execution, Is.Not.Null);
    }

    [Test]
    public void DuplicateAcceptAndData_AreAcknowledgedWithoutASecondLeaseOrExecution()
    {
        var h = new LeaseHarness();
        h.StartRequester(LeaseHarness.Work());
        h.Pump();
        var execution = h.Execution;
        var resend = h.SentByRequester.Where(m => m is LeaseAccept or LeaseData).ToList();
        foreach (var m in resend)
        {
            h.DeliverToProvider(m);
        }
        Assert.That(h.Execution, Is.SameAs(execution));
        Assert.That(h.ProviderOutcome, Is.Null, "duplicates are harmless");
        Assert.That(h.Capacity.CoresInUse, Is.EqualTo(1));
        Assert.That(h.Registry.Leases.Count(), Is.EqualTo(1));
    }

    [Test]
    public void RetryAfterResult_GetsTheSameResultAgain()
    {
        var h = new LeaseHarness();
        h.StartRequester(LeaseHarness.Work());
        h.Pump();
        h.CompleteExecution(Reverse(h.Execution!));
        h.Pump();
        var before = h.SentByProvider.Count;
        h.DeliverToProvider(h.SentByRequester.OfType<LeaseAccept>().Single());
        Assert.That(h.SentByProvider.Count, Is.EqualTo(before + 1));
        Assert.That(h.SentByProvider[^1], Is.SameAs(h.SentByProvider.OfType<LeaseResult>().First()));
    }

    [Test]
    public void LostRequest_IsRetriedAndTheLeaseStillCompletes()
    {
        var h = new LeaseHarness();
        var dropped = 0;
        h.Drop = m => m is LeaseRequest && dropped++ < 2;
        h.StartRequester(LeaseHarness.Work());
        h.RunUntil(T0 + TimeSpan.FromSeconds(11));
        Assert.That(h.SentByRequester.OfType<LeaseRequest>().Count(), Is.EqualTo(3));
        Assert.That(h.Execution, Is.Not.Null);
        Assert.That(h.Registry.Leases.Count(), Is.EqualTo(1));
    }

    [Test]
    public void LostAccept_IsRetriedWithItsDataAndTheProviderRunsOnce()
    {
        var h = new LeaseHarness();
        var dropped = false;
        h.Drop = m => m is LeaseAccept or LeaseData && !dropped;
        h.StartRequester(LeaseHarness.Work());
        h.Pump();
        dropped = true;
        Assert.That(h.Execution, Is.Null);
        h.RunUntil(T0 + TimeSpan.FromSeconds(6));
        Assert.That(h.Execution, Is.Not.Null);
        Assert.That(h.SentByRequester.OfType<LeaseAccept>().Count(), Is.EqualTo(2));
    }

    [Test]
    public void NoAnswerAtAll_RequesterExpiresAfterMaxAttempts()
    {
        var h = new LeaseHarness();
        h.Drop = m => m is LeaseRequest;
        h.StartRequester(LeaseHarness.Work());
        h.RunUntil(T0 + TimeSpan.FromMinutes(1));
        Assert.That(h.RequesterOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Expired));
        Assert.That(h.SentByRequester.OfType<LeaseRequest>().Count(), Is.EqualTo(3));
    }

    [Test]
    public void OneMissedHeartbeat_DoesNotExpireTheLease()
    {
        var h = new LeaseHarness();
        h.StartRequester(LeaseHarness.Work());
        h.Pump();
        var accepted = h.Now;
        var droppedOnce = false;
        h.Drop = m =>
        {
            if (m is LeaseHeartbeat && !droppedOnce)
            {
                droppedOnce = true;
                return true;
            }
            return false;
        };
        h.RunUntil(accepted + TimeSpan.FromMinutes(2));
        Assert.That(droppedOnce, Is.True);
        Assert.That(h.ProviderOutcome, Is.Null);
        Assert.That(h.RequesterOutcome, Is.Null);
    }

    [Test]
    public void RequesterFallsSilent_ProviderExpiresOnlyAfterTheGraceWindow()
    {
        var options = new LeaseOptions { HeartbeatInterval = TimeSpan.FromSeconds(5), MissedHeartbeatsBeforeExpiry = 3 };
        var h = new LeaseHarness(options);
        h.StartRequester(LeaseHarness.Work());
        h.Pump();
        h.RunUntil(T0 + TimeSpan.FromSeconds(20));
        var lastHeard = h.Now;
        h.Drop = m => h.SentByRequester.Contains(m);  // the requester's messages stop arriving

        h.RunUntil(lastHeard + TimeSpan.FromSeconds(14.999));
        Assert.That(h.ProviderOutcome, Is.Null, "two missed heartbeats are tolerated");
        Assert.That(h.Aborted, Is.False);

        h.RunUntil(lastHeard + TimeSpan.FromSeconds(15));
        Assert.That(h.ProviderOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Expired));
        Assert.That(h.Aborted, Is.True, "the running task is stopped");
        Assert.That(h.Capacity.CoresInUse, Is.Zero);
    }

    [Test]
    public void ProviderFallsSilent_RequesterExpiresAfterTheGraceWindow()
    {
        var h = new LeaseHarness();
        h.StartRequester(LeaseHarness.Work());
        h.Pump();
        h.RunUntil(T0 + TimeSpan.FromSeconds(20));
        var lastHeard = h.Now;
        h.Drop = m => h.SentByProvider.Contains(m);
        h.RunUntil(lastHeard + TimeSpan.FromSeconds(14));
        Assert.That(h.RequesterOutcome, Is.Null);
        h.RunUntil(lastHeard + TimeSpan.FromSeconds(16));
        Assert.That(h.RequesterOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Expired));
        Assert.That(h.RequesterOutcome.Detail, Does.Contain("silent"));
    }

    [Test]
    public void DeadlinePasses_BothSidesExpireAndTheTaskIsAborted()
    {
        var h = new LeaseHarness();
        h.StartRequester(LeaseHarness.Work(deadline: TimeSpan.FromSeconds(30)));
        h.RunUntil(T0 + TimeSpan.FromSeconds(31));
        Assert.That(h.RequesterOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Expired));
        Assert.That(h.ProviderOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Expired));
        Assert.That(h.Aborted, Is.True);
        Assert.That(h.Capacity.CoresInUse, Is.Zero);
        h.CompleteExecution(Reverse(h.Execution!));
        Assert.That(h.SentByProvider.OfType<LeaseResult>(), Is.Empty, "a late result is not sent");
    }

    [Test]
    public void OfferNeverAccepted_LapsesAndReleasesTheCore()
    {
        var h = new LeaseHarness(new LeaseOptions { OfferTimeout = TimeSpan.FromSeconds(30) });
        h.Drop = m => m is LeaseAccept or LeaseData or LeaseCancel;
        h.StartRequester(LeaseHarness.Work());
        h.RunUntil(T0 + TimeSpan.FromSeconds(31));
        Assert.That(h.ProviderOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Expired));
        Assert.That(h.Capacity.CoresInUse, Is.Zero);
    }

    [Test]
    public void RequesterCancels_ProviderAbortsAndReleases()
    {
        var h = new LeaseHarness();
        h.StartRequester(LeaseHarness.Work());
        h.Pump();
        h.ApplyRequester(h.Requester!.Cancel("changed my mind", h.Now));
        h.Pump();
        Assert.That(h.RequesterOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Cancelled));
        Assert.That(h.ProviderOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Cancelled));
        Assert.That(h.ProviderOutcome.Detail, Does.Contain("changed my mind"));
        Assert.That(h.Aborted, Is.True);
        Assert.That(h.Capacity.CoresInUse, Is.Zero);
    }

    [Test]
    public void ProviderCancels_RequesterEndsCancelled()
    {
        var h = new LeaseHarness();
        h.StartRequester(LeaseHarness.Work());
        h.Pump();
        h.ApplyProvider(h.Provider!.Cancel("shutting down", h.Now));
        h.Pump();
        Assert.That(h.ProviderOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Cancelled));
        Assert.That(h.RequesterOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Cancelled));
        Assert.That(h.RequesterOutcome.Detail, Does.Contain("shutting down"));
        Assert.That(h.Capacity.CoresInUse, Is.Zero);
    }

    [Test]
    public void TamperedOffer_RequesterFailsAndCancels()
    {
        var h = new LeaseHarness();
        h.StartRequester(LeaseHarness.Work());
        h.DeliverToProvider(h.ToProvider.Single());
        h.ToProvider.Clear();
        var offer = (LeaseOffer)h.ToRequester.Single();
        h.ToRequester.Clear();
        var terms = (byte[])offer.Terms.Clone();
        terms[^3] ^= 1;
        h.DeliverToRequester(offer with { Terms = terms });
        Assert.That(h.RequesterOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Failed));
        Assert.That(h.SentByRequester[^1], Is.TypeOf<LeaseCancel>());
        h.Pump();
        Assert.That(h.ProviderOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Cancelled));
        Assert.That(h.Capacity.CoresInUse, Is.Zero);
    }

    [Test]
    public void AcceptSignedByAnotherKey_ProviderFails()
    {
        var h = new LeaseHarness();
        h.StartRequester(LeaseHarness.Work());
        h.DeliverToProvider(h.ToProvider.Single());
        h.ToProvider.Clear();
        var forged = new LeaseAccept { RequestId = 77, RequesterSignature = h.ProviderKey.Sign([1, 2, 3]) };
        h.DeliverToProvider(forged);
        Assert.That(h.ProviderOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Failed));
        Assert.That(h.Capacity.CoresInUse, Is.Zero);
    }

    [Test]
    public void InputNotMatchingItsHash_ProviderFailsWithoutRunning()
    {
        var h = new LeaseHarness();
        h.StartRequester(LeaseHarness.Work());
        h.Drop = m => m is LeaseData { Kind: LeaseDataKind.Input };
        h.Pump();
        var input = h.SentByRequester.OfType<LeaseData>().First(d => d.Kind == LeaseDataKind.Input);
        var bytes = (byte[])input.Bytes.Clone();
        bytes[0] ^= 0xFF;
        h.Drop = _ => false;
        h.DeliverToProvider(input with { Bytes = bytes });
        Assert.That(h.ProviderOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Failed));
        Assert.That(h.ProviderOutcome.Detail, Does.Contain("hash"));
        Assert.That(h.Execution, Is.Null);
    }

    [Test]
    public void ResultWithForgedOutput_RequesterFails()
    {
        var h = new LeaseHarness();
        h.StartRequester(LeaseHarness.Work());
        h.Pump();
        h.Drop = m => m is LeaseResult;
        h.CompleteExecution(Reverse(h.Execution!));
        var result = h.SentByProvider.OfType<LeaseResult>().Single();
        h.DeliverToRequester(result with { Output = result.Output!.Select(b => (byte)(b ^ 1)).ToArray() });
        Assert.That(h.RequesterOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Failed));
    }

    [Test]
    public void MessageForUnknownLease_IsAnsweredWithCancel()
    {
        var h = new LeaseHarness();
        var dispatch = h.Registry.Handle(h.RequesterKey.PublicKey, new LeaseHeartbeat { RequestId = 5 }, T0);
        Assert.That(dispatch.Lease, Is.Null);
        Assert.That(dispatch.Step.Send.Single(), Is.TypeOf<LeaseCancel>());
        var quiet = h.Registry.Handle(h.RequesterKey.PublicKey, new LeaseCancel { RequestId = 5 }, T0);
        Assert.That(quiet.Step.Send, Is.Empty, "a cancel is never answered with a cancel");
    }

    [Test]
    public void Prune_ForgetsFinishedLeasesOnlyAfterRetentionAndDeadline()
    {
        var h = new LeaseHarness(new LeaseOptions { FinishedRetention = TimeSpan.FromMinutes(1) });
        h.StartRequester(LeaseHarness.Work(deadline: TimeSpan.FromMinutes(3)));
        h.Pump();
        h.CompleteExecution(Reverse(h.Execution!));
        Assert.That(h.Registry.Prune(T0 + TimeSpan.FromMinutes(2)), Is.Zero, "deadline not yet passed: a retry must still find it");
        Assert.That(h.Registry.Prune(T0 + TimeSpan.FromMinutes(3)), Is.EqualTo(1));
        Assert.That(h.Registry.TrackedCount, Is.Zero);
    }

    [Test]
    public void AtTheTrackingLimit_TheOldestFinishedOrRejectedRequestIsForgottenFirst_AndLiveOnesNever()
    {
        var h = new LeaseHarness(new LeaseOptions { MaxTrackedLeases = 6 }, cores: 64);
        var requester = h.RequesterKey.PublicKey;
        var peer = h.RequesterKey.PeerId;
        var request = LeaseHarness.Work();
        LeaseRequest Request(ulong id, long maxPrice) => new()
        {
            RequestId = id, ModuleHash = Enumerable.Repeat((byte)1, 32).ToArray(), ModuleSize = 10, InputHash = Enumerable.Repeat((byte)2, 32).ToArray(),
            InputSize = 0, FuelLimit = 5, MemoryLimitBytes = 1 << 20, DeadlineUnixMs = request.Deadline.ToUnixTimeMilliseconds(), MaxPricePerMegaFuel = maxPrice,
        };
        var order = new List<(ulong Id, bool Lease)>();
        for (ulong id = 1; id <= 40; id++)
        {
            h.Now = LeaseHarness.T0 + TimeSpan.FromSeconds(id);
            var rejected = id % 3 == 0;
            var dispatch = h.Registry.Handle(requester, Request(id, rejected ? 1 : 20), h.Now);
            if (rejected)
            {
                Assert.That(dispatch.Step.Send.Single(), Is.TypeOf<LeaseReject>());
            }
            else
            {
                Assert.That(dispatch.Lease, Is.Not.Null, $"request {id}");
                dispatch.Lease!.Cancel("done", h.Now);
            }
            order.Add((id, !rejected));
            Assert.That(h.Registry.TrackedCount, Is.EqualTo(Math.Min(order.Count, 6)));
            var kept = order.TakeLast(6).ToList();
            foreach (var (old, lease) in order.Where(o => o.Lease))
            {
                Assert.That(h.Registry.Find(peer, old) is not null, Is.EqualTo(kept.Contains((old, true))), $"after {id}: lease {old}");
            }
        }

        // Six live leases fill it: nothing can be forgotten, so a seventh request is turned away.
        var live = new LeaseHarness(new LeaseOptions { MaxTrackedLeases = 6 }, cores: 64);
        for (ulong id = 1; id <= 6; id++)
        {
            Assert.That(live.Registry.Handle(requester, Request(id, 20), LeaseHarness.T0).Lease, Is.Not.Null);
        }
        var refused = live.Registry.Handle(requester, Request(7, 20), LeaseHarness.T0);
        Assert.That(refused.Lease, Is.Null);
        Assert.That(((LeaseReject)refused.Step.Send.Single()).Reason, Is.EqualTo(LeaseRejectReason.Busy));
    }
}
