using Microsoft.Data.Sqlite;

namespace Potluck.Scheduler.Storage;

/// <summary>
/// A SQLite file of node state that can be rebuilt (peers, reputation — never the ledger), opened for each use and closed
/// after it. Such a file is read once at start and written now and then (every 30 s, at a refusal, at shutdown), and an
/// open connection costs its page cache (SQLite sets aside 20 pages, ~86 KiB at 4 KiB pages, with the first page read),
/// handle and parsed schema for the whole life of the node: about 110 KiB a file, held for a few milliseconds of use.
/// Each use opens the file without SQLite's lookaside, runs the connection's own pragmas, and closes it without a
/// checkpoint (<c>SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE</c>): the WAL is checkpointed when it grows, as with one connection kept
/// open, so what is stored and when it is durable are unchanged; disposing it closes the file as that connection's close
/// did (a checkpoint, the WAL and SHM files removed). The in-memory stand-in (<see cref="SqliteMemory"/>) keeps
/// one connection per node's store for every state file of it instead (the data lives only while a connection is open),
/// shared under one lock, and sets a file up (its tables) at its first write, not at open: until then the store may hold
/// no connection at all, and a read (<see cref="Read{T}"/>) answers as the file's empty tables would. Thread-safe.
/// </summary>
public sealed class SqliteStateFile : IDisposable
{
    private const int SqliteCorrupt = 11;
    private const int SqliteNotADatabase = 26;
    private const int NoCheckpointOnClose = 1006; // SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE

    private readonly Lock _gate = new();
    private readonly string _perOpen;
    private readonly SqliteMemory.SharedStore? _memory;
    private readonly string _setup = "";
    private readonly string _check = "";
    private bool _disposed;

    private SqliteStateFile(string path, bool recovered, string perOpen, SqliteMemory.SharedStore? memory, string setup = "", string check = "")
    {
        Path = path;
        RecoveredFromCorruption = recovered;
        _perOpen = perOpen;
        _memory = memory;
        _setup = setup;
        _check = check;
    }

    /// <summary>The stand-in's mark, in its store's managed state, that this file's tables are set up there.</summary>
    private string SetUpMark => "set-up:" + System.IO.Path.GetFileName(Path);

    /// <summary>The file's full path.</summary>
    public string Path { get; }

    /// <summary>True when an existing file was damaged and has been set aside.</summary>
    public bool RecoveredFromCorruption { get; }

    /// <summary>
    /// Whether a connection is open now: a file's only while in use; the in-memory stand-in's once anything in its store
    /// has needed one (a write; its reads before that open none).
    /// </summary>
    internal bool ConnectionHeld
    {
        get
        {
            lock (_gate)
            {
                return _memory is not null && !_disposed && _memory.IfOpen(static _ => true, false);
            }
        }
    }

    /// <summary>
    /// Opens (creating if needed) <paramref name="fileName"/> in <paramref name="directory"/>, readable by its owner
    /// only, runs <paramref name="setup"/> (pragmas and <c>CREATE TABLE IF NOT EXISTS</c>) and then <paramref name="check"/>
    /// (a query touching every table, so a damaged file fails here rather than on first use), and closes it. A damaged file
    /// is set aside as <c>&lt;name&gt;.corrupt</c> and a fresh one is created: use this only for state the node can learn again.
    /// </summary>
    /// <param name="perOpen">Settings of a connection rather than of the file (<c>PRAGMA synchronous</c>): run at every open.</param>
    /// <param name="inMemory">The <see cref="SqliteMemory"/> stand-in (simulations): an in-memory database named by the path.</param>
    public static SqliteStateFile Open(string directory, string fileName, string setup, string check, bool inMemory = false, string perOpen = "")
    {
        ArgumentNullException.ThrowIfNull(perOpen);
        setup = SqlText.Compact(setup); // its CREATE text is stored as run: without indentation
        if (inMemory)
        {
            // Set up at the first write (Use), not here: a store nothing writes to holds no connection.
            var memoryPath = System.IO.Path.Combine(directory, fileName);
            return new(memoryPath, false, perOpen, SqliteMemory.Share(memoryPath), setup, check);
        }
        var path = System.IO.Path.Combine(Protocol.Runtime.OwnerOnly.CreateDirectory(directory), fileName);
        try
        {
            SetUp(path, perOpen + setup, check);
            return new(path, false, perOpen, null);
        }
        catch (SqliteException e) when (e.SqliteErrorCode is SqliteCorrupt or SqliteNotADatabase)
        {
            File.Move(path, path + ".corrupt", overwrite: true);
            File.Delete(path + "-wal");
            File.Delete(path + "-shm");
            SetUp(path, perOpen + setup, check);
            return new(path, true, perOpen, null);
        }
    }

    /// <summary>Runs <paramref name="work"/> on a connection to the file, opened for it and closed after it.</summary>
    /// <exception cref="ObjectDisposedException">Disposed.</exception>
    /// <exception cref="SqliteException">The file cannot be opened (removed meanwhile, damaged) or the work failed.</exception>
    public T Use<T>(Func<SqliteConnection, T> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_memory is not null)
            {
                return _memory.Use(connection =>
                {
                    if (!_memory.Managed.ContainsKey(SetUpMark))
                    {
                        Run(connection, _perOpen + _setup);
                        Check(connection, _check);
                        _memory.Managed[SetUpMark] = true;
                    }
                    return work(connection);
                });
            }
            using var connection = Connect(Path, SqliteOpenMode.ReadWrite);
            Run(connection, _perOpen);
            return work(connection);
        }
    }

    /// <summary>
    /// Runs <paramref name="read"/> as <see cref="Use{T}"/> does; in the stand-in, while nothing has written this file
    /// (its tables not set up in the store yet), returns <paramref name="empty"/>, what the read would find in the empty
    /// tables, and opens nothing. <paramref name="read"/> only reads.
    /// </summary>
    /// <exception cref="ObjectDisposedException">Disposed.</exception>
    public T Read<T>(Func<SqliteConnection, T> read, T empty)
    {
        ArgumentNullException.ThrowIfNull(read);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_memory is not null)
            {
                return _memory.IfOpen(connection => _memory.Managed.ContainsKey(SetUpMark) ? read(connection) : empty, empty);
            }
        }
        return Use(read);
    }

    /// <summary>The stand-in's store (its managed state: the peer store keeps its rows there); null for a file.</summary>
    internal SqliteMemory.SharedStore? Store => _memory;

    /// <summary>What SQLite holds for this file's connection now: nothing between uses of a file; the stand-in's share of its store's connection.</summary>
    internal SqliteFootprint Footprint()
    {
        lock (_gate)
        {
            return _memory is null || _disposed ? default : _memory.Footprint();
        }
    }

    /// <summary>
    /// Closes the file as one connection kept open would have been closed: a last connection checkpoints the WAL into the
    /// file and removes the WAL and SHM files (a file removed meanwhile has nothing to checkpoint). The stand-in releases its
    /// share of the store's connection.
    /// </summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            if (_memory is not null)
            {
                _memory.Dispose();
                return;
            }
            try
            {
                using var connection = new SqliteConnection(new SqliteConnectionStringBuilder
                {
                    DataSource = Path,
                    Mode = SqliteOpenMode.ReadWrite,
                    Cache = SqliteCacheMode.Private,
                    Pooling = false,
                }.ToString());
                connection.Open();
                SqliteMemory.NoLookaside(connection);
                Run(connection, _perOpen);
                Check(connection, "PRAGMA schema_version"); // a read: the connection opens the WAL, so its close checkpoints it
            }
            catch (SqliteException)
            {
                // Removed or damaged since its last use: nothing to checkpoint (the last use reported the damage).
            }
        }
    }

    private static void SetUp(string path, string setup, string check)
    {
        Protocol.Runtime.OwnerOnly.PrepareSqlite(path);
        using (var connection = Connect(path, SqliteOpenMode.ReadWriteCreate))
        {
            Run(connection, setup);
            Check(connection, check);
        }
        Protocol.Runtime.OwnerOnly.PrepareSqlite(path); // the WAL and SHM files SQLite has just made
    }

    /// <summary>An open connection to the file, without lookaside, that leaves the WAL as it is when it closes.</summary>
    private static SqliteConnection Connect(string path, SqliteOpenMode mode)
    {
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder
        {
            DataSource = path,
            Mode = mode,
            Cache = SqliteCacheMode.Private,
            Pooling = false,
        }.ToString());
        try
        {
            connection.Open();
            SqliteMemory.NoLookaside(connection); // a few statements now and then: no 48 KiB of lookaside for them
            var rc = SQLitePCL.raw.sqlite3_db_config(connection.Handle, NoCheckpointOnClose, 1, out _);
            if (rc != SQLitePCL.raw.SQLITE_OK)
            {
                throw new InvalidOperationException($"SQLite refused to leave the WAL unchanged at close (code {rc})");
            }
            return connection;
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    private static void Run(SqliteConnection connection, string sql)
    {
        if (sql.Length == 0)
        {
            return;
        }
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    private static void Check(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteScalar();
    }
}
