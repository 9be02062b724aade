using System.Security.Cryptography;
using System.Text;
using MessagePack;
using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Credits;

/// <summary>
/// A requester's signed promise of payment for one lease: the payload of an envelope signed under
/// <see cref="SignatureDomains.Receipt"/> by the requester. Amounts are integer micro-credits:
/// <c>Amount = ceil(FuelUsed × PricePerMillionFuel / 1,000,000)</c>, computed in 128-bit integers (rounding
/// up, so any non-zero work is paid at least one micro-credit). The receipt id is derived from the lease and
/// the two parties, so there is at most one receipt per lease: a re-signed receipt for the same lease has the
/// same id and ledgers count it once. MessagePack array, integer keys 0–8.
/// </summary>
[MessagePackObject]
public sealed class Receipt
{
    public const int IdLength = 32;
    private const ulong FuelUnit = 1_000_000;
    private static readonly byte[] IdDomain = Encoding.ASCII.GetBytes("potluck-receipt-id:");

    /// <summary><see cref="ComputeId"/> of lease, provider and requester.</summary>
    [Key(0)]
    public required byte[] ReceiptId { get; init; }

    [Key(1)]
    public required byte[] LeaseId { get; init; }

    /// <summary>Requester peer id (multihash bytes); must be the signer.</summary>
    [Key(2)]
    public required byte[] Requester { get; init; }

    /// <summary>Provider peer id (multihash bytes): the payee.</summary>
    [Key(3)]
    public required byte[] Provider { get; init; }

    [Key(4)]
    public ulong FuelUsed { get; init; }

    /// <summary>The agreed price in micro-credits per million units of fuel.</summary>
    [Key(5)]
    public ulong PricePerMillionFuel { get; init; }

    /// <summary>Micro-credits paid: <see cref="ComputeAmount"/> of fuel and price.</summary>
    [Key(6)]
    public long Amount { get; init; }

    /// <summary><see cref="SignedAttestation.Hash"/> of the attestation being paid for.</summary>
    [Key(7)]
    public required byte[] AttestationHash { get; init; }

    [Key(8)]
    public long TimestampUnixMs { get; init; }

    /// <summary>
    /// The audit secret the requester committed to in the lease terms, revealed (empty when it committed to none), so
    /// the provider and any auditor can confirm the decision to re-run (<see cref="Verification.LeaseAudit"/>).
    /// </summary>
    [Key(9)]
    public byte[] AuditSecret { get; init; } = [];

    /// <summary>Whether the requester checked (re-ran or compared) this result.</summary>
    [Key(10)]
    public bool Checked { get; init; }

    /// <summary>
    /// Micro-credits already paid for this lease by debit notes (<see cref="SignedDebitNote"/>): the receipt pays
    /// <c>ceil(FuelUsed × price / 10^6) − PaidBefore</c>, so the notes and the final receipt of a lease add up to exactly
    /// what one receipt would pay. 0 (and absent, as in receipts of older nodes) for a lease paid once.
    /// </summary>
    [Key(11)]
    public long PaidBefore { get; init; }

    /// <summary>SHA-256 of "potluck-receipt-id:" ‖ len‖lease ‖ len‖provider ‖ len‖requester (one-byte lengths).</summary>
    public static byte[] ComputeId(ReadOnlySpan<byte> leaseId, PeerId provider, PeerId requester)
    {
        if (leaseId.Length is 0 or > Attestation.MaxLeaseIdLength)
        {
            throw new ArgumentException("a lease id is 1–64 bytes", nameof(leaseId));
        }
        // The same bytes as appending them one by one to a hash, hashed in one call: no hash object per id.
        var length = IdDomain.Length + 3 + leaseId.Length + provider.Bytes.Length + requester.Bytes.Length;
        var rented = length > 512 ? System.Buffers.ArrayPool<byte>.Shared.Rent(length) : null;
        var input = rented is null ? stackalloc byte[length] : rented.AsSpan(0, length);
        IdDomain.CopyTo(input);
        var at = IdDomain.Length;
        at = AppendWithLength(input, at, leaseId);
        at = AppendWithLength(input, at, provider.Bytes);
        AppendWithLength(input, at, requester.Bytes);
        var id = SHA256.HashData(input);
        if (rented is not null)
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(rented);
        }
        return id;
    }

    private static int AppendWithLength(Span<byte> input, int at, ReadOnlySpan<byte> data)
    {
        input[at] = (byte)data.Length;
        data.CopyTo(input[(at + 1)..]);
        return at + 1 + data.Length;
    }

    /// <summary>ceil(fuel × price / 1,000,000); false when the result exceeds <see cref="long.MaxValue"/>.</summary>
    public static bool TryComputeAmount(ulong fuelUsed, ulong pricePerMillionFuel, out long amount)
    {
        var product = (UInt128)fuelUsed * pricePerMillionFuel;
        var ceil = (product + (FuelUnit - 1)) / FuelUnit;
        if (ceil > (UInt128)long.MaxValue)
        {
            amount = 0;
            return false;
        }
        amount = (long)ceil;
        return true;
    }

    /// <summary>The receipt paying for <paramref name="attestation"/> at the agreed price.</summary>
    /// <exception cref="OverflowException">The amount does not fit in 64 bits.</exception>
    /// <param name="paidBefore">What debit notes of this lease already paid; the receipt pays the rest.</param>
    /// <exception cref="ArgumentOutOfRangeException">The notes paid more than the whole lease costs.</exception>
    public static Receipt For(SignedAttestation attestation, ulong pricePerMillionFuel, DateTimeOffset now,
        ReadOnlySpan<byte> auditSecret = default, bool @checked = false, long paidBefore = 0)
    {
        ArgumentNullException.ThrowIfNull(attestation);
        var a = attestation.Attestation;
        if (!TryComputeAmount(a.FuelUsed, pricePerMillionFuel, out var total))
        {
            throw new OverflowException("fuel × price overflows the amount");
        }
        if (paidBefore < 0 || paidBefore > total)
        {
            throw new ArgumentOutOfRangeException(nameof(paidBefore), paidBefore, "debit notes paid more than the lease costs");
        }
        var amount = total - paidBefore;
        KeyCache.TryPeer(a.Provider, out var provider);
        KeyCache.TryPeer(a.Requester, out var requester);
        return new Receipt
        {
            ReceiptId = ComputeId(a.LeaseId, provider, requester),
            LeaseId = a.LeaseId,
            Requester = a.Requester,
            Provider = a.Provider,
            FuelUsed = a.FuelUsed,
            PricePerMillionFuel = pricePerMillionFuel,
            Amount = amount,
            AttestationHash = attestation.Hash,
            TimestampUnixMs = now.ToUnixTimeMilliseconds(),
            AuditSecret = auditSecret.ToArray(),
            Checked = @checked,
            PaidBefore = paidBefore,
        };
    }

    internal bool IsWellFormed() =>
        ReceiptId is { Length: IdLength }
        && LeaseId is { Length: > 0 and <= Attestation.MaxLeaseIdLength }
        && Requester is not null && KeyCache.TryPeer(Requester, out _)
        && Provider is not null && KeyCache.TryPeer(Provider, out _)
        && AttestationHash is { Length: Attestation.HashLength }
        && AuditSecret is { Length: 0 or Verification.LeaseAudit.SecretLength }
        && Amount >= 0 && PaidBefore >= 0;

    /// <summary>Id and amount as derived from the other fields; call only when <see cref="IsWellFormed"/>.</summary>
    internal VerifyStatus CheckDerived()
    {
        KeyCache.TryPeer(Provider, out var provider);
        KeyCache.TryPeer(Requester, out var requester);
        if (!ComputeId(LeaseId, provider, requester).AsSpan().SequenceEqual(ReceiptId))
        {
            return VerifyStatus.ReceiptIdMismatch;
        }
        return TryComputeAmount(FuelUsed, PricePerMillionFuel, out var total) && PaidBefore <= total && total - PaidBefore == Amount
            ? VerifyStatus.Valid
            : VerifyStatus.AmountMismatch;
    }

}

/// <summary>What a provider checks a receipt against: its lease, the parties, the attested fuel, the agreed price.</summary>
public sealed record ReceiptExpectation(
    byte[] LeaseId, PeerId Requester, PeerId Provider, ulong FuelUsed, ulong PricePerMillionFuel, byte[] AttestationHash)
{
    /// <summary>What debit notes of the lease were paid before this receipt (it must say exactly that).</summary>
    public long PaidBefore { get; init; }

    public static ReceiptExpectation For(SignedAttestation attestation, ulong pricePerMillionFuel)
    {
        ArgumentNullException.ThrowIfNull(attestation);
        var a = attestation.Attestation;
        KeyCache.TryPeer(a.Requester, out var requester);
        KeyCache.TryPeer(a.Provider, out var provider);
        return new(a.LeaseId, requester, provider, a.FuelUsed, pricePerMillionFuel, attestation.Hash);
    }
}

/// <summary>
/// A receipt with its signature: <see cref="EnvelopeBytes"/> are the exact bytes that travel and are stored
/// in ledgers; anyone can re-check them with <see cref="Decode"/>. Only obtainable by signing
/// (<see cref="Create"/>) or by a successful check.
/// </summary>
public sealed class SignedReceipt
{
    private SignedReceipt(byte[] envelopeBytes, Receipt receipt, PeerId requester, PeerId provider)
    {
        EnvelopeBytes = envelopeBytes;
        Receipt = receipt;
        Requester = requester;
        Provider = provider;
    }

    public byte[] EnvelopeBytes { get; }

    public Receipt Receipt { get; }

    public PeerId Requester { get; }

    public PeerId Provider { get; }

    public ReadOnlySpan<byte> ReceiptId => Receipt.ReceiptId;

    /// <summary>Signs <paramref name="receipt"/> as its requester.</summary>
    /// <exception cref="ArgumentException">
    /// The receipt is malformed, its id or amount is not the derived one, or it names another requester.
    /// </exception>
    public static SignedReceipt Create(Receipt receipt, PrivateKey requester)
    {
        ArgumentNullException.ThrowIfNull(receipt);
        if (!receipt.IsWellFormed() || receipt.CheckDerived() != VerifyStatus.Valid)
        {
            throw new ArgumentException("malformed receipt, or its id or amount is not the derived one", nameof(receipt));
        }
        if (!requester.PeerId.Bytes.SequenceEqual(receipt.Requester))
        {
            throw new ArgumentException("only the requester named in a receipt may sign it", nameof(requester));
        }
        var payload = MessagePackSerializer.Serialize(receipt, SignedEnvelope.Untrusted);
        var envelope = SignedEnvelope.Seal(requester, SignatureDomains.Receipt, payload);
        KeyCache.TryPeer(receipt.Provider, out var provider);
        return new SignedReceipt(envelope.Encode(), receipt, requester.PeerId, provider);
    }

    /// <summary>
    /// Decodes untrusted bytes and checks what anyone can check: size, shape, signature by the requester the
    /// receipt names, the derived receipt id and the recomputed amount.
    /// </summary>
    public static Verified<SignedReceipt> Decode(ReadOnlyMemory<byte> envelopeBytes, CreditsOptions options)
    {
        var status = EnvelopeView.TryRead(envelopeBytes, options, out var envelope);
        if (status != EnvelopeStatus.Valid)
        {
            return Verified<SignedReceipt>.Fail(status == EnvelopeStatus.TooLarge ? VerifyStatus.TooLarge : VerifyStatus.Malformed);
        }
        if (!SignedEnvelope.TryDeserialize(envelope.Payload, out Receipt? receipt) || !receipt.IsWellFormed())
        {
            return Verified<SignedReceipt>.Fail(VerifyStatus.Malformed);
        }
        if (envelope.Open(SignatureDomains.Receipt, out var signer) != EnvelopeStatus.Valid)
        {
            return Verified<SignedReceipt>.Fail(VerifyStatus.BadSignature);
        }
        var signerId = PeerId.FromPublicKey(signer!);
        if (!signerId.Bytes.SequenceEqual(receipt.Requester))
        {
            return Verified<SignedReceipt>.Fail(VerifyStatus.WrongSigner);
        }
        var derived = receipt.CheckDerived();
        if (derived != VerifyStatus.Valid)
        {
            return Verified<SignedReceipt>.Fail(derived);
        }
        KeyCache.TryPeer(receipt.Provider, out var provider);
        return new(VerifyStatus.Valid, new SignedReceipt(envelopeBytes.ToArray(), receipt, signerId, provider));
    }

    /// <summary>The provider's check before it records a receipt: <see cref="Decode"/>, then lease, parties, fuel, price, attestation.</summary>
    public static Verified<SignedReceipt> Verify(ReadOnlyMemory<byte> envelopeBytes, ReceiptExpectation expected, CreditsOptions options)
    {
        ArgumentNullException.ThrowIfNull(expected);
        var decoded = Decode(envelopeBytes, options);
        if (!decoded.IsValid)
        {
            return decoded;
        }
        var status = decoded.Value!.Check(expected);
        return status == VerifyStatus.Valid ? decoded : Verified<SignedReceipt>.Fail(status);
    }

    /// <summary>
    /// The lease, parties, fuel, price and attestation checks of <see cref="Verify"/> on a receipt already decoded
    /// (so already signature-checked): a provider that decoded a receipt to find its lease need not check the
    /// signature twice.
    /// </summary>
    public VerifyStatus Check(ReceiptExpectation expected)
    {
        ArgumentNullException.ThrowIfNull(expected);
        return !Receipt.LeaseId.AsSpan().SequenceEqual(expected.LeaseId) ? VerifyStatus.LeaseMismatch
            : Requester != expected.Requester || Provider != expected.Provider ? VerifyStatus.PartyMismatch
            : Receipt.FuelUsed != expected.FuelUsed ? VerifyStatus.FuelMismatch
            : Receipt.PricePerMillionFuel != expected.PricePerMillionFuel ? VerifyStatus.PriceMismatch
            : !Receipt.AttestationHash.AsSpan().SequenceEqual(expected.AttestationHash) ? VerifyStatus.AttestationHashMismatch
            : Receipt.PaidBefore != expected.PaidBefore ? VerifyStatus.AmountMismatch
            : VerifyStatus.Valid;
    }
}
