using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Credits;

public sealed partial class CreditLedger
{
    /// <summary>
    /// What each payer's surplus here backs, by requester (<see cref="Accounting.VouchBook"/>): so that a restart does not
    /// divide a surplus afresh among new identities. Made on first use (older ledgers gain it then; nothing else changes).
    /// </summary>
    private const string VouchSchema = """
        CREATE TABLE IF NOT EXISTS vouches (
            payer BLOB NOT NULL,
            requester BLOB NOT NULL,
            amount INTEGER NOT NULL CHECK (amount > 0),
            updated_at INTEGER NOT NULL,
            PRIMARY KEY (payer, requester)) STRICT;
        CREATE INDEX IF NOT EXISTS vouches_by_requester ON vouches (requester);
        """;

    private bool _vouchesReady;

    /// <summary>Up to <paramref name="max"/> (payer, requester, micro-credits) entries of what payers' surpluses back here, oldest first.</summary>
    public IReadOnlyList<(PeerId Payer, PeerId Requester, long Amount)> Vouches(int max) => Fresh<IReadOnlyList<(PeerId, PeerId, long)>>([], () => Run(() =>
    {
        EnsureVouches();
        var list = new List<(PeerId, PeerId, long)>();
        using var reader = Command(null, "SELECT payer, requester, amount FROM vouches ORDER BY updated_at, rowid LIMIT $max", ("$max", (long)Math.Max(0, max)))
            .ExecuteReader();
        while (reader.Read())
        {
            list.Add((ReadPeer(reader.GetValue(0)), ReadPeer(reader.GetValue(1)), reader.GetInt64(2)));
        }
        return (IReadOnlyList<(PeerId, PeerId, long)>)list;
    }));

    /// <summary>Replaces, durably and at once, what payers' surpluses back for <paramref name="requester"/> (empty: nothing).</summary>
    public void ReplaceVouches(PeerId requester, IReadOnlyDictionary<PeerId, long> backs)
    {
        ArgumentNullException.ThrowIfNull(backs);
        var r = requester.ToBytes();
        Run(() =>
        {
            EnsureVouches();
            using var tx = Begin(durable: true);
            Execute(tx, "DELETE FROM vouches WHERE requester = $r", ("$r", r));
            foreach (var (payer, amount) in backs)
            {
                if (amount > 0)
                {
                    Execute(tx, "INSERT INTO vouches (payer, requester, amount, updated_at) VALUES ($p, $r, $a, $now)",
                        ("$p", payer), ("$r", r), ("$a", amount), ("$now", Now()));
                }
            }
            Commit(tx, true);
            return true;
        });
    }

    /// <summary>Drops what <paramref name="payer"/>'s surplus backs for <paramref name="requester"/>.</summary>
    public void RemoveVouch(PeerId payer, PeerId requester) => Run(() =>
    {
        EnsureVouches();
        Execute(null, "DELETE FROM vouches WHERE payer = $p AND requester = $r", ("$p", payer), ("$r", requester));
        return true;
    });

    private void EnsureVouches()
    {
        if (!_vouchesReady)
        {
            Once(VouchSchema);
            _vouchesReady = true;
        }
    }
}
