using System.Globalization;

namespace Potluck.Node.Tests.Home;

/// <summary>
/// A prepared machine for <see cref="Potluck.Node.Home.ProcMachineProbe"/>: /proc/stat, /proc/self/stat, a terminal under
/// /dev/pts and power supplies under /sys, in a temporary folder the test rewrites as the machine's load changes.
/// </summary>
internal sealed class FakeMachine : IDisposable
{
    private const int TicksPerSecond = 100;
    private long _user, _system, _idle, _iowait, _own;

    public FakeMachine(int cores = 2)
    {
        Cores = cores;
        Root = Path.Combine(Path.GetTempPath(), "potluck-fake-machine-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path.Combine(Root, "proc", "self"));
        Directory.CreateDirectory(Path.Combine(Root, "dev", "pts"));
        File.WriteAllText(Path.Combine(Root, "dev", "pts", "0"), "");
        Type(new DateTimeOffset(2000, 1, 1, 0, 0, 0, TimeSpan.Zero)); // nobody has typed for years
        Write();
    }

    public string Root { get; }

    public int Cores { get; }

    /// <summary>Moves the counters on by <paramref name="seconds"/> with others using <paramref name="othersPercent"/> and this node <paramref name="ownPercent"/> of the machine.</summary>
    public void Run(double seconds, double othersPercent, double ownPercent = 0)
    {
        var total = (long)(seconds * TicksPerSecond * Cores);
        var others = (long)(total * othersPercent / 100);
        var own = (long)(total * ownPercent / 100);
        _user += others / 2 + own;
        _system += others - others / 2;
        _own += own;
        var idle = total - others - own;
        _idle += idle - idle / 10;
        _iowait += idle / 10;
        Write();
    }

    /// <summary>The owner typed at a terminal at <paramref name="when"/>.</summary>
    public void Type(DateTimeOffset when) => File.SetLastAccessTimeUtc(Path.Combine(Root, "dev", "pts", "0"), when.UtcDateTime);

    /// <summary>A laptop: a battery, and mains online or not.</summary>
    public void Power(bool mains)
    {
        var ac = Path.Combine(Root, "sys", "class", "power_supply", "AC");
        var bat = Path.Combine(Root, "sys", "class", "power_supply", "BAT0");
        Directory.CreateDirectory(ac);
        Directory.CreateDirectory(bat);
        File.WriteAllText(Path.Combine(ac, "type"), "Mains\n");
        File.WriteAllText(Path.Combine(ac, "online"), mains ? "1\n" : "0\n");
        File.WriteAllText(Path.Combine(bat, "type"), "Battery\n");
    }

    private void Write()
    {
        var c = CultureInfo.InvariantCulture;
        File.WriteAllText(Path.Combine(Root, "proc", "stat"),
            string.Create(c, $"cpu  {_user} 0 {_system} {_idle} {_iowait} 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\nintr 1 2 3\n"));
        File.WriteAllText(Path.Combine(Root, "proc", "self", "stat"),
            string.Create(c, $"4242 (potluck (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 {_own - _own / 3} {_own / 3} 0 0 20 0 12 0 100 0 0\n"));
    }

    public void Dispose() => Directory.Delete(Root, recursive: true);
}
