using System.Runtime.InteropServices;
using Potluck.Node.Cli;
using Potluck.Node.Simulation;

namespace Potluck.Node.Tests.Simulation;

/// <summary>
/// What `potluck sim` reads of and does to glibc's allocator (README "Simulated meshes" → "Native memory, accounted"):
/// mallinfo2's totals move with what is allocated and freed, malloc_trim runs, and the trim interval's setting.
/// </summary>
public class NativeHeapTests
{
    [Test]
    public void Totals_CountWhatIsAllocated_AndWhatIsFreedLeavesUse()
    {
        if (!OperatingSystem.IsLinux())
        {
            Assert.Ignore("glibc only");
        }
        var before = NativeHeap.Read();
        Assert.That(before, Is.Not.Null, "mallinfo2 (glibc 2.33+) is there on the Linux this runs on");
        // 16 MiB in 4 KiB blocks: below glibc's mmap threshold, so from its arenas, as SQLite's allocations are.
        var blocks = new IntPtr[4096];
        for (var i = 0; i < blocks.Length; i++)
        {
            blocks[i] = Marshal.AllocHGlobal(4096); // malloc on Unix
            Marshal.WriteByte(blocks[i], 0, 1);
        }
        var held = NativeHeap.Read()!.Value;
        for (var i = 0; i < blocks.Length; i++)
        {
            Marshal.FreeHGlobal(blocks[i]);
        }
        var after = NativeHeap.Read()!.Value;
        // Other threads of the test host allocate too, but nowhere near 4 MiB meanwhile.
        Assert.That(held.InUse - before!.Value.InUse, Is.GreaterThan(12L << 20));
        Assert.That(held.InUse - after.InUse, Is.GreaterThan(12L << 20));
        Assert.That(NativeHeap.Trim(), Is.True);
        Assert.That(NativeHeap.Read()!.Value.Free, Is.GreaterThanOrEqualTo(0));
    }

    [Test]
    public void TrimInterval_OneSecondUnlessSet_ZeroIsOff_GarbageIsRefused()
    {
        Func<string, string?> Env(string? value) => name => name == SimGcSettings.MallocTrimVariable ? value : null;
        Assert.That(SimGcSettings.MallocTrimInterval(Env(null)), Is.EqualTo(TimeSpan.FromSeconds(1)));
        Assert.That(SimGcSettings.MallocTrimInterval(Env("250")), Is.EqualTo(TimeSpan.FromMilliseconds(250)));
        Assert.That(SimGcSettings.MallocTrimInterval(Env("0")), Is.EqualTo(TimeSpan.Zero));
        Assert.That(NativeHeap.StartTrimming(TimeSpan.Zero), Is.Null, "0: no timer");
        Assert.Throws<UsageException>(() => SimGcSettings.MallocTrimInterval(Env("-5")));
        Assert.Throws<UsageException>(() => SimGcSettings.MallocTrimInterval(Env("1s")));
        Assert.Throws<UsageException>(() => SimGcSettings.MallocTrimInterval(Env("99999999999")));
    }
}
