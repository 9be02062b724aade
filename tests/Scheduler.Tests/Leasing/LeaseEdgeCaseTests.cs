using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Tests.Leasing;

public class LeaseEdgeCaseTests
{
    private static readonly DateTimeOffset T0 = LeaseHarness.T0;

    [Test]
    public void EmptyInput_RunsWithoutAnyInputChunk()
    {
        var h = new LeaseHarness();
        h.StartRequester(LeaseHarness.Work(inputSize: 0));
        h.Pump();
        Assert.That(h.SentByRequester.OfType<LeaseData>().Any(d => d.Kind == LeaseDataKind.Input), Is.False);
        Assert.That(h.Execution!.Input.Length, Is.Zero);
    }

    [Test]
    public void AcceptAfterTheOfferLapsed_ButBeforeTheTimerFired_DoesNotStartTheLease()
    {
        var h = new LeaseHarness(new LeaseOptions { OfferTimeout = TimeSpan.FromSeconds(10) });
        h.StartRequester(LeaseHarness.Work());
        h.DeliverToProvider(h.ToProvider.Single());
        h.ToProvider.Clear();
        h.DeliverToRequester(h.ToRequester.Single());
        h.ToRequester.Clear();
        h.Now = T0 + TimeSpan.FromSeconds(10);
        foreach (var m in h.ToProvider.ToList())
        {
            h.DeliverToProvider(m);
        }
        Assert.That(h.ProviderOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Expired));
        Assert.That(h.Execution, Is.Null);
        Assert.That(h.Capacity.CoresInUse, Is.Zero);
    }

    [Test]
    public void RequestWithBadHashes_IsRejectedAsBadRequestEvenWithoutTheCodec()
    {
        var h = new LeaseHarness();
        var dispatch = h.Registry.Handle(h.RequesterKey.PublicKey, new LeaseRequest
        {
            RequestId = 1, ModuleHash = [1], ModuleSize = 1, InputHash = [], FuelLimit = 1, MemoryLimitBytes = 1,
            DeadlineUnixMs = (T0 + TimeSpan.FromMinutes(1)).ToUnixTimeMilliseconds(), MaxPricePerMegaFuel = 100,
        }, T0);
        Assert.That(((LeaseReject)dispatch.Step.Send.Single()).Reason, Is.EqualTo(LeaseRejectReason.BadRequest));
    }
}
