using System.Security.Cryptography;
using MessagePack;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Verification;

namespace Potluck.Scheduler.Tests.Verification;

/// <summary>
/// The audit reveal in fraud proofs: a requester that convicts does not pay, so its proof carries the secret it committed to,
/// and anyone checks, before any re-run, that the committed decision selected the result it convicts.
/// </summary>
[Category("Adversarial")]
public class FraudProofRevealTests
{
    private static readonly FraudOptions Options = new();
    private static readonly PrivateKey ProviderKey = PrivateKey.FromRandom(new Random(11));
    private static readonly PrivateKey RequesterKey = PrivateKey.FromRandom(new Random(12));
    private static readonly byte[] Module = "\0asmnot really, but hashed"u8.ToArray();
    private static readonly byte[] Input = new TaskPayload(["5"], "seed"u8.ToArray()).Encode();
    private static readonly byte[] Secret = Enumerable.Range(1, LeaseAudit.SecretLength).Select(i => (byte)i).ToArray();

    /// <summary>A lease whose terms commit to <see cref="Secret"/> at <paramref name="ratePpm"/> (none when null), and its proof revealing <paramref name="reveal"/>.</summary>
    private static FraudProof Proof(int? ratePpm, byte[]? reveal)
    {
        var terms = new LeaseTerms
        {
            RequestId = 43,
            Provider = ProviderKey.PeerId.ToBytes(),
            Requester = RequesterKey.PeerId.ToBytes(),
            ModuleHash = SHA256.HashData(Module),
            ModuleSize = Module.Length,
            InputHash = SHA256.HashData(Input),
            InputSize = Input.Length,
            FuelLimit = 1_000_000,
            MemoryLimitBytes = 1 << 20,
            DeadlineUnixMs = 1,
            PricePerMegaFuel = 10,
            HeartbeatIntervalMs = 5000,
            AuditCommitment = ratePpm is null ? [] : LeaseAudit.Commit(Secret),
            AuditRatePpm = ratePpm ?? 0,
        };
        var bytes = LeaseCodec.SerializeTerms(terms);
        var signed = new SignedLeaseTerms
        {
            Terms = bytes,
            ProviderSignature = SignedLeaseTerms.SignProvider(bytes, ProviderKey),
            RequesterSignature = SignedLeaseTerms.SignRequester(bytes, RequesterKey),
        };
        var attestation = SignedAttestation.Create(new Attestation
        {
            LeaseId = ExecutionMapping.LeaseId(43),
            Requester = RequesterKey.PeerId.ToBytes(),
            Provider = ProviderKey.PeerId.ToBytes(),
            ModuleHash = SHA256.HashData(Module),
            InputHash = SHA256.HashData(Input),
            OutputHash = SHA256.HashData("wrong"u8),
            OutputSize = 5,
            FuelUsed = 1000,
            Outcome = AttestedOutcome.Exited,
        }, ProviderKey);
        return FraudProof.Create(signed, attestation.EnvelopeBytes, Module, Input, reveal);
    }

    private static FraudProofCheck Decoded(FraudProof proof)
    {
        Assert.That(FraudProof.TryDecode(proof.Encode(), Options, out var decoded), Is.True);
        return decoded.Inspect(Options);
    }

    [Test]
    public void HonestConviction_ItsRevealChecks_AndTheProofIsPlausible()
    {
        // Rate one: every result is selected, as for a requester's first results from a provider or a replica.
        var proof = Proof(LeaseAudit.AlwaysPpm, Secret);
        Assert.That(FraudProof.TryDecode(proof.Encode(), Options, out var decoded), Is.True);
        Assert.That(decoded.AuditSecret, Is.EqualTo(Secret), "the reveal travels in the proof (key 6)");
        var check = decoded.Inspect(Options);
        Assert.That(check.Status, Is.EqualTo(FraudProofStatus.Plausible), check.Detail);
    }

    [Test]
    public void SampledConviction_RevealChecks_ExactlyWhenTheDecisionSelectedIt()
    {
        // At a rate below one the decision from the secret and this attestation is fixed: a proof is plausible exactly when
        // it selected the result (what the requester's own CheckAsync computes before it re-runs). Both ways are shown.
        var seen = new HashSet<FraudProofStatus>();
        foreach (var ppm in new[] { 1, 999_999 })
        {
            var proof = Proof(ppm, Secret);
            var attestation = SignedAttestation.Decode(proof.Attestation, Options.Credits).Value!;
            var selected = LeaseAudit.Selected(Secret, attestation.Hash, ppm);
            var status = Decoded(proof).Status;
            Assert.That(status, Is.EqualTo(selected ? FraudProofStatus.Plausible : FraudProofStatus.BrokenReveal), $"rate {ppm} ppm");
            seen.Add(status);
        }
        Assert.That(seen, Is.EquivalentTo(new[] { FraudProofStatus.Plausible, FraudProofStatus.BrokenReveal }));
    }

    [Test]
    public void WrongSecret_IsABrokenReveal_RefutedUnrun()
    {
        var wrong = (byte[])Secret.Clone();
        wrong[0] ^= 1;
        var check = Decoded(Proof(LeaseAudit.AlwaysPpm, wrong));
        Assert.That((check.Status, check.Audit), Is.EqualTo((FraudProofStatus.BrokenReveal, AuditVerdict.WrongSecret)));
        Assert.That(check.Terms, Is.Not.Null, "attributable: the terms, signed by the requester, are known");
        Assert.That(check.Provider, Is.EqualTo(ProviderKey.PeerId));
    }

    [Test]
    public void MissingSecret_WhenTheTermsCommitted_IsABrokenReveal()
    {
        var check = Decoded(Proof(LeaseAudit.AlwaysPpm, null));
        Assert.That((check.Status, check.Audit), Is.EqualTo((FraudProofStatus.BrokenReveal, AuditVerdict.MissingSecret)));
    }

    [Test]
    public void ConvictionTheDecisionDidNotSelect_IsABrokenReveal()
    {
        // Declared rate 0: the provider was promised no check, so a conviction shows a check the requester never declared.
        var check = Decoded(Proof(0, Secret));
        Assert.That((check.Status, check.Audit), Is.EqualTo((FraudProofStatus.BrokenReveal, AuditVerdict.CheckedMoreThanDeclared)));
    }

    [Test]
    public void LeaseWithoutACommitment_OlderRequester_NeedsNoReveal() =>
        Assert.That(Decoded(Proof(null, null)).Status, Is.EqualTo(FraudProofStatus.Plausible));

    [Test]
    public void RevealOfAnotherLength_DoesNotDecode()
    {
        var proof = Proof(LeaseAudit.AlwaysPpm, Secret) with { AuditSecret = new byte[LeaseAudit.SecretLength + 1] };
        Assert.That(FraudProof.TryDecode(proof.Encode(), Options, out _), Is.False);
        Assert.That(FraudProof.TryDecode((proof with { AuditSecret = [1, 2, 3] }).Encode(), Options, out _), Is.False);
    }

    [Test]
    public void Versions_AnOlderProofDecodesWithNoReveal_AndAnOlderNodeSkipsTheNewKey()
    {
        var withReveal = Proof(LeaseAudit.AlwaysPpm, Secret);
        var legacy = new LegacyFraudProof
        {
            Terms = withReveal.Terms,
            ProviderSignature = withReveal.ProviderSignature,
            RequesterSignature = withReveal.RequesterSignature,
            Attestation = withReveal.Attestation,
            Module = withReveal.Module,
            Input = withReveal.Input,
        };
        var legacyBytes = MessagePackSerializer.Serialize(legacy);
        Assert.That(FraudProof.TryDecode(legacyBytes, Options, out var decoded), Is.True, "a proof from before the reveal still decodes");
        Assert.That(decoded.AuditSecret, Is.Empty);
        Assert.That(decoded.Inspect(Options).Audit, Is.EqualTo(AuditVerdict.MissingSecret), "and, its terms committing to a secret, is refuted unrun");

        var read = MessagePackSerializer.Deserialize<LegacyFraudProof>(withReveal.Encode(),
            MessagePackSerializerOptions.Standard.WithSecurity(MessagePackSecurity.UntrustedData));
        Assert.That(read.Input, Is.EqualTo(withReveal.Input), "an older node reads the six keys it knows and skips the seventh");
    }

    /// <summary>The proof as nodes before the reveal encoded it: keys 0–5.</summary>
    [MessagePackObject]
    public sealed class LegacyFraudProof
    {
        [Key(0)] public byte[] Terms { get; set; } = [];

        [Key(1)] public byte[] ProviderSignature { get; set; } = [];

        [Key(2)] public byte[] RequesterSignature { get; set; } = [];

        [Key(3)] public byte[] Attestation { get; set; } = [];

        [Key(4)] public byte[] Module { get; set; } = [];

        [Key(5)] public byte[] Input { get; set; } = [];
    }
}
