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
        var sandbox = _fixture.Create(o => o with { ModuleCacheCapacity = 1 }, diskCache: false);
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
        var smallerStack = _fixture.Create(o => o with { MaxWasmStackBytes = 256 * 1024 });
        var hash = new string('a', 64);

        Assert.That(sandbox.CachePathFor(hash), Does.Contain(hash).And.Contain(sandbox.CacheFingerprint));
        Assert.That(smallerStack.CacheFingerprint, Is.Not.EqualTo(sandbox.CacheFingerprint));
        Assert.That(sandbox.CacheFingerprint, Has.Length.EqualTo(16));
    }

    /// <summary>A valid module with other bytes than <paramref name="wasm"/> (an extra custom section).</summary>
    private static byte[] WithCustomSection(byte[] wasm, byte fill)
    {
        byte[] section = [0, 6, 1, (byte)'x', fill, fill, fill, fill];
        return [.. wasm, .. section];
    }

    [Test]
    public void CachedModule_IsRecognisedByItsBytes_WithTheSameHashAsHashingThem()
    {
        var sandbox = _fixture.Create(diskCache: false);
        var bytes = Samples.Load("hashchain");
        var first = sandbox.Execute(Spec, "cache"u8.ToArray());

        // Equal bytes in another array: matched without re-hashing, same identity and result.
        var again = sandbox.Execute(Spec with { Module = bytes.ToArray() }, "cache"u8.ToArray());

        Assert.That(first.ModuleSource, Is.EqualTo(ModuleSource.Compiled));
        Assert.That(again.ModuleSource, Is.EqualTo(ModuleSource.MemoryCache));
        Assert.That(again.ModuleSha256, Is.EqualTo(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes))));
        Assert.That(again.FuelConsumed, Is.EqualTo(first.FuelConsumed));
        AssertCorrect(again);
    }

    [Test]
    public void ModuleDifferingFromACachedOne_InOneByteOfTheSameLength_IsHashedAndCompiledOnItsOwn()
    {
        var sandbox = _fixture.Create(diskCache: false);
        var a = WithCustomSection(Samples.Load("hashchain"), 1);
        var b = WithCustomSection(Samples.Load("hashchain"), 2);
        var runA = sandbox.Execute(Spec with { Module = a }, "cache"u8.ToArray());

        var runB = sandbox.Execute(Spec with { Module = b }, "cache"u8.ToArray());

        Assert.That(runB.ModuleSource, Is.EqualTo(ModuleSource.Compiled));
        Assert.That(runB.ModuleSha256, Is.EqualTo(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(b))));
        Assert.That(runB.ModuleSha256, Is.Not.EqualTo(runA.ModuleSha256));
        AssertCorrect(runB);
    }

    [Test]
    public void CallerChangingItsArrayAfterARun_DoesNotChangeWhatTheCacheMatches()
    {
        var sandbox = _fixture.Create(diskCache: false);
        var bytes = WithCustomSection(Samples.Load("hashchain"), 1);
        var first = sandbox.Execute(Spec with { Module = bytes }, "cache"u8.ToArray());

        bytes[^1] = 2; // the same array now holds another module
        var changed = sandbox.Execute(Spec with { Module = bytes }, "cache"u8.ToArray());

        Assert.That(changed.ModuleSha256, Is.Not.EqualTo(first.ModuleSha256));
        Assert.That(changed.ModuleSha256, Is.EqualTo(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes))));
        Assert.That(changed.ModuleSource, Is.EqualTo(ModuleSource.Compiled));
    }

    [Test]
    public void NamedHash_IsCheckedAgainstTheBytes_OnTheByteMatchedPathToo()
    {
        var sandbox = _fixture.Create(diskCache: false);
        sandbox.Execute(Spec, "cache"u8.ToArray());

        var wrong = sandbox.Execute(Spec with { ModuleSha256 = new string('0', 64) }, "cache"u8.ToArray());
        var right = sandbox.Execute(Spec with { ModuleSha256 = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(Samples.Load("hashchain"))) }, "cache"u8.ToArray());

        Assert.That(wrong.Outcome, Is.EqualTo(SandboxOutcome.InvalidModule));
        AssertCorrect(right);
    }

    [Test]
    public void ModuleCache_TryGetByBytes_AgreesWithTheHashPath()
    {
        using var engine = new Wasmtime.Engine();
        var cache = new ModuleCache(engine, "test", null, 4, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        var bytes = Samples.TestModule("exitcode").ToArray();
        var hash = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes));

        Assert.That(cache.TryGetByBytes(bytes), Is.Null, "nothing cached yet");
        var compiled = cache.GetOrCompile(hash, bytes, out var source);
        var matched = cache.TryGetByBytes(bytes.ToArray());
        var other = bytes.ToArray();
        other[other.Length / 2] ^= 1;

        Assert.That(source, Is.EqualTo(ModuleSource.Compiled));
        Assert.That(matched, Is.SameAs(compiled));
        Assert.That(matched!.Sha256Hex, Is.EqualTo(hash));
        Assert.That(matched.Sha256, Is.EqualTo(System.Security.Cryptography.SHA256.HashData(bytes)));
        Assert.That(cache.TryGetByBytes(other), Is.Null);
        Assert.That(cache.TryGetByBytes(bytes.AsSpan(0, bytes.Length - 1)), Is.Null);
        Assert.That(matched.Shape.Problem, Is.Null);
        Assert.That(matched.Shape.MinimumMemoryBytes, Is.GreaterThan(0));
    }
}
