using Microsoft.Data.Sqlite;

namespace Potluck.Scheduler.Credits;

/// <summary>
/// Reads beside the writer. A file-backed ledger keeps a second, read-only connection to its file with its own lock and
/// its own prepared statements: the lookups of the lease and chain paths (<see cref="Unpaid"/>, a reservation, a chain
/// block by hash or position, ...) run there, so they no longer queue behind a write. WAL lets readers run beside the
/// writer, and each read sees exactly the transactions committed when it starts: never an open one — the same data the
/// writer's connection shows outside a transaction. A group commit is visible once its COMMIT has run, before its flush
/// (CreditLedger.Flush.cs), so a read returns only once every group commit it could have seen is flushed. A read made while the calling thread holds the writer's lock (inside a write) runs on the writer's
/// connection, so it still sees that write's own changes. The in-memory stand-in has one connection only, and reads
/// there stay on it as before. The reader's connection is opened by the first read that runs on it, not with the ledger: a
/// connection costs its page cache and parsed schema, and a node that never takes part in a lease never reads; it runs
/// without SQLite's lookaside (the writer keeps its own).
/// </summary>
public sealed partial class CreditLedger
{
    [ThreadStatic]
    private static CreditLedger? t_reading;

    private readonly Lock _readGate = new();
    private readonly Dictionary<string, Storage.SqliteStatement> _readCommands = new(StringComparer.Ordinal);
    private SqliteConnection? _reader;

    /// <summary>Opens the read-only connection (a file-backed ledger, on its first read; under <c>_readGate</c>).</summary>
    private void OpenReader()
    {
        var builder = new SqliteConnectionStringBuilder
        {
            DataSource = Path,
            Mode = SqliteOpenMode.ReadOnly,
            Cache = SqliteCacheMode.Private,
            Pooling = false,
        };
        var reader = new SqliteConnection(builder.ToString());
        try
        {
            reader.Open();
            // Its reads are a few kept SELECTs; SQLite's ~48 KiB of lookaside speeds the small allocations of parsing more
            // than those of running them. Without it they go to the C allocator, with the same results.
            Storage.SqliteMemory.NoLookaside(reader);
        }
        catch
        {
            reader.Dispose();
            throw;
        }
        _reader = reader;
    }

    /// <summary>
    /// Runs a read of committed data: on the read-only connection under its own lock when there is one and this thread is
    /// not inside a write; otherwise as <see cref="Run{T}"/> does. <paramref name="read"/> only reads (statements through
    /// <see cref="Command"/>): the connection refuses writes.
    /// </summary>
    private T Read<T>(Func<T> read)
    {
        if (_inMemory || _gate.IsHeldByCurrentThread)
        {
            return Run(read);
        }
        T result;
        lock (_readGate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            ThrowIfFlushFailed();
            var outer = t_reading;
            t_reading = this;
            try
            {
                if (_reader is null)
                {
                    OpenReader();
                }
                result = read();
            }
            catch (SqliteException e)
            {
                throw Translate(e, Path);
            }
            finally
            {
                t_reading = outer;
            }
        }
        // What it read may include a group commit not yet flushed: answered only once that is on disk.
        AwaitFlushed(GroupCommitsSeen);
        return result;
    }

    /// <summary>The connection and statement cache a statement runs on: the reader's inside <see cref="Read{T}"/>.</summary>
    private (SqliteConnection Connection, Dictionary<string, Storage.SqliteStatement> Commands) StatementSource() =>
        t_reading == this && _reader is { } reader ? (reader, _readCommands) : (_connection, _commands);

    /// <summary>Whether the reader's connection is open (tests: it opens with the first read, not with the ledger).</summary>
    internal bool ReaderOpen
    {
        get
        {
            lock (_readGate)
            {
                return _reader is not null;
            }
        }
    }

    /// <summary>The most lookaside slots the reader's connection has had in use (tests: none; -1 before it opens).</summary>
    internal int ReaderLookasideHighWater()
    {
        lock (_readGate)
        {
            return _reader is null ? -1
                : SQLitePCL.raw.sqlite3_db_status(_reader.Handle, 0 /* SQLITE_DBSTATUS_LOOKASIDE_USED */, out _, out var high, 0) == SQLitePCL.raw.SQLITE_OK ? high : -1;
        }
    }

    /// <summary>The SQL of every statement the reader keeps prepared (tests: which reads run beside the writer).</summary>
    internal IReadOnlyList<string> PreparedReads()
    {
        lock (_readGate)
        {
            return [.. _readCommands.Keys];
        }
    }

    /// <summary>What SQLite holds for the writer's and the reader's connections now (the stand-in: its share of its store's).</summary>
    internal Storage.SqliteFootprint Footprint()
    {
        Storage.SqliteFootprint writer;
        lock (_gate)
        {
            writer = _disposed ? default : _store?.Footprint() ?? Storage.SqliteFootprint.Of(_connection);
        }
        lock (_readGate)
        {
            return writer + Storage.SqliteFootprint.Of(_reader);
        }
    }

    /// <summary>Closes the reader (from <see cref="Dispose"/>, with <c>_disposed</c> already set under the writer's lock).</summary>
    private void DisposeReader()
    {
        lock (_readGate)
        {
            foreach (var cmd in _readCommands.Values)
            {
                cmd.Dispose();
            }
            _readCommands.Clear();
            _reader?.Dispose();
            _reader = null;
        }
    }
}
