using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Advertising;

/// <summary>
/// The advertisements a node has heard, newest per provider. Pure: every call takes <c>now</c>. Accepts an
/// envelope only when it opens (<see cref="AdvertisementCodec.TryOpen"/>), is live, claims no more than
/// <see cref="AdvertisementOptions.MaxLifetime"/>, and carries a higher sequence than the one held (no replays).
/// Holds at most <see cref="AdvertisementOptions.MaxProviders"/>. When full (after dropping expired entries) a new
/// provider's advertisement takes the place of one held, by this rule, whatever lifetime either claims:
/// <list type="number">
/// <item>a refused provider's entry goes first;</item>
/// <item>else a stranger's (not in good standing here), chosen uniformly at random with the node's seeded randomness;</item>
/// <item>else (every entry in good standing) a random one, but only for a newcomer in good standing itself: a stranger
/// gets <see cref="AdVerdict.BookFull"/>.</item>
/// </list>
/// So a provider in good standing (<see cref="ProviderStanding.Good"/>: results verified here, never refused) is never
/// pushed out by a stranger's advertisement, however many strangers advertise and whatever lifetime they claim; a
/// flood of F strangers' ads into a book with S strangers' entries leaves a given honest stranger in it with
/// probability (1 − 1/S)^F, never decided by the claimed lifetime (before: the entry expiring soonest made way, so a
/// flood claiming the longest lifetime evicted every honest provider, trusted or not). Refreshing a held provider never
/// evicts. Not thread-safe: the shell serialises calls.
/// </summary>
public sealed class AdvertisementBook
{
    private readonly AdvertisementOptions _options;
    private readonly Func<PeerId, ProviderStanding> _standing;
    private readonly Random _random;
    private readonly Dictionary<PeerId, VerifiedAdvertisement> _byProvider = [];

    /// <param name="standing">This node's view of a provider (reputation); null: everyone is a stranger.</param>
    /// <param name="random">The node's seeded protocol randomness for choosing which stranger makes way; null: seed 0.</param>
    public AdvertisementBook(AdvertisementOptions options, Func<PeerId, ProviderStanding>? standing = null, Random? random = null)
    {
        _options = options;
        _standing = standing ?? (_ => ProviderStanding.Stranger);
        _random = random ?? new Random(0);
    }

    /// <summary>Providers held, expired ones included until the next call that evicts.</summary>
    public int Count => _byProvider.Count;

    /// <summary>Checks an envelope and, when acceptable, stores it as its provider's newest advertisement.</summary>
    public AdVerdict Add(ReadOnlySpan<byte> envelope, DateTimeOffset now) => Add(envelope, now, out _);

    public AdVerdict Add(ReadOnlySpan<byte> envelope, DateTimeOffset now, out VerifiedAdvertisement? accepted)
    {
        var verdict = AdvertisementCodec.TryOpen(envelope, _options, out accepted);
        if (verdict != AdVerdict.Accepted)
        {
            return verdict;
        }
        verdict = Add(accepted!, now);
        if (verdict != AdVerdict.Accepted)
        {
            accepted = null;
        }
        return verdict;
    }

    /// <summary>Stores an already opened advertisement, checking time, lifetime, sequence and room.</summary>
    public AdVerdict Add(VerifiedAdvertisement ad, DateTimeOffset now)
    {
        if (ad.ExpiresAt <= now || ad.IssuedAt > now + _options.ClockSkew)
        {
            return AdVerdict.Expired;
        }
        if (ad.ExpiresAt > now + _options.MaxLifetime + _options.ClockSkew)
        {
            return AdVerdict.LifetimeTooLong;
        }
        if (_byProvider.TryGetValue(ad.Provider, out var held))
        {
            if (ad.Ad.Sequence <= held.Ad.Sequence)
            {
                return AdVerdict.OldSequence;
            }
            _byProvider[ad.Provider] = ad;
            return AdVerdict.Accepted;
        }
        if (_byProvider.Count >= _options.MaxProviders)
        {
            EvictExpired(now);
        }
        if (_byProvider.Count >= _options.MaxProviders)
        {
            if (ChooseVictim(_standing(ad.Provider) == ProviderStanding.Good) is not { } victim)
            {
                return AdVerdict.BookFull;
            }
            _byProvider.Remove(victim);
        }
        _byProvider[ad.Provider] = ad;
        return AdVerdict.Accepted;
    }

    /// <summary>The entry that makes way for a new provider (the rule in the summary), or null when none may.</summary>
    private PeerId? ChooseVictim(bool newcomerInGoodStanding)
    {
        // One pass, no allocation: a refused entry at once, else a uniform choice among strangers (reservoir sampling),
        // else, for a newcomer in good standing, a uniform choice among all.
        PeerId? stranger = null;
        PeerId? any = null;
        var strangers = 0;
        var seen = 0;
        foreach (var provider in _byProvider.Keys)
        {
            switch (_standing(provider))
            {
                case ProviderStanding.Refused:
                    return provider;
                case ProviderStanding.Stranger:
                    if (_random.Next(++strangers) == 0)
                    {
                        stranger = provider;
                    }
                    break;
                default:
                    if (stranger is null && newcomerInGoodStanding && _random.Next(++seen) == 0)
                    {
                        any = provider;
                    }
                    break;
            }
        }
        return stranger ?? (newcomerInGoodStanding ? any : null);
    }

    /// <summary>The provider's live advertisement, if any.</summary>
    public VerifiedAdvertisement? Get(PeerId provider, DateTimeOffset now) =>
        _byProvider.TryGetValue(provider, out var ad) && ad.ExpiresAt > now ? ad : null;

    /// <summary>Evicts expired entries and returns the live ones, ordered by provider for determinism.</summary>
    public IReadOnlyList<VerifiedAdvertisement> Live(DateTimeOffset now)
    {
        EvictExpired(now);
        var list = _byProvider.Values.ToList();
        list.Sort((a, b) => a.Provider.CompareTo(b.Provider));
        return list;
    }

    /// <summary>Drops every advertisement expired at <paramref name="now"/>; returns how many.</summary>
    public int EvictExpired(DateTimeOffset now)
    {
        List<PeerId>? expired = null;
        foreach (var (peer, ad) in _byProvider)
        {
            if (ad.ExpiresAt <= now)
            {
                (expired ??= []).Add(peer);
            }
        }
        foreach (var peer in expired ?? [])
        {
            _byProvider.Remove(peer);
        }
        return expired?.Count ?? 0;
    }

    public bool Remove(PeerId provider) => _byProvider.Remove(provider);
}

/// <summary>How this node regards a provider, for <see cref="AdvertisementBook"/>'s eviction.</summary>
public enum ProviderStanding
{
    /// <summary>Nothing verified here yet (or only failures).</summary>
    Stranger,

    /// <summary>At least one result verified here, never refused.</summary>
    Good,

    /// <summary>Refused here (fraud, a fork): its advertisement is of no use.</summary>
    Refused,
}
