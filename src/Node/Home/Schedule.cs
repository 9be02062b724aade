using System.Globalization;

namespace Potluck.Node.Home;

/// <summary>The weekly windows of <see cref="HoursOptions"/>, parsed: whether a local time falls in one.</summary>
public sealed class Schedule
{
    private readonly (TimeSpan Start, TimeSpan End)[]?[] _days = new (TimeSpan, TimeSpan)[]?[7];

    private Schedule()
    {
    }

    /// <summary>True when no day has windows: any hour.</summary>
    public bool Always => _days.All(d => d is null);

    /// <summary>Parses every day; <paramref name="problems"/> names each bad key (e.g. <c>preferences:hours:monday</c>).</summary>
    public static Schedule Parse(HoursOptions hours, List<string> problems)
    {
        var schedule = new Schedule();
        foreach (var day in Enum.GetValues<DayOfWeek>())
        {
            var text = hours.For(day);
            if (text is null)
            {
                continue;
            }
            var key = "preferences:hours:" + (OwnText(hours, day) is null ? "daily" : day.ToString().ToLowerInvariant());
            if (TryParseDay(text, out var windows, out var error))
            {
                schedule._days[(int)day] = windows;
            }
            else if (!problems.Any(p => p.StartsWith($"'{key}'", StringComparison.Ordinal)))
            {
                problems.Add($"'{key}' is '{text}': {error}; write windows like \"09:00-17:00\" or \"22:00-07:00,12:00-13:00\", or \"off\"");
            }
        }
        return schedule;
    }

    private static string? OwnText(HoursOptions h, DayOfWeek day) => h with { Daily = null } is var own ? own.For(day) : null;

    private static bool TryParseDay(string text, out (TimeSpan, TimeSpan)[] windows, out string error)
    {
        windows = [];
        error = "";
        if (text.Trim().Equals("off", StringComparison.OrdinalIgnoreCase) || text.Trim().Length == 0)
        {
            return true;
        }
        var list = new List<(TimeSpan, TimeSpan)>();
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            var ends = part.Split('-', StringSplitOptions.TrimEntries);
            if (ends.Length != 2 || !TryTime(ends[0], out var start) || !TryTime(ends[1], out var end))
            {
                error = $"'{part}' is not a window HH:mm-HH:mm";
                return false;
            }
            if (start == end)
            {
                error = $"'{part}' is empty (start and end are the same)";
                return false;
            }
            list.Add((start, end));
        }
        windows = [.. list];
        return true;
    }

    private static bool TryTime(string s, out TimeSpan time)
    {
        time = default;
        if (s == "24:00")
        {
            time = TimeSpan.FromHours(24);
            return true;
        }
        return TimeSpan.TryParseExact(s, @"hh\:mm", CultureInfo.InvariantCulture, out time) && time < TimeSpan.FromHours(24);
    }

    /// <summary>Whether <paramref name="local"/> is in a window of its day, or in one of the day before that runs past midnight.</summary>
    public bool IsOpen(DateTime local)
    {
        if (Always)
        {
            return true;
        }
        var t = local.TimeOfDay;
        var today = _days[(int)local.DayOfWeek];
        // A day with no entry of its own and no daily entry while others have one: any hour that day.
        if (today is null)
        {
            return true;
        }
        foreach (var (start, end) in today)
        {
            if (start < end ? t >= start && t < end : t >= start)
            {
                return true;
            }
        }
        var yesterday = _days[((int)local.DayOfWeek + 6) % 7];
        return yesterday is not null && yesterday.Any(w => w.Start > w.End && t < w.End);
    }
}
