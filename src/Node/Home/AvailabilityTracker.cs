using System.Globalization;

namespace Potluck.Node.Home;

/// <summary>Whether the node works for others now.</summary>
public enum WorkState
{
    /// <summary>Taking leases.</summary>
    Working,
    /// <summary>The owner is using the machine (others' CPU, or input), or it has not been idle long enough yet.</summary>
    IdlePaused,
    /// <summary>Outside the hours in <c>preferences:hours</c>.</summary>
    OutsideHours,
    /// <summary>On battery, and <c>preferences:notOnBattery</c> is set.</summary>
    OnBattery,
}

/// <summary>The node's availability now, with why, since when, and the last measure of others' CPU.</summary>
public sealed record Availability(WorkState State, string Reason, DateTimeOffset Since, double? OthersCpuPercent, DateTimeOffset? LastInput);

/// <summary>
/// The idle detector as a pure core (DESIGN §4): machine readings and the time in, the state out. Others' CPU is the
/// machine's busy time less this process's, over the machine's total, between two readings. The machine becomes idle
/// after <see cref="PreferencesOptions.IdleFor"/> with others' CPU under the threshold and no input; it stops being idle
/// at once on input, or when others' CPU has stayed over the threshold for <see cref="PreferencesOptions.Grace"/> (a
/// shorter spike changes nothing). Hours and battery are checked on every reading.
/// </summary>
public sealed class AvailabilityTracker
{
    private readonly TimeZoneInfo _zone;
    private PreferencesOptions _prefs;
    private Schedule _schedule;
    private MachineReading? _previous;
    private double? _others;
    private DateTimeOffset? _busySince;
    private DateTimeOffset? _quietSince;
    private bool _idle;

    public AvailabilityTracker(PreferencesOptions prefs, TimeZoneInfo zone, DateTimeOffset now)
    {
        _zone = zone;
        _prefs = prefs;
        _schedule = ScheduleOf(prefs);
        Current = new Availability(WorkState.IdlePaused, "starting: the machine has not been measured yet", now, null, null);
    }

    public Availability Current { get; private set; }

    /// <summary>Applies changed preferences from the next reading on (the idle history is kept).</summary>
    public void SetPreferences(PreferencesOptions prefs)
    {
        _schedule = ScheduleOf(prefs);
        _prefs = prefs;
    }

    private static Schedule ScheduleOf(PreferencesOptions prefs)
    {
        var problems = new List<string>();
        var schedule = Schedule.Parse(prefs.Hours, problems);
        return problems.Count == 0 ? schedule : throw new ArgumentException(string.Join("; ", problems));
    }

    /// <summary>Takes a reading (null: the machine cannot be read) and returns the availability it leads to.</summary>
    public Availability Update(MachineReading? reading, DateTimeOffset now)
    {
        if (reading is not null && _previous is not null)
        {
            var total = reading.TotalTicks - _previous.TotalTicks;
            var idle = reading.IdleTicks - _previous.IdleTicks;
            var own = reading.OwnTicks - _previous.OwnTicks;
            if (total > 0 && idle >= 0 && own >= 0)
            {
                _others = Math.Clamp((total - idle - own) * 100.0 / total, 0, 100);
            }
        }
        _previous = reading ?? _previous;

        var inputAgo = reading?.LastInput is { } input && _prefs.WatchInput ? now - input : (TimeSpan?)null;
        var recentInput = inputAgo is { } ago && ago < _prefs.IdleFor;
        var cpuBusy = _others is { } o && o >= _prefs.IdleCpuPercent;
        _busySince = cpuBusy ? _busySince ?? now : null;
        var quiet = _others is not null && !cpuBusy && !recentInput;
        _quietSince = quiet ? _quietSince ?? now : null;

        string idleReason = "";
        if (_idle)
        {
            if (recentInput)
            {
                _idle = false;
                idleReason = $"the owner is using the machine (input {Ago(inputAgo!.Value)} ago)";
            }
            else if (_busySince is { } since && now - since >= _prefs.Grace)
            {
                _idle = false;
                idleReason = $"the machine is in use: others' CPU {_others:0} % (over {_prefs.IdleCpuPercent:0.#} % for {Ago(now - since)})";
            }
        }
        else if (_quietSince is { } q && now - q >= _prefs.IdleFor)
        {
            _idle = true;
        }
        if (!_idle && idleReason.Length == 0)
        {
            idleReason = _others is null
                ? "measuring the machine's CPU"
                : recentInput ? $"the owner is using the machine (input {Ago(inputAgo!.Value)} ago)"
                : cpuBusy ? $"the machine is in use: others' CPU {_others:0} % (over {_prefs.IdleCpuPercent:0.#} %)"
                : $"waiting for {Ago(_prefs.IdleFor)} of idle (idle for {Ago(now - _quietSince!.Value)})";
        }

        WorkState state;
        string reason;
        if (_prefs.NotOnBattery && reading?.OnBattery == true)
        {
            (state, reason) = (WorkState.OnBattery, "on battery (preferences:notOnBattery)");
        }
        else if (!_schedule.IsOpen(TimeZoneInfo.ConvertTime(now, _zone).DateTime))
        {
            var local = TimeZoneInfo.ConvertTime(now, _zone);
            (state, reason) = (WorkState.OutsideHours,
                $"outside its hours: {local.DayOfWeek.ToString().ToLowerInvariant()} {local:HH:mm} is not in '{_prefs.Hours.For(local.DayOfWeek)}' (preferences:hours)");
        }
        else if (_prefs.OnlyWhenIdle && reading is not null && !_idle)
        {
            (state, reason) = (WorkState.IdlePaused, idleReason);
        }
        else
        {
            (state, reason) = (WorkState.Working, _prefs.OnlyWhenIdle
                ? reading is null ? "working (the machine's CPU cannot be read here, so idle detection is off)" : "working: the machine is idle"
                : "working (preferences:onlyWhenIdle is off)");
        }
        var sinceAt = state == Current.State ? Current.Since : now;
        Current = new Availability(state, reason, sinceAt, _others, reading?.LastInput);
        return Current;
    }

    internal static string Ago(TimeSpan t)
    {
        var s = (long)Math.Max(0, Math.Floor(t.TotalSeconds));
        return s < 60 ? $"{s} s"
            : s < 3600 ? (s % 60 == 0 ? $"{s / 60} min" : $"{s / 60} min {s % 60} s")
            : $"{(s / 3600.0).ToString("0.#", CultureInfo.InvariantCulture)} h";
    }
}
