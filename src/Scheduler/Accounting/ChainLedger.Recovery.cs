using Potluck.Protocol.Identity;
using Potluck.Scheduler.Accounting;

namespace Potluck.Scheduler.Credits;

/// <summary>
/// Chain recovery after a lost ledger (<see cref="ChainRecovery"/>): the state of a recovery (durable, so a restart during
/// one resumes it), the own blocks restored from counterparties (marked, since their receipts were lost with the old file),
/// and what this node serves to a counterparty that lost its own ledger.
/// </summary>
public sealed partial class CreditLedger
{
    private const string RecoverySchema = """
        CREATE TABLE IF NOT EXISTS chain_recovered (seq INTEGER PRIMARY KEY, recovered_at INTEGER NOT NULL) STRICT;
        """;

    /// <summary>True when this open created the ledger file (there was none, or it was empty).</summary>
    public bool Created { get; private set; }

    /// <summary>Whether a chain recovery was begun and has not ended (it resumes after a restart).</summary>
    public bool ChainRecoveryPending => Fresh(false, () => Run(() => ScalarRarely("SELECT value FROM meta WHERE key = 'chain_recovery'") is "pending"));

    /// <summary>Marks a chain recovery begun, durably; false when this node has signed blocks already (nothing to recover then).</summary>
    public bool BeginChainRecovery() => Run(() =>
    {
        using var tx = Begin(durable: true);
        var head = ChainHeadCore().Seq;
        var begun = head == 0 || ScalarRarely("SELECT value FROM meta WHERE key = 'chain_recovery'") is "pending";
        if (begun)
        {
            ExecuteRarely("INSERT INTO meta (key, value) VALUES ('chain_recovery', 'pending') ON CONFLICT (key) DO UPDATE SET value = excluded.value");
        }
        Commit(tx, begun);
        return begun;
    });

    /// <summary>
    /// Ends a recovery: stores the recovered own blocks (marked as recovered) and the counterparties' linked halves, and
    /// marks the recovery done, in one durable transaction, so the next own block is signed after the highest recovered seq.
    /// Blocks must be the owner's and already checked (<see cref="ChainRecovery.CheckAnswer"/>); a seq held already is left as is.
    /// </summary>
    /// <returns>Own blocks stored now.</returns>
    public int EndChainRecovery(IReadOnlyList<RecoveredBlock> recovered)
    {
        ArgumentNullException.ThrowIfNull(recovered);
        foreach (var r in recovered)
        {
            if (r.Block.Author != Owner)
            {
                throw new ArgumentException("only the owner's blocks are recovered into its chain", nameof(recovered));
            }
        }
        return Run(() =>
        {
            _ownHead = null; // recovered blocks move the head: read it again after this
            using var tx = Begin(durable: true);
            var stored = 0;
            foreach (var r in recovered)
            {
                if (Scalar(tx, "SELECT 1 FROM chain WHERE author = $a AND seq = $s", ("$a", Owner), ("$s", (long)r.Block.Seq)) is null)
                {
                    InsertBlock(r.Block, own: true, keep: true);
                    Execute(tx, "INSERT OR IGNORE INTO chain_recovered (seq, recovered_at) VALUES ($s, $now)", ("$s", (long)r.Block.Seq), ("$now", Now()));
                    stored++;
                }
                if (r.Link is { } link
                    && Scalar(tx, "SELECT 1 FROM chain WHERE author = $a AND seq = $s", ("$a", link.Author), ("$s", (long)link.Seq)) is null)
                {
                    InsertBlock(link, own: false, keep: true);
                }
            }
            ExecuteRarely("INSERT INTO meta (key, value) VALUES ('chain_recovery', 'done') ON CONFLICT (key) DO UPDATE SET value = excluded.value");
            CrashHook?.Invoke("chain-recovery");
            Commit(tx, true);
            return stored;
        });
    }

    /// <summary>Whether own block <paramref name="seq"/> was recovered from a counterparty (its receipt was lost with the old ledger).</summary>
    public bool WasRecovered(ulong seq) => Fresh(false, () =>
        Run(() => !LazyAbsent("chain_recovered") && Scalar(null, "SELECT 1 FROM chain_recovered WHERE seq = $s", ("$s", (long)seq)) is not null));

    /// <summary>
    /// As a counterparty: the blocks of <paramref name="author"/> with this node as counterparty and seq above
    /// <paramref name="afterSeq"/>, in seq order, at most <paramref name="limit"/>, each with this node's linked half if held.
    /// </summary>
    public IReadOnlyList<(byte[] Block, byte[] Link)> BlocksSignedWith(PeerId author, ulong afterSeq, int limit) => Fresh<IReadOnlyList<(byte[], byte[])>>([], () => Run(() =>
    {
        using var reader = Command(null, """
            SELECT c.block, CASE c.kind
                     WHEN 0 THEN (SELECT a.block FROM chain a WHERE a.link_hash = c.hash AND a.author = $me)
                     ELSE (SELECT p.block FROM chain p WHERE p.hash = c.link_hash AND p.author = $me) END
            FROM chain c WHERE c.author = $a AND c.counterparty = $me AND c.seq > $s ORDER BY c.seq LIMIT $n
            """, ("$a", author), ("$me", Owner), ("$s", (long)afterSeq), ("$n", (long)limit)).ExecuteReader();
        var list = new List<(byte[], byte[])>();
        while (reader.Read())
        {
            list.Add(((byte[])reader[0], reader.IsDBNull(1) ? [] : (byte[])reader[1]));
        }
        return list;
    }));
}
