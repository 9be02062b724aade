using Microsoft.Data.Sqlite;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Scheduler.Storage;

namespace Potluck.Node.Persistence;

/// <summary>A peer as remembered across restarts.</summary>
public sealed record PersistedPeer(PeerId Id, IReadOnlyList<Multiaddr> Addresses, IReadOnlyList<string> Protocols, DateTimeOffset LastSeen);

/// <summary>What a node remembers across restarts: its peers and its gossip topics.</summary>
public sealed record PersistedState(IReadOnlyList<PersistedPeer> Peers, IReadOnlyList<string> Topics)
{
    public static PersistedState Empty { get; } = new([], []);
}

/// <summary>
/// <c>peers.db</c> in the data directory (SQLite): the peer store and joined topics, written whole on each save
/// (the file is a cache: a damaged one is set aside as <c>peers.db.corrupt</c> and the node starts afresh).
/// Reads are bounded: at most <c>maxPeers</c> rows, <c>maxAddresses</c> per peer, and text fields of bounded length,
/// so a tampered file cannot make the node allocate without limit.
/// </summary>
public sealed class PeerDatabase : IDisposable
{
    public const string FileName = "peers.db";

    /// <summary>Longest address, protocol or topic read back; longer ones are skipped.</summary>
    public const int MaxFieldLength = 1024;

    private const string Schema = """
        CREATE TABLE IF NOT EXISTS peers (
            peer_id TEXT PRIMARY KEY,
            addresses TEXT NOT NULL,
            protocols TEXT NOT NULL,
            last_seen INTEGER NOT NULL) STRICT;
        CREATE TABLE IF NOT EXISTS topics (topic TEXT PRIMARY KEY) STRICT;
        """;

    private readonly SqliteStateFile _file;
    private readonly Lock _gate = new();

    private PeerDatabase(SqliteStateFile file)
    {
        _file = file;
        Path = file.Path;
    }

    public string Path { get; }

    /// <summary>True when an existing file was damaged and has been set aside.</summary>
    public bool RecoveredFromCorruption { get; private set; }

    /// <summary>Opens (creating if needed) <c>peers.db</c> in <paramref name="directory"/>.</summary>
    /// <param name="inMemory">The in-memory storage stand-in of simulations (<see cref="Potluck.Scheduler.Storage.SqliteMemory"/>).</param>
    public static PeerDatabase Open(string directory, bool inMemory = false)
    {
        // Touch both tables so a damaged file fails on open, not on the first save.
        var file = SqliteStateFile.Open(directory, FileName, Schema, "SELECT count(*) FROM peers; SELECT count(*) FROM topics;", inMemory);
        return new PeerDatabase(file) { RecoveredFromCorruption = file.RecoveredFromCorruption };
    }

    /// <summary>Replaces everything stored with <paramref name="state"/>.</summary>
    public void Save(PersistedState state)
    {
        lock (_gate)
        {
            _file.Use(connection =>
            {
                using var tx = connection.BeginTransaction();
                using (var clear = connection.CreateCommand())
                {
                    clear.Transaction = tx;
                    clear.CommandText = "DELETE FROM peers; DELETE FROM topics;";
                    clear.ExecuteNonQuery();
                }
                using (var insert = connection.CreateCommand())
                {
                    insert.Transaction = tx;
                    insert.CommandText = "INSERT OR REPLACE INTO peers (peer_id, addresses, protocols, last_seen) VALUES ($id, $addresses, $protocols, $seen)";
                    var id = insert.Parameters.Add("$id", SqliteType.Text);
                    var addresses = insert.Parameters.Add("$addresses", SqliteType.Text);
                    var protocols = insert.Parameters.Add("$protocols", SqliteType.Text);
                    var seen = insert.Parameters.Add("$seen", SqliteType.Integer);
                    foreach (var peer in state.Peers)
                    {
                        id.Value = peer.Id.ToString();
                        addresses.Value = string.Join('\n', peer.Addresses.Select(a => a.ToString()));
                        protocols.Value = string.Join('\n', peer.Protocols.Where(p => !p.Contains('\n')));
                        seen.Value = peer.LastSeen.ToUnixTimeMilliseconds();
                        insert.ExecuteNonQuery();
                    }
                }
                using (var insert = connection.CreateCommand())
                {
                    insert.Transaction = tx;
                    insert.CommandText = "INSERT OR IGNORE INTO topics (topic) VALUES ($topic)";
                    var topic = insert.Parameters.Add("$topic", SqliteType.Text);
                    foreach (var t in state.Topics)
                    {
                        topic.Value = t;
                        insert.ExecuteNonQuery();
                    }
                }
                tx.Commit();
                return 0;
            });
        }
    }

    /// <summary>What was saved: up to <paramref name="maxPeers"/> peers, most recently seen first, and up to <paramref name="maxTopics"/> topics.</summary>
    public PersistedState Load(int maxPeers, int maxAddresses, int maxProtocols, int maxTopics)
    {
        lock (_gate)
        {
            return _file.Use(connection =>
            {
                var peers = new List<PersistedPeer>();
                using (var select = connection.CreateCommand())
                {
                    select.CommandText = "SELECT peer_id, addresses, protocols, last_seen, length(addresses), length(protocols) FROM peers " +
                                         "WHERE length(peer_id) <= $max ORDER BY last_seen DESC LIMIT $limit";
                    select.Parameters.AddWithValue("$max", MaxFieldLength);
                    select.Parameters.AddWithValue("$limit", maxPeers);
                    using var reader = select.ExecuteReader();
                    while (reader.Read())
                    {
                        if (!PeerId.TryParse(reader.GetString(0), out var id))
                        {
                            continue;
                        }
                        var addresses = SplitBounded(reader, 1, maxAddresses)
                            .Select(a => Multiaddr.TryParse(a, out var m) ? m : null)
                            .OfType<Multiaddr>()
                            .ToArray();
                        var protocols = SplitBounded(reader, 2, maxProtocols);
                        var seen = DateTimeOffset.FromUnixTimeMilliseconds(Math.Clamp(reader.GetInt64(3), 0, 253_402_300_799_999));
                        peers.Add(new PersistedPeer(id, addresses, protocols, seen));
                    }
                }
                var topics = new List<string>();
                using (var select = connection.CreateCommand())
                {
                    select.CommandText = "SELECT topic FROM topics WHERE length(topic) <= $max ORDER BY topic LIMIT $limit";
                    select.Parameters.AddWithValue("$max", MaxFieldLength);
                    select.Parameters.AddWithValue("$limit", maxTopics);
                    using var reader = select.ExecuteReader();
                    while (reader.Read())
                    {
                        topics.Add(reader.GetString(0));
                    }
                }
                return new PersistedState(peers, topics);
            });
        }
    }

    /// <summary>Splits a newline-joined column, reading at most <paramref name="max"/> items of bounded length.</summary>
    private static string[] SplitBounded(SqliteDataReader reader, int column, int max)
    {
        // Bound the text read: a hostile file could hold one enormous cell.
        var limit = (long)max * (MaxFieldLength + 1);
        if (reader.GetInt64(column + 3) > limit)
        {
            return [];
        }
        return reader.GetString(column)
            .Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Where(s => s.Length <= MaxFieldLength)
            .Take(max)
            .ToArray();
    }

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
