using MessagePack;
using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Accounting;

/// <summary>Names of the accounting protocols.</summary>
public static class ChainProtocol
{
    /// <summary>
    /// The requester opens a stream, sends one <see cref="ChainProposal"/> (unsigned-varint length-prefixed), and the
    /// provider answers one <see cref="ChainAnswer"/>: its agreement half-block, or why not.
    /// </summary>
    public const string Id = "/potluck/chain/1.0.0";

    /// <summary>
    /// Several proposals to one provider on one stream: the requester sends up to <see cref="MaxProposalsPerStream"/>
    /// <see cref="ChainProposal"/>s one after another, each framed as on <see cref="Id"/>, and ends its side; the provider
    /// reads them to the end and answers each in order with a <see cref="ChainAnswer"/>. One more resets the stream, unanswered. A
    /// requester offers this first and <see cref="Id"/> second, so an older provider gets one proposal per stream.
    /// </summary>
    public const string BatchId = "/potluck/chain/1.1.0";

    /// <summary>
    /// As <see cref="BatchId"/>, and the provider reads batch blocks (<see cref="ChainBlock.Payments"/>): a requester
    /// proposes a batch block only to a provider whose identify lists this protocol, and single-payment blocks to any
    /// other (an older provider refuses a batch block as malformed).
    /// </summary>
    public const string BatchBlocksId = "/potluck/chain/1.2.0";

    /// <summary>Most proposals on one <see cref="BatchId"/> stream.</summary>
    public const int MaxProposalsPerStream = 64;

    /// <summary>Gossip topic of completed payments (a proposal and its agreement), so forks meet wherever they are held.</summary>
    public const string BlocksTopic = "potluck/chain/1";

    /// <summary>
    /// Gossip topic of completed payments in batches: one <see cref="BlockBatch"/> of up to <see cref="MaxPairsPerBatch"/>
    /// linked pairs, all agreed by the message's author (the payee), so one gossip signature covers a round's payments
    /// instead of one each. A node publishes here and listens on both topics (<see cref="BlocksTopic"/> for older nodes,
    /// which do not hear these batches). Pairs of batch blocks (<see cref="ChainBlock.Payments"/>) travel here too; a node
    /// built before batch blocks rejects a message holding one as malformed.
    /// </summary>
    public const string BlockBatchesTopic = "potluck/chain/2";

    /// <summary>Most pairs in one <see cref="BlockBatch"/> (a stream's proposals).</summary>
    public const int MaxPairsPerBatch = MaxProposalsPerStream;

    /// <summary>Gossip topic of fork proofs.</summary>
    public const string ForksTopic = "potluck/fork/1";

    /// <summary>Most bytes of a message carrying two half-blocks: two blocks and the framing.</summary>
    public static int MaxPairBytes(ChainOptions options) => (2 * options.MaxBlockBytes) + 16;

    /// <summary>Most bytes of a <see cref="BlockBatch"/>: <see cref="MaxPairsPerBatch"/> pairs and the framing.</summary>
    public static int MaxBatchBytes(ChainOptions options) => (MaxPairsPerBatch * (MaxPairBytes(options) + 8)) + 16;
}

/// <summary>A requester's proposal half-block and, unless it is the first of its chain, the block before it (for continuity).</summary>
[MessagePackObject]
public sealed class ChainProposal
{
    [Key(0)] public byte[] Proposal { get; init; } = [];

    /// <summary>The author's block <c>Seq − 1</c>; empty for seq 1.</summary>
    [Key(1)] public byte[] Previous { get; init; } = [];
}

public enum ChainAnswerStatus
{
    /// <summary>Linked: <see cref="ChainAnswer.Agreement"/> is the provider's half-block.</summary>
    Agreed = 0,
    /// <summary>Not linked (malformed, discontinuous, no such payment here, or a fork): <see cref="ChainAnswer.Detail"/> says why.</summary>
    Refused = 1,
}

[MessagePackObject]
public sealed class ChainAnswer
{
    public const int MaxDetailLength = 200;

    [Key(0)] public ChainAnswerStatus Status { get; init; }

    [Key(1)] public byte[] Agreement { get; init; } = [];

    [Key(2)] public string Detail { get; init; } = "";
}

/// <summary>
/// Two half-blocks: a proposal with its agreement (<see cref="ChainProtocol.BlocksTopic"/>), or the two blocks of a
/// fork proof (<see cref="ChainProtocol.ForksTopic"/>).
/// </summary>
[MessagePackObject]
public sealed class BlockPair
{
    [Key(0)] public byte[] First { get; init; } = [];

    [Key(1)] public byte[] Second { get; init; } = [];
}

/// <summary>Completed payments agreed by one payee (<see cref="ChainProtocol.BlockBatchesTopic"/>): 1 to <see cref="ChainProtocol.MaxPairsPerBatch"/> pairs.</summary>
[MessagePackObject]
public sealed class BlockBatch
{
    [Key(0)] public List<BlockPair> Pairs { get; init; } = [];
}

/// <summary>Bounded decoding of the accounting messages from untrusted bytes.</summary>
public static class ChainCodec
{
    public static byte[] Encode<T>(T message) where T : class => MessagePackSerializer.Serialize(message, Credits.SignedEnvelope.Untrusted);

    /// <summary>Decodes one message of type <typeparamref name="T"/> no larger than <paramref name="maxBytes"/>; false on anything else.</summary>
    public static bool TryDecode<T>(ReadOnlyMemory<byte> bytes, int maxBytes, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out T? message)
        where T : class
    {
        message = null;
        if (bytes.Length > maxBytes || !Credits.SignedEnvelope.TryDeserialize(bytes, out T? decoded))
        {
            return false;
        }
        var fieldsPresent = decoded switch
        {
            ChainProposal p => p.Proposal is not null && p.Previous is not null,
            ChainAnswer a => a.Agreement is not null && a.Detail is not null && Enum.IsDefined(a.Status) && a.Detail.Length <= ChainAnswer.MaxDetailLength,
            BlockPair b => b.First is not null && b.Second is not null,
            BlockBatch b => b.Pairs is { Count: > 0 and <= ChainProtocol.MaxPairsPerBatch } && b.Pairs.TrueForAll(p => p is { First: not null, Second: not null }),
            ChainQuery q => q.Max > 0,
            ChainHistoryQuery h => h.Seqs is not null && h.Seqs.Count <= ChainHistoryProtocol.MaxSeqs,
            ChainQueryAnswer q => q.Blocks is not null && q.Links is not null && !q.Blocks.Contains(null!) && !q.Links.Contains(null!),
            _ => true,
        };
        if (!fieldsPresent)
        {
            return false;
        }
        message = decoded;
        return true;
    }
}

/// <summary>
/// Two different signed half-blocks by one author with one seq: proof that the author showed two histories. Anyone
/// checks it offline with <see cref="Check"/> (two signature checks). An honest node never signs two blocks at one seq: it
/// stores each block before it leaves, and a block that never left is forgotten with the crash that lost it.
/// </summary>
public sealed class ForkProof
{
    private ForkProof(SignedBlock first, SignedBlock second, byte[] encoded)
    {
        First = first;
        Second = second;
        Encoded = encoded;
    }

    public SignedBlock First { get; }

    public SignedBlock Second { get; }

    /// <summary>The forker.</summary>
    public PeerId Author => First.Author;

    public ulong Seq => First.Seq;

    /// <summary>The proof as it travels: a <see cref="BlockPair"/>, the two blocks in byte order (so one fork has one encoding).</summary>
    public byte[] Encoded { get; }

    /// <summary>A proof from two blocks already checked; <see cref="BlockStatus.NotAFork"/> when they are not one.</summary>
    public static BlockStatus From(SignedBlock a, SignedBlock b, out ForkProof? proof)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        proof = null;
        if (a.Author != b.Author || a.Seq != b.Seq || a.Payload.AsSpan().SequenceEqual(b.Payload))
        {
            return BlockStatus.NotAFork;
        }
        var (first, second) = a.Payload.AsSpan().SequenceCompareTo(b.Payload) < 0 ? (a, b) : (b, a);
        proof = new ForkProof(first, second, ChainCodec.Encode(new BlockPair { First = first.EnvelopeBytes, Second = second.EnvelopeBytes }));
        return BlockStatus.Valid;
    }

    /// <summary>Decodes and checks a proof from untrusted bytes: both blocks valid and signed by one author, one seq, different payloads.</summary>
    public static BlockStatus Check(ReadOnlyMemory<byte> bytes, ChainOptions options, out ForkProof? proof)
    {
        ArgumentNullException.ThrowIfNull(options);
        proof = null;
        if (bytes.Length > ChainProtocol.MaxPairBytes(options))
        {
            return BlockStatus.TooLarge;
        }
        if (!ChainCodec.TryDecode(bytes, ChainProtocol.MaxPairBytes(options), out BlockPair? pair))
        {
            return BlockStatus.Malformed;
        }
        var status = SignedBlock.Decode(pair.First, options, out var a);
        if (status != BlockStatus.Valid)
        {
            return status;
        }
        status = SignedBlock.Decode(pair.Second, options, out var b);
        return status != BlockStatus.Valid ? status : From(a!, b!, out proof);
    }
}
