using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Requesting;

/// <summary>
/// The requester's own count of the leases it holds with each provider, and how many a provider lets it hold, learnt from
/// the provider's busy refusals (a provider caps the leases one requester holds at once: <c>ProviderOptions.MaxLeasesPerRequester</c>,
/// and a stranger's share of the cores). A provider that answers "busy" while this node holds other leases with it is full
/// <em>for this node</em>: asking again before one of those leases ends only earns another refusal (a round trip on both
/// sides), and backing off on a timer leaves the freed core idle until the timer fires (a second, at 32 tasks in flight the
/// lease path's main wait). So the window closes at the count it was refused at, and the end of one of this node's own
/// leases with that provider reopens it: the event a waiting job wakes on. Every <see cref="ProbeInterval"/> without a refusal
/// the window grows by one, so a provider that starts allowing more (a requester earning standing) is found.
/// A provider that says its limit in the refusal (<c>LeaseReject.LeaseLimit</c>) sets the window to it (never above what this
/// node held when it asked, so a provider cannot talk it into asking more than it held then): learnt from the node's own
/// count instead, a burst of refusals answered while leases end shrinks the window below the limit, each refusal seeing
/// fewer held, and it grows back one per probe.
/// A pure core: events and <c>now</c> in, answers out; the caller holds its lock.
/// </summary>
public sealed class LeaseWindows
{
    private readonly Dictionary<PeerId, Window> _windows = [];
    private readonly Dictionary<PeerId, (ulong AdSequence, int Cores)> _freed = [];

    /// <summary>Windows kept before those holding no lease are forgotten.</summary>
    private const int MaxIdle = 1024;

    /// <param name="probeInterval">How long a learnt limit holds before the window grows by one.</param>
    public LeaseWindows(TimeSpan probeInterval)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(probeInterval, TimeSpan.Zero);
        ProbeInterval = probeInterval;
    }

    /// <summary>How long a learnt limit holds before the window grows by one (a probe).</summary>
    public TimeSpan ProbeInterval { get; }

    /// <summary>Providers with a lease held or a limit learnt (bounded by the lease channels: a window with neither is dropped).</summary>
    public int Count => _windows.Count;

    /// <summary>Leases held with <paramref name="provider"/> now (started and not yet ended).</summary>
    public int Held(PeerId provider) => _windows.TryGetValue(provider, out var w) ? w.Held : 0;

    /// <summary>The most leases <paramref name="provider"/> lets this node hold, as learnt; null when none is known.</summary>
    public int? Limit(PeerId provider) => _windows.TryGetValue(provider, out var w) ? w.Limit : null;

    /// <summary>
    /// Whether a new lease with <paramref name="provider"/> would be refused as over its limit: this node holds as many as it
    /// was last allowed. Grows a limit whose probe time has come by one (and sets the next probe time).
    /// </summary>
    public bool IsFull(PeerId provider, DateTimeOffset now)
    {
        if (!_windows.TryGetValue(provider, out var w) || w.Limit is not { } limit)
        {
            return false;
        }
        if (now >= w.ProbeAt)
        {
            w.Limit = limit = limit + 1;
            w.ProbeAt = now + ProbeInterval;
        }
        return w.Held >= limit;
    }

    /// <summary>The earliest probe time among the full windows of <paramref name="providers"/>; null when none is full.</summary>
    public DateTimeOffset? NextProbe(IEnumerable<PeerId> providers, DateTimeOffset now)
    {
        DateTimeOffset? next = null;
        foreach (var p in providers)
        {
            if (_windows.TryGetValue(p, out var w) && w.Limit is { } limit && w.Held >= limit && now < w.ProbeAt)
            {
                next = next is { } n && n < w.ProbeAt ? n : w.ProbeAt;
            }
        }
        return next;
    }

    /// <summary>A lease with <paramref name="provider"/> starts (its request is about to go out).</summary>
    /// <returns>The leases held with it before this one (pass it to <see cref="Ended"/>).</returns>
    public int Started(PeerId provider)
    {
        if (!_windows.TryGetValue(provider, out var w))
        {
            if (_windows.Count >= MaxIdle)
            {
                // Bounded: forget the windows holding nothing now (what they learnt is relearnt at the next refusal).
                foreach (var idle in _windows.Where(kv => kv.Value.Held == 0).Select(kv => kv.Key).ToList())
                {
                    _windows.Remove(idle);
                }
            }
            _windows[provider] = w = new Window();
        }
        return w.Held++;
    }

    /// <summary>
    /// A lease with <paramref name="provider"/> ended. A busy refusal while others were held there closes the window at their
    /// count (<see cref="LeaseEnd.HeldOthers"/>: the refusal is this node's own limit, not the provider's lack of cores, so the
    /// job need not back off); any other end of a lease leaving room in a window with a limit reopens it
    /// (<see cref="LeaseEnd.Reopened"/>: wake a job waiting for it).
    /// </summary>
    /// <param name="reportedLimit">A busy refusal's <c>LeaseLimit</c>: the provider's own limit for this node, when it said it.</param>
    /// <param name="heldAtStart">What <see cref="Started"/> returned for this lease: a reported limit counts up to it only.</param>
    public LeaseEnd Ended(PeerId provider, bool refusedBusy, DateTimeOffset now, int? reportedLimit = null, int heldAtStart = int.MaxValue)
    {
        if (!_windows.TryGetValue(provider, out var w) || w.Held == 0)
        {
            return new LeaseEnd(false, false);
        }
        w.Held--;
        if (refusedBusy)
        {
            if (w.Held == 0)
            {
                // Busy with none of ours there: the provider is full with others' work; the job's own backoff applies.
                if (w.Limit is null)
                {
                    _windows.Remove(provider);
                }
                return new LeaseEnd(false, false);
            }
            w.Limit = reportedLimit is { } reported ? Math.Min(reported, heldAtStart)
                : w.Limit is { } known ? Math.Min(known, w.Held) : w.Held;
            w.ProbeAt = now + ProbeInterval;
            return new LeaseEnd(true, false);
        }
        var reopened = w.Limit is { } limit && w.Held < limit;
        if (w.Held == 0 && (w.Limit is null || now >= w.ProbeAt))
        {
            _windows.Remove(provider); // nothing held and nothing current learnt: forget it (a later refusal teaches it again)
        }
        return new LeaseEnd(false, reopened);
    }

    /// <summary>
    /// A lease of this node's with <paramref name="provider"/> completed while <paramref name="adSequence"/> was the provider's
    /// newest advertisement here: the core it held is free again, whatever that advertisement said. A provider whose every core
    /// is taken advertises itself busy and publishes that it is free again only after its publishing gap (two seconds); a
    /// requester that waited for that advertisement left the core it had just freed idle meanwhile (at 32 leases in flight on
    /// 32 cores, p99 submit → answer 1.3 s against 62 ms).
    /// </summary>
    public void Freed(PeerId provider, ulong adSequence)
    {
        if (_freed.TryGetValue(provider, out var f) && f.AdSequence == adSequence)
        {
            _freed[provider] = (adSequence, f.Cores + 1);
            return;
        }
        if (_freed.Count >= MaxIdle && !_freed.ContainsKey(provider))
        {
            _freed.Clear(); // bounded: what is forgotten only means waiting for the provider's next advertisement
        }
        _freed[provider] = (adSequence, 1);
    }

    /// <summary>
    /// Cores this node's own leases freed at <paramref name="provider"/> since its advertisement <paramref name="adSequence"/>
    /// arrived, less those it has leased since (<see cref="TakeFreed"/>); 0 once a newer advertisement is the current one.
    /// </summary>
    public int FreedSince(PeerId provider, ulong adSequence) =>
        _freed.TryGetValue(provider, out var f) && f.AdSequence == adSequence ? f.Cores : 0;

    /// <summary>A lease with <paramref name="provider"/> was chosen by its advertisement <paramref name="adSequence"/>: one freed core, if any, is taken.</summary>
    public void TakeFreed(PeerId provider, ulong adSequence)
    {
        if (!_freed.TryGetValue(provider, out var f))
        {
            return;
        }
        if (f.AdSequence != adSequence || f.Cores <= 1)
        {
            _freed.Remove(provider);
            return;
        }
        _freed[provider] = (adSequence, f.Cores - 1);
    }

    private sealed class Window
    {
        public int Held;
        public int? Limit;
        public DateTimeOffset ProbeAt;
    }
}

/// <summary>What the end of a lease did to its provider's window (<see cref="LeaseWindows.Ended"/>).</summary>
/// <param name="HeldOthers">A busy refusal while this node held other leases there: the window closed at their count.</param>
/// <param name="Reopened">The window has a learnt limit and room below it now: a job waiting for this provider may lease.</param>
public readonly record struct LeaseEnd(bool HeldOthers, bool Reopened);
