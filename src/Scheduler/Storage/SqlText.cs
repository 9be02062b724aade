using System.Text;

namespace Potluck.Scheduler.Storage;

/// <summary>
/// SQL text as SQLite stores it: a <c>CREATE</c> statement's text is kept verbatim in <c>sqlite_schema</c> (indentation,
/// line breaks and comments included), in the database's pages and, for the in-memory stand-in, in every node's memory.
/// <see cref="Compact"/> strips what the parser ignores before the text is run, so the same statements are stored in
/// fewer bytes. Nothing in Potluck compares stored schema text (migrations test for names in <c>sqlite_schema</c>), so the
/// compacted form is right for files too; a file created before keeps its longer text and reads the same.
/// </summary>
public static class SqlText
{
    /// <summary>
    /// <paramref name="sql"/> with comments removed and whitespace outside quoted strings and identifiers cut to a single
    /// space, or to none next to <c>( ) , ;</c> and at either end. Quoted text (<c>'…'</c>, <c>"…"</c>, <c>`…`</c>,
    /// <c>[…]</c>) is kept byte for byte; an unterminated quote or comment keeps the rest as it is.
    /// </summary>
    public static string Compact(string sql)
    {
        ArgumentNullException.ThrowIfNull(sql);
        var result = new StringBuilder(sql.Length);
        var pendingSpace = false;
        var i = 0;
        while (i < sql.Length)
        {
            var c = sql[i];
            if (char.IsWhiteSpace(c))
            {
                pendingSpace = true;
                i++;
                continue;
            }
            if (c == '-' && i + 1 < sql.Length && sql[i + 1] == '-')
            {
                var end = sql.IndexOf('\n', i);
                i = end < 0 ? sql.Length : end + 1;
                pendingSpace = true;
                continue;
            }
            if (c == '/' && i + 1 < sql.Length && sql[i + 1] == '*')
            {
                var end = sql.IndexOf("*/", i + 2, StringComparison.Ordinal);
                if (end < 0)
                {
                    Flush(result, ref pendingSpace, c);
                    result.Append(sql, i, sql.Length - i);
                    break;
                }
                i = end + 2;
                pendingSpace = true;
                continue;
            }
            Flush(result, ref pendingSpace, c);
            var close = c switch
            {
                '\'' => '\'',
                '"' => '"',
                '`' => '`',
                '[' => ']',
                _ => '\0',
            };
            if (close == '\0')
            {
                result.Append(c);
                i++;
                continue;
            }
            // A quoted string or identifier, to its closing quote (a doubled quote inside is part of it).
            var j = i + 1;
            while (true)
            {
                var end = sql.IndexOf(close, j);
                if (end < 0)
                {
                    j = sql.Length;
                    break;
                }
                if (close != ']' && end + 1 < sql.Length && sql[end + 1] == close)
                {
                    j = end + 2;
                    continue;
                }
                j = end + 1;
                break;
            }
            result.Append(sql, i, j - i);
            i = j;
        }
        return result.ToString();
    }

    private static bool Tight(char c) => c is '(' or ')' or ',' or ';';

    /// <summary>Writes the space seen before <paramref name="next"/> if it separates two words.</summary>
    private static void Flush(StringBuilder result, ref bool pendingSpace, char next)
    {
        if (pendingSpace && result.Length > 0 && !Tight(result[^1]) && !Tight(next))
        {
            result.Append(' ');
        }
        pendingSpace = false;
    }
}
