using System.Security.Cryptography;
using Potluck.Scheduler.Requesting;

namespace Potluck.Scheduler.Tests.Requesting;

/// <summary>
/// The requester's module digests: a module submitted again (in another buffer) is recognised by its bytes and not hashed
/// again; nothing the caller does to its buffer or to a returned hash changes what is remembered; and the copies are bounded.
/// </summary>
public class ModuleDigestsTests
{
    private static byte[] Module(int seed, int length)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    [Test]
    public void TheSameBytesInAnotherBuffer_GiveTheirSha256_HashedOnce()
    {
        var digests = new ModuleDigests();
        var module = Module(1, 150_000);
        for (var i = 0; i < 5; i++)
        {
            Assert.That(digests.Of(module.ToArray()), Is.EqualTo(SHA256.HashData(module)), $"submission {i}, a new buffer each time");
        }
        Assert.That(digests.Hashed, Is.EqualTo(1), "hashed at the first submission only");
    }

    [Test]
    public void ABufferChangedAfterASubmission_GetsTheHashOfWhatItHoldsNow_NotTheOneRemembered()
    {
        var digests = new ModuleDigests();
        var buffer = Module(2, 4_096);
        var before = digests.Of(buffer);
        buffer[100] ^= 0xFF; // the caller reuses its buffer for another module of the same length
        var after = digests.Of(buffer);
        Assert.That(after, Is.EqualTo(SHA256.HashData(buffer)));
        Assert.That(after, Is.Not.EqualTo(before));
        buffer[100] ^= 0xFF;
        Assert.That(digests.Of(buffer), Is.EqualTo(before), "the first module again: its remembered hash");
        Assert.That(digests.Hashed, Is.EqualTo(2));
    }

    [Test]
    public void AReturnedHashChangedByItsCaller_ChangesNothingRemembered()
    {
        var digests = new ModuleDigests();
        var module = Module(3, 1_000);
        var first = digests.Of(module);
        Array.Clear(first);
        Assert.That(digests.Of(module), Is.EqualTo(SHA256.HashData(module)));
    }

    [Test]
    public void TheCopiesKept_AreBoundedInCountAndBytes_TheLeastRecentlyUsedGoFirst()
    {
        var digests = new ModuleDigests();
        var modules = Enumerable.Range(0, ModuleDigests.MaxEntries + 2).Select(i => Module(10 + i, 1_000 + i)).ToArray();
        foreach (var m in modules)
        {
            digests.Of(m);
        }
        Assert.That(digests.Footprint().Count, Is.EqualTo(ModuleDigests.MaxEntries));
        var hashed = digests.Hashed;
        digests.Of(modules[^1]);
        Assert.That(digests.Hashed, Is.EqualTo(hashed), "the most recent is remembered");
        digests.Of(modules[0]);
        Assert.That(digests.Hashed, Is.EqualTo(hashed + 1), "the oldest was forgotten");

        var big = new ModuleDigests();
        var quarter = (int)(ModuleDigests.MaxBytes / 4);
        for (var i = 0; i < 5; i++)
        {
            big.Of(Module(40 + i, quarter));
        }
        Assert.That(big.Footprint().Bytes, Is.LessThanOrEqualTo(ModuleDigests.MaxBytes));
        Assert.That(big.Footprint().Count, Is.EqualTo(4), "four quarters fit, the fifth pushes out the oldest");
        var over = Module(50, quarter + 1);
        big.Of(over);
        big.Of(over);
        Assert.That(big.Hashed, Is.EqualTo(7), "a module over a quarter of the bound is hashed every time, not kept");
        Assert.That(big.Footprint().Count, Is.EqualTo(4));
    }
}
