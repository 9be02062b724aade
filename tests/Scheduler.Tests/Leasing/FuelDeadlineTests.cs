using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Tests.Leasing;

/// <summary>Lease deadlines follow from the fuel asked for and the provider's speed, not from what the requester asks.</summary>
public class FuelDeadlineTests
{
    private static readonly ProviderPolicy Policy = new()
    {
        PricePerMegaFuel = 10,
        RuntimeVersion = "wasmtime 50.0.1",
        SpeedFuelPerSecond = 1_000_000,
        DeadlineSlack = 4,
        MinRunTime = TimeSpan.FromSeconds(5),
    };

    [Test]
    public void ATinyTaskAskingForADay_IsOfferedADeadlineFromItsFuel_AndBothSidesEndThere()
    {
        var h = new LeaseHarness(policy: Policy);
        // 5·10^6 fuel at 10^6 fuel/s, slack 4: 20 s to run, plus 10 s for the input and its transfer.
        h.StartRequester(LeaseHarness.Work(deadline: TimeSpan.FromDays(1)));
        h.Pump();
        var terms = h.Provider!.Terms;
        var lead = DateTimeOffset.FromUnixTimeMilliseconds(terms.DeadlineUnixMs) - LeaseHarness.T0;
        Assert.That(lead, Is.GreaterThanOrEqualTo(TimeSpan.FromSeconds(30)).And.LessThan(TimeSpan.FromSeconds(31)));
        Assert.That(h.Requester!.Terms!.DeadlineUnixMs, Is.EqualTo(terms.DeadlineUnixMs), "the requester accepted the earlier deadline");
        Assert.That(h.Execution, Is.Not.Null, "running");

        // The task never returns: the lease ends at the fuel-derived deadline on both sides, not a day later.
        h.RunUntil(LeaseHarness.T0 + TimeSpan.FromMinutes(5));
        Assert.That(h.ProviderOutcome!.Kind, Is.EqualTo(LeaseOutcomeKind.Expired));
        Assert.That(h.ProviderOutcome.Detail, Does.Contain("deadline"));
        Assert.That(h.Aborted, Is.True, "the run is stopped");
        Assert.That(h.Capacity.CoresInUse, Is.Zero, "the core is free again");
        Assert.That(h.RequesterOutcome!.Kind, Is.AnyOf(LeaseOutcomeKind.Expired, LeaseOutcomeKind.Cancelled));
    }

    [Test]
    public void TheMeasuredSpeed_RulesOverTheConfiguredOne_AndTheDeadlineIsBounded()
    {
        var h = new LeaseHarness(policy: Policy with { MaxDeadlineLead = TimeSpan.FromHours(1) });
        h.Registry.MeasuredSpeedFuelPerSecond = 100_000;
        var request = new LeaseRequest { RequestId = 1, FuelLimit = 5_000_000, ModuleSize = 1000, InputSize = 0 };
        // 50 s at the measured speed, times 4, plus the 10 s grace and the module's transfer.
        var lead = h.Registry.LatestDeadline(request, LeaseHarness.T0) - LeaseHarness.T0;
        Assert.That(lead.TotalSeconds, Is.EqualTo(210).Within(0.01));

        var huge = request with { FuelLimit = 1_000_000_000_000 };
        Assert.That(h.Registry.LatestDeadline(huge, LeaseHarness.T0) - LeaseHarness.T0, Is.EqualTo(TimeSpan.FromHours(1)), "never beyond the policy's bound");
    }

    [Test]
    public void ARequestAskingLessThanTheBound_KeepsItsOwnDeadline()
    {
        var h = new LeaseHarness(policy: Policy);
        h.StartRequester(LeaseHarness.Work(deadline: TimeSpan.FromSeconds(12)));
        h.Pump();
        Assert.That(h.Provider!.Terms.DeadlineUnixMs, Is.EqualTo((LeaseHarness.T0 + TimeSpan.FromSeconds(12)).ToUnixTimeMilliseconds()));
    }
}
