using Microsoft.Data.Sqlite;

namespace Potluck.Scheduler.Storage;

/// <summary>An open SQLite file of node state that can be rebuilt (peers, reputation — never the ledger).</summary>
/// <param name="Connection">The open connection; the caller owns it.</param>
/// <param name="Path">The file's full path.</param>
/// <param name="RecoveredFromCorruption">True when an existing file was damaged and has been set aside.</param>
public sealed record SqliteStateFile(SqliteConnection Connection, string Path, bool RecoveredFromCorruption)
{
    private const int SqliteCorrupt = 11;
    private const int SqliteNotADatabase = 26;

    /// <summary>
    /// Opens (creating if needed) <paramref name="fileName"/> in <paramref name="directory"/>, readable by its owner
    /// only, runs <paramref name="setup"/> (pragmas and <c>CREATE TABLE IF NOT EXISTS</c>) and then <paramref name="check"/>
    /// (a query touching every table, so a damaged file fails here rather than on first use). A damaged file is set
    /// aside as <c>&lt;name&gt;.corrupt</c> and a fresh one is created: use this only for state the node can learn again.
    /// </summary>
    /// <param name="inMemory">The <see cref="SqliteMemory"/> stand-in (simulations): an in-memory database named by the path.</param>
    public static SqliteStateFile Open(string directory, string fileName, string setup, string check, bool inMemory = false)
    {
        if (inMemory)
        {
            var memoryPath = System.IO.Path.Combine(directory, fileName);
            var connection = new SqliteConnection(SqliteMemory.ConnectionString(memoryPath));
            try
            {
                connection.Open();
                SqliteMemory.Slim(connection);
                Run(connection, setup);
                Run(connection, check);
                return new(connection, memoryPath, false);
            }
            catch
            {
                connection.Dispose();
                throw;
            }
        }
        var path = System.IO.Path.Combine(Protocol.Runtime.OwnerOnly.CreateDirectory(directory), fileName);
        try
        {
            return new(OpenAt(path, setup, check), path, false);
        }
        catch (SqliteException e) when (e.SqliteErrorCode is SqliteCorrupt or SqliteNotADatabase)
        {
            File.Move(path, path + ".corrupt", overwrite: true);
            File.Delete(path + "-wal");
            File.Delete(path + "-shm");
            return new(OpenAt(path, setup, check), path, true);
        }
    }

    private static SqliteConnection OpenAt(string path, string setup, string check)
    {
        var builder = new SqliteConnectionStringBuilder
        {
            DataSource = path,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Cache = SqliteCacheMode.Private,
            Pooling = false,
        };
        Protocol.Runtime.OwnerOnly.PrepareSqlite(path);
        var connection = new SqliteConnection(builder.ToString());
        try
        {
            connection.Open();
            SqliteMemory.NoLookaside(connection); // a few statements now and then: no 48 KiB of lookaside for them
            using (var command = connection.CreateCommand())
            {
                command.CommandText = setup;
                command.ExecuteNonQuery();
            }
            using (var command = connection.CreateCommand())
            {
                command.CommandText = check;
                command.ExecuteScalar();
            }
            Protocol.Runtime.OwnerOnly.PrepareSqlite(path); // the WAL and SHM files SQLite has just made
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
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteScalar();
    }
}
