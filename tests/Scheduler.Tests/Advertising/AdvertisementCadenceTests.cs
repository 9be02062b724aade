using MessagePack;
using Potluck.Scheduler.Advertising;

namespace Potluck.Scheduler.Tests.Advertising;

/// <summary>
/// The publishing cadence (an unchanged advertisement every 10 minutes, a changed one after the 2-second gap), the envelope
/// a book hands on in a sample (the exact bytes signed), the unverified peek that lets a sample skip what is held, the
/// bounded, seeded sample itself, and how a provider found unreachable leaves the book.
/// </summary>
public class AdvertisementCadenceTests
{
    private static readonly DateTimeOffset T0 = Ads.T0;

    [Test]
    public void Poll_UnchangedContent_IsNotRepublishedBeforeTheTenMinuteInterval()
    {
        var key = Ads.Key(1);
        var options = new AdvertisementOptions();
        var issuer = new AdvertisementIssuer(key, options);
        var content = Ads.Make(key);
        Assert.That(issuer.Poll(content, T0), Is.Not.Null, "the first one goes out at once");
        foreach (var after in new[] { TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(5), TimeSpan.FromMinutes(10) - TimeSpan.FromMilliseconds(1) })
        {
            Assert.That(issuer.Poll(content, T0 + after), Is.Null, $"unchanged, {after} after the last: not republished");
        }
        Assert.That(issuer.NextPublishAt, Is.EqualTo(T0 + TimeSpan.FromMinutes(10)));
        var again = issuer.Poll(content, T0 + TimeSpan.FromMinutes(10));
        Assert.That(AdvertisementCodec.TryOpen(again!, options, out var opened), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(opened!.ExpiresAt, Is.EqualTo(T0 + TimeSpan.FromMinutes(40)), "a 30-minute lifetime: two republications may be lost");
        Assert.That(options.Lifetime, Is.LessThanOrEqualTo(options.MaxLifetime));
    }

    [Test]
    public void Poll_ChangedContent_StillGoesOutAfterTheMinimumGap_WithTheDefaults()
    {
        var key = Ads.Key(1);
        var issuer = new AdvertisementIssuer(key, new AdvertisementOptions());
        var idle = Ads.Make(key);
        Assert.That(issuer.Poll(idle, T0), Is.Not.Null);
        var busy = idle with { AvailableCores = 0 };
        Assert.That(issuer.Poll(busy, T0 + TimeSpan.FromSeconds(1)), Is.Null, "inside the 2-second gap");
        var published = issuer.Poll(busy, T0 + TimeSpan.FromSeconds(2));
        Assert.That(AdvertisementCodec.TryOpen(published!, new AdvertisementOptions(), out var opened), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(opened!.IsBusy, Is.True, "the change went out 2 s after the last publication, not 10 minutes");
        var free = issuer.Poll(idle, T0 + TimeSpan.FromSeconds(4));
        Assert.That(free, Is.Not.Null, "and the next change 2 s after that");
    }

    [Test]
    public void Envelope_RebuiltFromTheSignature_IsExactlyTheBytesTheProviderSigned()
    {
        var key = Ads.Key(3);
        var signed = Ads.Signed(key, 7);
        Assert.That(AdvertisementCodec.TryOpen(signed, new AdvertisementOptions(), out var opened), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(opened!.EnvelopeLength, Is.EqualTo(signed.Length));
        Assert.That(opened.Envelope(), Is.EqualTo(signed));
    }

    [Test]
    public void Envelope_FromAnotherEncoder_IsHandedOnAsItCame()
    {
        // A newer provider's payload with a field this version does not know (index 13): it opens, re-encoding it would
        // drop the field and break the signature, so the book keeps the envelope itself.
        var key = Ads.Key(4);
        var known = MessagePackSerializer.Serialize(Ads.Make(key, 9), MessagePackSerializerOptions.Standard);
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        var writer = new MessagePackWriter(buffer);
        var reader = new MessagePackReader(known);
        var fields = reader.ReadArrayHeader();
        writer.WriteArrayHeader(fields + 1);
        for (var i = 0; i < fields; i++)
        {
            writer.WriteRaw(reader.ReadRaw());
        }
        writer.Write("a field from the future");
        writer.Flush();
        var payload = buffer.WrittenSpan.ToArray();
        var signature = key.Sign([.. "potluck-ad:"u8, .. payload]);
        var envelope = AdEnvelope.Encode(key.PublicKey.ToProtobuf(), payload, signature);

        Assert.That(AdvertisementCodec.TryOpen(envelope, new AdvertisementOptions(), out var opened), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(opened!.Envelope(), Is.EqualTo(envelope));
        Assert.That(AdvertisementCodec.TryOpen(opened.Envelope(), new AdvertisementOptions(), out _), Is.EqualTo(AdVerdict.Accepted), "and it still verifies");
    }

    [Test]
    public void TryPeek_ReadsTheClaimedProviderAndSequence_AndRefusesWhatDoesNotParse()
    {
        var key = Ads.Key(5);
        Assert.That(AdvertisementCodec.TryPeek(Ads.Signed(key, 42), new AdvertisementOptions(), out var provider, out var sequence), Is.True);
        Assert.That(provider, Is.EqualTo(key.PeerId));
        Assert.That(sequence, Is.EqualTo(42UL));
        var random = new Random(5);
        for (var i = 0; i < 500; i++)
        {
            var garbage = new byte[random.Next(0, 300)];
            random.NextBytes(garbage);
            Assert.DoesNotThrow(() => AdvertisementCodec.TryPeek(garbage, new AdvertisementOptions(), out _, out _));
        }
        Assert.That(AdvertisementCodec.TryPeek(new byte[5000], new AdvertisementOptions(), out _, out _), Is.False, "over the envelope limit: not read");
    }

    [Test]
    public void Sample_IsBoundedByCountAndBytes_LeavesOutExpiredAndUnreachable_AndRepeatsWithTheSeed()
    {
        var options = new AdvertisementOptions();
        var book = new AdvertisementBook(options);
        var keys = Enumerable.Range(100, 60).Select(Ads.Key).ToList();
        foreach (var key in keys)
        {
            Assert.That(book.Add(Ads.Signed(key, 1, T0, TimeSpan.FromMinutes(30)), T0), Is.EqualTo(AdVerdict.Accepted));
        }
        var shortLived = Ads.Key(99);
        Assert.That(book.Add(Ads.Signed(shortLived, 1, T0, TimeSpan.FromMinutes(1)), T0), Is.EqualTo(AdVerdict.Accepted));
        book.MarkUnreachable(keys[0].PeerId, 1, T0);
        var now = T0 + TimeSpan.FromMinutes(2);

        var sample = book.Sample(32, 64 * 1024, new Random(7), now);
        Assert.That(sample, Has.Count.EqualTo(32));
        Assert.That(sample.Select(a => a.Provider).Distinct().Count(), Is.EqualTo(32));
        Assert.That(sample.Any(a => a.Provider == shortLived.PeerId || a.Provider == keys[0].PeerId), Is.False, "neither expired nor unreachable");
        Assert.That(book.Sample(32, 64 * 1024, new Random(7), now).Select(a => a.Provider), Is.EqualTo(sample.Select(a => a.Provider)), "seeded");
        Assert.That(book.Sample(100, 64 * 1024, new Random(7), now), Has.Count.EqualTo(59), "all the live, reachable ones, no more");
        Assert.That(book.Sample(100, 64 * 1024, new Random(7), now, except: keys[1].PeerId).Select(a => a.Provider).ToList(),
            Has.Count.EqualTo(58).And.No.EqualTo(keys[1].PeerId), "not the asker's own");
        var size = sample[0].EnvelopeLength;
        var bytesBound = book.Sample(32, size * 5 + size / 2, new Random(7), now);
        Assert.That(bytesBound, Has.Count.EqualTo(5));
        Assert.That(bytesBound.Sum(a => a.EnvelopeLength), Is.LessThanOrEqualTo(size * 5 + size / 2));
    }

    [Test]
    public void MarkUnreachable_HidesTheProviderAfterTheGrace_RefusesItsReplay_AndANewerAdOrAConnectionLiftsIt()
    {
        var options = new AdvertisementOptions();
        var book = new AdvertisementBook(options);
        var gone = Ads.Key(1);
        var other = Ads.Key(2);
        var ad = Ads.Signed(gone, 1, T0, TimeSpan.FromMinutes(30));
        Assert.That(book.Add(ad, T0), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(book.Add(Ads.Signed(other, 1, T0, TimeSpan.FromMinutes(30)), T0), Is.EqualTo(AdVerdict.Accepted));

        book.MarkUnreachable(gone.PeerId, 0, T0); // about an older advertisement than the one held: ignored
        Assert.That(book.UnreachableCount, Is.Zero);
        book.MarkUnreachable(gone.PeerId, 1, T0);
        Assert.That(book.Get(gone.PeerId, T0 + TimeSpan.FromMinutes(1)), Is.Not.Null, "inside the grace it may still be chosen");
        var after = T0 + options.UnreachableGrace;
        Assert.That(book.Get(gone.PeerId, after), Is.Null);
        Assert.That(book.Live(after).Select(a => a.Provider), Is.EqualTo(new[] { other.PeerId }));
        Assert.That(book.LiveCount(after), Is.EqualTo(1));
        Assert.That(book.Add(ad, after), Is.EqualTo(AdVerdict.OldSequence), "the same advertisement replayed does not bring it back");
        Assert.That(book.Get(gone.PeerId, T0 + TimeSpan.FromMinutes(29)), Is.Null, "hidden for as long as the advertisement lives");

        book.MarkReachable(gone.PeerId);
        Assert.That(book.Get(gone.PeerId, after), Is.Not.Null, "connected again");
        book.MarkUnreachable(gone.PeerId, 1, after);
        Assert.That(book.Add(Ads.Signed(gone, 2, after, TimeSpan.FromMinutes(30)), after + options.UnreachableGrace), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(book.Get(gone.PeerId, after + options.UnreachableGrace)!.Ad.Sequence, Is.EqualTo(2UL), "a newer advertisement: back");
    }

    [Test]
    public void MarkUnreachable_AFullBookMakesRoomWithTheUnreachableFirst()
    {
        var options = new AdvertisementOptions { MaxProviders = 3 };
        var good = new HashSet<Potluck.Protocol.Identity.PeerId>();
        var book = new AdvertisementBook(options, p => good.Contains(p) ? ProviderStanding.Good : ProviderStanding.Stranger, new Random(1));
        var keys = Enumerable.Range(1, 3).Select(Ads.Key).ToList();
        foreach (var key in keys)
        {
            good.Add(key.PeerId);
            Assert.That(book.Add(Ads.Signed(key, 1, T0, TimeSpan.FromMinutes(30)), T0), Is.EqualTo(AdVerdict.Accepted));
        }
        var newcomer = Ads.Key(9);
        good.Add(newcomer.PeerId);
        book.MarkUnreachable(keys[1].PeerId, 1, T0);
        Assert.That(book.Add(Ads.Signed(newcomer, 1, T0, TimeSpan.FromMinutes(30)), T0), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(book.Live(T0).Select(a => a.Provider), Is.EquivalentTo(new[] { keys[0].PeerId, keys[2].PeerId, newcomer.PeerId }));
        Assert.That(book.UnreachableCount, Is.Zero, "its mark went with it");
    }
}
