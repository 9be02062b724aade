using Microsoft.Data.Sqlite;
using Potluck.Scheduler.Storage;

namespace Potluck.Scheduler.Tests.Storage;

/// <summary>
/// <see cref="SqlText.Compact"/>: what the parser ignores goes, quoted text stays byte for byte, and the statements mean
/// the same (SQLite parses both to the same schema and the same answers).
/// </summary>
public class SqlTextTests
{
    [TestCase("  SELECT  1 ;  ", "SELECT 1;")]
    [TestCase("CREATE TABLE t (\n    a INTEGER NOT NULL CHECK (a IN (0, 1)),\n    b TEXT) STRICT;\n", "CREATE TABLE t(a INTEGER NOT NULL CHECK(a IN(0,1)),b TEXT)STRICT;")]
    [TestCase("SELECT 1 -- a comment\n  FROM t /* another\n one */ WHERE x = 2", "SELECT 1 FROM t WHERE x = 2")]
    [TestCase("SELECT RAISE(ABORT, 'kept  as   it is -- not a comment');", "SELECT RAISE(ABORT,'kept  as   it is -- not a comment');")]
    [TestCase("SELECT 'it''s  two' ,  \"a  b\" , [c  d] , `e  f`", "SELECT 'it''s  two',\"a  b\",[c  d],`e  f`")]
    [TestCase("SELECT 'unterminated   ", "SELECT 'unterminated   ")]
    [TestCase("SELECT 1 /* unterminated   ", "SELECT 1 /* unterminated   ")]
    [TestCase("SELECT a - -1, b--c\n FROM t", "SELECT a - -1,b FROM t")]
    [TestCase("", "")]
    public void Compact_StripsWhatTheParserIgnores_KeepsQuotedText(string sql, string expected) =>
        Assert.That(SqlText.Compact(sql), Is.EqualTo(expected));

    [Test]
    public void Compact_TheSameSchemaAndTheSameAnswers()
    {
        const string Schema = """
            CREATE TABLE entries (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                kind INTEGER NOT NULL CHECK (kind IN (0, 1, 2)),   -- what kind of entry
                amount INTEGER NOT NULL CHECK (amount >= 0),
                note TEXT DEFAULT 'a  b',
                UNIQUE (kind, amount)) STRICT;
            CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
                BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
            """;
        const string Work = """
            INSERT INTO entries (kind, amount) VALUES (1, 5), (2, 7);
            SELECT group_concat(kind || ':' || amount || ':' || note, ' ; ') FROM entries;
            """;
        var answers = new List<string>();
        var columns = new List<string>();
        foreach (var text in new[] { Schema, SqlText.Compact(Schema) })
        {
            using var connection = new SqliteConnection("Data Source=:memory:");
            connection.Open();
            using (var create = connection.CreateCommand())
            {
                create.CommandText = text;
                create.ExecuteNonQuery();
            }
            using (var work = connection.CreateCommand())
            {
                work.CommandText = Work;
                answers.Add(Convert.ToString(work.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture)!);
            }
            using (var info = connection.CreateCommand())
            {
                info.CommandText = "SELECT group_concat(name || ' ' || type || ' ' || \"notnull\" || ' ' || ifnull(dflt_value, '-') || ' ' || pk, ', ') FROM pragma_table_info('entries')";
                columns.Add(Convert.ToString(info.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture)!);
            }
            using (var delete = connection.CreateCommand())
            {
                delete.CommandText = "DELETE FROM entries";
                Assert.That(() => delete.ExecuteNonQuery(), Throws.InstanceOf<SqliteException>().With.Message.Contains("ledger entries are append-only"));
            }
            using (var check = connection.CreateCommand())
            {
                check.CommandText = "INSERT INTO entries (kind, amount) VALUES (3, 1)";
                Assert.That(() => check.ExecuteNonQuery(), Throws.InstanceOf<SqliteException>().With.Message.Contains("CHECK"));
            }
        }
        Assert.That(answers[0], Is.EqualTo("1:5:a  b ; 2:7:a  b"));
        Assert.That(answers[1], Is.EqualTo(answers[0]));
        Assert.That(columns[1], Is.EqualTo(columns[0]));
    }
}
