using MessagePack;
using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Accounting;

/// <summary>
/// <c>/potluck/chain/history/1.0.0</c>: a provider asks a requester that has no standing with it first-hand for blocks of
/// the requester's own chain at seqs the provider chose (<see cref="ChainHistoryQuery"/>; none: the head), each with the
/// counterparty's linked half; the requester answers one <see cref="ChainQueryAnswer"/>. The provider checks them
/// (<see cref="ChainHistoryCheck"/>) before serving the requester beyond a stranger's terms.
/// </summary>
public static class ChainHistoryProtocol
{
    public const string Id = "/potluck/chain/history/1.0.0";

    /// <summary>Most seqs one query may ask for.</summary>
    public const int MaxSeqs = 64;

    /// <summary>A query is at most <see cref="MaxSeqs"/> integers.</summary>
    public const int MaxQueryBytes = (MaxSeqs * 9) + 8;
}

/// <summary>The seqs asked for, rising; empty asks for the head block.</summary>
[MessagePackObject]
public sealed class ChainHistoryQuery
{
    [Key(0)] public List<ulong> Seqs { get; init; } = [];
}

/// <summary>What a requester's presented history showed, or why it was refused (anything but <see cref="Valid"/>).</summary>
public enum HistoryStatus
{
    Valid,
    /// <summary>Bad MessagePack, over the size limit, or blocks and links of different counts.</summary>
    Malformed,
    /// <summary>A block or link that does not decode or whose signature does not check (a forgery).</summary>
    BadBlock,
    /// <summary>A block authored by another identity than the requester (someone else's history).</summary>
    OtherAuthor,
    /// <summary>A block at a seq not asked for, or a seq answered twice (a replay).</summary>
    NotAsked,
    /// <summary>A link that is not the counterparty's half of the same payment, or an agreement without its proposal.</summary>
    BadLink,
    /// <summary>A block that differs from the requester's block held here at that seq: a fork.</summary>
    Conflict,
}

/// <summary>Limits of the history check a provider runs on a requester without first-hand standing.</summary>
public sealed record ChainHistoryOptions
{
    /// <summary>Check histories at all (otherwise a requester's standing is first-hand only). Default true.</summary>
    public bool Enabled { get; init; } = true;

    /// <summary>Seqs sampled from the requester's chain, besides its head. Default 16, in [1, 63].</summary>
    public int Samples { get; init; } = 16;

    /// <summary>
    /// Micro-credits of verified earnings (payments to the requester by payers in good standing here) that lift a requester
    /// above a stranger's terms. Default 1 (any verified contribution), at least 1.
    /// </summary>
    public long MinVerifiedEarned { get; init; } = 1;

    /// <summary>How long a verdict is kept before the history is checked again. Default 10 min, in [1 s, 1 day].</summary>
    public TimeSpan CacheFor { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>Verdicts kept at once (the oldest go first). Default 4,096, in [16, 1,000,000].</summary>
    public int MaxCached { get; init; } = 4096;

    /// <summary>
    /// The share of a requester's net verified contribution (<see cref="HistoryCredit.Contribution"/>) this provider lends it
    /// beyond a stranger's credit limit (<c>compute:provider:creditLimitPerRequester</c>). Default 0.25, in [0, 1]; 0 turns
    /// credit from history off. The same history counts at every provider, so n providers lend up to n × this share of it.
    /// </summary>
    public double CreditShare { get; init; } = 0.25;

    /// <summary>Most extra credit (micro-credits) a verified history earns a requester here. Default 10,000,000 (ten credits), in [0, 10^15].</summary>
    public long MaxCredit { get; init; } = 10_000_000;

    /// <summary>Range checks, each message naming the key under <paramref name="prefix"/> (for the options validator at start).</summary>
    public IEnumerable<string> Validate(string prefix)
    {
        if (Samples is < 1 or >= ChainHistoryProtocol.MaxSeqs)
        {
            yield return $"'{prefix}:samples' is {Samples}; it must be 1 to {ChainHistoryProtocol.MaxSeqs - 1}";
        }
        if (MinVerifiedEarned < 1)
        {
            yield return $"'{prefix}:minVerifiedEarned' is {MinVerifiedEarned}; it must be at least 1 (micro-credits)";
        }
        if (CacheFor < TimeSpan.FromSeconds(1) || CacheFor > TimeSpan.FromDays(1))
        {
            yield return $"'{prefix}:cacheFor' is {CacheFor}; it must be between 00:00:01 and 1.00:00:00";
        }
        if (!(CreditShare >= 0 && CreditShare <= 1))
        {
            yield return $"'{prefix}:creditShare' is {CreditShare}; it must be 0 to 1 (the share of verified contribution lent beyond a stranger's credit)";
        }
        if (MaxCredit is < 0 or > 1_000_000_000_000_000)
        {
            yield return $"'{prefix}:maxCredit' is {MaxCredit}; it must be 0 to 1000000000000000 (micro-credits)";
        }
        if (MaxCached is < 16 or > 1_000_000)
        {
            yield return $"'{prefix}:maxCached' is {MaxCached}; it must be 16 to 1000000";
        }
    }
}

/// <summary>One verified payment in a requester's presented history.</summary>
/// <param name="Seq">The requester's block.</param>
/// <param name="Counterparty">The other party, who signed the linked half.</param>
/// <param name="Amount">Micro-credits.</param>
/// <param name="Earned">True when the requester was paid (its agreement to the counterparty's proposal).</param>
public readonly record struct VerifiedPayment(ulong Seq, PeerId Counterparty, long Amount, bool Earned);

/// <summary>The checks of a presented history: pure functions of the bytes, the seqs asked and what the provider holds.</summary>
public static class ChainHistoryCheck
{
    /// <summary>
    /// The seqs to ask of a chain whose head is <paramref name="head"/>: up to <paramref name="count"/> distinct seqs in
    /// [1, head), drawn with <paramref name="below"/> (uniform in [0, n): security randomness, so a requester cannot know
    /// which of its blocks will be asked), plus the head itself; rising.
    /// </summary>
    public static List<ulong> Sample(ulong head, int count, Func<ulong, ulong> below)
    {
        ArgumentNullException.ThrowIfNull(below);
        var seqs = new SortedSet<ulong>();
        if (head == 0)
        {
            return [];
        }
        if (head - 1 <= (ulong)count)
        {
            for (ulong s = 1; s < head; s++)
            {
                seqs.Add(s);
            }
        }
        else
        {
            while (seqs.Count < count)
            {
                seqs.Add(1 + below(head - 1));
            }
        }
        seqs.Add(head);
        return [.. seqs];
    }

    /// <summary>
    /// Checks a requester's answer to a query for <paramref name="asked"/>: every block decodes with the requester's
    /// signature, answers one seq asked (once), agrees with any block of the requester held here
    /// (<paramref name="held"/>: a different one is a fork), and carries a link: for an agreement, the payer's proposal it
    /// links to; for a proposal, the payee's agreement. Payments whose link is missing are not counted (not refused: a
    /// proposal may be awaiting its agreement).
    /// </summary>
    public static HistoryStatus Verify(PeerId requester, IReadOnlyCollection<ulong> asked, ReadOnlyMemory<byte> bytes, ChainOptions chain,
        Func<ulong, byte[]?> held, out List<VerifiedPayment> payments, out SignedBlock? head)
    {
        ArgumentNullException.ThrowIfNull(asked);
        ArgumentNullException.ThrowIfNull(chain);
        ArgumentNullException.ThrowIfNull(held);
        payments = [];
        head = null;
        var wanted = new HashSet<ulong>(asked);
        var max = Math.Max(1, wanted.Count);
        if (!ChainCodec.TryDecode(bytes, ChainRecovery.MaxAnswerBytes(chain, max), out ChainQueryAnswer? answer)
            || answer.Links.Count != answer.Blocks.Count || answer.Blocks.Count > max)
        {
            return HistoryStatus.Malformed;
        }
        for (var i = 0; i < answer.Blocks.Count; i++)
        {
            if (SignedBlock.Decode(answer.Blocks[i], chain, out var block) != BlockStatus.Valid)
            {
                return HistoryStatus.BadBlock;
            }
            var b = block!;
            if (b.Author != requester)
            {
                return HistoryStatus.OtherAuthor;
            }
            // Asked for the head (no seqs): any one block, which names the head. Otherwise each seq asked, once.
            if (wanted.Count == 0 ? i > 0 : !wanted.Remove(b.Seq))
            {
                return HistoryStatus.NotAsked;
            }
            if (held(b.Seq) is { } mine && !mine.AsSpan().SequenceEqual(b.EnvelopeBytes))
            {
                return HistoryStatus.Conflict;
            }
            if (head is null || b.Seq > head.Seq)
            {
                head = b;
            }
            if (answer.Links[i].Length == 0)
            {
                continue;
            }
            if (SignedBlock.Decode(answer.Links[i], chain, out var link) != BlockStatus.Valid)
            {
                return HistoryStatus.BadBlock;
            }
            var earned = b.Block.Kind == BlockKind.Agreement;
            var linked = earned ? link!.LinkedBy(b) : b.LinkedBy(link!);
            if (linked != BlockStatus.Valid || link!.Author == requester)
            {
                return HistoryStatus.BadLink;
            }
            payments.Add(new VerifiedPayment(b.Seq, link.Author, b.Block.Amount, earned));
        }
        return HistoryStatus.Valid;
    }

    /// <summary>
    /// Micro-credits the requester verifiably earned from payers <paramref name="backed"/> vouches for (this provider, or
    /// requesters in good standing here): payments from identities with no standing of their own (Sybils) count nothing.
    /// </summary>
    public static long VerifiedEarnings(IEnumerable<VerifiedPayment> payments, Func<PeerId, bool> backed)
    {
        ArgumentNullException.ThrowIfNull(payments);
        ArgumentNullException.ThrowIfNull(backed);
        long total = 0;
        foreach (var p in payments)
        {
            if (p.Earned && backed(p.Counterparty))
            {
                total = p.Amount > long.MaxValue - total ? long.MaxValue : total + p.Amount;
            }
        }
        return total;
    }
}
