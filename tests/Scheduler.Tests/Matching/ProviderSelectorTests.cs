using Potluck.Protocol.Identity;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Matching;
using Potluck.Scheduler.Tests.Advertising;

namespace Potluck.Scheduler.Tests.Matching;

public class ProviderSelectorTests
{
    private static readonly DateTimeOffset T0 = Ads.T0;

    private static VerifiedAdvertisement Ad(int seed, long price = 10, int available = 4, long memory = 1L << 30,
        long speed = 1_000_000, string version = "wasmtime 50.0.1", TimeSpan? lifetime = null, ProviderPolicyFlags policy = ProviderPolicyFlags.AcceptsUnknownModules)
    {
        var key = Ads.Key(seed);
        var ad = Ads.Make(key, price: price, available: available, memory: memory, speed: speed, lifetime: lifetime)
            with { RuntimeVersion = version, Policy = policy };
        Assert.That(AdvertisementCodec.TryOpen(AdvertisementCodec.Sign(ad, key), new AdvertisementOptions(), out var verified), Is.EqualTo(AdVerdict.Accepted));
        return verified!;
    }

    private static ProviderSelector Selector(double jitter = 0, Func<PeerId, double>? reputation = null, Func<PeerId, TimeSpan?>? latency = null, int seed = 1) =>
        new(new SelectorOptions { Jitter = jitter }, reputation ?? (_ => 1.0), latency ?? (_ => null), new Random(seed));

    [Test]
    public void Select_WithoutJitter_RanksCheapestFirst()
    {
        var ads = new[] { Ad(1, price: 30), Ad(2, price: 10), Ad(3, price: 20) };
        var result = Selector().Select(ads, new Requirements(), T0);
        var matched = result as Matched;
        Assert.That(matched, Is.Not.Null);
        Assert.That(matched!.Providers.Select(p => p.Advertisement.Ad.PricePerMegaFuel), Is.EqualTo(new long[] { 10, 20, 30 }));
    }

    [Test]
    public void Select_EqualPrice_PrefersLowerLatencyAndHigherReputation()
    {
        var fast = Ad(1);
        var slow = Ad(2);
        var trusted = Ad(3);
        var latency = new Dictionary<PeerId, TimeSpan?> { [fast.Provider] = TimeSpan.FromMilliseconds(10), [slow.Provider] = TimeSpan.FromMilliseconds(400), [trusted.Provider] = TimeSpan.FromMilliseconds(10) };
        var reputation = new Dictionary<PeerId, double> { [fast.Provider] = 0.5, [slow.Provider] = 0.5, [trusted.Provider] = 0.9 };
        var result = (Matched)Selector(reputation: p => reputation[p], latency: p => latency[p]).Select([slow, fast, trusted], new Requirements(), T0);
        Assert.That(result.Providers.Select(p => p.Provider), Is.EqualTo(new[] { trusted.Provider, fast.Provider, slow.Provider }));
        Assert.That(result.Providers[0].Reputation, Is.EqualTo(0.9));
        Assert.That(result.Providers[2].Latency, Is.EqualTo(TimeSpan.FromMilliseconds(400)));
    }

    [Test]
    public void Select_JitterSpreadsLoadAmongEqualProviders()
    {
        var ads = Enumerable.Range(1, 4).Select(i => Ad(i)).ToArray();
        var selector = Selector(jitter: 0.2, seed: 42);
        var firsts = Enumerable.Range(0, 200).Select(_ => ((Matched)selector.Select(ads, new Requirements(), T0)).Providers[0].Provider)
            .GroupBy(p => p).ToDictionary(g => g.Key, g => g.Count());
        Assert.That(firsts.Count, Is.EqualTo(4), "every equal provider is chosen first sometimes");
        Assert.That(firsts.Values.Min(), Is.GreaterThan(20));
    }

    [Test]
    public void Select_SameSeed_SameRanking()
    {
        var ads = Enumerable.Range(1, 6).Select(i => Ad(i, price: 10 + i % 2)).ToArray();
        var a = ((Matched)Selector(jitter: 0.5, seed: 7).Select(ads, new Requirements(), T0)).Providers.Select(p => p.Provider);
        var b = ((Matched)Selector(jitter: 0.5, seed: 7).Select(ads, new Requirements(), T0)).Providers.Select(p => p.Provider);
        Assert.That(a, Is.EqualTo(b));
    }

    [Test]
    public void Select_NothingFits_ExplainsWithCountsPerReason()
    {
        var ads = new[] { Ad(1, price: 50), Ad(2, price: 60), Ad(3, price: 5, available: 0) };
        var result = Selector().Select(ads, new Requirements { MaxPricePerMegaFuel = 20 }, T0);
        var none = result as NoMatch;
        Assert.That(none, Is.Not.Null);
        Assert.That(none!.Seen, Is.EqualTo(3));
        Assert.That(none.Mismatches[MismatchReason.TooExpensive], Is.EqualTo(2));
        Assert.That(none.Mismatches[MismatchReason.Busy], Is.EqualTo(1));
        Assert.That(none.Explanation, Is.EqualTo("3 providers seen: 2 too expensive, 1 busy"));
    }

    [Test]
    public void Select_EachRequirement_FiltersWithItsOwnReason()
    {
        var excluded = Ad(1);
        var ads = new[]
        {
            excluded,
            Ad(2, lifetime: TimeSpan.FromSeconds(1)),
            Ad(3, version: "wasmtime 49.0.0"),
            Ad(4, policy: ProviderPolicyFlags.None),
            Ad(5, memory: 1 << 20),
            Ad(6, speed: 10),
        };
        var requirements = new Requirements
        {
            ExcludedPeers = new HashSet<PeerId> { excluded.Provider },
            RuntimeVersion = "wasmtime 50.0.1",
            RequiredPolicy = ProviderPolicyFlags.AcceptsUnknownModules,
            MinMemoryBytes = 64 << 20,
            MinSpeedFuelPerSecond = 1000,
        };
        var none = (NoMatch)Selector().Select(ads, requirements, T0 + TimeSpan.FromSeconds(1));
        Assert.That(none.Mismatches, Is.EquivalentTo(new Dictionary<MismatchReason, int>
        {
            [MismatchReason.Excluded] = 1, [MismatchReason.Expired] = 1, [MismatchReason.WrongRuntime] = 1,
            [MismatchReason.MissingPolicy] = 1, [MismatchReason.TooLittleMemory] = 1, [MismatchReason.TooSlow] = 1,
        }));
        Assert.That(none.Explanation, Does.StartWith("6 providers seen: 1 excluded, 1 expired, 1 wrong runtime"));
    }

    [Test]
    public void Select_EmptyBook_SaysNoProvidersSeen()
    {
        var none = (NoMatch)Selector().Select([], new Requirements(), T0);
        Assert.That(none.Explanation, Is.EqualTo("no providers seen"));
    }

    [Test]
    public void Select_MaxResults_LimitsTheListAndReportsMismatchesToo()
    {
        var ads = Enumerable.Range(1, 10).Select(i => Ad(i, price: i)).Append(Ad(99, available: 0)).ToArray();
        var matched = (Matched)Selector().Select(ads, new Requirements { MaxResults = 3 }, T0);
        Assert.That(matched.Providers.Count, Is.EqualTo(3));
        Assert.That(matched.Seen, Is.EqualTo(11));
        Assert.That(matched.Mismatches[MismatchReason.Busy], Is.EqualTo(1));
    }

    [Test]
    public void Select_ABusyAdvertisement_MatchesOnlyForTheProvidersWhereThisNodeFreedACore()
    {
        var busy = Ad(1, available: 0);
        var otherBusy = Ad(2, available: 0);
        var none = Selector().Select([busy, otherBusy], new Requirements(), T0) as NoMatch;
        Assert.That(none, Is.Not.Null, "both say every core is taken");
        Assert.That(none!.Mismatches[MismatchReason.Busy], Is.EqualTo(2));

        var freed = Selector().Select([busy, otherBusy], new Requirements { FreedHere = new HashSet<PeerId> { busy.Provider } }, T0) as Matched;
        Assert.That(freed, Is.Not.Null, "this node's own lease there completed since the advertisement: a core is free for it");
        Assert.That(freed!.Providers.Select(p => p.Provider), Is.EqualTo(new[] { busy.Provider }));
        Assert.That(freed.Mismatches[MismatchReason.Busy], Is.EqualTo(1), "the other stays busy");
    }
}
