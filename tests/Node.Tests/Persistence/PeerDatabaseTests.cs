using Microsoft.Data.Sqlite;
using Potluck.Node.Persistence;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;

namespace Potluck.Node.Tests.Persistence;

public class PeerDatabaseTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Path.Combine(Path.GetTempPath(), "potluck-db-" + Guid.NewGuid().ToString("N"));

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, true);
        }
    }

    private static PersistedPeer Peer(Random random, long seenMs, params string[] addresses) =>
        new(PrivateKey.FromRandom(random).PeerId, addresses.Select(Multiaddr.Parse).ToArray(), ["/ipfs/id/1.0.0", "/potluck/kad/1.0.0"],
            DateTimeOffset.FromUnixTimeMilliseconds(seenMs));

    [Test]
    public void HoldsNoConnectionBetweenUses_OpensTheFileForEachSaveAndLoad()
    {
        Assume.That(OperatingSystem.IsLinux(), "counts descriptors in /proc/self/fd");
        var random = new Random(2);
        var peer = Peer(random, 5000, "/memory/3");
        using var db = PeerDatabase.Open(_dir);
        Assert.That(OpenDescriptors(db.Path), Is.Zero, "after opening (setup and check ran, then it closed)");
        db.Save(new PersistedState([peer], ["t"]));
        Assert.That(OpenDescriptors(db.Path), Is.Zero, "after a save");
        var state = db.Load(100, 8, 128, 64);
        Assert.That(OpenDescriptors(db.Path), Is.Zero, "after a load");
        Assert.That(state.Peers.Single().Id, Is.EqualTo(peer.Id));
        Assert.That(state.Topics, Is.EqualTo(new[] { "t" }));
        db.Dispose();
        Assert.Throws<ObjectDisposedException>(() => db.Save(PersistedState.Empty), "disposed: DiscoveryService.Save logs it, as before");
    }

    /// <summary>Descriptors this process has open on <paramref name="path"/> (each SQLite connection opens its own).</summary>
    private static int OpenDescriptors(string path)
    {
        var count = 0;
        foreach (var fd in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            try
            {
                count += new FileInfo(fd).LinkTarget == path ? 1 : 0;
            }
            catch (IOException)
            {
                // Closed while enumerated (the enumeration's own descriptor among them).
            }
        }
        return count;
    }

    [Test]
    public void SaveThenLoad_RoundTrips_MostRecentFirst_AndReplacesThePreviousSave()
    {
        var random = new Random(1);
        var a = Peer(random, 1000, "/ip4/10.0.0.1/tcp/4100", "/ip6/::1/tcp/4100");
        var b = Peer(random, 3000, "/memory/7");
        var c = Peer(random, 2000, "/dns4/example.org/tcp/1");
        using (var db = PeerDatabase.Open(_dir))
        {
            db.Save(new PersistedState([Peer(random, 9999, "/memory/1")], ["old"]));
            db.Save(new PersistedState([a, b, c], ["t1", "t2"]));
        }
        using var reopened = PeerDatabase.Open(_dir);
        var state = reopened.Load(100, 8, 128, 64);
        Assert.That(state.Peers.Select(p => p.Id), Is.EqualTo(new[] { b.Id, c.Id, a.Id }));
        Assert.That(state.Peers[2].Addresses, Is.EqualTo(a.Addresses));
        Assert.That(state.Peers[2].Protocols, Is.EqualTo(a.Protocols));
        Assert.That(state.Peers[0].LastSeen, Is.EqualTo(b.LastSeen));
        Assert.That(state.Topics, Is.EqualTo(new[] { "t1", "t2" }));
        Assert.That(reopened.RecoveredFromCorruption, Is.False);
        if (!OperatingSystem.IsWindows())
        {
            Assert.That(File.GetUnixFileMode(reopened.Path), Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite));
        }
    }

    [Test]
    public void Load_IsBounded_AndSkipsRowsThatDoNotParse()
    {
        var random = new Random(2);
        using var db = PeerDatabase.Open(_dir);
        db.Save(new PersistedState(Enumerable.Range(0, 10).Select(i => Peer(random, i, "/memory/1", "/memory/2", "/memory/3")).ToArray(),
            Enumerable.Range(0, 10).Select(i => $"topic{i}").ToArray()));
        var state = db.Load(maxPeers: 4, maxAddresses: 2, maxProtocols: 1, maxTopics: 3);
        Assert.That(state.Peers, Has.Count.EqualTo(4));
        Assert.That(state.Peers.Select(p => p.Addresses.Count), Has.All.EqualTo(2));
        Assert.That(state.Peers.Select(p => p.Protocols.Count), Has.All.EqualTo(1));
        Assert.That(state.Topics, Has.Count.EqualTo(3));

        // A hand-edited file: a bad peer id, a bad address, an enormous cell.
        using (var connection = new SqliteConnection($"Data Source={db.Path};Pooling=false"))
        {
            connection.Open();
            using var command = connection.CreateCommand();
            command.CommandText = "DELETE FROM peers; " +
                                  "INSERT INTO peers VALUES ('not-a-peer-id', '/memory/1', '', 5);" +
                                  $"INSERT INTO peers VALUES ('{PrivateKey.FromRandom(random).PeerId}', '/ip4/999.1.1.1/tcp/1\n/memory/9', '', 4);" +
                                  $"INSERT INTO peers VALUES ('{PrivateKey.FromRandom(random).PeerId}', '{new string('x', 100_000)}', '', 3);";
            command.ExecuteNonQuery();
        }
        var tampered = db.Load(100, 8, 128, 64);
        Assert.That(tampered.Peers, Has.Count.EqualTo(2));
        Assert.That(tampered.Peers[0].Addresses, Is.EqualTo(new[] { Multiaddr.Parse("/memory/9") }));
        Assert.That(tampered.Peers[1].Addresses, Is.Empty);
    }

    [Test]
    public void Open_DamagedFile_IsSetAside_AndAFreshDatabaseStarts()
    {
        Directory.CreateDirectory(_dir);
        File.WriteAllBytes(Path.Combine(_dir, PeerDatabase.FileName), Enumerable.Repeat((byte)0x5A, 8192).ToArray());
        using var db = PeerDatabase.Open(_dir);
        Assert.That(db.RecoveredFromCorruption, Is.True);
        Assert.That(File.Exists(db.Path + ".corrupt"), Is.True);
        Assert.That(db.Load(10, 8, 8, 8).Peers, Is.Empty);
    }

    /// <summary>The protocols a peer of this release announces (17, ~360 bytes joined), as a simulated node's peer store holds them.</summary>
    private static readonly string[] ReleaseProtocols =
    [
        "/ipfs/id/1.0.0", "/ipfs/id/push/1.0.0", "/ipfs/ping/1.0.0", "/libp2p/autonat/2/dial-back", "/libp2p/autonat/2/dial-request",
        "/libp2p/circuit/relay/0.2.0/stop", "/libp2p/dcutr", "/meshsub/1.0.0", "/meshsub/1.1.0", "/meshsub/1.2.0", "/perf/1.0.0",
        "/potluck/ads/sample/1.0.0", "/potluck/chain/1.0.0", "/potluck/chain/1.1.0", "/potluck/chain/history/1.0.0",
        "/potluck/chain/query/1.0.0", "/potluck/kad/1.0.0",
    ];

    [Test]
    public void Save_StoresEachDistinctProtocolListOnce_AndLoadGivesEveryPeerItsOwn()
    {
        var random = new Random(5);
        var peers = Enumerable.Range(0, 40).Select(i => Peer(random, 1000 + i, $"/memory/{i}") with { Protocols = ReleaseProtocols }).ToList();
        peers.Add(Peer(random, 2000, "/memory/98")); // another list
        peers.Add(Peer(random, 2001, "/memory/99") with { Protocols = [] });
        peers.Add(Peer(random, 2002, "/memory/97") with { Protocols = ["", "/x/1", "bad\nid"] }); // the empty and newline ids are skipped, as a load skipped them
        using (var db = PeerDatabase.Open(_dir))
        {
            db.Save(new PersistedState(peers, ["t"]));
            db.Save(new PersistedState(peers, ["t"])); // written whole again: the lists numbered afresh
        }
        using var reopened = PeerDatabase.Open(_dir);
        var state = reopened.Load(100, 8, 128, 64);
        Assert.That(state.Peers, Has.Count.EqualTo(peers.Count));
        foreach (var peer in peers)
        {
            var loaded = state.Peers.Single(p => p.Id == peer.Id);
            Assert.That(loaded.Protocols, Is.EqualTo(peer.Protocols.Where(p => p.Length > 0 && !p.Contains('\n'))), peer.Addresses[0].ToString());
            Assert.That(loaded.Addresses, Is.EqualTo(peer.Addresses));
        }
        Assert.That(state.Topics, Is.EqualTo(new[] { "t" }));
        using var raw = new SqliteConnection($"Data Source={reopened.Path};Pooling=false");
        raw.Open();
        using var command = raw.CreateCommand();
        command.CommandText = "SELECT count(*) FROM peer_protocol_lists";
        Assert.That(Convert.ToInt64(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture), Is.EqualTo(3), "three distinct lists, each once");
        command.CommandText = "SELECT max(length(protocols)) FROM peers";
        Assert.That(Convert.ToInt64(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture), Is.LessThanOrEqualTo(2), "a peer's cell holds a list's number");
    }

    [Test]
    public void Load_ReadsAnOlderFilesInlineLists_AndTheNextSaveKeepsItsTables()
    {
        // A peers.db written before lists were shared: rowid tables, each peer's list inline.
        Directory.CreateDirectory(_dir);
        var path = Path.Combine(_dir, PeerDatabase.FileName);
        var random = new Random(6);
        var old = Peer(random, 7000, "/memory/5");
        using (var connection = new SqliteConnection($"Data Source={path};Pooling=false"))
        {
            connection.Open();
            using var command = connection.CreateCommand();
            command.CommandText = """
                CREATE TABLE peers (peer_id TEXT PRIMARY KEY, addresses TEXT NOT NULL, protocols TEXT NOT NULL, last_seen INTEGER NOT NULL) STRICT;
                CREATE TABLE topics (topic TEXT PRIMARY KEY) STRICT;
                """ + $"INSERT INTO peers VALUES ('{old.Id}', '/memory/5', '/ipfs/id/1.0.0\n/potluck/kad/1.0.0', 7000); INSERT INTO topics VALUES ('t');";
            command.ExecuteNonQuery();
        }
        using var db = PeerDatabase.Open(_dir);
        Assert.That(db.RecoveredFromCorruption, Is.False);
        var state = db.Load(100, 8, 128, 64);
        Assert.That(state.Peers.Single().Protocols, Is.EqualTo(old.Protocols));
        var added = Peer(random, 8000, "/memory/6") with { Protocols = ReleaseProtocols };
        db.Save(new PersistedState([.. state.Peers, added], state.Topics));
        var again = db.Load(100, 8, 128, 64);
        Assert.That(again.Peers.Select(p => (p.Id, p.Protocols.Count)), Is.EqualTo(new[] { (added.Id, ReleaseProtocols.Length), (old.Id, 2) }));
        Assert.That(again.Topics, Is.EqualTo(new[] { "t" }));
    }

    [Test]
    public void Load_AListNumberMissingOrTooLong_GivesThePeerNoProtocols_AndNothingMore()
    {
        var random = new Random(7);
        using var db = PeerDatabase.Open(_dir);
        db.Save(PersistedState.Empty);
        var missing = PrivateKey.FromRandom(random).PeerId;
        var huge = PrivateKey.FromRandom(random).PeerId;
        var digits = PrivateKey.FromRandom(random).PeerId;
        using (var connection = new SqliteConnection($"Data Source={db.Path};Pooling=false"))
        {
            connection.Open();
            using var command = connection.CreateCommand();
            command.CommandText = $"""
                INSERT INTO peer_protocol_lists VALUES (2, '{new string('x', 1_000_000)}');
                INSERT INTO peers VALUES ('{missing}', '/memory/1', char(10) || '1', 3);
                INSERT INTO peers VALUES ('{huge}', '/memory/2', char(10) || '2', 2);
                INSERT INTO peers VALUES ('{digits}', '/memory/3', char(10) || '{new string('9', 40)}', 1);
                """;
            command.ExecuteNonQuery();
        }
        var state = db.Load(100, 8, 128, 64);
        Assert.That(state.Peers.Select(p => p.Id), Is.EqualTo(new[] { missing, huge, digits }));
        Assert.That(state.Peers[0].Protocols, Is.Empty, "no such list");
        Assert.That(state.Peers[1].Protocols, Is.Empty, "a list longer than the bound is not read");
        Assert.That(state.Peers[2].Protocols, Is.EqualTo(new[] { new string('9', 40) }), "not a list number: read as an inline list");
    }

    [Test]
    public void InMemory_FortyPeersOfOneRelease_TakeAFewPages()
    {
        // The stand-in's store holds the pages in memory (512 B each, ~800 B with SQLite's page headers): a simulated node's
        // 40 peers of one release took ~50 pages when each row held its list inline with its key twice (table and index).
        var random = new Random(8);
        var path = Path.Combine(_dir, PeerDatabase.FileName);
        using var keep = Potluck.Scheduler.Storage.SqliteMemory.Keep(path);
        long PageCount()
        {
            using var command = keep.CreateCommand();
            command.CommandText = "PRAGMA page_count";
            return Convert.ToInt64(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
        }
        using var db = PeerDatabase.Open(_dir, inMemory: true, rowsInTables: true); // the tables' layout (the stand-in keeps its rows managed)
        var empty = PageCount();
        db.Save(new PersistedState(Enumerable.Range(0, 40).Select(i => Peer(random, i, $"/memory/{i}") with { Protocols = ReleaseProtocols }).ToArray(), ["potluck/sim/probe"]));
        var used = PageCount() - empty;
        Assert.That(used, Is.LessThanOrEqualTo(10), $"pages for 40 peers: {used} (the empty schema {empty})");
        Assert.That(db.Load(100, 8, 128, 64).Peers.Select(p => p.Protocols), Has.All.EqualTo(ReleaseProtocols));
    }

    [TestCase(8)]
    [TestCase(9)]
    public void InMemory_PeersSavedInAnyOrder_TakeNoMorePagesThanInKeyOrder(int seed)
    {
        // The rows go in by key (a B-tree filled in order is fuller than one filled at random): the same rows in fewer pages.
        var random = new Random(seed);
        var peers = Enumerable.Range(0, 40).Select(i => Peer(random, 1000 + i, $"/memory/{1000 + i}") with { Protocols = ReleaseProtocols }).ToArray();
        var sorted = peers.OrderBy(p => p.Id.ToString(), StringComparer.Ordinal).ToArray();
        long Used(PersistedPeer[] order, string sub)
        {
            var dir = Path.Combine(_dir, sub);
            using var keep = Potluck.Scheduler.Storage.SqliteMemory.Keep(Path.Combine(dir, PeerDatabase.FileName));
            long PageCount()
            {
                using var command = keep.CreateCommand();
                command.CommandText = "PRAGMA page_count";
                return Convert.ToInt64(command.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
            }
            using var db = PeerDatabase.Open(dir, inMemory: true, rowsInTables: true);
            var empty = PageCount();
            db.Save(new PersistedState(order, ["potluck/sim/probe"]));
            db.Save(new PersistedState(order, ["potluck/sim/probe"])); // written whole again, as every 30 s
            Assert.That(db.Load(100, 8, 128, 64).Peers.Select(p => p.Id), Is.EqualTo(peers.OrderByDescending(p => p.LastSeen).Select(p => p.Id)));
            return PageCount() - empty;
        }
        var inKeyOrder = Used(sorted, "sorted");
        var asMet = Used(peers, "as-met");
        Assert.That(asMet, Is.LessThanOrEqualTo(inKeyOrder), $"pages for 40 peers saved as met: {asMet}, in key order: {inKeyOrder}");
    }
}
