using System.Text;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Advertising;

namespace Potluck.Scheduler.Matching;

/// <summary>Weights of the ranking; every term is normalised to [0, 1] before weighting.</summary>
public sealed record SelectorOptions
{
    /// <summary>Weight of price relative to the dearest candidate. Default 1.</summary>
    public double PriceWeight { get; init; } = 1.0;

    /// <summary>Weight of latency relative to the slowest candidate. Default 0.5.</summary>
    public double LatencyWeight { get; init; } = 0.5;

    /// <summary>Weight of (1 - reputation). Default 1.</summary>
    public double ReputationWeight { get; init; } = 1.0;

    /// <summary>Weight of a uniform random term that spreads load among near-equal providers. Default 0.2.</summary>
    public double Jitter { get; init; } = 0.2;

    /// <summary>Latency assumed for a provider never measured. Default 250 ms.</summary>
    public TimeSpan UnknownLatency { get; init; } = TimeSpan.FromMilliseconds(250);
}

/// <summary>A provider that fits, with the inputs of its score (lower is better).</summary>
public sealed record RankedProvider(VerifiedAdvertisement Advertisement, double Score, TimeSpan Latency, double Reputation)
{
    public PeerId Provider => Advertisement.Provider;
}

/// <summary>The outcome of a selection: <see cref="Matched"/> or <see cref="NoMatch"/>.</summary>
public abstract record SelectionResult(int Seen, IReadOnlyDictionary<MismatchReason, int> Mismatches);

/// <summary>Providers that fit, best first.</summary>
public sealed record Matched(IReadOnlyList<RankedProvider> Providers, int Seen, IReadOnlyDictionary<MismatchReason, int> Mismatches)
    : SelectionResult(Seen, Mismatches);

/// <summary>No provider fits; <see cref="Explanation"/> says why, e.g. "3 providers seen: 2 too expensive, 1 busy".</summary>
public sealed record NoMatch(int Seen, IReadOnlyDictionary<MismatchReason, int> Mismatches)
    : SelectionResult(Seen, Mismatches)
{
    public string Explanation
    {
        get
        {
            if (Seen == 0)
            {
                return "no providers seen";
            }
            var text = new StringBuilder().Append(Seen).Append(Seen == 1 ? " provider seen: " : " providers seen: ");
            var parts = Mismatches.Where(kv => kv.Value > 0)
                .OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key)
                .Select(kv => $"{kv.Value} {Describe(kv.Key)}");
            return text.Append(string.Join(", ", parts)).ToString();
        }
    }

    public override string ToString() => Explanation;

    public static string Describe(MismatchReason reason) => reason switch
    {
        MismatchReason.Excluded => "excluded",
        MismatchReason.Expired => "expired",
        MismatchReason.WrongRuntime => "wrong runtime",
        MismatchReason.MissingPolicy => "lacking a required policy",
        MismatchReason.TooLittleMemory => "too little memory",
        MismatchReason.TooSlow => "too slow",
        MismatchReason.TooExpensive => "too expensive",
        MismatchReason.Busy => "busy",
        _ => reason.ToString(),
    };
}

/// <summary>
/// Chooses providers from advertisements: filters by <see cref="Requirements"/>, then ranks by a weighted sum of
/// price, measured latency and (1 - reputation), plus a seeded random term so equal providers share the load.
/// Pure apart from the injected <see cref="Random"/>; reputation and latency come from the caller.
/// </summary>
public sealed class ProviderSelector
{
    private readonly SelectorOptions _options;
    private readonly Func<PeerId, double> _reputation;
    private readonly Func<PeerId, TimeSpan?> _latency;
    private readonly Random _random;

    /// <param name="reputation">A provider's reputation in [0, 1]; values outside are clamped.</param>
    /// <param name="latency">A provider's measured round-trip time, or null when unknown.</param>
    /// <param name="random">A seeded source for the spreading term.</param>
    public ProviderSelector(SelectorOptions options, Func<PeerId, double> reputation, Func<PeerId, TimeSpan?> latency, Random random)
    {
        _options = options;
        _reputation = reputation;
        _latency = latency;
        _random = random;
    }

    public SelectionResult Select(IEnumerable<VerifiedAdvertisement> advertisements, Requirements requirements, DateTimeOffset now)
    {
        var counts = new Dictionary<MismatchReason, int>();
        var fits = new List<VerifiedAdvertisement>();
        var seen = 0;
        foreach (var ad in advertisements)
        {
            seen++;
            var reason = Check(ad, requirements, now);
            if (reason is { } r)
            {
                counts[r] = counts.GetValueOrDefault(r) + 1;
            }
            else
            {
                fits.Add(ad);
            }
        }
        if (fits.Count == 0)
        {
            return new NoMatch(seen, counts);
        }
        // Plain loops: this runs for every lease a requester starts.
        var latencies = new TimeSpan[fits.Count];
        var maxPrice = 1L;
        var maxLatency = 1e-3;
        for (var i = 0; i < fits.Count; i++)
        {
            latencies[i] = _latency(fits[i].Provider) ?? _options.UnknownLatency;
            maxPrice = Math.Max(maxPrice, fits[i].Ad.PricePerMegaFuel);
            maxLatency = Math.Max(maxLatency, latencies[i].TotalMilliseconds);
        }
        var ranked = new List<RankedProvider>(fits.Count);
        for (var i = 0; i < fits.Count; i++)
        {
            var ad = fits[i];
            var reputation = Math.Clamp(_reputation(ad.Provider), 0.0, 1.0);
            if (double.IsNaN(reputation))
            {
                reputation = 0;
            }
            var score = _options.PriceWeight * ad.Ad.PricePerMegaFuel / maxPrice
                + _options.LatencyWeight * Math.Max(0, latencies[i].TotalMilliseconds) / maxLatency
                + _options.ReputationWeight * (1 - reputation)
                + _options.Jitter * _random.NextDouble();
            ranked.Add(new RankedProvider(ad, score, latencies[i], reputation));
        }
        ranked.Sort(static (a, b) => a.Score != b.Score ? a.Score.CompareTo(b.Score) : a.Provider.CompareTo(b.Provider));
        return new Matched(ranked.GetRange(0, Math.Min(ranked.Count, Math.Max(1, requirements.MaxResults))), seen, counts);
    }

    private static MismatchReason? Check(VerifiedAdvertisement ad, Requirements req, DateTimeOffset now)
    {
        var a = ad.Ad;
        if (req.ExcludedPeers.Contains(ad.Provider))
        {
            return MismatchReason.Excluded;
        }
        if (ad.ExpiresAt <= now)
        {
            return MismatchReason.Expired;
        }
        if (a.Runtime != req.Runtime || (req.RuntimeVersion is not null && a.RuntimeVersion != req.RuntimeVersion))
        {
            return MismatchReason.WrongRuntime;
        }
        if ((a.Policy & req.RequiredPolicy) != req.RequiredPolicy)
        {
            return MismatchReason.MissingPolicy;
        }
        if (a.MemoryBytes < req.MinMemoryBytes)
        {
            return MismatchReason.TooLittleMemory;
        }
        if (a.SpeedFuelPerSecond < req.MinSpeedFuelPerSecond)
        {
            return MismatchReason.TooSlow;
        }
        if (req.MaxPricePerMegaFuel is { } max && a.PricePerMegaFuel > max)
        {
            return MismatchReason.TooExpensive;
        }
        if (ad.IsBusy && req.FreedHere?.Contains(ad.Provider) != true)
        {
            return MismatchReason.Busy;
        }
        return null;
    }
}
