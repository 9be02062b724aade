using Microsoft.Data.Sqlite;

namespace Potluck.Scheduler.Storage;

/// <summary>
/// The in-memory storage <b>stand-in</b> of simulations: the same SQLite code and schema (ledger, reputation, peers), the
/// files of one data directory replaced by one named in-memory database, the node's store, shared within the process
/// (SQLite's shared cache, named by the directory the files would have been in; their tables have distinct names). One
/// database per node rather than one per file: each database costs its own pager, B-tree, schema table and page cache
/// (about a seventh of a simulated node's SQLite memory for the two it saves). Nothing reaches the disk and nothing is
/// fsynced; the data lives as long as some connection to it is open, so a harness that crashes and restarts a node keeps
/// one open with <see cref="Keep"/> (the node's state then survives the crash as its files would have). Never used by a
/// real node: a report that used it says so.
/// </summary>
public static class SqliteMemory
{
    /// <summary>
    /// Makes SQLite's native library ready for direct calls (<c>SQLitePCL.raw</c>: the memory figures, the census) even
    /// when no connection has been opened yet — with the stand-in's stores opened at their first write, a mesh may have
    /// opened none. Runs what opening the first connection would run (Microsoft.Data.Sqlite's initialisation), once.
    /// </summary>
    public static void EnsureNative() => System.Runtime.CompilerServices.RuntimeHelpers.RunClassConstructor(typeof(SqliteConnection).TypeHandle);

    /// <summary>What the stand-in is called in reports.</summary>
    public const string StandInName = "in-memory SQLite storage (ledger and reputation tables in one shared-cache memory database per node, peer rows in managed memory, no fsync; the ledger's statements over 4 KiB prepared per operation; its lease, chain, fork and recovery tables created when first named, not at open; no FTS, R-Tree or Geopoly modules; the store's connection opened by its first write, the ledger created then with its first open's time, reads before that answered as a new ledger's)";

    /// <summary>
    /// The connection string of the in-memory database standing in for the file at <paramref name="path"/>: the store of
    /// the file's directory, the same for every file in it.
    /// </summary>
    public static string ConnectionString(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var directory = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path)) ?? System.IO.Path.GetFullPath(path);
        return new SqliteConnectionStringBuilder
        {
            DataSource = "potluck-mem:" + directory,
            Mode = SqliteOpenMode.Memory,
            Cache = SqliteCacheMode.Shared,
            Pooling = false,
        }.ToString();
    }

    /// <summary>
    /// Opens a connection that keeps the store of <paramref name="path"/>'s directory alive until it is disposed, and holds
    /// the store itself (<see cref="Share"/>: its managed state, and its own connection opened now) for as long: a test's
    /// view of a store that exists whatever the node has written. A harness keeping a node's store across a crash uses
    /// <see cref="Hold"/>, which opens nothing.
    /// </summary>
    public static SqliteConnection Keep(string path)
    {
        var store = Share(path);
        try
        {
            store.Use(static _ => 0); // the store's own connection: what it holds lives while this one is open
            return Opened(new KeptConnection(ConnectionString(path), store));
        }
        catch
        {
            store.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Holds the store of <paramref name="path"/>'s directory (what its state files and ledger keep, and its connection if
    /// one is open) until disposed, opening nothing: a harness keeps a crashed node's store with it, as files outlive a
    /// crash. A store nothing has written to holds no connection, and still holds none.
    /// </summary>
    public static IDisposable Hold(string path) => Share(path);

    /// <summary>Opens a stand-in connection and makes it cheaper (<see cref="Slim"/>).</summary>
    private static SqliteConnection Open(string connectionString) => Opened(new SqliteConnection(connectionString));

    /// <summary><paramref name="connection"/> opened and prepared (<see cref="Prepare"/>), or disposed if that fails.</summary>
    private static T Opened<T>(T connection) where T : SqliteConnection
    {
        try
        {
            Prepare(connection);
            return connection;
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    private static void Prepare(SqliteConnection connection)
    {
        connection.Open();
        if (CensusStatements)
        {
            connection.Handle!.enable_sqlite3_next_stmt(true); // SQLitePCL's bookkeeping for the census's statement walk
        }
        Slim(connection);
    }

    /// <summary>A test's connection from <see cref="Keep"/>: releases its hold on the store when disposed.</summary>
    private sealed class KeptConnection(string connectionString, SharedStore store) : SqliteConnection(connectionString)
    {
        private SharedStore? _store = store;

        protected override void Dispose(bool disposing)
        {
            base.Dispose(disposing);
            if (disposing)
            {
                Interlocked.Exchange(ref _store, null)?.Dispose();
            }
        }
    }

    private static readonly Lock s_sharedGate = new();
    private static readonly Dictionary<string, SharedStore> s_shared = new(StringComparer.Ordinal);

    /// <summary>
    /// The store that the ledger and every state file (<see cref="SqliteStateFile"/>: peers, reputation) of
    /// <paramref name="path"/>'s directory share, made by the first and dropped with the last that disposes it: one
    /// connection (its handle and the functions and modules registered at open, ~8–12 KiB) where each held its own, opened
    /// by the first use that needs it (<see cref="SharedStore.Use{T}"/>), not with the store: a node that never writes
    /// ledger or reputation data holds none (<see cref="SharedStore.IfOpen{T}"/> answers its reads).
    /// </summary>
    public static SharedStore Share(string path)
    {
        var key = ConnectionString(path);
        lock (s_sharedGate)
        {
            if (s_shared.TryGetValue(key, out var store))
            {
                store.Holders++;
                return store;
            }
            store = new SharedStore(key);
            s_shared.Add(key, store);
            return store;
        }
    }

    /// <summary>
    /// A census of the stores open now (measurement only; nothing a node reads changes): per store, its pages and free
    /// pages and the statements kept prepared on its connection (their text and <c>SQLITE_STMTSTATUS_MEMUSED</c>). With
    /// <paramref name="dumpDirectory"/>, each store is also copied there (<c>sqlite3_serialize</c>: its image, free
    /// pages too) for a breakdown by table with a SQLite that has <c>dbstat</c> (<c>scripts/bench/sqlite-census.py</c>).
    /// </summary>
    /// <summary>
    /// Whether stores opened from now on let <see cref="Census"/> list their statements (SQLitePCL then tracks every
    /// statement of the connection in a table of its own: measurement runs only).
    /// </summary>
    public static bool CensusStatements { get; set; }

    public static StoreCensus Census(string? dumpDirectory = null, string dumpTag = "")
    {
        List<SharedStore> stores;
        lock (s_sharedGate)
        {
            stores = [.. s_shared.Values];
        }
        var census = new StoreCensus();
        var index = 0;
        foreach (var store in stores)
        {
            var n = index++;
            try
            {
                census.Held++;
                store.IfOpen(connection =>
                {
                    if (connection.State != System.Data.ConnectionState.Open)
                    {
                        return 0;
                    }
                    census.Stores++;
                    using (var command = connection.CreateCommand())
                    {
                        command.CommandText = "PRAGMA page_count";
                        census.Pages += Convert.ToInt64(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
                        command.CommandText = "PRAGMA freelist_count";
                        census.FreePages += Convert.ToInt64(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
                    }
                    var handle = connection.Handle!;
                    for (var stmt = CensusStatements ? SQLitePCL.raw.sqlite3_next_stmt(handle, null) : null; stmt is not null && !stmt.IsInvalid;
                         stmt = SQLitePCL.raw.sqlite3_next_stmt(handle, stmt))
                    {
                        var sql = SQLitePCL.raw.sqlite3_sql(stmt).utf8_to_string() ?? "";
                        var bytes = SQLitePCL.raw.sqlite3_stmt_status(stmt, 99 /* SQLITE_STMTSTATUS_MEMUSED */, 0);
                        census.Statements.TryGetValue(sql, out var seen);
                        census.Statements[sql] = (seen.Count + 1, seen.Bytes + bytes);
                    }
                    if (dumpDirectory is not null)
                    {
                        // The database's image page by page, free pages too (VACUUM INTO would compact it).
                        var image = SQLitePCL.raw.sqlite3_serialize(handle, "main", out var size, 0);
                        if (image != IntPtr.Zero)
                        {
                            try
                            {
                                var bytes = new byte[size];
                                System.Runtime.InteropServices.Marshal.Copy(image, bytes, 0, (int)size);
                                File.WriteAllBytes(System.IO.Path.Combine(dumpDirectory, $"{dumpTag}{n:D5}.db"), bytes);
                            }
                            finally
                            {
                                SQLitePCL.raw.sqlite3_free(image);
                            }
                        }
                    }
                    return 0;
                }, 0);
            }
            catch (ObjectDisposedException)
            {
            }
        }
        EnsureNative();
        census.MemoryUsed = SQLitePCL.raw.sqlite3_memory_used();
        census.MemoryHighwater = SQLitePCL.raw.sqlite3_memory_highwater(0);
        return census;
    }

    /// <summary>What <see cref="Census"/> found.</summary>
    public sealed class StoreCensus
    {
        /// <summary>Stores open (each with its connection): the figures per store below are theirs.</summary>
        public int Stores { get; set; }

        /// <summary>Stores held, with a connection or without one (a node that has written nothing holds none).</summary>
        public int Held { get; set; }
        public long Pages { get; set; }
        public long FreePages { get; set; }
        public long MemoryUsed { get; set; }
        public long MemoryHighwater { get; set; }

        /// <summary>Statements kept prepared, by text: on how many stores' connections, and their bytes in all.</summary>
        public Dictionary<string, (int Count, long Bytes)> Statements { get; } = new(StringComparer.Ordinal);

        /// <summary>Lines for a report: the totals per store, then each statement kept, most bytes first.</summary>
        public IEnumerable<string> Describe(string when)
        {
            var per = Math.Max(1, Stores);
            var kept = Statements.Values.Sum(v => (long)v.Count);
            var keptBytes = Statements.Values.Sum(v => v.Bytes);
            yield return string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"SQLite census {when}: {Stores} stores ({Held - Stores} more held without a connection); per store {(double)Pages / per:F1} pages of {PageSize} B ({(double)FreePages / per:F1} free), "
                + $"{(double)kept / per:F2} statements kept ({keptBytes / 1024.0 / per:F1} KiB); sqlite3_memory_used {MemoryUsed / 1048576.0:F1} MiB (highwater {MemoryHighwater / 1048576.0:F1})");
            foreach (var (sql, (count, bytes)) in Statements.OrderByDescending(s => s.Value.Bytes))
            {
                var text = System.Text.RegularExpressions.Regex.Replace(sql, @"\s+", " ");
                yield return string.Create(System.Globalization.CultureInfo.InvariantCulture,
                    $"  kept on {count} stores, {bytes / 1024.0 / count:F1} KiB each: {(text.Length > 110 ? text[..110] + "…" : text)}");
            }
        }
    }

    /// <summary>
    /// One connection to a node's in-memory store, shared by its state files under one lock (<see cref="Share"/>); each
    /// holder disposes it once.
    /// </summary>
    public sealed class SharedStore : IDisposable
    {
        private readonly string _key;
        private SqliteConnection? _connection;
        private bool _closed;

        internal SharedStore(string key)
        {
            _key = key;
        }

        /// <summary>
        /// The shared connection, opened now if the store has none yet: use it only while holding <see cref="Gate"/>.
        /// </summary>
        /// <exception cref="ObjectDisposedException">The last holder has disposed the store.</exception>
        internal SqliteConnection Connection
        {
            get
            {
                ObjectDisposedException.ThrowIf(_closed, this);
                return _connection ??= Open(_key);
            }
        }

        /// <summary>Whether the store has its connection (opened by the first use that needed it). Under <see cref="Gate"/>.</summary>
        internal bool IsOpen => _connection is not null;

        /// <summary>
        /// State a holder keeps in managed memory rather than in the database, by name (the peer store's rows, a ledger
        /// not written yet): it lives with the store, so a restart under a harness's <see cref="Hold"/> finds it. Under <see cref="Gate"/>.
        /// </summary>
        internal Dictionary<string, object> Managed { get; } = new(StringComparer.Ordinal);

        /// <summary>Runs <paramref name="work"/> on the store's managed state (<see cref="Managed"/>), alone; opens nothing.</summary>
        /// <exception cref="ObjectDisposedException">The last holder has disposed the store.</exception>
        internal T WithManaged<T>(Func<Dictionary<string, object>, T> work)
        {
            ArgumentNullException.ThrowIfNull(work);
            lock (Gate)
            {
                ObjectDisposedException.ThrowIf(_closed, this);
                return work(Managed);
            }
        }

        /// <summary>
        /// The lock every user of the connection holds while it runs statements (the ledger holds it as its writer's lock):
        /// one transaction at a time on the connection, never two users' statements interleaved.
        /// </summary>
        internal Lock Gate { get; } = new();

        /// <summary>Holders not yet disposed (under the registry's lock).</summary>
        internal int Holders { get; set; } = 1;

        /// <summary>Runs <paramref name="work"/> on the shared connection, alone (opening it if the store has none yet).</summary>
        public T Use<T>(Func<SqliteConnection, T> work)
        {
            ArgumentNullException.ThrowIfNull(work);
            lock (Gate)
            {
                return work(Connection);
            }
        }

        /// <summary>
        /// Runs <paramref name="work"/> on the shared connection, alone, if the store has one; otherwise returns
        /// <paramref name="none"/> and opens nothing (a read of a store nothing has written to).
        /// </summary>
        public T IfOpen<T>(Func<SqliteConnection, T> work, T none)
        {
            ArgumentNullException.ThrowIfNull(work);
            lock (Gate)
            {
                ObjectDisposedException.ThrowIf(_closed, this);
                return _connection is { } connection ? work(connection) : none;
            }
        }

        /// <summary>One holder's share of what SQLite holds for the connection now (nothing when it has none).</summary>
        public SqliteFootprint Footprint()
        {
            int holders;
            lock (s_sharedGate)
            {
                holders = Holders;
            }
            return IfOpen(SqliteFootprint.Of, default).Share(holders);
        }

        /// <summary>Releases one holder's share; the last closes the connection.</summary>
        public void Dispose()
        {
            lock (s_sharedGate)
            {
                if (Holders == 0 || --Holders > 0)
                {
                    return;
                }
                s_shared.Remove(_key);
            }
            lock (Gate)
            {
                _closed = true;
                _connection?.Dispose();
                _connection = null;
                Managed.Clear();
            }
        }
    }

    /// <summary>
    /// Turns off a connection's lookaside allocator (call it before the connection's first statement): about 48 KiB that
    /// this build of SQLite gives every connection (1,200-byte and 128-byte slots, allocated and threaded at open) to
    /// speed up its small allocations; without it they go to the C allocator, with the same results. Right for a
    /// connection that runs a few statements now and then (the peers and reputation files of every node), and for the
    /// in-memory stand-in (<see cref="Slim"/>); the ledger's connections keep theirs.
    /// </summary>
    /// <exception cref="InvalidOperationException">SQLite refused (the connection has used its lookaside already).</exception>
    public static void NoLookaside(SqliteConnection connection)
    {
        ArgumentNullException.ThrowIfNull(connection);
        var rc = SQLitePCL.raw.sqlite3_db_config(connection.Handle, SQLitePCL.raw.SQLITE_DBCONFIG_LOOKASIDE, IntPtr.Zero, 0, 0);
        if (rc != SQLitePCL.raw.SQLITE_OK)
        {
            throw new InvalidOperationException($"SQLite refused to turn off lookaside (code {rc}): turn it off before the connection's first statement");
        }
    }

    /// <summary>Page size of the in-memory databases: SQLite's smallest (its default is 4 KiB).</summary>
    public const int PageSize = 512;

    /// <summary>
    /// Makes a connection just opened cheaper (call it before the first statement): turns off its lookaside allocator and,
    /// on a database still empty, sets <see cref="PageSize"/>. SQLite gives every connection a lookaside of its own (about
    /// 48 KiB here) to speed up small allocations; a simulated node had three databases and the mesh kept a second
    /// connection to each, so six of them: about 260 of a node's 807 KiB of SQLite memory at 200 nodes. Every table and
    /// index takes at least one page, most of them nearly empty, so small pages hold a node's few rows in less memory
    /// (1 KiB pages about a third of 4 KiB's; 512-byte pages 10 % less again at 200 nodes, a larger row spilling onto
    /// overflow pages). Without lookaside the same allocations go to SQLite's ordinary allocator: the same results.
    /// </summary>
    /// <exception cref="InvalidOperationException">SQLite refused (the connection has used its lookaside already).</exception>
    public static void Slim(SqliteConnection connection)
    {
        NoLookaside(connection);
        using var command = connection.CreateCommand();
        command.CommandText = $"PRAGMA page_size = {PageSize}"; // a no-op once the database has a table
        command.ExecuteNonQuery();
        DropExtensions(connection);
    }

    /// <summary>
    /// Drops the virtual-table modules this e_sqlite3 registers at every open (FTS3/4 and their auxiliaries, FTS5 and its
    /// vocabulary table, R-Tree, Geopoly: ~2.2 KiB a connection with the data they own, tokenizers among it) and makes
    /// every SQL function an extension added (the non-built-in ones: <c>fts5()</c>, <c>fts3_tokenizer()</c>, the Geopoly
    /// and R-Tree functions, the FTS placeholders) uncallable, so none can reach the data of a module dropped. Potluck's
    /// stores use none of them (plain tables, built-in functions); a statement that named one would fail with "no such
    /// module" or "no such function". For the stand-in's connections (<see cref="Slim"/>): thousands of them in one process.
    /// </summary>
    /// <exception cref="InvalidOperationException">SQLite refused.</exception>
    internal static void DropExtensions(SqliteConnection connection)
    {
        ArgumentNullException.ThrowIfNull(connection);
        var functions = new List<(string Name, int Args, int Encoding)>();
        using (var command = connection.CreateCommand())
        {
            command.CommandText = "SELECT name, narg, enc FROM pragma_function_list WHERE builtin = 0";
            using var reader = command.ExecuteReader();
            while (reader.Read())
            {
                functions.Add((reader.GetString(0), reader.GetInt32(1), reader.GetString(2) switch
                {
                    "utf16le" => 2, // SQLITE_UTF16LE
                    "utf16be" => 3, // SQLITE_UTF16BE
                    _ => 1,         // SQLITE_UTF8
                }));
            }
        }
        var handle = connection.Handle!.DangerousGetHandle();
        foreach (var (name, args, encoding) in functions)
        {
            // No callbacks: the function is replaced by none (SQLite keeps its slot, calls the old destructor).
            var rc = Native.sqlite3_create_function_v2(handle, name, args, encoding, IntPtr.Zero, IntPtr.Zero, IntPtr.Zero, IntPtr.Zero, IntPtr.Zero);
            if (rc != SQLitePCL.raw.SQLITE_OK)
            {
                throw new InvalidOperationException($"SQLite refused to remove the function {name}/{args} (code {rc})");
            }
        }
        var dropped = Native.sqlite3_drop_modules(handle, IntPtr.Zero);
        if (dropped != SQLitePCL.raw.SQLITE_OK)
        {
            throw new InvalidOperationException($"SQLite refused to drop the connection's virtual-table modules (code {dropped})");
        }
    }

    private static class Native
    {
#pragma warning disable SYSLIB1054 // LibraryImport generates unsafe code, which this project does not allow.
        [System.Runtime.InteropServices.DllImport("e_sqlite3")]
        internal static extern int sqlite3_drop_modules(IntPtr db, IntPtr keep);

        [System.Runtime.InteropServices.DllImport("e_sqlite3")]
        internal static extern int sqlite3_create_function_v2(IntPtr db,
            [System.Runtime.InteropServices.MarshalAs(System.Runtime.InteropServices.UnmanagedType.LPUTF8Str)] string name,
            int args, int encoding, IntPtr data, IntPtr function, IntPtr step, IntPtr final, IntPtr destroy);
#pragma warning restore SYSLIB1054
    }
}
