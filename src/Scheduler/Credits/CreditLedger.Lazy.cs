using System.Collections.Concurrent;
using System.Text.RegularExpressions;

namespace Potluck.Scheduler.Credits;

/// <summary>
/// The in-memory stand-in's tables made when first needed. A file ledger creates every table when it is created (and
/// adds missing ones when it is opened), as before. In the stand-in, thousands of nodes share one process and most of them
/// never take part in a lease, never store a chain block, never see a fork proof or recover a chain; each table, index
/// and trigger costs its parsed form in the store's schema (SQLite keeps the whole schema parsed while a connection is
/// open), its CREATE text in <c>sqlite_schema</c> and at least one page. So there, the tables below are created — with
/// their indexes and triggers, the totals' triggers on them included — by the first statement that names one of them,
/// read or write, inside that statement's transaction (a rollback undoes them with the rest, and the ledger reads what
/// is there again). What a statement sees is the same: the table it names exists, empty until written. The schema
/// reached is exactly a file's (the same CREATE statements), only later.
/// </summary>
public sealed partial class CreditLedger
{
    /// <summary>A table created when first named (in the stand-in), and its schema: the table with its indexes and triggers.</summary>
    private readonly record struct LazyTable(string Name, string Schema);

    /// <summary>In the stand-in, created when first named; bit <c>i</c> of a mask is <c>s_lazyTables[i]</c>.</summary>
    private static readonly LazyTable[] s_lazyTables =
    [
        new("reservations", ReservationsSchema),
        new("owed", OwedSchema + OwedTotalsTriggers),
        new("requester_violations", StandingSchema + ViolationTotalsTriggers),
        new("chain", ChainSchema),
        new("chain_payments", ChainPaymentsSchema),
        new("chain_unlinked", ChainUnlinkedSchema),
        new("forks", ForksSchema),
        new("chain_recovered", RecoverySchema),
    ];

    /// <summary>Which lazy tables each statement's text names (texts are the ledger's constants; bounded all the same).</summary>
    private static readonly ConcurrentDictionary<string, int> s_lazyNamed = new(StringComparer.Ordinal);

    private const int LazyNamedCacheLimit = 4_096;

    private static readonly int AllLazy = (1 << s_lazyTables.Length) - 1;

    /// <summary>Which lazy tables the store holds (a mask; -1: not read yet, or forgotten after a rollback). Under the writer's lock.</summary>
    private int _lazyPresent = -1;

    /// <summary>The mask of the lazy tables <paramref name="sql"/> names (by whole identifier, case-insensitive as SQLite's names are).</summary>
    internal static int LazyTablesNamed(string sql)
    {
        if (s_lazyNamed.TryGetValue(sql, out var mask))
        {
            return mask;
        }
        mask = 0;
        foreach (Match word in IdentifierPattern().Matches(sql))
        {
            mask |= LazyBit(word.Value);
        }
        if (s_lazyNamed.Count < LazyNamedCacheLimit)
        {
            s_lazyNamed.TryAdd(sql, mask);
        }
        return mask;
    }

    private static int LazyBit(string name)
    {
        for (var i = 0; i < s_lazyTables.Length; i++)
        {
            if (string.Equals(s_lazyTables[i].Name, name, StringComparison.OrdinalIgnoreCase))
            {
                return 1 << i;
            }
        }
        return 0;
    }

    [GeneratedRegex("[A-Za-z_][A-Za-z0-9_]*")]
    private static partial Regex IdentifierPattern();

    /// <summary>The lazy tables the store holds now (reads <c>sqlite_schema</c> once, and again after a rollback).</summary>
    private int LazyPresent()
    {
        if (_lazyPresent < 0)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = "SELECT name FROM sqlite_schema WHERE type = 'table'";
            using var reader = command.ExecuteReader();
            var mask = 0;
            while (reader.Read())
            {
                mask |= LazyBit(reader.GetString(0));
            }
            _lazyPresent = mask;
        }
        return _lazyPresent;
    }

    /// <summary>
    /// True when the stand-in's store does not hold <paramref name="table"/> yet (a read of it would find nothing); always
    /// false for a file ledger. Under the writer's lock.
    /// </summary>
    private bool LazyAbsent(string table) => _inMemory && (LazyPresent() & LazyBit(table)) == 0;

    /// <summary>
    /// The stand-in's: creates the lazy tables <paramref name="sql"/> names that the store does not hold yet, before it is
    /// prepared (under the writer's lock, inside the caller's transaction if there is one). Nothing for a file ledger.
    /// </summary>
    private void EnsureTablesFor(string sql)
    {
        if (!_inMemory || _lazyPresent == AllLazy)
        {
            return;
        }
        var named = LazyTablesNamed(sql);
        if (named != 0 && (named & ~LazyPresent()) != 0)
        {
            CreateLazy(named);
        }
    }

    /// <summary>Every lazy table (the stand-in's, when every row must be summed).</summary>
    private void EnsureAllTables()
    {
        if (_inMemory)
        {
            CreateLazy(AllLazy);
        }
    }

    private void CreateLazy(int mask)
    {
        var missing = mask & ~LazyPresent();
        for (var i = 0; i < s_lazyTables.Length; i++)
        {
            if ((missing & (1 << i)) != 0)
            {
                Once(s_lazyTables[i].Schema);
                _lazyPresent |= 1 << i;
            }
        }
    }

    /// <summary>After a rollback (whole, or to a savepoint) a table created in it may be gone again: read what is there next time.</summary>
    private void ForgetLazy() => _lazyPresent = -1;
}
