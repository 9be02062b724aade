using Potluck.Protocol.Gossipsub;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// The seen table without an expiry queue: swept when its earliest expiry comes, it forgets exactly what a table kept
/// in order of arrival forgets, and a table a burst grew gives its slots back.
/// </summary>
public class SeenSweepTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private static readonly TimeSpan Ttl = TimeSpan.FromSeconds(120);

    private static MessageId Id(int n) => new(BitConverter.GetBytes(n));

    /// <summary>
    /// Random adds, records, settles and prunes on a clock that moves by random steps, against a model that keeps each
    /// id with its expiry (arrival + TTL, kept when a settled id gets its record again) and forgets it at its expiry's
    /// first prune: after every step both agree on every id ever used and on the counts.
    /// </summary>
    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    public void Sweeping_ForgetsExactlyWhatTheModelForgets(int seed)
    {
        var random = new Random(seed);
        var cache = new SeenCache(Ttl, new SeenKeys(new byte[16]));
        var model = new Dictionary<int, (long Expiry, bool Settled)>();
        var now = T0;
        const int ids = 3000;
        for (var step = 0; step < 40_000; step++)
        {
            var n = random.Next(ids);
            var key = cache.KeyOf(Id(n));
            switch (random.Next(10))
            {
                case < 4:
                    var added = cache.Add(key, now);
                    Assert.That(added, Is.EqualTo(!model.ContainsKey(n)), $"step {step}: Add({n})");
                    if (added)
                    {
                        model[n] = ((now + Ttl).UtcTicks, false);
                    }
                    break;
                case < 6:
                    ref var record = ref cache.GetOrAdd(key, now);
                    if (model.TryGetValue(n, out var held))
                    {
                        Assert.That(record.Expiry, Is.EqualTo(held.Expiry), $"step {step}: a held id keeps its expiry");
                        model[n] = (held.Expiry, false);
                    }
                    else
                    {
                        Assert.That(record.Expiry, Is.EqualTo((now + Ttl).UtcTicks));
                        model[n] = ((now + Ttl).UtcTicks, false);
                    }
                    break;
                case < 8:
                    cache.Settle(key);
                    if (model.TryGetValue(n, out var settled))
                    {
                        model[n] = (settled.Expiry, true);
                    }
                    break;
                default:
                    now += TimeSpan.FromMilliseconds(random.Next(0, 3000));
                    cache.Prune(now);
                    foreach (var gone in model.Where(e => e.Value.Expiry <= now.UtcTicks).Select(e => e.Key).ToList())
                    {
                        model.Remove(gone);
                    }
                    break;
            }
            if (step % 997 == 0)
            {
                for (var i = 0; i < ids; i++)
                {
                    var k = cache.KeyOf(Id(i));
                    Assert.That(cache.Contains(k), Is.EqualTo(model.ContainsKey(i)), $"step {step}: seen({i})");
                    Assert.That(cache.IsSettled(k), Is.EqualTo(model.TryGetValue(i, out var e) && e.Settled), $"step {step}: settled({i})");
                }
            }
            Assert.That(cache.Entries, Is.EqualTo((model.Count(e => !e.Value.Settled), model.Count(e => e.Value.Settled))), $"step {step}");
        }
    }

    /// <summary>A burst of 20,000 settled ids, then one a second: once the burst has expired the table gives its slots back.</summary>
    [Test]
    public void ABurstsSlots_AreGivenBack_OnceItHasExpired()
    {
        var cache = new SeenCache(Ttl, new SeenKeys(new byte[16]));
        var now = T0;
        for (var i = 0; i < 20_000; i++)
        {
            var key = cache.KeyOf(Id(i));
            cache.Add(key, now);
            cache.GetOrAdd(key, now);
            cache.Settle(key);
        }
        Assert.That(cache.Capacity.Settled, Is.GreaterThanOrEqualTo(20_000));
        for (var second = 1; second <= 200; second++)
        {
            now = T0 + TimeSpan.FromSeconds(second);
            var key = cache.KeyOf(Id(100_000 + second));
            cache.Add(key, now);
            cache.Settle(key);
            cache.Prune(now);
        }
        Assert.That(cache.Entries, Is.EqualTo((0, 120)), "the last 120 seconds' ids");
        Assert.That(cache.Capacity.Settled, Is.LessThanOrEqualTo(4 * 120), "the burst's slots given back");
        Assert.That(cache.Capacity.Full, Is.LessThanOrEqualTo(64));
    }
}

/// <summary>The settled entries' open-addressing table against a dictionary, with keys that share home slots.</summary>
public class SettledTableTests
{
    [TestCase(1, 64UL)]
    [TestCase(2, ulong.MaxValue)]
    [TestCase(3, 1024UL)]
    public void AddRemoveAndExpire_AgreeWithADictionary(int seed, ulong keySpace)
    {
        var random = new Random(seed);
        var table = new SettledTable();
        var model = new Dictionary<ulong, long>();
        long now = 1_000;
        for (var step = 0; step < 50_000; step++)
        {
            // Keys from a small space spread over the whole range, three per point: they share home slots (long runs,
            // runs that wrap from the array's end to its front).
            var key = keySpace == ulong.MaxValue ? (ulong)random.NextInt64()
                : (ulong)random.NextInt64((long)keySpace) * (ulong.MaxValue / keySpace) + (ulong)random.Next(3);
            switch (random.Next(8))
            {
                case < 4:
                    var expiry = now + random.Next(1, 5_000);
                    table.Add(key, expiry);
                    model[key] = model.TryGetValue(key, out var held) ? Math.Max(held, expiry) : expiry;
                    break;
                case < 6:
                    Assert.That(table.Remove(key, out var removed), Is.EqualTo(model.Remove(key, out var expected)), $"step {step}");
                    Assert.That(removed, Is.EqualTo(expected));
                    break;
                default:
                    now += random.Next(0, 300);
                    var earliest = table.RemoveExpired(now);
                    foreach (var gone in model.Where(e => e.Value <= now).Select(e => e.Key).ToList())
                    {
                        model.Remove(gone);
                    }
                    Assert.That(earliest, Is.EqualTo(model.Count == 0 ? long.MaxValue : model.Values.Min()), $"step {step}");
                    Assert.That(table.Capacity, Is.LessThanOrEqualTo(Math.Max(16, model.Count * 4)), "sparse tables shrink");
                    break;
            }
            Assert.That(table.Count, Is.EqualTo(model.Count), $"step {step}");
            Assert.That(table.Count * 4, Is.LessThanOrEqualTo(table.Capacity * 3), "at most three quarters full");
            if (step % 499 == 0)
            {
                foreach (var k in model.Keys)
                {
                    Assert.That(table.Contains(k), Is.True, $"step {step}: {k}");
                }
                Assert.That(table.Contains(key + 1), Is.EqualTo(model.ContainsKey(key + 1)));
            }
        }
    }
}
