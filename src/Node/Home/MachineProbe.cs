using System.Globalization;

namespace Potluck.Node.Home;

/// <summary>One reading of the machine: CPU counters, the owner's last input, power.</summary>
/// <param name="TotalTicks">All CPU time of the machine so far (every field of /proc/stat's <c>cpu</c> line), in clock ticks.</param>
/// <param name="IdleTicks">Idle and I/O-wait time of the machine so far, in clock ticks.</param>
/// <param name="OwnTicks">This process's user and system time so far (/proc/self/stat), in clock ticks.</param>
/// <param name="LastInput">When a terminal or input device was last used, where the machine can tell; null when it cannot.</param>
/// <param name="OnBattery">True on battery, false on mains, null when the machine has no battery or cannot tell.</param>
public sealed record MachineReading(long TotalTicks, long IdleTicks, long OwnTicks, DateTimeOffset? LastInput, bool? OnBattery);

/// <summary>Reads the machine (injected in tests).</summary>
public interface IMachineProbe
{
    /// <summary>The current reading; null when the machine cannot be read (not Linux, /proc missing).</summary>
    MachineReading? Read();

    /// <summary>
    /// As <see cref="Read()"/>; <paramref name="askInputSources"/> false skips the input sources that cost a process
    /// start (logind, X11) when nobody needs the owner's input (idle detection or input watching off).
    /// </summary>
    MachineReading? Read(bool askInputSources) => Read();
}

/// <summary>
/// Linux: <c>/proc/stat</c> and <c>/proc/self/stat</c> for CPU, the access times of <c>/dev/pts/*</c>, <c>/dev/tty*</c>
/// and <c>/dev/input/*</c> for input (a terminal read, as BOINC reads it; a desktop's input devices where their access
/// time moves), <c>/sys/class/power_supply</c> for power. Everything under <see cref="Root"/> ("/" on a real machine, a
/// folder of prepared files in tests). The owner's input is also asked of <paramref name="inputs"/> (systemd-logind, X11:
/// <see cref="InputSources"/>); the most recent input any of them or the devices show counts.
/// </summary>
public sealed class ProcMachineProbe(string root = "/", IReadOnlyList<IInputSource>? inputs = null) : IMachineProbe
{
    public string Root { get; } = root;

    /// <summary>The input sources asked besides the devices' access times.</summary>
    public IReadOnlyList<IInputSource> Inputs { get; } = inputs ?? [];

    private string At(string path) => Path.Combine(Root, path);

    public MachineReading? Read() => Read(askInputSources: true);

    public MachineReading? Read(bool askInputSources)
    {
        var cpu = ReadCpu();
        if (cpu is null)
        {
            return null;
        }
        var input = LastInput();
        if (askInputSources)
        {
            foreach (var source in Inputs)
            {
                if (source.LastInput() is { } t && (input is null || t > input))
                {
                    input = t;
                }
            }
        }
        return new MachineReading(cpu.Value.Total, cpu.Value.Idle, ReadOwn() ?? 0, input, OnBattery());
    }

    private (long Total, long Idle)? ReadCpu()
    {
        string? line;
        try
        {
            using var reader = new StreamReader(At("proc/stat"));
            line = reader.ReadLine();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
        return ParseCpuLine(line);
    }

    /// <summary>Parses /proc/stat's first line: "cpu user nice system idle iowait irq softirq steal guest guest_nice".</summary>
    public static (long Total, long Idle)? ParseCpuLine(string? line)
    {
        if (line is null || !line.StartsWith("cpu ", StringComparison.Ordinal))
        {
            return null;
        }
        var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (fields.Length < 5)
        {
            return null;
        }
        long total = 0, idle = 0;
        // guest and guest_nice (fields 9, 10) are already counted in user and nice.
        for (var i = 1; i < Math.Min(fields.Length, 9); i++)
        {
            if (!long.TryParse(fields[i], NumberStyles.None, CultureInfo.InvariantCulture, out var v))
            {
                return null;
            }
            total += v;
            if (i is 4 or 5)
            {
                idle += v;
            }
        }
        return (total, idle);
    }

    private long? ReadOwn()
    {
        try
        {
            return ParseOwnStat(File.ReadAllText(At("proc/self/stat")));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>utime + stime from /proc/[pid]/stat (fields 14 and 15; the command name in parentheses may hold spaces).</summary>
    public static long? ParseOwnStat(string text)
    {
        var close = text.LastIndexOf(')');
        if (close < 0)
        {
            return null;
        }
        var fields = text[(close + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        // After ")": field 3 (state) is fields[0], so utime (14) is fields[11] and stime (15) fields[12].
        return fields.Length > 12
               && long.TryParse(fields[11], NumberStyles.None, CultureInfo.InvariantCulture, out var u)
               && long.TryParse(fields[12], NumberStyles.None, CultureInfo.InvariantCulture, out var s)
            ? u + s
            : null;
    }

    private DateTimeOffset? LastInput()
    {
        DateTimeOffset? latest = null;
        void Consider(string path)
        {
            try
            {
                var t = new DateTimeOffset(File.GetLastAccessTimeUtc(path), TimeSpan.Zero);
                if (t.Year > 1601 && (latest is null || t > latest))
                {
                    latest = t;
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
            }
        }
        foreach (var (dir, pattern) in new[] { ("dev/pts", "*"), ("dev", "tty[0-9]*"), ("dev/input", "*") })
        {
            var folder = At(dir);
            if (!Directory.Exists(folder))
            {
                continue;
            }
            try
            {
                foreach (var file in Directory.EnumerateFiles(folder, pattern == "tty[0-9]*" ? "tty*" : pattern))
                {
                    var name = Path.GetFileName(file);
                    if (pattern == "tty[0-9]*" && (name.Length <= 3 || !char.IsAsciiDigit(name[3])))
                    {
                        continue;
                    }
                    if (name == "ptmx")
                    {
                        continue;
                    }
                    Consider(file);
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
            }
        }
        return latest;
    }

    private bool? OnBattery()
    {
        var folder = At("sys/class/power_supply");
        if (!Directory.Exists(folder))
        {
            return null;
        }
        bool? mainsOnline = null;
        var battery = false;
        try
        {
            foreach (var supply in Directory.EnumerateDirectories(folder))
            {
                var type = ReadSmall(Path.Combine(supply, "type"));
                if (type == "Mains")
                {
                    mainsOnline = (mainsOnline ?? false) || ReadSmall(Path.Combine(supply, "online")) == "1";
                }
                else if (type == "Battery")
                {
                    battery = true;
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
        return battery ? mainsOnline != true : null;
    }

    private static string? ReadSmall(string path)
    {
        try
        {
            using var reader = new StreamReader(path);
            var buffer = new char[64];
            var n = reader.Read(buffer, 0, buffer.Length);
            return new string(buffer, 0, n).Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
