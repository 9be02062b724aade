using System.Reflection;
using System.Runtime.CompilerServices;
using MessagePack;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Advertising;

namespace Potluck.Scheduler.Tests.Advertising;

/// <summary>
/// Books of the nodes of one process (a simulated mesh) that share immutable values: two books that accept the same
/// signed advertisement hold one instance; one no book holds any more is dropped; a flood leaves the table bounded by
/// what the books hold. Every book still checks every envelope it is given.
/// </summary>
public class AdvertisementSharingTests
{
    private static readonly DateTimeOffset T0 = Ads.T0;

    [Test]
    public void TwoBooks_AcceptingTheSameAdvertisement_HoldOneInstance()
    {
        var shared = SharedValues.Create();
        var a = new AdvertisementBook(new AdvertisementOptions(), shared: shared);
        var b = new AdvertisementBook(new AdvertisementOptions(), shared: shared);
        var key = Ads.Key(1);
        var envelope = Ads.Signed(key, 1);

        Assert.That(a.Add(envelope, T0), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(b.Add((byte[])envelope.Clone(), T0), Is.EqualTo(AdVerdict.Accepted));

        var held = a.Get(key.PeerId, T0);
        Assert.That(held, Is.Not.Null);
        Assert.That(b.Get(key.PeerId, T0), Is.SameAs(held), "one instance for both books");
        Assert.That(held!.Envelope(), Is.EqualTo(envelope), "the shared instance hands on the exact envelope");
    }

    [Test]
    public void TwoBooks_WithoutSharing_HoldACopyEach()
    {
        var a = new AdvertisementBook(new AdvertisementOptions(), shared: SharedValues.None);
        var b = new AdvertisementBook(new AdvertisementOptions());
        var key = Ads.Key(1);
        Assert.That(a.Add(Ads.Signed(key, 1), T0), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(b.Add(Ads.Signed(key, 1), T0), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(b.Get(key.PeerId, T0), Is.Not.SameAs(a.Get(key.PeerId, T0)));
    }

    /// <summary>The second book checks the envelope it is given, whatever the first holds: a forged copy is refused.</summary>
    [Test]
    [Category("Adversarial")]
    public void SecondBook_GivenATamperedCopyOfASharedAdvertisement_RefusesIt()
    {
        var shared = SharedValues.Create();
        var a = new AdvertisementBook(new AdvertisementOptions(), shared: shared);
        var b = new AdvertisementBook(new AdvertisementOptions(), shared: shared);
        var key = Ads.Key(1);
        var envelope = Ads.Signed(key, 1);
        Assert.That(a.Add(envelope, T0), Is.EqualTo(AdVerdict.Accepted));

        var forged = (byte[])envelope.Clone();
        forged[^1] ^= 1; // the signature's last byte
        Assert.That(b.Add(forged, T0), Is.EqualTo(AdVerdict.BadSignature));
        Assert.That(b.Count, Is.Zero);
        Assert.That(a.Get(key.PeerId, T0)!.Envelope(), Is.EqualTo(envelope), "the first book's instance untouched");
    }

    /// <summary>Advertisements that differ in one field, or come in different envelopes, are never taken for one another.</summary>
    [Test]
    public void ByContent_DiffersInAnyField_NotEqual()
    {
        var key = Ads.Key(1);
        var ad = Ads.Make(key);
        var variants = new[]
        {
            ad with { Sequence = 2 }, ad with { IssuedAtUnixMs = ad.IssuedAtUnixMs - 1 }, ad with { ExpiresAtUnixMs = ad.ExpiresAtUnixMs + 1 },
            ad with { Cores = 5 }, ad with { AvailableCores = 3 }, ad with { MemoryBytes = 1 }, ad with { SpeedFuelPerSecond = 1 },
            ad with { PricePerMegaFuel = 11 }, ad with { RuntimeVersion = "wasmtime 50.0.2" }, ad with { Policy = ProviderPolicyFlags.Attests },
            ad with { ListenAddresses = [Potluck.Protocol.Multiformats.Multiaddr.Parse("/ip4/127.0.0.1/tcp/4002").ToBytes()] },
            ad with { ListenAddresses = [] },
        };
        var opened = Open(AdvertisementCodec.Sign(ad, key));
        Assert.That(VerifiedAdvertisement.ByContent.Equals(opened, Open(AdvertisementCodec.Sign(ad, key))), Is.True, "the same envelope opened twice");
        foreach (var variant in variants)
        {
            var other = Open(AdvertisementCodec.Sign(variant, key));
            Assert.That(VerifiedAdvertisement.ByContent.Equals(opened, other), Is.False, variant.ToString());
        }
        var otherKey = Ads.Key(2);
        Assert.That(VerifiedAdvertisement.ByContent.Equals(opened, Open(AdvertisementCodec.Sign(ad with { PeerId = otherKey.PeerId.ToBytes() }, otherKey))), Is.False);
    }

    /// <summary>The content comparer compares every key of <see cref="Advertisement"/>: one added must be added to it too.</summary>
    [Test]
    public void Advertisement_HasTheThirteenKeysTheContentComparerCompares()
    {
        var keys = typeof(Advertisement).GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Select(p => p.GetCustomAttribute<KeyAttribute>()?.IntKey).OfType<int>().Order().ToArray();
        Assert.That(keys, Is.EqualTo(Enumerable.Range(0, 13).ToArray()),
            "Advertisement's keys changed: compare the new field in VerifiedAdvertisement.SameContent, then update this test");
    }

    /// <summary>A provider's older advertisement, replaced in every book, is no longer held by the table.</summary>
    [Test]
    public void AnAdvertisementNoBookHoldsAnyMore_IsDropped()
    {
        var shared = SharedValues.Create();
        var books = Enumerable.Range(0, 3).Select(_ => new AdvertisementBook(new AdvertisementOptions(), shared: shared)).ToArray();
        var key = Ads.Key(1);
        AddToAll(books, Ads.Signed(key, 1));
        var table = shared.Table(VerifiedAdvertisement.ByContent)!;
        Assert.That(table.Count, Is.EqualTo(1));

        AddToAll(books, Ads.Signed(key, 2));
        Assert.That(table.Count, Is.EqualTo(2), "the first is swept only once collected");
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        shared.Sweep();

        Assert.That(table.Count, Is.EqualTo(1), "only sequence 2, which the books hold");
        Assert.That(books.Select(b => b.Get(key.PeerId, T0)).Distinct().Count(), Is.EqualTo(1));
        Assert.That(books[0].Get(key.PeerId, T0)!.Ad.Sequence, Is.EqualTo(2UL));
        GC.KeepAlive(books);
    }

    /// <summary>
    /// A remote floods two nodes with 3,000 distinct providers' valid advertisements; each book holds at most 16. The table
    /// never grows past its first sweep's size and, after a collection, holds only the advertisements the books hold.
    /// </summary>
    [Test]
    [Category("Adversarial")]
    public void AFloodOfDistinctAdvertisements_LeavesTheTableBoundedByWhatTheBooksHold()
    {
        var shared = SharedValues.Create();
        var options = new AdvertisementOptions { MaxProviders = 16 };
        var books = new[] { new AdvertisementBook(options, shared: shared, random: new Random(1)), new AdvertisementBook(options, shared: shared, random: new Random(2)) };
        var table = shared.Table(VerifiedAdvertisement.ByContent)!;
        var most = 0;
        for (var i = 0; i < 3_000; i++)
        {
            var envelope = Ads.Signed(Ads.Key(1_000 + i), 1);
            foreach (var book in books)
            {
                Assert.That(book.Add(envelope, T0), Is.EqualTo(AdVerdict.Accepted), "a stranger makes way for a stranger");
            }
            if (i % 200 == 199)
            {
                GC.Collect();
            }
            most = Math.Max(most, table.Count);
        }
        Assert.That(books.Select(b => b.Count), Is.All.EqualTo(16));
        Assert.That(most, Is.LessThanOrEqualTo(WeakShareTable<VerifiedAdvertisement>.MinSweepAt));

        GC.Collect();
        shared.Sweep();
        var held = books.SelectMany(b => b.Live(T0)).Distinct().Count();
        Assert.That(held, Is.InRange(16, 32));
        Assert.That(table.Count, Is.EqualTo(held), "exactly the advertisements the books hold");
        GC.KeepAlive(books);
    }

    private static void AddToAll(AdvertisementBook[] books, byte[] envelope)
    {
        foreach (var book in books)
        {
            Assert.That(book.Add((byte[])envelope.Clone(), T0), Is.EqualTo(AdVerdict.Accepted));
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static VerifiedAdvertisement Open(byte[] envelope)
    {
        Assert.That(AdvertisementCodec.TryOpen(envelope, new AdvertisementOptions(), out var opened), Is.EqualTo(AdVerdict.Accepted));
        return opened!;
    }
}
