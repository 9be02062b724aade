using Microsoft.Data.Sqlite;

namespace Potluck.Scheduler.Storage;

/// <summary>
/// The in-memory storage <b>stand-in</b> of simulations: the same SQLite code and schema (ledger, reputation, peers),
/// each file replaced by a named in-memory database shared within the process (SQLite's shared cache, named by the path
/// the file would have had). Nothing reaches the disk and nothing is fsynced; the data lives as long as some connection
/// to it is open, so a harness that crashes and restarts a node keeps one open with <see cref="Keep"/> (the node's state
/// then survives the crash as its files would have). Never used by a real node: a report that used it says so.
/// </summary>
public static class SqliteMemory
{
    /// <summary>What the stand-in is called in reports.</summary>
    public const string StandInName = "in-memory SQLite storage (ledger, reputation and peer databases in shared-cache memory, no fsync)";

    /// <summary>The connection string of the in-memory database standing in for the file at <paramref name="path"/>.</summary>
    public static string ConnectionString(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        return new SqliteConnectionStringBuilder
        {
            DataSource = "potluck-mem:" + System.IO.Path.GetFullPath(path),
            Mode = SqliteOpenMode.Memory,
            Cache = SqliteCacheMode.Shared,
            Pooling = false,
        }.ToString();
    }

    /// <summary>Opens a connection that keeps the database at <paramref name="path"/> alive until it is disposed.</summary>
    public static SqliteConnection Keep(string path)
    {
        var connection = new SqliteConnection(ConnectionString(path));
        try
        {
            connection.Open();
            Slim(connection);
            return connection;
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    /// <summary>Page size of the in-memory databases (SQLite's default is 4 KiB).</summary>
    public const int PageSize = 1024;

    /// <summary>
    /// Makes a connection just opened cheaper (call it before the first statement): turns off its lookaside allocator and,
    /// on a database still empty, sets <see cref="PageSize"/>. SQLite gives every connection a lookaside of its own (about
    /// 48 KiB here) to speed up small allocations; a simulated node has three databases and the mesh keeps a second
    /// connection to each, so six of them: about 260 of a node's 807 KiB of SQLite memory at 200 nodes. Every table and
    /// index takes at least one page, most of them nearly empty, so 1 KiB pages hold a node's few rows in about a third
    /// of the memory. Without lookaside the same allocations go to SQLite's ordinary allocator: the same results.
    /// </summary>
    /// <exception cref="InvalidOperationException">SQLite refused (the connection has used its lookaside already).</exception>
    public static void Slim(SqliteConnection connection)
    {
        ArgumentNullException.ThrowIfNull(connection);
        var rc = SQLitePCL.raw.sqlite3_db_config(connection.Handle, SQLitePCL.raw.SQLITE_DBCONFIG_LOOKASIDE, IntPtr.Zero, 0, 0);
        if (rc != SQLitePCL.raw.SQLITE_OK)
        {
            throw new InvalidOperationException($"SQLite refused to turn off lookaside (code {rc}): call Slim before the connection's first statement");
        }
        using var command = connection.CreateCommand();
        command.CommandText = $"PRAGMA page_size = {PageSize}"; // a no-op once the database has a table
        command.ExecuteNonQuery();
    }
}
