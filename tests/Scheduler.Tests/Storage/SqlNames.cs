using Microsoft.Data.Sqlite;

namespace Potluck.Scheduler.Tests.Storage;

/// <summary>What the storage tests ask SQLite for by name: the first column of a query's rows, as text, in order.</summary>
internal static class SqlNames
{
    public static List<string> Of(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        using var reader = command.ExecuteReader();
        var names = new List<string>();
        while (reader.Read())
        {
            names.Add(reader.GetString(0));
        }
        return names;
    }
}
