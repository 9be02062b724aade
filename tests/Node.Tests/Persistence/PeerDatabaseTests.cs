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
}
