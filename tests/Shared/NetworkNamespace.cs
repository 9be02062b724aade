using System.Diagnostics;
using NUnit.Framework;

namespace Potluck.Tests;

/// <summary>
/// Runs tests that send multicast inside a fresh user + network namespace (<c>unshare -rn</c>) whose only interface is
/// loopback with multicast switched on, never on the machine's interfaces: the outer test re-runs the named inner
/// test there with <c>dotnet test</c>, and the inner test refuses to run anywhere else (it checks the variable).
/// Linked into each test project that needs it.
/// </summary>
internal static class NetworkNamespace
{
    /// <summary>Re-runs the tests matching <paramref name="filter"/> from <paramref name="assembly"/> inside a namespace with <paramref name="variable"/>=1 set.</summary>
    public static async Task RunInsideAsync(string assembly, string filter, string variable, CancellationToken ct)
    {
        if (Environment.GetEnvironmentVariable(variable) == "1")
        {
            Assert.Ignore("this is the inner run");
        }
        if (!OperatingSystem.IsLinux() || await RunAsync("unshare", ["-rn", "true"], null, ct) is not (0, _))
        {
            Assert.Ignore("unshare -rn is not permitted here");
        }
        const string script = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo && " +
                              "exec dotnet test \"$0\" --filter \"FullyQualifiedName~$1\"";
        var (code, output) = await RunAsync("unshare", ["-rn", "sh", "-c", script, assembly, filter], new() { [variable] = "1" }, ct);
        Assert.That(code, Is.Zero, output);
        Assert.That(output, Does.Contain("Passed: 1").Or.Contain("Passed:     1"), output);
    }

    /// <summary>For the inner test: ignored unless running inside the namespace the outer test made.</summary>
    public static void RequireInside(string variable)
    {
        if (Environment.GetEnvironmentVariable(variable) != "1")
        {
            Assert.Ignore("sends multicast: runs only inside the network namespace the outer test creates");
        }
    }

    private static async Task<(int Code, string Output)> RunAsync(string file, string[] args, Dictionary<string, string>? env, CancellationToken ct)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }
        foreach (var (k, v) in env ?? [])
        {
            info.Environment[k] = v;
        }
        try
        {
            using var process = Process.Start(info)!;
            var stdout = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
            var stderr = process.StandardError.ReadToEndAsync(CancellationToken.None);
            try
            {
                await process.WaitForExitAsync(ct);
            }
            catch (OperationCanceledException)
            {
                // Out of time: stop it and still report what it printed, so a hang says where it hung.
                process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync(CancellationToken.None);
                Assert.Fail($"{file} did not finish in time. It printed:\n{await stdout}{await stderr}");
            }
            return (process.ExitCode, await stdout + await stderr);
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return (-1, e.Message);
        }
    }
}
