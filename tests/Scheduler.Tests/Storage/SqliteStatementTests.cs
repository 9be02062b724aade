using Microsoft.Data.Sqlite;
using Potluck.Scheduler.Storage;

namespace Potluck.Scheduler.Tests.Storage;

/// <summary>
/// The ledger's kept statements (raw SQLite through SQLitePCL) give what Microsoft.Data.Sqlite's commands gave: the same
/// values and types, the rows changed, null or DBNull from a scalar, SqliteException for SQLite's errors, and a statement
/// that stays usable after an error; misuse (a parameter missing or unknown, two statements, a run while its rows are
/// open) is refused. Parameters are <see cref="SqlValue"/>s: a type SQLite does not store does not compile.
/// </summary>
public class SqliteStatementTests
{
    private SqliteConnection _connection = null!;

    [SetUp]
    public void Open()
    {
        _connection = new SqliteConnection("Data Source=:memory:");
        _connection.Open();
        using var command = _connection.CreateCommand();
        command.CommandText = "CREATE TABLE t (k INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB, UNIQUE (i))";
        command.ExecuteNonQuery();
    }

    [TearDown]
    public void Close() => _connection.Dispose();

    private SqliteStatement Prepare(string sql) => SqliteStatement.Prepare(_connection, sql);

    [Test]
    public void Values_RoundTrip_WithTheTypesTheCommandGave()
    {
        using var insert = Prepare("INSERT INTO t (i, r, s, b) VALUES ($i, $r, $s, $b)");
        Assert.That(insert.Bind([("$i", 7L), ("$r", 1.5), ("$s", "ünï"), ("$b", new byte[] { 1, 2, 3 })]).ExecuteNonQuery(), Is.EqualTo(1));
        Assert.That(insert.Bind([("$b", Array.Empty<byte>()), ("$s", DBNull.Value), ("$r", DBNull.Value), ("$i", 8)]).ExecuteNonQuery(), Is.EqualTo(1));

        using var select = Prepare("SELECT i, r, s, b FROM t WHERE i = $i");
        using (var rows = select.Bind([("$i", 7L)]).ExecuteReader())
        {
            Assert.That(rows.Read(), Is.True);
            Assert.That(rows.GetInt64(0), Is.EqualTo(7));
            Assert.That(rows[1], Is.EqualTo(1.5));
            Assert.That(rows[2], Is.EqualTo("ünï"));
            Assert.That(rows.GetValue(3), Is.EqualTo(new byte[] { 1, 2, 3 }));
            Assert.That(rows.GetBlob(3).ToArray(), Is.EqualTo(new byte[] { 1, 2, 3 }));
            Assert.That(rows.Read(), Is.False);
        }
        using (var rows = select.Bind([("$i", 8L)]).ExecuteReader())
        {
            Assert.That(rows.Read(), Is.True);
            Assert.That(rows.IsDBNull(1) && rows.IsDBNull(2), Is.True);
            Assert.That(rows[2], Is.SameAs(DBNull.Value));
            Assert.That(rows.IsDBNull(3), Is.False, "an empty blob is stored as a blob, never as NULL");
            Assert.That(rows[3], Is.EqualTo(Array.Empty<byte>()));
            Assert.Throws<InvalidOperationException>(() => rows.GetInt64(1), "NULL is not an integer, as the reader's getter says");
        }

        // The same through Microsoft.Data.Sqlite, for comparison: what the ledger read before.
        using var command = _connection.CreateCommand();
        command.CommandText = "SELECT b FROM t WHERE i = 8";
        Assert.That(command.ExecuteScalar(), Is.EqualTo(Array.Empty<byte>()));
    }

    [Test]
    public void UnboxedValues_BindAsTheirStorageClass_SlicesAndPeerIdsWithoutACopy()
    {
        var peer = Potluck.Protocol.Identity.PrivateKey.FromRandom(new Random(5)).PeerId;
        var bytes = new byte[] { 9, 1, 2, 3, 9 };
        string? noText = null;
        byte[]? noBlob = null;
        using var insert = Prepare("INSERT INTO t (i, r, s, b) VALUES ($i, $r, $s, $b)");
        insert.Bind([("$i", true), ("$r", 2), ("$s", noText), ("$b", new ReadOnlyMemory<byte>(bytes, 1, 3))]).ExecuteNonQuery();
        insert.Bind([("$i", 5), ("$r", SqlValue.Null), ("$s", "x"), ("$b", peer)]).ExecuteNonQuery();
        insert.Bind([("$i", false), ("$r", 0.25), ("$s", ""), ("$b", noBlob)]).ExecuteNonQuery();
        insert.Bind([("$i", -1L), ("$r", 0L), ("$s", "y"), ("$b", ReadOnlyMemory<byte>.Empty)]).ExecuteNonQuery();

        using var select = Prepare("SELECT typeof(i), i, typeof(r), r, typeof(s), s, typeof(b), b FROM t WHERE i = $i");
        object[] Row(SqlValue i)
        {
            using var rows = select.Bind([("$i", i)]).ExecuteReader();
            Assert.That(rows.Read(), Is.True);
            return [.. Enumerable.Range(0, 8).Select(c => rows[c])];
        }
        Assert.That(Row(1L), Is.EqualTo(new object[] { "integer", 1L, "real", 2.0, "null", DBNull.Value, "blob", new byte[] { 1, 2, 3 } }),
            "bool as INTEGER 1, int into a REAL column as SQLite converts it, a null string as NULL, a slice as exactly its bytes");
        Assert.That(Row(5), Is.EqualTo(new object[] { "integer", 5L, "null", DBNull.Value, "text", "x", "blob", peer.ToBytes() }),
            "a peer id as the bytes ToBytes gives");
        Assert.That(Row(false), Is.EqualTo(new object[] { "integer", 0L, "real", 0.25, "text", "", "null", DBNull.Value }),
            "an empty string is text, a null array NULL");
        Assert.That(Row(-1L), Is.EqualTo(new object[] { "integer", -1L, "real", 0.0, "text", "y", "blob", Array.Empty<byte>() }),
            "an empty memory is an empty blob, never NULL");
    }

    [Test]
    public void Scalar_IsNullWithoutARow_AndDBNullForNull()
    {
        using var insert = Prepare("INSERT INTO t (i, s) VALUES ($i, NULL)");
        insert.Bind([("$i", 1L)]).ExecuteNonQuery();
        using var select = Prepare("SELECT s FROM t WHERE i = $i");
        Assert.That(select.Bind([("$i", 1L)]).ExecuteScalar(), Is.SameAs(DBNull.Value));
        Assert.That(select.Bind([("$i", 2L)]).ExecuteScalar(), Is.Null);
        using var count = Prepare("SELECT count(*) FROM t");
        Assert.That(count.Bind([]).ExecuteScalar(), Is.EqualTo(1L));
        Assert.That(count.Bind([]).ExecuteNonQuery(), Is.EqualTo(-1), "a statement that writes nothing changes no rows, as the command said");
    }

    [Test]
    public void ExecuteNonQuery_CountsTheRowsChanged()
    {
        using var insert = Prepare("INSERT INTO t (i) VALUES ($i) ON CONFLICT (i) DO NOTHING");
        Assert.That(insert.Bind([("$i", 1L)]).ExecuteNonQuery(), Is.EqualTo(1));
        Assert.That(insert.Bind([("$i", 1L)]).ExecuteNonQuery(), Is.EqualTo(0), "a conflict changes nothing");
        insert.Bind([("$i", 2L)]).ExecuteNonQuery();
        using var update = Prepare("UPDATE t SET s = 'x' WHERE i >= $i");
        Assert.That(update.Bind([("$i", 1L)]).ExecuteNonQuery(), Is.EqualTo(2));
    }

    [Test]
    public void SqliteErrors_AreSqliteExceptions_AndTheStatementStaysUsable()
    {
        using var insert = Prepare("INSERT INTO t (i) VALUES ($i)");
        insert.Bind([("$i", 1L)]).ExecuteNonQuery();
        var e = Assert.Throws<SqliteException>(() => insert.Bind([("$i", 1L)]).ExecuteNonQuery());
        Assert.That(e!.SqliteErrorCode, Is.EqualTo(SQLitePCL.raw.SQLITE_CONSTRAINT));
        Assert.That(insert.Bind([("$i", 2L)]).ExecuteNonQuery(), Is.EqualTo(1));
        Assert.Throws<SqliteException>(() => Prepare("SELECT nothing FROM nowhere"));
    }

    [Test]
    public void Misuse_IsRefused()
    {
        Assert.Throws<ArgumentException>(() => Prepare("SELECT 1; SELECT 2"), "one statement per kept statement");
        using var select = Prepare("SELECT i FROM t WHERE i = $i OR s = $s");
        Assert.Throws<InvalidOperationException>(() => select.Bind([("$i", 1L)]), "a parameter missing");
        Assert.Throws<InvalidOperationException>(() => select.Bind([("$i", 1L), ("$x", 1L)]), "an unknown parameter");
        using (select.Bind([("$i", 1L), ("$s", "a")]).ExecuteReader())
        {
            Assert.Throws<InvalidOperationException>(() => select.Bind([("$i", 1L), ("$s", "a")]), "its rows are open");
        }
        Assert.That(select.Bind([("$i", 1L), ("$s", "a")]).ExecuteScalar(), Is.Null, "usable again once the rows are closed");
    }
}
