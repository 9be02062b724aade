using Potluck.Protocol.Identity;
using Potluck.Scheduler.Accounting;

namespace Potluck.Scheduler.Credits;

/// <summary>What storing a counterparty's (or anyone's) half-block found.</summary>
public enum ForeignBlockResult
{
    /// <summary>Stored now.</summary>
    Stored,
    /// <summary>This exact block is held already.</summary>
    AlreadyHeld,
    /// <summary>A different block of the same author and seq is held: the two are a fork proof.</summary>
    Conflict,
}

/// <summary>
/// The node's personal chain (see <see cref="ChainBlock"/>) and the counterparties' half-blocks it holds, in the ledger
/// file (<c>ledger.db</c>, owner-only), on the ledger's connection and lock. Own blocks are append-only (triggers refuse
/// UPDATE and DELETE) and unique per receipt, so a payment is in the chain at most once; every own block is committed with
/// <c>synchronous=FULL</c> before it can leave the node, so a crash can never make this node sign two blocks at one seq
/// that both left. Other authors' blocks are kept when they link to ours, and otherwise up to
/// <see cref="MaxForeignBlocks"/> (counted every <see cref="CountForeignEvery"/> stores; the oldest unlinked go first).
/// </summary>
public sealed partial class CreditLedger
{
    /// <summary>Other authors' half-blocks kept that link to none of ours (gossiped, or a predecessor shown with a proposal).</summary>
    public const int MaxForeignBlocks = 100_000;

    /// <summary>Unlinked blocks stored between two counts of them (so at most this many beyond <see cref="MaxForeignBlocks"/>).</summary>
    internal const int CountForeignEvery = 1_024;

    private long _foreignStores;

    private const string ChainSchema = """
        CREATE TABLE IF NOT EXISTS chain (
            author BLOB NOT NULL,
            seq INTEGER NOT NULL CHECK (seq >= 1),
            hash BLOB NOT NULL,
            block BLOB NOT NULL,
            kind INTEGER NOT NULL CHECK (kind IN (0, 1)),
            counterparty BLOB NOT NULL,
            link_hash BLOB,
            receipt_id BLOB NOT NULL,
            amount INTEGER NOT NULL CHECK (amount >= 0),
            own INTEGER NOT NULL CHECK (own IN (0, 1)),
            keep INTEGER NOT NULL CHECK (keep IN (0, 1)),
            stored_at INTEGER NOT NULL,
            PRIMARY KEY (author, seq)) STRICT;
        CREATE UNIQUE INDEX IF NOT EXISTS chain_by_hash ON chain (hash);
        CREATE UNIQUE INDEX IF NOT EXISTS chain_own_receipt ON chain (receipt_id) WHERE own = 1;
        CREATE INDEX IF NOT EXISTS chain_by_link ON chain (link_hash) WHERE link_hash IS NOT NULL;
        CREATE INDEX IF NOT EXISTS chain_unkept_by_time ON chain (stored_at) WHERE keep = 0;
        CREATE TRIGGER IF NOT EXISTS chain_own_no_update BEFORE UPDATE ON chain WHEN OLD.own = 1
            BEGIN SELECT RAISE(ABORT, 'own chain blocks are append-only'); END;
        CREATE TRIGGER IF NOT EXISTS chain_own_no_delete BEFORE DELETE ON chain WHEN OLD.own = 1
            BEGIN SELECT RAISE(ABORT, 'own chain blocks are append-only'); END;
        """;

    /// <summary>
    /// The payments of this node's own batch blocks (<see cref="ChainBlock.Payments"/>), one row each: with the own blocks'
    /// receipt ids (single-payment blocks), a payment is in this node's chain at most once, whichever kind of block holds it.
    /// </summary>
    private const string ChainPaymentsSchema = """
        CREATE TABLE IF NOT EXISTS chain_payments (
            receipt_id BLOB PRIMARY KEY,
            seq INTEGER NOT NULL CHECK (seq >= 1)) STRICT, WITHOUT ROWID;
        CREATE TRIGGER IF NOT EXISTS chain_payments_no_update BEFORE UPDATE ON chain_payments
            BEGIN SELECT RAISE(ABORT, 'own chain payments are append-only'); END;
        CREATE TRIGGER IF NOT EXISTS chain_payments_no_delete BEFORE DELETE ON chain_payments
            BEGIN SELECT RAISE(ABORT, 'own chain payments are append-only'); END;
        """;

    /// <summary>
    /// This node's own proposals that no kept block links to yet, by seq (with the proposal's hash): what the retry round
    /// (<see cref="UnlinkedProposals"/>) reads, so that it costs what is pending, not every proposal this node ever made. A
    /// row is added in the transaction that appends the proposal (<see cref="InsertBlock"/>) and removed in the one that
    /// stores a kept agreement linking to it (stored kept, or an unkept one marked kept): kept blocks are never pruned, so
    /// every own proposal with no linking block at all is here, and the round's query still asks for that (a proposal whose
    /// agreement is held only unkept, from gossip, stays until that agreement is kept, as the round answered before). In the
    /// stand-in, created when first named (a requester's first proposal).
    /// </summary>
    private const string ChainUnlinkedSchema = """
        CREATE TABLE IF NOT EXISTS chain_unlinked (seq INTEGER PRIMARY KEY, hash BLOB NOT NULL) STRICT;
        """;

    /// <summary>
    /// A ledger made before <c>chain_unlinked</c> (stop 40), in the transaction that opens it: every own proposal that no kept
    /// block links to.
    /// </summary>
    private const string ChainUnlinkedMigration = """
        INSERT INTO chain_unlinked (seq, hash)
        SELECT c.seq, c.hash FROM chain c WHERE c.own = 1 AND c.kind = 0
          AND NOT EXISTS (SELECT 1 FROM chain a WHERE a.link_hash = c.hash AND a.keep = 1);
        """;

    /// <summary>Fork proofs found (one per author): created with the chain in a file, by their first use in the stand-in.</summary>
    private const string ForksSchema = """
        CREATE TABLE IF NOT EXISTS forks (
            author BLOB PRIMARY KEY,
            seq INTEGER NOT NULL,
            proof BLOB NOT NULL,
            found_at INTEGER NOT NULL) STRICT;
        """;

    /// <summary>The newest block of this node's own chain: seq 0 and the genesis hash when it has none.</summary>
    public (ulong Seq, byte[] Hash) ChainHead() => Fresh((0UL, SignedBlock.Genesis), () => Run(() => ChainHeadCore()));

    /// <summary>
    /// The own chain's head as this connection last read or wrote it (under the writer's lock): the next own block's seq and
    /// previous hash without a read per block. Forgotten whenever anything is rolled back or fails
    /// (<see cref="ForgetKept"/>), and by a recovery, so it only ever holds a committed head or one written in the open
    /// transaction. No other writer appends own blocks (they are signed with this node's key); if one ever did, the
    /// primary key (author, seq) refuses the block signed over a stale head, the append fails, and the head is read again.
    /// </summary>
    private (ulong Seq, byte[] Hash)? _ownHead;

    private (ulong Seq, byte[] Hash) ChainHeadCore()
    {
        if (_ownHead is { } head)
        {
            return head;
        }
        head = ReadChainHead();
        _ownHead = head;
        return head;
    }

    private (ulong Seq, byte[] Hash) ReadChainHead()
    {
        if (LazyAbsent("chain"))
        {
            return (0, SignedBlock.Genesis);
        }
        using var reader = Command(null, "SELECT seq, hash FROM chain WHERE author = $a ORDER BY seq DESC LIMIT 1", ("$a", Owner)).ExecuteReader();
        return reader.Read() ? ((ulong)reader.GetInt64(0), (byte[])reader[1]) : (0, SignedBlock.Genesis);
    }

    /// <summary>
    /// Appends this node's half-block for the payment <paramref name="receiptId"/>, signed by <paramref name="sign"/> at the
    /// next seq over the current head (seq, previous hash), durably, unless the chain holds one for that receipt already: then
    /// that one is returned and nothing is signed. Call before the block is sent anywhere.
    /// </summary>
    /// <returns>The block, and whether it was appended now.</returns>
    public (SignedBlock Block, bool Appended) AppendOwnBlock(byte[] receiptId, Func<ulong, byte[], SignedBlock> sign)
    {
        ArgumentNullException.ThrowIfNull(receiptId);
        ArgumentNullException.ThrowIfNull(sign);
        var append = new OwnBlockAppend(this, receiptId, sign);
        return append.Finish(Durable(append.Run));
    }

    /// <summary>
    /// <see cref="AppendOwnBlock"/> for several payments at once, in one group commit (one flush for all, not one each):
    /// each is appended in order at the next seq inside its own savepoint, so one that fails (its exception is rethrown
    /// here after the commit, the others kept) leaves the others be. Every block returned is durable.
    /// </summary>
    public IReadOnlyList<(SignedBlock Block, bool Appended)> AppendOwnBlocks(IReadOnlyList<(byte[] ReceiptId, Func<ulong, byte[], SignedBlock> Sign)> blocks)
    {
        ArgumentNullException.ThrowIfNull(blocks);
        return AppendOwnBatches(blocks.Select(b => (b.ReceiptId, (IReadOnlyList<byte[]>?)null, b.Sign)).ToArray());
    }

    /// <summary>
    /// <see cref="AppendOwnBlocks"/> where a block may be a batch block (<see cref="ChainBlock.Payments"/>: <c>Payments</c>
    /// its payments' receipt ids, <c>ReceiptId</c> its batch id; null for a single-payment block): each is appended unless
    /// the chain holds a block for it or for one of its payments already (then that block is returned and nothing is
    /// signed), all in one group commit.
    /// </summary>
    public IReadOnlyList<(SignedBlock Block, bool Appended)> AppendOwnBatches(IReadOnlyList<(byte[] ReceiptId, IReadOnlyList<byte[]>? Payments, Func<ulong, byte[], SignedBlock> Sign)> blocks)
    {
        ArgumentNullException.ThrowIfNull(blocks);
        var appends = blocks.Select(b => new OwnBlockAppend(this, b.ReceiptId ?? throw new ArgumentNullException(nameof(blocks)),
            b.Sign ?? throw new ArgumentNullException(nameof(blocks)), b.Payments)).ToArray();
        var writes = DurableAll(appends.Select(a => (Func<LedgerTransaction, LedgerResult>)a.Run).ToArray());
        var results = new List<(SignedBlock, bool)>(appends.Length);
        Exception? first = null;
        for (var i = 0; i < appends.Length; i++)
        {
            try
            {
                results.Add(appends[i].Finish(writes[i].Error is { } error ? throw error : writes[i].Result));
            }
            catch (Exception e) when (e is ArgumentException or LedgerException)
            {
                first ??= e;
            }
        }
        return first is null ? results : throw first;
    }

    /// <summary>
    /// One own block to append for a receipt (or a batch: <paramref name="payments"/>, its payments' receipt ids, and
    /// <paramref name="receiptId"/> its batch id): the operation run inside the ledger's (group-committed) transaction.
    /// </summary>
    private sealed class OwnBlockAppend(CreditLedger ledger, byte[] receiptId, Func<ulong, byte[], SignedBlock> sign, IReadOnlyList<byte[]>? payments = null)
    {
        private SignedBlock? _block;
        private byte[]? _existing;

        /// <summary>The own block that holds this receipt (or batch), or one of its payments, if any; remembered for <see cref="Finish"/>.</summary>
        public byte[]? FindExisting(LedgerTransaction tx)
        {
            _existing = ledger.Scalar(tx, OwnBlockOfPayment, ("$r", receiptId), ("$a", ledger.Owner)) as byte[];
            if (_existing is null && payments is not null)
            {
                foreach (var id in payments)
                {
                    if ((_existing = ledger.Scalar(tx, OwnBlockOfPayment, ("$r", id), ("$a", ledger.Owner)) as byte[]) is not null)
                    {
                        break;
                    }
                }
            }
            return _existing;
        }

        public LedgerResult Run(LedgerTransaction tx) => Run(tx, lookedUp: false);

        /// <summary>Appends the block; <paramref name="lookedUp"/>: <see cref="FindExisting"/> found none in this transaction already.</summary>
        public LedgerResult Run(LedgerTransaction tx, bool lookedUp)
        {
            if (!lookedUp && FindExisting(tx) is not null)
            {
                return LedgerResult.AlreadyRecorded;
            }
            var (seq, hash) = ledger.ChainHeadCore();
            var signed = sign(seq + 1, hash);
            if (signed.Author != ledger.Owner || signed.Seq != seq + 1 || !signed.Block.Previous.AsSpan().SequenceEqual(hash)
                || !signed.Block.ReceiptId.AsSpan().SequenceEqual(receiptId))
            {
                throw new ArgumentException("the signed block does not extend this ledger's chain for that receipt", nameof(sign));
            }
            if (signed.Block.IsBatch != payments is not null
                || (payments is not null && !signed.Block.Payments!.Select(p => p.ReceiptId).SequenceEqual(payments, ByteArrayComparer.Instance)))
            {
                throw new ArgumentException("the signed block does not cover the payments asked for", nameof(sign));
            }
            ledger.InsertBlock(signed, own: true, keep: true);
            ledger._ownHead = (signed.Seq, signed.Hash);
            ledger.CrashHook?.Invoke("chain-append");
            _block = signed;
            return LedgerResult.Recorded;
        }

        public (SignedBlock Block, bool Appended) Finish(LedgerResult result) =>
            result == LedgerResult.Recorded ? (_block!, true)
            : SignedBlock.DecodeChecked(_existing!) is { } stored ? (stored, false)
            : throw ledger.Corrupt("an own chain block that does not decode");
    }

    /// <summary>The own block whose receipt id (a single payment's, or a batch's id) is $r, or whose batch holds payment $r.</summary>
    private const string OwnBlockOfPayment = """
        SELECT block FROM chain WHERE own = 1 AND receipt_id = $r
        UNION ALL
        SELECT c.block FROM chain_payments p JOIN chain c ON c.author = $a AND c.seq = p.seq WHERE p.receipt_id = $r
        LIMIT 1
        """;

    /// <summary>Byte arrays compared by content.</summary>
    private sealed class ByteArrayComparer : IEqualityComparer<byte[]>
    {
        public static readonly ByteArrayComparer Instance = new();

        public bool Equals(byte[]? x, byte[]? y) => x is null ? y is null : y is not null && x.AsSpan().SequenceEqual(y);

        public int GetHashCode(byte[] obj) => obj.Length;
    }

    /// <summary>
    /// Stores another author's checked half-block (<paramref name="keep"/>: it links to one of ours, never pruned), or finds
    /// the block held at its (author, seq): the same one, or a different one returned in <paramref name="conflicting"/>.
    /// </summary>
    public ForeignBlockResult StoreForeignBlock(SignedBlock block, bool keep, out byte[]? conflicting)
    {
        ArgumentNullException.ThrowIfNull(block);
        var results = StoreForeignBlocks([block], keep);
        conflicting = results[0].Conflicting;
        return results[0].Result;
    }

    /// <summary>
    /// <see cref="StoreForeignBlock"/> for several blocks in one transaction (committed with <c>synchronous=NORMAL</c>, as
    /// each alone): each result, with the block held where it is a <see cref="ForeignBlockResult.Conflict"/>.
    /// </summary>
    public IReadOnlyList<(ForeignBlockResult Result, byte[]? Conflicting)> StoreForeignBlocks(IReadOnlyList<SignedBlock> blocks, bool keep)
    {
        ArgumentNullException.ThrowIfNull(blocks);
        if (blocks.Count == 0)
        {
            return [];
        }
        return Run(() =>
        {
            using var tx = Begin(durable: false);
            var results = new (ForeignBlockResult, byte[]?)[blocks.Count];
            var changed = false;
            for (var i = 0; i < blocks.Count; i++)
            {
                var result = StoreForeignCore(blocks[i] ?? throw new ArgumentNullException(nameof(blocks)), keep, out var held, out var wrote);
                results[i] = (result, held);
                changed |= wrote;
            }
            Commit(tx, changed);
            return results;
        });
    }

    /// <summary>
    /// As a provider: for each checked proposal, stores it (kept: it links to ours) and appends this node's agreement to it,
    /// signed by its <c>Sign</c> as <see cref="AppendOwnBlocks"/> does, all in one group commit (<c>synchronous=FULL</c>:
    /// every agreement returned is durable before it can leave). A proposal whose (author, seq) holds a different block gets
    /// no agreement and nothing is written for it: the block held is returned instead (the two are a fork proof). Where
    /// the chain holds an agreement for the receipt already, that one is returned, not appended again.
    /// </summary>
    public IReadOnlyList<(SignedBlock? Agreement, byte[]? Conflicting)> StoreAndAgree(IReadOnlyList<(SignedBlock Proposal, Func<ulong, byte[], SignedBlock> Sign)> proposals)
    {
        ArgumentNullException.ThrowIfNull(proposals);
        var items = proposals.Select(p =>
        {
            var proposal = p.Proposal ?? throw new ArgumentNullException(nameof(proposals));
            var append = new OwnBlockAppend(this, proposal.Block.ReceiptId, p.Sign ?? throw new ArgumentNullException(nameof(proposals)),
                proposal.Block.Payments?.Select(x => x.ReceiptId).ToArray());
            byte[]? conflicting = null;
            LedgerResult Operation(LedgerTransaction tx)
            {
                var existing = append.FindExisting(tx);
                if (existing is not null && SignedBlock.DecodeChecked(existing) is { } held
                    && !held.Block.LinkHash.AsSpan().SequenceEqual(proposal.Hash))
                {
                    // One of its payments is in another block of ours already: refused, and nothing written — unless the
                    // proposal forks one held (that is found as before, so the fork proof is not lost).
                    conflicting = ChainBlockAt(proposal.Author, proposal.Seq) is { } at && !SameBlock(at, proposal) ? at : null;
                    return conflicting is null ? LedgerResult.AlreadyRecorded : LedgerResult.Conflict;
                }
                if (StoreForeignCore(proposal, keep: true, out conflicting, out _) == ForeignBlockResult.Conflict)
                {
                    return LedgerResult.Conflict; // nothing written: rolled back to its savepoint, or with the transaction
                }
                return existing is not null ? LedgerResult.AlreadyRecorded : append.Run(tx, lookedUp: true);
            }
            return (Append: append, Operation: (Func<LedgerTransaction, LedgerResult>)Operation, Conflicting: (Func<byte[]?>)(() => conflicting));
        }).ToArray();
        var writes = DurableAll([.. items.Select(i => i.Operation)]);
        var results = new (SignedBlock?, byte[]?)[items.Length];
        Exception? first = null;
        for (var i = 0; i < items.Length; i++)
        {
            try
            {
                if (writes[i].Error is { } error)
                {
                    throw error;
                }
                results[i] = writes[i].Result == LedgerResult.Conflict
                    ? (null, items[i].Conflicting())
                    : (items[i].Append.Finish(writes[i].Result).Block, null);
            }
            catch (Exception e) when (e is ArgumentException or LedgerException)
            {
                first ??= e;
            }
        }
        return first is null ? results : throw first;
    }

    /// <summary>Whether the block held (<paramref name="held"/>, envelope bytes) is <paramref name="block"/> itself.</summary>
    private static bool SameBlock(byte[] held, SignedBlock block) =>
        SignedBlock.DecodeChecked(held) is { } h && h.Hash.AsSpan().SequenceEqual(block.Hash);

    /// <summary>The store of one foreign block inside an open transaction; <paramref name="changed"/> when it wrote.</summary>
    private ForeignBlockResult StoreForeignCore(SignedBlock block, bool keep, out byte[]? conflicting, out bool changed)
    {
        conflicting = null;
        changed = false;
        // An unkept block (gossiped, or a predecessor shown with a proposal) is mostly new here: inserted first, one statement,
        // and looked up only when (author, seq) holds a block already. A kept one is mostly held already (heard by gossip
        // first), and may have to be marked kept: looked up first.
        if (!keep && InsertBlock(block, own: false, keep: false, ifNew: true))
        {
            changed = true;
            CountForeign();
            return ForeignBlockResult.Stored;
        }
        using (var reader = Command(null, "SELECT block, hash, keep FROM chain WHERE author = $a AND seq = $s",
            ("$a", block.Author), ("$s", (long)block.Seq)).ExecuteReader())
        {
            if (reader.Read())
            {
                var same = reader.GetBlob(1).SequenceEqual(block.Hash);
                conflicting = same ? null : (byte[])reader[0];
                var kept = reader.GetInt64(2) == 1;
                reader.Close();
                if (same && keep && !kept)
                {
                    Execute(null, "UPDATE chain SET keep = 1 WHERE author = $a AND seq = $s AND own = 0", ("$a", block.Author), ("$s", (long)block.Seq));
                    LinkedKept(block);
                    changed = true;
                }
                return same ? ForeignBlockResult.AlreadyHeld : ForeignBlockResult.Conflict;
            }
        }
        InsertBlock(block, own: false, keep: keep);
        changed = true;
        if (!keep)
        {
            CountForeign();
        }
        return ForeignBlockResult.Stored;
    }

    /// <summary>After an unkept block is stored: counting the unlinked blocks walks all of them, so once per CountForeignEvery stores.</summary>
    private void CountForeign()
    {
        if (++_foreignStores % CountForeignEvery == 0
            && Convert.ToInt64(Scalar(null, "SELECT count(*) FROM chain WHERE keep = 0"), System.Globalization.CultureInfo.InvariantCulture) > MaxForeignBlocks)
        {
            Execute(null, "DELETE FROM chain WHERE rowid IN (SELECT rowid FROM chain WHERE keep = 0 ORDER BY stored_at LIMIT $n)", ("$n", (long)(MaxForeignBlocks / 10)));
        }
    }

    /// <summary>The block held for (author, seq), own or another's, if any.</summary>
    public byte[]? ChainBlockAt(PeerId author, ulong seq) => Fresh(null, () =>
        Read(() => LazyAbsent("chain") ? null : Scalar(null, "SELECT block FROM chain WHERE author = $a AND seq = $s", ("$a", author), ("$s", (long)seq)) as byte[]));

    /// <summary>Whether any block of <paramref name="author"/> is held.</summary>
    public bool HoldsBlocksOf(PeerId author) => Fresh(false, () =>
        Read(() => !LazyAbsent("chain") && Scalar(null, "SELECT 1 FROM chain WHERE author = $a LIMIT 1", ("$a", author)) is not null));

    /// <summary>This node's own half-block for a payment, if any.</summary>
    public byte[]? OwnBlockFor(ReadOnlySpan<byte> receiptId)
    {
        var id = receiptId.ToArray();
        return Fresh(null, () => Read(() => LazyAbsent("chain") ? null : Scalar(null, "SELECT block FROM chain WHERE own = 1 AND receipt_id = $r", ("$r", id)) as byte[]));
    }

    /// <summary>The agreement held (from the counterparty, or our own) that links to the block with <paramref name="hash"/>.</summary>
    public byte[]? AgreementLinking(ReadOnlySpan<byte> hash)
    {
        var h = hash.ToArray();
        return Fresh(null, () => Read(() => LazyAbsent("chain") ? null : Scalar(null, "SELECT block FROM chain WHERE link_hash = $h", ("$h", h)) as byte[]));
    }

    /// <summary>The block held whose hash is <paramref name="hash"/>.</summary>
    public byte[]? ChainBlockByHash(ReadOnlySpan<byte> hash)
    {
        var h = hash.ToArray();
        return Fresh(null, () => Read(() => LazyAbsent("chain") ? null : Scalar(null, "SELECT block FROM chain WHERE hash = $h", ("$h", h)) as byte[]));
    }

    /// <summary>Own blocks with seq above <paramref name="afterSeq"/>, in seq order, at most <paramref name="limit"/>.</summary>
    public IReadOnlyList<byte[]> OwnBlocks(ulong afterSeq, int limit) => Fresh<IReadOnlyList<byte[]>>([], () => Run(() =>
        ReadBlobs(Command(null, "SELECT block FROM chain WHERE author = $a AND seq > $s ORDER BY seq LIMIT $n",
            ("$a", Owner), ("$s", (long)afterSeq), ("$n", (long)limit)))));

    /// <summary>
    /// Own proposals whose agreement this node does not hold yet, oldest first, at most <paramref name="limit"/>: read from
    /// the pending ones (<c>chain_unlinked</c>), not from every own proposal.
    /// </summary>
    public IReadOnlyList<byte[]> UnlinkedProposals(int limit) => Fresh<IReadOnlyList<byte[]>>([], () => Run(() => LazyAbsent("chain_unlinked") ? [] :
        Rarely(UnlinkedProposalsSql, ReadBlobs, ("$a", Owner), ("$n", (long)limit))));

    // CROSS JOIN: SQLite then keeps the pending rows as the outer loop (a plain join may choose to walk every own block).
    internal const string UnlinkedProposalsSql = """
        SELECT c.block FROM chain_unlinked u CROSS JOIN chain c ON c.author = $a AND c.seq = u.seq
        WHERE NOT EXISTS (SELECT 1 FROM chain a WHERE a.link_hash = u.hash)
        ORDER BY u.seq LIMIT $n
        """;

    /// <summary>
    /// Receipts this node paid, delivered to their provider, that have no block in its chain yet (oldest first): read from
    /// the Delivered reservations marked unchained (the pending index's Delivered range), not from every Delivered one.
    /// </summary>
    public IReadOnlyList<byte[]> DeliveredReceiptsWithoutBlock(int limit) => Fresh<IReadOnlyList<byte[]>>([], () => Run(() => LazyAbsent("reservations") ? [] :
        Rarely(DeliveredWithoutBlockSql, ReadBlobs, ("$n", (long)limit))));

    // The state a literal, beside unchained: SQLite reads a partial index only where the query's WHERE implies the index's.
    internal const string DeliveredWithoutBlockSql = """
        SELECT e.receipt FROM reservations r JOIN entries e ON e.receipt_id = r.receipt_id AND e.kind = 2
        WHERE r.state = 2 AND r.unchained = 1
          AND NOT EXISTS (SELECT 1 FROM chain c WHERE c.own = 1 AND c.receipt_id = r.receipt_id)
          AND NOT EXISTS (SELECT 1 FROM chain_payments p WHERE p.receipt_id = r.receipt_id)
        ORDER BY r.rowid LIMIT $n
        """;

    /// <summary>
    /// The pending rows the rounds read, checked against what they stand for (<see cref="ChainAudit"/>, <c>ledger --verify</c>:
    /// scans the history, as the audit does): Delivered reservations in no own block that are not marked unchained (the
    /// round would never propose them), marked ones that are not Delivered or whose payment is in a block, own proposals
    /// with no linking block missing from <c>chain_unlinked</c> (never sent again), and rows of it that name no own proposal
    /// or one with a kept agreement. Empty when they agree.
    /// </summary>
    public IReadOnlyList<string> PendingMismatches() => Fresh<IReadOnlyList<string>>([], () => Run(() =>
    {
        var found = new List<string>();
        void Count(string sql, string what, params ReadOnlySpan<(string Name, Storage.SqlValue Value)> parameters)
        {
            var n = Convert.ToInt64(ScalarRarely(sql, parameters), System.Globalization.CultureInfo.InvariantCulture);
            if (n > 0)
            {
                found.Add($"{n} {what}");
            }
        }
        if (!LazyAbsent("reservations"))
        {
            Count("""
                SELECT count(*) FROM reservations r WHERE r.state = 2 AND r.unchained = 0
                  AND NOT EXISTS (SELECT 1 FROM chain c WHERE c.own = 1 AND c.receipt_id = r.receipt_id)
                  AND NOT EXISTS (SELECT 1 FROM chain_payments p WHERE p.receipt_id = r.receipt_id)
                """, "Delivered reservations in no block not marked unchained: the chain round never proposes them");
            Count("""
                SELECT count(*) FROM reservations r WHERE r.unchained = 1
                  AND (r.state <> 2 OR EXISTS (SELECT 1 FROM chain c WHERE c.own = 1 AND c.receipt_id = r.receipt_id)
                       OR EXISTS (SELECT 1 FROM chain_payments p WHERE p.receipt_id = r.receipt_id))
                """, "reservations marked unchained that are not Delivered or are in a block");
        }
        if (!LazyAbsent("chain"))
        {
            Count("""
                SELECT count(*) FROM chain c WHERE c.author = $a AND c.own = 1 AND c.kind = 0
                  AND NOT EXISTS (SELECT 1 FROM chain a WHERE a.link_hash = c.hash)
                  AND NOT EXISTS (SELECT 1 FROM chain_unlinked u WHERE u.seq = c.seq AND u.hash = c.hash)
                """, "own proposals without an agreement missing from chain_unlinked: never sent again", ("$a", Owner));
            Count("""
                SELECT count(*) FROM chain_unlinked u
                WHERE NOT EXISTS (SELECT 1 FROM chain c WHERE c.author = $a AND c.seq = u.seq AND c.hash = u.hash AND c.own = 1 AND c.kind = 0)
                   OR EXISTS (SELECT 1 FROM chain a WHERE a.link_hash = u.hash AND a.keep = 1)
                """, "chain_unlinked rows for no own proposal, or for one with a kept agreement", ("$a", Owner));
        }
        return found;
    }));

    /// <summary>The stored receipt of the entry of <paramref name="kind"/> for a receipt id, if any.</summary>
    public byte[]? ReceiptOf(ReadOnlySpan<byte> receiptId, LedgerEntryKind kind)
    {
        var id = receiptId.ToArray();
        // A new ledger's one entry, its grant, holds no receipt.
        return Fresh(null, () => Read(() => Scalar(null, "SELECT receipt FROM entries WHERE receipt_id = $id AND kind = $k", ("$id", id), ("$k", (long)kind)) as byte[]));
    }

    /// <summary>Keeps a checked fork proof against its author; false when one is held already.</summary>
    public bool RecordFork(ForkProof proof)
    {
        ArgumentNullException.ThrowIfNull(proof);
        return Run(() =>
        {
            using var tx = Begin(durable: false);
            var exists = Scalar(tx, "SELECT 1 FROM forks WHERE author = $a", ("$a", proof.Author)) is not null;
            if (!exists)
            {
                Execute(tx, "INSERT INTO forks (author, seq, proof, found_at) VALUES ($a, $s, $p, $now)",
                    ("$a", proof.Author), ("$s", (long)proof.Seq), ("$p", proof.Encoded), ("$now", Now()));
            }
            Commit(tx, !exists);
            return !exists;
        });
    }

    /// <summary>The fork proofs held, by author.</summary>
    public IReadOnlyList<(PeerId Author, byte[] Proof)> Forks() => Fresh<IReadOnlyList<(PeerId, byte[])>>([], () => Run(() => LazyAbsent("forks") ? [] : Rarely("SELECT author, proof FROM forks ORDER BY found_at", statement =>
    {
        using var reader = statement.ExecuteReader();
        var list = new List<(PeerId, byte[])>();
        while (reader.Read())
        {
            list.Add((ReadPeer(reader[0]), (byte[])reader[1]));
        }
        return list;
    })));

    /// <summary>
    /// Inserts a block; with <paramref name="ifNew"/>, only when (author, seq) holds none (false then, nothing written;
    /// a different block with the same hash still fails, as it always did).
    /// </summary>
    private bool InsertBlock(SignedBlock block, bool own, bool keep, bool ifNew = false)
    {
        var b = block.Block;
        if (own && b.Payments is { } payments)
        {
            foreach (var p in payments)
            {
                Execute(null, "INSERT INTO chain_payments (receipt_id, seq) VALUES ($r, $s)", ("$r", p.ReceiptId), ("$s", (long)block.Seq));
            }
        }
        var inserted = Command(null, ifNew ? InsertBlockIfNew : InsertBlockSql,
            ("$a", block.Author), ("$s", (long)block.Seq), ("$h", block.Hash), ("$b", block.EnvelopeBytes), ("$k", (long)b.Kind),
            ("$c", block.Counterparty), ("$l", b.Kind == BlockKind.Agreement ? b.LinkHash : null), ("$r", b.ReceiptId),
            ("$amount", b.Amount), ("$own", own ? 1L : 0L), ("$keep", keep ? 1L : 0L), ("$now", Now())).ExecuteNonQuery() == 1;
        if (inserted)
        {
            if (own && b.Kind == BlockKind.Proposal)
            {
                Chained(block);
            }
            else if (keep)
            {
                LinkedKept(block);
            }
        }
        return inserted;
    }

    /// <summary>
    /// In the transaction that appends this node's proposal (or restores it in a recovery): its payments' reservations leave
    /// the pending ones (no longer unchained), and the proposal waits for its agreement (<c>chain_unlinked</c>) unless a kept
    /// one is held already.
    /// </summary>
    private void Chained(SignedBlock proposal)
    {
        if (!LazyAbsent("reservations"))
        {
            // One statement per block, over the pending Delivered rows only (the index's Delivered range): a single block's
            // receipt id is its payment's; a batch's payments are in chain_payments at its seq (inserted just before).
            Execute(null, ChainedSql, ("$r", proposal.Block.ReceiptId), ("$s", (long)proposal.Seq));
        }
        Execute(null, """
            INSERT INTO chain_unlinked (seq, hash) SELECT $s, $h
            WHERE NOT EXISTS (SELECT 1 FROM chain WHERE link_hash = $h AND keep = 1)
            """, ("$s", (long)proposal.Seq), ("$h", proposal.Hash));
    }

    internal const string ChainedSql = """
        UPDATE reservations SET unchained = 0
        WHERE state = 2 AND unchained = 1
          AND (receipt_id = $r OR EXISTS (SELECT 1 FROM chain_payments p WHERE p.receipt_id = reservations.receipt_id AND p.seq = $s))
        """;

    /// <summary>
    /// In the transaction that keeps <paramref name="block"/> (stored kept, or marked kept): when it is an agreement to one of
    /// this node's proposals, that proposal is linked and leaves <c>chain_unlinked</c>.
    /// </summary>
    private void LinkedKept(SignedBlock block)
    {
        var b = block.Block;
        if (b.Kind == BlockKind.Agreement && block.Counterparty == Owner && !LazyAbsent("chain_unlinked"))
        {
            Execute(null, "DELETE FROM chain_unlinked WHERE seq = $s AND hash = $h", ("$s", (long)b.LinkSeq), ("$h", b.LinkHash));
        }
    }

    private const string InsertBlockSql = """
        INSERT INTO chain (author, seq, hash, block, kind, counterparty, link_hash, receipt_id, amount, own, keep, stored_at)
        VALUES ($a, $s, $h, $b, $k, $c, $l, $r, $amount, $own, $keep, $now)
        """;

    private const string InsertBlockIfNew = InsertBlockSql + " ON CONFLICT (author, seq) DO NOTHING";

    private static List<byte[]> ReadBlobs(Storage.SqliteStatement command)
    {
        using var reader = command.ExecuteReader();
        var list = new List<byte[]>();
        while (reader.Read())
        {
            list.Add((byte[])reader[0]);
        }
        return list;
    }
}
