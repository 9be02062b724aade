using Microsoft.Data.Sqlite;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Storage;

namespace Potluck.Scheduler.Verification;

/// <summary>
/// <c>reputation.db</c> in the data directory (SQLite, WAL): what this node has learnt about providers — verification
/// streaks, failures and the refused set — so a restarted requester neither trusts a cheater again nor starts every
/// honest provider over as a stranger. The file is advisory state, not money: a damaged one is set aside as
/// <c>reputation.db.corrupt</c> and the node starts afresh. Reads are bounded (rows, reason length), so a tampered
/// file cannot make the node allocate without limit. Thread-safe.
/// </summary>
public sealed class ReputationDatabase : IDisposable
{
    public const string FileName = "reputation.db";

    /// <summary>Longest refusal reason stored or read back; longer ones are cut.</summary>
    public const int MaxReasonLength = 512;

    private const string Schema = """
        CREATE TABLE IF NOT EXISTS providers (
            peer_id TEXT PRIMARY KEY,
            consecutive_verified INTEGER NOT NULL,
            verified INTEGER NOT NULL,
            unchecked INTEGER NOT NULL,
            failures INTEGER NOT NULL,
            refused_reason TEXT) STRICT;
        """;

    private readonly SqliteStateFile _file;
    private readonly Lock _gate = new();

    private ReputationDatabase(SqliteStateFile file)
    {
        _file = file;
        Path = file.Path;
    }

    public string Path { get; }

    /// <summary>True when an existing file was damaged and has been set aside.</summary>
    public bool RecoveredFromCorruption { get; private set; }

    /// <summary>Opens (creating if needed) <c>reputation.db</c> in <paramref name="directory"/>.</summary>
    /// <param name="inMemory">The in-memory storage stand-in of simulations (<see cref="Storage.SqliteMemory"/>).</param>
    public static ReputationDatabase Open(string directory, bool inMemory = false)
    {
        var file = SqliteStateFile.Open(directory, FileName, "PRAGMA journal_mode = WAL;" + Schema,
            "SELECT count(*) FROM providers", inMemory, perOpen: "PRAGMA synchronous = NORMAL;");
        return new ReputationDatabase(file) { RecoveredFromCorruption = file.RecoveredFromCorruption };
    }

    /// <summary>Writes (inserts or replaces) these providers' records in one transaction.</summary>
    public void Save(IReadOnlyCollection<KeyValuePair<PeerId, ProviderRecord>> records)
    {
        if (records.Count == 0)
        {
            return;
        }
        lock (_gate)
        {
            _file.Use(connection =>
            {
                using var tx = connection.BeginTransaction();
                using var upsert = connection.CreateCommand();
                upsert.Transaction = tx;
                upsert.CommandText = "INSERT OR REPLACE INTO providers (peer_id, consecutive_verified, verified, unchecked, failures, refused_reason) " +
                                     "VALUES ($id, $streak, $verified, $unchecked, $failures, $reason)";
                var id = upsert.Parameters.Add("$id", SqliteType.Text);
                var streak = upsert.Parameters.Add("$streak", SqliteType.Integer);
                var verified = upsert.Parameters.Add("$verified", SqliteType.Integer);
                var unchecked_ = upsert.Parameters.Add("$unchecked", SqliteType.Integer);
                var failures = upsert.Parameters.Add("$failures", SqliteType.Integer);
                var reason = upsert.Parameters.Add("$reason", SqliteType.Text);
                foreach (var (peer, record) in records)
                {
                    id.Value = peer.ToString();
                    streak.Value = record.ConsecutiveVerified;
                    verified.Value = record.Verified;
                    unchecked_.Value = record.Unchecked;
                    failures.Value = record.Failures;
                    reason.Value = record.RefusedReason is { } r ? (r.Length > MaxReasonLength ? r[..MaxReasonLength] : r) : DBNull.Value;
                    upsert.ExecuteNonQuery();
                }
                tx.Commit();
                return 0;
            });
        }
    }

    /// <summary>Up to <paramref name="maxProviders"/> stored records, refused providers first (they matter most).</summary>
    public IReadOnlyList<KeyValuePair<PeerId, ProviderRecord>> Load(int maxProviders)
    {
        lock (_gate)
        {
            // The stand-in's store answers "nothing saved" without a connection until the first save.
            return _file.Read<IReadOnlyList<KeyValuePair<PeerId, ProviderRecord>>>(connection =>
            {
                var records = new List<KeyValuePair<PeerId, ProviderRecord>>();
                using var select = connection.CreateCommand();
                select.CommandText = "SELECT peer_id, consecutive_verified, verified, unchecked, failures, substr(refused_reason, 1, $max) FROM providers " +
                                     "WHERE length(peer_id) <= 128 ORDER BY refused_reason IS NULL, verified DESC LIMIT $limit";
                select.Parameters.AddWithValue("$max", MaxReasonLength);
                select.Parameters.AddWithValue("$limit", maxProviders);
                using var reader = select.ExecuteReader();
                while (reader.Read())
                {
                    if (!PeerId.TryParse(reader.GetString(0), out var id))
                    {
                        continue;
                    }
                    records.Add(new(id, new ProviderRecord(
                        Count(reader.GetInt64(1)), Count(reader.GetInt64(2)), Count(reader.GetInt64(3)), Count(reader.GetInt64(4)),
                        reader.IsDBNull(5) ? null : reader.GetString(5))));
                }
                return records;
            }, []);
        }
    }

    private static int Count(long value) => (int)Math.Clamp(value, 0, int.MaxValue);

    /// <summary>What SQLite holds for this database's connection now.</summary>
    internal SqliteFootprint Footprint()
    {
        lock (_gate)
        {
            return _file.Footprint();
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _file.Dispose();
        }
    }
}
