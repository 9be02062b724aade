using FsCheck;
using FsCheck.Fluent;
using MessagePack;
using Potluck.Scheduler.Credits;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Ledger;

public class SignedEnvelopeTests
{
    [FsCheck.NUnit.Property(MaxTest = 200)]
    public Property SealEncodeDecodeOpen_RoundTripsAnyPayload() =>
        Prop.ForAll(Bytes(0, 2048), payload =>
        {
            var bytes = SignedEnvelope.Seal(Provider, SignatureDomains.Attestation, payload).Encode();
            var status = SignedEnvelope.TryDecode(bytes, Options, out var envelope);
            return status == EnvelopeStatus.Valid
                   && envelope!.Payload.SequenceEqual(payload)
                   && envelope.Open(SignatureDomains.Attestation, out var signer) == EnvelopeStatus.Valid
                   && signer!.Equals(Provider.PublicKey)
                   && envelope.Encode().SequenceEqual(bytes);
        });

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public Property TryDecode_RandomBytes_ValidOrTypedFailureNeverThrows() =>
        Prop.ForAll(Bytes(0, 600), bytes =>
        {
            var status = SignedEnvelope.TryDecode(bytes, Options, out var envelope);
            var opened = envelope?.Open(SignatureDomains.Receipt, out _);
            return Enum.IsDefined(status) && (status == EnvelopeStatus.Valid) == (envelope is not null)
                   && opened is null or EnvelopeStatus.Valid or EnvelopeStatus.BadSignature;
        });

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public Property TryDecode_MutatedEnvelope_NeverThrowsAndNeverVerifiesChangedPayload() =>
        Prop.ForAll(Gen.Choose(0, 10_000).Two().ToArbitrary(), mutation =>
        {
            var original = SignedEnvelope.Seal(Provider, SignatureDomains.Receipt, "pay me"u8.ToArray()).Encode();
            var bytes = (byte[])original.Clone();
            var index = mutation.Item1 % bytes.Length;
            bytes[index] ^= (byte)(1 + mutation.Item2 % 255);
            var status = SignedEnvelope.TryDecode(bytes, Options, out var envelope);
            if (status != EnvelopeStatus.Valid)
            {
                return true;
            }
            var opened = envelope!.Open(SignatureDomains.Receipt, out var signer);
            // A flipped bit either breaks the signature or leaves every signed byte as it was.
            return opened == EnvelopeStatus.BadSignature
                   || (envelope.Payload.SequenceEqual("pay me"u8.ToArray()) && signer!.Equals(Provider.PublicKey));
        });

    [Test]
    public void Open_TamperedPayload_BadSignature()
    {
        var envelope = SignedEnvelope.Seal(Provider, SignatureDomains.Attestation, [1, 2, 3]);
        var tampered = new SignedEnvelope { Payload = [1, 2, 4], PublicKey = envelope.PublicKey, Signature = envelope.Signature };
        Assert.That(tampered.Open(SignatureDomains.Attestation, out _), Is.EqualTo(EnvelopeStatus.BadSignature));
    }

    [Test]
    public void Open_TamperedSignature_BadSignature()
    {
        var envelope = SignedEnvelope.Seal(Provider, SignatureDomains.Attestation, [1, 2, 3]);
        var signature = (byte[])envelope.Signature.Clone();
        signature[10] ^= 0x01;
        var tampered = new SignedEnvelope { Payload = envelope.Payload, PublicKey = envelope.PublicKey, Signature = signature };
        Assert.That(tampered.Open(SignatureDomains.Attestation, out _), Is.EqualTo(EnvelopeStatus.BadSignature));
    }

    [Test]
    public void Open_SwappedSignerKey_BadSignature()
    {
        var envelope = SignedEnvelope.Seal(Provider, SignatureDomains.Attestation, [1, 2, 3]);
        var swapped = new SignedEnvelope { Payload = envelope.Payload, PublicKey = Stranger.PublicKey.ToProtobuf(), Signature = envelope.Signature };
        Assert.That(swapped.Open(SignatureDomains.Attestation, out _), Is.EqualTo(EnvelopeStatus.BadSignature));
    }

    [Test]
    public void Open_GarbageSignerKey_BadSignature()
    {
        var envelope = new SignedEnvelope { Payload = [1], PublicKey = [0xde, 0xad], Signature = new byte[64] };
        Assert.That(envelope.Open(SignatureDomains.Attestation, out _), Is.EqualTo(EnvelopeStatus.BadSignature));
    }

    [Test]
    public void Open_OtherDomain_BadSignature()
    {
        var envelope = SignedEnvelope.Seal(Provider, SignatureDomains.Attestation, [1, 2, 3]);
        Assert.Multiple(() =>
        {
            Assert.That(envelope.Open(SignatureDomains.Receipt, out _), Is.EqualTo(EnvelopeStatus.BadSignature));
            Assert.That(envelope.Open(SignatureDomains.Attestation, out _), Is.EqualTo(EnvelopeStatus.Valid));
        });
    }

    [Test]
    public void TryDecode_OverEnvelopeLimit_TooLargeBeforeDecoding()
    {
        var options = new CreditsOptions { MaxEnvelopeBytes = 100 };
        // Not even MessagePack: the limit is checked before any byte is read.
        Assert.That(SignedEnvelope.TryDecode(new byte[101], options, out var envelope), Is.EqualTo(EnvelopeStatus.TooLarge));
        Assert.That(envelope, Is.Null);
    }

    [Test]
    public void TryDecode_OverPayloadLimit_TooLarge()
    {
        var bytes = SignedEnvelope.Seal(Provider, SignatureDomains.Receipt, new byte[3000]).Encode();
        Assert.That(SignedEnvelope.TryDecode(bytes, Options, out _), Is.EqualTo(EnvelopeStatus.TooLarge));
    }

    [Test]
    public void TryDecode_TrailingBytes_Malformed()
    {
        var bytes = SignedEnvelope.Seal(Provider, SignatureDomains.Receipt, [1]).Encode();
        Assert.That(SignedEnvelope.TryDecode(bytes.Append((byte)0xc0).ToArray(), Options, out _), Is.EqualTo(EnvelopeStatus.Malformed));
    }

    [Test]
    public void TryDecode_NilFields_Malformed()
    {
        var bytes = MessagePackSerializer.Serialize(new object?[] { null, null, null });
        Assert.That(SignedEnvelope.TryDecode(bytes, Options, out _), Is.EqualTo(EnvelopeStatus.Malformed));
    }

    [Test]
    public void TryDecode_DeeplyNestedArrays_MalformedNotStackOverflow()
    {
        var bytes = Enumerable.Repeat((byte)0x91, 4000).Append((byte)0xc0).ToArray();
        Assert.That(SignedEnvelope.TryDecode(bytes, Options, out _), Is.EqualTo(EnvelopeStatus.Malformed));
    }

    [Test]
    public void TryDecode_HugeDeclaredBinLength_MalformedWithoutAllocating()
    {
        // fixarray(3), bin32 declaring 4 GiB - 1 with three bytes present.
        byte[] bytes = [0x93, 0xc6, 0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        Assert.That(SignedEnvelope.TryDecode(bytes, Options, out _), Is.EqualTo(EnvelopeStatus.Malformed));
    }

    [Test]
    public void SignatureDomains_ArePrefixFree()
    {
        string[] domains = [SignatureDomains.Attestation, SignatureDomains.Receipt];
        foreach (var a in domains)
        {
            Assert.That(a.IndexOf(':', StringComparison.Ordinal), Is.EqualTo(a.Length - 1), a);
            Assert.That(a.All(char.IsAscii), a);
            foreach (var b in domains.Where(b => b != a))
            {
                Assert.That(b.StartsWith(a, StringComparison.Ordinal), Is.False, $"{a} prefixes {b}");
            }
        }
    }
}
