using MessagePack;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;

namespace Potluck.Tests;

/// <summary>
/// TEST FIXTURE, NOT PRODUCTION CODE: a TrustChain half-block exactly as nodes built before batch blocks (main at 91126f0)
/// wrote and read it: a MessagePack array of keys 0–11, no key 12 (reading a batch block, key 12 is skipped and its empty
/// lease id is malformed), with that commit's <c>ChainBlock.CheckShape</c> as <see cref="ShapeValid"/>. Used by the Node
/// tests' <c>PreBatchChainGossip</c> (what an older node makes of this build's gossip) and the Scheduler tests'
/// <c>ChainBatchBlockEncodingTests</c> (this build still reads what older nodes wrote). Public, as MessagePack's dynamic
/// resolver reads only public types.
/// </summary>
[MessagePackObject]
public sealed class PreBatchHalfBlock
{
    [Key(0)] public required byte[] Author { get; init; }
    [Key(1)] public ulong Seq { get; init; }
    [Key(2)] public required byte[] Previous { get; init; }
    [Key(3)] public required byte[] Counterparty { get; init; }
    [Key(4)] public ulong LinkSeq { get; init; }
    [Key(5)] public byte[] LinkHash { get; init; } = [];
    [Key(6)] public BlockKind Kind { get; init; }
    [Key(7)] public required byte[] ReceiptId { get; init; }
    [Key(8)] public required byte[] LeaseId { get; init; }
    [Key(9)] public long Amount { get; init; }
    [Key(10)] public ulong FuelUsed { get; init; }
    [Key(11)] public long TimestampUnixMs { get; init; }

    [IgnoreMember] public byte[] Payer => Kind == BlockKind.Proposal ? Author : Counterparty;

    [IgnoreMember] public byte[] Payee => Kind == BlockKind.Proposal ? Counterparty : Author;

    /// <summary>91126f0's <c>ChainBlock.CheckShape</c>, as it was.</summary>
    public bool ShapeValid()
    {
        if (Author is null || Previous is null || Counterparty is null || LinkHash is null || ReceiptId is null || LeaseId is null
            || !Enum.IsDefined(Kind) || Previous.Length != ChainBlock.HashLength || ReceiptId.Length != Receipt.IdLength
            || LeaseId.Length is 0 or > Attestation.MaxLeaseIdLength || Amount < 0
            || !PeerId.TryFromBytes(Author, out var author) || !PeerId.TryFromBytes(Counterparty, out var counterparty))
        {
            return false;
        }
        if (author == counterparty)
        {
            return false;
        }
        if (Seq is 0 or > long.MaxValue || LinkSeq > long.MaxValue || (Seq == 1) != Previous.AsSpan().IndexOfAnyExcept((byte)0) < 0)
        {
            return false;
        }
        var linkShape = Kind == BlockKind.Proposal
            ? LinkSeq == 0 && LinkHash.Length == 0
            : LinkSeq >= 1 && LinkHash.Length == ChainBlock.HashLength;
        if (!linkShape)
        {
            return false;
        }
        PeerId.TryFromBytes(Payer, out var payer);
        PeerId.TryFromBytes(Payee, out var payee);
        return Receipt.ComputeId(LeaseId, payee, payer).AsSpan().SequenceEqual(ReceiptId);
    }
}
