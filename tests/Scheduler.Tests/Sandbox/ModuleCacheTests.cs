using System.Text;
using Potluck.Scheduler.Sandbox;

namespace Potluck.Scheduler.Tests.Sandbox;

public class ModuleCacheTests
{
    private SandboxFixture _fixture = null!;

    [SetUp]
    public void SetUp() => _fixture = new SandboxFixture();

    [TearDown]
    public void TearDown() => _fixture.Dispose();

    private static readonly TaskSpec Spec = new() { Module = Samples.Load("hashchain"), Args = ["100"] };

    private static string Expected => Samples.HashChain("cache"u8.ToArray(), 100);

    private static void AssertCorrect(SandboxResult result)
    {
        Assert.That(result.Outcome, Is.EqualTo(SandboxOutcome.Success), result.Error);
        Assert.That(Encoding.ASCII.GetString(result.Stdout.Span), Is.EqualTo(Expected));
    }

    [Test]
    public void SecondSandboxOnTheSameFolder_LoadsTheCompiledModuleFromDisk_WithTheSameFuel()
    {
        var first = _fixture.Create().Execute(Spec, "cache"u8.ToArray());
        var second = _fixture.Create().Execute(Spec, "cache"u8.ToArray());

        Assert.That(first.ModuleSource, Is.EqualTo(ModuleSource.Compiled));
        Assert.That(second.ModuleSource, Is.EqualTo(ModuleSource.DiskCache));
        AssertCorrect(first);
        AssertCorrect(second);
        Assert.That(second.FuelConsumed, Is.EqualTo(first.FuelConsumed));
    }

    [Test]
    public void SameSandbox_ReusesTheModuleFromMemory()
    {
        var sandbox = _fixture.Create();

        sandbox.Execute(Spec, "cache"u8.ToArray());
        var again = sandbox.Execute(Spec, "cache"u8.ToArray());

        Assert.That(again.ModuleSource, Is.EqualTo(ModuleSource.MemoryCache));
        AssertCorrect(again);
    }

    [Test]
    public void InMemoryCache_EvictsTheLeastRecentlyUsed()
    {
        var sandbox = _fixture.Create(o => o.ModuleCacheCapacity = 1, diskCache: false);
        var other = new TaskSpec { Module = Samples.TestModule("exitcode"), Args = ["0"] };

        sandbox.Execute(Spec, "cache"u8.ToArray());
        sandbox.Execute(other, default);
        var again = sandbox.Execute(Spec, "cache"u8.ToArray());

        Assert.That(again.ModuleSource, Is.EqualTo(ModuleSource.Compiled));
        AssertCorrect(again);
    }

    [TestCase(0, TestName = "TamperedCacheFile_MagicByte_IsIgnoredAndRecompiled")]
    [TestCase(20, TestName = "TamperedCacheFile_MacByte_IsIgnoredAndRecompiled")]
    [TestCase(-1, TestName = "TamperedCacheFile_PayloadByte_IsIgnoredAndRecompiled")]
    public void TamperedCacheFile_IsIgnoredAndRecompiled(int offset)
    {
        var writer = _fixture.Create();
        var hash = writer.Execute(Spec, "cache"u8.ToArray()).ModuleSha256;
        var path = writer.CachePathFor(hash)!;
        var bytes = File.ReadAllBytes(path);
        var at = offset >= 0 ? offset : bytes.Length / 2;
        bytes[at] ^= 0x5a;
        File.WriteAllBytes(path, bytes);

        var afterTamper = _fixture.Create().Execute(Spec, "cache"u8.ToArray());
        var afterRewrite = _fixture.Create().Execute(Spec, "cache"u8.ToArray());

        Assert.That(afterTamper.ModuleSource, Is.EqualTo(ModuleSource.Compiled));
        AssertCorrect(afterTamper);
        Assert.That(afterRewrite.ModuleSource, Is.EqualTo(ModuleSource.DiskCache), "the recompiled module was written back, signed");
        AssertCorrect(afterRewrite);
    }

    [Test]
    public void CacheFileSignedWithAnotherNodesKey_IsIgnored()
    {
        var writer = _fixture.Create();
        writer.Execute(Spec, "cache"u8.ToArray());
        File.WriteAllBytes(Path.Combine(_fixture.CacheDirectory, "node-cache.key"), new byte[32]);

        var result = _fixture.Create().Execute(Spec, "cache"u8.ToArray());

        Assert.That(result.ModuleSource, Is.EqualTo(ModuleSource.Compiled));
        AssertCorrect(result);
    }

    [Test]
    public void TruncatedCacheFile_IsIgnored()
    {
        var writer = _fixture.Create();
        var path = writer.CachePathFor(writer.Execute(Spec, "cache"u8.ToArray()).ModuleSha256)!;
        File.WriteAllBytes(path, File.ReadAllBytes(path)[..10]);

        var result = _fixture.Create().Execute(Spec, "cache"u8.ToArray());

        Assert.That(result.ModuleSource, Is.EqualTo(ModuleSource.Compiled));
        AssertCorrect(result);
    }

    [Test]
    public void CachePath_IsKeyedByModuleHashAndEngineFingerprint()
    {
        var sandbox = _fixture.Create();
        var smallerStack = _fixture.Create(o => o.MaxWasmStackBytes = 256 * 1024);
        var hash = new string('a', 64);

        Assert.That(sandbox.CachePathFor(hash), Does.Contain(hash).And.Contain(sandbox.CacheFingerprint));
        Assert.That(smallerStack.CacheFingerprint, Is.Not.EqualTo(sandbox.CacheFingerprint));
        Assert.That(sandbox.CacheFingerprint, Has.Length.EqualTo(16));
    }
}
