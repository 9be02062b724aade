using Potluck.Scheduler.Advertising;

namespace Potluck.Scheduler.Tests.Advertising;

public class AdvertisementBookTests
{
    private static readonly DateTimeOffset T0 = Ads.T0;

    [Test]
    public void Add_NewerSequence_ReplacesOlder()
    {
        var book = new AdvertisementBook(new AdvertisementOptions());
        var key = Ads.Key(1);
        Assert.That(book.Add(Ads.Signed(key, 1), T0), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(book.Add(Ads.Signed(key, 2), T0), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(book.Count, Is.EqualTo(1));
        Assert.That(book.Get(key.PeerId, T0)!.Ad.Sequence, Is.EqualTo(2UL));
    }

    [Test]
    public void Add_ReplayOfSameOrOlderSequence_IsOldSequence()
    {
        var book = new AdvertisementBook(new AdvertisementOptions());
        var key = Ads.Key(1);
        var first = Ads.Signed(key, 5);
        Assert.That(book.Add(first, T0), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(book.Add(first, T0 + TimeSpan.FromSeconds(1)), Is.EqualTo(AdVerdict.OldSequence));
        Assert.That(book.Add(Ads.Signed(key, 4), T0), Is.EqualTo(AdVerdict.OldSequence));
        Assert.That(book.Get(key.PeerId, T0)!.Ad.Sequence, Is.EqualTo(5UL));
    }

    [Test]
    public void Add_ExpiredOrFromTheFuture_IsExpired()
    {
        var book = new AdvertisementBook(new AdvertisementOptions());
        var key = Ads.Key(1);
        Assert.That(book.Add(Ads.Signed(key, 1, T0, TimeSpan.FromMinutes(5)), T0 + TimeSpan.FromMinutes(5)), Is.EqualTo(AdVerdict.Expired));
        Assert.That(book.Add(Ads.Signed(key, 1, T0 + TimeSpan.FromMinutes(2)), T0), Is.EqualTo(AdVerdict.Expired));
        Assert.That(book.Add(Ads.Signed(key, 1, T0 + TimeSpan.FromSeconds(20)), T0), Is.EqualTo(AdVerdict.Accepted), "within clock skew");
    }

    [Test]
    public void Add_LifetimeBeyondLimit_IsLifetimeTooLong()
    {
        var book = new AdvertisementBook(new AdvertisementOptions { MaxLifetime = TimeSpan.FromHours(1) });
        Assert.That(book.Add(Ads.Signed(Ads.Key(1), 1, T0, TimeSpan.FromHours(2)), T0), Is.EqualTo(AdVerdict.LifetimeTooLong));
    }

    [Test]
    public void Add_TamperedOrWrongSigner_IsRejectedAndNotStored()
    {
        var book = new AdvertisementBook(new AdvertisementOptions());
        var key = Ads.Key(1);
        var tampered = Ads.Signed(key);
        tampered[^5] ^= 0x40;
        Assert.That(book.Add(tampered, T0), Is.EqualTo(AdVerdict.BadSignature));
        Assert.That(book.Add(AdvertisementCodec.Sign(Ads.Make(key), Ads.Key(2)), T0), Is.EqualTo(AdVerdict.PeerMismatch));
        Assert.That(book.Count, Is.Zero);
    }

    [Test]
    public void Add_OverSizeLimit_IsTooLarge()
    {
        var book = new AdvertisementBook(new AdvertisementOptions { MaxEnvelopeBytes = 64 });
        Assert.That(book.Add(Ads.Signed(Ads.Key(1)), T0), Is.EqualTo(AdVerdict.TooLarge));
    }

    [Test]
    public void Live_EvictsExpiredAndReturnsTheRest()
    {
        var book = new AdvertisementBook(new AdvertisementOptions());
        var shortLived = Ads.Key(1);
        var longLived = Ads.Key(2);
        book.Add(Ads.Signed(shortLived, 1, T0, TimeSpan.FromMinutes(1)), T0);
        book.Add(Ads.Signed(longLived, 1, T0, TimeSpan.FromMinutes(10)), T0);
        Assert.That(book.Live(T0).Count, Is.EqualTo(2));

        var live = book.Live(T0 + TimeSpan.FromMinutes(1));
        Assert.That(live.Select(a => a.Provider), Is.EqualTo(new[] { longLived.PeerId }));
        Assert.That(book.Count, Is.EqualTo(1));
        Assert.That(book.Get(shortLived.PeerId, T0), Is.Null);
    }

    [Test]
    public void Add_WhenFull_SoonestExpiringMakesWayOnlyForALongerLivedAd()
    {
        var book = new AdvertisementBook(new AdvertisementOptions { MaxProviders = 2 });
        var a = Ads.Key(1);
        var b = Ads.Key(2);
        book.Add(Ads.Signed(a, 1, T0, TimeSpan.FromMinutes(2)), T0);
        book.Add(Ads.Signed(b, 1, T0, TimeSpan.FromMinutes(5)), T0);

        Assert.That(book.Add(Ads.Signed(Ads.Key(3), 1, T0, TimeSpan.FromMinutes(1)), T0), Is.EqualTo(AdVerdict.BookFull));
        Assert.That(book.Add(Ads.Signed(Ads.Key(4), 1, T0, TimeSpan.FromMinutes(3)), T0), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(book.Count, Is.EqualTo(2));
        Assert.That(book.Get(a.PeerId, T0), Is.Null, "the soonest-expiring entry was evicted");
    }

    [Test]
    public void Add_ManyProviders_NeverExceedsBound()
    {
        var book = new AdvertisementBook(new AdvertisementOptions { MaxProviders = 8 });
        for (var i = 0; i < 40; i++)
        {
            book.Add(Ads.Signed(Ads.Key(100 + i), 1, T0, TimeSpan.FromSeconds(60 + i)), T0);
            Assert.That(book.Count, Is.LessThanOrEqualTo(8));
        }
    }
}
