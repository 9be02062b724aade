using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Tests.Leasing;

/// <summary>The lease state machines against a counterparty that lies about price or withholds input.</summary>
[Category("Adversarial")]
public class LeaseAdversarialTests
{
    [Test]
    public void OfferAboveTheAdvertisedPrice_IsRefused_EvenUnderTheRequestersMaximum()
    {
        // The provider's policy charges 10; its advertisement (what the requester chose it by) said 2.
        var h = new LeaseHarness();
        h.StartRequester(LeaseHarness.Work(maxPrice: 50) with { AdvertisedPricePerMegaFuel = 2 });
        h.Pump();

        Assert.That(h.RequesterOutcome?.Kind, Is.EqualTo(LeaseOutcomeKind.Failed));
        Assert.That(h.RequesterOutcome!.Detail, Does.Contain("advertised"));
        Assert.That(h.SentByRequester.OfType<LeaseAccept>(), Is.Empty, "never accepted, so nothing is owed");
        Assert.That(h.Execution, Is.Null);
    }

    [Test]
    public void OfferAtTheAdvertisedPrice_IsAccepted()
    {
        var h = new LeaseHarness();
        h.StartRequester(LeaseHarness.Work(maxPrice: 50) with { AdvertisedPricePerMegaFuel = 10 });
        h.Pump();

        Assert.That(h.Execution, Is.Not.Null);
    }

    [Test]
    public void AcceptedLease_WhoseInputNeverComes_ExpiresAfterTheInputGrace_AndFreesItsCore()
    {
        var options = new LeaseOptions { InputGrace = TimeSpan.FromSeconds(10), MinContentBytesPerSecond = 1000 };
        var h = new LeaseHarness(options);
        h.StartRequester(LeaseHarness.Work(moduleSize: 1000, inputSize: 1000, deadline: TimeSpan.FromHours(1)));
        // Every data chunk is lost; the accept and the heartbeats arrive.
        h.Drop = m => m is LeaseData;
        h.Pump();
        Assert.That(h.Provider, Is.Not.Null);
        Assert.That(h.Capacity.CoresInUse, Is.EqualTo(1));

        h.RunUntil(LeaseHarness.T0 + TimeSpan.FromSeconds(11));
        Assert.That(h.ProviderOutcome, Is.Null, "within grace + transfer time (10 s + 2,000 bytes at 1,000 B/s)");
        h.RunUntil(LeaseHarness.T0 + TimeSpan.FromSeconds(13));

        Assert.That(h.ProviderOutcome?.Kind, Is.EqualTo(LeaseOutcomeKind.Expired));
        Assert.That(h.ProviderOutcome!.Detail, Does.Contain("input"));
        Assert.That(h.Capacity.CoresInUse, Is.Zero, "the core is free again, an hour before the deadline");
    }
}
