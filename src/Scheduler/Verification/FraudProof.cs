using System.Security.Cryptography;
using MessagePack;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Verification;

/// <summary>Names of the fraud-proof protocol.</summary>
public static class FraudProtocol
{
    /// <summary>The gossipsub topic fraud proofs travel on.</summary>
    public const string Topic = "potluck/fraud/1";
}

/// <summary>Limits of fraud proofs this node accepts and checks; all remote-controlled.</summary>
public sealed record FraudOptions
{
    /// <summary>Largest encoded proof, checked before decoding. Default 960 KiB (under gossipsub's message limit).</summary>
    public int MaxProofBytes { get; init; } = 960 * 1024;

    /// <summary>Most fuel this node spends re-running one proof; proofs of leases with a larger fuel limit are ignored. Default 10^10.</summary>
    public long MaxCheckFuel { get; init; } = 10_000_000_000;

    /// <summary>Proofs re-run at once; more wait. Default 1.</summary>
    public int MaxConcurrentChecks { get; init; } = 1;

    /// <summary>Proofs waiting to be re-run; beyond this they are dropped (not forwarded either). Default 64.</summary>
    public int MaxQueuedChecks { get; init; } = 64;

    /// <summary>Proofs one author may have checked here per <see cref="AuthorWindow"/>; more are dropped. Default 4.</summary>
    public int MaxProofsPerAuthor { get; init; } = 4;

    /// <summary>The window of <see cref="MaxProofsPerAuthor"/>. Default 1 hour.</summary>
    public TimeSpan AuthorWindow { get; init; } = TimeSpan.FromHours(1);

    /// <summary>Leases whose proof was seen, remembered so that each lease is checked once. Default 100,000.</summary>
    public int MaxRememberedLeases { get; init; } = 100_000;

    public CreditsOptions Credits { get; init; } = new();

    public LeaseOptions Lease { get; init; } = new();
}

/// <summary>
/// Evidence that a provider signed a wrong result: the lease terms both parties signed, the provider's signed
/// attestation, the module and input needed to re-run the task, and the requester's audit reveal (the secret committed
/// to in the terms, so anyone can confirm that the committed decision selected this result for a check). Anyone can
/// check it by re-running within the terms' fuel limit (<see cref="FraudChecker"/>), after the reveal checks. The reporter
/// is the gossip author who published it. MessagePack with integer keys 0–6, decoded only from <see cref="TryDecode"/>
/// (bounded, untrusted); key 6 is new: older nodes skip it, and a proof without it decodes with no reveal.
/// </summary>
[MessagePackObject]
public sealed record FraudProof
{
    /// <summary>The exact <see cref="LeaseTerms"/> bytes both parties signed.</summary>
    [Key(0)] public byte[] Terms { get; init; } = [];

    [Key(1)] public byte[] ProviderSignature { get; init; } = [];

    [Key(2)] public byte[] RequesterSignature { get; init; } = [];

    /// <summary>The provider's attestation envelope, exactly as it sent it.</summary>
    [Key(3)] public byte[] Attestation { get; init; } = [];

    [Key(4)] public byte[] Module { get; init; } = [];

    /// <summary>The lease input (a <see cref="TaskPayload"/>).</summary>
    [Key(5)] public byte[] Input { get; init; } = [];

    /// <summary>
    /// The requester's audit secret, revealed (<see cref="LeaseAudit"/>): empty, or <see cref="LeaseAudit.SecretLength"/>
    /// bytes. A conviction is a check, so the decision it reveals is "checked": when the terms carry a commitment, the secret
    /// must hash to it and select this attestation at the declared rate (<see cref="Inspect"/>), else the proof is refuted
    /// unrun (<see cref="FraudProofStatus.BrokenReveal"/>). Absent in proofs from before the reveal (key 6).
    /// </summary>
    [Key(6)] public byte[] AuditSecret { get; init; } = [];

    private static readonly MessagePackSerializerOptions Untrusted =
        MessagePackSerializerOptions.Standard.WithSecurity(MessagePackSecurity.UntrustedData);

    /// <param name="auditSecret">The secret the requester committed to in the terms (none: an older requester's lease).</param>
    public static FraudProof Create(SignedLeaseTerms terms, ReadOnlyMemory<byte> attestation, ReadOnlyMemory<byte> module, ReadOnlyMemory<byte> input,
        ReadOnlyMemory<byte> auditSecret = default) => new()
    {
        Terms = terms.Terms,
        ProviderSignature = terms.ProviderSignature,
        RequesterSignature = terms.RequesterSignature,
        Attestation = attestation.ToArray(),
        Module = module.ToArray(),
        Input = input.ToArray(),
        AuditSecret = auditSecret.ToArray(),
    };

    /// <summary>What a provider keeps as evidence of a broken reveal: the proof without its module and input (small, and enough to audit).</summary>
    public byte[] EncodeEvidence() => (this with { Module = [], Input = [] }).Encode();

    public byte[] Encode() => MessagePackSerializer.Serialize(this, MessagePackSerializerOptions.Standard);

    /// <summary>Decodes untrusted bytes: the size first, then the shape; false on anything else.</summary>
    public static bool TryDecode(ReadOnlyMemory<byte> bytes, FraudOptions options, out FraudProof proof)
    {
        proof = null!;
        if (bytes.Length > options.MaxProofBytes)
        {
            return false;
        }
        try
        {
            var decoded = MessagePackSerializer.Deserialize<FraudProof>(bytes, Untrusted, out var read);
            if (decoded is null || read != bytes.Length || decoded.Terms is null || decoded.ProviderSignature is null
                || decoded.RequesterSignature is null || decoded.Attestation is null || decoded.Module is null || decoded.Input is null
                || decoded.AuditSecret is { Length: not (0 or LeaseAudit.SecretLength) })
            {
                return false;
            }
            proof = decoded.AuditSecret is null ? decoded with { AuditSecret = [] } : decoded;
            return true;
        }
        catch (MessagePackSerializationException)
        {
            return false;
        }
    }

    /// <summary>
    /// The checks anyone can make without running anything (quick enough for a gossip validator): the terms decode
    /// and carry the provider's signature, the attestation is signed by that provider and names this lease, these
    /// parties, this module and this input, and its outcome is one a re-run can contradict. A timed-out claim never
    /// can (a wall clock differs between machines; it is never paid either); a claimed trap can, when the re-run is
    /// deterministic (not a stack overflow).
    /// </summary>
    public FraudProofCheck Inspect(FraudOptions options)
    {
        if (!LeaseCodec.TryDecodeTerms(Terms, options.Lease, out var terms))
        {
            return FraudProofCheck.Invalid("terms do not decode");
        }
        var attestation = SignedAttestation.Decode(Attestation, options.Credits);
        if (!attestation.IsValid)
        {
            return FraudProofCheck.Invalid($"attestation: {attestation.Status}");
        }
        var signed = attestation.Value!;
        var a = signed.Attestation;
        if (!a.Provider.AsSpan().SequenceEqual(terms.Provider) || !a.Requester.AsSpan().SequenceEqual(terms.Requester))
        {
            return FraudProofCheck.Invalid("attestation names other parties than the terms");
        }
        if (!SignedLeaseTerms.VerifyProvider(Terms, ProviderSignature, signed.Signer))
        {
            return FraudProofCheck.Invalid("terms not signed by the provider");
        }
        if (PeerId.TryFromBytes(terms.Requester, out var requester) && requester.TryExtractPublicKey() is { } requesterKey
            && !SignedLeaseTerms.VerifyRequester(Terms, RequesterSignature, requesterKey))
        {
            return FraudProofCheck.Invalid("terms not signed by the requester");
        }
        if (!a.LeaseId.AsSpan().SequenceEqual(ExecutionMapping.LeaseId(terms.RequestId)))
        {
            return FraudProofCheck.Invalid("attestation names another lease");
        }
        // The reveal before anything costly (hashing the module and input, and any re-run): one SHA-256 and one HMAC. Both
        // parties' signatures are checked above, so a broken reveal is the requester's own (FraudService makes its author pay).
        var audit = LeaseAudit.Verify(terms.AuditCommitment, terms.AuditRatePpm, signed.Hash, AuditSecret, claimsChecked: true);
        if (audit is not (AuditVerdict.NotDeclared or AuditVerdict.Followed))
        {
            return new FraudProofCheck(FraudProofStatus.BrokenReveal, $"audit reveal: {audit}", signed, terms) { Audit = audit };
        }
        if (!SHA256.HashData(Module).AsSpan().SequenceEqual(terms.ModuleHash) || !terms.ModuleHash.AsSpan().SequenceEqual(a.ModuleHash))
        {
            return FraudProofCheck.Invalid("module does not match the terms and attestation");
        }
        if (!SHA256.HashData(Input).AsSpan().SequenceEqual(terms.InputHash) || !terms.InputHash.AsSpan().SequenceEqual(a.InputHash))
        {
            return FraudProofCheck.Invalid("input does not match the terms and attestation");
        }
        if (a.Outcome is AttestedOutcome.TimedOut)
        {
            return FraudProofCheck.Invalid($"a {a.Outcome} result is never paid, so never grounds for a fraud proof");
        }
        if (a.FuelUsed <= (ulong)Math.Max(0, terms.FuelLimit) && terms.FuelLimit > options.MaxCheckFuel)
        {
            return new FraudProofCheck(FraudProofStatus.TooCostly, $"fuel limit {terms.FuelLimit} over {options.MaxCheckFuel}", signed, terms);
        }
        return FraudProofCheck.Plausible(signed, terms);
    }
}

/// <summary>What inspecting a proof found.</summary>
public enum FraudProofStatus
{
    /// <summary>Well-formed and signed; a re-run decides.</summary>
    Plausible,
    /// <summary>Malformed, unsigned, inconsistent, or about an outcome that is never fraud.</summary>
    Invalid,
    /// <summary>Well-formed, but re-running it would cost more fuel than this node spends on a check.</summary>
    TooCostly,
    /// <summary>
    /// Signed by both parties, but the requester's audit reveal is missing or wrong, or its committed decision did not select
    /// this result for a check (<see cref="FraudProofCheck.Audit"/>): refuted without a re-run, and the requester pays for it.
    /// </summary>
    BrokenReveal,
}

public sealed record FraudProofCheck(FraudProofStatus Status, string Detail, SignedAttestation? Attestation, LeaseTerms? Terms)
{
    /// <summary>The audit of the reveal (<see cref="FraudProofStatus.BrokenReveal"/>: what was wrong with it).</summary>
    public AuditVerdict Audit { get; init; } = AuditVerdict.NotDeclared;

    public PeerId Provider => Attestation is { } a && PeerId.TryFromBytes(a.Attestation.Provider, out var p) ? p : default;

    internal static FraudProofCheck Invalid(string detail) => new(FraudProofStatus.Invalid, detail, null, null);

    internal static FraudProofCheck Plausible(SignedAttestation a, LeaseTerms t) => new(FraudProofStatus.Plausible, "", a, t);
}
