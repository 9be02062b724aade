using Potluck.Node.Hosting;
using Potluck.Node.Simulation;
using Potluck.Protocol.Runtime;

namespace Potluck.Node.Tests.Simulation;

/// <summary>
/// A mesh of nodes with files holds SQLite's descriptors for each node: one bigger than the process's limit is refused
/// before anything starts (past the limit the runtime aborted minutes into the run, with no report), and the count the
/// check uses is what complete nodes really hold.
/// </summary>
[Category("fast")]
public class SimFileDescriptorTests
{
    [Test]
    public void StartAsync_MoreNodesWithFilesThanTheLimitAllows_RefusedBeforeAnyNodeStarts()
    {
        var root = Path.Combine(Path.GetTempPath(), "potluck-fd-" + Guid.NewGuid().ToString("N"));
        var options = new MeshOptions { Nodes = 100, Providers = 10, Seed = 1, DataRoot = root, FileDescriptorLimit = 1_000 };
        Assert.That(SimulatedMesh.FileDescriptorsNeeded(options), Is.EqualTo(512 + (100 * 10) + 10));
        var message = VirtualTimeDriver.Run<string?>(async d =>
        {
            try
            {
                await using var mesh = await SimulatedMesh.StartAsync(d, options);
                return null;
            }
            catch (NodeStartException e)
            {
                return e.Message;
            }
        });
        Assert.That(message, Is.Not.Null, "refused");
        Assert.That(message, Does.Contain("1,522 open file descriptors").And.Contain("limit of 1,000").And.Contain("--stand-ins memory-store"));
        Assert.That(Directory.Exists(root), Is.False, "refused before any node made a file");

        // The same mesh with its storage in memory and one shared sandbox needs only the reserve: not refused.
        var inMemory = options with { StandIns = MeshStandIns.All };
        Assert.That(SimulatedMesh.FileDescriptorsNeeded(inMemory), Is.EqualTo(512));
        Assert.That(SimulatedMesh.FileDescriptorsNeeded(inMemory with { Nodes = 10_000, Providers = 1_000 }), Is.EqualTo(512));
    }

    [Test]
    public void StartAsync_WithinTheLimit_Starts()
    {
        var root = Path.Combine(Path.GetTempPath(), "potluck-fd-" + Guid.NewGuid().ToString("N"));
        try
        {
            var options = new MeshOptions { Nodes = 2, Providers = 1, Seed = 1, DataRoot = root, FileDescriptorLimit = 512 + (2 * 10) + 1 };
            var up = VirtualTimeDriver.Run(async d =>
            {
                await using var mesh = await SimulatedMesh.StartAsync(d, options);
                return mesh.Nodes.Count(n => n.IsUp);
            });
            Assert.That(up, Is.EqualTo(2), "exactly at the limit is allowed");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Test]
    public void StartAsync_ALimitBelowOne_IsRefusedAsAnOption()
    {
        var options = new MeshOptions { Nodes = 2, Providers = 1, FileDescriptorLimit = 0 };
        var thrown = VirtualTimeDriver.Run<Exception?>(async d =>
        {
            try
            {
                await using var mesh = await SimulatedMesh.StartAsync(d, options);
                return null;
            }
            catch (ArgumentOutOfRangeException e)
            {
                return e;
            }
        });
        Assert.That(thrown, Is.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo(nameof(MeshOptions.FileDescriptorLimit)));
    }

    [Test]
    public void ParseOpenFilesLimit_ReadsTheSoftLimit()
    {
        const string limits = """
            Limit                     Soft Limit           Hard Limit           Units
            Max processes             63907                63907                processes
            Max open files            20000                524288               files
            Max locked memory         8388608              8388608              bytes
            """;
        Assert.That(SimulatedMesh.ParseOpenFilesLimit(limits), Is.EqualTo(20_000));
        Assert.That(SimulatedMesh.ParseOpenFilesLimit("Max open files            unlimited            unlimited            files\n"), Is.Null);
        Assert.That(SimulatedMesh.ParseOpenFilesLimit("Max processes 10 10 processes\n"), Is.Null);
        Assert.That(SimulatedMesh.ParseOpenFilesLimit("Max open files"), Is.Null);
    }

    [Test]
    public void CompleteNodes_HoldNoMoreFileDescriptorsThanTheCheckCounts()
    {
        if (!OperatingSystem.IsLinux())
        {
            Assert.Ignore("counts the descriptors in /proc/self/fd");
        }
        var root = Path.Combine(Path.GetTempPath(), "potluck-fd-" + Guid.NewGuid().ToString("N"));
        try
        {
            var options = new MeshOptions { Nodes = 4, Providers = 1, Seed = 3, DataRoot = root, Loggers = Potluck.Tests.TestLogging.Factory };
            var (held, completed) = VirtualTimeDriver.Run(async d =>
            {
                await using var mesh = await SimulatedMesh.StartAsync(d, options);
                await mesh.SettleAsync(TimeSpan.FromSeconds(5));
                // A task runs, so the provider has loaded a module and written its files too.
                var record = await mesh.SubmitAsync(mesh.Requesters.First(), SimulatedMesh.HashChainTask(mesh.Random, 50));
                await mesh.SettleAsync(TimeSpan.FromSeconds(5));
                return (DescriptorsUnder(root), record.Correct);
            });
            Assert.That(completed, Is.True);
            Assert.That(held, Is.GreaterThanOrEqualTo(options.Nodes * 3), "each node's databases are open");
            Assert.That(held, Is.LessThanOrEqualTo(options.Nodes * SimulatedMesh.FileDescriptorsPerStoredNode));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    private static int DescriptorsUnder(string root)
    {
        var prefix = Path.GetFullPath(root) + Path.DirectorySeparatorChar;
        var count = 0;
        foreach (var fd in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            try
            {
                if (new FileInfo(fd).LinkTarget is { } target && target.StartsWith(prefix, StringComparison.Ordinal))
                {
                    count++;
                }
            }
            catch (IOException)
            {
                // closed while we looked
            }
        }
        return count;
    }
}
