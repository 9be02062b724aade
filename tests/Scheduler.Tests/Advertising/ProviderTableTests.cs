using Potluck.Protocol.Identity;
using Potluck.Scheduler.Advertising;

namespace Potluck.Scheduler.Tests.Advertising;

/// <summary>
/// The advertisement book's table (<see cref="ProviderTable"/>) against the <c>Dictionary&lt;PeerId, VerifiedAdvertisement&gt;</c>
/// it replaced: the same answers and the same enumeration order after every step of a seeded run (the book's seeded
/// choice of which stranger makes way walks that order, so a different order is a different run), and what it costs.
/// </summary>
public class ProviderTableTests
{
    private static VerifiedAdvertisement[] Opened(int count, int seedBase, ulong sequence = 1)
    {
        var ads = new VerifiedAdvertisement[count];
        for (var i = 0; i < count; i++)
        {
            Assert.That(AdvertisementCodec.TryOpen(Ads.Signed(Ads.Key(seedBase + i), sequence), new AdvertisementOptions(), out var ad),
                Is.EqualTo(AdVerdict.Accepted));
            ads[i] = ad!;
        }
        return ads;
    }

    [TestCase(64, 1)]
    [TestCase(7, 2)]
    [TestCase(256, 3)]
    public void ASeededRunOfSetsReplacementsAndRemovals_AnswersAndEnumeratesAsTheDictionaryDid(int cap, int seed)
    {
        var first = Opened(cap + cap / 2 + 3, 5_000);
        var second = Opened(first.Length, 5_000, sequence: 2); // the same providers, other instances: a replacement
        var table = new ProviderTable(cap);
        var model = new Dictionary<PeerId, VerifiedAdvertisement>();
        var random = new Random(seed);
        for (var step = 0; step < 6_000; step++)
        {
            var i = random.Next(first.Length);
            var provider = first[i].Provider;
            switch (random.Next(10))
            {
                case < 5: // store (the book never holds more than its cap: it removes one first, as here)
                    if (!model.ContainsKey(provider) && model.Count >= cap)
                    {
                        var victims = model.Keys.ToList();
                        var victim = victims[random.Next(victims.Count)];
                        Assert.That(table.Remove(victim), Is.EqualTo(model.Remove(victim)));
                    }
                    var ad = random.Next(2) == 0 ? first[i] : second[i];
                    table.Set(ad);
                    model[provider] = ad;
                    break;
                case < 8:
                    Assert.That(table.Remove(provider), Is.EqualTo(model.Remove(provider)), $"step {step}: remove");
                    break;
                default:
                    Assert.That(table.TryGetValue(provider, out var got), Is.EqualTo(model.TryGetValue(provider, out var expected)), $"step {step}: look up");
                    Assert.That(got, Is.SameAs(expected));
                    Assert.That(table.ContainsKey(provider), Is.EqualTo(model.ContainsKey(provider)));
                    break;
            }
            Assert.That(table.Count, Is.EqualTo(model.Count), $"step {step}: count");
            Assert.That(table.Capacity, Is.LessThanOrEqualTo(cap), "never more slots than the cap");
            var order = new List<(PeerId, VerifiedAdvertisement)>();
            foreach (var (p, a) in table)
            {
                order.Add((p, a));
            }
            Assert.That(order, Is.EqualTo(model.Select(kv => (kv.Key, kv.Value)).ToList()), $"step {step}: the dictionary's order");
        }
        Assert.That(model.Count, Is.GreaterThan(cap / 2), "the run filled the table");
    }

    [Test]
    public void AddingWhileEnumerating_Throws_RemovingDoesNot()
    {
        var ads = Opened(4, 9_000);
        var table = new ProviderTable(8);
        table.Set(ads[0]);
        table.Set(ads[1]);
        table.Set(ads[2]);
        Assert.That(() =>
        {
            foreach (var _ in table)
            {
                table.Set(ads[3]);
            }
        }, Throws.InvalidOperationException);
        var seen = new List<PeerId>();
        foreach (var (provider, _) in table)
        {
            seen.Add(provider);
            table.Remove(provider);
        }
        Assert.That(seen, Has.Count.EqualTo(4));
        Assert.That(table.Count, Is.Zero);
    }

    [Test]
    public void AtTheCapOf256_TheBooksTableTakesHalfTheDictionarysBytes()
    {
        var book = new AdvertisementBook(new AdvertisementOptions(), random: new Random(6));
        for (var i = 0; i < 256; i++)
        {
            Assert.That(book.Add(Ads.Signed(Ads.Key(100 + i)), Ads.T0), Is.EqualTo(AdVerdict.Accepted));
        }
        // 256 slots of 8 bytes and an index of 512 of 4, each with its 24-byte header: 4,144 bytes. The dictionary held
        // 293 entries of 24 bytes and 293 buckets of 4 (8,256 bytes with headers).
        Assert.That(book.TableBytes, Is.EqualTo(24 + 256 * 8 + 24 + 512 * 4));
        Assert.That(book.TableBytes, Is.LessThan((24 + 293 * 24 + 24 + 293 * 4) / 2 + 64));
    }
}
