using MessagePack;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Topics;
using Potluck.Tests;

namespace Potluck.Node.Tests.Adversarial;

/// <summary>
/// TEST FIXTURE, NOT PRODUCTION CODE: how a node built before batch blocks (main at 91126f0, before branch chainbatch was
/// merged) reads a <c>potluck/chain/2</c> message, copied from that commit so tests can ask what such a node makes of what
/// this build sends. Copied: the half-block schema and its <c>CheckShape</c> (<see cref="Potluck.Tests.PreBatchHalfBlock"/>,
/// shared with the Scheduler tests); <c>ChainOptions</c>' defaults then (1,024-byte blocks, 512-byte payloads); <c>BlockPair</c>,
/// <c>BlockBatch</c> and <c>ChainCodec.TryDecode</c>'s checks of a batch (1–64 pairs, none null); and
/// <c>TrustChainService.ValidateBatch</c>/<c>ValidatePair</c>/<c>SignedBlock.Decode</c>/<c>LinkedBy</c>: every pair's two
/// blocks decode, have a valid shape and their author's signature, link, and are agreed by the message's author, or the
/// whole message is rejected (and the node that sent it scored down). Left out, as they only ever ignore: the per-pair
/// receipts budget and the known-forker check. The envelope format and the signature check are today's (unchanged since).
/// Public, as MessagePack's dynamic resolver reads only public types.
/// </summary>
public static class PreBatchChainGossip
{
    /// <summary>91126f0's <c>ChainOptions.MaxBlockBytes</c> default.</summary>
    public const int MaxBlockBytes = 1024;

    /// <summary>91126f0's <c>ChainOptions.MaxPayloadBytes</c> default.</summary>
    public const int MaxPayloadBytes = 512;

    private const int MaxPairsPerBatch = 64;

    private static int MaxPairBytes => (2 * MaxBlockBytes) + 16;

    private static int MaxBatchBytes => (MaxPairsPerBatch * (MaxPairBytes + 8)) + 16;

    [MessagePackObject]
    public sealed class OldBlockPair
    {
        [Key(0)] public byte[] First { get; init; } = [];
        [Key(1)] public byte[] Second { get; init; } = [];
    }

    [MessagePackObject]
    public sealed class OldBlockBatch
    {
        [Key(0)] public List<OldBlockPair> Pairs { get; init; } = [];
    }

    /// <summary>A block as 91126f0 decoded it: shape, then the author's signature over the exact payload.</summary>
    private sealed record OldSignedBlock(PreBatchHalfBlock Block, byte[] Hash, PeerId Author, PeerId Counterparty);

    /// <summary>91126f0's <c>SignedBlock.Decode</c>: null where it returned anything but Valid.</summary>
    private static OldSignedBlock? Decode(byte[] envelopeBytes)
    {
        var options = new CreditsOptions { MaxEnvelopeBytes = MaxBlockBytes, MaxPayloadBytes = MaxPayloadBytes };
        if (EnvelopeView.TryRead(envelopeBytes, options, out var envelope) != EnvelopeStatus.Valid
            || !SignedEnvelope.TryDeserialize(envelope.Payload, out PreBatchHalfBlock? decoded) || !decoded.ShapeValid()
            || envelope.Open(SignedBlock.Domain, out var signer) != EnvelopeStatus.Valid
            || !PeerId.FromPublicKey(signer!).Bytes.SequenceEqual(decoded.Author))
        {
            return null;
        }
        PeerId.TryFromBytes(decoded.Author, out var author);
        PeerId.TryFromBytes(decoded.Counterparty, out var counterparty);
        return new OldSignedBlock(decoded, System.Security.Cryptography.SHA256.HashData(envelope.Payload.Span), author, counterparty);
    }

    /// <summary>91126f0's <c>SignedBlock.LinkedBy</c>.</summary>
    private static bool LinkedBy(OldSignedBlock proposal, OldSignedBlock agreement)
    {
        var p = proposal.Block;
        var a = agreement.Block;
        return p.Kind == BlockKind.Proposal && a.Kind == BlockKind.Agreement
            && agreement.Author == proposal.Counterparty && agreement.Counterparty == proposal.Author
            && a.LinkSeq == p.Seq && a.LinkHash.AsSpan().SequenceEqual(proposal.Hash)
            && a.ReceiptId.AsSpan().SequenceEqual(p.ReceiptId) && a.LeaseId.AsSpan().SequenceEqual(p.LeaseId)
            && a.Amount == p.Amount && a.FuelUsed == p.FuelUsed;
    }

    /// <summary>91126f0's verdict on a <c>potluck/chain/2</c> message: Accept, or Reject (and the sender scored down).</summary>
    public static TopicVerdict Validate(TopicMessage message)
    {
        if (message.Data.Length > MaxBatchBytes || !SignedEnvelope.TryDeserialize(message.Data, out OldBlockBatch? batch)
            || batch.Pairs is not { Count: > 0 and <= MaxPairsPerBatch } || !batch.Pairs.TrueForAll(p => p is { First: not null, Second: not null })
            || message.Author is not { } author)
        {
            return TopicVerdict.Reject;
        }
        foreach (var pair in batch.Pairs)
        {
            if (Decode(pair.First) is not { } proposal || Decode(pair.Second) is not { } agreement || !LinkedBy(proposal, agreement)
                || author != agreement.Author)
            {
                return TopicVerdict.Reject;
            }
        }
        return TopicVerdict.Accept;
    }
}
