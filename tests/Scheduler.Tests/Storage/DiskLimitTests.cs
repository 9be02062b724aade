using System.Security.Cryptography;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Sandbox;
using Potluck.Scheduler.Storage;

namespace Potluck.Scheduler.Tests.Storage;

/// <summary>
/// One disk limit (compute:provider:diskBytes) for what a provider keeps for others: modules it was sent and their
/// compiled forms. Leases go through the real registry, module store, sandbox and compiled cache on a temporary folder;
/// time is a fixed instant (nothing here waits).
/// </summary>
public class DiskLimitTests
{
    private static readonly DateTimeOffset Now = new(2030, 1, 1, 12, 0, 0, TimeSpan.Zero);
    private static readonly byte[] Input = new TaskPayload([], ReadOnlyMemory<byte>.Empty).Encode();

    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("potluck-disk-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, true);

    /// <summary>A valid module of about <paramref name="padding"/> bytes, different for each <paramref name="id"/>.</summary>
    private static byte[] Module(int id, int padding = 20_000) => Wasmtime.Module.ConvertText($$"""
        (module
          (memory (export "memory") 1)
          (data (i32.const 0) "{{new string('x', padding)}}{{id}}")
          (func (export "_start")))
        """);

    /// <summary>A provider's storage as a node builds it: one quota for the module store and the sandbox's compiled cache.</summary>
    private sealed class Provider : IDisposable
    {
        private readonly PrivateKey _key = PrivateKey.FromRandom(new Random(1));
        private readonly PrivateKey _requester = PrivateKey.FromRandom(new Random(2));
        private ulong _nextId;

        public Provider(string dir, long limit, int cores = 8)
        {
            ModulesDir = Path.Combine(dir, "modules");
            CacheDir = Path.Combine(dir, "cache");
            Quota = new DiskQuota(limit);
            Sandbox = new WasmSandbox(new SandboxOptions { CacheDirectory = CacheDir, DefaultFuel = 2_000_000_000, ModuleCacheCapacity = 1 },
                NullLogger<WasmSandbox>.Instance, null, Quota);
            Store = new ModuleStore(ModulesDir, Quota, maxMemoryBytes: 0);
            Quota.EvictToLimit();
            Executor = new SandboxTaskExecutor(Sandbox, Store);
            Registry = new ProviderLeaseRegistry(_key, new ProviderPolicy { PricePerMegaFuel = 10, RuntimeVersion = "test", MinRunTime = TimeSpan.FromHours(1) },
                new ProviderCapacity(cores, 8L << 30), Store, new LeaseOptions());
        }

        public string ModulesDir { get; }

        public string CacheDir { get; }

        public DiskQuota Quota { get; }

        public WasmSandbox Sandbox { get; }

        public ModuleStore Store { get; }

        public SandboxTaskExecutor Executor { get; }

        public ProviderLeaseRegistry Registry { get; }

        /// <summary>Bytes of every file the two stores hold on disk now, as the file system reports them.</summary>
        public long OnDisk => new[] { ModulesDir, CacheDir }.Where(Directory.Exists)
            .SelectMany(d => new DirectoryInfo(d).GetFiles()).Where(f => f.Name.EndsWith("wasm", StringComparison.Ordinal)).Sum(f => f.Length);

        /// <summary>Asks for a lease of <paramref name="module"/>: the lease offered, or the refusal.</summary>
        public (ProviderLease? Lease, LeaseReject? Reject) Request(byte[] module)
        {
            var work = new LeaseWork
            {
                Module = module, Input = Input, FuelLimit = 10_000_000, MemoryLimitBytes = 16 << 20,
                Deadline = Now + TimeSpan.FromMinutes(10), MaxPricePerMegaFuel = 20,
            };
            var request = new RequesterLease(_requester, _key.PublicKey, ++_nextId, work, new LeaseOptions()).Request;
            var (lease, step) = Registry.Handle(_requester.PublicKey, request, Now);
            return (lease, step.Send.OfType<LeaseReject>().SingleOrDefault());
        }

        /// <summary>Runs the lease's task as the provider's shell would once the module (when needed) and input arrived.</summary>
        public Task<ExecutionReport> RunAsync(ProviderLease lease, byte[] module) => Executor.ExecuteAsync(
            new LeaseExecution(null!, lease.Terms, lease.Terms.ModuleHash, lease.Terms.ModuleNeeded ? module : (ReadOnlyMemory<byte>?)null, Input), CancellationToken.None).AsTask();

        /// <summary>A whole lease: offered, run, ended.</summary>
        public async Task<ExecutionReport> LeaseAsync(byte[] module)
        {
            var (lease, reject) = Request(module);
            Assert.That(lease, Is.Not.Null, reject?.Detail);
            var report = await RunAsync(lease!, module);
            lease!.Cancel("done", Now);
            return report;
        }

        public bool OnDiskHas(byte[] module) => File.Exists(Path.Combine(ModulesDir, Convert.ToHexStringLower(SHA256.HashData(module)) + ".wasm"));

        public void Dispose() => Sandbox.Dispose();
    }

    [Test]
    public async Task ALeaseThatFits_IsOffered_ReservesItsModule_AndRunsAndStoresIt()
    {
        using var provider = new Provider(_dir, limit: 1 << 20);
        var module = Module(1);

        var (lease, reject) = provider.Request(module);

        Assert.That(reject, Is.Null);
        Assert.That(lease!.Terms.ModuleNeeded, Is.True);
        Assert.That(provider.Quota.ReservedBytes, Is.EqualTo(module.Length), "room for the module is held from the offer");
        var report = await provider.RunAsync(lease, module);
        Assert.That(report.Status, Is.EqualTo(ExecutionStatus.Success));
        Assert.That(provider.OnDiskHas(module), Is.True);
        Assert.That(provider.Quota.ReservedBytes, Is.Zero, "the reservation became the stored module");
        Assert.That(provider.Quota.UsedBytes, Is.EqualTo(provider.OnDisk), "the module and its compiled form, as counted, are what is on disk");
        Assert.That(Directory.GetFiles(provider.CacheDir, "*.cwasm"), Has.Length.EqualTo(1), "the compiled form is kept too");
        lease.Cancel("done", Now);

        var (again, _) = provider.Request(module);
        Assert.That(again!.Terms.ModuleNeeded, Is.False, "held now: the requester need not send it again");
    }

    [Test]
    [Category("Adversarial")]
    public async Task AnAdversarySendingManyDistinctModules_NeverPushesTheDiskPastTheLimit_AndAnHonestLeaseStillRuns()
    {
        const long limit = 400_000;
        using var provider = new Provider(_dir, limit);
        var honestEarlier = Module(1000);
        Assert.That((await provider.LeaseAsync(honestEarlier)).Status, Is.EqualTo(ExecutionStatus.Success));

        // 40 distinct modules of ~20 KB, each leased, run and kept: ~1.6 MB of modules alone, and their compiled forms.
        for (var i = 0; i < 40; i++)
        {
            Assert.That((await provider.LeaseAsync(Module(i))).Status, Is.EqualTo(ExecutionStatus.Success));
            Assert.That(provider.OnDisk, Is.LessThanOrEqualTo(limit), $"after module {i}: the bytes on disk stay within the limit");
            Assert.That(provider.Quota.UsedBytes, Is.EqualTo(provider.OnDisk), $"after module {i}: what is counted is what is on disk");
        }
        Assert.That(provider.Quota.Evicted, Is.GreaterThan(0));
        Assert.That(provider.OnDiskHas(honestEarlier), Is.False, "the honest module, unused since, went first");

        var honest = Module(2000);
        var report = await provider.LeaseAsync(honest);
        Assert.That(report.Status, Is.EqualTo(ExecutionStatus.Success), "an honest lease afterwards runs");
        Assert.That(provider.OnDiskHas(honest), Is.True, "and its module is kept, old entries evicted to make room");
        Assert.That(provider.OnDisk, Is.LessThanOrEqualTo(limit));
    }

    [Test]
    public void ALeaseNeedingMoreThanTheWholeLimit_IsRefused_DiskFull_AndNothingIsDeleted()
    {
        using var provider = new Provider(_dir, limit: 100_000);
        provider.LeaseAsync(Module(1)).GetAwaiter().GetResult();
        var before = provider.OnDisk;

        var (lease, reject) = provider.Request(Module(2, padding: 150_000));

        Assert.That(lease, Is.Null);
        Assert.That(reject!.Reason, Is.EqualTo(LeaseRejectReason.Policy), "never fits: not worth waiting for");
        Assert.That(reject.Detail, Does.StartWith("disk full:").And.Contain("100000 bytes offered").And.Contain("compute:provider:diskBytes"));
        Assert.That(provider.Registry.RefusedForDisk, Is.EqualTo(1));
        Assert.That(provider.OnDisk, Is.EqualTo(before), "nothing evicted for a lease that could never fit");
    }

    [Test]
    public async Task EvictionNeverRemovesAModuleALeaseHolds_AndWhatLeasesHoldRefusesMore_AsBusy_UntilTheyEnd()
    {
        var first = Module(1);
        var second = Module(2);
        using var provider = new Provider(_dir, limit: 200_000);
        await provider.LeaseAsync(first);
        var used = provider.Quota.UsedBytes;
        Assert.That(used, Is.GreaterThan(first.Length), "module and compiled form");

        // A lease of the held module, offered but not yet run: the module is pinned from the offer.
        var (holding, _) = provider.Request(first);
        Assert.That(holding!.Terms.ModuleNeeded, Is.False);
        // Another lease reserves room for its module, which has not arrived yet.
        var (receiving, _) = provider.Request(second);
        Assert.That(receiving!.Terms.ModuleNeeded, Is.True);

        // A third module cannot fit: what leases hold (the pinned module's files and the reservation) leaves too little.
        var third = Module(3, padding: 200_000 - (int)used - second.Length + 5_000);
        var (refused, reject) = provider.Request(third);
        Assert.That(refused, Is.Null);
        Assert.That(reject!.Reason, Is.EqualTo(LeaseRejectReason.Busy), "room may come back when leases end: wait and retry");
        Assert.That(reject.Detail, Does.StartWith("disk full:"));
        Assert.That(provider.OnDiskHas(first), Is.True, "never deleted while a lease holds it");

        // Lowering the limit below what leases hold deletes nothing they hold.
        provider.Quota.SetLimit(10_000);
        Assert.That(provider.OnDiskHas(first), Is.True);
        Assert.That((await provider.RunAsync(holding, first)).Status, Is.EqualTo(ExecutionStatus.Success), "the held module is there when its lease runs");
        holding.Cancel("done", Now);
        Assert.That(provider.OnDisk, Is.LessThanOrEqualTo(10_000), "once its lease ended, the lowered limit applies");
        Assert.That(provider.OnDiskHas(first), Is.False);

        provider.Quota.SetLimit(400_000);
        receiving.Cancel("gone", Now);
        Assert.That(provider.Quota.ReservedBytes, Is.Zero, "an ended lease's reservation is released");
        var (now, _) = provider.Request(third);
        Assert.That(now, Is.Not.Null, "room again once leases ended");
    }

    [Test]
    public async Task TheLimitLoweredLive_EvictsDownToIt_LeastRecentlyUsedFirst()
    {
        using var provider = new Provider(_dir, limit: 1 << 20);
        var modules = Enumerable.Range(0, 6).Select(i => Module(i)).ToArray();
        foreach (var m in modules)
        {
            await provider.LeaseAsync(m);
        }
        Assert.That((await provider.LeaseAsync(modules[0])).Status, Is.EqualTo(ExecutionStatus.Success)); // used again: now the most recent
        var full = provider.OnDisk;

        provider.Quota.SetLimit(full / 2);

        Assert.That(provider.OnDisk, Is.LessThanOrEqualTo(full / 2).And.GreaterThan(0), "down to the limit, not emptied");
        Assert.That(provider.Quota.UsedBytes, Is.EqualTo(provider.OnDisk));
        Assert.That(provider.OnDiskHas(modules[0]), Is.True, "the most recently used stays");
        Assert.That(provider.OnDiskHas(modules[1]), Is.False, "the least recently used went");
    }

    [Test]
    public async Task ARestart_RecomputesUsageFromDisk_AndHoldsALowerLimitAtOnce()
    {
        long used;
        using (var provider = new Provider(_dir, limit: 1 << 20))
        {
            for (var i = 0; i < 5; i++)
            {
                await provider.LeaseAsync(Module(i));
            }
            used = provider.Quota.UsedBytes;
            Assert.That(used, Is.EqualTo(provider.OnDisk).And.GreaterThan(0));
        }
        File.WriteAllBytes(Path.Combine(_dir, "cache", "x.cwasm.1234.tmp"), new byte[50_000]);

        using (var restarted = new Provider(_dir, limit: 1 << 20))
        {
            Assert.That(restarted.Quota.UsedBytes, Is.EqualTo(used), "counted from the files, not from memory");
            Assert.That(restarted.Quota.Files, Is.EqualTo(10), "five modules and their five compiled forms");
            Assert.That(Directory.GetFiles(restarted.CacheDir, "*.tmp"), Is.Empty, "a crash's temporary file is removed");
        }

        using var smaller = new Provider(_dir, limit: used / 2);
        Assert.That(smaller.OnDisk, Is.LessThanOrEqualTo(used / 2).And.GreaterThan(0), "started with a lower limit: brought within it");
        Assert.That(smaller.Quota.UsedBytes, Is.EqualTo(smaller.OnDisk));
    }
}
