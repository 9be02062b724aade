using System.Security.Cryptography;
using FsCheck;
using FsCheck.Fluent;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Verification;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Verification;

public class FraudProofTests
{
    private static readonly FraudOptions Options = new();
    private static readonly PrivateKey ProviderKey = PrivateKey.FromRandom(new Random(1));
    private static readonly PrivateKey RequesterKey = PrivateKey.FromRandom(new Random(2));
    private static readonly byte[] Module = "\0asmnot really, but hashed"u8.ToArray();
    private static readonly byte[] Input = new TaskPayload(["5"], "seed"u8.ToArray()).Encode();

    private static FraudProof Proof(AttestedOutcome outcome = AttestedOutcome.Exited, ulong fuel = 1000, byte[]? module = null, PrivateKey? signer = null)
    {
        var terms = new LeaseTerms
        {
            RequestId = 42,
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
        };
        var bytes = LeaseCodec.SerializeTerms(terms);
        var signed = new SignedLeaseTerms
        {
            Terms = bytes,
            ProviderSignature = SignedLeaseTerms.SignProvider(bytes, signer ?? ProviderKey),
            RequesterSignature = SignedLeaseTerms.SignRequester(bytes, RequesterKey),
        };
        var attestation = SignedAttestation.Create(new Attestation
        {
            LeaseId = ExecutionMapping.LeaseId(42),
            Requester = RequesterKey.PeerId.ToBytes(),
            Provider = ProviderKey.PeerId.ToBytes(),
            ModuleHash = SHA256.HashData(Module),
            InputHash = SHA256.HashData(Input),
            OutputHash = SHA256.HashData("wrong"u8),
            OutputSize = 5,
            FuelUsed = fuel,
            Outcome = outcome,
        }, ProviderKey);
        return FraudProof.Create(signed, attestation.EnvelopeBytes, module ?? Module, Input);
    }

    [Test]
    public void WellFormedProof_RoundTripsAndIsPlausible()
    {
        Assert.That(FraudProof.TryDecode(Proof().Encode(), Options, out var decoded), Is.True);
        var check = decoded.Inspect(Options);
        Assert.That(check.Status, Is.EqualTo(FraudProofStatus.Plausible), check.Detail);
        Assert.That(check.Provider, Is.EqualTo(ProviderKey.PeerId));
    }

    [Test]
    public void ModuleNotTheLeased_IsInvalid() =>
        Assert.That(Proof(module: [1, 2, 3]).Inspect(Options).Status, Is.EqualTo(FraudProofStatus.Invalid));

    [Test]
    public void TermsNotSignedByTheAttestingProvider_AreInvalid() =>
        Assert.That(Proof(signer: RequesterKey).Inspect(Options).Status, Is.EqualTo(FraudProofStatus.Invalid));

    [Test]
    public void TimeoutClaim_IsNeverGroundsForAProof() =>
        Assert.That(Proof(AttestedOutcome.TimedOut).Inspect(Options).Status, Is.EqualTo(FraudProofStatus.Invalid));

    [Test]
    public void TrapClaim_IsPlausible_ARerunDecides() =>
        Assert.That(Proof(AttestedOutcome.Trapped).Inspect(Options).Status, Is.EqualTo(FraudProofStatus.Plausible));

    [Test]
    public void FuelLimitOverTheCheckBudget_IsTooCostly()
    {
        var check = Proof().Inspect(new FraudOptions { MaxCheckFuel = 10 });
        Assert.That(check.Status, Is.EqualTo(FraudProofStatus.TooCostly));
    }

    [Test]
    public void OversizedProof_IsRefusedBeforeDecoding() =>
        Assert.That(FraudProof.TryDecode(new byte[Options.MaxProofBytes + 1], Options, out _), Is.False);

    [FsCheck.NUnit.Property(MaxTest = 500)]
    public Property Decode_RandomBytes_NeverThrows() =>
        Prop.ForAll(Bytes(0, 300), bytes =>
        {
            if (FraudProof.TryDecode(bytes, Options, out var proof))
            {
                return proof.Inspect(Options).Status != FraudProofStatus.Plausible;
            }
            return true;
        });

    private static RunSummary Run(AttestedOutcome outcome, string output, long fuel, bool deterministic = true, int exit = 0) =>
        new(outcome, exit, SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(output)), output.Length, fuel, deterministic);

    [Test]
    public void Compare_SameResult_Matches() =>
        Assert.That(FraudChecker.Compare(Run(AttestedOutcome.Exited, "ok", 10), Run(AttestedOutcome.Exited, "ok", 10)), Is.EqualTo(CheckVerdict.Match));

    [Test]
    public void Compare_OtherOutputOrFuel_IsAMismatch()
    {
        Assert.That(FraudChecker.Compare(Run(AttestedOutcome.Exited, "ok", 10), Run(AttestedOutcome.Exited, "ko", 10)), Is.EqualTo(CheckVerdict.Mismatch));
        Assert.That(FraudChecker.Compare(Run(AttestedOutcome.Exited, "ok", 11), Run(AttestedOutcome.Exited, "ok", 10)), Is.EqualTo(CheckVerdict.Mismatch), "overcharging fuel");
        Assert.That(FraudChecker.Compare(Run(AttestedOutcome.OutOfFuel, "", 100), Run(AttestedOutcome.Exited, "ok", 10)), Is.EqualTo(CheckVerdict.Mismatch), "a false fuel exhaustion");
    }

    [Test]
    public void Compare_FuelExhaustionAgreed_IsAnOutcomeNotFraud() =>
        Assert.That(FraudChecker.Compare(Run(AttestedOutcome.OutOfFuel, "", 100), Run(AttestedOutcome.OutOfFuel, "", 100)), Is.EqualTo(CheckVerdict.Match));

    [Test]
    public void Compare_StackOverflowReRunOrClaimedTimeout_IsInconclusive()
    {
        Assert.That(FraudChecker.Compare(Run(AttestedOutcome.Exited, "ok", 10), Run(AttestedOutcome.Trapped, "", 7, deterministic: false)),
            Is.EqualTo(CheckVerdict.Inconclusive), "our re-run overflowed the stack");
        Assert.That(FraudChecker.Compare(Run(AttestedOutcome.TimedOut, "", 7), Run(AttestedOutcome.Exited, "ok", 10)),
            Is.EqualTo(CheckVerdict.Inconclusive), "a wall clock differs between machines (and is never paid)");
    }

    [Test]
    public void Compare_ClaimedTrapADeterministicReRunDoesNotReproduce_IsAMismatch() =>
        Assert.That(FraudChecker.Compare(Run(AttestedOutcome.Trapped, "", 7), Run(AttestedOutcome.Exited, "ok", 10)),
            Is.EqualTo(CheckVerdict.Mismatch), "a trap is an outcome, compared like an output");
}
