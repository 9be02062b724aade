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
        connection.Open();
        return connection;
    }
}
