using Potluck.Protocol.Gossipsub;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// The settled table keeps an expiry as 32 bits after an epoch that moves: it answers and expires exactly (to the tick) as
/// a table of whole expiries would, across epochs and with expiries too far apart for one.
/// </summary>
public class SettledTableEpochTests
{
    private static readonly long T0 = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero).UtcTicks;

    [Test]
    public void ASlot_IsTwelveBytes() => Assert.That(SettledTable.SlotBytes, Is.EqualTo(12));

    /// <summary>
    /// Seeded adds, re-adds, removes and sweeps over six virtual hours, against a dictionary of whole expiries: the same
    /// answers, the same expiries out, the same earliest expiry left, to the tick. Most expiries are now + 120 s (odd
    /// ticks included); one in fifty is now + 20 minutes, which no 32-bit epoch holds beside the rest.
    /// </summary>
    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    public void SeededOperations_AnswerAndExpireExactlyAsWholeExpiriesWould(int seed)
    {
        var random = new Random(seed);
        var table = new SettledTable();
        var model = new Dictionary<ulong, long>();
        var keys = new List<ulong>();
        var now = T0;
        var farSeen = false;
        for (var step = 0; step < 40_000; step++)
        {
            now += random.Next(0, 10_000_000); // up to 1 s
            var roll = random.Next(100);
            if (roll < 55 || keys.Count == 0)
            {
                var key = (ulong)random.NextInt64() ^ ((ulong)random.Next() << 63);
                var expiry = now + (random.Next(50) == 0 ? TimeSpan.FromMinutes(20).Ticks : TimeSpan.FromSeconds(120).Ticks) + random.Next(7);
                table.Add(key, expiry);
                model[key] = model.TryGetValue(key, out var had) ? Math.Max(had, expiry) : expiry;
                keys.Add(key);
            }
            else if (roll < 65)
            {
                var key = keys[random.Next(keys.Count)];
                var expiry = now + TimeSpan.FromSeconds(random.Next(0, 200)).Ticks;
                var known = model.ContainsKey(key);
                Assert.That(table.Contains(key), Is.EqualTo(known));
                if (known)
                {
                    table.Add(key, expiry);
                    model[key] = Math.Max(model[key], expiry);
                }
            }
            else if (roll < 75)
            {
                var key = keys[random.Next(keys.Count)];
                Assert.That(table.Remove(key, out var expiry), Is.EqualTo(model.Remove(key, out var expected)));
                Assert.That(expiry, Is.EqualTo(expected));
            }
            else if (roll < 95)
            {
                var key = keys[random.Next(keys.Count)];
                Assert.That(table.Contains(key), Is.EqualTo(model.ContainsKey(key)));
            }
            else
            {
                var earliest = table.RemoveExpired(now);
                foreach (var gone in model.Where(e => e.Value <= now).Select(e => e.Key).ToList())
                {
                    model.Remove(gone);
                }
                Assert.That(earliest, Is.EqualTo(model.Count == 0 ? long.MaxValue : model.Values.Min()), $"step {step}");
                keys.RemoveAll(k => !model.ContainsKey(k) && random.Next(2) == 0);
            }
            farSeen |= table.FarCount > 0;
            Assert.That(table.Count, Is.EqualTo(model.Count), $"step {step}");
        }
        Assert.That(farSeen, Is.True, "some expiries were kept beside the slots");
        Assert.That(now - T0, Is.GreaterThan(TimeSpan.FromHours(5).Ticks), "many epochs passed");
    }

    /// <summary>A flood of distinct keys with the default TTL stays in the slots (none beside them) and leaves when due.</summary>
    [Test]
    public void AFloodOverMinutes_StaysInTheSlots_AndLeavesWhenDue()
    {
        var table = new SettledTable();
        var now = T0;
        for (var i = 0; i < 100_000; i++)
        {
            now += TimeSpan.FromMilliseconds(7).Ticks;
            table.Add((ulong)i * 0x9E3779B97F4A7C15UL, now + TimeSpan.FromSeconds(120).Ticks);
            if (i % 1000 == 0)
            {
                table.RemoveExpired(now);
            }
        }
        Assert.That(table.FarCount, Is.Zero);
        Assert.That(table.Count, Is.InRange(17_000, 18_200), "about 120 s of 7 ms arrivals");
        Assert.That(table.RemoveExpired(now + TimeSpan.FromSeconds(120).Ticks), Is.EqualTo(long.MaxValue));
        Assert.That((table.Count, table.Capacity), Is.EqualTo((0, 16)));
    }
}
