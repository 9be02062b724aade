using System.Diagnostics;
using System.Globalization;

namespace Potluck.Node.Home;

/// <summary>Tells when the machine's owner last used a keyboard or mouse (injected in tests).</summary>
public interface IInputSource
{
    /// <summary>What it reads, for the log and `potluck status` (e.g. "logind", "x11").</summary>
    string Name { get; }

    /// <summary>When the owner last gave input; null when this source cannot tell (not installed, no session, an error).</summary>
    DateTimeOffset? LastInput();
}

/// <summary>Runs a short command and returns its standard output (injected in tests).</summary>
public interface ICommandRunner
{
    /// <summary>The command's output when it ran and exited 0 within its time; null otherwise (missing, failed, too slow).</summary>
    string? Run(string command, IReadOnlyList<string> arguments);
}

/// <summary>
/// Runs a command found on the PATH with a 2 s limit and at most 64 KiB of output read; never throws for a missing or
/// failing command.
/// </summary>
public sealed class ProcessCommandRunner : ICommandRunner
{
    private const int MaxOutput = 64 * 1024;

    public string? Run(string command, IReadOnlyList<string> arguments)
    {
        var start = new ProcessStartInfo(command)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in arguments)
        {
            start.ArgumentList.Add(a);
        }
        start.Environment["LC_ALL"] = "C";
        try
        {
            using var process = Process.Start(start);
            if (process is null)
            {
                return null;
            }
            process.StandardInput.Close();
            var output = ReadCappedAsync(process.StandardOutput);
            _ = ReadCappedAsync(process.StandardError);
            if (!process.WaitForExit(TimeSpan.FromSeconds(2)))
            {
                try
                {
                    process.Kill(entireProcessTree: true);
                }
                catch (InvalidOperationException)
                {
                }
                return null;
            }
            return process.ExitCode == 0 && output.Wait(TimeSpan.FromSeconds(1)) ? output.Result : null;
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or IOException or InvalidOperationException)
        {
            return null;
        }
    }

    /// <summary>The first <see cref="MaxOutput"/> characters; the rest is read and dropped so the command never blocks on a full pipe.</summary>
    private static async Task<string> ReadCappedAsync(StreamReader reader)
    {
        var buffer = new char[MaxOutput];
        var kept = 0;
        var scratch = new char[4096];
        int n;
        while ((n = await reader.ReadAsync(scratch)) > 0)
        {
            var take = Math.Min(n, MaxOutput - kept);
            scratch.AsSpan(0, take).CopyTo(buffer.AsSpan(kept));
            kept += take;
        }
        return new string(buffer, 0, kept);
    }
}

/// <summary>
/// Where the owner's input is read from on this machine, from the most to the least precise: systemd-logind's idle hint
/// (<see cref="LogindInputSource"/>), the X server's screensaver idle time (<see cref="X11InputSource"/>, when
/// <c>xprintidle</c> is installed and DISPLAY set), and always the access times of terminals and input devices that
/// <see cref="ProcMachineProbe"/> reads itself (the fallback). The most recent input any of them reports counts.
/// </summary>
public static class InputSources
{
    /// <summary>The command-based sources for this machine (each stays quiet where its command or service is missing).</summary>
    public static IReadOnlyList<IInputSource> ForThisMachine(TimeProvider? time = null)
    {
        if (!OperatingSystem.IsLinux())
        {
            return [];
        }
        var runner = new ProcessCommandRunner();
        var sources = new List<IInputSource>();
        if (OnPath("loginctl"))
        {
            sources.Add(new LogindInputSource(runner, time));
        }
        if (OnPath("xprintidle") && !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("DISPLAY")))
        {
            sources.Add(new X11InputSource(runner, time));
        }
        return sources;
    }

    private static bool OnPath(string command) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Any(dir => File.Exists(Path.Combine(dir, command)));
}

/// <summary>
/// A source that runs a command at most once per <see cref="MinInterval"/> (the answer in between is the last one), and
/// after a failure (command missing, service down, nothing to read) waits <see cref="FailureBackoff"/> before the next
/// try, so a machine without it pays nearly nothing.
/// </summary>
public abstract class CommandInputSource(ICommandRunner runner, TimeProvider? time) : IInputSource
{
    private readonly Lock _gate = new();
    private DateTimeOffset _nextTry = DateTimeOffset.MinValue;
    private DateTimeOffset? _last;

    protected ICommandRunner Runner { get; } = runner;

    protected TimeProvider Time { get; } = time ?? TimeProvider.System;

    /// <summary>How often the command runs at most. Default 10 s.</summary>
    public TimeSpan MinInterval { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How long to leave it alone after it failed. Default 5 min.</summary>
    public TimeSpan FailureBackoff { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Times the command ran (tests: the rate limit).</summary>
    public int Queries { get; private set; }

    public abstract string Name { get; }

    public DateTimeOffset? LastInput()
    {
        lock (_gate)
        {
            var now = Time.GetUtcNow();
            if (now < _nextTry)
            {
                return _last;
            }
            Queries++;
            _last = Query(now);
            _nextTry = now + (_last is null ? FailureBackoff : MinInterval);
            return _last;
        }
    }

    /// <summary>Runs the command and reads it; null when it cannot tell.</summary>
    protected abstract DateTimeOffset? Query(DateTimeOffset now);
}

/// <summary>
/// systemd-logind: <c>loginctl list-sessions</c>, then <c>loginctl show-session … -p IdleHint -p IdleSinceHint -p Type</c>
/// for each. A graphical session (x11, wayland, mir) whose desktop says it is not idle (IdleHint=no) is in use now; one
/// that is idle was last used at IdleSinceHint; a terminal session's IdleSinceHint is its terminal's last access (logind
/// reads the tty's atime). The most recent over all sessions counts; no sessions, or none with a time: cannot tell.
/// </summary>
public sealed class LogindInputSource(ICommandRunner runner, TimeProvider? time = null) : CommandInputSource(runner, time)
{
    public override string Name => "logind";

    protected override DateTimeOffset? Query(DateTimeOffset now)
    {
        var list = Runner.Run("loginctl", ["list-sessions", "--no-legend", "--no-pager"]);
        var ids = ParseSessionIds(list);
        if (ids.Count == 0)
        {
            return null;
        }
        var show = Runner.Run("loginctl", ["show-session", .. ids, "-p", "IdleHint", "-p", "IdleSinceHint", "-p", "Type", "--no-pager"]);
        return show is null ? null : ParseShowSession(show, now);
    }

    /// <summary>The first column of <c>loginctl list-sessions --no-legend</c> (at most 64 sessions, ids of digits, letters, '-', '_' only).</summary>
    public static IReadOnlyList<string> ParseSessionIds(string? text)
    {
        var ids = new List<string>();
        foreach (var line in (text ?? "").Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var id = line.Split(' ', 2, StringSplitOptions.RemoveEmptyEntries)[0];
            if (id.Length is > 0 and <= 32 && id.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_') && ids.Count < 64)
            {
                ids.Add(id);
            }
        }
        return ids;
    }

    /// <summary>Reads <c>show-session</c>'s blocks of Key=value lines (one block per session, blank lines between).</summary>
    public static DateTimeOffset? ParseShowSession(string text, DateTimeOffset now)
    {
        DateTimeOffset? latest = null;
        foreach (var block in text.Replace("\r", "").Split("\n\n", StringSplitOptions.RemoveEmptyEntries))
        {
            var values = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var line in block.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                var eq = line.IndexOf('=');
                if (eq > 0)
                {
                    values[line[..eq].Trim()] = line[(eq + 1)..].Trim();
                }
            }
            DateTimeOffset? input = null;
            var graphical = values.GetValueOrDefault("Type") is "x11" or "wayland" or "mir";
            if (graphical && values.GetValueOrDefault("IdleHint") == "no")
            {
                input = now;
            }
            else if (values.TryGetValue("IdleSinceHint", out var since)
                     && long.TryParse(since, NumberStyles.None, CultureInfo.InvariantCulture, out var usec) && usec > 0
                     && usec / 1000 < DateTimeOffset.MaxValue.ToUnixTimeMilliseconds())
            {
                var at = DateTimeOffset.FromUnixTimeMilliseconds(usec / 1000);
                input = at > now ? now : at;
            }
            if (input is { } i && (latest is null || i > latest))
            {
                latest = i;
            }
        }
        return latest;
    }
}

/// <summary>X11: <c>xprintidle</c> prints the X server's idle time in milliseconds (the XScreenSaver extension).</summary>
public sealed class X11InputSource(ICommandRunner runner, TimeProvider? time = null) : CommandInputSource(runner, time)
{
    public override string Name => "x11";

    protected override DateTimeOffset? Query(DateTimeOffset now) => ParseIdleMilliseconds(Runner.Run("xprintidle", []), now);

    /// <summary>xprintidle's output (milliseconds since the last input) as the time of that input; null when it is not a number.</summary>
    public static DateTimeOffset? ParseIdleMilliseconds(string? text, DateTimeOffset now) =>
        long.TryParse(text?.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var ms) && ms <= TimeSpan.FromDays(3650).TotalMilliseconds
            ? now - TimeSpan.FromMilliseconds(ms)
            : null;
}
