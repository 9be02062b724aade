using FsCheck;
using FsCheck.Fluent;
using Potluck.Scheduler.Credits;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Ledger;

public class ReceiptTests
{
    private static readonly byte[] LeaseA = Lease(1);

    [TestCase(0UL, 1000UL, 0L)]
    [TestCase(1UL, 1UL, 1L)]
    [TestCase(1_000_000UL, 1UL, 1L)]
    [TestCase(1_000_001UL, 1UL, 2L)]
    [TestCase(2_500_000UL, 1000UL, 2500L)]
    [TestCase(999_999UL, 1UL, 1L)]
    [TestCase(ulong.MaxValue, 0UL, 0L)]
    public void ComputeAmount_RoundsUpToWholeMicroCredits(ulong fuel, ulong price, long amount)
    {
        Assert.That(Receipt.TryComputeAmount(fuel, price, out var computed), Is.True);
        Assert.That(computed, Is.EqualTo(amount));
    }

    [Test]
    public void ComputeAmount_BeyondInt64_Fails() =>
        Assert.That(Receipt.TryComputeAmount(ulong.MaxValue, ulong.MaxValue, out _), Is.False);

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public Property ComputeAmount_IsTheSmallestAmountCoveringFuelTimesPrice() =>
        Prop.ForAll(AnyULong().Two().ToArbitrary(), t =>
        {
            var (fuel, price) = t;
            var exact = (System.Numerics.BigInteger)fuel * price;
            var ok = Receipt.TryComputeAmount(fuel, price, out var amount);
            var expected = (exact + 999_999) / 1_000_000;
            return ok ? expected == amount : expected > long.MaxValue;
        });

    [Test]
    public void ComputeId_DependsOnLeaseAndBothParties()
    {
        var id = Receipt.ComputeId(LeaseA, Provider.PeerId, Requester.PeerId);
        Assert.Multiple(() =>
        {
            Assert.That(id, Has.Length.EqualTo(32));
            Assert.That(Receipt.ComputeId(LeaseA, Provider.PeerId, Requester.PeerId), Is.EqualTo(id));
            Assert.That(Receipt.ComputeId(Lease(2), Provider.PeerId, Requester.PeerId), Is.Not.EqualTo(id));
            Assert.That(Receipt.ComputeId(LeaseA, Requester.PeerId, Provider.PeerId), Is.Not.EqualTo(id));
            Assert.That(Receipt.ComputeId(LeaseA, Provider.PeerId, Stranger.PeerId), Is.Not.EqualTo(id));
        });
    }

    [FsCheck.NUnit.Property(MaxTest = 100)]
    public Property CreateDecode_RoundTripsEveryField() =>
        Prop.ForAll(Gen.Choose(1, 64).SelectMany(n => Gen.ArrayOf(Gen.Choose(0, 255).Select(b => (byte)b), n))
            .Zip(AnyULong().Select(f => f >> 20)).Zip(Gen.Choose(0, 1_000_000)).ToArbitrary(), t =>
        {
            var ((lease, fuel), price) = t;
            var sent = MakeReceipt(lease, Requester, Provider, fuel, (ulong)price);
            var decoded = SignedReceipt.Decode(sent.EnvelopeBytes, Options);
            var a = sent.Receipt;
            var b = decoded.Value!.Receipt;
            return decoded.Status == VerifyStatus.Valid
                   && b.ReceiptId.SequenceEqual(a.ReceiptId) && b.LeaseId.SequenceEqual(lease) && b.Requester.SequenceEqual(a.Requester)
                   && b.Provider.SequenceEqual(a.Provider) && b.FuelUsed == fuel && b.PricePerMillionFuel == (ulong)price
                   && b.Amount == a.Amount && b.AttestationHash.SequenceEqual(a.AttestationHash) && b.TimestampUnixMs == a.TimestampUnixMs
                   && decoded.Value.Requester == Requester.PeerId && decoded.Value.Provider == Provider.PeerId;
        });

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public Property Decode_RandomBytes_TypedFailureNeverThrows() =>
        Prop.ForAll(Bytes(0, 400), bytes =>
            SignedReceipt.Decode(bytes, Options).Status is VerifyStatus.Malformed or VerifyStatus.TooLarge or VerifyStatus.BadSignature);

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public Property Decode_RandomPayloadInValidEnvelope_Malformed() =>
        Prop.ForAll(Bytes(0, 300), payload =>
            SignedReceipt.Decode(SignedEnvelope.Seal(Requester, SignatureDomains.Receipt, payload).Encode(), Options).Status == VerifyStatus.Malformed);

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public Property Decode_AnySingleByteFlip_Rejected() =>
        Prop.ForAll(Gen.Choose(0, 100_000).Two().ToArbitrary(), mutation =>
        {
            var bytes = (byte[])MakeReceipt(LeaseA, Requester, Provider).EnvelopeBytes.Clone();
            bytes[mutation.Item1 % bytes.Length] ^= (byte)(1 + mutation.Item2 % 255);
            return !SignedReceipt.Decode(bytes, Options).IsValid;
        });

    [Test]
    public void Decode_InflatedAmountSignedByRequester_AmountMismatch()
    {
        var honest = MakeReceipt(LeaseA, Requester, Provider).Receipt;
        var inflated = Copy(honest, amount: honest.Amount + 1);
        Assert.That(SignedReceipt.Decode(Seal(inflated, Requester, SignatureDomains.Receipt), Options).Status, Is.EqualTo(VerifyStatus.AmountMismatch));
    }

    [Test]
    public void Decode_ForgedReceiptId_ReceiptIdMismatch()
    {
        var honest = MakeReceipt(LeaseA, Requester, Provider).Receipt;
        var forged = Copy(honest, id: new byte[32]);
        Assert.That(SignedReceipt.Decode(Seal(forged, Requester, SignatureDomains.Receipt), Options).Status, Is.EqualTo(VerifyStatus.ReceiptIdMismatch));
    }

    [Test]
    public void Decode_SignedByProviderNotRequester_WrongSigner()
    {
        var honest = MakeReceipt(LeaseA, Requester, Provider).Receipt;
        Assert.That(SignedReceipt.Decode(Seal(honest, Provider, SignatureDomains.Receipt), Options).Status, Is.EqualTo(VerifyStatus.WrongSigner));
    }

    [Test]
    public void Decode_ReceiptPayloadSignedAsAttestation_BadSignature()
    {
        var honest = MakeReceipt(LeaseA, Requester, Provider).Receipt;
        Assert.That(SignedReceipt.Decode(Seal(honest, Requester, SignatureDomains.Attestation), Options).Status, Is.EqualTo(VerifyStatus.BadSignature));
    }

    [Test]
    public void Decode_AttestationEnvelope_Rejected()
    {
        var attestation = SignedAttestation.Create(MakeAttestation(LeaseA, Requester, Provider), Provider);
        Assert.That(SignedReceipt.Decode(attestation.EnvelopeBytes, Options).IsValid, Is.False);
    }

    [Test]
    public void Verify_MatchesAttestationAndPrice_Valid()
    {
        var attestation = SignedAttestation.Create(MakeAttestation(LeaseA, Requester, Provider), Provider);
        var receipt = SignedReceipt.Create(Receipt.For(attestation, 1000, Epoch), Requester);
        var result = SignedReceipt.Verify(receipt.EnvelopeBytes, ReceiptExpectation.For(attestation, 1000), Options);
        Assert.That(result.Status, Is.EqualTo(VerifyStatus.Valid));
        Assert.That(result.Value!.Receipt.Amount, Is.EqualTo(2500));
    }

    [Test]
    public void Verify_LowerPriceThanAgreed_PriceMismatch()
    {
        var attestation = SignedAttestation.Create(MakeAttestation(LeaseA, Requester, Provider), Provider);
        var receipt = SignedReceipt.Create(Receipt.For(attestation, 999, Epoch), Requester);
        Assert.That(SignedReceipt.Verify(receipt.EnvelopeBytes, ReceiptExpectation.For(attestation, 1000), Options).Status,
            Is.EqualTo(VerifyStatus.PriceMismatch));
    }

    [Test]
    public void Verify_LessFuelThanAttested_FuelMismatch()
    {
        var attestation = SignedAttestation.Create(MakeAttestation(LeaseA, Requester, Provider), Provider);
        var receipt = MakeReceipt(LeaseA, Requester, Provider, fuel: 1);
        Assert.That(SignedReceipt.Verify(receipt.EnvelopeBytes, ReceiptExpectation.For(attestation, 1000), Options).Status,
            Is.EqualTo(VerifyStatus.FuelMismatch));
    }

    [Test]
    public void Verify_OtherAttestation_AttestationHashMismatch()
    {
        var attestation = SignedAttestation.Create(MakeAttestation(LeaseA, Requester, Provider), Provider);
        var other = SignedAttestation.Create(MakeAttestation(LeaseA, Requester, Provider, output: [9]), Provider);
        var receipt = SignedReceipt.Create(Receipt.For(other, 1000, Epoch), Requester);
        Assert.That(SignedReceipt.Verify(receipt.EnvelopeBytes, ReceiptExpectation.For(attestation, 1000), Options).Status,
            Is.EqualTo(VerifyStatus.AttestationHashMismatch));
    }

    [Test]
    public void Verify_OtherLease_LeaseMismatch()
    {
        var attestation = SignedAttestation.Create(MakeAttestation(LeaseA, Requester, Provider), Provider);
        var receipt = MakeReceipt(Lease(2), Requester, Provider);
        Assert.That(SignedReceipt.Verify(receipt.EnvelopeBytes, ReceiptExpectation.For(attestation, 1000), Options).Status,
            Is.EqualTo(VerifyStatus.LeaseMismatch));
    }

    private static IEnumerable<TestCaseData> CheckCases()
    {
        var attestation = SignedAttestation.Create(MakeAttestation(LeaseA, Requester, Provider), Provider);
        var other = SignedAttestation.Create(MakeAttestation(LeaseA, Requester, Provider, output: [9]), Provider);
        yield return new TestCaseData(SignedReceipt.Create(Receipt.For(attestation, 1000, Epoch), Requester), attestation).SetName("Check_Valid");
        yield return new TestCaseData(SignedReceipt.Create(Receipt.For(attestation, 999, Epoch), Requester), attestation).SetName("Check_Price");
        yield return new TestCaseData(MakeReceipt(LeaseA, Requester, Provider, fuel: 1), attestation).SetName("Check_Fuel");
        yield return new TestCaseData(SignedReceipt.Create(Receipt.For(other, 1000, Epoch), Requester), attestation).SetName("Check_Attestation");
        yield return new TestCaseData(MakeReceipt(Lease(2), Requester, Provider), attestation).SetName("Check_Lease");
        yield return new TestCaseData(MakeReceipt(LeaseA, Requester, Stranger), attestation).SetName("Check_Parties");
    }

    /// <summary>The provider decodes a receipt once and checks it against the lease: the same verdict as <see cref="SignedReceipt.Verify"/>.</summary>
    [TestCaseSource(nameof(CheckCases))]
    public void Check_OnDecodedReceipt_SameVerdictAsVerify(SignedReceipt receipt, SignedAttestation attestation)
    {
        var expectation = ReceiptExpectation.For(attestation, 1000);
        var decoded = SignedReceipt.Decode(receipt.EnvelopeBytes, Options);
        Assert.That(decoded.IsValid);
        Assert.That(decoded.Value!.Check(expectation), Is.EqualTo(SignedReceipt.Verify(receipt.EnvelopeBytes, expectation, Options).Status));
    }

    [Test]
    public void Create_ByOtherThanNamedRequester_Throws() =>
        Assert.Throws<ArgumentException>(() => SignedReceipt.Create(MakeReceipt(LeaseA, Requester, Provider).Receipt, Stranger));

    [Test]
    public void Create_WrongAmount_Throws() =>
        Assert.Throws<ArgumentException>(() => SignedReceipt.Create(Copy(MakeReceipt(LeaseA, Requester, Provider).Receipt, amount: 1), Requester));

    [Test]
    public void Create_SameFieldsTwice_SameBytes()
    {
        // Deterministic MessagePack and Ed25519: a receipt re-signed after a crash is byte-identical.
        Assert.That(MakeReceipt(LeaseA, Requester, Provider).EnvelopeBytes, Is.EqualTo(MakeReceipt(LeaseA, Requester, Provider).EnvelopeBytes));
    }

    private static Receipt Copy(Receipt r, long? amount = null, byte[]? id = null) => new()
    {
        ReceiptId = id ?? r.ReceiptId,
        LeaseId = r.LeaseId,
        Requester = r.Requester,
        Provider = r.Provider,
        FuelUsed = r.FuelUsed,
        PricePerMillionFuel = r.PricePerMillionFuel,
        Amount = amount ?? r.Amount,
        AttestationHash = r.AttestationHash,
        TimestampUnixMs = r.TimestampUnixMs,
    };
}
