using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;

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
/// evicts. A provider a requester could not reach (<see cref="MarkUnreachable"/>) is hidden from <see cref="Live"/> and
/// <see cref="Get"/> once <see cref="AdvertisementOptions.UnreachableGrace"/> has passed, never handed on in a
/// <see cref="Sample"/>, and makes way first when the book is full; a newer advertisement from it, or a connection to it
/// (<see cref="MarkReachable"/>), lifts that. The hidden entry stays until it expires so that the same advertisement,
/// replayed by gossip or a sample, is refused as <see cref="AdVerdict.OldSequence"/> rather than taken afresh. Not
/// thread-safe: the shell serialises calls.
/// </summary>
public sealed class AdvertisementBook
{
    private readonly AdvertisementOptions _options;
    private readonly Func<PeerId, ProviderStanding> _standing;
    private readonly Random _random;
    /// <summary>Enumerates as the dictionary it replaced did (<see cref="ProviderTable"/>); never more slots than the cap.</summary>
    private readonly ProviderTable _byProvider;

    /// <summary>Providers found unreachable, with the sequence held then and when (only held providers: bounded by the book).</summary>
    private readonly Dictionary<PeerId, (ulong Sequence, DateTimeOffset Since)> _unreachable = [];

    /// <summary>Where the instances other nodes of this process hold are found (a simulated mesh's); null: keep our own.</summary>
    private readonly WeakShareTable<VerifiedAdvertisement>? _shared;

    /// <param name="standing">This node's view of a provider (reputation); null: everyone is a stranger.</param>
    /// <param name="random">The node's seeded protocol randomness for choosing which stranger makes way; null: seed 0.</param>
    /// <param name="shared">
    /// The values this node shares with the other nodes of its process (<see cref="NodeRuntime.SharedValues"/>): an accepted
    /// advertisement equal by content to one another node's book holds is kept as that instance. Null or
    /// <see cref="SharedValues.None"/>: every book keeps its own.
    /// </param>
    public AdvertisementBook(AdvertisementOptions options, Func<PeerId, ProviderStanding>? standing = null, Random? random = null,
        SharedValues? shared = null)
    {
        _options = options;
        _standing = standing ?? (_ => ProviderStanding.Stranger);
        _random = random ?? new Random(0);
        _byProvider = new ProviderTable(options.MaxProviders);
        _shared = shared?.Table(VerifiedAdvertisement.ByContent);
    }

    /// <summary>What the book keeps of an accepted advertisement: the shared instance equal to it, if any.</summary>
    private VerifiedAdvertisement Keep(VerifiedAdvertisement ad) => _shared is null ? ad : _shared.Share(ad);

    /// <summary>Providers held, expired ones included until the next call that evicts.</summary>
    public int Count => _byProvider.Count;

    /// <summary>
    /// Slots of the table behind the book: doubled as it fills, never past <see cref="AdvertisementOptions.MaxProviders"/>
    /// (a dictionary's stopped at the prime at the cap, 293 for 256, and its own doubling would reach 431 at 198 providers).
    /// </summary>
    internal int Slots => _byProvider.Capacity;

    /// <summary>Bytes of the table behind the book, its arrays' headers included (for tests and diagnostics).</summary>
    internal int TableBytes => _byProvider.ArrayBytes;

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
            ad = Keep(ad);
            _byProvider.Set(ad);
            _unreachable.Remove(ad.Provider); // a newer advertisement: the provider is back
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
            _unreachable.Remove(victim);
        }
        ad = Keep(ad);
        _byProvider.Set(ad);
        return AdVerdict.Accepted;
    }

    /// <summary>The entry that makes way for a new provider (the rule in the summary), or null when none may.</summary>
    private PeerId? ChooseVictim(bool newcomerInGoodStanding)
    {
        foreach (var provider in _unreachable.Keys)
        {
            return provider; // found unreachable: of less use than any other entry
        }
        // One pass, no allocation: a refused entry at once, else a uniform choice among strangers (reservoir sampling),
        // else, for a newcomer in good standing, a uniform choice among all.
        PeerId? stranger = null;
        PeerId? any = null;
        var strangers = 0;
        var seen = 0;
        foreach (var (provider, _) in _byProvider)
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

    /// <summary>The provider's live advertisement, if any (none while it is hidden as unreachable).</summary>
    public VerifiedAdvertisement? Get(PeerId provider, DateTimeOffset now) =>
        _byProvider.TryGetValue(provider, out var ad) && ad.ExpiresAt > now && !Hidden(provider, now) ? ad : null;

    /// <summary>Whether this book holds <paramref name="provider"/>'s advertisement with <paramref name="sequence"/> or a higher one (live or not).</summary>
    public bool HoldsAtLeast(PeerId provider, ulong sequence) =>
        _byProvider.TryGetValue(provider, out var held) && held.Ad.Sequence >= sequence;

    /// <summary>Evicts expired entries and returns the live ones, ordered by provider for determinism (hidden ones left out).</summary>
    public IReadOnlyList<VerifiedAdvertisement> Live(DateTimeOffset now)
    {
        EvictExpired(now);
        var list = new List<VerifiedAdvertisement>(_byProvider.Count);
        foreach (var (provider, ad) in _byProvider)
        {
            if (!Hidden(provider, now))
            {
                list.Add(ad);
            }
        }
        list.Sort((a, b) => a.Provider.CompareTo(b.Provider));
        return list;
    }

    /// <summary>How many <see cref="Live"/> would return, without evicting or allocating.</summary>
    public int LiveCount(DateTimeOffset now)
    {
        var count = 0;
        foreach (var (provider, ad) in _byProvider)
        {
            count += ad.ExpiresAt > now && !Hidden(provider, now) ? 1 : 0;
        }
        return count;
    }

    /// <summary>
    /// Up to <paramref name="count"/> live advertisements chosen uniformly at random with <paramref name="random"/> (the
    /// node's seeded protocol randomness), none found unreachable here, whose envelopes together take at most
    /// <paramref name="maxBytes"/>; what a newcomer asks for (<see cref="AdvertisementProtocol.SampleProtocolId"/>).
    /// </summary>
    /// <param name="except">A provider left out (the asker: it has its own).</param>
    public List<VerifiedAdvertisement> Sample(int count, int maxBytes, Random random, DateTimeOffset now, PeerId except = default)
    {
        var pool = new List<VerifiedAdvertisement>(_byProvider.Count);
        foreach (var (provider, ad) in _byProvider)
        {
            if (ad.ExpiresAt > now && !_unreachable.ContainsKey(provider) && provider != except)
            {
                pool.Add(ad);
            }
        }
        pool.Sort((a, b) => a.Provider.CompareTo(b.Provider)); // a seeded choice from a fixed order
        var chosen = new List<VerifiedAdvertisement>(Math.Min(count, pool.Count));
        var bytes = 0;
        for (var i = 0; i < pool.Count && chosen.Count < count; i++)
        {
            var j = random.Next(i, pool.Count); // a partial Fisher-Yates shuffle
            (pool[i], pool[j]) = (pool[j], pool[i]);
            var size = pool[i].EnvelopeLength;
            if (bytes + size <= maxBytes)
            {
                bytes += size;
                chosen.Add(pool[i]);
            }
        }
        return chosen;
    }

    /// <summary>
    /// A lease found <paramref name="provider"/> unreachable while this book held its advertisement <paramref name="sequence"/>:
    /// after <see cref="AdvertisementOptions.UnreachableGrace"/> from the first such finding it is hidden (the summary).
    /// A finding about an older advertisement than the one held is ignored.
    /// </summary>
    public void MarkUnreachable(PeerId provider, ulong sequence, DateTimeOffset now)
    {
        if (_byProvider.TryGetValue(provider, out var held) && held.Ad.Sequence == sequence && !_unreachable.ContainsKey(provider))
        {
            _unreachable[provider] = (sequence, now);
        }
    }

    /// <summary>This node is connected to <paramref name="provider"/>: it is reachable again.</summary>
    public void MarkReachable(PeerId provider) => _unreachable.Remove(provider);

    /// <summary>Providers found unreachable and not since heard from (tests, reports).</summary>
    public int UnreachableCount => _unreachable.Count;

    private bool Hidden(PeerId provider, DateTimeOffset now) =>
        _unreachable.Count > 0 && _unreachable.TryGetValue(provider, out var mark) && now >= mark.Since + _options.UnreachableGrace;

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
            _unreachable.Remove(peer);
        }
        return expired?.Count ?? 0;
    }

    public bool Remove(PeerId provider)
    {
        _unreachable.Remove(provider);
        return _byProvider.Remove(provider);
    }
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
