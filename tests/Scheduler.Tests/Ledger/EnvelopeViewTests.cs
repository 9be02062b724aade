using FsCheck;
using FsCheck.Fluent;
using MessagePack;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Ledger;

/// <summary>
/// Envelopes read in place (<see cref="EnvelopeView"/>) accept and refuse exactly what MessagePack's formatter did, with the
/// same typed statuses; every decoder that reads them in place still refuses a truncated, oversized or tampered envelope
/// with its reason, and keeps nothing that aliases the caller's buffer.
/// </summary>
public class EnvelopeViewTests
{
    /// <summary>The decode before envelopes were read in place: MessagePack's formatter, then the same checks.</summary>
    private static EnvelopeStatus FormatterDecode(byte[] bytes, CreditsOptions options, out SignedEnvelope? envelope)
    {
        envelope = null;
        if (bytes.Length > options.MaxEnvelopeBytes)
        {
            return EnvelopeStatus.TooLarge;
        }
        SignedEnvelope? decoded;
        try
        {
            decoded = MessagePackSerializer.Deserialize<SignedEnvelope>(bytes, SignedEnvelope.Untrusted, out var read);
            if (read != bytes.Length)
            {
                return EnvelopeStatus.Malformed;
            }
        }
        catch (MessagePackSerializationException)
        {
            return EnvelopeStatus.Malformed;
        }
        if (decoded?.Payload is null || decoded.PublicKey is null || decoded.Signature is null)
        {
            return EnvelopeStatus.Malformed;
        }
        if (decoded.Payload.Length > options.MaxPayloadBytes)
        {
            return EnvelopeStatus.TooLarge;
        }
        envelope = decoded;
        return EnvelopeStatus.Valid;
    }

    private static bool SameAsFormatter(byte[] bytes)
    {
        var options = new CreditsOptions { MaxEnvelopeBytes = 400, MaxPayloadBytes = 200 };
        var expected = FormatterDecode(bytes, options, out var reference);
        var status = EnvelopeView.TryRead(bytes, options, out var view);
        return status == expected
            && (status != EnvelopeStatus.Valid
                || (view.Payload.Span.SequenceEqual(reference!.Payload) && view.PublicKey.Span.SequenceEqual(reference.PublicKey)
                    && view.Signature.Span.SequenceEqual(reference.Signature)));
    }

    private static readonly byte[] Sealed = SignedEnvelope.Seal(Provider, SignatureDomains.Receipt, "pay me"u8.ToArray()).Encode();

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public Property TryRead_RandomBytes_SameStatusAndFieldsAsTheFormatter() => Prop.ForAll(Bytes(0, 500), SameAsFormatter);

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public Property TryRead_MutatedOrTruncatedEnvelope_SameStatusAndFieldsAsTheFormatter() =>
        Prop.ForAll(Gen.Choose(0, 10_000).Three().ToArbitrary(), m =>
        {
            var bytes = (byte[])Sealed.Clone();
            bytes[m.Item1 % bytes.Length] ^= (byte)(1 + m.Item2 % 255);
            return SameAsFormatter(bytes) && SameAsFormatter(Sealed[..(m.Item3 % Sealed.Length)]);
        });

    [Test]
    public void TryRead_ShapesTheFormatterTreatsApart_SameStatus()
    {
        byte[][] shapes =
        [
            MessagePackSerializer.Serialize(new object?[] { new byte[] { 1 }, new byte[] { 2 }, new byte[] { 3 }, 7 }), // a fourth field, skipped
            MessagePackSerializer.Serialize(new object?[] { new byte[] { 1 }, new byte[] { 2 } }), // a field missing
            MessagePackSerializer.Serialize(new object?[] { new byte[] { 1 }, null, new byte[] { 3 } }), // nil
            MessagePackSerializer.Serialize(new object?[] { "text", new byte[] { 2 }, new byte[] { 3 } }), // a string for bytes
            MessagePackSerializer.Serialize(new object?[] { 1, new byte[] { 2 }, new byte[] { 3 } }), // an integer for bytes
            MessagePackSerializer.Serialize((object?)null),
            MessagePackSerializer.Serialize(new Dictionary<int, byte[]> { [0] = [1], [1] = [2], [2] = [3] }), // a map
            MessagePackSerializer.Serialize(new object?[] { new byte[300], new byte[] { 2 }, new byte[] { 3 } }), // payload over 200
            [.. Sealed, 0xc0], // trailing bytes
            [],
        ];
        Assert.Multiple(() =>
        {
            foreach (var bytes in shapes)
            {
                Assert.That(SameAsFormatter(bytes), Is.True, Convert.ToHexString(bytes));
            }
        });
        Assert.That(EnvelopeView.TryRead(shapes[0], Options, out _), Is.EqualTo(EnvelopeStatus.Valid), "a fourth field is skipped, as before");
    }

    [Test]
    public void TryRead_FieldsAreSlicesOfTheInput_NotCopies()
    {
        Assert.That(EnvelopeView.TryRead(Sealed, Options, out var view), Is.EqualTo(EnvelopeStatus.Valid));
        Assert.That(System.Runtime.InteropServices.MemoryMarshal.TryGetArray(view.Payload, out var segment) && segment.Array == Sealed, Is.True);
        Assert.That(view.Open(SignatureDomains.Receipt, out var signer), Is.EqualTo(EnvelopeStatus.Valid));
        Assert.That(signer, Is.EqualTo(Provider.PublicKey));
        Assert.That(view.Open(SignatureDomains.Attestation, out _), Is.EqualTo(EnvelopeStatus.BadSignature));
    }

    private static byte[] Truncated(byte[] bytes) => bytes[..^1];

    private static byte[] Tampered(byte[] bytes)
    {
        var copy = (byte[])bytes.Clone();
        copy[^1] ^= 1; // the signature's last byte
        return copy;
    }

    [Test]
    public void Receipt_TruncatedOversizedTampered_RefusedWithItsReason_AndKeepsItsOwnBytes()
    {
        var receipt = MakeReceipt(Lease(1), Requester, Provider);
        var bytes = (byte[])receipt.EnvelopeBytes.Clone();
        Assert.That(SignedReceipt.Decode(Truncated(bytes), Options).Status, Is.EqualTo(VerifyStatus.Malformed));
        Assert.That(SignedReceipt.Decode(bytes, new CreditsOptions { MaxEnvelopeBytes = bytes.Length - 1 }).Status, Is.EqualTo(VerifyStatus.TooLarge));
        Assert.That(SignedReceipt.Decode(bytes, new CreditsOptions { MaxPayloadBytes = 8 }).Status, Is.EqualTo(VerifyStatus.TooLarge));
        Assert.That(SignedReceipt.Decode(Tampered(bytes), Options).Status, Is.EqualTo(VerifyStatus.BadSignature));
        var decoded = SignedReceipt.Decode(bytes, Options);
        Assert.That(decoded.IsValid);
        Array.Clear(bytes); // the caller's buffer reused: what was decoded keeps its own copy
        Assert.That(decoded.Value!.EnvelopeBytes, Is.EqualTo(receipt.EnvelopeBytes));
        Assert.That(decoded.Value.Receipt.ReceiptId, Is.EqualTo(receipt.Receipt.ReceiptId));
    }

    [Test]
    public void Attestation_TruncatedOversizedTampered_RefusedWithItsReason_AndKeepsItsOwnBytes()
    {
        var signed = SignedAttestation.Create(MakeAttestation(Lease(1), Requester, Provider), Provider);
        var bytes = (byte[])signed.EnvelopeBytes.Clone();
        Assert.That(SignedAttestation.Decode(Truncated(bytes), Options).Status, Is.EqualTo(VerifyStatus.Malformed));
        Assert.That(SignedAttestation.Decode(bytes, new CreditsOptions { MaxEnvelopeBytes = bytes.Length - 1 }).Status, Is.EqualTo(VerifyStatus.TooLarge));
        Assert.That(SignedAttestation.Decode(Tampered(bytes), Options).Status, Is.EqualTo(VerifyStatus.BadSignature));
        var decoded = SignedAttestation.Decode(bytes, Options);
        Assert.That(decoded.IsValid);
        Array.Clear(bytes);
        Assert.That(decoded.Value!.Hash, Is.EqualTo(signed.Hash));
        Assert.That(decoded.Value.Envelope.Payload, Is.EqualTo(signed.Envelope.Payload), "the envelope's fields, decoded from its own bytes");
    }

    [Test]
    public void DebitNote_TruncatedOversizedTampered_RefusedWithItsReason()
    {
        var note = SignedDebitNote.Create(new DebitNote
        {
            LeaseId = Lease(1)[..8], Requester = Requester.PeerId.ToBytes(), Provider = Provider.PeerId.ToBytes(), SliceIndex = 0,
            CumulativeFuel = 1 << 20, PricePerMillionFuel = 1000, CumulativeAmount = Receipt.TryComputeAmount(1 << 20, 1000, out var a) ? a : 0,
            PaidBefore = 0, TimestampUnixMs = Epoch.ToUnixTimeMilliseconds(),
        }, Provider);
        var bytes = note.EnvelopeBytes;
        Assert.That(SignedDebitNote.Decode(bytes, Options).Status, Is.EqualTo(VerifyStatus.Valid));
        Assert.That(SignedDebitNote.Decode(Truncated(bytes), Options).Status, Is.EqualTo(VerifyStatus.Malformed));
        Assert.That(SignedDebitNote.Decode(bytes, new CreditsOptions { MaxEnvelopeBytes = bytes.Length - 1 }).Status, Is.EqualTo(VerifyStatus.TooLarge));
        Assert.That(SignedDebitNote.Decode(Tampered(bytes), Options).Status, Is.EqualTo(VerifyStatus.BadSignature));
    }

    [Test]
    public void Block_TruncatedOversizedTampered_RefusedWithItsReason_BothDecoders()
    {
        var proposal = Potluck.Scheduler.Tests.Accounting.ChainBlockTests.Proposal(MakeReceipt(Lease(1), Requester, Provider), Requester, 1, SignedBlock.Genesis);
        var bytes = (byte[])proposal.EnvelopeBytes.Clone();
        var chain = new ChainOptions();
        Assert.That(SignedBlock.Decode(Truncated(bytes), chain, out _), Is.EqualTo(BlockStatus.Malformed));
        Assert.That(SignedBlock.Decode(bytes, new ChainOptions { MaxBlockBytes = bytes.Length - 1 }, out _), Is.EqualTo(BlockStatus.TooLarge));
        Assert.That(SignedBlock.Decode(Tampered(bytes), chain, out _), Is.EqualTo(BlockStatus.BadSignature));
        // The decoder of blocks checked before: shape and signer still checked, the signature not again.
        Assert.That(SignedBlock.DecodeChecked(Truncated(bytes)), Is.Null);
        var stolen = SignedEnvelope.Seal(Stranger, SignedBlock.Domain, proposal.Payload).Encode();
        Assert.That(SignedBlock.DecodeChecked(stolen), Is.Null, "a key other than the author's");
        Assert.That(SignedBlock.Decode(bytes, chain, out var decoded), Is.EqualTo(BlockStatus.Valid));
        var unchecked_ = SignedBlock.DecodeChecked(bytes);
        Array.Clear(bytes);
        Assert.That(decoded!.Payload, Is.EqualTo(proposal.Payload), "the payload is the block's own copy");
        Assert.That(decoded.EnvelopeBytes, Is.EqualTo(proposal.EnvelopeBytes));
        Assert.That(unchecked_!.Payload, Is.EqualTo(proposal.Payload));
    }
}
