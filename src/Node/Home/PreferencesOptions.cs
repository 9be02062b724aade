namespace Potluck.Node.Home;

/// <summary>
/// The operator's preferences for a node at home (the <c>preferences</c> section of <c>potluck.json</c>): when the node
/// may work for others and what happens when the owner comes back. Cores, memory and price are in
/// <c>compute:provider</c>; peers allowed or refused are here. `potluck run`'s defaults are ones a home machine can live
/// with: work only when the machine has been otherwise idle for three minutes, stop after 30 s of the owner's use,
/// cancel running tasks cleanly when stopping, never on battery, at any hour, half the cores. A library node (tests,
/// benchmarks) works whenever it is asked. Changeable while the node runs (<c>potluck config set</c>).
/// </summary>
public sealed record PreferencesOptions
{
    /// <summary>Work only while the machine is otherwise idle (others' CPU under <see cref="IdleCpuPercent"/>, no terminal input). `potluck run`: true; a library node: false.</summary>
    public bool OnlyWhenIdle { get; init; }

    /// <summary>CPU used by everything but this node, as a percentage of the whole machine, under which the machine counts as idle. Default 25.</summary>
    public double IdleCpuPercent { get; init; } = 25;

    /// <summary>How long the machine must have been idle before work starts. Default 3 minutes (BOINC's default).</summary>
    public TimeSpan IdleFor { get; init; } = TimeSpan.FromMinutes(3);

    /// <summary>How long others' CPU must stay over the threshold before work stops, so a brief spike does not stop it. Default 30 s. Input stops work at once.</summary>
    public TimeSpan Grace { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Count terminal and input-device activity (access times of /dev/pts/*, /dev/tty*, /dev/input/*) as the owner's. Default true.</summary>
    public bool WatchInput { get; init; } = true;

    /// <summary>What running tasks do when the owner returns (or the hours end, or the battery takes over). Default <see cref="OwnerReturnAction.Cancel"/>.</summary>
    public OwnerReturnAction OnOwnerReturn { get; init; } = OwnerReturnAction.Cancel;

    /// <summary>Do not work while the machine runs on battery. `potluck run`: true; a library node: false.</summary>
    public bool NotOnBattery { get; init; }

    /// <summary>
    /// Share of this machine's cores offered when <c>compute:provider:cores</c> is not set, in percent: cores =
    /// max(1, floor(machine cores × share / 100)). Default 50.
    /// </summary>
    public double CpuSharePercent { get; init; } = 50;

    /// <summary>Hours the node may work, per weekday, in the machine's local time. Default: any hour.</summary>
    public HoursOptions Hours { get; init; } = new();

    /// <summary>Only these peers may lease from this node (peer ids); empty: anyone not refused.</summary>
    public IReadOnlyList<string> AllowPeers { get; init; } = [];

    /// <summary>These peers may not connect to this node at all (peer ids).</summary>
    public IReadOnlyList<string> RefusePeers { get; init; } = [];

    /// <summary>How often the machine is sampled. Default 5 s.</summary>
    public TimeSpan SampleInterval { get; init; } = TimeSpan.FromSeconds(5);
}

/// <summary>What happens to running tasks when the node must stop working.</summary>
public enum OwnerReturnAction
{
    /// <summary>End each running lease now, cleanly: the requester is told and runs it elsewhere; nothing is paid or owed.</summary>
    Cancel,

    /// <summary>Let running tasks finish (each is bounded by its lease's deadline); take no new ones.</summary>
    Finish,
}

/// <summary>
/// Daily time windows: <c>monday</c> … <c>sunday</c>, or <c>daily</c> for any day without its own; each value is
/// <c>"09:00-17:00"</c> or a comma-separated list (<c>"22:00-07:00,12:00-13:00"</c>; a range past midnight runs into the
/// next day), <c>"off"</c> for a day off. Unset everywhere: any hour.
/// </summary>
public sealed record HoursOptions
{
    public string? Daily { get; init; }
    public string? Monday { get; init; }
    public string? Tuesday { get; init; }
    public string? Wednesday { get; init; }
    public string? Thursday { get; init; }
    public string? Friday { get; init; }
    public string? Saturday { get; init; }
    public string? Sunday { get; init; }

    /// <summary>The text for <paramref name="day"/>: its own, else <see cref="Daily"/>, else null (any hour).</summary>
    public string? For(DayOfWeek day) => (day switch
    {
        DayOfWeek.Monday => Monday,
        DayOfWeek.Tuesday => Tuesday,
        DayOfWeek.Wednesday => Wednesday,
        DayOfWeek.Thursday => Thursday,
        DayOfWeek.Friday => Friday,
        DayOfWeek.Saturday => Saturday,
        _ => Sunday,
    }) ?? Daily;
}
