using System.Security.Cryptography;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Sandbox;
using Potluck.Scheduler.Tests.Sandbox;
using Potluck.Scheduler.Verification;

namespace Potluck.Scheduler.Tests.Storage;

/// <summary>What a stranger's input can make the node keep on disk is checked first and bounded.</summary>
[Category("Adversarial")]
public class StorageQuotaTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("potluck-quota-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, true);

    /// <summary>A valid module of about <paramref name="padding"/> bytes, different for each <paramref name="id"/>.</summary>
    private static byte[] Module(int id, int padding = 1000) => Wasmtime.Module.ConvertText($$"""
        (module
          (memory (export "memory") 1)
          (data (i32.const 0) "{{new string('x', padding)}}{{id}}")
          (func (export "_start")))
        """);

    [Test]
    public void Put_WithTheWrongHash_KeepsNothing()
    {
        var store = new ModuleStore(_dir);
        var module = Module(1);

        Assert.That(store.Put(module, SHA256.HashData(Module(2))), Is.False);
        Assert.That(store.Contains(SHA256.HashData(module)), Is.False);
        Assert.That(Directory.GetFiles(_dir), Is.Empty);
    }

    [Test]
    public void DiskQuota_EvictsTheLeastRecentlyUsed_ButNeverAPinnedModule_AndCountsWhatAnEarlierRunKept()
    {
        var modules = Enumerable.Range(0, 6).Select(i => Module(i)).ToArray();
        var quota = 3L * modules[0].Length + 10;
        var store = new ModuleStore(_dir, maxMemoryBytes: 0, maxDiskBytes: quota);
        using var pin = store.Pin(SHA256.HashData(modules[0]));

        foreach (var m in modules.Take(4))
        {
            Assert.That(store.Put(m), Is.True);
        }
        Assert.That(store.DiskBytes, Is.LessThanOrEqualTo(quota));
        Assert.That(store.Contains(SHA256.HashData(modules[0])), Is.True, "pinned by a lease in progress: kept though the oldest");
        Assert.That(store.Contains(SHA256.HashData(modules[1])), Is.False, "the least recently used unpinned one went");

        store.TryGet(SHA256.HashData(modules[2])); // used again: now more recent than modules[3]
        store.Put(modules[4]);
        Assert.That(store.Contains(SHA256.HashData(modules[2])), Is.True);
        Assert.That(store.Contains(SHA256.HashData(modules[3])), Is.False);

        File.WriteAllBytes(Path.Combine(_dir, "leftover.wasm.1234.tmp"), new byte[100]);
        var restarted = new ModuleStore(_dir, maxMemoryBytes: 0, maxDiskBytes: quota);
        Assert.That(restarted.DiskBytes, Is.EqualTo(store.DiskBytes), "a restart counts what is on disk against the quota");
        Assert.That(Directory.GetFiles(_dir, "*.tmp"), Is.Empty, "a crash's temporary files are removed");
        restarted.Put(modules[5]);
        Assert.That(restarted.DiskBytes, Is.LessThanOrEqualTo(quota));
    }

    [Test]
    public async Task ALeaseWithJunkModuleBytes_LeavesNothingInTheStore_AValidOneIsKept()
    {
        using var fixture = new SandboxFixture();
        var store = new ModuleStore(_dir);
        var executor = new SandboxTaskExecutor(fixture.Create(diskCache: false), store);
        var terms = new LeaseTerms { FuelLimit = 1_000_000, MemoryLimitBytes = 16 << 20 };
        var input = new TaskPayload([], ReadOnlyMemory<byte>.Empty).Encode();
        var junk = RandomNumberGenerator.GetBytes(64 * 1024);

        var refused = await executor.ExecuteAsync(new LeaseExecution(null!, terms, SHA256.HashData(junk), junk, input), CancellationToken.None);
        Assert.That(refused.Status, Is.EqualTo(ExecutionStatus.InvalidModule));
        Assert.That(Directory.GetFiles(_dir), Is.Empty, "junk is run (and refused) before anything is written");

        var valid = Module(7);
        var ran = await executor.ExecuteAsync(new LeaseExecution(null!, terms, SHA256.HashData(valid), valid, input), CancellationToken.None);
        Assert.That(ran.Status, Is.Not.EqualTo(ExecutionStatus.InvalidModule));
        Assert.That(store.Contains(SHA256.HashData(valid)), Is.True);
    }

    [Test]
    public void CompiledCache_OnDisk_StaysWithinItsBytes()
    {
        using var fixture = new SandboxFixture();
        var first = Module(0, padding: 20_000);
        var sandbox = fixture.Create(o => o with { ModuleCacheCapacity = 1 });
        sandbox.Execute(new TaskSpec { Module = first }, ReadOnlyMemory<byte>.Empty);
        var entry = new FileInfo(Directory.GetFiles(fixture.CacheDirectory, "*.cwasm").Single()).Length;
        var bounded = fixture.Create(o => o with { ModuleCacheCapacity = 1, CacheDirectoryMaxBytes = 3 * entry + entry / 2 });

        for (var i = 1; i <= 8; i++)
        {
            bounded.Execute(new TaskSpec { Module = Module(i, padding: 20_000) }, ReadOnlyMemory<byte>.Empty);
        }

        var files = new DirectoryInfo(fixture.CacheDirectory).GetFiles("*.cwasm");
        Assert.That(files.Sum(f => f.Length), Is.LessThanOrEqualTo(3 * entry + entry / 2));
        Assert.That(files, Has.Length.GreaterThanOrEqualTo(2), "bounded, not emptied");
    }

    [Test]
    public void ReputationStore_FullOfRefusals_KeepsANewRefusal_AndForgetsStrangersFirst()
    {
        var random = new Random(3);
        PeerId NewPeer() => PrivateKey.FromRandom(random).PeerId;
        var store = new ReputationStore(maxProviders: 4);
        var refused = Enumerable.Range(0, 4).Select(_ => NewPeer()).ToList();
        foreach (var p in refused)
        {
            store.Refuse(p, "caught");
        }

        var latest = NewPeer();
        Assert.That(store.Refuse(latest, "caught again"), Is.True);
        Assert.That(store.IsRefused(latest), Is.True, "a new refusal is never silently dropped");
        Assert.That(refused.Count(store.IsRefused), Is.EqualTo(3), "the oldest refusal made room");

        var mixed = new ReputationStore(maxProviders: 3);
        var cheat = NewPeer();
        var stranger = NewPeer();
        var proven = NewPeer();
        mixed.Refuse(cheat, "caught");
        mixed.Get(stranger); // only looked at
        mixed.RecordVerified(proven);
        mixed.RecordUnchecked(stranger);
        mixed.Refuse(NewPeer(), "another cheat");

        Assert.That(mixed.IsRefused(cheat), Is.True);
        Assert.That(mixed.Get(proven).Verified, Is.EqualTo(1), "the proven provider stays");
        Assert.That(mixed.Get(stranger), Is.EqualTo(ProviderRecord.Empty), "the stranger was forgotten first");
    }
}
