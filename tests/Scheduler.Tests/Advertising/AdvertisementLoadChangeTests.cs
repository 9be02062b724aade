using Potluck.Scheduler.Advertising;

namespace Potluck.Scheduler.Tests.Advertising;

/// <summary>
/// Load-only changes (the free cores alone, the provider as busy or as free as it was) wait for
/// <see cref="AdvertisementOptions.LoadChangeGap"/>; going busy or free again still goes out after the 2-second
/// <see cref="AdvertisementOptions.MinPublishGap"/>; and the issuer counts why it published.
/// </summary>
public class AdvertisementLoadChangeTests
{
    private static readonly DateTimeOffset T0 = Ads.T0;

    private static Advertisement Open(byte[]? envelope)
    {
        Assert.That(envelope, Is.Not.Null);
        Assert.That(AdvertisementCodec.TryOpen(envelope!, new AdvertisementOptions(), out var opened), Is.EqualTo(AdVerdict.Accepted));
        return opened!.Ad;
    }

    [Test]
    public void Poll_LoadOnlyChange_IsNotPublishedWithinTheLoadGap_ThenGoesOutWithTheCountThen()
    {
        var key = Ads.Key(1);
        var options = new AdvertisementOptions();
        var issuer = new AdvertisementIssuer(key, options);
        var idle = Ads.Make(key, cores: 4, available: 4);
        Assert.That(issuer.Poll(idle, T0), Is.Not.Null);

        // A lease starts and ends, again and again: 4 → 3 → 4 → 2 free, never busy.
        var at = T0;
        foreach (var free in new[] { 3, 4, 2, 3, 2 })
        {
            at += TimeSpan.FromSeconds(5);
            Assert.That(issuer.Poll(idle with { AvailableCores = free }, at), Is.Null, $"{free} of 4 free at {at - T0}: load only, not published");
        }
        Assert.That(issuer.QuietUntil, Is.EqualTo(DateTimeOffset.MinValue), "past the 2-second gap: a change that matters is not held back");
        Assert.That(issuer.NextPublishAt, Is.EqualTo(T0 + options.LoadChangeGap), "the shell's timer polls when the load gap ends");
        Assert.That(issuer.Poll(idle with { AvailableCores = 2 }, T0 + options.LoadChangeGap - TimeSpan.FromTicks(1)), Is.Null);

        var late = Open(issuer.Poll(idle with { AvailableCores = 2 }, T0 + options.LoadChangeGap));
        Assert.That(late.AvailableCores, Is.EqualTo(2), "the count as it is when the load gap ends");
        Assert.That(issuer.Counts.ToArray(), Is.EqualTo(new long[] { 1, 0, 1, 0, 0, 0 }), "first, then one load-only publication");
    }

    [Test]
    public void Poll_LoadBackToWhatWasPublished_PublishesNothingAtTheLoadGap()
    {
        var key = Ads.Key(1);
        var options = new AdvertisementOptions();
        var issuer = new AdvertisementIssuer(key, options);
        var idle = Ads.Make(key, cores: 2, available: 2);
        Assert.That(issuer.Poll(idle, T0), Is.Not.Null);
        Assert.That(issuer.Poll(idle with { AvailableCores = 1 }, T0 + TimeSpan.FromSeconds(3)), Is.Null);
        Assert.That(issuer.Poll(idle, T0 + TimeSpan.FromSeconds(4)), Is.Null, "the lease ended: as published");
        Assert.That(issuer.NextPublishAt, Is.EqualTo(T0 + options.PublishInterval), "nothing pending: the 10-minute republication");
        Assert.That(issuer.Poll(idle, T0 + options.LoadChangeGap), Is.Null);
    }

    [Test]
    public void Poll_GoingBusyOrFreeAgain_StillGoesOutAfterTheMinimumGap()
    {
        var key = Ads.Key(1);
        var issuer = new AdvertisementIssuer(key, new AdvertisementOptions());
        var idle = Ads.Make(key, cores: 2, available: 2);
        Assert.That(issuer.Poll(idle, T0), Is.Not.Null);
        Assert.That(issuer.Poll(idle with { AvailableCores = 1 }, T0 + TimeSpan.FromSeconds(3)), Is.Null, "load only");
        var busy = Open(issuer.Poll(idle with { AvailableCores = 0 }, T0 + TimeSpan.FromSeconds(4)));
        Assert.That(busy.AvailableCores, Is.Zero, "busy goes out at once past the 2-second gap");
        Assert.That(issuer.Poll(idle with { AvailableCores = 1 }, T0 + TimeSpan.FromSeconds(5)), Is.Null, "free again, inside the gap");
        Assert.That(issuer.QuietUntil, Is.EqualTo(T0 + TimeSpan.FromSeconds(6)));
        Assert.That(issuer.NextPublishAt, Is.EqualTo(T0 + TimeSpan.FromSeconds(6)));
        var free = Open(issuer.Poll(idle with { AvailableCores = 1 }, T0 + TimeSpan.FromSeconds(6)));
        Assert.That(free.AvailableCores, Is.EqualTo(1), "free again goes out at the gap's end");
        Assert.That(issuer.Counts.ToArray(), Is.EqualTo(new long[] { 1, 2, 0, 0, 0, 0 }), "first, then busy and free again");
    }

    [Test]
    public void Poll_LoadOnlyChangeInsideTheGap_ThenBusy_TheGapsEndPollsAndPublishesBusy()
    {
        // The shell skips polls before QuietUntil, so a load-only change inside the gap must not push the next poll to
        // the load gap: a provider that goes busy meanwhile would be advertised as free for a minute.
        var key = Ads.Key(1);
        var issuer = new AdvertisementIssuer(key, new AdvertisementOptions());
        var idle = Ads.Make(key, cores: 2, available: 2);
        Assert.That(issuer.Poll(idle, T0), Is.Not.Null);
        Assert.That(issuer.Poll(idle with { AvailableCores = 1 }, T0 + TimeSpan.FromSeconds(1)), Is.Null);
        Assert.That(issuer.QuietUntil, Is.EqualTo(T0 + TimeSpan.FromSeconds(2)));
        Assert.That(issuer.NextPublishAt, Is.EqualTo(T0 + TimeSpan.FromSeconds(2)), "the gap's end polls");
        // (the shell skipped the poll when the second lease took the last core at 1.5 s)
        var busy = Open(issuer.Poll(idle with { AvailableCores = 0 }, T0 + TimeSpan.FromSeconds(2)));
        Assert.That(busy.AvailableCores, Is.Zero);
    }

    [Test]
    public void LoadQuietUntil_IsSetOnlyWhileALoadOnlyChangeWaits_AndNoPollInsideItPublishesAnotherLikeIt()
    {
        // The shell skips a lease's start and end by LoadQuietUntil while the provider stays as free as published: sound only
        // if no such poll could publish before it, and if it is never set while something else is pending.
        var key = Ads.Key(1);
        var options = new AdvertisementOptions();
        var issuer = new AdvertisementIssuer(key, options);
        var idle = Ads.Make(key, cores: 4, available: 4);
        Assert.That(issuer.PublishedFree, Is.Null, "nothing published yet");
        Assert.That(issuer.Poll(idle, T0), Is.Not.Null);
        Assert.That(issuer.PublishedFree, Is.True);
        Assert.That(issuer.LoadQuietUntil, Is.EqualTo(DateTimeOffset.MinValue), "just published: nothing waits");

        Assert.That(issuer.Poll(idle with { AvailableCores = 3 }, T0 + TimeSpan.FromSeconds(1)), Is.Null);
        Assert.That(issuer.LoadQuietUntil, Is.EqualTo(DateTimeOffset.MinValue), "inside the 2-second gap QuietUntil holds every poll back");
        Assert.That(issuer.Poll(idle with { AvailableCores = 3 }, T0 + TimeSpan.FromSeconds(5)), Is.Null);
        Assert.That(issuer.LoadQuietUntil, Is.EqualTo(T0 + options.LoadChangeGap), "a load-only change waits for the load gap");
        Assert.That(issuer.NextPublishAt, Is.EqualTo(issuer.LoadQuietUntil), "where the shell's timer polls");
        for (var s = 6; s < 60; s += 7)
        {
            foreach (var free in new[] { 1, 2, 3, 4 })
            {
                Assert.That(issuer.Poll(idle with { AvailableCores = free }, T0 + TimeSpan.FromSeconds(s)), Is.Null,
                    $"{free} free at {s} s: as free as published, inside LoadQuietUntil");
                if (free == 4)
                {
                    Assert.That(issuer.LoadQuietUntil, Is.EqualTo(DateTimeOffset.MinValue), "back to what was published: nothing waits");
                }
                else
                {
                    Assert.That(issuer.LoadQuietUntil, Is.EqualTo(T0 + options.LoadChangeGap), "the load gap's end does not move");
                }
            }
        }
        Assert.That(issuer.Poll(idle with { AvailableCores = 2 }, T0 + TimeSpan.FromSeconds(58)), Is.Null);
        var busy = Open(issuer.Poll(idle with { AvailableCores = 0 }, T0 + TimeSpan.FromSeconds(59)));
        Assert.That(busy.AvailableCores, Is.Zero, "going busy inside LoadQuietUntil publishes at once (the shell polls it)");
        Assert.That(issuer.PublishedFree, Is.False);
        Assert.That(issuer.LoadQuietUntil, Is.EqualTo(DateTimeOffset.MinValue));

        Assert.That(issuer.Poll(idle with { AvailableCores = 0, PricePerMegaFuel = 3 }, T0 + TimeSpan.FromSeconds(60)), Is.Null);
        Assert.That(issuer.QuietUntil, Is.EqualTo(T0 + TimeSpan.FromSeconds(61)), "a change that matters, inside the gap");
        Assert.That(issuer.LoadQuietUntil, Is.EqualTo(DateTimeOffset.MinValue), "never set beside a pending change that matters");
    }

    [Test]
    public void Poll_OtherChanges_StillGoOutAfterTheMinimumGap_AndAreCountedByReason()
    {
        var key = Ads.Key(1);
        var options = new AdvertisementOptions();
        var issuer = new AdvertisementIssuer(key, options);
        var idle = Ads.Make(key, cores: 4, available: 4);
        Assert.That(issuer.Poll(idle, T0), Is.Not.Null);
        var cheaper = idle with { AvailableCores = 3, PricePerMegaFuel = 5 };
        Assert.That(Open(issuer.Poll(cheaper, T0 + TimeSpan.FromSeconds(2))).PricePerMegaFuel, Is.EqualTo(5), "a price change (with the load) is not load only");
        var moved = cheaper with { ListenAddresses = [Protocol.Multiformats.Multiaddr.Parse("/ip4/10.0.0.1/tcp/4001").ToBytes()] };
        Assert.That(issuer.Poll(moved, T0 + TimeSpan.FromSeconds(4)), Is.Not.Null, "a new address");
        Assert.That(issuer.Poll(moved, T0 + TimeSpan.FromSeconds(4) + options.PublishInterval), Is.Not.Null, "unchanged: the interval");
        Assert.That(issuer.Counts.ToArray(), Is.EqualTo(new long[] { 1, 0, 0, 1, 1, 1 }));
        Assert.That(IssuerCounts.Names, Is.EqualTo(new[] { "first", "busy_or_free", "free_cores", "addresses", "other", "republish" }));
    }
}
