using Potluck.Scheduler.Advertising;

namespace Potluck.Scheduler.Tests.Advertising;

public class AdvertisementIssuerTests
{
    private static readonly DateTimeOffset T0 = Ads.T0;

    [Test]
    public void Poll_PublishesFirstThenOnIntervalWithRisingSequence()
    {
        var key = Ads.Key(1);
        var options = new AdvertisementOptions { PublishInterval = TimeSpan.FromMinutes(1) };
        var issuer = new AdvertisementIssuer(key, options);
        var content = Ads.Make(key);
        var book = new AdvertisementBook(options);

        var first = issuer.Poll(content, T0);
        Assert.That(first, Is.Not.Null);
        Assert.That(book.Add(first!, T0), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(issuer.Poll(content, T0 + TimeSpan.FromSeconds(30)), Is.Null, "unchanged and not due");
        Assert.That(issuer.NextPublishAt, Is.EqualTo(T0 + TimeSpan.FromMinutes(1)));

        var second = issuer.Poll(content, T0 + TimeSpan.FromMinutes(1));
        Assert.That(second, Is.Not.Null);
        Assert.That(book.Add(second!, T0 + TimeSpan.FromMinutes(1)), Is.EqualTo(AdVerdict.Accepted), "a higher sequence");
        Assert.That(issuer.Sequence, Is.GreaterThanOrEqualTo((ulong)T0.ToUnixTimeMilliseconds()));
    }

    [Test]
    public void Poll_ChangedContent_PublishesAfterMinimumGap()
    {
        var key = Ads.Key(1);
        var issuer = new AdvertisementIssuer(key, new AdvertisementOptions { MinPublishGap = TimeSpan.FromSeconds(2) });
        Assert.That(issuer.Poll(Ads.Make(key), T0), Is.Not.Null);
        var busy = Ads.Make(key) with { AvailableCores = 0 };
        Assert.That(issuer.Poll(busy, T0 + TimeSpan.FromSeconds(1)), Is.Null, "too soon");
        Assert.That(issuer.NextPublishAt, Is.EqualTo(T0 + TimeSpan.FromSeconds(2)));
        var published = issuer.Poll(busy, T0 + TimeSpan.FromSeconds(2));
        Assert.That(AdvertisementCodec.TryOpen(published!, new AdvertisementOptions(), out var opened), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(opened!.IsBusy, Is.True);
        Assert.That(opened.ExpiresAt, Is.EqualTo(T0 + TimeSpan.FromSeconds(2) + new AdvertisementOptions().Lifetime));
    }

    [Test]
    public void QuietUntil_ChangeInsideGap_NoPollBeforeItPublishes_AndTheGapsEndPublishesTheStateThen()
    {
        var key = Ads.Key(1);
        var issuer = new AdvertisementIssuer(key, new AdvertisementOptions { MinPublishGap = TimeSpan.FromSeconds(2) });
        var idle = Ads.Make(key);
        Assert.That(issuer.Poll(idle, T0), Is.Not.Null);
        Assert.That(issuer.QuietUntil, Is.EqualTo(DateTimeOffset.MinValue), "nothing pending: a change publishes at its first poll after the gap");
        var busy = idle with { AvailableCores = 0 };
        Assert.That(issuer.Poll(busy, T0 + TimeSpan.FromSeconds(1)), Is.Null);
        Assert.That(issuer.QuietUntil, Is.EqualTo(T0 + TimeSpan.FromSeconds(2)), "a change waits for the gap's end");
        Assert.That(issuer.NextPublishAt, Is.EqualTo(issuer.QuietUntil), "where the shell's timer polls");
        // Whatever the content, no poll before QuietUntil publishes (the shell skips them).
        foreach (var content in new[] { busy, idle with { AvailableCores = 1 }, idle })
        {
            Assert.That(issuer.Poll(content, T0 + TimeSpan.FromSeconds(2) - TimeSpan.FromTicks(1)), Is.Null);
            Assert.That(issuer.Poll(busy, T0 + TimeSpan.FromSeconds(1.5)), Is.Null);
        }
        var published = issuer.Poll(busy, T0 + TimeSpan.FromSeconds(2));
        Assert.That(AdvertisementCodec.TryOpen(published!, new AdvertisementOptions(), out var opened), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(opened!.IsBusy, Is.True, "the state at the gap's end");
        Assert.That(issuer.QuietUntil, Is.EqualTo(DateTimeOffset.MinValue));

        // A change, then the content back to what was published: nothing pending, and the gap's poll publishes nothing.
        Assert.That(issuer.Poll(idle, T0 + TimeSpan.FromSeconds(3)), Is.Null);
        Assert.That(issuer.QuietUntil, Is.EqualTo(T0 + TimeSpan.FromSeconds(4)));
        Assert.That(issuer.Poll(busy, T0 + TimeSpan.FromSeconds(3.5)), Is.Null);
        Assert.That(issuer.QuietUntil, Is.EqualTo(DateTimeOffset.MinValue));
        Assert.That(issuer.Poll(busy, T0 + TimeSpan.FromSeconds(4)), Is.Null, "unchanged from the last publication");
    }
}
