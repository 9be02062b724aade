using System.Diagnostics;
using Microsoft.Data.Sqlite;
using SQLitePCL;

namespace Potluck.Scheduler.Storage;

/// <summary>
/// One SQL statement prepared once on an open connection and run many times, its parameters rebound in place: SQLite's own
/// prepared statement, driven through SQLitePCL. Microsoft.Data.Sqlite's <see cref="SqliteCommand"/> keeps the compiled
/// statement too, but makes a statement iterator, its enumerator, a binder per parameter, a reader, a record and a row-id
/// dictionary on every execution (about a fifth of the lease path's managed allocation); here a run allocates nothing but
/// the values read (blobs, strings, a boxed scalar); parameters are bound from <see cref="SqlValue"/>s, unboxed. Same results as the command: <see cref="ExecuteNonQuery"/> returns the
/// rows changed, <see cref="ExecuteScalar"/> the first column of the first row (null without one, <see cref="DBNull"/> for
/// NULL), values are typed as SQLite stores them (INTEGER → long, REAL → double, TEXT → string, BLOB → byte[]), errors
/// are <see cref="SqliteException"/>s, and a busy or locked database is retried for 30 s as the command's default timeout
/// does. Not thread-safe: its owner runs it under its own lock, one execution at a time (a second one while a
/// <see cref="Rows"/> of it is open throws, as a command with an open reader does).
/// </summary>
internal sealed class SqliteStatement : IDisposable
{
    /// <summary>How long a busy or locked database is retried (Microsoft.Data.Sqlite's default command timeout).</summary>
    private static readonly TimeSpan BusyTimeout = TimeSpan.FromSeconds(30);

    private readonly sqlite3 _db;
    private readonly sqlite3_stmt _stmt;
    private readonly string[] _names;
    private bool _open;

    private SqliteStatement(sqlite3 db, sqlite3_stmt stmt, string sql)
    {
        _db = db;
        _stmt = stmt;
        Sql = sql;
        var count = raw.sqlite3_bind_parameter_count(stmt);
        _names = new string[count];
        for (var i = 0; i < count; i++)
        {
            _names[i] = raw.sqlite3_bind_parameter_name(stmt, i + 1).utf8_to_string()
                ?? throw new ArgumentException("parameters are named ($name), never positional (?)", nameof(sql));
        }
    }

    /// <summary>The statement's text.</summary>
    public string Sql { get; }

    /// <summary>
    /// Bytes SQLite holds for the statement (<c>SQLITE_STMTSTATUS_MEMUSED</c>): its compiled program, with those of the
    /// triggers it fires once it has run.
    /// </summary>
    public int MemoryUsed => raw.sqlite3_stmt_status(_stmt, 99 /* SQLITE_STMTSTATUS_MEMUSED */, 0);

    /// <summary>Virtual-machine steps the statement has run since it was prepared (what a read costs, in SQLite's own count).</summary>
    public int VmSteps => raw.sqlite3_stmt_status(_stmt, 4 /* SQLITE_STMTSTATUS_VM_STEP */, 0);

    /// <summary>Prepares <paramref name="sql"/> (exactly one statement) on <paramref name="connection"/>, which must be open.</summary>
    /// <exception cref="SqliteException">SQLite refused the statement.</exception>
    public static SqliteStatement Prepare(SqliteConnection connection, string sql)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(sql);
        var db = connection.Handle ?? throw new InvalidOperationException("the connection is not open");
        var rc = raw.sqlite3_prepare_v3(db, sql, raw.SQLITE_PREPARE_PERSISTENT, out var stmt, out var tail);
        if (rc != raw.SQLITE_OK)
        {
            stmt?.Dispose();
            SqliteException.ThrowExceptionForRC(rc, db);
        }
        if (stmt is null || stmt.IsInvalid || !string.IsNullOrWhiteSpace(tail))
        {
            stmt?.Dispose();
            throw new ArgumentException("a kept statement is exactly one SQL statement", nameof(sql));
        }
        try
        {
            return new SqliteStatement(db, stmt, sql);
        }
        catch
        {
            stmt.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Binds every parameter of the statement by name (each must be given, none twice, no other), each as its
    /// <see cref="SqlValue"/> says: INTEGER, REAL, TEXT, BLOB (an empty one is a zero-length blob, never NULL) or NULL.
    /// </summary>
    public SqliteStatement Bind(ReadOnlySpan<(string Name, SqlValue Value)> parameters)
    {
        if (_open)
        {
            throw new InvalidOperationException("the statement's rows are still being read");
        }
        Check(raw.sqlite3_reset(_stmt));
        if (parameters.Length != _names.Length)
        {
            throw new InvalidOperationException($"{Sql}: {_names.Length} parameters, {parameters.Length} given");
        }
        foreach (var (name, value) in parameters)
        {
            var index = Array.IndexOf(_names, name) + 1;
            if (index == 0)
            {
                throw new InvalidOperationException($"{Sql}: no parameter {name}");
            }
            Check(value.Type switch
            {
                SqlType.Integer => raw.sqlite3_bind_int64(_stmt, index, value.Integer),
                SqlType.Real => raw.sqlite3_bind_double(_stmt, index, value.Real),
                SqlType.Text => raw.sqlite3_bind_text(_stmt, index, value.Text),
                // An empty blob is bound as a zero-length blob, never as NULL (SQLite reads a null pointer as NULL).
                SqlType.Blob when value.Blob.IsEmpty => raw.sqlite3_bind_zeroblob(_stmt, index, 0),
                SqlType.Blob => raw.sqlite3_bind_blob(_stmt, index, value.Blob),
                _ => raw.sqlite3_bind_null(_stmt, index),
            });
        }
        return this;
    }

    /// <summary>Runs the statement to its end; returns the rows it changed (-1 for a statement that writes nothing).</summary>
    public int ExecuteNonQuery()
    {
        try
        {
            while (Step())
            {
            }
            return raw.sqlite3_stmt_readonly(_stmt) != 0 ? -1 : raw.sqlite3_changes(_db);
        }
        finally
        {
            raw.sqlite3_reset(_stmt);
        }
    }

    /// <summary>The first column of the first row; null when there is none, <see cref="DBNull"/> when it is NULL.</summary>
    public object? ExecuteScalar()
    {
        try
        {
            return Step() ? Value(0) : null;
        }
        finally
        {
            raw.sqlite3_reset(_stmt);
        }
    }

    /// <summary>The rows, read one at a time; dispose it (it resets the statement) before running the statement again.</summary>
    public Rows ExecuteReader()
    {
        _open = true;
        return new Rows(this);
    }

    public void Dispose() => _stmt.Dispose();

    private bool Step()
    {
        var rc = raw.sqlite3_step(_stmt);
        if (IsBusy(rc))
        {
            var waited = Stopwatch.StartNew();
            while (IsBusy(rc) && waited.Elapsed < BusyTimeout)
            {
                raw.sqlite3_reset(_stmt);
                Thread.Sleep(150);
                rc = raw.sqlite3_step(_stmt);
            }
        }
        if (rc == raw.SQLITE_ROW)
        {
            return true;
        }
        if (rc == raw.SQLITE_DONE)
        {
            return false;
        }
        // sqlite3_reset returns the step's error with its message in place (as sqlite3_step's legacy interface did).
        SqliteException.ThrowExceptionForRC(rc, _db);
        return false;
    }

    private static bool IsBusy(int rc) => rc is raw.SQLITE_BUSY or raw.SQLITE_LOCKED or raw.SQLITE_LOCKED_SHAREDCACHE;

    private void Check(int rc)
    {
        if (rc != raw.SQLITE_OK)
        {
            SqliteException.ThrowExceptionForRC(rc, _db);
        }
    }

    private object Value(int column) => raw.sqlite3_column_type(_stmt, column) switch
    {
        raw.SQLITE_INTEGER => raw.sqlite3_column_int64(_stmt, column),
        raw.SQLITE_FLOAT => raw.sqlite3_column_double(_stmt, column),
        raw.SQLITE_TEXT => raw.sqlite3_column_text(_stmt, column).utf8_to_string(),
        raw.SQLITE_BLOB => raw.sqlite3_column_blob(_stmt, column).ToArray(),
        _ => DBNull.Value,
    };

    /// <summary>
    /// The rows of one execution, read in place from the statement (the reader's methods, none of its objects).
    /// </summary>
    public readonly struct Rows : IDisposable
    {
        private readonly SqliteStatement _statement;

        internal Rows(SqliteStatement statement) => _statement = statement;

        /// <summary>Moves to the next row; false after the last.</summary>
        public bool Read() => _statement.Step();

        /// <summary>The column's value, typed as SQLite stores it (<see cref="DBNull"/> for NULL).</summary>
        public object this[int column] => _statement.Value(column);

        /// <summary>The column's value, typed as SQLite stores it (<see cref="DBNull"/> for NULL).</summary>
        public object GetValue(int column) => _statement.Value(column);

        /// <summary>
        /// A BLOB column read in place, without a copy (empty for NULL): valid only until the next <see cref="Read"/> or
        /// the end of the rows, so compare or copy it at once.
        /// </summary>
        public ReadOnlySpan<byte> GetBlob(int column) => raw.sqlite3_column_blob(_statement._stmt, column);

        /// <summary>True when the column is NULL.</summary>
        public bool IsDBNull(int column) => raw.sqlite3_column_type(_statement._stmt, column) == raw.SQLITE_NULL;

        /// <summary>The column as an integer (converted by SQLite, as the reader's getter does); NULL throws as there.</summary>
        public long GetInt64(int column) => IsDBNull(column)
            ? throw new InvalidOperationException($"column {column} of {_statement.Sql} is NULL")
            : raw.sqlite3_column_int64(_statement._stmt, column);

        /// <summary>Resets the statement: the rows not read are dropped.</summary>
        public void Close() => Dispose();

        public void Dispose()
        {
            if (_statement is { _open: true })
            {
                _statement._open = false;
                raw.sqlite3_reset(_statement._stmt);
            }
        }
    }
}
