using System.Security.Cryptography;
using MessagePack;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;

namespace Potluck.Scheduler.Accounting;

/// <summary>Whether a half-block proposes a payment (the payer's) or agrees to one (the payee's, linked to the proposal).</summary>
public enum BlockKind
{
    /// <summary>The requester's half-block for a receipt it paid: <see cref="ChainBlock.LinkSeq"/> 0, no link hash.</summary>
    Proposal = 0,

    /// <summary>The provider's half-block for a receipt it was paid: links to the requester's proposal by seq and hash.</summary>
    Agreement = 1,
}

/// <summary>
/// One half-block of a personal, hash-chained history, after TrustChain (Otte, de Vos and Pouwelse 2017; Tribler's
/// py-ipv8 <c>ipv8/attestation/trustchain/block.py</c>): author, sequence number, previous hash, link public key (here the
/// counterparty's peer id), link sequence number, and the transaction — here one payment: the receipt id, lease, amount
/// and fuel of a <see cref="Receipt"/>. The requester's proposal has link seq 0; the provider's agreement names the
/// proposal's seq and, beyond TrustChain, its hash, so an agreement can never be read as linking to the other branch of
/// a fork. The block's hash is SHA-256 of its payload bytes exactly as signed (<see cref="SignedBlock.Hash"/>); the first
/// block of a chain has seq 1 and a previous hash of 32 zero bytes. MessagePack array, integer keys 0–11.
/// <para>
/// A <b>batch block</b> (key 12, <see cref="Payments"/>: 1 to <see cref="MaxPayments"/> payments between the same two
/// parties, each a receipt id, lease, amount and fuel) covers several payments with one signature on each side. Its key 7
/// is then the batch id (<see cref="BatchIdOf"/>, over the payments' receipt ids, never a receipt's id), key 8 is empty,
/// and keys 9 and 10 are the payments' checked sums, so whatever sums amounts over blocks reads both kinds the same. A
/// single-payment block has no key 12 and is read as before; an older node refuses a batch block as malformed (empty
/// lease id) rather than misreading it.
/// </para>
/// </summary>
[MessagePackObject]
public sealed class ChainBlock
{
    public const int HashLength = 32;

    /// <summary>The author's peer id (multihash bytes): the signer.</summary>
    [Key(0)] public required byte[] Author { get; init; }

    /// <summary>1 for the author's first block, then one more for each.</summary>
    [Key(1)] public ulong Seq { get; init; }

    /// <summary>The hash of the author's block <c>Seq − 1</c>; 32 zero bytes for seq 1.</summary>
    [Key(2)] public required byte[] Previous { get; init; }

    /// <summary>The other party's peer id (TrustChain's link public key).</summary>
    [Key(3)] public required byte[] Counterparty { get; init; }

    /// <summary>0 in a proposal; in an agreement, the seq of the proposal it links to.</summary>
    [Key(4)] public ulong LinkSeq { get; init; }

    /// <summary>Empty in a proposal; in an agreement, the hash of the proposal it links to.</summary>
    [Key(5)] public byte[] LinkHash { get; init; } = [];

    [Key(6)] public BlockKind Kind { get; init; }

    /// <summary>The id of the receipt paid (derived from lease, provider and requester: <see cref="Receipt.ComputeId"/>).</summary>
    [Key(7)] public required byte[] ReceiptId { get; init; }

    [Key(8)] public required byte[] LeaseId { get; init; }

    /// <summary>Micro-credits paid by the requester to the provider.</summary>
    [Key(9)] public long Amount { get; init; }

    [Key(10)] public ulong FuelUsed { get; init; }

    [Key(11)] public long TimestampUnixMs { get; init; }

    /// <summary>Most payments in one batch block.</summary>
    public const int MaxPayments = 64;

    /// <summary>A batch block's payments (1 to <see cref="MaxPayments"/>, distinct receipt ids); null in a single-payment block.</summary>
    [Key(12)] public List<ChainPayment>? Payments { get; init; }

    /// <summary>Whether this block covers a batch of payments (<see cref="Payments"/>) rather than one.</summary>
    [IgnoreMember] public bool IsBatch => Payments is not null;

    /// <summary>The payments this block records: its <see cref="Payments"/>, or the one payment of a single-payment block.</summary>
    [IgnoreMember] public IReadOnlyList<ChainPayment> AllPayments => Payments
        ?? [new ChainPayment { ReceiptId = ReceiptId, LeaseId = LeaseId, Amount = Amount, FuelUsed = FuelUsed }];

    /// <summary>The domain of a batch id (prefix-free with the signature domains).</summary>
    private static ReadOnlySpan<byte> BatchIdDomain => "potluck-chain-batch-id:"u8;

    /// <summary>A batch block's key 7: SHA-256 over a domain and the payments' receipt ids in order.</summary>
    public static byte[] BatchIdOf(IReadOnlyList<ChainPayment> payments)
    {
        ArgumentNullException.ThrowIfNull(payments);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(BatchIdDomain);
        foreach (var p in payments)
        {
            hash.AppendData(p.ReceiptId);
        }
        return hash.GetHashAndReset();
    }

    /// <summary>The payer: the author of a proposal, the counterparty of an agreement.</summary>
    [IgnoreMember] public byte[] Payer => Kind == BlockKind.Proposal ? Author : Counterparty;

    /// <summary>The payee: the counterparty of a proposal, the author of an agreement.</summary>
    [IgnoreMember] public byte[] Payee => Kind == BlockKind.Proposal ? Counterparty : Author;

    /// <summary>Everything anyone can check on one block alone (sizes, parties, seq and previous hash, link shape, the derived receipt id).</summary>
    internal BlockStatus CheckShape()
    {
        if (Author is null || Previous is null || Counterparty is null || LinkHash is null || ReceiptId is null || LeaseId is null
            || !Enum.IsDefined(Kind) || Previous.Length != HashLength || ReceiptId.Length != Receipt.IdLength
            || (Payments is null ? LeaseId.Length is 0 or > Attestation.MaxLeaseIdLength : LeaseId.Length != 0) || Amount < 0
            || !KeyCache.TryPeer(Author, out var author) || !KeyCache.TryPeer(Counterparty, out var counterparty))
        {
            return BlockStatus.Malformed;
        }
        if (author == counterparty)
        {
            return BlockStatus.SelfDealing;
        }
        if (Seq is 0 or > long.MaxValue || LinkSeq > long.MaxValue || (Seq == 1) != Previous.AsSpan().IndexOfAnyExcept((byte)0) < 0)
        {
            return BlockStatus.BadSequence;
        }
        var linkShape = Kind == BlockKind.Proposal
            ? LinkSeq == 0 && LinkHash.Length == 0
            : LinkSeq >= 1 && LinkHash.Length == HashLength;
        if (!linkShape)
        {
            return BlockStatus.BadLink;
        }
        KeyCache.TryPeer(Payer, out var payer);
        KeyCache.TryPeer(Payee, out var payee);
        if (Payments is not null)
        {
            return CheckBatchShape(payer, payee);
        }
        return Receipt.ComputeId(LeaseId, payee, payer).AsSpan().SequenceEqual(ReceiptId) ? BlockStatus.Valid : BlockStatus.ReceiptIdMismatch;
    }

    /// <summary>
    /// The shape of a batch block: 1 to <see cref="MaxPayments"/> well-formed payments, distinct receipt ids each derived
    /// from its lease and the two parties, key 7 the batch id, key 8 empty, keys 9 and 10 the exact (checked) sums.
    /// </summary>
    private BlockStatus CheckBatchShape(PeerId payer, PeerId payee)
    {
        var payments = Payments!;
        if (payments.Count is 0 or > MaxPayments || LeaseId.Length != 0 || ReceiptId.Length != Receipt.IdLength)
        {
            return BlockStatus.Malformed;
        }
        long amount = 0;
        ulong fuel = 0;
        var ids = new HashSet<Digest32>(payments.Count);
        foreach (var p in payments)
        {
            if (p is null || p.ReceiptId is null || p.LeaseId is null || p.ReceiptId.Length != Receipt.IdLength
                || p.LeaseId.Length is 0 or > Attestation.MaxLeaseIdLength || p.Amount < 0
                || amount > long.MaxValue - p.Amount || fuel > ulong.MaxValue - p.FuelUsed)
            {
                return BlockStatus.Malformed;
            }
            amount += p.Amount;
            fuel += p.FuelUsed;
            if (!ids.Add(new Digest32(p.ReceiptId)))
            {
                return BlockStatus.Malformed; // one payment twice in one block
            }
            if (!Receipt.ComputeId(p.LeaseId, payee, payer).AsSpan().SequenceEqual(p.ReceiptId))
            {
                return BlockStatus.ReceiptIdMismatch;
            }
        }
        if (amount != Amount || fuel != FuelUsed)
        {
            return BlockStatus.Malformed;
        }
        return BatchIdOf(payments).AsSpan().SequenceEqual(ReceiptId) ? BlockStatus.Valid : BlockStatus.ReceiptIdMismatch;
    }

    /// <summary>A receipt id as a set key.</summary>
    private readonly record struct Digest32(ulong A, ulong B, ulong C, ulong D)
    {
        public Digest32(byte[] id)
            : this(BitConverter.ToUInt64(id, 0), BitConverter.ToUInt64(id, 8), BitConverter.ToUInt64(id, 16), BitConverter.ToUInt64(id, 24))
        {
        }
    }
}

/// <summary>One payment of a batch block (<see cref="ChainBlock.Payments"/>): what a single-payment block carries in keys 7–10.</summary>
[MessagePackObject]
public sealed class ChainPayment
{
    /// <summary>The id of the receipt paid (<see cref="Receipt.ComputeId"/> of the lease and the block's two parties).</summary>
    [Key(0)] public required byte[] ReceiptId { get; init; }

    [Key(1)] public required byte[] LeaseId { get; init; }

    /// <summary>Micro-credits paid.</summary>
    [Key(2)] public long Amount { get; init; }

    [Key(3)] public ulong FuelUsed { get; init; }

    /// <summary>The same payment: receipt id, lease, amount and fuel.</summary>
    public bool SameAs(ChainPayment other) =>
        other is not null && ReceiptId.AsSpan().SequenceEqual(other.ReceiptId) && LeaseId.AsSpan().SequenceEqual(other.LeaseId)
        && Amount == other.Amount && FuelUsed == other.FuelUsed;

    /// <summary>The payment a receipt records.</summary>
    public static ChainPayment Of(Receipt r)
    {
        ArgumentNullException.ThrowIfNull(r);
        return new ChainPayment { ReceiptId = r.ReceiptId, LeaseId = r.LeaseId, Amount = r.Amount, FuelUsed = r.FuelUsed };
    }
}

/// <summary>What checking a half-block, a link, a chain or a fork proof found. Anything but <see cref="Valid"/> is a rejection.</summary>
public enum BlockStatus
{
    Valid,
    /// <summary>Over the size limit; nothing was decoded.</summary>
    TooLarge,
    /// <summary>Bad MessagePack, a missing field, a field of the wrong size, or bytes after the value.</summary>
    Malformed,
    /// <summary>The signature does not verify over the payload.</summary>
    BadSignature,
    /// <summary>A valid signature by someone other than the block's author.</summary>
    WrongSigner,
    /// <summary>Author and counterparty are the same identity.</summary>
    SelfDealing,
    /// <summary>Seq 0, or seq 1 without the zero previous hash (or a later seq with it), or not one more than its predecessor.</summary>
    BadSequence,
    /// <summary>The previous hash is not the hash of the author's block before it.</summary>
    BadPrevious,
    /// <summary>A proposal with a link, an agreement without one, or an agreement that does not match its proposal.</summary>
    BadLink,
    /// <summary>The receipt id is not derived from the lease and the two parties.</summary>
    ReceiptIdMismatch,
    /// <summary>Not a fork: different authors or seqs, or the same block twice.</summary>
    NotAFork,
}

/// <summary>Limits on half-blocks and fork proofs taken from peers.</summary>
public sealed record ChainOptions
{
    /// <summary>
    /// Largest signed half-block accepted. Default 7 KiB: a single-payment block is about 420 bytes, a batch block of
    /// <see cref="ChainBlock.MaxPayments"/> payments about 3.6 KiB with 8-byte lease ids and 6.7 KiB with the longest
    /// (64 bytes). A proposer splits a batch by bytes as well as by count, so lower limits only make smaller batches.
    /// </summary>
    public int MaxBlockBytes { get; init; } = 7 * 1024;

    /// <summary>Largest payload in a half-block envelope. Default 6.75 KiB.</summary>
    public int MaxPayloadBytes { get; init; } = (7 * 1024) - 256;

    internal CreditsOptions Envelope => new() { MaxEnvelopeBytes = MaxBlockBytes, MaxPayloadBytes = MaxPayloadBytes };
}

/// <summary>
/// A half-block with its signature: <see cref="EnvelopeBytes"/> are the exact bytes that travel and are stored (a
/// <see cref="SignedEnvelope"/> under <see cref="Domain"/>). Only obtainable by signing (<see cref="Sign"/>) or by a
/// successful check (<see cref="Decode"/>), so a <see cref="SignedBlock"/> in hand is always signed by its author.
/// </summary>
public sealed class SignedBlock
{
    /// <summary>The signature domain of half-blocks (prefix-free with the others in <see cref="SignatureDomains"/>).</summary>
    public const string Domain = "potluck-chain-block:";

    private SignedBlock(byte[] envelopeBytes, byte[] payload, ChainBlock block, PeerId author, PeerId counterparty)
    {
        EnvelopeBytes = envelopeBytes;
        Payload = payload;
        Block = block;
        Author = author;
        Counterparty = counterparty;
        Hash = SHA256.HashData(payload);
    }

    public byte[] EnvelopeBytes { get; }

    /// <summary>The payload exactly as signed.</summary>
    public byte[] Payload { get; }

    public ChainBlock Block { get; }

    public PeerId Author { get; }

    public PeerId Counterparty { get; }

    /// <summary>SHA-256 of <see cref="Payload"/>: what the next block's previous hash and an agreement's link hash name.</summary>
    public byte[] Hash { get; }

    public ulong Seq => Block.Seq;

    /// <summary>Signs the proposal half-block for a payment <paramref name="author"/> made (<paramref name="r"/>), at <paramref name="seq"/> after <paramref name="previous"/>.</summary>
    public static SignedBlock Propose(Receipt r, PrivateKey author, ulong seq, byte[] previous, DateTimeOffset now) => Sign(new ChainBlock
    {
        Author = author.PeerId.ToBytes(),
        Seq = seq,
        Previous = previous,
        Counterparty = r.Provider,
        Kind = BlockKind.Proposal,
        ReceiptId = r.ReceiptId,
        LeaseId = r.LeaseId,
        Amount = r.Amount,
        FuelUsed = r.FuelUsed,
        TimestampUnixMs = now.ToUnixTimeMilliseconds(),
    }, author);

    /// <summary>
    /// Signs the proposal batch block for payments <paramref name="author"/> made to one provider (<paramref name="receipts"/>,
    /// 2 to <see cref="ChainBlock.MaxPayments"/>, all to <paramref name="provider"/>), at <paramref name="seq"/> after <paramref name="previous"/>.
    /// </summary>
    public static SignedBlock ProposeBatch(IReadOnlyList<Receipt> receipts, PrivateKey author, ulong seq, byte[] previous, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(receipts);
        var payments = receipts.Select(ChainPayment.Of).ToList();
        long amount = 0;
        ulong fuel = 0;
        foreach (var p in payments)
        {
            amount = checked(amount + p.Amount);
            fuel = checked(fuel + p.FuelUsed);
        }
        return Sign(new ChainBlock
        {
            Author = author.PeerId.ToBytes(),
            Seq = seq,
            Previous = previous,
            Counterparty = receipts[0].Provider,
            Kind = BlockKind.Proposal,
            ReceiptId = ChainBlock.BatchIdOf(payments),
            LeaseId = [],
            Amount = amount,
            FuelUsed = fuel,
            TimestampUnixMs = now.ToUnixTimeMilliseconds(),
            Payments = payments,
        }, author);
    }

    /// <summary>Signs <paramref name="block"/> as its author.</summary>
    /// <exception cref="ArgumentException">The block is malformed or names another author.</exception>
    public static SignedBlock Sign(ChainBlock block, PrivateKey author)
    {
        ArgumentNullException.ThrowIfNull(block);
        ArgumentNullException.ThrowIfNull(author);
        var shape = block.CheckShape();
        if (shape != BlockStatus.Valid)
        {
            throw new ArgumentException($"malformed half-block: {shape}", nameof(block));
        }
        if (!author.PeerId.Bytes.SequenceEqual(block.Author))
        {
            throw new ArgumentException("only a block's author may sign it", nameof(author));
        }
        var payload = MessagePackSerializer.Serialize(block, SignedEnvelope.Untrusted);
        var envelope = SignedEnvelope.Seal(author, Domain, payload);
        KeyCache.TryPeer(block.Counterparty, out var counterparty);
        return new SignedBlock(envelope.Encode(), payload, block, author.PeerId, counterparty);
    }

    /// <summary>Decodes untrusted bytes and checks what anyone can check of one block: size, shape and the author's signature.</summary>
    public static BlockStatus Decode(ReadOnlyMemory<byte> envelopeBytes, ChainOptions options, out SignedBlock? block)
    {
        ArgumentNullException.ThrowIfNull(options);
        block = null;
        var status = EnvelopeView.TryRead(envelopeBytes, options.Envelope, out var envelope);
        if (status != EnvelopeStatus.Valid)
        {
            return status == EnvelopeStatus.TooLarge ? BlockStatus.TooLarge : BlockStatus.Malformed;
        }
        if (!SignedEnvelope.TryDeserialize(envelope.Payload, out ChainBlock? decoded))
        {
            return BlockStatus.Malformed;
        }
        var shape = decoded.CheckShape();
        if (shape != BlockStatus.Valid)
        {
            return shape;
        }
        if (envelope.Open(Domain, out var signer) != EnvelopeStatus.Valid)
        {
            return BlockStatus.BadSignature;
        }
        var signerId = PeerId.FromPublicKey(signer!);
        if (!signerId.Bytes.SequenceEqual(decoded.Author))
        {
            return BlockStatus.WrongSigner;
        }
        KeyCache.TryPeer(decoded.Counterparty, out var counterparty);
        block = new SignedBlock(envelopeBytes.ToArray(), envelope.Payload.ToArray(), decoded, signerId, counterparty);
        return BlockStatus.Valid;
    }

    /// <summary>
    /// Decodes a block already checked by this node (its own storage, or a gossip message its validator verified) without
    /// checking the signature again: the shape is still checked, and the signer key must still be the author's.
    /// </summary>
    internal static SignedBlock? DecodeChecked(byte[] envelopeBytes)
    {
        if (!EnvelopeView.TryReadUnbounded(envelopeBytes, out var envelope)
            || !SignedEnvelope.TryDeserialize(envelope.Payload, out ChainBlock? decoded) || decoded.CheckShape() != BlockStatus.Valid
            || !KeyCache.TryPublicKey(envelope.PublicKey.Span, out var key) || !PeerId.FromPublicKey(key).Bytes.SequenceEqual(decoded.Author))
        {
            return null;
        }
        KeyCache.TryPeer(decoded.Author, out var author);
        KeyCache.TryPeer(decoded.Counterparty, out var counterparty);
        return new SignedBlock(envelopeBytes, envelope.Payload.ToArray(), decoded, author, counterparty);
    }

    /// <summary>Whether <paramref name="next"/> follows this block in its author's chain (same author, seq + 1, previous hash).</summary>
    public BlockStatus Precedes(SignedBlock next)
    {
        ArgumentNullException.ThrowIfNull(next);
        return next.Author != Author || next.Seq != Seq + 1 ? BlockStatus.BadSequence
            : !next.Block.Previous.AsSpan().SequenceEqual(Hash) ? BlockStatus.BadPrevious
            : BlockStatus.Valid;
    }

    /// <summary>Whether <paramref name="agreement"/> is the payee's half linking to this proposal, for the same payment.</summary>
    public BlockStatus LinkedBy(SignedBlock agreement)
    {
        ArgumentNullException.ThrowIfNull(agreement);
        var p = Block;
        var a = agreement.Block;
        return p.Kind == BlockKind.Proposal && a.Kind == BlockKind.Agreement
            && agreement.Author == Counterparty && agreement.Counterparty == Author
            && a.LinkSeq == p.Seq && a.LinkHash.AsSpan().SequenceEqual(Hash)
            && a.ReceiptId.AsSpan().SequenceEqual(p.ReceiptId) && a.LeaseId.AsSpan().SequenceEqual(p.LeaseId)
            && a.Amount == p.Amount && a.FuelUsed == p.FuelUsed && SamePayments(p.Payments, a.Payments)
            ? BlockStatus.Valid
            : BlockStatus.BadLink;
    }

    /// <summary>Both single-payment, or both batches of the same payments in the same order.</summary>
    private static bool SamePayments(List<ChainPayment>? a, List<ChainPayment>? b)
    {
        if (a is null || b is null)
        {
            return a is null && b is null;
        }
        if (a.Count != b.Count)
        {
            return false;
        }
        for (var i = 0; i < a.Count; i++)
        {
            if (!a[i].SameAs(b[i]))
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>The genesis previous hash: 32 zero bytes.</summary>
    public static byte[] Genesis => new byte[ChainBlock.HashLength];
}
