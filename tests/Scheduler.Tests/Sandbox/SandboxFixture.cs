using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Scheduler.Sandbox;

namespace Potluck.Scheduler.Tests.Sandbox;

/// <summary>Sandboxes over throwaway cache folders, removed after each test.</summary>
internal sealed class SandboxFixture : IDisposable
{
    private readonly List<IDisposable> _owned = [];

    public string CacheDirectory { get; } = Path.Combine(Path.GetTempPath(), "potluck-sandbox-tests", Guid.NewGuid().ToString("N"));

    public WasmSandbox Create(Func<SandboxOptions, SandboxOptions>? configure = null, bool diskCache = true, TimeProvider? time = null)
    {
        var options = new SandboxOptions { CacheDirectory = diskCache ? CacheDirectory : null, DefaultFuel = 2_000_000_000 };
        options = configure?.Invoke(options) ?? options;
        var sandbox = new WasmSandbox(options, NullLogger<WasmSandbox>.Instance, time);
        _owned.Add(sandbox);
        return sandbox;
    }

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
        try
        {
            Directory.Delete(CacheDirectory, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }
}
