using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Advertising;

/// <summary>
/// The advertisements a node has heard, newest per provider. Pure: every call takes <c>now</c>. Accepts an
/// envelope only when it opens (<see cref="AdvertisementCodec.TryOpen"/>), is live, claims no more than
/// <see cref="AdvertisementOptions.MaxLifetime"/>, and carries a higher sequence than the one held (no replays).
/// Holds at most <see cref="AdvertisementOptions.MaxProviders"/>; when full, the entry expiring soonest makes way
/// for one that lives longer. Not thread-safe: the shell serialises calls.
/// </summary>
public sealed class AdvertisementBook
{
    private readonly AdvertisementOptions _options;
    private readonly Dictionary<PeerId, VerifiedAdvertisement> _byProvider = [];

    public AdvertisementBook(AdvertisementOptions options)
    {
        _options = options;
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
            var soonest = _byProvider.Values.MinBy(a => a.ExpiresAt)!;
            if (soonest.ExpiresAt >= ad.ExpiresAt)
            {
                return AdVerdict.BookFull;
            }
            _byProvider.Remove(soonest.Provider);
        }
        _byProvider[ad.Provider] = ad;
        return AdVerdict.Accepted;
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
