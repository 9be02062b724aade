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
/// <para>
/// Each distinct list of protocols is stored once, in <c>peer_protocol_lists</c>, and a peer's <c>protocols</c> cell
/// holds a newline and the list's number: peers of one release share their list (17 protocols, ~360 bytes: four fifths
/// of a row that held it inline). A cell without that form is the list itself, newline-joined, as files written before
/// held it (a protocol id never holds a newline; such a file's list began with one only after an empty id, which a
/// load skips, and was read as a number only if the next id was all digits). <c>peers</c> and <c>topics</c> are made <c>WITHOUT ROWID</c> (one B-tree each, the key not stored
/// twice); an older file keeps its tables as they are, with the same columns.
/// </para>
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
            last_seen INTEGER NOT NULL) STRICT, WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS topics (topic TEXT PRIMARY KEY) STRICT, WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS peer_protocol_lists (id INTEGER PRIMARY KEY, protocols TEXT NOT NULL) STRICT;
        """;

    /// <summary>What begins a <c>protocols</c> cell that holds the number of a list in <c>peer_protocol_lists</c>.</summary>
    private const char ListReference = '\n';

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
        var file = SqliteStateFile.Open(directory, FileName, Schema, "SELECT count(*) FROM peers; SELECT count(*) FROM topics; SELECT count(*) FROM peer_protocol_lists;", inMemory);
        return new PeerDatabase(file) { RecoveredFromCorruption = file.RecoveredFromCorruption };
    }

    /// <summary>The indexes of <paramref name="peers"/> in the order of their ids as the table's key sorts them (bytewise).</summary>
    private static int[] KeyOrder(IReadOnlyList<PersistedPeer> peers)
    {
        var ids = new string[peers.Count];
        for (var i = 0; i < ids.Length; i++)
        {
            ids[i] = peers[i].Id.ToString();
        }
        var order = Enumerable.Range(0, ids.Length).ToArray();
        Array.Sort(order, (a, b) => string.CompareOrdinal(ids[a], ids[b]) is var c && c != 0 ? c : a.CompareTo(b));
        return order;
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
                    clear.CommandText = "DELETE FROM peers; DELETE FROM topics; DELETE FROM peer_protocol_lists;";
                    clear.ExecuteNonQuery();
                }
                // Each distinct list once, numbered from 1 in the order first met; each peer's cell: its list's reference.
                var lists = new Dictionary<string, string>(StringComparer.Ordinal);
                var cells = new string[state.Peers.Count];
                using (var insertList = connection.CreateCommand())
                {
                    insertList.Transaction = tx;
                    insertList.CommandText = "INSERT INTO peer_protocol_lists (id, protocols) VALUES ($id, $protocols)";
                    var listId = insertList.Parameters.Add("$id", SqliteType.Integer);
                    var listText = insertList.Parameters.Add("$protocols", SqliteType.Text);
                    for (var i = 0; i < cells.Length; i++)
                    {
                        var text = JoinProtocols(state.Peers[i].Protocols);
                        if (text.Length == 0)
                        {
                            cells[i] = "";
                            continue;
                        }
                        if (!lists.TryGetValue(text, out var cell))
                        {
                            var number = lists.Count + 1L;
                            cell = ListReference + number.ToString(System.Globalization.CultureInfo.InvariantCulture);
                            lists.Add(text, cell);
                            listId.Value = number;
                            listText.Value = text;
                            insertList.ExecuteNonQuery();
                        }
                        cells[i] = cell;
                    }
                }
                using (var insert = connection.CreateCommand())
                {
                    insert.Transaction = tx;
                    insert.CommandText = "INSERT OR REPLACE INTO peers (peer_id, addresses, protocols, last_seen) VALUES ($id, $addresses, $protocols, $seen)";
                    var id = insert.Parameters.Add("$id", SqliteType.Text);
                    var addresses = insert.Parameters.Add("$addresses", SqliteType.Text);
                    var protocols = insert.Parameters.Add("$protocols", SqliteType.Text);
                    var seen = insert.Parameters.Add("$seen", SqliteType.Integer);
                    // In key order (a stable sort: of two rows with one id the later still replaces the earlier): B-tree
                    // pages filled in order are fuller than after inserts in random order (40 peers at 512-byte pages: 8.1
                    // pages against 9.1). The same rows.
                    foreach (var i in KeyOrder(state.Peers))
                    {
                        var peer = state.Peers[i];
                        id.Value = peer.Id.ToString();
                        addresses.Value = string.Join('\n', peer.Addresses.Select(a => a.ToString()));
                        protocols.Value = cells[i];
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
                var lists = new Dictionary<long, string[]>();
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
                        var protocols = ListNumber(reader) is { } number
                            ? Protocols(connection, lists, number, maxProtocols)
                            : SplitBounded(reader, 2, maxProtocols);
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

    /// <summary>A peer's protocols as one cell's text: newline-joined, without any that is empty or holds a newline (a load skips them).</summary>
    private static string JoinProtocols(IReadOnlyList<string> protocols) => string.Join('\n', protocols.Where(p => p.Length > 0 && !p.Contains('\n')));

    /// <summary>The list number a row's <c>protocols</c> cell (column 2) holds, or null for a list held inline.</summary>
    private static long? ListNumber(SqliteDataReader reader)
    {
        // Bounded before it is read: a newline and a number are short.
        if (reader.GetInt64(5) is < 2 or > 20)
        {
            return null;
        }
        var text = reader.GetString(2);
        return text[0] == ListReference
            && long.TryParse(text.AsSpan(1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var number)
            ? number
            : null;
    }

    /// <summary>List <paramref name="number"/> of <c>peer_protocol_lists</c>, read once per load (none if missing or too long).</summary>
    private static string[] Protocols(SqliteConnection connection, Dictionary<long, string[]> lists, long number, int max)
    {
        if (lists.TryGetValue(number, out var known))
        {
            return known;
        }
        string[] protocols = [];
        using (var select = connection.CreateCommand())
        {
            select.CommandText = "SELECT protocols, length(protocols) FROM peer_protocol_lists WHERE id = $id";
            select.Parameters.AddWithValue("$id", number);
            using var reader = select.ExecuteReader();
            if (reader.Read())
            {
                protocols = Split(reader.GetInt64(1), () => reader.GetString(0), max);
            }
        }
        // At most one entry per peer read: bounded by maxPeers.
        lists.Add(number, protocols);
        return protocols;
    }

    /// <summary>Splits a newline-joined column, reading at most <paramref name="max"/> items of bounded length.</summary>
    private static string[] SplitBounded(SqliteDataReader reader, int column, int max) =>
        Split(reader.GetInt64(column + 3), () => reader.GetString(column), max);

    /// <summary>Splits newline-joined text of <paramref name="length"/> characters, read only when it is within bounds.</summary>
    private static string[] Split(long length, Func<string> read, int max)
    {
        // Bound the text read: a hostile file could hold one enormous cell.
        var limit = (long)max * (MaxFieldLength + 1);
        if (length > limit)
        {
            return [];
        }
        return read()
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
