using System.Text;
using MessagePack;
using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Leasing;

/// <summary>
/// What both parties sign: the provider signs these exact bytes in its offer, the requester counter-signs the same
/// bytes in its accept. Carried as bytes, never re-serialised.
/// </summary>
[MessagePackObject]
public sealed record LeaseTerms
{
    [Key(0)] public ulong RequestId { get; init; }

    [Key(1)] public byte[] Provider { get; init; } = [];

    [Key(2)] public byte[] Requester { get; init; } = [];

    [Key(3)] public byte[] ModuleHash { get; init; } = [];

    [Key(4)] public long ModuleSize { get; init; }

    [Key(5)] public byte[] InputHash { get; init; } = [];

    [Key(6)] public long InputSize { get; init; }

    [Key(7)] public long FuelLimit { get; init; }

    [Key(8)] public long MemoryLimitBytes { get; init; }

    [Key(9)] public long DeadlineUnixMs { get; init; }

    /// <summary>The agreed price, credits per million fuel.</summary>
    [Key(10)] public long PricePerMegaFuel { get; init; }

    [Key(11)] public long HeartbeatIntervalMs { get; init; }

    /// <summary>True when the provider lacks the module and the requester must send it.</summary>
    [Key(12)] public bool ModuleNeeded { get; init; }

    /// <summary>The offer lapses unless accepted by then, Unix milliseconds.</summary>
    [Key(13)] public long OfferExpiresUnixMs { get; init; }

    /// <summary>The provider's exact runtime, e.g. "wasmtime 50.0.1".</summary>
    [Key(14)] public string RuntimeVersion { get; init; } = "";

    /// <summary>
    /// SHA-256 of the requester's audit secret (<see cref="Verification.LeaseAudit.Commit"/>), or empty when the requester
    /// declares none; the secret is revealed in the receipt, so the provider can audit the decision to re-run.
    /// </summary>
    [Key(15)] public byte[] AuditCommitment { get; init; } = [];

    /// <summary>The rate at which the requester declares it re-runs results, parts per million (10^6: every one).</summary>
    [Key(16)] public int AuditRatePpm { get; init; }

    /// <summary>
    /// Fuel per debit note: the provider stops at each multiple of it and runs on only once the requester paid for the
    /// fuel so far (<see cref="DebitNoteSlicing"/>); 0 (and absent, as in terms of older nodes) for a lease paid once.
    /// </summary>
    [Key(17)] public long DebitNoteFuel { get; init; }

    /// <summary>The most the lease can cost: fuel limit × price / 10^6, rounded up.</summary>
    public long MaxCostCredits() => CostOf(FuelLimit);

    /// <summary>The cost of <paramref name="fuel"/> at the agreed price, rounded up.</summary>
    public long CostOf(long fuel)
    {
        var cost = ((Int128)Math.Max(0, fuel) * Math.Max(0, PricePerMegaFuel) + 999_999) / 1_000_000;
        return cost > long.MaxValue ? long.MaxValue : (long)cost;
    }
}

/// <summary>Terms signed by both parties: the record the ledger settles against.</summary>
[MessagePackObject]
public sealed record SignedLeaseTerms
{
    internal static readonly byte[] OfferDomain = Encoding.UTF8.GetBytes("potluck-lease-offer:");
    internal static readonly byte[] AcceptDomain = Encoding.UTF8.GetBytes("potluck-lease-accept:");

    /// <summary>The exact <see cref="LeaseTerms"/> bytes both signed.</summary>
    [Key(0)] public byte[] Terms { get; init; } = [];

    [Key(1)] public byte[] ProviderSignature { get; init; } = [];

    [Key(2)] public byte[] RequesterSignature { get; init; } = [];

    /// <summary>True when both signatures verify against the keys the terms name.</summary>
    public bool Verify(PublicKey provider, PublicKey requester) =>
        VerifyProvider(Terms, ProviderSignature, provider) && VerifyRequester(Terms, RequesterSignature, requester);

    internal static byte[] SignProvider(ReadOnlySpan<byte> terms, PrivateKey key) => key.Sign(Concat(OfferDomain, terms));

    internal static byte[] SignRequester(ReadOnlySpan<byte> terms, PrivateKey key) => key.Sign(Concat(AcceptDomain, terms));

    internal static bool VerifyProvider(ReadOnlySpan<byte> terms, ReadOnlySpan<byte> signature, PublicKey key) =>
        key.Verify(Concat(OfferDomain, terms), signature);

    internal static bool VerifyRequester(ReadOnlySpan<byte> terms, ReadOnlySpan<byte> signature, PublicKey key) =>
        key.Verify(Concat(AcceptDomain, terms), signature);

    private static byte[] Concat(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        var all = new byte[a.Length + b.Length];
        a.CopyTo(all);
        b.CopyTo(all.AsSpan(a.Length));
        return all;
    }
}
