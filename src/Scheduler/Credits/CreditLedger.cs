using System.Security.Cryptography;
using System.Text;
using Microsoft.Data.Sqlite;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Storage;

namespace Potluck.Scheduler.Credits;

/// <summary>
/// A node's credit ledger: <c>ledger.db</c> (SQLite, WAL) in the node's data directory. Entries are append-only
/// (triggers refuse UPDATE and DELETE), unique on (receipt id, kind), and the balance is always derived by summing
/// them; there is no stored balance.
/// <para>
/// Every public operation is one SQLite transaction, and an uncommitted one leaves no trace. A committed one always
/// survives a crash of the process (in WAL mode the commit has reached the operating system before it returns).
/// Against power loss, the two transactions whose loss could lose or double-count a receipt —
/// <see cref="Settle"/> (before the receipt leaves this node) and <see cref="Record"/> (before it is acknowledged)
/// — are group commits: the WAL is flushed to the disk before they return, by an fsync after the commit and outside the
/// writer's lock, and nothing any call reads is returned before the commits it could have seen are flushed
/// (CreditLedger.Flush.cs). The others
/// (<see cref="ReservePayment"/>, <see cref="Release"/>, <see cref="MarkDelivered"/>) commit with
/// <c>synchronous=NORMAL</c>, saving a flush each: power loss may undo the last of them, never a later FULL commit
/// (the WAL is replayed as a prefix, so a durable commit makes every earlier one durable too), and undoing them is
/// harmless: a lost reservation or release is a lease with no receipt (recovery releases it anyway), a lost
/// delivery mark only sends the receipt again (the provider answers AlreadyRecorded). The rules that make a crash
/// at any point of a lease lose no receipt and count none twice:
/// </para>
/// <list type="number">
/// <item>Requester: <see cref="ReservePayment"/> before the lease starts. After verifying the attestation,
/// sign the receipt and <see cref="Settle"/> it (Spent entry + Settled, one transaction) <b>before</b> sending
/// it. On the provider's acknowledgement, <see cref="MarkDelivered"/>.</item>
/// <item>Provider: <see cref="Record"/> (Earned) a verified receipt <b>before</b> acknowledging it.</item>
/// <item>Recovery after a restart: every Settled reservation's stored receipt
/// (<see cref="UndeliveredReceipts"/>) is sent again (the provider answers AlreadyRecorded and acknowledges);
/// a Reserved one had no receipt leave this node, so it is either settled afresh (the receipt id is derived
/// from the lease, so a re-signed receipt can never be counted twice) or <see cref="Release"/>d.</item>
/// </list>
/// Thread-safe: one writer's connection and lock, a reader's connection and lock beside it (CreditLedger.Reads.cs), and the
/// flush's lock. Opening with a different identity than the ledger's owner fails.
/// </summary>
public sealed partial class CreditLedger : IDisposable
{
    public const string FileName = "ledger.db";
    private const long SchemaVersion = 1;
    private const int SqliteCorrupt = 11;
    private const int SqliteNotADatabase = 26;
    private static readonly byte[] GrantDomain = Encoding.ASCII.GetBytes("potluck-grant:");

    private const string CoreSchema = """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value ANY NOT NULL) STRICT, WITHOUT ROWID;
        """ + EntriesSchema;

    /// <summary>
    /// The entries, append-only (the triggers refuse an update or a delete). <c>seq</c> is the rowid: with no row ever
    /// deleted, SQLite gives each insert the largest seq + 1, so seq counts up in insertion order and is never reused, as
    /// <c>AUTOINCREMENT</c> made it before stop 41, which also wrote its counter (<c>sqlite_sequence</c>, a page) with every
    /// insert. An insert rolled back gives its seq back in both. <see cref="EntriesRowidMigration"/> moves an older ledger.
    /// </summary>
    private const string EntriesSchema = """
        CREATE TABLE entries (
            seq INTEGER PRIMARY KEY,
            receipt_id BLOB NOT NULL,
            kind INTEGER NOT NULL CHECK (kind IN (0, 1, 2)),
            counterparty BLOB NOT NULL,
            lease_id BLOB,
            amount INTEGER NOT NULL CHECK (amount >= 0),
            receipt BLOB,
            recorded_at INTEGER NOT NULL,
            UNIQUE (receipt_id, kind)) STRICT;
        CREATE INDEX entries_by_counterparty_time ON entries (kind, counterparty, recorded_at);
        CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
            BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
        CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
            BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
        """;

    /// <summary>
    /// A ledger made before stop 41 (<c>entries.seq</c> <c>AUTOINCREMENT</c>), in the transaction that opens it: the table is
    /// made again without it under another name, every row copied with its seq, the old table dropped (which removes its
    /// counter's row and fires none of its triggers), the new one renamed, then its index and triggers (SQLite cannot drop
    /// <c>AUTOINCREMENT</c> in place). The rename runs with <c>legacy_alter_table</c> so that SQLite neither checks nor
    /// rewrites the reservations' trigger, which names <c>entries</c> and reads the new table once it has that name. Nothing
    /// else changes.
    /// </summary>
    private static readonly string EntriesRowidMigration =
        "PRAGMA legacy_alter_table = ON;\n"
        + EntriesSchema[..(EntriesSchema.IndexOf("CREATE INDEX", StringComparison.Ordinal))].Replace("CREATE TABLE entries (", "CREATE TABLE entries_rowid (", StringComparison.Ordinal)
        + """
        INSERT INTO entries_rowid (seq, receipt_id, kind, counterparty, lease_id, amount, receipt, recorded_at)
        SELECT seq, receipt_id, kind, counterparty, lease_id, amount, receipt, recorded_at FROM entries ORDER BY seq;
        DROP TABLE entries;
        ALTER TABLE entries_rowid RENAME TO entries;
        PRAGMA legacy_alter_table = OFF;

        """
        + EntriesSchema[EntriesSchema.IndexOf("CREATE INDEX", StringComparison.Ordinal)..];

    /// <summary>
    /// A requester's reservations (<see cref="ReservePayment"/>), with the trigger that allows only the legal transitions.
    /// Created with the ledger's other tables in a file; in the in-memory stand-in by the first statement that names the
    /// table (CreditLedger.Lazy.cs). The state index holds only the pending rows: the open ones (Reserved, Settled) and the
    /// Delivered ones whose payment is in no block of this node's chain yet (<c>unchained</c>: set by the Delivered mark,
    /// cleared in the transaction that appends the block, <see cref="InsertBlock"/>). Those are what the queries that read by
    /// state look for (the funds' sum of Reserved maxima, recovery's Reserved and Settled, the chain round's delivered
    /// receipts), so each costs what is pending, not what the ledger ever held; a lease's Delivered mark moves its entry
    /// within the index's one page, and the block's append takes it off. The rest read by lease id (the primary key) or scan
    /// the table in rowid order (the Delivered and Released listings: as the Delivered range of an index over every lease
    /// did, with a lookup of the row per entry there).
    /// </summary>
    private const string ReservationsSchema = """
        CREATE TABLE IF NOT EXISTS reservations (
            lease_id BLOB PRIMARY KEY,
            provider BLOB NOT NULL,
            max_amount INTEGER NOT NULL CHECK (max_amount >= 0),
            state INTEGER NOT NULL CHECK (state IN (0, 1, 2, 3)),
            receipt_id BLOB,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            unchained INTEGER NOT NULL DEFAULT 0 CHECK (unchained IN (0, 1))) STRICT;
        CREATE INDEX IF NOT EXISTS reservations_pending ON reservations (state) WHERE state = 0 OR state = 1 OR unchained = 1;
        CREATE TRIGGER IF NOT EXISTS reservations_transitions BEFORE UPDATE ON reservations
            WHEN NOT ((OLD.state = 0 AND NEW.state IN (1, 3)) OR (OLD.state = 1 AND NEW.state = 2)
                      OR (OLD.state = 2 AND NEW.state = 2 AND OLD.unchained = 1 AND NEW.unchained = 0))
              OR NEW.unchained IS NOT (CASE WHEN OLD.state = 1 AND NEW.state = 2 THEN 1 WHEN OLD.state = 2 THEN 0 ELSE OLD.unchained END)
              OR NEW.lease_id IS NOT OLD.lease_id OR NEW.provider IS NOT OLD.provider
              OR NEW.max_amount IS NOT OLD.max_amount
              OR (OLD.receipt_id IS NOT NULL AND NEW.receipt_id IS NOT OLD.receipt_id)
              OR (NEW.state IN (1, 2) AND NOT EXISTS
                    (SELECT 1 FROM entries WHERE receipt_id = NEW.receipt_id AND kind = 2))
            BEGIN SELECT RAISE(ABORT, 'illegal payment state transition'); END;
        CREATE TRIGGER IF NOT EXISTS reservations_no_delete BEFORE DELETE ON reservations
            BEGIN SELECT RAISE(ABORT, 'reservations are kept'); END;
        """;

    /// <summary>
    /// What requesters owe this node as a provider: one row per lease it completed, with the most its receipt may pay
    /// (fuel × agreed price, checked arithmetic). Added to older ledgers when they are opened (no other change).
    /// </summary>
    private const string OwedSchema = """
        CREATE TABLE IF NOT EXISTS owed (
            requester BLOB NOT NULL,
            lease_id BLOB NOT NULL,
            amount INTEGER NOT NULL CHECK (amount >= 0),
            paid INTEGER NOT NULL CHECK (paid IN (0, 1)),
            created_at INTEGER NOT NULL,
            PRIMARY KEY (requester, lease_id)) STRICT;
        """;

    /// <summary>
    /// Indexes that older ledgers had and no query needs: each costs a B-tree write (and a page in the WAL) per row written.
    /// <c>entries_by_kind</c> (kind, counterparty) is a prefix of <c>entries_by_counterparty_time</c>, made here for ledgers
    /// that did not have it yet; <c>owed_unpaid</c> served per-requester sums that the primary key's prefix (and the kept
    /// totals, for admission) now serve; <c>chain_unkept</c> indexed every block, where pruning reads only unkept ones
    /// (<c>chain_unkept_by_time</c>, partial). Run when an existing ledger is opened; a new one never has them.
    /// </summary>
    private const string IndexMigration = """
        CREATE INDEX IF NOT EXISTS entries_by_counterparty_time ON entries (kind, counterparty, recorded_at);
        DROP INDEX IF EXISTS entries_by_kind;
        DROP INDEX IF EXISTS owed_unpaid;
        DROP INDEX IF EXISTS chain_unkept;
        """;

    /// <summary>
    /// The state indexes of older ledgers: over every reservation (<c>reservations_by_state</c>, before stop 39: each lease's
    /// three writes rewrote it, the last one on two pages) and over the open ones only (<c>reservations_open</c>, stop 39,
    /// without the Delivered rows not yet in a block). Dropped when such a ledger is opened, once
    /// <see cref="ReservationsSchema"/> has made <c>reservations_pending</c> in the same transaction.
    /// </summary>
    private const string ReservationsMigration = """
        DROP INDEX IF EXISTS reservations_by_state;
        DROP INDEX IF EXISTS reservations_open;
        """;

    /// <summary>
    /// A ledger made before <c>unchained</c> (stop 40), in the transaction that opens it, before <see cref="ReservationsSchema"/>
    /// makes the index and trigger that read it: the transitions' trigger goes (it would refuse the fill, and the schema makes
    /// it again with the new column's rules), the column comes with 0, and every Delivered reservation whose payment is in no
    /// own block (single, or a batch's payment) is marked, exactly the set the chain round read by scanning every Delivered
    /// reservation before. Nothing else changes.
    /// </summary>
    private const string UnchainedMigration = """
        DROP TRIGGER IF EXISTS reservations_transitions;
        ALTER TABLE reservations ADD COLUMN unchained INTEGER NOT NULL DEFAULT 0 CHECK (unchained IN (0, 1));
        UPDATE reservations SET unchained = 1
        WHERE state = 2 AND NOT EXISTS (SELECT 1 FROM chain c WHERE c.own = 1 AND c.receipt_id = reservations.receipt_id)
          AND NOT EXISTS (SELECT 1 FROM chain_payments p WHERE p.receipt_id = reservations.receipt_id);
        """;

    /// <summary>
    /// WAL pages written before a commit checkpoints them into the database file (SQLite's default is 1,000). Every lease
    /// rewrites the same few pages (the totals row, index and table roots, the sequence counter) in several commits; a
    /// checkpoint copies the newest version of each page once, so a longer interval copies (and fsyncs) less per lease.
    /// At 4 KiB pages the WAL grows to about 16 MiB before it is reused from its start; durability is unchanged (a commit
    /// is durable in the WAL; a checkpoint flushes the database file before the WAL is reused).
    /// </summary>
    internal const int WalCheckpointPages = 4_096;

    private SqliteConnection _connection; // the stand-in's: null until its first write (CreditLedger.Unwritten.cs)
    private readonly CreditsOptions _options;
    private readonly TimeProvider _time;
    private readonly Lock _gate;
    private readonly Storage.SqliteMemory.SharedStore? _store;
    private readonly Dictionary<string, Storage.SqliteStatement> _commands = new(StringComparer.Ordinal);
    private readonly Lock _queueGate = new();
    private readonly List<PendingWrite> _queue = [];
    private bool _durable;
    private bool _inMemory;
    private bool _disposed;
    private long? _balance;
    private long _balanceVersion;
    private long _pendingDelta;
    private long _writerStatements;

    private CreditLedger(SqliteConnection connection, string path, PeerId owner, CreditsOptions options, TimeProvider time,
        Storage.SqliteMemory.SharedStore? store = null)
    {
        _connection = connection;
        _store = store;
        _gate = store?.Gate ?? new Lock();
        Path = path;
        Owner = owner;
        _options = options;
        _time = time;
    }

    /// <summary>The ledger file.</summary>
    public string Path { get; }

    /// <summary>The node whose ledger this is.</summary>
    public PeerId Owner { get; }

    /// <summary>Test hook: called with a step name inside a transaction, before it commits; throwing aborts it.</summary>
    internal Action<string>? CrashHook { get; set; }

    /// <summary>
    /// Opens (creating if needed) <c>ledger.db</c> in <paramref name="directory"/>. A new ledger records
    /// <see cref="CreditsOptions.InitialGrant"/> as its first entry, in the transaction that creates it.
    /// </summary>
    /// <exception cref="LedgerCorruptException">The file is damaged or not a Potluck ledger.</exception>
    /// <exception cref="LedgerException">The ledger belongs to another identity, or it cannot be opened.</exception>
    /// <param name="inMemory">The in-memory storage stand-in of simulations (<see cref="Storage.SqliteMemory"/>): the same
    /// ledger code and schema on an in-memory database named by the path (no WAL, no fsync; it lives while a connection to it is open).</param>
    public static CreditLedger Open(string directory, PeerId owner, CreditsOptions options, TimeProvider time, bool inMemory = false)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        if (owner.IsEmpty)
        {
            throw new ArgumentException("the ledger needs its owner's peer id", nameof(owner));
        }
        string path;
        SqliteConnection connection;
        Storage.SqliteMemory.SharedStore? store = null;
        if (inMemory)
        {
            // The stand-in runs on its node's store's one connection, under that connection's lock (the state files share
            // it); a store with no connection yet stays without one until the ledger's first write (CreditLedger.Unwritten.cs).
            path = System.IO.Path.Combine(directory, FileName);
            store = Storage.SqliteMemory.Share(path);
            try
            {
                if (OpenUnwritten(store, path, owner, options, time) is { } unwritten)
                {
                    return unwritten;
                }
            }
            catch
            {
                store.Dispose();
                throw;
            }
            connection = store.Connection;
        }
        else
        {
            path = System.IO.Path.Combine(Protocol.Runtime.OwnerOnly.CreateDirectory(directory), FileName);
            Protocol.Runtime.OwnerOnly.PrepareSqlite(path);
            var builder = new SqliteConnectionStringBuilder
            {
                DataSource = path,
                Mode = SqliteOpenMode.ReadWriteCreate,
                Cache = SqliteCacheMode.Private,
                Pooling = false,
            };
            connection = new SqliteConnection(builder.ToString());
        }
        try
        {
            if (store is null)
            {
                connection.Open();
            }
            var ledger = new CreditLedger(connection, path, owner, options, time, store) { _inMemory = inMemory };
            if (store is not null)
            {
                lock (store.Gate)
                {
                    ledger.InitialiseStandIn();
                }
            }
            else
            {
                ledger.Initialise();
            }
            if (!inMemory)
            {
                Protocol.Runtime.OwnerOnly.PrepareSqlite(path); // the WAL and SHM files SQLite has just made
                try
                {
                    ledger.OpenWal(); // the reader's connection is opened by the first read that runs on it
                }
                catch
                {
                    ledger.Dispose();
                    throw;
                }
            }
            return ledger;
        }
        catch (SqliteException e)
        {
            Close(connection, store);
            throw Translate(e, path);
        }
        catch
        {
            Close(connection, store);
            throw;
        }
    }

    /// <summary>Closes the writer's connection: the stand-in releases its share of its store's connection instead.</summary>
    private static void Close(SqliteConnection connection, Storage.SqliteMemory.SharedStore? store)
    {
        if (store is not null)
        {
            store.Dispose();
        }
        else
        {
            connection.Dispose();
        }
    }

    /// <summary>
    /// Appends the entry for a verified receipt: <see cref="LedgerEntryKind.Earned"/> when this node is its
    /// provider, <see cref="LedgerEntryKind.Spent"/> when it is its requester (settling the lease's reservation
    /// if there is one, exactly as <see cref="Settle"/>). Idempotent on the receipt id.
    /// </summary>
    /// <returns>Recorded, AlreadyRecorded, Conflict, NotOurs, or (Spent with a reservation) what Settle returns.</returns>
    public LedgerResult Record(SignedReceipt receipt, LedgerEntryKind kind)
    {
        ArgumentNullException.ThrowIfNull(receipt);
        if (kind is not (LedgerEntryKind.Earned or LedgerEntryKind.Spent))
        {
            throw new ArgumentOutOfRangeException(nameof(kind), kind, "a receipt is recorded as Earned or Spent");
        }
        return Durable(tx =>
        {
            if (kind == LedgerEntryKind.Earned)
            {
                return receipt.Provider != Owner ? LedgerResult.NotOurs : InsertEntry(tx, receipt, kind, receipt.Requester);
            }
            if (receipt.Requester != Owner)
            {
                return LedgerResult.NotOurs;
            }
            return ReadReservation(tx, receipt.Receipt.LeaseId) is null
                ? InsertEntry(tx, receipt, kind, receipt.Provider)
                : SettleCore(tx, receipt);
        });
    }

    /// <summary>
    /// As a provider: records that <paramref name="requester"/> owes at most <paramref name="amount"/> micro-credits for
    /// lease <paramref name="leaseId"/>, which this node completed. Only a receipt for a lease recorded here is ever
    /// accepted (<see cref="RecordEarned"/>). Committed like a reservation (survives a process crash). Idempotent.
    /// </summary>
    /// <returns>Owed, or AlreadyOwed when the lease is recorded already (the first amount stands).</returns>
    public LedgerResult RecordOwed(ReadOnlySpan<byte> leaseId, PeerId requester, long amount)
    {
        if (leaseId.Length is 0 or > Attestation.MaxLeaseIdLength)
        {
            throw new ArgumentException("a lease id is 1–64 bytes", nameof(leaseId));
        }
        ArgumentOutOfRangeException.ThrowIfNegative(amount);
        var lease = leaseId.ToArray();
        return Normal(tx => WriteNormal(tx, """
            INSERT INTO owed (requester, lease_id, amount, paid, created_at) VALUES ($r, $lease, $amount, 0, $now)
            ON CONFLICT (requester, lease_id) DO NOTHING
            """, ("$r", requester), ("$lease", lease), ("$amount", amount), ("$now", Now())) == 1
            ? LedgerResult.Owed
            : LedgerResult.AlreadyOwed, LedgerResult.Owed);
    }

    /// <summary>As a provider: removes an unpaid lease recorded by <see cref="RecordOwed"/> whose result was never delivered.</summary>
    public void ForgetOwed(ReadOnlySpan<byte> leaseId, PeerId requester)
    {
        var lease = leaseId.ToArray();
        Run(() => ExecuteNormal("DELETE FROM owed WHERE requester = $r AND lease_id = $lease AND paid = 0", ("$r", requester), ("$lease", lease)));
    }

    /// <summary>As a provider: the total <paramref name="requester"/> owes for completed leases it has not paid for.</summary>
    public long Unpaid(PeerId requester) => Fresh(0L, () => Read(() => Convert.ToInt64(
        Scalar(null, "SELECT COALESCE(SUM(amount), 0) FROM owed WHERE requester = $r AND paid = 0", ("$r", requester)),
        System.Globalization.CultureInfo.InvariantCulture)));

    /// <summary>As a provider: leases of <paramref name="requester"/> completed and not paid for.</summary>
    public int UnpaidLeases(PeerId requester) => Fresh(0, () => Read(() => Convert.ToInt32(
        Scalar(null, "SELECT count(*) FROM owed WHERE requester = $r AND paid = 0", ("$r", requester)),
        System.Globalization.CultureInfo.InvariantCulture)));

    /// <summary>
    /// As a provider: records a receipt as Earned only when it pays for a lease this node recorded as owed
    /// (<see cref="RecordOwed"/>) by that requester, and for at most the amount owed; the lease is then paid. Anything
    /// else writes nothing: a receipt for a lease that never existed, for another provider, or for more than agreed.
    /// </summary>
    /// <returns>Recorded, AlreadyRecorded, Conflict, NotOurs, NotOwed or ExceedsOwed.</returns>
    public LedgerResult RecordEarned(SignedReceipt receipt)
    {
        ArgumentNullException.ThrowIfNull(receipt);
        if (receipt.Provider != Owner)
        {
            return LedgerResult.NotOurs;
        }
        var r = receipt.Receipt;
        var requester = receipt.Requester.ToBytes();
        // Checked before any write is queued: a flood of receipts for leases that never were costs a read each, on the
        // reader's connection (beside the writer, not under its lock); the stand-in's unwritten ledger owes nothing and
        // answers without opening its store, so a stranger's receipts do not give an idle node a connection.
        var owed = Fresh<(long Amount, bool Paid)?>(null, () => Read(() => LazyAbsent("owed") ? null : ReadOwed(null, requester, r.LeaseId)));
        if (owed is null)
        {
            return LedgerResult.NotOwed;
        }
        if (r.Amount > owed.Value.Amount)
        {
            return LedgerResult.ExceedsOwed;
        }
        if (owed.Value.Paid)
        {
            return Read(() => Scalar(null, "SELECT receipt FROM entries WHERE receipt_id = $id AND kind = 1", ("$id", r.ReceiptId)) is byte[] stored
                && stored.AsSpan().SequenceEqual(receipt.EnvelopeBytes) ? LedgerResult.AlreadyRecorded : LedgerResult.Conflict);
        }
        return Durable(tx =>
        {
            // The lease is marked paid only while it is owed, unpaid and the receipt pays at most what is owed (one statement
            // for the read and the write); the entry follows. Anything that does not record is rolled back with its savepoint.
            if (Command(tx, "UPDATE owed SET paid = 1 WHERE requester = $r AND lease_id = $lease AND paid = 0 AND amount >= $amount",
                ("$r", requester), ("$lease", r.LeaseId), ("$amount", r.Amount)).ExecuteNonQuery() == 0)
            {
                var current = ReadOwed(tx, requester, r.LeaseId);
                return current is null || r.Amount > current.Value.Amount
                    ? LedgerResult.NotOwed
                    : ExistingEntry(tx, receipt, LedgerEntryKind.Earned); // paid meanwhile: by this receipt, or another
            }
            return InsertEntry(tx, receipt, LedgerEntryKind.Earned, receipt.Requester);
        });
    }

    private (long Amount, bool Paid)? ReadOwed(LedgerTransaction? tx, byte[] requester, byte[] lease)
    {
        using var reader = Command(tx, "SELECT amount, paid FROM owed WHERE requester = $r AND lease_id = $lease", ("$r", requester), ("$lease", lease))
            .ExecuteReader();
        return reader.Read() ? (reader.GetInt64(0), reader.GetInt64(1) != 0) : null;
    }

    /// <summary>
    /// Sets aside up to <paramref name="maxAmount"/> micro-credits for a lease with <paramref name="provider"/>
    /// (state Reserved). Call before the lease starts. Idempotent for the same lease, provider and maximum.
    /// </summary>
    /// <returns>Reserved, AlreadyReserved, Conflict (same lease, other terms) or InsufficientFunds.</returns>
    public LedgerResult ReservePayment(ReadOnlySpan<byte> leaseId, PeerId provider, long maxAmount)
    {
        if (leaseId.Length is 0 or > Attestation.MaxLeaseIdLength)
        {
            throw new ArgumentException("a lease id is 1–64 bytes", nameof(leaseId));
        }
        ArgumentOutOfRangeException.ThrowIfNegative(maxAmount);
        var lease = leaseId.ToArray();
        // Queued with the writes beside it (Normal): alone it commits on its own as before; queued behind others it runs in
        // their transaction, where the balance is the kept one plus what the writes before it in the batch changed.
        return Normal(tx =>
        {
            // The common case in one statement committing on its own (NORMAL, as the transaction below): the kept balance is
            // current while no other connection has changed the file since it was summed, and the statement checks that
            // itself (pragma_data_version, read inside the statement's own snapshot) beside the funds and the lease. When it
            // inserts nothing (the lease is reserved already, the funds do not cover it, or another connection wrote), the
            // transaction below decides, as it always did.
            if (_balance is { } kept && ReserveIfCurrent(tx, lease, provider, maxAmount, kept + _pendingDelta))
            {
                return LedgerResult.Reserved;
            }
            return ReserveInTransaction(tx, lease, provider, maxAmount);
        }, LedgerResult.Reserved);
    }

    /// <summary>
    /// The reservation as one autocommit statement, against the kept balance <paramref name="kept"/> summed at
    /// <c>_balanceVersion</c>: true when it inserted (the statement's snapshot had that version, the lease had no
    /// reservation and the funds covered it); false when it wrote nothing.
    /// </summary>
    private bool ReserveIfCurrent(LedgerTransaction? tx, byte[] lease, PeerId provider, long maxAmount, long kept)
    {
        CrashHook?.Invoke("reserve");
        return WriteNormal(tx, """
            INSERT INTO reservations (lease_id, provider, max_amount, state, receipt_id, created_at, updated_at)
            SELECT $lease, $provider, $max, 0, NULL, $now, $now
            WHERE (SELECT data_version FROM pragma_data_version) = $version
              AND ($unlimited OR (SELECT COALESCE(SUM(max_amount), 0) FROM reservations WHERE state = 0) <= $limit - $max)
            ON CONFLICT (lease_id) DO NOTHING
            """, ("$lease", lease), ("$provider", provider), ("$max", maxAmount), ("$now", Now()), ("$version", _balanceVersion),
            ("$unlimited", _options.AllowOverdraft ? 1L : 0L), ("$limit", FundsLimit(kept))) == 1;
    }

    /// <summary>The kept balance plus the debt this node lets itself run up (saturating).</summary>
    private long FundsLimit(long balance)
    {
        var debt = Math.Max(0, _options.MaxDebt);
        return balance > long.MaxValue - debt ? long.MaxValue : balance + debt;
    }

    /// <summary>
    /// The reservation decided in a transaction: its own (NORMAL) when <paramref name="batch"/> is null, else the batch's,
    /// which commits it with the others (<see cref="Normal"/>).
    /// </summary>
    private LedgerResult ReserveInTransaction(LedgerTransaction? batch, byte[] lease, PeerId provider, long maxAmount)
    {
        using var own = batch is null ? Begin(durable: false) : null;
        var tx = batch ?? own!;
        // One statement inserts the reservation only when the lease has none and the funds allow it: available (the
        // kept balance less every Reserved maximum, summed by SQLite) plus the debt allowed covers the maximum.
        var limit = FundsLimit(BalanceCore(tx));
        LedgerResult result;
        if (Command(tx, """
            INSERT INTO reservations (lease_id, provider, max_amount, state, receipt_id, created_at, updated_at)
            SELECT $lease, $provider, $max, 0, NULL, $now, $now
            WHERE $unlimited OR (SELECT COALESCE(SUM(max_amount), 0) FROM reservations WHERE state = 0) <= $limit - $max
            ON CONFLICT (lease_id) DO NOTHING
            """, ("$lease", lease), ("$provider", provider), ("$max", maxAmount), ("$now", Now()),
            ("$unlimited", _options.AllowOverdraft ? 1L : 0L), ("$limit", limit)).ExecuteNonQuery() == 1)
        {
            CrashHook?.Invoke("reserve");
            result = LedgerResult.Reserved;
        }
        else
        {
            result = ReadReservation(tx, lease) is { } existing
                ? existing.Provider == provider && existing.MaxAmount == maxAmount ? LedgerResult.AlreadyReserved : LedgerResult.Conflict
                : LedgerResult.InsufficientFunds;
        }
        if (own is not null)
        {
            Commit(own, result is LedgerResult.Reserved);
        }
        return result;
    }

    /// <summary>
    /// Records our signed receipt for a reserved lease: the Spent entry (with the receipt bytes) and the move
    /// to Settled, in one transaction. Call before sending the receipt; afterwards it is in
    /// <see cref="UndeliveredReceipts"/> until <see cref="MarkDelivered"/>.
    /// </summary>
    /// <returns>
    /// Recorded; AlreadyRecorded (this receipt settled it before); Conflict (settled with another receipt, or
    /// the receipt pays another provider); NotOurs; NotReserved; AlreadyReleased; ExceedsReservation.
    /// </returns>
    public LedgerResult Settle(SignedReceipt receipt)
    {
        ArgumentNullException.ThrowIfNull(receipt);
        return Durable(tx => receipt.Requester != Owner ? LedgerResult.NotOurs : SettleNew(tx, receipt));
    }

    /// <summary>
    /// <see cref="SettleCore"/> in two statements instead of three for a receipt whose entry is new: the Spent entry is
    /// inserted first, then the reservation moves to Settled only while it is Reserved, for this receipt's provider and a
    /// maximum covering its amount (the checks SettleCore reads the reservation for, in the UPDATE's own WHERE). Anything
    /// else is decided from the reservation exactly as SettleCore decides it, and the operation, not Recorded, is rolled
    /// back with the entry (its savepoint, or the group commit's transaction). An entry held already goes to SettleCore.
    /// </summary>
    private LedgerResult SettleNew(LedgerTransaction tx, SignedReceipt receipt)
    {
        var r = receipt.Receipt;
        if (!InsertNewEntry(tx, receipt, LedgerEntryKind.Spent, receipt.Provider))
        {
            return SettleCore(tx, receipt);
        }
        CrashHook?.Invoke("settle-entry");
        if (Command(tx, """
            UPDATE reservations SET state = 1, receipt_id = $receipt, updated_at = $now
            WHERE lease_id = $lease AND state = 0 AND provider = $provider AND max_amount >= $amount
            """, ("$receipt", r.ReceiptId), ("$now", Now()), ("$lease", r.LeaseId), ("$provider", receipt.Provider),
            ("$amount", r.Amount)).ExecuteNonQuery() == 1)
        {
            return LedgerResult.Recorded;
        }
        // Not settled: the entry just inserted goes with the operation's rollback.
        return SettleRefusal(ReadReservation(tx, r.LeaseId), receipt) ?? LedgerResult.Conflict;
    }

    /// <summary>Why a receipt cannot settle this reservation, or null when it can (Reserved, same provider, within its maximum).</summary>
    private static LedgerResult? SettleRefusal(PaymentReservation? reservation, SignedReceipt receipt)
    {
        if (reservation is null)
        {
            return LedgerResult.NotReserved;
        }
        if (reservation.Provider != receipt.Provider)
        {
            return LedgerResult.Conflict;
        }
        switch (reservation.State)
        {
            case PaymentState.Released:
                return LedgerResult.AlreadyReleased;
            case PaymentState.Settled or PaymentState.Delivered:
                return reservation.Receipt is { } stored && stored.AsSpan().SequenceEqual(receipt.EnvelopeBytes)
                    ? LedgerResult.AlreadyRecorded
                    : LedgerResult.Conflict;
        }
        return receipt.Receipt.Amount > reservation.MaxAmount ? LedgerResult.ExceedsReservation : null;
    }

    /// <summary>Reserved → Released: nothing is owed for the lease.</summary>
    /// <returns>Released, AlreadyReleased, AlreadySettled or NotReserved.</returns>
    public LedgerResult Release(ReadOnlySpan<byte> leaseId)
    {
        var lease = leaseId.ToArray();
        return Run(() => ExecuteNormal("UPDATE reservations SET state = 3, updated_at = $now WHERE lease_id = $lease AND state = 0",
                ("$now", Now()), ("$lease", lease)) == 1
            ? LedgerResult.Released
            : ReadReservation(null, lease)?.State switch
            {
                null => LedgerResult.NotReserved,
                PaymentState.Settled or PaymentState.Delivered => LedgerResult.AlreadySettled,
                _ => LedgerResult.AlreadyReleased, // Released (a Reserved lease was released by the statement above)
            });
    }

    /// <summary>Settled → Delivered: the provider acknowledged the receipt.</summary>
    /// <returns>Delivered, AlreadyDelivered, NotSettled or NotReserved.</returns>
    public LedgerResult MarkDelivered(ReadOnlySpan<byte> leaseId)
    {
        var lease = leaseId.ToArray();
        // Marked unchained in the same statement: the chain round's next proposals (DeliveredReceiptsWithoutBlock) read it.
        return Normal(tx => WriteNormal(tx, "UPDATE reservations SET state = 2, unchained = 1, updated_at = $now WHERE lease_id = $lease AND state = 1",
                ("$now", Now()), ("$lease", lease)) == 1
            ? LedgerResult.Delivered
            : ReadReservation(tx, lease)?.State switch
            {
                null => LedgerResult.NotReserved,
                PaymentState.Delivered => LedgerResult.AlreadyDelivered,
                _ => LedgerResult.NotSettled, // Reserved or Released (a Settled lease was marked by the statement above)
            }, LedgerResult.Delivered);
    }

    /// <summary>Grants + earned − spent, summed from the entries.</summary>
    public long Balance() => Fresh(FreshBalance, () => Run(() => BalanceCore(null)));

    /// <summary><see cref="Balance"/> less the maxima of all Reserved reservations.</summary>
    public long Available() => Fresh(FreshBalance, () => Run(() => AvailableCore(null)));

    /// <summary>The newest <paramref name="count"/> entries (at most <see cref="CreditsOptions.MaxRecent"/>), newest first.</summary>
    public IReadOnlyList<LedgerEntry> Recent(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        var limit = Math.Min(count, _options.MaxRecent);
        return Run(() =>
        {
            var cmd = Command(null, """
                SELECT seq, kind, receipt_id, lease_id, counterparty, amount, recorded_at, receipt
                FROM entries ORDER BY seq DESC LIMIT $limit
                """, ("$limit", limit));
            using var reader = cmd.ExecuteReader();
            var entries = new List<LedgerEntry>();
            while (reader.Read())
            {
                entries.Add(new LedgerEntry(
                    reader.GetInt64(0),
                    ReadKind(reader.GetInt64(1)),
                    (byte[])reader[2],
                    reader.IsDBNull(3) ? null : (byte[])reader[3],
                    ReadPeer(reader[4]),
                    reader.GetInt64(5),
                    DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(6)),
                    reader.IsDBNull(7) ? null : (byte[])reader[7]));
            }
            return entries;
        });
    }

    /// <summary>Micro-credits earned and spent in all, and since <paramref name="since"/> (for a node's status).</summary>
    public LedgerTotals Totals(DateTimeOffset since) => Fresh(new LedgerTotals(0, 0, 0, 0, 0, 0), () => Run(() =>
    {
        var cmd = Command(null, """
            SELECT
              COALESCE(SUM(CASE WHEN kind = 1 THEN amount END), 0),
              COALESCE(SUM(CASE WHEN kind = 2 THEN amount END), 0),
              COALESCE(SUM(CASE WHEN kind = 1 AND recorded_at >= $since THEN amount END), 0),
              COALESCE(SUM(CASE WHEN kind = 2 AND recorded_at >= $since THEN amount END), 0),
              COALESCE(SUM(CASE WHEN kind = 1 THEN 1 END), 0),
              COALESCE(SUM(CASE WHEN kind = 2 THEN 1 END), 0)
            FROM entries
            """, ("$since", since.ToUnixTimeMilliseconds()));
        using var reader = cmd.ExecuteReader();
        reader.Read();
        return new LedgerTotals(reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetInt64(3), reader.GetInt64(4), reader.GetInt64(5));
    }));

    /// <summary>
    /// The stored signed receipts of Earned entries, oldest first (optionally only those from one requester),
    /// at most <see cref="CreditsOptions.MaxProofReceipts"/>. Anyone can check them with
    /// <see cref="VerifyProofOfEarnings"/>.
    /// </summary>
    public IReadOnlyList<byte[]> ProofOfEarnings(PeerId? from = null)
    {
        return Run(() =>
        {
            var cmd = from is { } requester
                ? Command(null, "SELECT receipt FROM entries WHERE kind = 1 AND counterparty = $peer ORDER BY seq LIMIT $limit",
                    ("$peer", requester), ("$limit", _options.MaxProofReceipts))
                : Command(null, "SELECT receipt FROM entries WHERE kind = 1 ORDER BY seq LIMIT $limit",
                    ("$limit", _options.MaxProofReceipts));
            using var reader = cmd.ExecuteReader();
            var receipts = new List<byte[]>();
            while (reader.Read())
            {
                receipts.Add(reader.IsDBNull(0) ? throw Corrupt("an Earned entry without its receipt") : (byte[])reader[0]);
            }
            return receipts;
        });
    }

    /// <summary>
    /// Checks a proof of earnings offered by <paramref name="provider"/>: every receipt must be valid
    /// (<see cref="SignedReceipt.Decode"/>) and pay <paramref name="provider"/>; a receipt id is counted once.
    /// </summary>
    public static ProofOfEarningsCheck VerifyProofOfEarnings(PeerId provider, IReadOnlyList<ReadOnlyMemory<byte>> receipts, CreditsOptions options)
    {
        ArgumentNullException.ThrowIfNull(receipts);
        ArgumentNullException.ThrowIfNull(options);
        if (receipts.Count > options.MaxProofReceipts)
        {
            return new(VerifyStatus.TooLarge, 0, 0, options.MaxProofReceipts);
        }
        var seen = new HashSet<string>(StringComparer.Ordinal);
        long total = 0;
        for (var i = 0; i < receipts.Count; i++)
        {
            var checkedReceipt = SignedReceipt.Decode(receipts[i], options);
            if (!checkedReceipt.IsValid)
            {
                return new(checkedReceipt.Status, 0, 0, i);
            }
            var r = checkedReceipt.Value!;
            if (r.Provider != provider)
            {
                return new(VerifyStatus.PartyMismatch, 0, 0, i);
            }
            if (seen.Add(Convert.ToHexString(r.ReceiptId)))
            {
                if (long.MaxValue - total < r.Receipt.Amount)
                {
                    return new(VerifyStatus.AmountMismatch, 0, 0, i);
                }
                total += r.Receipt.Amount;
            }
        }
        return new(VerifyStatus.Valid, total, seen.Count, -1);
    }

    /// <summary>The reservation for a lease, if any.</summary>
    public PaymentReservation? GetReservation(ReadOnlySpan<byte> leaseId)
    {
        var lease = leaseId.ToArray();
        return Fresh(null, () => Read(() => LazyAbsent("reservations") ? null : ReadReservation(null, lease)));
    }

    /// <summary>All reservations in <paramref name="state"/>, oldest first (for recovery: Reserved and Settled).</summary>
    public IReadOnlyList<PaymentReservation> Reservations(PaymentState state) => Fresh<IReadOnlyList<PaymentReservation>>([], () =>
        Read(() => LazyAbsent("reservations") ? []
            : (uint)state < (uint)ReservationsInState.Length ? Rarely(ReservationsInState[(int)state], ReadReservations) : []));

    /// <summary>The stored receipts of Settled reservations: send each again after a restart.</summary>
    public IReadOnlyList<byte[]> UndeliveredReceipts() =>
        [.. Reservations(PaymentState.Settled).Select(r => r.Receipt ?? throw Corrupt("a Settled reservation without its receipt"))];

    public void Dispose()
    {
        lock (_gate)
        {
            if (!_disposed)
            {
                _disposed = true;
                FinalizeStatements();
                DisposeReader();
                CloseWal();
                Close(_connection, _store);
            }
        }
    }

    /// <summary>
    /// Statements run through the kept (prepared) statements on the writer's connection since the ledger was opened: every
    /// statement of the lease path, BEGIN, COMMIT and savepoints included (tests count what an operation costs).
    /// </summary>
    internal long WriterStatements => Run(() => _writerStatements);

    /// <summary>Reads a pragma's value (tests check WAL and synchronous=FULL).</summary>
    internal object? Pragma(string name) => Run(() => Scalar(null, $"PRAGMA {name}"));

    /// <summary>The databases the writer's connection has open, by name (tests: temp is never opened).</summary>
    internal IReadOnlyList<string> OpenDatabases() => Run(() =>
    {
        using var command = _connection.CreateCommand();
        command.CommandText = "SELECT name FROM pragma_database_list ORDER BY seq";
        using var reader = command.ExecuteReader();
        var names = new List<string>();
        while (reader.Read())
        {
            names.Add(reader.GetString(0));
        }
        return (IReadOnlyList<string>)names;
    });

    /// <summary>The SQL of every command the ledger keeps prepared (tests: which statements stay compiled while it is open).</summary>
    internal IReadOnlyList<string> PreparedStatements() => Run(() => (IReadOnlyList<string>)[.. _commands.Keys]);

    /// <summary>Each statement kept prepared on the writer's connection and the bytes SQLite holds for it (tests).</summary>
    internal IReadOnlyList<(string Sql, int Bytes)> PreparedStatementBytes() =>
        Run(() => (IReadOnlyList<(string, int)>)[.. _commands.Select(c => (c.Key, c.Value.MemoryUsed))]);

    private void Initialise()
    {
        // WAL and FULL: a commit is durable once it returns; readers never block the writer.
        var mode = Once("PRAGMA journal_mode = WAL", scalar: true) as string;
        if (!string.Equals(mode, _inMemory ? "memory" : "wal", StringComparison.OrdinalIgnoreCase))
        {
            throw new LedgerException($"ledger {Path}: could not enable WAL (journal_mode is {mode})");
        }
        ExecuteRarely("PRAGMA synchronous = FULL");
        _durable = true;
        if (!_inMemory)
        {
            Once($"PRAGMA wal_autocheckpoint = {WalCheckpointPages}");
        }
        // main's only: a bare quick_check checks every database of the connection, temp included, and opens it for that (its
        // pager, B-tree and a 4 KiB page, ~19 KiB held until the connection closes); the ledger has nothing in temp.
        var check = Once("PRAGMA main.quick_check", scalar: true) as string;
        if (!string.Equals(check, "ok", StringComparison.Ordinal))
        {
            throw Corrupt($"integrity check failed: {check}");
        }

        using var tx = new LedgerTransaction(this);
        // A file is new when it has no table at all; the in-memory store also holds the node's other tables (reputation,
        // peers), so there a ledger is new when its meta table is missing.
        var tables = Convert.ToInt64(ScalarRarely(_inMemory
                ? "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'meta'"
                : "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"),
            System.Globalization.CultureInfo.InvariantCulture);
        if (tables == 0)
        {
            Once(CoreSchema);
            if (!_inMemory)
            {
                Once(ReservationsSchema); // the stand-in's: at its first use (CreditLedger.Lazy.cs)
            }
            ExecuteRarely("INSERT INTO meta (key, value) VALUES ('schema', $v), ('owner', $owner)",
                ("$v", SchemaVersion), ("$owner", Owner));
            if (_options.InitialGrant > 0)
            {
                ExecuteRarely("""
                    INSERT INTO entries (receipt_id, kind, counterparty, lease_id, amount, receipt, recorded_at)
                    VALUES ($id, 0, $owner, NULL, $amount, NULL, $now)
                    """, ("$id", GrantId(Owner)), ("$owner", Owner), ("$amount", _options.InitialGrant), ("$now", _createdAt ?? Now()));
            }
            if (!_inMemory)
            {
                Once(OwedSchema);
                Once(StandingSchema);
                Once(ChainSchema);
                Once(ChainPaymentsSchema);
                Once(ChainUnlinkedSchema);
                Once(ForksSchema);
            }
            EnsureTotals(tx, created: true);
            if (!_inMemory)
            {
                Once(RecoverySchema);
            }
            CrashHook?.Invoke("create");
            tx.Commit();
            Created = true;
            return;
        }

        object? version;
        object? owner;
        try
        {
            version = ScalarRarely("SELECT value FROM meta WHERE key = 'schema'");
            owner = ScalarRarely("SELECT value FROM meta WHERE key = 'owner'");
        }
        catch (SqliteException e) when (e.SqliteErrorCode == 1)
        {
            throw Corrupt("no meta table", e);
        }
        if (version is not long v || v != SchemaVersion)
        {
            throw Corrupt($"unknown schema version {version ?? "(none)"}");
        }
        if (owner is not byte[] ownerBytes || !PeerId.TryFromBytes(ownerBytes, out var stored))
        {
            throw Corrupt("no owner");
        }
        if (stored != Owner)
        {
            throw new LedgerException($"ledger {Path} belongs to {stored}, not {Owner}");
        }
        if (!_inMemory)
        {
            Once(OwedSchema);
            Once(StandingSchema);
            Once(ChainSchema);
            Once(ChainPaymentsSchema);
            Once(ForksSchema);
        }
        EnsureTotals(tx, created: false);
        if (!_inMemory)
        {
            Once(RecoverySchema);
        }
        if (!_inMemory
            && ScalarRarely("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'entries' AND sql LIKE '%AUTOINCREMENT%'") is not null)
        {
            Once(EntriesRowidMigration); // before IndexMigration, which reads entries' index
        }
        Once(IndexMigration);
        if (!_inMemory)
        {
            // The stand-in's tables are made by this code; a file may have been made by an older one.
            if (ScalarRarely("SELECT 1 FROM pragma_table_info('reservations') LIMIT 1") is not null
                && ScalarRarely("SELECT 1 FROM pragma_table_info('reservations') WHERE name = 'unchained'") is null)
            {
                Once(UnchainedMigration);
            }
            Once(ReservationsSchema); // reservations_pending and the trigger, for a ledger made before them
            Once(ReservationsMigration);
            if (ScalarRarely("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'chain_unlinked'") is null)
            {
                Once(ChainUnlinkedSchema);
                Once(ChainUnlinkedMigration);
            }
        }
        tx.Commit();
    }

    /// <summary>Durable operations waiting for the next group commit (tests hold a commit open to batch others).</summary>
    internal int QueuedWrites
    {
        get
        {
            lock (_queueGate)
            {
                return _queue.Count;
            }
        }
    }

    /// <summary>
    /// True while the transaction being committed is durable before its callers return: a group commit (flushed after
    /// it, outside the lock), or one committing with <c>synchronous=FULL</c> (tests check the durable operations).
    /// </summary>
    internal bool CommitsDurably => _durable || _inGroupCommit;

    /// <summary>
    /// Begins a write transaction committing with <c>synchronous=FULL</c> (<paramref name="durable"/>) or
    /// <c>NORMAL</c>; the setting is per connection, so it is switched only when it differs from the last one.
    /// </summary>
    private LedgerTransaction Begin(bool durable)
    {
        if (_durable != durable)
        {
            SetSynchronous(durable);
        }
        return new LedgerTransaction(this);
    }

    /// <summary>
    /// Switches the connection's <c>synchronous</c> setting and notes it (<see cref="CommitsDurably"/>). The in-memory
    /// stand-in only notes it: its store has no file to sync, so SQLite ignores the setting there, and the two pragmas
    /// kept prepared would hold ~2.6 KiB on every simulated node that took part in a lease.
    /// </summary>
    private void SetSynchronous(bool durable)
    {
        if (!_inMemory)
        {
            Execute(null, durable ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
        }
        _durable = durable;
    }

    /// <summary>
    /// A write of one statement that commits on its own (autocommit) with <c>synchronous=NORMAL</c>, as a NORMAL transaction
    /// of a read and a write did before it, in one statement instead of four (BEGIN, read, write, COMMIT); the statement's
    /// own conditions do the read. The crash hook's "commit" step runs before it: a crash there leaves no trace, as it
    /// did inside the transaction. Returns the rows it changed.
    /// </summary>
    private int ExecuteNormal(string sql, params ReadOnlySpan<(string Name, Storage.SqlValue Value)> parameters)
    {
        if (_durable)
        {
            SetSynchronous(false);
        }
        CrashHook?.Invoke("commit");
        return Command(null, sql, parameters).ExecuteNonQuery();
    }

    private LedgerResult SettleCore(LedgerTransaction tx, SignedReceipt receipt)
    {
        var r = receipt.Receipt;
        if (SettleRefusal(ReadReservation(tx, r.LeaseId), receipt) is { } refused)
        {
            return refused;
        }
        var inserted = InsertEntry(tx, receipt, LedgerEntryKind.Spent, receipt.Provider);
        if (inserted == LedgerResult.Conflict)
        {
            return inserted;
        }
        CrashHook?.Invoke("settle-entry");
        SetState(tx, r.LeaseId, PaymentState.Settled, r.ReceiptId);
        return LedgerResult.Recorded;
    }

    private LedgerResult InsertEntry(LedgerTransaction tx, SignedReceipt receipt, LedgerEntryKind kind, PeerId counterparty) =>
        InsertNewEntry(tx, receipt, kind, counterparty) ? LedgerResult.Recorded : ExistingEntry(tx, receipt, kind);

    /// <summary>Inserts the entry unless one of this kind holds the receipt id already (one statement, not a read and a write).</summary>
    private bool InsertNewEntry(LedgerTransaction tx, SignedReceipt receipt, LedgerEntryKind kind, PeerId counterparty)
    {
        var r = receipt.Receipt;
        if (Command(tx, """
            INSERT INTO entries (receipt_id, kind, counterparty, lease_id, amount, receipt, recorded_at)
            VALUES ($id, $kind, $peer, $lease, $amount, $receipt, $now)
            ON CONFLICT (receipt_id, kind) DO NOTHING
            """,
            ("$id", r.ReceiptId), ("$kind", (long)kind), ("$peer", counterparty), ("$lease", r.LeaseId),
            ("$amount", r.Amount), ("$receipt", receipt.EnvelopeBytes), ("$now", Now())).ExecuteNonQuery() == 0)
        {
            return false;
        }
        _pendingDelta += kind == LedgerEntryKind.Spent ? -r.Amount : r.Amount;
        CrashHook?.Invoke("entry");
        return true;
    }

    /// <summary>AlreadyRecorded when the entry of <paramref name="kind"/> for the receipt's id holds these very bytes, else Conflict.</summary>
    private LedgerResult ExistingEntry(LedgerTransaction tx, SignedReceipt receipt, LedgerEntryKind kind) =>
        Scalar(tx, "SELECT receipt FROM entries WHERE receipt_id = $id AND kind = $kind", ("$id", receipt.Receipt.ReceiptId), ("$kind", (long)kind)) is byte[] stored
            && stored.AsSpan().SequenceEqual(receipt.EnvelopeBytes)
            ? LedgerResult.AlreadyRecorded
            : LedgerResult.Conflict;

    private void SetState(LedgerTransaction tx, byte[] lease, PaymentState state, byte[]? receiptId) =>
        Execute(tx, "UPDATE reservations SET state = $state, receipt_id = $receipt, updated_at = $now WHERE lease_id = $lease",
            ("$state", (long)state), ("$receipt", receiptId), ("$now", Now()), ("$lease", lease));

    /// <summary>
    /// The sum of the entries. Summed by SQLite once, then kept up to date by this connection's own commits; summed
    /// again whenever another connection changed the file (<c>PRAGMA data_version</c> moves only for those), so the
    /// balance is still derived from the entries, without a scan per reservation.
    /// </summary>
    private long BalanceCore(LedgerTransaction? tx)
    {
        var version = DataVersion(tx);
        if (_balance is not { } balance || version != _balanceVersion)
        {
            balance = SumEntries(tx) - _pendingDelta;
            _balance = balance;
            _balanceVersion = version;
        }
        return balance + _pendingDelta;
    }

    /// <summary>The balance summed from every entry by SQLite (tests compare it with the kept one).</summary>
    internal long SumEntries() => Run(() => SumEntries(null));

    private long SumEntries(LedgerTransaction? tx) => Convert.ToInt64(
        Scalar(tx, "SELECT COALESCE(SUM(CASE kind WHEN 2 THEN -amount ELSE amount END), 0) FROM entries"),
        System.Globalization.CultureInfo.InvariantCulture);

    private long DataVersion(LedgerTransaction? tx) => Convert.ToInt64(Scalar(tx, "PRAGMA data_version"), System.Globalization.CultureInfo.InvariantCulture);

    private long AvailableCore(LedgerTransaction? tx) => BalanceCore(tx) - Convert.ToInt64(
        Scalar(tx, "SELECT COALESCE(SUM(max_amount), 0) FROM reservations WHERE state = 0"),
        System.Globalization.CultureInfo.InvariantCulture);

    private PaymentReservation? ReadReservation(LedgerTransaction? tx, byte[] lease) =>
        ReadReservations(Command(tx, ReservationOfLease, ("$lease", lease))).FirstOrDefault();

    private const string SelectReservations = """
        SELECT r.lease_id, r.provider, r.max_amount, r.state, r.receipt_id, e.receipt, r.created_at
        FROM reservations r LEFT JOIN entries e ON e.receipt_id = r.receipt_id AND e.kind = 2
        """;

    // Whole statements as constants: the statement cache is keyed by the text, which is then not built anew per read.
    private const string ReservationOfLease = SelectReservations + " WHERE r.lease_id = $lease";
    // One text per state, the state a literal: SQLite uses the partial index (reservations_pending) only where the query's
    // WHERE implies the index's, which a bound parameter never does. Delivered and Released scan the table in rowid order.
    private static readonly string[] ReservationsInState =
        [.. Enumerable.Range(0, 4).Select(state => SelectReservations + $" WHERE r.state = {state} ORDER BY r.rowid")];

    private List<PaymentReservation> ReadReservations(Storage.SqliteStatement cmd)
    {
        using var reader = cmd.ExecuteReader();
        var list = new List<PaymentReservation>();
        while (reader.Read())
        {
            var state = reader.GetInt64(3);
            if (state is < 0 or > 3)
            {
                throw Corrupt($"unknown payment state {state}");
            }
            list.Add(new PaymentReservation(
                (byte[])reader[0],
                ReadPeer(reader[1]),
                reader.GetInt64(2),
                (PaymentState)state,
                reader.IsDBNull(4) ? null : (byte[])reader[4],
                reader.IsDBNull(5) ? null : (byte[])reader[5],
                DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(6))));
        }
        return list;
    }

    private PeerId ReadPeer(object value) =>
        value is byte[] bytes && KeyCache.TryPeer(bytes, out var peer) ? peer : throw Corrupt("an unreadable peer id");

    private LedgerEntryKind ReadKind(long kind) =>
        kind is >= 0 and <= 2 ? (LedgerEntryKind)kind : throw Corrupt($"unknown entry kind {kind}");

    private void Commit(LedgerTransaction tx, bool changed, bool group = false)
    {
        if (changed)
        {
            CrashHook?.Invoke("commit");
            if (group)
            {
                CommitGroup(tx);
            }
            else
            {
                tx.Commit();
            }
            if (_balance is { } balance)
            {
                _balance = balance + _pendingDelta;
            }
        }
        else
        {
            tx.Rollback();
        }
        _pendingDelta = 0;
    }

    /// <summary>
    /// Runs a durable operation (<see cref="Settle"/>, <see cref="Record"/>) with group commit: callers arriving while
    /// another commit is being flushed queue up, and whoever takes the lock next runs everything queued in one
    /// transaction, each operation inside its own savepoint (one that does not record, or fails, is rolled back alone
    /// and leaves the others be), then commits, releases the lock and flushes once for all (CreditLedger.Flush.cs). Each
    /// caller returns only after the commit holding its operation is durable, with its own result or exception, exactly
    /// as if it had run alone; a failed commit fails every operation in it, none of which then left a trace, and a failed
    /// flush fails every caller it covered.
    /// </summary>
    private LedgerResult Durable(Func<LedgerTransaction, LedgerResult> operation) => Queued(new PendingWrite(operation));

    /// <summary>
    /// Queues <paramref name="mine"/> and, under the writer's lock, runs it with everything queued beside it in one
    /// transaction (<see cref="RunBatch"/>) unless another caller's batch already did; <paramref name="alone"/>, when given,
    /// runs instead where nothing else was queued. Returns its own result or exception.
    /// </summary>
    private LedgerResult Queued(PendingWrite mine, Func<LedgerResult>? alone = null)
    {
        lock (_queueGate)
        {
            _queue.Add(mine);
        }
        return Run(() =>
        {
            if (!mine.Done)
            {
                List<PendingWrite> batch;
                lock (_queueGate)
                {
                    batch = [.. _queue];
                    _queue.Clear();
                }
                if (alone is not null && batch.Count == 1)
                {
                    mine.Done = true;
                    return alone();
                }
                RunBatch(batch);
            }
            return mine.Error is { } error ? throw error : mine.Result;
        });
    }

    /// <summary>
    /// Runs a one-statement write that commits with <c>synchronous=NORMAL</c> (<see cref="RecordOwed"/>,
    /// <see cref="MarkDelivered"/>, <see cref="ReservePayment"/>: one of each per lease) through the group commit's queue,
    /// so that it shares a commit with the writes waiting beside it instead of committing on its own. Alone (nothing else queued when it takes the writer's
    /// lock) it commits on its own as before (autocommit, <paramref name="operation"/> given no transaction). Queued with
    /// others, whoever takes the lock runs them all in one transaction (<see cref="RunBatch"/>): with only such writes, one
    /// NORMAL commit; with a durable write among them, that write's group commit, flushed before any of its callers returns
    /// (never less durable than alone). A statement is atomic on its own (SQLite undoes a failed one and keeps the
    /// transaction), so these need no savepoint; one that changes no row writes nothing. <paramref name="wrote"/> is the
    /// result that means it wrote. Each caller gets its own result or exception, as alone.
    /// </summary>
    private LedgerResult Normal(Func<LedgerTransaction?, LedgerResult> operation, LedgerResult wrote) =>
        // Alone: commits on its own, exactly as before.
        Queued(new PendingWrite(tx => operation(tx)) { Normal = true, Wrote = wrote }, alone: () => operation(null));

    /// <summary>
    /// The statement of a <see cref="Normal"/> write: on its own, an autocommit with <c>synchronous=NORMAL</c>
    /// (<see cref="ExecuteNormal"/>); inside a batch's transaction, a statement of it (the batch set its sync mode).
    /// </summary>
    private int WriteNormal(LedgerTransaction? tx, string sql, params ReadOnlySpan<(string Name, Storage.SqlValue Value)> parameters) =>
        tx is null ? ExecuteNormal(sql, parameters) : Command(tx, sql, parameters).ExecuteNonQuery();

    /// <summary>
    /// <see cref="Durable"/> for several operations queued together, so that they share one commit (each in its own
    /// savepoint, in order); returns their writes, each with its own result or exception.
    /// </summary>
    private PendingWrite[] DurableAll(IReadOnlyList<Func<LedgerTransaction, LedgerResult>> operations)
    {
        var mine = operations.Select(o => new PendingWrite(o)).ToArray();
        lock (_queueGate)
        {
            _queue.AddRange(mine);
        }
        Run(() =>
        {
            // Queued together under the queue's lock, so whoever took one of them took all of them.
            if (mine.Length > 0 && !mine[0].Done)
            {
                List<PendingWrite> batch;
                lock (_queueGate)
                {
                    batch = [.. _queue];
                    _queue.Clear();
                }
                RunBatch(batch);
            }
            return 0;
        });
        return mine;
    }

    private void RunBatch(List<PendingWrite> batch)
    {
        try
        {
            // synchronous=FULL only until SQLite has synced the WAL once (see CreditLedger.Flush.cs); after that the commit
            // is flushed outside the lock, before any caller returns. A batch of only NORMAL writes (Normal) is one NORMAL
            // commit, not a group commit: none of its callers asked for a flush.
            var group = batch.Exists(w => !w.Normal);
            using var tx = Begin(durable: group && !_walSynced);
            _inGroupCommit = group;
            var changed = false;
            // Each durable operation runs inside its own savepoint so that one that does not record is undone alone; a
            // batch of one needs none, since then the whole transaction is rolled back instead. A NORMAL write is one
            // statement, atomic on its own: it needs none.
            var savepoints = batch.Count > 1;
            foreach (var write in batch)
            {
                var delta = _pendingDelta;
                var save = savepoints && !write.Normal;
                if (save)
                {
                    tx.Save();
                }
                write.Ran = true;
                try
                {
                    write.Result = write.Operation(tx);
                }
                catch (Exception e)
                {
                    write.Error = e is SqliteException sqlite ? Translate(sqlite, Path) : e;
                }
                if (write.Normal && write.Error is not null && !InTransaction)
                {
                    throw write.Error; // SQLite rolled the whole transaction back (I/O, disk full): the batch fails as one
                }
                var recorded = write.Error is null && write.Result == write.Wrote;
                changed |= recorded;
                if (!recorded)
                {
                    _pendingDelta = delta;
                }
                if (save)
                {
                    if (!recorded)
                    {
                        tx.RollbackToSave();
                    }
                    tx.Release();
                }
            }
            Commit(tx, changed, group);
        }
        catch (Exception e)
        {
            // Nothing of this transaction committed: what it recorded, and what it never ran, failed with it.
            ForgetBalance();
            var error = e is SqliteException sqlite ? Translate(sqlite, Path) : e;
            foreach (var write in batch.Where(w => !w.Ran || (w.Error is null && w.Result == w.Wrote)))
            {
                write.Error = error;
            }
        }
        finally
        {
            _inGroupCommit = false;
            foreach (var write in batch)
            {
                write.Done = true;
            }
        }
    }

    /// <summary>
    /// Runs <paramref name="action"/> under the writer's lock on the writer's connection, then (outside the lock, unless
    /// this is a call inside another) waits until every group commit it could have seen is flushed, so what it returns
    /// never rests on a commit a crash could still undo (see CreditLedger.Flush.cs).
    /// </summary>
    private T Run<T>(Func<T> action)
    {
        var result = RunLocked(action, out var seen);
        if (!_gate.IsHeldByCurrentThread)
        {
            AwaitFlushed(seen);
        }
        return result;
    }

    private T RunLocked<T>(Func<T> action, out long seen)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            ThrowIfFlushFailed();
            if (_unwritten)
            {
                Materialise(); // the stand-in's first operation that needs its store (CreditLedger.Unwritten.cs)
            }
            _runDepth++;
            try
            {
                var result = action();
                seen = GroupCommitsSeen;
                return result;
            }
            catch (SqliteException e)
            {
                ForgetBalance();
                throw Translate(e, Path);
            }
            catch
            {
                ForgetBalance();
                throw;
            }
            finally
            {
                if (--_runDepth == 0 && _inMemory)
                {
                    FinalizeLargeStatements();
                }
            }
        }
    }

    /// <summary>Operations running on this thread under the writer's lock (the outermost one ends at 0).</summary>
    private int _runDepth;

    /// <summary>
    /// The most bytes a statement of the in-memory stand-in may hold and stay prepared after the operation that ran it
    /// (<see cref="FinalizeLargeStatements"/>). A file ledger keeps every statement it runs (the lease path parses none
    /// twice); in the stand-in, thousands of nodes share one process and a kept statement holds its compiled program
    /// with those of the triggers it fires: the writes of the lease path 5.4–9.2 KiB each (an INSERT into <c>entries</c>
    /// or <c>chain</c>, an UPDATE of <c>reservations</c> or <c>owed</c>, the totals' join), ~70 KiB on a simulated node
    /// that has taken part in a lease; the lookups, BEGIN and COMMIT 1.3–3.3 KiB. Those stay kept; the large ones are
    /// prepared once per operation that runs them.
    /// </summary>
    internal const int StandInStatementBytes = 4 * 1024;

    /// <summary>
    /// The stand-in's (under the writer's lock, at the end of an operation): finalizes the kept statements that hold more
    /// than <see cref="StandInStatementBytes"/>.
    /// </summary>
    private void FinalizeLargeStatements()
    {
        List<string>? large = null;
        foreach (var (sql, cmd) in _commands)
        {
            if (cmd.MemoryUsed > StandInStatementBytes)
            {
                (large ??= []).Add(sql);
            }
        }
        if (large is null)
        {
            return;
        }
        foreach (var sql in large)
        {
            _commands.Remove(sql, out var cmd);
            cmd!.Dispose();
        }
    }

    /// <summary>Finalizes every statement kept on the writer's connection (under the writer's lock).</summary>
    private void FinalizeStatements()
    {
        foreach (var cmd in _commands.Values)
        {
            cmd.Dispose();
        }
        _commands.Clear();
    }

    /// <summary>After a failure the kept balance may count an entry that was rolled back: sum again next time.</summary>
    private void ForgetBalance()
    {
        _balance = null;
        _pendingDelta = 0;
        _ownHead = null;
        ForgetLazy();
    }

    /// <summary>After a rollback (whole, or to a savepoint) the own chain's kept head may be one that was undone: read it again.</summary>
    private void ForgetKept()
    {
        _ownHead = null;
        ForgetLazy();
    }

    private static LedgerException Translate(SqliteException e, string path) =>
        (e.SqliteErrorCode & 0xff) is SqliteCorrupt or SqliteNotADatabase
            ? new LedgerCorruptException(path, e.Message, e)
            : new LedgerException($"ledger {path}: {e.Message}", e);

    private LedgerCorruptException Corrupt(string detail, Exception? inner = null) => new(Path, detail, inner);

    private long Now() => _time.GetUtcNow().ToUnixTimeMilliseconds();

    private static byte[] GrantId(PeerId owner)
    {
        var input = new byte[GrantDomain.Length + owner.Bytes.Length];
        GrantDomain.CopyTo(input, 0);
        owner.Bytes.CopyTo(input.AsSpan(GrantDomain.Length));
        return SHA256.HashData(input);
    }

    /// <summary>True while the connection has a transaction open (SQLite's autocommit is off).</summary>
    private bool InTransaction => SQLitePCL.raw.sqlite3_get_autocommit(_connection.Handle) == 0;

    /// <summary>
    /// The statement for <paramref name="sql"/> with these parameters bound. Statements are kept per text (all are
    /// constants here) so each is prepared once; callers run them under the lock and never dispose them.
    /// </summary>
    private Storage.SqliteStatement Command(LedgerTransaction? tx, string sql, params ReadOnlySpan<(string Name, Storage.SqlValue Value)> parameters)
    {
        var (connection, commands) = StatementSource();
        if (ReferenceEquals(connection, _connection))
        {
            _writerStatements++; // under the writer's lock
        }
        EnsureTablesFor(sql); // the stand-in's tables made when first named (CreditLedger.Lazy.cs); a kept statement too (a rollback may have undone one)
        if (!commands.TryGetValue(sql, out var statement))
        {
            statement = Storage.SqliteStatement.Prepare(connection, sql);
            commands[sql] = statement;
        }
        _ = tx; // transactions are run by LedgerTransaction's own statements: the connection has none of its own
        // Prepared once, rebound in place on every run: no command, parameter, binder or reader objects per call.
        return statement.Bind(parameters);
    }

    private object? Scalar(LedgerTransaction? tx, string sql, params ReadOnlySpan<(string Name, Storage.SqlValue Value)> parameters) =>
        Command(tx, sql, parameters).ExecuteScalar();

    /// <summary>
    /// Runs <paramref name="sql"/> with these parameters bound on a statement prepared for this run only and finalized
    /// after it, for the rare paths: the ledger's open, a chain recovery, and the scans of the retry and redelivery rounds
    /// (once a round). A kept statement (<see cref="Command"/>) holds its compiled program, 1.5–5.5 KiB, as long as the
    /// connection is open: ten of these were 27 of an idle simulated node's 30 KiB of statements. Same connection and
    /// lock as <see cref="Command"/>.
    /// </summary>
    private T Rarely<T>(string sql, Func<Storage.SqliteStatement, T> run, params ReadOnlySpan<(string Name, Storage.SqlValue Value)> parameters)
    {
        EnsureTablesFor(sql);
        using var statement = Storage.SqliteStatement.Prepare(StatementSource().Connection, sql);
        var result = run(statement.Bind(parameters));
        _rarelySteps = statement.VmSteps;
        return result;
    }

    private long _rarelySteps;

    /// <summary>
    /// SQLite's virtual-machine steps of the last statement run through <see cref="Rarely{T}"/> (a round's scan, a listing):
    /// tests and benchmarks read what a round's query costs, which should follow what is pending, not the ledger's history.
    /// </summary>
    internal long LastRarelySteps => Run(() => _rarelySteps);

    private object? ScalarRarely(string sql, params ReadOnlySpan<(string Name, Storage.SqlValue Value)> parameters) =>
        Rarely(sql, s => s.ExecuteScalar(), parameters);

    private void ExecuteRarely(string sql, params ReadOnlySpan<(string Name, Storage.SqlValue Value)> parameters) =>
        Rarely(sql, s => s.ExecuteNonQuery(), parameters);

    private void Execute(LedgerTransaction? tx, string sql, params ReadOnlySpan<(string Name, Storage.SqlValue Value)> parameters) =>
        Command(tx, sql, parameters).ExecuteNonQuery();

    /// <summary>
    /// Runs a statement the ledger runs once per open (schema, migrations, opening pragmas) without keeping it prepared:
    /// a kept statement holds its compiled program as long as the connection is open (about 3 KiB for a CREATE; with
    /// the mesh's keepers, a third of an idle simulated node's SQLite memory). Inside a transaction as
    /// <see cref="Execute"/> is (the connection's own BEGIN).
    /// </summary>
    private object? Once(string sql, bool scalar = false)
    {
        using var command = _connection.CreateCommand();
        command.CommandText = SqlText.Compact(sql); // the schema's CREATE text is stored as run: without indentation
        if (scalar)
        {
            return command.ExecuteScalar();
        }
        command.ExecuteNonQuery();
        return null;
    }

    /// <summary>A durable operation waiting for the next group commit; read and written under the ledger's lock.</summary>
    private sealed class PendingWrite(Func<LedgerTransaction, LedgerResult> operation)
    {
        public Func<LedgerTransaction, LedgerResult> Operation { get; } = operation;

        public bool Done { get; set; }

        public bool Ran { get; set; }

        public LedgerResult Result { get; set; }

        public Exception? Error { get; set; }

        /// <summary>A one-statement write committed with synchronous=NORMAL (<see cref="CreditLedger.Normal"/>): no savepoint, no flush of its own.</summary>
        public bool Normal { get; init; }

        /// <summary>The result that means the operation wrote (kept in the commit); any other is undone or wrote nothing.</summary>
        public LedgerResult Wrote { get; init; } = LedgerResult.Recorded;
    }

    /// <summary>
    /// A write transaction (BEGIN IMMEDIATE) driven by this ledger's own cached, once-prepared BEGIN / COMMIT / ROLLBACK /
    /// SAVEPOINT commands: Microsoft.Data.Sqlite's SqliteTransaction creates and prepares a new command for each of them,
    /// several per ledger operation. Disposing one that neither committed nor rolled back rolls it back (if SQLite has
    /// not already), as SqliteTransaction does. The savepoint is a single name: savepoints are never nested here.
    /// </summary>
    private sealed class LedgerTransaction : IDisposable
    {
        private readonly CreditLedger _ledger;
        private bool _open;

        public LedgerTransaction(CreditLedger ledger)
        {
            _ledger = ledger;
            ledger.Execute(null, "BEGIN IMMEDIATE");
            _open = true;
        }

        public void Commit()
        {
            _ledger.Execute(null, "COMMIT");
            _open = false;
        }

        public void Rollback()
        {
            _ledger.ForgetKept();
            _open = false;
            if (_ledger.InTransaction)
            {
                _ledger.Execute(null, "ROLLBACK");
            }
        }

        public void Save() => _ledger.Execute(null, "SAVEPOINT w");

        public void RollbackToSave()
        {
            _ledger.ForgetKept();
            _ledger.Execute(null, "ROLLBACK TO w");
        }

        public void Release() => _ledger.Execute(null, "RELEASE w");

        public void Dispose()
        {
            if (_open)
            {
                Rollback();
            }
        }
    }
}
