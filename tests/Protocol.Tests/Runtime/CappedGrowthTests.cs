using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Runtime;

public class CappedGrowthTests
{
    [Test]
    public void ADictionaryCappedAt256_EndsWith293Slots_Not431()
    {
        var capped = new Dictionary<int, int>();
        var plain = new Dictionary<int, int>();
        for (var i = 0; i < 256; i++)
        {
            CappedGrowth.BeforeAdd(capped, 256);
            capped[i] = i;
            plain[i] = i;
        }
        Assert.That(plain.Capacity, Is.EqualTo(431), "what the dictionary's own doubling gives (197 -> 431)");
        Assert.That(capped.Capacity, Is.EqualTo(293), "the prime at the cap");
        Assert.That(capped.Count, Is.EqualTo(256));
    }

    [Test]
    public void BelowTheCap_ItGrowsExactlyAsItWould()
    {
        var capped = new Dictionary<int, int>();
        var plain = new Dictionary<int, int>();
        for (var i = 0; i < 197; i++)
        {
            CappedGrowth.BeforeAdd(capped, 10_000);
            capped[i] = i;
            plain[i] = i;
            Assert.That(capped.Capacity, Is.EqualTo(plain.Capacity), $"after {i + 1} adds");
        }
    }

    [Test]
    public void EnumerationOrder_IsTheUncappedDictionarysOrder_UnderTheSameAddsAndRemoves()
    {
        // What enumerates a book (the victim's reservoir sample, Live, Sample) must see the same sequence as before.
        var random = new Random(17);
        var capped = new Dictionary<int, int>();
        var plain = new Dictionary<int, int>();
        const int cap = 100;
        for (var step = 0; step < 20_000; step++)
        {
            var key = random.Next(400);
            if (plain.ContainsKey(key) || (plain.Count >= cap && random.Next(2) == 0))
            {
                var victim = plain.Count > 0 && !plain.ContainsKey(key) ? plain.Keys.ElementAt(random.Next(plain.Count)) : key;
                plain.Remove(victim);
                capped.Remove(victim);
            }
            else if (plain.Count < cap)
            {
                CappedGrowth.BeforeAdd(capped, cap);
                capped[key] = step;
                plain[key] = step;
            }
            Assert.That(capped.Count, Is.LessThanOrEqualTo(cap));
        }
        Assert.That(capped.ToList(), Is.EqualTo(plain.ToList()), "same pairs in the same order");
        Assert.That(capped.Capacity, Is.EqualTo(107), "the prime at the cap of 100");
        Assert.That(plain.Capacity, Is.EqualTo(197));
    }
}
