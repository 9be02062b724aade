using System.Diagnostics;
using System.Text;

namespace Potluck.Node.Tests;

/// <summary>Runs the built `potluck` executable as a child process and reads its output line by line.</summary>
internal sealed class PotluckProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly System.Threading.Channels.Channel<string> _lines = System.Threading.Channels.Channel.CreateUnbounded<string>();
    private readonly StringBuilder _stderr = new();
    private readonly StringBuilder _stdout = new();

    /// <summary>How long <see cref="WaitForLineAsync"/> waits for one line before failing with the process's output.</summary>
    public static readonly TimeSpan LineTimeout = TimeSpan.FromSeconds(90);

    private PotluckProcess(Process process)
    {
        _process = process;
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                _lines.Writer.TryComplete();
            }
            else
            {
                lock (_stdout)
                {
                    _stdout.AppendLine(e.Data);
                }
                _lines.Writer.TryWrite(e.Data);
            }
        };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (_stderr)
                {
                    _stderr.AppendLine(e.Data);
                }
            }
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public string Stderr
    {
        get
        {
            lock (_stderr)
            {
                return _stderr.ToString();
            }
        }
    }

    /// <summary>Everything the process has printed so far, for failure messages.</summary>
    public string Transcript
    {
        get
        {
            lock (_stdout)
            {
                return $"stdout:\n{_stdout}stderr:\n{Stderr}";
            }
        }
    }

    public static PotluckProcess Start(params string[] args) => StartWith(new Dictionary<string, string?>(), args);

    /// <summary>As <see cref="Start"/>, with <paramref name="environment"/> set on top (a null value removes the variable).</summary>
    public static PotluckProcess StartWith(IReadOnlyDictionary<string, string?> environment, params string[] args) =>
        Launch(environment, null, args);

    /// <summary>As <see cref="Start"/>, under a soft limit on its address space (<c>ulimit -v</c>, in KiB), set by a shell that then execs it.</summary>
    public static PotluckProcess StartUnderAddressLimit(long kib, params string[] args) =>
        Launch(new Dictionary<string, string?>(), kib, args);

    private static PotluckProcess Launch(IReadOnlyDictionary<string, string?> environment, long? addressLimitKib, string[] args)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "potluck.dll");
        var info = new ProcessStartInfo(addressLimitKib is null ? "dotnet" : "bash")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        if (addressLimitKib is { } kib)
        {
            info.ArgumentList.Add("-c");
            info.ArgumentList.Add("ulimit -S -v \"$0\" && exec dotnet \"$@\"");
            info.ArgumentList.Add(kib.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        info.ArgumentList.Add(dll);
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }
        info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        // Tests run several nodes on one busy machine: each takes any free control port and works whether or not the
        // machine is idle (a test that checks the preferences sets its own).
        info.Environment["POTLUCK__CONTROL__LISTEN"] = "127.0.0.1:0";
        info.Environment["POTLUCK__PREFERENCES__ONLYWHENIDLE"] = "false";
        foreach (var (name, value) in environment)
        {
            if (value is null)
            {
                info.Environment.Remove(name);
            }
            else
            {
                info.Environment[name] = value;
            }
        }
        return new PotluckProcess(Process.Start(info)!);
    }

    /// <summary>The next stdout line matching <paramref name="predicate"/>; fails with stderr when the process ends first.</summary>
    public async Task<string> WaitForLineAsync(Func<string, bool> predicate, CancellationToken ct)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(LineTimeout);
        try
        {
            await foreach (var line in _lines.Reader.ReadAllAsync(timeout.Token))
            {
                if (predicate(line))
                {
                    return line;
                }
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new TimeoutException($"potluck printed no expected line within {LineTimeout.TotalSeconds} s.\n{Transcript}");
        }
        throw new InvalidOperationException($"potluck exited before printing the expected line. stderr:\n{Stderr}");
    }

    public async Task<(int Code, string Out)> WaitForExitAsync(CancellationToken ct)
    {
        var output = new StringBuilder();
        await foreach (var line in _lines.Reader.ReadAllAsync(ct))
        {
            output.AppendLine(line);
        }
        await _process.WaitForExitAsync(ct);
        return (_process.ExitCode, output.ToString());
    }

    /// <summary>Asks the process to stop as a service manager would (SIGTERM), or as Ctrl-C does ("INT"), and returns its exit code.</summary>
    public async Task<int> StopAsync(CancellationToken ct, string signal = "TERM")
    {
        using (var kill = Process.Start("kill", ["-" + signal, _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
        {
            await kill.WaitForExitAsync(ct);
        }
        await _process.WaitForExitAsync(ct);
        return _process.ExitCode;
    }

    /// <summary>SIGKILL, as a crash or the OOM killer would end it: no shutdown code runs.</summary>
    public async Task KillAsync(CancellationToken ct) => await StopAsync(ct, "KILL");

    /// <summary>It ended by SIGKILL (exit status 128 + 9).</summary>
    public bool HasExitedBySignal => _process.HasExited && _process.ExitCode == 137;

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
    }
}
