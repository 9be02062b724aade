using System.Security.Cryptography;
using MessagePack;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Credits;

/// <summary>
/// A provider's signed statement of what a running lease has cost so far (<see cref="DebitNoteSlicing"/>): the payload of an
/// envelope signed under <see cref="SignedDebitNote.Domain"/> by the provider. <c>CumulativeAmount =
/// ceil(CumulativeFuel × PricePerMillionFuel / 10^6)</c> (checked, as a receipt's amount); the note asks for
/// <c>CumulativeAmount − PaidBefore</c>. MessagePack array, integer keys 0–8.
/// </summary>
[MessagePackObject]
public sealed class DebitNote
{
    /// <summary>The lease's id (8 bytes, as the attestation and receipt name it).</summary>
    [Key(0)] public required byte[] LeaseId { get; init; }

    [Key(1)] public required byte[] Requester { get; init; }

    /// <summary>The provider: the signer and payee.</summary>
    [Key(2)] public required byte[] Provider { get; init; }

    /// <summary>0 for the first slice.</summary>
    [Key(3)] public int SliceIndex { get; init; }

    /// <summary>Fuel used so far: (SliceIndex + 1) × the slice of the terms.</summary>
    [Key(4)] public ulong CumulativeFuel { get; init; }

    [Key(5)] public ulong PricePerMillionFuel { get; init; }

    [Key(6)] public long CumulativeAmount { get; init; }

    /// <summary>What the notes before this one were paid: the previous note's cumulative amount, 0 for the first.</summary>
    [Key(7)] public long PaidBefore { get; init; }

    [Key(8)] public long TimestampUnixMs { get; init; }

    /// <summary>What this note asks for.</summary>
    [IgnoreMember] public long Due => CumulativeAmount - PaidBefore;

    internal bool IsWellFormed() =>
        LeaseId is { Length: 8 } && Requester is not null && KeyCache.TryPeer(Requester, out _)
        && Provider is not null && KeyCache.TryPeer(Provider, out _)
        && SliceIndex >= 0 && CumulativeFuel > 0 && PaidBefore >= 0
        && Receipt.TryComputeAmount(CumulativeFuel, PricePerMillionFuel, out var amount) && amount == CumulativeAmount
        && PaidBefore <= CumulativeAmount;
}

/// <summary>A debit note with the provider's signature; <see cref="EnvelopeBytes"/> are the bytes that travel.</summary>
public sealed class SignedDebitNote
{
    /// <summary>The signature domain of debit notes (never a prefix of another domain).</summary>
    public const string Domain = "potluck-debit-note:";

    private SignedDebitNote(byte[] envelopeBytes, DebitNote note, PeerId provider, PeerId requester)
    {
        EnvelopeBytes = envelopeBytes;
        Note = note;
        Provider = provider;
        Requester = requester;
        Hash = SHA256.HashData(envelopeBytes);
    }

    public byte[] EnvelopeBytes { get; }

    public DebitNote Note { get; }

    public PeerId Provider { get; }

    public PeerId Requester { get; }

    /// <summary>SHA-256 of the envelope: the payment's <see cref="Receipt.AttestationHash"/>, tying it to this note.</summary>
    public byte[] Hash { get; }

    /// <summary>Signs <paramref name="note"/> as its provider.</summary>
    public static SignedDebitNote Create(DebitNote note, PrivateKey provider)
    {
        ArgumentNullException.ThrowIfNull(note);
        ArgumentNullException.ThrowIfNull(provider);
        if (!note.IsWellFormed() || !provider.PeerId.Bytes.SequenceEqual(note.Provider))
        {
            throw new ArgumentException("malformed debit note, or one naming another provider", nameof(note));
        }
        var payload = MessagePackSerializer.Serialize(note, SignedEnvelope.Untrusted);
        var envelope = SignedEnvelope.Seal(provider, Domain, payload).Encode();
        KeyCache.TryPeer(note.Requester, out var requester);
        return new SignedDebitNote(envelope, note, provider.PeerId, requester);
    }

    /// <summary>Decodes untrusted bytes: size, shape, the provider's signature, the derived amount.</summary>
    public static Verified<SignedDebitNote> Decode(ReadOnlyMemory<byte> bytes, CreditsOptions options)
    {
        var status = EnvelopeView.TryRead(bytes, options, out var envelope);
        if (status != EnvelopeStatus.Valid)
        {
            return Verified<SignedDebitNote>.Fail(status == EnvelopeStatus.TooLarge ? VerifyStatus.TooLarge : VerifyStatus.Malformed);
        }
        if (!SignedEnvelope.TryDeserialize(envelope.Payload, out DebitNote? note))
        {
            return Verified<SignedDebitNote>.Fail(VerifyStatus.Malformed);
        }
        if (!note.IsWellFormed())
        {
            return Verified<SignedDebitNote>.Fail(Receipt.TryComputeAmount(note.CumulativeFuel, note.PricePerMillionFuel, out var a)
                && a != note.CumulativeAmount ? VerifyStatus.AmountMismatch : VerifyStatus.Malformed);
        }
        if (envelope.Open(Domain, out var signer) != EnvelopeStatus.Valid)
        {
            return Verified<SignedDebitNote>.Fail(VerifyStatus.BadSignature);
        }
        var signerId = PeerId.FromPublicKey(signer!);
        if (!signerId.Bytes.SequenceEqual(note.Provider))
        {
            return Verified<SignedDebitNote>.Fail(VerifyStatus.WrongSigner);
        }
        KeyCache.TryPeer(note.Requester, out var requester);
        return new(VerifyStatus.Valid, new SignedDebitNote(bytes.ToArray(), note, signerId, requester));
    }

    /// <summary>The receipt that pays this note: for the slice's own lease id, the cumulative fuel, and the amount due.</summary>
    public Receipt Payment(DateTimeOffset now) => new()
    {
        ReceiptId = Receipt.ComputeId(DebitNoteSlicing.SliceLeaseId(Note.LeaseId, Note.SliceIndex), Provider, Requester),
        LeaseId = DebitNoteSlicing.SliceLeaseId(Note.LeaseId, Note.SliceIndex),
        Requester = Note.Requester,
        Provider = Note.Provider,
        FuelUsed = Note.CumulativeFuel,
        PricePerMillionFuel = Note.PricePerMillionFuel,
        Amount = Note.Due,
        AttestationHash = Hash,
        TimestampUnixMs = now.ToUnixTimeMilliseconds(),
        PaidBefore = Note.PaidBefore,
    };

    /// <summary>What the provider checks the payment of this note against.</summary>
    public ReceiptExpectation Expectation() =>
        new(DebitNoteSlicing.SliceLeaseId(Note.LeaseId, Note.SliceIndex), Requester, Provider, Note.CumulativeFuel, Note.PricePerMillionFuel, Hash)
        {
            PaidBefore = Note.PaidBefore,
        };
}

/// <summary>Why a requester refused a debit note (<see cref="DebitNoteBook.Check"/>).</summary>
public enum DebitNoteVerdict
{
    Valid,
    /// <summary>Does not decode, or its signature or amount does not check.</summary>
    Invalid,
    /// <summary>Names another lease, requester or provider.</summary>
    NotThisLease,
    /// <summary>Another price than the agreed one.</summary>
    WrongPrice,
    /// <summary>Not the next slice: a replay of one already paid, or one skipped ahead.</summary>
    OutOfOrder,
    /// <summary>Claims other fuel than exactly (index + 1) × slice, or reaches the fuel limit (the final receipt pays that).</summary>
    WrongFuel,
    /// <summary>Says earlier notes were paid another amount than they were.</summary>
    WrongPaidBefore,
    /// <summary>More notes than the requester pays on one lease.</summary>
    TooMany,
}

/// <summary>
/// The requester's side of one lease's debit notes, pure: checks each note against the signed terms and what it paid
/// before, and tracks what the notes have paid (for the final receipt's <see cref="Receipt.PaidBefore"/> and the check that
/// the final attestation covers the fuel paid for). Not thread-safe.
/// </summary>
public sealed class DebitNoteBook(LeaseTerms terms, byte[] leaseId, PeerId requester, PeerId provider, int maxNotes)
{
    /// <summary>The next slice index a note may name.</summary>
    public int NextIndex { get; private set; }

    /// <summary>Fuel paid for by notes: the last paid note's cumulative fuel.</summary>
    public ulong PaidFuel { get; private set; }

    /// <summary>Micro-credits paid by notes: the last paid note's cumulative amount.</summary>
    public long PaidAmount { get; private set; }

    public LeaseTerms Terms => terms;

    public DebitNoteVerdict Check(SignedDebitNote signed)
    {
        ArgumentNullException.ThrowIfNull(signed);
        var n = signed.Note;
        if (!n.LeaseId.AsSpan().SequenceEqual(leaseId) || signed.Provider != provider || signed.Requester != requester)
        {
            return DebitNoteVerdict.NotThisLease;
        }
        if (n.PricePerMillionFuel != (ulong)Math.Max(0, terms.PricePerMegaFuel))
        {
            return DebitNoteVerdict.WrongPrice;
        }
        if (n.SliceIndex != NextIndex)
        {
            return DebitNoteVerdict.OutOfOrder;
        }
        if (n.SliceIndex >= maxNotes)
        {
            return DebitNoteVerdict.TooMany;
        }
        var boundary = ((UInt128)(ulong)n.SliceIndex + 1UL) * (ulong)Math.Max(0, terms.DebitNoteFuel);
        if (terms.DebitNoteFuel <= 0 || boundary != n.CumulativeFuel || boundary >= (ulong)Math.Max(0, terms.FuelLimit))
        {
            return DebitNoteVerdict.WrongFuel;
        }
        return n.PaidBefore != PaidAmount ? DebitNoteVerdict.WrongPaidBefore : DebitNoteVerdict.Valid;
    }

    /// <summary>Records a checked note as paid.</summary>
    public void Paid(SignedDebitNote signed)
    {
        if (Check(signed) != DebitNoteVerdict.Valid)
        {
            throw new InvalidOperationException("only a note that checks is paid");
        }
        NextIndex++;
        PaidFuel = signed.Note.CumulativeFuel;
        PaidAmount = signed.Note.CumulativeAmount;
    }
}
