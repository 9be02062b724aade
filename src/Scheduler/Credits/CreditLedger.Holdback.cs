using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Credits;

/// <summary>What a fraud proof forfeited: the provider's earnings from this node still held, once per proof.</summary>
/// <param name="Amount">Micro-credits forfeited by this proof (for a proof seen before: what it forfeited then).</param>
/// <param name="Receipts">Payments forfeited by this proof (0 for a proof seen before).</param>
/// <param name="AlreadyRecorded">True when this proof had been acted on before: nothing changed.</param>
public readonly record struct ForfeitResult(long Amount, int Receipts, bool AlreadyRecorded);

public sealed partial class CreditLedger
{
    /// <summary>
    /// Earnings held back (<see cref="CreditsOptions.Holdback"/>) and forfeited on fraud. A payment this node made to a
    /// provider (a Spent entry) counts in the provider's standing here only once it is older than the holdback; a proof
    /// of fraud against the provider forfeits every payment to it still held, for good: one <c>forfeits</c> row per
    /// payment, one <c>forfeit_proofs</c> row per proof (so a proof acts once). Both are append-only. The tables are made
    /// on first use (older ledgers gain them then; nothing else changes). The payments themselves stay as they are: they
    /// were made, and are signed by both parties; what is forfeited is the standing they would have bought.
    /// </summary>
    private const string HoldbackSchema = """
        CREATE TABLE IF NOT EXISTS forfeit_proofs (
            proof BLOB PRIMARY KEY,
            provider BLOB NOT NULL,
            amount INTEGER NOT NULL CHECK (amount >= 0),
            receipts INTEGER NOT NULL CHECK (receipts >= 0),
            recorded_at INTEGER NOT NULL) STRICT;
        CREATE TABLE IF NOT EXISTS forfeits (
            receipt_id BLOB PRIMARY KEY,
            provider BLOB NOT NULL,
            amount INTEGER NOT NULL CHECK (amount >= 0),
            proof BLOB NOT NULL,
            recorded_at INTEGER NOT NULL) STRICT;
        CREATE INDEX IF NOT EXISTS forfeits_by_provider ON forfeits (provider);
        CREATE INDEX IF NOT EXISTS entries_by_counterparty_time ON entries (kind, counterparty, recorded_at);
        CREATE TRIGGER IF NOT EXISTS forfeits_no_update BEFORE UPDATE ON forfeits BEGIN SELECT RAISE(ABORT, 'forfeits are append-only'); END;
        CREATE TRIGGER IF NOT EXISTS forfeits_no_delete BEFORE DELETE ON forfeits BEGIN SELECT RAISE(ABORT, 'forfeits are append-only'); END;
        CREATE TRIGGER IF NOT EXISTS forfeit_proofs_no_update BEFORE UPDATE ON forfeit_proofs BEGIN SELECT RAISE(ABORT, 'forfeits are append-only'); END;
        CREATE TRIGGER IF NOT EXISTS forfeit_proofs_no_delete BEFORE DELETE ON forfeit_proofs BEGIN SELECT RAISE(ABORT, 'forfeits are append-only'); END;
        """;

    /// <summary>Most bytes of a proof key (<see cref="Forfeit"/>): a lease id with its provider, or a hash.</summary>
    public const int MaxProofKeyLength = 128;

    private volatile bool _holdbackReady; // read outside the lock by Requester (set once, after the schema is in place)

    /// <summary>How long earnings are held (<see cref="CreditsOptions.Holdback"/>).</summary>
    public TimeSpan Holdback => _options.Holdback;

    /// <summary>
    /// Micro-credits this node paid <paramref name="provider"/> that are still held: paid less than
    /// <see cref="Holdback"/> ago and not forfeited. They do not count in the provider's standing yet.
    /// </summary>
    public long Held(PeerId provider)
    {
        if (Fresh(true, static () => false))
        {
            return 0; // a new ledger has paid no one
        }
        var p = provider.ToBytes();
        return Run(() =>
        {
            EnsureHoldback();
            return HeldCore(p);
        });
    }

    /// <summary>Micro-credits this node's payments to <paramref name="provider"/> forfeited by fraud proofs, all time.</summary>
    public long Forfeited(PeerId provider)
    {
        if (Fresh(true, static () => false))
        {
            return 0; // a new ledger has paid no one
        }
        var p = provider.ToBytes();
        return Run(() =>
        {
            EnsureHoldback();
            return ForfeitedCore(p);
        });
    }

    /// <summary>
    /// Forfeits everything <paramref name="provider"/> still holds from this node (payments made less than
    /// <see cref="Holdback"/> ago, not forfeited before), on a proof of fraud this node upheld or a re-run here that
    /// contradicted the provider. <paramref name="proof"/> names the proof (for example the provider and lease id): a
    /// proof acts once; a second call with it changes nothing. Durable when it returns.
    /// </summary>
    public ForfeitResult Forfeit(PeerId provider, ReadOnlySpan<byte> proof)
    {
        if (proof.Length is 0 or > MaxProofKeyLength)
        {
            throw new ArgumentException($"a proof key is 1–{MaxProofKeyLength} bytes", nameof(proof));
        }
        var key = proof.ToArray();
        var p = provider.ToBytes();
        return Run(() =>
        {
            EnsureHoldback();
            using var tx = Begin(durable: true);
            if (Scalar(tx, "SELECT amount FROM forfeit_proofs WHERE proof = $proof", ("$proof", key)) is { } seen)
            {
                Commit(tx, changed: false);
                return new ForfeitResult(Long(seen), 0, AlreadyRecorded: true);
            }
            var now = Now();
            var receipts = 0;
            var total = 0L;
            if (_options.Holdback > TimeSpan.Zero)
            {
                receipts = Command(tx, """
                    INSERT INTO forfeits (receipt_id, provider, amount, proof, recorded_at)
                    SELECT e.receipt_id, e.counterparty, e.amount, $proof, $now FROM entries e
                    WHERE e.kind = 2 AND e.counterparty = $p AND e.recorded_at > $cutoff
                      AND NOT EXISTS (SELECT 1 FROM forfeits f WHERE f.receipt_id = e.receipt_id)
                    """, ("$proof", key), ("$now", now), ("$p", p), ("$cutoff", Cutoff())).ExecuteNonQuery();
                total = Long(Scalar(tx, "SELECT COALESCE(SUM(amount), 0) FROM forfeits WHERE proof = $proof", ("$proof", key)));
            }
            Execute(tx, "INSERT INTO forfeit_proofs (proof, provider, amount, receipts, recorded_at) VALUES ($proof, $p, $amount, $n, $now)",
                ("$proof", key), ("$p", p), ("$amount", total), ("$n", (long)receipts), ("$now", now));
            Commit(tx, changed: true);
            return new ForfeitResult(total, receipts, AlreadyRecorded: false);
        });
    }

    /// <summary>
    /// What of this node's payments to <paramref name="provider"/> does not count in its standing: held (recent) or
    /// forfeited. <see cref="Requester"/> subtracts it from <c>Supplied</c>. Called under the ledger's lock.
    /// </summary>
    private long Withheld(byte[] provider)
    {
        EnsureHoldback();
        return HeldCore(provider) + ForfeitedCore(provider);
    }

    private long HeldCore(byte[] provider) => _options.Holdback <= TimeSpan.Zero ? 0 : Long(Scalar(null, """
        SELECT COALESCE(SUM(e.amount), 0) FROM entries e
        WHERE e.kind = 2 AND e.counterparty = $p AND e.recorded_at > $cutoff
          AND NOT EXISTS (SELECT 1 FROM forfeits f WHERE f.receipt_id = e.receipt_id)
        """, ("$p", provider), ("$cutoff", Cutoff())));

    private long ForfeitedCore(byte[] provider) =>
        Long(Scalar(null, "SELECT COALESCE(SUM(amount), 0) FROM forfeits WHERE provider = $p", ("$p", provider)));

    /// <summary>Entries recorded after this (Unix ms) are still held.</summary>
    private long Cutoff() => Now() - (long)Math.Min(_options.Holdback.TotalMilliseconds, long.MaxValue / 2);

    private void EnsureHoldback()
    {
        if (!_holdbackReady)
        {
            Once(HoldbackSchema);
            _holdbackReady = true;
        }
    }
}
