using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Credits;

/// <summary>A counterparty whose kept totals (<c>counterparty_totals</c>) differ from the totals summed from the rows.</summary>
/// <param name="Counterparty">Whose totals differ.</param>
/// <param name="Earned">Kept minus summed: micro-credits earned from it (Earned entries).</param>
/// <param name="Spent">Kept minus summed: micro-credits paid to it (Spent entries).</param>
/// <param name="Unpaid">Kept minus summed: micro-credits it owes for completed leases not paid for.</param>
/// <param name="Violations">Kept minus counted: audit violations recorded against it.</param>
public readonly record struct TotalsMismatch(PeerId Counterparty, long Earned, long Spent, long Unpaid, long Violations)
{
    public override string ToString() =>
        $"totals of {Counterparty} differ from the rows (kept − summed: earned {Earned}, spent {Spent}, unpaid {Unpaid}, violations {Violations})";
}

public sealed partial class CreditLedger
{
    /// <summary>
    /// Per-counterparty totals, so a provider's admission reads one indexed row (<see cref="Requester"/>) instead of
    /// summing a requester's receipts. Kept by SQLite triggers in the transaction of every write to the rows they sum
    /// (entries, owed, requester_violations), so they cannot drift from them through any code path, this ledger's or
    /// another writer's. An older ledger gets the table at open, computed once from the rows. The table is STRICT: a sum
    /// that overflowed 64 bits would become a REAL and fail the write. <c>potluck ledger --verify</c> sums the rows again
    /// and reports any counterparty whose kept totals differ (<see cref="TotalsMismatches"/>).
    /// </summary>
    private const string TotalsSchema = """
        CREATE TABLE IF NOT EXISTS counterparty_totals (
            counterparty BLOB PRIMARY KEY,
            earned INTEGER NOT NULL DEFAULT 0,
            spent INTEGER NOT NULL DEFAULT 0,
            unpaid INTEGER NOT NULL DEFAULT 0,
            violations INTEGER NOT NULL DEFAULT 0) STRICT, WITHOUT ROWID;
        CREATE TRIGGER IF NOT EXISTS totals_entry AFTER INSERT ON entries WHEN NEW.kind IN (1, 2)
        BEGIN
            INSERT OR IGNORE INTO counterparty_totals (counterparty) VALUES (NEW.counterparty);
            UPDATE counterparty_totals
               SET earned = earned + CASE NEW.kind WHEN 1 THEN NEW.amount ELSE 0 END,
                   spent = spent + CASE NEW.kind WHEN 2 THEN NEW.amount ELSE 0 END
             WHERE counterparty = NEW.counterparty;
        END;
        """;

    /// <summary>The totals' triggers on <c>owed</c>: created with that table (CreditLedger.Lazy.cs in the stand-in).</summary>
    private const string OwedTotalsTriggers = """
        CREATE TRIGGER IF NOT EXISTS totals_owed_insert AFTER INSERT ON owed WHEN NEW.paid = 0
        BEGIN
            INSERT OR IGNORE INTO counterparty_totals (counterparty) VALUES (NEW.requester);
            UPDATE counterparty_totals SET unpaid = unpaid + NEW.amount WHERE counterparty = NEW.requester;
        END;
        CREATE TRIGGER IF NOT EXISTS totals_owed_update AFTER UPDATE ON owed
        BEGIN
            UPDATE counterparty_totals SET unpaid = unpaid - CASE OLD.paid WHEN 0 THEN OLD.amount ELSE 0 END
             WHERE counterparty = OLD.requester;
            INSERT OR IGNORE INTO counterparty_totals (counterparty) VALUES (NEW.requester);
            UPDATE counterparty_totals SET unpaid = unpaid + CASE NEW.paid WHEN 0 THEN NEW.amount ELSE 0 END
             WHERE counterparty = NEW.requester;
        END;
        CREATE TRIGGER IF NOT EXISTS totals_owed_delete AFTER DELETE ON owed WHEN OLD.paid = 0
        BEGIN
            UPDATE counterparty_totals SET unpaid = unpaid - OLD.amount WHERE counterparty = OLD.requester;
        END;
        """;

    /// <summary>The totals' triggers on <c>requester_violations</c>: created with that table.</summary>
    private const string ViolationTotalsTriggers = """
        CREATE TRIGGER IF NOT EXISTS totals_violation_insert AFTER INSERT ON requester_violations
        BEGIN
            INSERT OR IGNORE INTO counterparty_totals (counterparty) VALUES (NEW.requester);
            UPDATE counterparty_totals SET violations = violations + 1 WHERE counterparty = NEW.requester;
        END;
        CREATE TRIGGER IF NOT EXISTS totals_violation_delete AFTER DELETE ON requester_violations
        BEGIN
            UPDATE counterparty_totals SET violations = violations - 1 WHERE counterparty = OLD.requester;
        END;
        """;

    /// <summary>Every counterparty's totals summed from the rows, one row per counterparty (the truth the kept totals follow).</summary>
    private const string SummedTotals = """
        SELECT c, SUM(earned) AS earned, SUM(spent) AS spent, SUM(unpaid) AS unpaid, SUM(violations) AS violations FROM (
            SELECT counterparty AS c,
                   SUM(CASE kind WHEN 1 THEN amount ELSE 0 END) AS earned,
                   SUM(CASE kind WHEN 2 THEN amount ELSE 0 END) AS spent,
                   0 AS unpaid, 0 AS violations
              FROM entries WHERE kind IN (1, 2) GROUP BY counterparty
            UNION ALL SELECT requester, 0, 0, SUM(amount), 0 FROM owed WHERE paid = 0 GROUP BY requester
            UNION ALL SELECT requester, 0, 0, 0, count(*) FROM requester_violations GROUP BY requester)
        GROUP BY c
        """;

    /// <summary>
    /// Creates the totals table and its triggers; on a ledger that had none, fills it from the rows once, in the same
    /// transaction (a ledger from before the table existed). Runs at every open, after the tables it sums exist.
    /// </summary>
    /// <param name="created">The ledger is being created: it has no rows to sum (its grant is not counted), so no fill.</param>
    private void EnsureTotals(LedgerTransaction tx, bool created)
    {
        var existed = ScalarRarely("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'counterparty_totals'") is not null;
        Once(TotalsSchema);
        if (!_inMemory)
        {
            // The stand-in creates these with their tables, at the first statement that names them (CreditLedger.Lazy.cs).
            Once(OwedTotalsTriggers);
            Once(ViolationTotalsTriggers);
        }
        else if (!existed && !created)
        {
            EnsureAllTables(); // an in-memory store without totals: the rows they sum must be there to sum them
        }
        if (!existed && !created)
        {
            Once($"""
                INSERT INTO counterparty_totals (counterparty, earned, spent, unpaid, violations)
                SELECT c, earned, spent, unpaid, violations FROM ({SummedTotals})
                """);
        }
    }

    /// <summary>
    /// Sums every counterparty's totals from the rows again and lists those whose kept totals differ (at most
    /// <paramref name="max"/>), with the differences. Empty on a sound ledger. Reads every row: for audits, never for admission.
    /// </summary>
    public IReadOnlyList<TotalsMismatch> TotalsMismatches(int max = 100)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(max);
        return Run(() =>
        {
            using var reader = Command(null, $"""
                SELECT c, SUM(earned), SUM(spent), SUM(unpaid), SUM(violations) FROM (
                    SELECT counterparty AS c, earned, spent, unpaid, violations FROM counterparty_totals
                    UNION ALL SELECT c, -earned, -spent, -unpaid, -violations FROM ({SummedTotals}))
                GROUP BY c
                HAVING SUM(earned) <> 0 OR SUM(spent) <> 0 OR SUM(unpaid) <> 0 OR SUM(violations) <> 0
                LIMIT $max
                """, ("$max", (long)max)).ExecuteReader();
            var list = new List<TotalsMismatch>();
            while (reader.Read())
            {
                list.Add(new TotalsMismatch(ReadPeer(reader[0]), reader.GetInt64(1), reader.GetInt64(2), reader.GetInt64(3), reader.GetInt64(4)));
            }
            return list;
        });
    }

    /// <summary>
    /// The standing read that admission did before the kept totals: four queries, two of them summing every receipt of
    /// <paramref name="requester"/>. Kept for the side-by-side benchmark (scripts/bench/AdmissionBench) and for tests
    /// that compare it with <see cref="Requester"/>.
    /// </summary>
    public RequesterRecord RequesterSummed(PeerId requester)
    {
        var r = requester.ToBytes();
        return Run(() =>
        {
            var earned = Long(Scalar(null, "SELECT COALESCE(SUM(amount), 0) FROM entries WHERE kind = 1 AND counterparty = $r", ("$r", r)));
            var spent = Long(Scalar(null, "SELECT COALESCE(SUM(amount), 0) FROM entries WHERE kind = 2 AND counterparty = $r", ("$r", r))) - Withheld(r);
            var unpaid = Long(Scalar(null, "SELECT COALESCE(SUM(amount), 0) FROM owed WHERE requester = $r AND paid = 0", ("$r", r)));
            var violations = Long(Scalar(null, "SELECT count(*) FROM requester_violations WHERE requester = $r", ("$r", r)));
            return new RequesterRecord(earned + unpaid, spent, unpaid, (int)Math.Min(violations, int.MaxValue));
        });
    }
}
