using Potluck.Node.Home;
using Potluck.Protocol.Runtime;

namespace Potluck.Node.Tests.Home;

/// <summary>The owner's input from systemd-logind and X11 (fake command output on a virtual clock), and the fallback to device access times.</summary>
public class InputSourceTests
{
    private static readonly DateTimeOffset Start = new(2026, 12, 2, 10, 0, 0, TimeSpan.Zero);

    /// <summary>Answers each command with the text the test set (null: the command failed or is missing).</summary>
    private sealed class FakeRunner : ICommandRunner
    {
        public Dictionary<string, string?> Answers { get; } = new(StringComparer.Ordinal);

        public List<string> Ran { get; } = [];

        public string? Run(string command, IReadOnlyList<string> arguments)
        {
            var line = command + " " + string.Join(' ', arguments);
            Ran.Add(line);
            return Answers.FirstOrDefault(a => line.StartsWith(a.Key, StringComparison.Ordinal)).Value;
        }
    }

    /// <summary>A source that says what the test says.</summary>
    private sealed class FixedSource(DateTimeOffset? input) : IInputSource
    {
        public DateTimeOffset? Input { get; set; } = input;

        public int Asked { get; private set; }

        public string Name => "fixed";

        public DateTimeOffset? LastInput()
        {
            Asked++;
            return Input;
        }
    }

    private static long Usec(DateTimeOffset t) => t.ToUnixTimeMilliseconds() * 1000;

    [Test]
    public void Logind_GraphicalSessionNotIdle_IsInputNow()
    {
        var text = $"IdleHint=no\nIdleSinceHint={Usec(Start.AddHours(-1))}\nType=wayland\n";
        Assert.That(LogindInputSource.ParseShowSession(text, Start), Is.EqualTo(Start));
    }

    [Test]
    public void Logind_IdleGraphicalAndTerminalSessions_TheMostRecentIdleSinceCounts()
    {
        var text = $"IdleHint=yes\nIdleSinceHint={Usec(Start.AddMinutes(-20))}\nType=x11\n\n" +
                   $"IdleHint=no\nIdleSinceHint={Usec(Start.AddMinutes(-7))}\nType=tty\n\n" +
                   "IdleHint=no\nIdleSinceHint=0\nType=unspecified\n";
        // A terminal session's IdleHint=no says nothing about input (logind only compares its atime with IdleAction):
        // its IdleSinceHint (the tty's last access) is what counts; a session with no time says nothing.
        Assert.That(LogindInputSource.ParseShowSession(text, Start), Is.EqualTo(Start.AddMinutes(-7)));
    }

    [Test]
    public void Logind_GarbageOrNothing_CannotTell()
    {
        Assert.That(LogindInputSource.ParseShowSession("", Start), Is.Null);
        Assert.That(LogindInputSource.ParseShowSession("IdleHint=maybe\nIdleSinceHint=-5\nType=x11\n", Start), Is.Null);
        Assert.That(LogindInputSource.ParseShowSession("IdleSinceHint=99999999999999999999999\n", Start), Is.Null);
        Assert.That(LogindInputSource.ParseShowSession($"IdleHint=yes\nIdleSinceHint={Usec(Start.AddDays(1))}\nType=x11\n", Start),
            Is.EqualTo(Start), "a time in the future is now at the latest");
        Assert.That(LogindInputSource.ParseSessionIds("  3 1000 ann seat0 tty2\nc1 1001 bob\n$(rm) 0 x\n\n"), Is.EqualTo(new[] { "3", "c1" }));
    }

    [Test]
    public void Logind_AsksListThenShowSession_AtMostOnceAMinInterval()
    {
        var clock = new VirtualClock(Start);
        var runner = new FakeRunner();
        runner.Answers["loginctl list-sessions"] = "2 1000 ann seat0 tty2\n5 1000 ann seat0 tty7\n";
        runner.Answers["loginctl show-session"] = $"IdleHint=yes\nIdleSinceHint={Usec(Start.AddMinutes(-4))}\nType=x11\n\nIdleHint=yes\nIdleSinceHint={Usec(Start.AddMinutes(-9))}\nType=tty\n";
        var source = new LogindInputSource(runner, clock);

        Assert.That(source.LastInput(), Is.EqualTo(Start.AddMinutes(-4)));
        Assert.That(runner.Ran, Has.Count.EqualTo(2));
        Assert.That(runner.Ran[1], Does.StartWith("loginctl show-session 2 5 -p IdleHint -p IdleSinceHint -p Type"));

        runner.Answers["loginctl show-session"] = "IdleHint=no\nIdleSinceHint=1\nType=x11\n";
        clock.Advance(TimeSpan.FromSeconds(9));
        Assert.That(source.LastInput(), Is.EqualTo(Start.AddMinutes(-4)), "within 10 s the last answer stands");
        Assert.That(source.Queries, Is.EqualTo(1));
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.That(source.LastInput(), Is.EqualTo(clock.GetUtcNow()), "the owner is back on the desktop");
        Assert.That(source.Queries, Is.EqualTo(2));
    }

    [Test]
    public void Logind_NotRunning_BacksOffFiveMinutes()
    {
        var clock = new VirtualClock(Start);
        var runner = new FakeRunner(); // every command fails, as without a system bus
        var source = new LogindInputSource(runner, clock);
        Assert.That(source.LastInput(), Is.Null);
        clock.Advance(TimeSpan.FromMinutes(4));
        Assert.That(source.LastInput(), Is.Null);
        Assert.That(runner.Ran, Has.Count.EqualTo(1), "no second process within the back-off");
        clock.Advance(TimeSpan.FromMinutes(1));
        source.LastInput();
        Assert.That(runner.Ran, Has.Count.EqualTo(2));
    }

    [Test]
    public void X11_IdleMilliseconds_AreTheTimeOfTheLastInput()
    {
        var clock = new VirtualClock(Start);
        var runner = new FakeRunner();
        runner.Answers["xprintidle"] = "125000\n";
        Assert.That(new X11InputSource(runner, clock).LastInput(), Is.EqualTo(Start - TimeSpan.FromSeconds(125)));
        Assert.That(X11InputSource.ParseIdleMilliseconds("not a number", Start), Is.Null);
        Assert.That(X11InputSource.ParseIdleMilliseconds("-5", Start), Is.Null);
        Assert.That(X11InputSource.ParseIdleMilliseconds("999999999999999999", Start), Is.Null);
        Assert.That(X11InputSource.ParseIdleMilliseconds(null, Start), Is.Null);
    }

    [Test]
    public void Probe_TheMostRecentInputOfSourcesAndDevicesCounts_AndSourcesAreSkippedWhenNotNeeded()
    {
        using var machine = new FakeMachine();
        machine.Type(Start.AddMinutes(-30));
        var x11 = new FixedSource(Start.AddMinutes(-1));
        var silent = new FixedSource(null);
        var probe = new ProcMachineProbe(machine.Root, [silent, x11]);

        Assert.That(probe.Read(askInputSources: true)!.LastInput, Is.EqualTo(Start.AddMinutes(-1)));
        Assert.That(probe.Read(askInputSources: false)!.LastInput, Is.EqualTo(Start.AddMinutes(-30)), "the devices' access times only");
        Assert.That(x11.Asked, Is.EqualTo(1));

        machine.Type(Start.AddSeconds(-5));
        Assert.That(probe.Read(askInputSources: true)!.LastInput, Is.EqualTo(Start.AddSeconds(-5)), "the terminal is more recent");

        x11.Input = null;
        machine.Type(Start.AddMinutes(-30));
        Assert.That(probe.Read(askInputSources: true)!.LastInput, Is.EqualTo(Start.AddMinutes(-30)), "fallback: no source can tell");
    }

    [Test]
    public void Tracker_MouseMovedOnTheDesktop_StopsWorkAtOnce_AndWorkResumesAfterIdleFor()
    {
        using var machine = new FakeMachine();
        var desktop = new FixedSource(Start.AddHours(-1));
        var probe = new ProcMachineProbe(machine.Root, [desktop]);
        var prefs = new PreferencesOptions { OnlyWhenIdle = true, IdleFor = TimeSpan.FromMinutes(3), Grace = TimeSpan.FromSeconds(30) };
        var now = Start;
        var tracker = new AvailabilityTracker(prefs, TimeZoneInfo.Utc, now);
        tracker.Update(probe.Read(true), now);
        Availability a = tracker.Current;
        for (var i = 0; i < 40; i++)
        {
            machine.Run(5, othersPercent: 2);
            now += TimeSpan.FromSeconds(5);
            a = tracker.Update(probe.Read(true), now);
        }
        Assert.That(a.State, Is.EqualTo(WorkState.Working));

        desktop.Input = now; // the owner moves the mouse: no terminal, no CPU, only the desktop knows
        machine.Run(5, othersPercent: 2);
        now += TimeSpan.FromSeconds(5);
        a = tracker.Update(probe.Read(true), now);
        Assert.That(a.State, Is.EqualTo(WorkState.IdlePaused));
        Assert.That(a.Reason, Does.Contain("the owner is using the machine"));

        for (var i = 0; i < 35; i++)
        {
            machine.Run(5, othersPercent: 2);
            now += TimeSpan.FromSeconds(5);
            a = tracker.Update(probe.Read(true), now);
        }
        Assert.That(a.State, Is.EqualTo(WorkState.IdlePaused), "under 3 min of idle since the input (and the quiet period restarts)");
        for (var i = 0; i < 40; i++)
        {
            machine.Run(5, othersPercent: 2);
            now += TimeSpan.FromSeconds(5);
            a = tracker.Update(probe.Read(true), now);
        }
        Assert.That(a.State, Is.EqualTo(WorkState.Working));
    }
}
