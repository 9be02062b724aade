using Potluck.Node.Persistence;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Scheduler.Storage;

namespace Potluck.Node.Tests.Persistence;

/// <summary>
/// The in-memory stand-in keeps peers.db's rows in its node's store's managed state, not in SQLite: a node that only
/// saves its peers holds no SQLite connection, and what a load (a restart) gives back is exactly what the tables gave.
/// </summary>
public class PeerDatabaseStandInTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Path.Combine(Path.GetTempPath(), "potluck-peers-standin-" + Guid.NewGuid().ToString("N"));

    [Test]
    public void InMemory_SavesAndLoads_HoldNoSqliteConnection()
    {
        var random = new Random(3);
        using var db = PeerDatabase.Open(_dir, inMemory: true);
        Assert.That(db.Footprint().Connections, Is.Zero, "after opening");
        Assert.That(db.Load(100, 8, 128, 64).Peers, Is.Empty);
        Assert.That(db.Footprint().Connections, Is.Zero, "after a load of nothing");
        var peers = Enumerable.Range(0, 30).Select(i => RandomPeer(random, i)).ToArray();
        db.Save(new PersistedState(peers, ["potluck/sim/probe"]));
        db.Save(new PersistedState(peers, ["potluck/sim/probe"])); // whole again, as every 30 s
        Assert.That(db.Footprint().Connections, Is.Zero, "after saves");
        Assert.That(db.Load(100, 8, 128, 64).Peers, Has.Count.EqualTo(peers.Select(p => p.Id).Distinct().Count()));
        Assert.That(db.Footprint().Connections, Is.Zero, "after a load");
    }

    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    [TestCase(4)]
    public void InMemory_ARestartReloadsWhatTheTablesReload(int seed)
    {
        var random = new Random(seed);
        var managedPath = Path.Combine(_dir, "managed", PeerDatabase.FileName);
        using var hold = SqliteMemory.Hold(managedPath); // the harness keeps a crashed node's store
        using var keepTables = SqliteMemory.Keep(Path.Combine(_dir, "tables", PeerDatabase.FileName));
        var managed = PeerDatabase.Open(Path.Combine(_dir, "managed"), inMemory: true);
        var tables = PeerDatabase.Open(Path.Combine(_dir, "tables"), inMemory: true, rowsInTables: true);
        try
        {
            for (var round = 0; round < 6; round++)
            {
                var state = RandomState(random);
                managed.Save(state);
                tables.Save(state);
                if (round % 2 == 1)
                {
                    // A crash and restart: the managed rows live in the held store, as the tables do in theirs.
                    managed.Dispose();
                    managed = PeerDatabase.Open(Path.Combine(_dir, "managed"), inMemory: true);
                }
                foreach (var (maxPeers, maxAddresses, maxProtocols, maxTopics) in new[] { (100, 8, 128, 64), (5, 2, 3, 1), (0, 0, 0, 0), (17, 1, 40, 3) })
                {
                    var expected = tables.Load(maxPeers, maxAddresses, maxProtocols, maxTopics);
                    var actual = managed.Load(maxPeers, maxAddresses, maxProtocols, maxTopics);
                    Assert.That(Describe(actual), Is.EqualTo(Describe(expected)), $"seed {seed}, round {round}, bounds {maxPeers}/{maxAddresses}/{maxProtocols}/{maxTopics}");
                }
            }
            Assert.That(managed.Footprint().Connections, Is.Zero);
        }
        finally
        {
            managed.Dispose();
            tables.Dispose();
        }
    }

    private static readonly string[] ProtocolPool =
    [
        "/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", "/meshsub/1.2.0", "/potluck/kad/1.0.0", "", "/with\nnewline", new string('p', 1100), "/é/1", "/😀/1",
    ];

    private static readonly string[] TopicPool = ["potluck/sim/probe", "b", "a", "é", "\uE000", "😀", "z", new string('t', 1025), new string('u', 1024)];

    private static PersistedPeer RandomPeer(Random random, int i) =>
        new(PrivateKey.FromRandom(random).PeerId,
            Enumerable.Range(0, random.Next(0, 11)).Select(a => Multiaddr.Parse($"/memory/{random.Next(0, 1_000_000)}")).ToArray(),
            Enumerable.Range(0, random.Next(0, 8)).Select(_ => ProtocolPool[random.Next(ProtocolPool.Length)]).ToArray(),
            DateTimeOffset.FromUnixTimeMilliseconds(1_000 + random.Next(0, 4)).AddTicks(random.Next(0, 9_999))); // ties, sub-ms dropped

    private static PersistedState RandomState(Random random)
    {
        var peers = Enumerable.Range(0, random.Next(0, 40)).Select(i => RandomPeer(random, i)).ToList();
        // The same id twice (the later row replaces the earlier, as INSERT OR REPLACE does).
        for (var d = random.Next(0, 4); d > 0 && peers.Count > 0; d--)
        {
            var twin = peers[random.Next(peers.Count)];
            peers.Insert(random.Next(peers.Count + 1), RandomPeer(random, 0) with { Id = twin.Id });
        }
        var topics = Enumerable.Range(0, random.Next(0, 8)).Select(_ => TopicPool[random.Next(TopicPool.Length)]).ToArray();
        return new PersistedState(peers, topics);
    }

    private static List<string> Describe(PersistedState state) =>
    [
        .. state.Peers.Select(p => $"{p.Id} | {string.Join(' ', p.Addresses)} | {string.Join(',', p.Protocols)} | {p.LastSeen.ToUnixTimeMilliseconds()} {p.LastSeen.Offset}"),
        .. state.Topics.Select(t => "topic " + t),
    ];
}
