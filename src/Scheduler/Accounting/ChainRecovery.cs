using MessagePack;
using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Accounting;

/// <summary>
/// <c>/potluck/chain/query/1.0.0</c>: a node that lost its ledger (and kept its identity) asks a counterparty for the
/// half-blocks it holds that the asker signed with it as counterparty, and the counterparty's own half linked to each.
/// The asker opens a stream and sends one <see cref="ChainQuery"/>; the counterparty answers one <see cref="ChainQueryAnswer"/>
/// (both unsigned-varint length-prefixed) and closes. Every block in an answer carries the asker's own signature, so a
/// counterparty can withhold blocks but never invent one; <see cref="ChainRecovery.CheckAnswer"/> rejects everything else.
/// </summary>
public static class ChainQueryProtocol
{
    public const string Id = "/potluck/chain/query/1.0.0";

    /// <summary>A query is two small integers: anything larger is refused before decoding.</summary>
    public const int MaxQueryBytes = 32;
}

/// <summary>Asks for the asker's blocks with seq above <see cref="AfterSeq"/>, at most <see cref="Max"/> of them.</summary>
[MessagePackObject]
public sealed class ChainQuery
{
    [Key(0)] public ulong AfterSeq { get; init; }

    [Key(1)] public int Max { get; init; }
}

/// <summary>The asker's blocks held here, in seq order, each with the answerer's linked half (or empty when none is held).</summary>
[MessagePackObject]
public sealed class ChainQueryAnswer
{
    [Key(0)] public List<byte[]> Blocks { get; init; } = [];

    /// <summary>Per block: the answerer's agreement to the asker's proposal, or the answerer's proposal the asker's agreement links to.</summary>
    [Key(1)] public List<byte[]> Links { get; init; } = [];

    /// <summary>More blocks follow: ask again after the last seq.</summary>
    [Key(2)] public bool More { get; init; }
}

/// <summary>What checking a counterparty's answer found; anything but <see cref="Valid"/> rejects the whole answer.</summary>
public enum RecoveryStatus
{
    Valid,
    /// <summary>Over the size limit, bad MessagePack, or blocks and links of different counts.</summary>
    Malformed,
    /// <summary>More blocks than asked for or than an answer may carry.</summary>
    TooMany,
    /// <summary>A block or link that does not decode or whose signature does not check (a forgery).</summary>
    BadBlock,
    /// <summary>A block authored by another identity than the asker.</summary>
    OtherAuthor,
    /// <summary>A block of the asker with another counterparty: not the answerer's to hold as a party.</summary>
    NotCounterparty,
    /// <summary>Blocks not in strictly rising seq order above the seq asked for.</summary>
    OutOfOrder,
    /// <summary>Two consecutive blocks whose previous hash does not name the block before.</summary>
    BadPrevious,
    /// <summary>A linked half that is not the answerer's half of the same payment.</summary>
    BadLink,
}

/// <summary>Limits of chain recovery after a lost ledger.</summary>
public sealed record ChainRecoveryOptions
{
    /// <summary>
    /// When a node whose ledger is new recovers its chain before signing new blocks. Default
    /// <see cref="ChainRecoveryMode.WhenIdentityKept"/>: when the identity key was in the data directory before this start.
    /// </summary>
    public ChainRecoveryMode Mode { get; init; } = ChainRecoveryMode.WhenIdentityKept;

    /// <summary>
    /// How long recovery asks the peers it is connected to (each once, paging through its blocks) before it ends with what
    /// it found; until then the node signs no half-block. Default 30 s, in [1 s, 1 h].
    /// </summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Blocks per answer, asked and served. Default 128, in [1, 1,024].</summary>
    public int MaxBlocksPerAnswer { get; init; } = 128;

    /// <summary>Answers asked of one peer per recovery (pages). Default 64, in [1, 10,000].</summary>
    public int MaxPagesPerPeer { get; init; } = 64;

    /// <summary>Queries served to one peer per minute; more are refused with a reset. Default 30, in [1, 10,000].</summary>
    public int MaxQueriesPerPeerPerMinute { get; init; } = 30;

    /// <summary>Range checks, each message naming the key under <paramref name="prefix"/> (for the options validator at start).</summary>
    public IEnumerable<string> Validate(string prefix)
    {
        if (!Enum.IsDefined(Mode))
        {
            yield return $"'{prefix}:mode' is {Mode}; it must be WhenIdentityKept, Always or Never";
        }
        if (Timeout < TimeSpan.FromSeconds(1) || Timeout > TimeSpan.FromHours(1))
        {
            yield return $"'{prefix}:timeout' is {Timeout}; it must be between 00:00:01 and 01:00:00";
        }
        if (MaxBlocksPerAnswer is < 1 or > 1024)
        {
            yield return $"'{prefix}:maxBlocksPerAnswer' is {MaxBlocksPerAnswer}; it must be 1 to 1024";
        }
        if (MaxPagesPerPeer is < 1 or > 10_000)
        {
            yield return $"'{prefix}:maxPagesPerPeer' is {MaxPagesPerPeer}; it must be 1 to 10000";
        }
        if (MaxQueriesPerPeerPerMinute is < 1 or > 10_000)
        {
            yield return $"'{prefix}:maxQueriesPerPeerPerMinute' is {MaxQueriesPerPeerPerMinute}; it must be 1 to 10000";
        }
    }
}

public enum ChainRecoveryMode
{
    /// <summary>Recover when the ledger is new and the identity key was kept (it was in the data directory before this start).</summary>
    WhenIdentityKept,
    /// <summary>Recover whenever the ledger is new (a node given its key by the embedding code, as simulations and tests do).</summary>
    Always,
    /// <summary>Never: a new ledger starts a new chain at seq 1.</summary>
    Never,
}

/// <summary>One of the asker's own blocks recovered from a counterparty, with the counterparty's linked half when it had one.</summary>
public sealed record RecoveredBlock(SignedBlock Block, SignedBlock? Link);

/// <summary>The checks of chain recovery: pure functions of the bytes received, the asker's identity and the limits.</summary>
public static class ChainRecovery
{
    /// <summary>Most bytes of an answer of <paramref name="maxBlocks"/> blocks with their links.</summary>
    public static int MaxAnswerBytes(ChainOptions chain, int maxBlocks)
    {
        ArgumentNullException.ThrowIfNull(chain);
        return (maxBlocks * 2 * (chain.MaxBlockBytes + 8)) + 32;
    }

    /// <summary>
    /// Checks an answer from <paramref name="answerer"/> to a query by <paramref name="self"/> for blocks after
    /// <paramref name="afterSeq"/>, at most <paramref name="asked"/>: every block decodes with a valid signature, is authored by
    /// <paramref name="self"/> with <paramref name="answerer"/> as counterparty, seqs rise strictly above the seq asked for,
    /// consecutive seqs chain by previous hash, and every link is the answerer's half of the same payment.
    /// </summary>
    public static RecoveryStatus CheckAnswer(PeerId self, PeerId answerer, ulong afterSeq, int asked, ReadOnlyMemory<byte> bytes,
        ChainOptions chain, out List<RecoveredBlock> blocks, out bool more)
    {
        ArgumentNullException.ThrowIfNull(chain);
        blocks = [];
        more = false;
        if (!ChainCodec.TryDecode(bytes, MaxAnswerBytes(chain, asked), out ChainQueryAnswer? answer))
        {
            return RecoveryStatus.Malformed;
        }
        if (answer.Blocks.Count > asked)
        {
            return RecoveryStatus.TooMany;
        }
        if (answer.Links.Count != answer.Blocks.Count)
        {
            return RecoveryStatus.Malformed;
        }
        SignedBlock? previous = null;
        for (var i = 0; i < answer.Blocks.Count; i++)
        {
            if (SignedBlock.Decode(answer.Blocks[i], chain, out var block) != BlockStatus.Valid)
            {
                return RecoveryStatus.BadBlock;
            }
            var b = block!;
            if (b.Author != self)
            {
                return RecoveryStatus.OtherAuthor;
            }
            if (b.Counterparty != answerer)
            {
                return RecoveryStatus.NotCounterparty;
            }
            if (b.Seq <= (previous?.Seq ?? afterSeq))
            {
                return RecoveryStatus.OutOfOrder;
            }
            if (previous is not null && b.Seq == previous.Seq + 1 && previous.Precedes(b) != BlockStatus.Valid)
            {
                return RecoveryStatus.BadPrevious;
            }
            SignedBlock? link = null;
            if (answer.Links[i].Length > 0)
            {
                if (SignedBlock.Decode(answer.Links[i], chain, out link) != BlockStatus.Valid)
                {
                    return RecoveryStatus.BadBlock;
                }
                var linked = b.Block.Kind == BlockKind.Proposal ? b.LinkedBy(link!) : link!.LinkedBy(b);
                if (linked != BlockStatus.Valid || link!.Author != answerer)
                {
                    return RecoveryStatus.BadLink;
                }
            }
            blocks.Add(new RecoveredBlock(b, link));
            previous = b;
        }
        more = answer.More && answer.Blocks.Count > 0;
        return RecoveryStatus.Valid;
    }

    /// <summary>
    /// Merges what the counterparties returned into one chain: one block per seq (all carry the asker's signature, so two
    /// different ones at one seq would be the asker's own fork: the first is kept and the seq reported), in seq order, and
    /// the seqs where the previous hash does not name the block before it (none for an honest past).
    /// </summary>
    public static (List<RecoveredBlock> Chain, List<ulong> Problems) Assemble(IEnumerable<RecoveredBlock> recovered)
    {
        ArgumentNullException.ThrowIfNull(recovered);
        var bySeq = new SortedDictionary<ulong, RecoveredBlock>();
        var problems = new List<ulong>();
        foreach (var r in recovered)
        {
            if (!bySeq.TryGetValue(r.Block.Seq, out var held))
            {
                bySeq[r.Block.Seq] = r;
            }
            else if (!held.Block.Hash.AsSpan().SequenceEqual(r.Block.Hash))
            {
                problems.Add(r.Block.Seq);
            }
            else if (held.Link is null && r.Link is not null)
            {
                bySeq[r.Block.Seq] = r;
            }
        }
        var chain = bySeq.Values.ToList();
        for (var i = 1; i < chain.Count; i++)
        {
            if (chain[i].Block.Seq == chain[i - 1].Block.Seq + 1 && chain[i - 1].Block.Precedes(chain[i].Block) != BlockStatus.Valid)
            {
                problems.Add(chain[i].Block.Seq);
            }
        }
        return (chain, problems);
    }
}
