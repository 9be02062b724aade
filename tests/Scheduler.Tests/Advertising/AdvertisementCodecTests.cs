using MessagePack;
using Potluck.Scheduler.Advertising;

namespace Potluck.Scheduler.Tests.Advertising;

public class AdvertisementCodecTests
{
    private static readonly AdvertisementOptions Options = new();

    [Test]
    public void SignThenOpen_RoundTripsEveryField()
    {
        var key = Ads.Key(1);
        var ad = Ads.Make(key, sequence: 7, price: 42);
        var envelope = AdvertisementCodec.Sign(ad, key);

        Assert.That(AdvertisementCodec.TryOpen(envelope, Options, out var opened), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(opened!.Provider, Is.EqualTo(key.PeerId));
        Assert.That(opened.Key, Is.EqualTo(key.PublicKey));
        Assert.That(opened.Ad.Sequence, Is.EqualTo(7UL));
        Assert.That(opened.Ad.PricePerMegaFuel, Is.EqualTo(42));
        Assert.That(opened.Ad.RuntimeVersion, Is.EqualTo("wasmtime 50.0.1"));
        Assert.That(opened.Ad.Runtime, Is.EqualTo(AdvertisementProtocol.WasiPreview1));
        Assert.That(opened.Addresses.Single().ToString(), Is.EqualTo("/ip4/127.0.0.1/tcp/4001"));
    }

    [Test]
    public void Open_KeepsNoKeyBytesWhereTheProviderIdHoldsThem_AndTheKeyStillReadsBack_RsaToo()
    {
        var ed = Ads.Key(31);
        Assert.That(AdvertisementCodec.TryOpen(Ads.Signed(ed), Options, out var opened), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(opened!.Key, Is.EqualTo(ed.PublicKey), "identity-hashed id: the key from the id's own bytes");
        var keyField = typeof(VerifiedAdvertisement).GetField("_key", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!;
        Assert.That(keyField.GetValue(opened), Is.Null, "no second copy of the key's bytes");

        var rsa = Potluck.Protocol.Identity.PrivateKey.Generate(Potluck.Protocol.Identity.KeyType.Rsa); // SHA-256-hashed id
        Assert.That(AdvertisementCodec.TryOpen(AdvertisementCodec.Sign(Ads.Make(rsa), rsa), Options, out var openedRsa), Is.EqualTo(AdVerdict.Accepted));
        Assert.That(openedRsa!.Key, Is.EqualTo(rsa.PublicKey), "hashed id: the key kept as its bytes");
        Assert.That(keyField.GetValue(openedRsa), Is.Not.Null);
    }

    [Test]
    [Category("Adversarial")]
    public void Open_AdsShareTheirRuntimeNames_AndAFloodOfMadeUpNamesStaysAtTheCap_EachAdReadingItsOwn()
    {
        AdvertisementCodec.TryOpen(Ads.Signed(Ads.Key(41)), Options, out var a);
        AdvertisementCodec.TryOpen(Ads.Signed(Ads.Key(42)), Options, out var b);
        Assert.That(b!.Ad.RuntimeVersion, Is.SameAs(a!.Ad.RuntimeVersion), "one string for both books' entries");
        Assert.That(b.Ad.Runtime, Is.SameAs(a.Ad.Runtime));
        Assert.That(b.Ad.RuntimeVersion, Is.EqualTo("wasmtime 50.0.1"));

        var flood = Ads.Key(43);
        for (var i = 0; i < 200; i++)
        {
            var ad = Ads.Make(flood, sequence: (ulong)i + 1) with { RuntimeVersion = $"made-up {i}" };
            Assert.That(AdvertisementCodec.TryOpen(AdvertisementCodec.Sign(ad, flood), Options, out var opened), Is.EqualTo(AdVerdict.Accepted));
            Assert.That(opened!.Ad.RuntimeVersion, Is.EqualTo($"made-up {i}"));
        }
        Assert.That(AdvertisementCodec.SharedRuntimeNames, Is.EqualTo(64), "shared strings stop at the cap");
        AdvertisementCodec.TryOpen(Ads.Signed(Ads.Key(44)), Options, out var c);
        Assert.That(c!.Ad.RuntimeVersion, Is.SameAs(a.Ad.RuntimeVersion), "a name shared before the flood still is");
    }

    [Test]
    public void Open_AnyFlippedBit_IsRejectedNeverAccepted()
    {
        var key = Ads.Key(2);
        var envelope = Ads.Signed(key);
        for (var i = 0; i < envelope.Length; i++)
        {
            var tampered = (byte[])envelope.Clone();
            tampered[i] ^= 0x01;
            var verdict = AdvertisementCodec.TryOpen(tampered, Options, out _);
            Assert.That(verdict, Is.AnyOf(AdVerdict.BadSignature, AdVerdict.Malformed), $"byte {i}");
        }
    }

    [Test]
    public void Open_PayloadSignedBySomeoneElse_IsPeerMismatch()
    {
        var provider = Ads.Key(3);
        var impostor = Ads.Key(4);
        var envelope = AdvertisementCodec.Sign(Ads.Make(provider), impostor);
        Assert.That(AdvertisementCodec.TryOpen(envelope, Options, out _), Is.EqualTo(AdVerdict.PeerMismatch));
    }

    [Test]
    public void Open_SignatureWithoutDomainPrefix_IsBadSignature()
    {
        var key = Ads.Key(5);
        var payload = MessagePackSerializer.Serialize(Ads.Make(key));
        var envelope = AdEnvelope.Encode(key.PublicKey.ToProtobuf(), payload, key.Sign(payload));
        Assert.That(AdvertisementCodec.TryOpen(envelope, Options, out _), Is.EqualTo(AdVerdict.BadSignature));
    }

    [Test]
    public void Open_OverSizeLimit_IsTooLargeBeforeAnyParsing()
    {
        var garbage = new byte[Options.MaxEnvelopeBytes + 1];
        Assert.That(AdvertisementCodec.TryOpen(garbage, Options, out _), Is.EqualTo(AdVerdict.TooLarge));
    }

    [Test]
    public void Open_FieldsOutOfBounds_AreMalformed()
    {
        var key = Ads.Key(6);
        var bad = new[]
        {
            Ads.Make(key) with { Cores = 0 },
            Ads.Make(key) with { AvailableCores = 5, Cores = 4 },
            Ads.Make(key) with { PricePerMegaFuel = -1 },
            Ads.Make(key) with { ListenAddresses = [[0xFF, 0xFF]] },
            Ads.Make(key) with { ListenAddresses = Enumerable.Repeat(Ads.Make(key).ListenAddresses[0], 17).ToArray() },
            Ads.Make(key) with { RuntimeVersion = new string('x', 65) },
            Ads.Make(key) with { ExpiresAtUnixMs = Ads.Make(key).IssuedAtUnixMs },
        };
        foreach (var ad in bad)
        {
            Assert.That(AdvertisementCodec.TryOpen(AdvertisementCodec.Sign(ad, key), Options, out _), Is.EqualTo(AdVerdict.Malformed), ad.ToString());
        }
    }

    [FsCheck.NUnit.Property(MaxTest = 200)]
    public bool SignThenOpen_ArbitraryNumbers_RoundTrip(ulong sequence, int cores, long memory, long price, uint policy)
    {
        var key = Ads.Key(7);
        cores = 1 + Math.Abs(cores % 1024);
        var ad = Ads.Make(key, sequence) with
        {
            Cores = cores,
            AvailableCores = cores / 2,
            MemoryBytes = Math.Abs(memory % long.MaxValue),
            PricePerMegaFuel = Math.Abs(price % long.MaxValue),
            Policy = (ProviderPolicyFlags)policy,
        };
        var verdict = AdvertisementCodec.TryOpen(AdvertisementCodec.Sign(ad, key), Options, out var opened);
        return verdict == AdVerdict.Accepted && opened!.Ad.Sequence == sequence && opened.Ad.Cores == cores
            && opened.Ad.MemoryBytes == ad.MemoryBytes && opened.Ad.PricePerMegaFuel == ad.PricePerMegaFuel && opened.Ad.Policy == ad.Policy;
    }

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public bool Open_RandomBytes_NeverAcceptedNeverThrows(byte[] bytes)
    {
        var verdict = AdvertisementCodec.TryOpen(bytes, Options, out var opened);
        return verdict != AdVerdict.Accepted && opened is null;
    }

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public bool Open_MutatedEnvelope_NeverThrowsAndOnlyAcceptsTheOriginal(int position, byte value, int cut)
    {
        var envelope = Ads.Signed(Ads.Key(8));
        var mutated = (byte[])envelope.Clone();
        mutated[Math.Abs(position % mutated.Length)] = value;
        mutated = mutated[..(mutated.Length - Math.Abs(cut % 4))];
        var verdict = AdvertisementCodec.TryOpen(mutated, Options, out _);
        return verdict != AdVerdict.Accepted || mutated.AsSpan().SequenceEqual(envelope);
    }

    /// <summary>
    /// What the requester derives from the advertisement it leases from, once per lease: the provider's key (the request
    /// names it), the key's peer id (the lease's provider) and a check of the provider's signature (the offer, the
    /// attestation). After the first lease, the next ones decode no key, encode no peer id and import no library key: 100
    /// leases' worth allocate nothing. Stop 41 (on main each lease decoded the key afresh: ~0.5 KiB per lease here).
    /// </summary>
    [Test]
    public void Key_AskedPerLease_IsOneKeyObject_SoTheLeasePathDecodesNothingAgain()
    {
        var provider = Ads.Key(41);
        Assert.That(AdvertisementCodec.TryOpen(Ads.Signed(provider), Options, out var opened), Is.EqualTo(AdVerdict.Accepted));
        var message = "an offer's signed terms"u8.ToArray();
        var signature = provider.Sign(message);
        var first = opened!.Key;
        Assert.That(first.Verify(message, signature), Is.True);
        Assert.That(first.ToPeerId(), Is.EqualTo(provider.PeerId));

        var before = GC.GetAllocatedBytesForCurrentThread();
        var verified = 0;
        for (var lease = 0; lease < 100; lease++)
        {
            var key = opened.Key;
            verified += key.Verify(message, signature) && key.ToPeerId() == provider.PeerId ? 1 : 0;
        }
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.That(verified, Is.EqualTo(100), "every check still made, and still passes");
        Assert.That(opened.Key, Is.SameAs(opened.Key), "one key object, not a decode per call");
        Assert.That(allocated, Is.LessThan(1_000), "bytes allocated by 100 leases' key, peer id and check");
        Assert.That(opened.Key.Verify(message, provider.Sign("other terms"u8)), Is.False, "a signature over other bytes still fails");
    }
}
