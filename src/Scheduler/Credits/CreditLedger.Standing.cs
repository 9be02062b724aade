using System.Globalization;
using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Credits;

/// <summary>What a provider knows first-hand about one requester: work exchanged both ways, and broken commitments.</summary>
/// <param name="Consumed">Micro-credits of work this node did for the requester: its receipts received plus what it owes unpaid.</param>
/// <param name="Supplied">Micro-credits of work the requester did for this node (what this node paid it), less what is still held or was forfeited (<see cref="CreditsOptions.Holdback"/>).</param>
/// <param name="Unpaid">Micro-credits owed for completed leases not paid for.</param>
/// <param name="Violations">Leases on which the requester broke its audit commitment.</param>
public readonly record struct RequesterRecord(long Consumed, long Supplied, long Unpaid, int Violations)
{
    /// <summary>What the requester took from this node beyond what it gave it: the credit this node has extended.</summary>
    public long Debt => Consumed - Supplied;
}

public sealed partial class CreditLedger
{
    /// <summary>
    /// Requesters caught breaking their audit commitment (<see cref="Verification.LeaseAudit"/>): one row per lease, with
    /// the signed receipt that shows it. Added to older ledgers when they are opened (no other change).
    /// </summary>
    private const string StandingSchema = """
        CREATE TABLE IF NOT EXISTS requester_violations (
            requester BLOB NOT NULL,
            lease_id BLOB NOT NULL,
            verdict INTEGER NOT NULL,
            evidence BLOB,
            recorded_at INTEGER NOT NULL,
            PRIMARY KEY (requester, lease_id)) STRICT;
        """;

    /// <summary>
    /// As a provider: records that <paramref name="requester"/> broke its audit commitment on a lease, with the signed
    /// receipt that shows it. Once per lease. True when newly recorded.
    /// </summary>
    public bool RecordViolation(PeerId requester, ReadOnlySpan<byte> leaseId, int verdict, byte[]? evidence)
    {
        if (leaseId.Length is 0 or > Attestation.MaxLeaseIdLength)
        {
            throw new ArgumentException("a lease id is 1–64 bytes", nameof(leaseId));
        }
        var lease = leaseId.ToArray();
        return Run(() =>
        {
            using var tx = Begin(durable: false);
            var exists = Scalar(tx, "SELECT 1 FROM requester_violations WHERE requester = $r AND lease_id = $lease",
                ("$r", requester), ("$lease", lease)) is not null;
            if (!exists)
            {
                Execute(tx, "INSERT INTO requester_violations (requester, lease_id, verdict, evidence, recorded_at) VALUES ($r, $lease, $v, $e, $now)",
                    ("$r", requester), ("$lease", lease), ("$v", (long)verdict), ("$e", evidence), ("$now", Now()));
            }
            Commit(tx, !exists);
            return !exists;
        });
    }

    /// <summary>As a provider: what this node knows first-hand about <paramref name="requester"/> (one row read).</summary>
    public RequesterRecord Requester(PeerId requester)
    {
        if (Fresh(true, static () => false))
        {
            return default; // a new ledger: nothing exchanged with anyone (its grant is no one's)
        }
        var r = requester.ToBytes();
        if (!_holdbackReady)
        {
            Run(() =>
            {
                EnsureHoldback(); // a schema write, once: the read below runs beside the writer
                return 0;
            });
        }
        return Read(() =>
        {
            // One indexed row, kept by triggers (CreditLedger.Totals.cs): admission does not grow with the requester's history.
            // What this node still holds back from the requester (or forfeited) does not count as paid (CreditLedger.Holdback.cs).
            // All of it in one statement (the row, the held payments, the forfeited ones), not three.
            using var reader = Command(null, """
                SELECT COALESCE(t.earned, 0), COALESCE(t.spent, 0), COALESCE(t.unpaid, 0), COALESCE(t.violations, 0),
                       (SELECT COALESCE(SUM(e.amount), 0) FROM entries e
                         WHERE e.kind = 2 AND e.counterparty = $c AND e.recorded_at > $cutoff
                           AND NOT EXISTS (SELECT 1 FROM forfeits f WHERE f.receipt_id = e.receipt_id)),
                       (SELECT COALESCE(SUM(amount), 0) FROM forfeits WHERE provider = $c)
                FROM (SELECT 1) LEFT JOIN counterparty_totals t ON t.counterparty = $c
                """, ("$c", r), ("$cutoff", _options.Holdback <= TimeSpan.Zero ? long.MaxValue : Cutoff())).ExecuteReader();
            reader.Read();
            var (earned, spent, unpaid, violations) = (reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetInt64(3));
            spent -= reader.GetInt64(4) + reader.GetInt64(5);
            return new RequesterRecord(earned + unpaid, spent, unpaid, (int)Math.Min(violations, int.MaxValue));
        });
    }

    /// <summary>The most this node lets itself owe (<see cref="CreditsOptions.MaxDebt"/>).</summary>
    public long MaxDebt => _options.MaxDebt;

    private static long Long(object? value) => Convert.ToInt64(value, CultureInfo.InvariantCulture);
}
