using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Advertising;

/// <summary>
/// Decides when the local provider publishes, and signs what it publishes. Pure: <see cref="Poll"/> takes the
/// current content and <c>now</c>, and returns the envelope to publish when the content changed (no sooner than
/// <see cref="AdvertisementOptions.MinPublishGap"/> after the last one) or <see cref="AdvertisementOptions.PublishInterval"/>
/// has passed. A change of the free cores alone that leaves the provider as busy or as free as it was (2 free of 4 → 1
/// free) is a load-only change: it waits for <see cref="AdvertisementOptions.LoadChangeGap"/> (or rides with the next
/// publication), since requesters choose by busy or free alone (<see cref="Matching.ProviderSelector"/>) and the provider
/// checks its capacity again when a lease is asked for. Sequences are at least the issue time in Unix milliseconds, so
/// they keep rising across restarts.
/// </summary>
public sealed class AdvertisementIssuer
{
    private readonly PrivateKey _key;
    private readonly AdvertisementOptions _options;
    private DateTimeOffset _lastPublished = DateTimeOffset.MinValue;
    /// <summary>The content last published (its id, sequence and times aside); null before the first.</summary>
    private Advertisement? _lastContentValue;
    private DateTimeOffset _quietUntil = DateTimeOffset.MinValue;
    private DateTimeOffset _loadQuietUntil = DateTimeOffset.MinValue;
    private DateTimeOffset _nextPoll = DateTimeOffset.MinValue;

    public AdvertisementIssuer(PrivateKey key, AdvertisementOptions options)
    {
        _key = key;
        _options = options;
    }

    /// <summary>The sequence of the last advertisement issued; 0 before the first.</summary>
    public ulong Sequence { get; private set; }

    /// <summary>Advertisements issued, by why (<see cref="PublishReason"/>'s order; read, never acted on).</summary>
    public IssuerCounts Counts { get; } = new();

    /// <summary>
    /// While the last <see cref="Poll"/> found the content changed inside <see cref="AdvertisementOptions.MinPublishGap"/>: until
    /// this time no poll can publish (the change goes out with the poll at <see cref="NextPublishAt"/>, as the content is then);
    /// otherwise <see cref="DateTimeOffset.MinValue"/>. (A load-only change found after the gap leaves it
    /// <see cref="DateTimeOffset.MinValue"/>: a change that matters may still go out at its first poll.)
    /// </summary>
    public DateTimeOffset QuietUntil => _quietUntil;

    /// <summary>
    /// While the last <see cref="Poll"/> found a load-only change waiting for <see cref="AdvertisementOptions.LoadChangeGap"/>
    /// (it goes out at <see cref="NextPublishAt"/>, this time): until then no poll publishes whose content differs from the
    /// last published only in the free cores, as long as the provider stays as busy or as free as published
    /// (<see cref="PublishedFree"/>); otherwise <see cref="DateTimeOffset.MinValue"/>. The shell skips the polls of a lease's
    /// start and end by it (the free cores are all a lease changes), as it skips every poll by <see cref="QuietUntil"/>.
    /// </summary>
    public DateTimeOffset LoadQuietUntil => _loadQuietUntil;

    /// <summary>Whether the last advertisement published had a free core; null before the first.</summary>
    public bool? PublishedFree => _lastContentValue is null ? null : _lastContentValue.AvailableCores > 0;

    /// <summary>When <see cref="Poll"/> should next be called if nothing changes.</summary>
    public DateTimeOffset NextPublishAt => _lastContentValue is null ? DateTimeOffset.MinValue : _nextPoll;

    /// <summary>
    /// Returns a signed envelope to publish now, or null. <paramref name="content"/>'s peer id, sequence and
    /// times are ignored: the issuer fills them in.
    /// </summary>
    public byte[]? Poll(Advertisement content, DateTimeOffset now)
    {
        // Compared field by field with what was last published (the provider polls at every lease's start and end; this
        // was two encodings of the content per poll, compared as bytes: the same answers, SameContent).
        var last = _lastContentValue;
        var changed = last is null || !SameContent(content, last, busyOrFreeOnly: false);
        // What a requester's choice reads: every field, the free cores only as busy or free.
        var matters = last is null || (changed && !SameContent(content, last, busyOrFreeOnly: true));
        var interval = _options.PublishInterval;
        var gap = Min(_options.MinPublishGap, interval);
        var loadGap = Min(Max(_options.LoadChangeGap, gap), interval);
        var due = now >= _lastPublished + interval
            || (matters && now >= _lastPublished + gap)
            || (changed && now >= _lastPublished + loadGap);
        _loadQuietUntil = DateTimeOffset.MinValue;
        if (!due)
        {
            if (matters)
            {
                _quietUntil = _nextPoll = _lastPublished + gap;
            }
            else if (changed && now < _lastPublished + gap)
            {
                // Polls inside the gap are skipped by the shell: the gap's end polls, in case a change that matters came.
                _quietUntil = _nextPoll = _lastPublished + gap;
            }
            else
            {
                _quietUntil = DateTimeOffset.MinValue;
                _nextPoll = _lastPublished + (changed ? loadGap : interval);
                if (changed)
                {
                    // A load-only change past the gap: another like it cannot publish before the load gap's end.
                    _loadQuietUntil = _nextPoll;
                }
            }
            return null;
        }
        Counts.Count(last, content, changed, matters);
        var issued = now.ToUnixTimeMilliseconds();
        Sequence = Math.Max(Sequence + 1, (ulong)Math.Max(issued, 0));
        _lastContentValue = content;
        _lastPublished = now;
        _quietUntil = DateTimeOffset.MinValue;
        _nextPoll = now + interval;
        var ad = content with
        {
            PeerId = _key.PeerId.ToBytes(),
            Sequence = Sequence,
            IssuedAtUnixMs = issued,
            ExpiresAtUnixMs = (now + _options.Lifetime).ToUnixTimeMilliseconds(),
        };
        return AdvertisementCodec.Sign(ad, _key);
    }

    /// <summary>
    /// Whether two advertisements' contents are equal as the issuer reads them: every field but the ones it fills in (peer id
    /// key 0, sequence 2, issue and expiry times 3 and 4), byte for byte, exactly as their MessagePack encodings with those
    /// four cleared compare (the encoding is a fixed map of these keys); with <paramref name="busyOrFreeOnly"/>, the free
    /// cores only as busy or free. A field added to <see cref="Advertisement"/> must be added here
    /// (<c>AdvertisementIssuerTests.SameContent_ReadsEveryKeyButTheFourTheIssuerFillsIn</c> fails until it is).
    /// </summary>
    internal static bool SameContent(Advertisement a, Advertisement b, bool busyOrFreeOnly) =>
        a.Cores == b.Cores
        && (busyOrFreeOnly ? a.AvailableCores > 0 == b.AvailableCores > 0 : a.AvailableCores == b.AvailableCores)
        && a.MemoryBytes == b.MemoryBytes
        && a.SpeedFuelPerSecond == b.SpeedFuelPerSecond
        && a.PricePerMegaFuel == b.PricePerMegaFuel
        && a.Policy == b.Policy
        && string.Equals(a.Runtime, b.Runtime, StringComparison.Ordinal)
        && string.Equals(a.RuntimeVersion, b.RuntimeVersion, StringComparison.Ordinal)
        && SameAddresses(a.ListenAddresses, b.ListenAddresses);

    internal static bool SameAddresses(byte[][]? a, byte[][]? b)
    {
        if (a is null || b is null)
        {
            return a == b;
        }
        if (a.Length != b.Length)
        {
            return false;
        }
        for (var i = 0; i < a.Length; i++)
        {
            if (a[i] is null != b[i] is null || !a[i].AsSpan().SequenceEqual(b[i]))
            {
                return false;
            }
        }
        return true;
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;
}

/// <summary>Why an advertisement was issued.</summary>
public enum PublishReason
{
    /// <summary>The provider's first.</summary>
    First,

    /// <summary>Only the free cores changed, from none to some or from some to none (busy or free again).</summary>
    BusyOrFree,

    /// <summary>Only the free cores changed, and the provider is as busy or as free as it was (a load-only change).</summary>
    FreeCores,

    /// <summary>The listen addresses changed (perhaps with other fields).</summary>
    Addresses,

    /// <summary>Another field changed (cores, memory, speed, price, runtime, policy).</summary>
    Other,

    /// <summary>Nothing changed: the interval passed.</summary>
    Republish,
}

/// <summary>Counts of <see cref="AdvertisementIssuer"/>'s publications by <see cref="PublishReason"/>: a measurement only.</summary>
public sealed class IssuerCounts
{
    private readonly long[] _counts = new long[Names.Length];

    /// <summary>The reasons' names, in <see cref="PublishReason"/>'s order.</summary>
    public static readonly string[] Names = ["first", "busy_or_free", "free_cores", "addresses", "other", "republish"];

    /// <summary>The counts, in <see cref="Names"/>' order (a copy).</summary>
    public long[] ToArray()
    {
        lock (_counts)
        {
            return (long[])_counts.Clone();
        }
    }

    internal void Count(Advertisement? last, Advertisement now, bool changed, bool matters)
    {
        var reason = last is null ? PublishReason.First
            : !changed ? PublishReason.Republish
            : !AdvertisementIssuer.SameAddresses(last.ListenAddresses, now.ListenAddresses) ? PublishReason.Addresses
            : last with { AvailableCores = now.AvailableCores, ListenAddresses = now.ListenAddresses, PeerId = now.PeerId } == now
                ? (matters ? PublishReason.BusyOrFree : PublishReason.FreeCores)
            : PublishReason.Other;
        lock (_counts)
        {
            _counts[(int)reason]++;
        }
    }
}
