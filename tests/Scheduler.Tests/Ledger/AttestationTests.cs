using FsCheck;
using FsCheck.Fluent;
using MessagePack;
using Potluck.Scheduler.Credits;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Ledger;

public class AttestationTests
{
    private static readonly byte[] LeaseA = Lease(1);

    [FsCheck.NUnit.Property(MaxTest = 100)]
    public Property CreateDecode_RoundTripsEveryField() =>
        Prop.ForAll(Attestations().ToArbitrary(), generated =>
        {
            var (a, provider) = generated;
            var signed = SignedAttestation.Create(a, provider);
            var decoded = SignedAttestation.Decode(signed.EnvelopeBytes, Options);
            var b = decoded.Value!.Attestation;
            return decoded.Status == VerifyStatus.Valid
                   && b.LeaseId.SequenceEqual(a.LeaseId) && b.Requester.SequenceEqual(a.Requester) && b.Provider.SequenceEqual(a.Provider)
                   && b.ModuleHash.SequenceEqual(a.ModuleHash) && b.InputHash.SequenceEqual(a.InputHash) && b.OutputHash.SequenceEqual(a.OutputHash)
                   && b.OutputSize == a.OutputSize && b.FuelUsed == a.FuelUsed && b.Outcome == a.Outcome && b.ExitCode == a.ExitCode
                   && b.TimestampUnixMs == a.TimestampUnixMs
                   && decoded.Value.Hash.SequenceEqual(signed.Hash)
                   && decoded.Value.Signer.Equals(provider.PublicKey);
        });

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public Property Decode_RandomBytes_TypedFailureNeverThrows() =>
        Prop.ForAll(Bytes(0, 400), bytes =>
        {
            var result = SignedAttestation.Decode(bytes, Options);
            return result.Status is VerifyStatus.Malformed or VerifyStatus.TooLarge or VerifyStatus.BadSignature;
        });

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public Property Decode_RandomPayloadInValidEnvelope_TypedFailureNeverThrows() =>
        Prop.ForAll(Bytes(0, 300), payload =>
        {
            var bytes = SignedEnvelope.Seal(Provider, SignatureDomains.Attestation, payload).Encode();
            return SignedAttestation.Decode(bytes, Options).Status == VerifyStatus.Malformed;
        });

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public Property Verify_AnySingleByteFlip_Rejected() =>
        Prop.ForAll(Gen.Choose(0, 100_000).Two().ToArbitrary(), mutation =>
        {
            var bytes = SignedAttestation.Create(MakeAttestation(LeaseA, Requester, Provider), Provider).EnvelopeBytes;
            bytes[mutation.Item1 % bytes.Length] ^= (byte)(1 + mutation.Item2 % 255);
            return SignedAttestation.Verify(bytes, Expectation(LeaseA, Requester, Provider), Options).Status != VerifyStatus.Valid;
        });

    [Test]
    public void Verify_Honest_Valid()
    {
        var signed = SignedAttestation.Create(MakeAttestation(LeaseA, Requester, Provider), Provider);
        var result = SignedAttestation.Verify(signed.EnvelopeBytes, Expectation(LeaseA, Requester, Provider), Options);
        Assert.That(result.Status, Is.EqualTo(VerifyStatus.Valid));
        Assert.That(result.Value!.EnvelopeBytes, Is.EqualTo(signed.EnvelopeBytes));
    }

    [Test]
    public void Verify_SignedByStrangerClaimingProvider_WrongSigner()
    {
        var bytes = Seal(MakeAttestation(LeaseA, Requester, Provider), Stranger, SignatureDomains.Attestation);
        Assert.That(SignedAttestation.Verify(bytes, Expectation(LeaseA, Requester, Provider), Options).Status,
            Is.EqualTo(VerifyStatus.WrongSigner));
    }

    [Test]
    public void Verify_TamperedPayload_BadSignature()
    {
        var signed = SignedAttestation.Create(MakeAttestation(LeaseA, Requester, Provider), Provider);
        var payload = MessagePackSerializer.Serialize(MakeAttestation(LeaseA, Requester, Provider, fuel: 1));
        var tampered = new SignedEnvelope { Payload = payload, PublicKey = signed.Envelope.PublicKey, Signature = signed.Envelope.Signature }.Encode();
        Assert.That(SignedAttestation.Verify(tampered, Expectation(LeaseA, Requester, Provider), Options).Status,
            Is.EqualTo(VerifyStatus.BadSignature));
    }

    [Test]
    public void Decode_AttestationPayloadSignedAsReceipt_BadSignature()
    {
        // The provider's own key, the right payload, the wrong domain: a signature meant for a receipt.
        var bytes = Seal(MakeAttestation(LeaseA, Requester, Provider), Provider, SignatureDomains.Receipt);
        Assert.That(SignedAttestation.Decode(bytes, Options).Status, Is.EqualTo(VerifyStatus.BadSignature));
    }

    [Test]
    public void Decode_ReceiptEnvelope_Rejected()
    {
        var receipt = MakeReceipt(LeaseA, Requester, Provider);
        Assert.That(SignedAttestation.Decode(receipt.EnvelopeBytes, Options).IsValid, Is.False);
    }

    private static IEnumerable<TestCaseData> Mismatches()
    {
        var honest = Expectation(LeaseA, Requester, Provider);
        yield return new TestCaseData(honest with { LeaseId = Lease(2) }, VerifyStatus.LeaseMismatch).SetName("Verify_OtherLease_LeaseMismatch");
        yield return new TestCaseData(honest with { Requester = Stranger.PeerId }, VerifyStatus.PartyMismatch).SetName("Verify_OtherRequester_PartyMismatch");
        yield return new TestCaseData(honest with { Provider = Stranger.PeerId }, VerifyStatus.PartyMismatch).SetName("Verify_OtherProvider_PartyMismatch");
        yield return new TestCaseData(honest with { ModuleHash = new byte[32] }, VerifyStatus.ModuleHashMismatch).SetName("Verify_OtherModule_ModuleHashMismatch");
        yield return new TestCaseData(honest with { InputHash = new byte[32] }, VerifyStatus.InputHashMismatch).SetName("Verify_OtherInput_InputHashMismatch");
        yield return new TestCaseData(AttestationExpectation.For(LeaseA, Requester.PeerId, Provider.PeerId, "module"u8, "input"u8, "outpuT"u8),
            VerifyStatus.OutputHashMismatch).SetName("Verify_OtherOutput_OutputHashMismatch");
        yield return new TestCaseData(honest with { OutputSize = 7 }, VerifyStatus.OutputSizeMismatch).SetName("Verify_OtherOutputSize_OutputSizeMismatch");
    }

    [TestCaseSource(nameof(Mismatches))]
    public void Verify_WhatRequesterHoldsDiffers_TypedMismatch(AttestationExpectation expected, VerifyStatus status)
    {
        var signed = SignedAttestation.Create(MakeAttestation(LeaseA, Requester, Provider), Provider);
        Assert.That(SignedAttestation.Verify(signed.EnvelopeBytes, expected, Options).Status, Is.EqualTo(status));
    }

    [Test]
    public void Decode_UnknownOutcome_Malformed()
    {
        var a = MakeAttestation(LeaseA, Requester, Provider);
        var odd = new Attestation
        {
            LeaseId = a.LeaseId, Requester = a.Requester, Provider = a.Provider, ModuleHash = a.ModuleHash, InputHash = a.InputHash,
            OutputHash = a.OutputHash, OutputSize = a.OutputSize, FuelUsed = a.FuelUsed, Outcome = (AttestedOutcome)200,
        };
        Assert.That(SignedAttestation.Decode(Seal(odd, Provider, SignatureDomains.Attestation), Options).Status, Is.EqualTo(VerifyStatus.Malformed));
    }

    [Test]
    public void Decode_ShortHash_Malformed()
    {
        var a = MakeAttestation(LeaseA, Requester, Provider);
        var odd = new Attestation
        {
            LeaseId = a.LeaseId, Requester = a.Requester, Provider = a.Provider, ModuleHash = new byte[31], InputHash = a.InputHash,
            OutputHash = a.OutputHash,
        };
        Assert.That(SignedAttestation.Decode(Seal(odd, Provider, SignatureDomains.Attestation), Options).Status, Is.EqualTo(VerifyStatus.Malformed));
    }

    [Test]
    public void Create_ByOtherThanNamedProvider_Throws() =>
        Assert.Throws<ArgumentException>(() => SignedAttestation.Create(MakeAttestation(LeaseA, Requester, Provider), Stranger));

    [Test]
    public void Hash_IsSha256OfSignedPayload()
    {
        var signed = SignedAttestation.Create(MakeAttestation(LeaseA, Requester, Provider), Provider);
        Assert.That(signed.Hash, Is.EqualTo(System.Security.Cryptography.SHA256.HashData(signed.Envelope.Payload)));
    }
}
