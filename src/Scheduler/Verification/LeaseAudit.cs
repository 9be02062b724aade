using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Verification;

/// <summary>What an audit of one lease's check decision found.</summary>
public enum AuditVerdict
{
    /// <summary>The requester committed to no audit secret (an older requester): nothing to audit.</summary>
    NotDeclared,
    /// <summary>The reveal matches the commitment and the requester checked exactly when the decision said so.</summary>
    Followed,
    /// <summary>The reveal matches; the decision called for a check the requester says it did not make (it may lack a sandbox): harmless to the provider.</summary>
    CheckSkipped,
    /// <summary>The receipt reveals no secret although the terms carry a commitment.</summary>
    MissingSecret,
    /// <summary>The revealed secret does not hash to the commitment in the signed terms.</summary>
    WrongSecret,
    /// <summary>The requester checked a result its committed decision did not select: it re-runs more than it declared.</summary>
    CheckedMoreThanDeclared,
    /// <summary>The documents do not belong together (another lease, another attestation) or do not verify.</summary>
    Mismatched,
}

/// <summary>
/// The commit-reveal audit of the decision to re-run a result. Before the lease, the requester draws a 32-byte secret
/// from the cryptographic generator and puts <see cref="Commit"/> of it, with the rate it declares, into the request
/// (and so into the terms both parties sign). The decision is <see cref="Selected"/>: HMAC-SHA-256(secret, attestation
/// hash), its first 8 bytes read as an unsigned big-endian number, below rate·2^64. It is fixed only once the provider's
/// signed attestation exists, and the provider, knowing the rate but not the secret, cannot learn it before it answers.
/// The requester reveals the secret in its signed receipt, with whether it checked; the provider, and any auditor holding
/// the signed terms, attestation and receipt (<see cref="Verify(ReadOnlyMemory{byte}, ReadOnlyMemory{byte}, ReadOnlyMemory{byte}, LeaseOptions, CreditsOptions)"/>),
/// confirms that the reveal matches the commitment and that the requester followed the rate it declared.
/// </summary>
public static class LeaseAudit
{
    public const int SecretLength = 32;
    public const int CommitmentLength = 32;

    /// <summary>A rate of one: every result is checked.</summary>
    public const int AlwaysPpm = 1_000_000;

    private static readonly byte[] CommitDomain = Encoding.ASCII.GetBytes("potluck-audit-commit:");

    /// <summary>SHA-256("potluck-audit-commit:" ‖ secret).</summary>
    public static byte[] Commit(ReadOnlySpan<byte> secret)
    {
        if (secret.Length != SecretLength)
        {
            throw new ArgumentException($"an audit secret is {SecretLength} bytes", nameof(secret));
        }
        Span<byte> input = stackalloc byte[CommitDomain.Length + SecretLength];
        CommitDomain.CopyTo(input);
        secret.CopyTo(input[CommitDomain.Length..]);
        return SHA256.HashData(input);
    }

    /// <summary>A probability as parts per million, clamped to [0, 10^6].</summary>
    public static int ToPpm(double rate) =>
        double.IsNaN(rate) ? AlwaysPpm : (int)Math.Clamp(Math.Ceiling(rate * AlwaysPpm), 0, AlwaysPpm);

    /// <summary>Whether the result with this attestation hash is checked, at <paramref name="ratePpm"/>.</summary>
    public static bool Selected(ReadOnlySpan<byte> secret, ReadOnlySpan<byte> attestationHash, int ratePpm)
    {
        if (ratePpm >= AlwaysPpm)
        {
            return true;
        }
        if (ratePpm <= 0)
        {
            return false;
        }
        Span<byte> mac = stackalloc byte[32];
        HMACSHA256.HashData(secret, attestationHash, mac);
        var draw = BinaryPrimitives.ReadUInt64BigEndian(mac);
        // draw < rate · 2^64, with rate = ppm / 10^6, in 128-bit integers.
        var threshold = ((UInt128)(uint)ratePpm << 64) / AlwaysPpm;
        return draw < threshold;
    }

    /// <summary>
    /// The audit of one lease from what its parties signed: <paramref name="commitment"/> and <paramref name="ratePpm"/>
    /// from the terms, the attestation's hash, and the receipt's reveal and claim to have checked.
    /// </summary>
    public static AuditVerdict Verify(ReadOnlySpan<byte> commitment, int ratePpm, ReadOnlySpan<byte> attestationHash,
        ReadOnlySpan<byte> revealedSecret, bool claimsChecked)
    {
        if (commitment.IsEmpty)
        {
            return AuditVerdict.NotDeclared;
        }
        if (revealedSecret.IsEmpty)
        {
            return AuditVerdict.MissingSecret;
        }
        if (revealedSecret.Length != SecretLength || commitment.Length != CommitmentLength
            || !CryptographicOperations.FixedTimeEquals(Commit(revealedSecret), commitment))
        {
            return AuditVerdict.WrongSecret;
        }
        var selected = Selected(revealedSecret, attestationHash, ratePpm);
        return claimsChecked == selected ? AuditVerdict.Followed
            : claimsChecked ? AuditVerdict.CheckedMoreThanDeclared
            : AuditVerdict.CheckSkipped;
    }

    /// <summary>True when the verdict shows the requester broke what it committed to.</summary>
    public static bool IsViolation(AuditVerdict verdict) =>
        verdict is AuditVerdict.MissingSecret or AuditVerdict.WrongSecret or AuditVerdict.CheckedMoreThanDeclared;

    /// <summary>
    /// The auditor's check, for anyone holding the three signed documents of a lease: the terms both parties signed
    /// (<see cref="SignedLeaseTerms"/> bytes, MessagePack), the provider's attestation envelope and the requester's
    /// receipt envelope. Signatures are checked against the keys the documents name.
    /// </summary>
    public static AuditVerdict Verify(ReadOnlyMemory<byte> signedTerms, ReadOnlyMemory<byte> attestation, ReadOnlyMemory<byte> receipt,
        LeaseOptions leaseOptions, CreditsOptions creditsOptions)
    {
        if (!LeaseCodec.TryDecodeSignedTerms(signedTerms, leaseOptions, out var signed, out var terms)
            || !KeyCache.TryPeer(terms.Provider, out var provider) || !KeyCache.TryPeer(terms.Requester, out var requester)
            || provider.TryExtractPublicKey() is not { } providerKey || requester.TryExtractPublicKey() is not { } requesterKey
            || !signed.Verify(providerKey, requesterKey))
        {
            return AuditVerdict.Mismatched;
        }
        var r = SignedReceipt.Decode(receipt, creditsOptions);
        var a = SignedAttestation.Decode(attestation, creditsOptions);
        if (!r.IsValid || !a.IsValid)
        {
            return AuditVerdict.Mismatched;
        }
        var leaseId = Execution.ExecutionMapping.LeaseId(terms.RequestId);
        var rv = r.Value!;
        var av = a.Value!;
        if (rv.Requester != requester || rv.Provider != provider || !rv.Receipt.LeaseId.AsSpan().SequenceEqual(leaseId)
            || !rv.Receipt.AttestationHash.AsSpan().SequenceEqual(av.Hash)
            || !av.Attestation.LeaseId.AsSpan().SequenceEqual(leaseId) || !av.Attestation.Provider.AsSpan().SequenceEqual(terms.Provider)
            || !av.Attestation.Requester.AsSpan().SequenceEqual(terms.Requester))
        {
            return AuditVerdict.Mismatched;
        }
        return Verify(terms.AuditCommitment, terms.AuditRatePpm, av.Hash, rv.Receipt.AuditSecret, rv.Receipt.Checked);
    }
}
