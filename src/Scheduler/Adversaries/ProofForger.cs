using System.Security.Cryptography;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Verification;

namespace Potluck.Scheduler.Adversaries;

/// <summary>
/// An adversary that makes fraud proofs (simulations and attack tests): a lease between two identities it holds both
/// keys of (a throwaway "provider" and itself as requester), with an attestation of a made-up output, so that every node
/// that checks the proof re-runs the task for nothing; or a proof of an honest lease it really took part in (a false
/// accusation a re-run refutes).
/// </summary>
public static class ProofForger
{
    /// <summary>A proof of a lease that never ran: both parties' signatures are the forger's own keys.</summary>
    public static FraudProof SelfDealt(PrivateKey requester, PrivateKey throwawayProvider, byte[] module, byte[] input, long fuelLimit,
        ulong requestId, DateTimeOffset now)
    {
        var terms = new LeaseTerms
        {
            RequestId = requestId,
            Provider = throwawayProvider.PeerId.ToBytes(),
            Requester = requester.PeerId.ToBytes(),
            ModuleHash = SHA256.HashData(module),
            ModuleSize = module.Length,
            InputHash = SHA256.HashData(input),
            InputSize = input.Length,
            FuelLimit = fuelLimit,
            MemoryLimitBytes = 32L << 20,
            DeadlineUnixMs = (now + TimeSpan.FromMinutes(10)).ToUnixTimeMilliseconds(),
            PricePerMegaFuel = 1,
            HeartbeatIntervalMs = 5000,
            OfferExpiresUnixMs = (now + TimeSpan.FromSeconds(30)).ToUnixTimeMilliseconds(),
            RuntimeVersion = ComputeRuntime.Version,
        };
        var bytes = LeaseCodec.SerializeTerms(terms);
        var signed = new SignedLeaseTerms
        {
            Terms = bytes,
            ProviderSignature = SignedLeaseTerms.SignProvider(bytes, throwawayProvider),
            RequesterSignature = SignedLeaseTerms.SignRequester(bytes, requester),
        };
        var attestation = SignedAttestation.Create(new Attestation
        {
            LeaseId = ExecutionMapping.LeaseId(requestId),
            Requester = requester.PeerId.ToBytes(),
            Provider = throwawayProvider.PeerId.ToBytes(),
            ModuleHash = terms.ModuleHash,
            InputHash = terms.InputHash,
            OutputHash = SHA256.HashData("made up"u8),
            OutputSize = 7,
            FuelUsed = 1,
            Outcome = AttestedOutcome.Exited,
            TimestampUnixMs = now.ToUnixTimeMilliseconds(),
        }, throwawayProvider);
        return FraudProof.Create(signed, attestation.EnvelopeBytes, module, input);
    }

    /// <summary>A proof of a lease that really completed (its signed terms and the provider's attestation), revealing <paramref name="auditSecret"/>.</summary>
    public static FraudProof OfHonestLease(LeaseOutcome outcome, byte[] module, byte[] input, ReadOnlyMemory<byte> auditSecret = default) =>
        FraudProof.Create(outcome.Terms ?? throw new ArgumentException("the lease has no signed terms", nameof(outcome)),
            outcome.Result?.Attestation ?? throw new ArgumentException("the lease has no result", nameof(outcome)), module, input, auditSecret);
}
