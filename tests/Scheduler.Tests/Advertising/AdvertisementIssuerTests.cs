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

    // ---- a poll compares fields, it does not encode (stop 41) ----

    /// <summary>
    /// The provider polls at every lease's start and end; a poll that publishes nothing (a load-only change inside the gap,
    /// the most common) encodes nothing now. On main each poll encoded the content once or twice to compare bytes: ~0.4 KB
    /// per poll here.
    /// </summary>
    [Test]
    public void Poll_ThatPublishesNothing_EncodesNothing_1000PollsAllocateUnder1KB()
    {
        var key = Ads.Key(1);
        var options = new AdvertisementOptions();
        var issuer = new AdvertisementIssuer(key, options);
        var idle = Ads.Make(key, cores: 16, available: 16);
        Assert.That(issuer.Poll(idle, T0), Is.Not.Null);
        var loads = Enumerable.Range(0, 16).Select(free => idle with { AvailableCores = 16 - free % 8 }).ToArray();
        var published = 0;
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 1_000; i++)
        {
            published += issuer.Poll(loads[i % loads.Length], T0 + TimeSpan.FromMilliseconds(1 + i)) is null ? 0 : 1;
        }
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.That(published, Is.EqualTo(0), "load-only changes within the gap: none published");
        Assert.That(allocated, Is.LessThan(1_000), "bytes allocated by 1,000 polls");
        Assert.That(issuer.Poll(loads[3], T0 + options.LoadChangeGap), Is.Not.Null, "the change still goes out when the load gap ends");
    }

    /// <summary>Every key of <see cref="Advertisement"/> but the four the issuer fills in is read by the comparison: change any one and it differs.</summary>
    [Test]
    public void SameContent_ReadsEveryKeyButTheFourTheIssuerFillsIn()
    {
        var a = Ads.Make(Ads.Key(1), cores: 4, available: 2);
        var filledIn = new[] { 0, 2, 3, 4 };
        var keys = typeof(Advertisement).GetProperties()
            .Select(p => (Property: p, Key: p.GetCustomAttributes(typeof(MessagePack.KeyAttribute), false).Cast<MessagePack.KeyAttribute>().SingleOrDefault()))
            .Where(k => k.Key is not null).ToList();
        Assert.That(keys.Select(k => k.Key!.IntKey), Is.EquivalentTo(Enumerable.Range(0, 13)), "the keys this test knows");
        foreach (var (property, attribute) in keys)
        {
            var b = a with { };
            object changed = property.GetValue(a) switch
            {
                int v => v + 1,
                long v => v + 1,
                ulong v => v + 1,
                string v => v + "x",
                byte[] v => (byte[])[.. v, 1],
                byte[][] v => (byte[][])[.. v, [4, 127, 0, 0, 2]],
                ProviderPolicyFlags v => v | (ProviderPolicyFlags)8,
                var other => throw new AssertionException($"key {attribute!.IntKey}: a {other?.GetType()} this test cannot change"),
            };
            property.SetValue(b, changed);
            var same = AdvertisementIssuer.SameContent(a, b, busyOrFreeOnly: false);
            Assert.That(same, Is.EqualTo(filledIn.Contains(attribute!.IntKey!.Value)), $"key {attribute.IntKey} ({property.Name}) changed");
            Assert.That(same, Is.EqualTo(Encoded(a).SequenceEqual(Encoded(b))), $"key {attribute.IntKey}: as the encodings compare");
        }
        Assert.That(AdvertisementIssuer.SameContent(a, a with { AvailableCores = 3 }, busyOrFreeOnly: true), Is.True, "2 → 3 free: still free");
        Assert.That(AdvertisementIssuer.SameContent(a, a with { AvailableCores = 0 }, busyOrFreeOnly: true), Is.False, "2 → 0 free: busy");
        Assert.That(AdvertisementIssuer.SameContent(a, a with { ListenAddresses = [a.ListenAddresses[0].ToArray()] }, busyOrFreeOnly: false), Is.True, "equal bytes in another array");

        static byte[] Encoded(Advertisement ad) => MessagePack.MessagePackSerializer.Serialize(
            ad with { PeerId = [], Sequence = 0, IssuedAtUnixMs = 0, ExpiresAtUnixMs = 0 }, MessagePack.MessagePackSerializerOptions.Standard);
    }
}
