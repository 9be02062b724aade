using Potluck.Node.Home;

namespace Potluck.Node.Tests.Home;

/// <summary>The idle detector fed from prepared /proc readings, on a clock the test moves.</summary>
public class IdleDetectionTests
{
    private static readonly DateTimeOffset Start = new(2026, 12, 2, 10, 0, 0, TimeSpan.Zero); // a Wednesday

    private static readonly PreferencesOptions Idle = new()
    {
        OnlyWhenIdle = true,
        NotOnBattery = true,
        IdleCpuPercent = 25,
        IdleFor = TimeSpan.FromMinutes(3),
        Grace = TimeSpan.FromSeconds(30),
    };

    /// <summary>Runs the machine for <paramref name="seconds"/> in 5 s samples, feeding each to the tracker.</summary>
    private static Availability Step(FakeMachine machine, ProcMachineProbe probe, AvailabilityTracker tracker, ref DateTimeOffset now,
        double seconds, double others, double own = 0)
    {
        Availability a = tracker.Current;
        for (var t = 0.0; t < seconds; t += 5)
        {
            machine.Run(5, others, own);
            now += TimeSpan.FromSeconds(5);
            a = tracker.Update(probe.Read(), now);
        }
        return a;
    }

    [Test]
    public void ParseCpuLine_SumsAllButGuest_IdleIsIdlePlusIowait()
    {
        var parsed = ProcMachineProbe.ParseCpuLine("cpu  10 2 3 40 5 1 1 1 7 7");
        Assert.That(parsed, Is.EqualTo(((long)63, (long)45)));
        Assert.That(ProcMachineProbe.ParseCpuLine("cpu0 1 2 3 4"), Is.Null);
        Assert.That(ProcMachineProbe.ParseCpuLine("cpu  x y z w"), Is.Null);
        Assert.That(ProcMachineProbe.ParseOwnStat("1 (a b) c) S 1 1 1 0 -1 0 0 0 0 0 30 12 0"), Is.EqualTo(42));
    }

    [Test]
    public void BusyMachine_StaysPaused_ThenIdleForThreeMinutes_Works()
    {
        using var machine = new FakeMachine();
        var probe = new ProcMachineProbe(machine.Root);
        var now = Start;
        var tracker = new AvailabilityTracker(Idle, TimeZoneInfo.Utc, now);
        tracker.Update(probe.Read(), now);

        var a = Step(machine, probe, tracker, ref now, 60, others: 60);
        Assert.That(a.State, Is.EqualTo(WorkState.IdlePaused));
        Assert.That(a.Reason, Does.Contain("in use").And.Contain("60 %"));
        Assert.That(a.OthersCpuPercent, Is.EqualTo(60).Within(1));

        a = Step(machine, probe, tracker, ref now, 170, others: 5);
        Assert.That(a.State, Is.EqualTo(WorkState.IdlePaused), "not yet three minutes of idle");
        Assert.That(a.Reason, Is.EqualTo("waiting for 3 min of idle (idle for 2 min 45 s)"));

        a = Step(machine, probe, tracker, ref now, 15, others: 5);
        Assert.That(a.State, Is.EqualTo(WorkState.Working));
    }

    [Test]
    public void OwnCpu_IsNotTheOwners()
    {
        using var machine = new FakeMachine();
        var probe = new ProcMachineProbe(machine.Root);
        var now = Start;
        var tracker = new AvailabilityTracker(Idle, TimeZoneInfo.Utc, now);
        tracker.Update(probe.Read(), now);
        var a = Step(machine, probe, tracker, ref now, 200, others: 5, own: 90);
        Assert.That(a.State, Is.EqualTo(WorkState.Working));
        Assert.That(a.OthersCpuPercent, Is.EqualTo(5).Within(1));
    }

    [Test]
    public void SpikeShorterThanGrace_KeepsWorking_LongerOneStopsWork()
    {
        using var machine = new FakeMachine();
        var probe = new ProcMachineProbe(machine.Root);
        var now = Start;
        var tracker = new AvailabilityTracker(Idle, TimeZoneInfo.Utc, now);
        tracker.Update(probe.Read(), now);
        Assert.That(Step(machine, probe, tracker, ref now, 200, others: 0).State, Is.EqualTo(WorkState.Working));

        Assert.That(Step(machine, probe, tracker, ref now, 25, others: 90).State, Is.EqualTo(WorkState.Working), "a 25 s spike is within the 30 s grace");
        Assert.That(Step(machine, probe, tracker, ref now, 20, others: 2).State, Is.EqualTo(WorkState.Working));

        var a = Step(machine, probe, tracker, ref now, 35, others: 90);
        Assert.That(a.State, Is.EqualTo(WorkState.IdlePaused));
        Assert.That(a.Reason, Does.Contain("others' CPU 90 %"));
    }

    [Test]
    public void OwnerTyping_StopsWorkAtOnce_AndWorkWaitsForIdleForAfterIt()
    {
        using var machine = new FakeMachine();
        var probe = new ProcMachineProbe(machine.Root);
        var now = Start;
        machine.Type(now - TimeSpan.FromHours(1));
        var tracker = new AvailabilityTracker(Idle, TimeZoneInfo.Utc, now);
        tracker.Update(probe.Read(), now);
        Assert.That(Step(machine, probe, tracker, ref now, 200, others: 0).State, Is.EqualTo(WorkState.Working));

        machine.Type(now + TimeSpan.FromSeconds(2));
        var a = Step(machine, probe, tracker, ref now, 5, others: 0);
        Assert.That(a.State, Is.EqualTo(WorkState.IdlePaused));
        Assert.That(a.Reason, Does.Contain("owner is using the machine"));

        // The CPU is quiet, but the last key was pressed under three minutes ago.
        Assert.That(Step(machine, probe, tracker, ref now, 170, others: 0).State, Is.EqualTo(WorkState.IdlePaused));
        Assert.That(Step(machine, probe, tracker, ref now, 200, others: 0).State, Is.EqualTo(WorkState.Working));
    }

    [Test]
    public void WatchInputOff_IgnoresTyping()
    {
        using var machine = new FakeMachine();
        var probe = new ProcMachineProbe(machine.Root);
        var now = Start;
        var tracker = new AvailabilityTracker(Idle with { WatchInput = false, IdleFor = TimeSpan.FromSeconds(10) }, TimeZoneInfo.Utc, now);
        tracker.Update(probe.Read(), now);
        machine.Type(now);
        Assert.That(Step(machine, probe, tracker, ref now, 20, others: 0).State, Is.EqualTo(WorkState.Working));
    }

    [Test]
    public void OnBattery_Pauses_OnMains_Works()
    {
        using var machine = new FakeMachine();
        var probe = new ProcMachineProbe(machine.Root);
        var now = Start;
        var prefs = Idle with { OnlyWhenIdle = false };
        var tracker = new AvailabilityTracker(prefs, TimeZoneInfo.Utc, now);
        machine.Power(mains: false);
        var a = Step(machine, probe, tracker, ref now, 5, others: 0);
        Assert.That(a.State, Is.EqualTo(WorkState.OnBattery));
        machine.Power(mains: true);
        Assert.That(Step(machine, probe, tracker, ref now, 5, others: 0).State, Is.EqualTo(WorkState.Working));
        tracker.SetPreferences(prefs with { NotOnBattery = false });
        machine.Power(mains: false);
        Assert.That(Step(machine, probe, tracker, ref now, 5, others: 0).State, Is.EqualTo(WorkState.Working));
    }

    [Test]
    public void Hours_WorkOnlyInsideTheWindowOfTheDay_PastMidnightRunsIntoTheNextDay()
    {
        using var machine = new FakeMachine();
        var probe = new ProcMachineProbe(machine.Root);
        var prefs = Idle with { OnlyWhenIdle = false, Hours = new HoursOptions { Daily = "22:00-07:00", Saturday = "off", Wednesday = "09:00-10:30" } };
        AvailabilityState(prefs, probe, machine, new DateTimeOffset(2026, 12, 2, 10, 0, 0, TimeSpan.Zero), WorkState.Working);       // Wednesday 10:00
        AvailabilityState(prefs, probe, machine, new DateTimeOffset(2026, 12, 2, 11, 0, 0, TimeSpan.Zero), WorkState.OutsideHours);  // Wednesday 11:00
        AvailabilityState(prefs, probe, machine, new DateTimeOffset(2026, 12, 3, 23, 0, 0, TimeSpan.Zero), WorkState.Working);       // Thursday 23:00 (daily)
        AvailabilityState(prefs, probe, machine, new DateTimeOffset(2026, 12, 4, 6, 0, 0, TimeSpan.Zero), WorkState.Working);        // Friday 06:00, from Thursday
        AvailabilityState(prefs, probe, machine, new DateTimeOffset(2026, 12, 4, 12, 0, 0, TimeSpan.Zero), WorkState.OutsideHours);  // Friday noon
        AvailabilityState(prefs, probe, machine, new DateTimeOffset(2026, 12, 5, 6, 0, 0, TimeSpan.Zero), WorkState.Working);        // Saturday 06:00, Friday's night
        AvailabilityState(prefs, probe, machine, new DateTimeOffset(2026, 12, 5, 23, 0, 0, TimeSpan.Zero), WorkState.OutsideHours);  // Saturday off
    }

    private static void AvailabilityState(PreferencesOptions prefs, ProcMachineProbe probe, FakeMachine machine, DateTimeOffset at, WorkState expected)
    {
        var tracker = new AvailabilityTracker(prefs, TimeZoneInfo.Utc, at);
        var a = tracker.Update(probe.Read(), at);
        Assert.That(a.State, Is.EqualTo(expected), $"{at:dddd HH:mm}: {a.Reason}");
    }

    [Test]
    public void Hours_BadWindow_NamesTheKeyAndTheFix()
    {
        var problems = new List<string>();
        Schedule.Parse(new HoursOptions { Monday = "9-17", Daily = "08:00-08:00" }, problems);
        Assert.That(problems, Has.Some.StartsWith("'preferences:hours:monday' is '9-17': '9-17' is not a window HH:mm-HH:mm"));
        Assert.That(problems, Has.Some.StartsWith("'preferences:hours:daily' is '08:00-08:00'"));
    }

    [Test]
    public void NoProc_WorksWithIdleDetectionOff_AndSaysSo()
    {
        var root = Path.Combine(Path.GetTempPath(), "potluck-no-proc-" + Guid.NewGuid().ToString("N"));
        var tracker = new AvailabilityTracker(Idle, TimeZoneInfo.Utc, Start);
        var a = tracker.Update(new ProcMachineProbe(root).Read(), Start);
        Assert.That(a.State, Is.EqualTo(WorkState.Working));
        Assert.That(a.Reason, Does.Contain("cannot be read"));
    }
}
