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

    [Test]
    public void ARefusalThatSaysTheLimit_SetsTheWindowToIt_WhereOwnCountsWhileLeasesEnd_ShrinkItBelow()
    {
        // Nine asked for at once from a provider that allows four: five refusals come back while two of the four end.
        var said = new LeaseWindows(Probe);
        var guessed = new LeaseWindows(Probe);
        var atStart = new List<int>();
        for (var i = 0; i < 9; i++)
        {
            atStart.Add(said.Started(A));
            guessed.Started(A);
        }
        Assert.That(atStart, Is.EqualTo(Enumerable.Range(0, 9)), "Started returns the leases held before each");
        said.Ended(A, refusedBusy: false, T0);
        guessed.Ended(A, refusedBusy: false, T0);
        said.Ended(A, refusedBusy: false, T0);
        guessed.Ended(A, refusedBusy: false, T0);
        for (var i = 4; i < 9; i++)
        {
            Assert.That(said.Ended(A, refusedBusy: true, T0, reportedLimit: 4, heldAtStart: atStart[i]).HeldOthers, Is.True);
            guessed.Ended(A, refusedBusy: true, T0);
        }
        Assert.That(said.Limit(A), Is.EqualTo(4), "the provider's own limit");
        Assert.That(guessed.Limit(A), Is.EqualTo(2), "from its own count: each refusal saw one fewer held, and two had ended");
        Assert.That(said.Held(A), Is.EqualTo(2));
        Assert.That(said.IsFull(A, T0), Is.False, "two more may be asked for at once");
        Assert.That(guessed.IsFull(A, T0), Is.True, "main's window waited for a probe (2 s) per lease it had lost");
    }

    [Test]
    [Category("Adversarial")]
    public void AReportedLimit_CountsOnlyUpToWhatWasHeldWhenTheRequestWentOut()
    {
        // A provider that says "you may hold 1,000" when it refused the third cannot talk this node into asking for more than
        // it held then.
        var w = new LeaseWindows(Probe);
        w.Started(A);
        w.Started(A);
        var third = w.Started(A);
        w.Ended(A, refusedBusy: true, T0, reportedLimit: 1_000, heldAtStart: third);
        Assert.That(w.Limit(A), Is.EqualTo(2));
        Assert.That(w.IsFull(A, T0), Is.True);
    }

    [Test]
    public void CoresFreedByOwnLeases_CountAgainstTheAdvertisementTheyEndedUnder_AndAreTakenByTheNextLeases()
    {
        var w = new LeaseWindows(Probe);
        Assert.That(w.FreedSince(A, 7), Is.Zero);
        w.Freed(A, 7);
        w.Freed(A, 7);
        Assert.That(w.FreedSince(A, 7), Is.EqualTo(2));
        Assert.That(w.FreedSince(B, 7), Is.Zero, "another provider's are its own");
        Assert.That(w.FreedSince(A, 8), Is.Zero, "a newer advertisement counts the cores itself");
        w.TakeFreed(A, 7);
        Assert.That(w.FreedSince(A, 7), Is.EqualTo(1));
        w.TakeFreed(A, 7);
        Assert.That(w.FreedSince(A, 7), Is.Zero, "each freed core leased once");
        w.Freed(A, 7);
        w.Freed(A, 8);
        Assert.That(w.FreedSince(A, 8), Is.EqualTo(1), "freed under the newer one: counted from there");
        Assert.That(w.FreedSince(A, 7), Is.Zero);
        w.TakeFreed(A, 7);
        Assert.That(w.FreedSince(A, 8), Is.Zero, "a lease chosen by an older advertisement takes nothing it cannot see: the count is dropped");
    }
}
