using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Leasing;
using Potluck.Tests;

namespace Potluck.Scheduler.Tests.Providing;

/// <summary>
/// A lease's run is cancelled by the provider's stop through a source linked to it; that source must not outlive the lease.
/// An undisposed linked source stays registered on the node-lifetime stop token, so a provider that had run N leases
/// held N registrations (and their sources) until it stopped: a slow leak on a long-lived node.
/// </summary>
public class LeaseRunLinkTests
{
    private const long Slice = 1_000_000;

    private static int HeldByStop(ProviderHarness h) => Registrations.Live(h.Service.StopToken) + h.Service.LinkedOperations;

    [Test]
    public void LeasesRunToTheirEnd_LeaveNothingOnTheProvidersStopToken() => VirtualTimeDriver.Run(async d =>
    {
        const int leases = 20;
        await using var h = await ProviderHarness.StartAsync(d, seed: 841);
        var stream = await h.OpenAsync();
        await d.IdleAsync();
        var before = HeldByStop(h);

        for (ulong id = 1; id <= leases; id++)
        {
            await stream.RequestAsync(id, h.Work());
            await d.IdleAsync();
            Assert.That(h.Ended[id].Outcome.Kind, Is.EqualTo(LeaseOutcomeKind.Completed), $"lease {id}");
        }

        Assert.That(HeldByStop(h), Is.EqualTo(before), "every finished run's source left the stop token");
        Assert.That(h.Service.Capacity.CoresInUse, Is.Zero);
    });

    [Test]
    public void ARunStoppedMidway_ByAnUnpaidDebitNote_LeavesNothingOnTheProvidersStopToken() => VirtualTimeDriver.Run(async d =>
    {
        await using var h = await ProviderHarness.StartAsync(d, seed: 842, o => o with { Lease = o.Lease with { DebitNoteFuel = Slice } });
        h.Executor.Slices = 3;
        h.Executor.Fuel = 3 * Slice + Slice / 2;
        var stream = await h.OpenAsync();
        stream.PayNotes = _ => false; // takes the work, never pays as it goes
        await d.IdleAsync();
        var before = HeldByStop(h);

        await stream.RequestAsync(1, h.Work(debitNotes: true));
        await d.IdleAsync();
        Assert.That(h.Executor.Runs, Is.EqualTo(1), "the run started");
        await Task.Delay(h.Options.Lease.DebitNoteTimeout + TimeSpan.FromSeconds(1), h.Time);
        await d.IdleAsync();

        Assert.That(h.Ended[1].Outcome.Kind, Is.EqualTo(LeaseOutcomeKind.Cancelled), "stopped for the unpaid note");
        Assert.That(HeldByStop(h), Is.EqualTo(before), "the stopped run's source left the stop token");
        Assert.That(h.Service.Capacity.CoresInUse, Is.Zero);
    });
}
