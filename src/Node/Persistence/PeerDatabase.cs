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
/// <para>
/// The in-memory stand-in of simulations (<see cref="SqliteMemory"/>) keeps the rows in its node's store's managed state
/// instead of its database (every node saves its peers every 30 s, and a SQLite table there would hold the store's
/// connection, schema and pages open for that alone): the same rows in the same order, read back through the same bounds,
/// parsing and order as the table's (<see cref="MemoryRows"/>), so what a restart reloads is the same.
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

    /// <summary>The managed state's name for this file's rows in the stand-in's store.</summary>
    private const string ManagedRows = "peers.db:rows";

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
    public static PeerDatabase Open(string directory, bool inMemory = false) => Open(directory, inMemory, rowsInTables: false);

    /// <param name="rowsInTables">The stand-in with its rows in the store's SQLite tables, as before they were kept managed
    /// (tests: the tables' layout, and the managed rows against them).</param>
    internal static PeerDatabase Open(string directory, bool inMemory, bool rowsInTables)
    {
        // Touch both tables so a damaged file fails on open, not on the first save.
        var file = SqliteStateFile.Open(directory, FileName, Schema, "SELECT count(*) FROM peers; SELECT count(*) FROM topics; SELECT count(*) FROM peer_protocol_lists;", inMemory);
        return new PeerDatabase(file) { RecoveredFromCorruption = file.RecoveredFromCorruption, _managed = inMemory && !rowsInTables };
    }

    /// <summary>The stand-in's rows kept in its store's managed state (<see cref="MemoryRows"/>), not in SQLite.</summary>
    private bool _managed;

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
        ArgumentNullException.ThrowIfNull(state);
        lock (_gate)
        {
            if (_managed && _file.Store is { } store)
            {
                var rows = MemoryRows.Of(state);
                store.WithManaged(managed => managed[ManagedRows] = rows);
                return;
            }
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
            if (_managed && _file.Store is { } store)
            {
                var rows = store.WithManaged(managed => managed.TryGetValue(ManagedRows, out var r) ? (MemoryRows)r : null);
                return rows is null ? new PersistedState([], []) : rows.Load(maxPeers, maxAddresses, maxProtocols, maxTopics);
            }
            return _file.Read(connection =>
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
            }, PersistedState.Empty);
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

    /// <summary>
    /// The stand-in's rows: what <see cref="Save"/> writes to the tables, kept as the saved objects rather than their text
    /// (a peer's id and address array are the ones the caller passed, its protocols one joined text shared by every row and
    /// store that holds the same list), turned into the tables' text only when read back. A load applies the table's
    /// query: rows in key order (bytewise UTF-8, the later of two rows with one id kept, as INSERT OR REPLACE in
    /// <see cref="KeyOrder"/>), ids of at most <see cref="MaxFieldLength"/> characters, most recently seen first (equal
    /// times in key order, as SQLite's sort of that scan returns them), at most <c>maxPeers</c>; each cell split and
    /// bounded as <see cref="Split"/> does; the topics distinct, in bytewise order. Immutable.
    /// </summary>
    private sealed class MemoryRows
    {
        private readonly PeerId[] _ids;
        private readonly IReadOnlyList<Multiaddr>[] _addresses;
        private readonly string[] _protocols;
        private readonly long[] _lastSeen;
        private readonly string[] _topics;

        private MemoryRows(PeerId[] ids, IReadOnlyList<Multiaddr>[] addresses, string[] protocols, long[] lastSeen, string[] topics)
        {
            _ids = ids;
            _addresses = addresses;
            _protocols = protocols;
            _lastSeen = lastSeen;
            _topics = topics;
        }

        /// <summary>Joined protocol lists shared between rows and stores (peers of one release have one); bounded.</summary>
        private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, string> s_lists = new(StringComparer.Ordinal);

        private const int SharedListLimit = 1_024;

        private static string Shared(string text)
        {
            if (text.Length == 0)
            {
                return "";
            }
            if (s_lists.TryGetValue(text, out var shared))
            {
                return shared;
            }
            return s_lists.Count < SharedListLimit ? s_lists.GetOrAdd(text, text) : text;
        }

        public static MemoryRows Of(PersistedState state)
        {
            // The rows as the table would hold them: in key order, one per id (the later wins, as INSERT OR REPLACE).
            var keys = new string[state.Peers.Count];
            for (var i = 0; i < keys.Length; i++)
            {
                keys[i] = state.Peers[i].Id.ToString();
            }
            var order = KeyOrder(state.Peers);
            var kept = new List<int>(order.Length);
            foreach (var i in order)
            {
                if (kept.Count > 0 && string.Equals(keys[kept[^1]], keys[i], StringComparison.Ordinal))
                {
                    kept[^1] = i;
                }
                else
                {
                    kept.Add(i);
                }
            }
            // KeyOrder sorts by UTF-16 code units; the table's key sorts by UTF-8 bytes (they differ only past U+D7FF).
            kept.Sort((a, b) => Utf8Order(keys[a], keys[b]));
            var ids = new PeerId[kept.Count];
            var addresses = new IReadOnlyList<Multiaddr>[kept.Count];
            var protocols = new string[kept.Count];
            var lastSeen = new long[kept.Count];
            for (var k = 0; k < kept.Count; k++)
            {
                var peer = state.Peers[kept[k]];
                ids[k] = peer.Id;
                addresses[k] = [.. peer.Addresses];
                protocols[k] = Shared(JoinProtocols(peer.Protocols));
                lastSeen[k] = peer.LastSeen.ToUnixTimeMilliseconds();
            }
            var topics = new List<string>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var t in state.Topics)
            {
                if (seen.Add(t))
                {
                    topics.Add(t);
                }
            }
            return new MemoryRows(ids, addresses, protocols, lastSeen, [.. topics]);
        }

        public PersistedState Load(int maxPeers, int maxAddresses, int maxProtocols, int maxTopics)
        {
            var candidates = new List<(int Row, string Id)>();
            for (var k = 0; k < _ids.Length; k++)
            {
                var id = _ids[k].ToString();
                if (Characters(id) <= MaxFieldLength)
                {
                    candidates.Add((k, id));
                }
            }
            // ORDER BY last_seen DESC over the key-ordered scan: a stable sort keeps equal times in key order.
            var sorted = candidates.OrderByDescending(c => _lastSeen[c.Row]).Take(maxPeers < 0 ? int.MaxValue : maxPeers);
            var peers = new List<PersistedPeer>();
            foreach (var (row, text) in sorted)
            {
                if (!PeerId.TryParse(text, out var id))
                {
                    continue;
                }
                var joined = string.Join('\n', _addresses[row].Select(a => a.ToString()));
                var addresses = Split(Characters(joined), () => joined, maxAddresses)
                    .Select(a => Multiaddr.TryParse(a, out var m) ? m : null)
                    .OfType<Multiaddr>()
                    .ToArray();
                var list = _protocols[row];
                var protocols = Split(Characters(list), () => list, maxProtocols);
                var seen = DateTimeOffset.FromUnixTimeMilliseconds(Math.Clamp(_lastSeen[row], 0, 253_402_300_799_999));
                peers.Add(new PersistedPeer(id, addresses, protocols, seen));
            }
            var topics = _topics
                .Where(t => Characters(t) <= MaxFieldLength)
                .Order(Comparer<string>.Create(Utf8Order))
                .Take(maxTopics < 0 ? int.MaxValue : maxTopics)
                .ToList();
            return new PersistedState(peers, topics);
        }

        /// <summary>SQLite's <c>length()</c> of a text: its characters (code points), not UTF-16 units.</summary>
        private static int Characters(string text)
        {
            var surrogates = 0;
            foreach (var c in text)
            {
                if (char.IsLowSurrogate(c))
                {
                    surrogates++;
                }
            }
            return text.Length - surrogates;
        }

        /// <summary>SQLite's BINARY order of two texts: their UTF-8 bytes compared.</summary>
        private static int Utf8Order(string? a, string? b)
        {
            var x = System.Text.Encoding.UTF8.GetBytes(a ?? "");
            var y = System.Text.Encoding.UTF8.GetBytes(b ?? "");
            return x.AsSpan().SequenceCompareTo(y);
        }
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
