using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Requesting;

using static Potluck.Scheduler.Tests.Requesting.RequesterFixture;

namespace Potluck.Scheduler.Tests.Requesting;

/// <summary>
/// The requester's lease windows (<see cref="LeaseWindows"/>) on `now` values alone, and the job's answer to a busy refusal
/// the window explains (<see cref="RequesterJob.OnLeaseEnded"/> with heldOthers): no backoff timer, the window decides.
/// </summary>
public class LeaseWindowsTests
{
    private static readonly TimeSpan Probe = TimeSpan.FromSeconds(2);

    [Test]
    public void BusyRefusalWhileOthersAreHeld_ClosesTheWindowAtTheirCount_AndTheEndOfOneReopensIt()
    {
        var w = new LeaseWindows(Probe);
        for (var i = 0; i < 5; i++)
        {
            w.Started(A);
        }
        Assert.That(w.IsFull(A, T0), Is.False, "nothing learnt yet: any number may be asked for");

        Assert.That(w.Ended(A, refusedBusy: true, T0), Is.EqualTo(new LeaseEnd(HeldOthers: true, Reopened: false)),
            "the fifth was refused while four were held: the provider's limit for this node, not a lack of cores");
        Assert.That(w.Limit(A), Is.EqualTo(4));
        Assert.That(w.Held(A), Is.EqualTo(4));
        Assert.That(w.IsFull(A, T0), Is.True, "a fifth would be refused again");
        Assert.That(w.IsFull(B, T0), Is.False, "another provider's window is its own");

        Assert.That(w.Ended(A, refusedBusy: false, T0 + TimeSpan.FromMilliseconds(10)), Is.EqualTo(new LeaseEnd(HeldOthers: false, Reopened: true)),
            "one of ours ended: room for the next, at once");
        Assert.That(w.IsFull(A, T0 + TimeSpan.FromMilliseconds(10)), Is.False);
        w.Started(A);
        Assert.That(w.IsFull(A, T0 + TimeSpan.FromMilliseconds(20)), Is.True);
    }

    [Test]
    public void BusyRefusalWithNothingHeld_IsTheProvidersOwnCapacity_NotAWindow()
    {
        var w = new LeaseWindows(Probe);
        w.Started(A);
        Assert.That(w.Ended(A, refusedBusy: true, T0), Is.EqualTo(new LeaseEnd(HeldOthers: false, Reopened: false)));
        Assert.That(w.Limit(A), Is.Null, "no limit learnt: the job's own backoff applies");
        Assert.That(w.IsFull(A, T0), Is.False);
        Assert.That(w.Count, Is.Zero, "nothing kept for it");
    }

    [Test]
    public void ALearntLimit_GrowsByOneEachProbeInterval_AndARefusalLowersItAgain()
    {
        var w = new LeaseWindows(Probe);
        w.Started(A);
        w.Started(A);
        w.Started(A);
        w.Ended(A, refusedBusy: true, T0);
        Assert.That(w.Limit(A), Is.EqualTo(2));
        Assert.That(w.IsFull(A, T0 + Probe - TimeSpan.FromTicks(1)), Is.True);
        Assert.That(w.NextProbe([A], T0), Is.EqualTo(T0 + Probe), "a job waiting on the full window looks again then at the latest");

        Assert.That(w.IsFull(A, T0 + Probe), Is.False, "a probe: one more may be asked for");
        Assert.That(w.Limit(A), Is.EqualTo(3));
        w.Started(A);
        Assert.That(w.Ended(A, refusedBusy: true, T0 + Probe), Is.EqualTo(new LeaseEnd(HeldOthers: true, Reopened: false)));
        Assert.That(w.Limit(A), Is.EqualTo(2), "refused at three: back to two");
    }

    [Test]
    public void Windows_HoldingNothing_AreForgotten_WhenTheyPassTheirBound()
    {
        var w = new LeaseWindows(Probe);
        var providers = Enumerable.Range(0, 1100).Select(i => Potluck.Scheduler.Tests.Advertising.Ads.Key(100 + i).PeerId).ToList();
        foreach (var p in providers)
        {
            w.Started(p);
            w.Started(p);
            w.Ended(p, refusedBusy: true, T0); // a limit learnt (1), one lease held
            w.Ended(p, refusedBusy: false, T0); // none held, the limit kept until its probe time
        }
        Assert.That(w.Count, Is.LessThanOrEqualTo(1024), "bounded however many providers were met");
    }

    [Test]
    public void Job_BusyRefusalTheWindowExplains_SetsNoBackoff_AndTheProviderIsChosenAgainAtOnce()
    {
        var job = new RequesterJob(Settings, Self, 1);
        job.OnLeaseStarted(A);
        Assert.That(job.OnLeaseEnded(A, 1, LeaseOutcomeKind.Rejected, LeaseRejectReason.Busy, "2 leases held here already", T0, heldOthers: true),
            Is.EqualTo(ReputationNote.None));
        Assert.That(job.RetryAt(A), Is.Null, "no timer: the requester's window says when");
        var f = job.Filter([Ad(AKey)], [], T0);
        Assert.That(f.BusyHere, Is.Zero);
        Assert.That(f.Candidates.Select(a => a.Provider), Is.EqualTo(new[] { A }));
        Assert.That(job.BusyRefusals, Is.EqualTo(1), "still a busy refusal, not an attempt");

        var other = new RequesterJob(Settings, Self, 1);
        other.OnLeaseStarted(A);
        other.OnLeaseEnded(A, 1, LeaseOutcomeKind.Rejected, LeaseRejectReason.Busy, "Busy: no core", T0);
        Assert.That(other.RetryAt(A), Is.EqualTo(T0 + TimeSpan.FromSeconds(1)), "a provider out of cores: the backoff as before");
    }
}
