using System.Globalization;
using Microsoft.Data.Sqlite;

namespace Potluck.Scheduler.Storage;

/// <summary>
/// What SQLite holds for some open connections (<c>sqlite3_db_status</c>), summed: <paramref name="Connections"/> open,
/// bytes of lookaside slots in use (<paramref name="Lookaside"/>), of page cache (<paramref name="Cache"/>: the pages of an
/// in-memory database are its data; a shared cache's is divided evenly between its connections, so a sum over them counts
/// it once), of parsed schema (<paramref name="Schema"/>; this SQLite counts a shared cache's schema in full for each of its
/// connections) and of prepared statements kept
/// (<paramref name="Statements"/>). What a connection itself costs (its handle, the functions and modules registered at
/// open) is not among them: the process's <c>sqlite3_memory_used</c> less these.
/// </summary>
public readonly record struct SqliteFootprint(double Connections, long Lookaside, long Cache, long Schema, long Statements)
{
    private const int LookasideUsed = 0;      // SQLITE_DBSTATUS_LOOKASIDE_USED (slots; bytes below)
    private const int SchemaUsed = 2;         // SQLITE_DBSTATUS_SCHEMA_USED
    private const int StmtUsed = 3;           // SQLITE_DBSTATUS_STMT_USED
    private const int CacheUsedShared = 11;   // SQLITE_DBSTATUS_CACHE_USED_SHARED

    /// <summary>The figures of one connection; nothing for a closed or null one.</summary>
    public static SqliteFootprint Of(SqliteConnection? connection)
    {
        if (connection is null || connection.State != System.Data.ConnectionState.Open || connection.Handle is not { } handle)
        {
            return default;
        }
        return new SqliteFootprint(1, Read(handle, LookasideUsed), Read(handle, CacheUsedShared), Read(handle, SchemaUsed), Read(handle, StmtUsed));
    }

    private static long Read(SQLitePCL.sqlite3 handle, int op) =>
        SQLitePCL.raw.sqlite3_db_status(handle, op, out var current, out _, 0) == SQLitePCL.raw.SQLITE_OK ? current : 0;

    /// <summary>One of <paramref name="holders"/> equal shares (a connection several state files share).</summary>
    public SqliteFootprint Share(int holders) => holders <= 1 ? this
        : new(Connections / holders, Lookaside / holders, Cache / holders, Schema / holders, Statements / holders);

    public static SqliteFootprint operator +(SqliteFootprint a, SqliteFootprint b) => new(a.Connections + b.Connections,
        a.Lookaside + b.Lookaside, a.Cache + b.Cache, a.Schema + b.Schema, a.Statements + b.Statements);

    /// <summary>One line, per node: connections, and KiB of page cache, schema and statements (lookaside in slots).</summary>
    public string Describe(int nodes, string when)
    {
        double Per(long bytes) => nodes == 0 ? 0 : bytes / 1024.0 / nodes;
        return string.Create(CultureInfo.InvariantCulture,
            $"SQLite by kind {when}, per node: {(nodes == 0 ? 0 : Connections / nodes):F2} connections, page cache {Per(Cache):F1} KiB, "
            + $"schema {Per(Schema):F1} KiB (as each connection counts it: a shared cache's once per connection), statements kept {Per(Statements):F1} KiB, lookaside slots in use {(nodes == 0 ? 0 : (double)Lookaside / nodes):F1}");
    }
}
