using Potluck.Node.Cli;
using Potluck.Node.Hosting;
using Potluck.Node.Persistence;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Verification;

namespace Potluck.Node.Tests.Persistence;

/// <summary>The data directory and everything the node writes in it are its owner's only: 0700 and 0600, SQLite's WAL and SHM files included.</summary>
[Platform(Exclude = "Win")]
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public class OwnerOnlyFilesTests
{
    private string _root = "";

    [SetUp]
    public void SetUp() => _root = Directory.CreateTempSubdirectory("potluck-modes-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_root, true);

    private static UnixFileMode ModeOf(string path) => File.GetUnixFileMode(path) & (UnixFileMode)0x1FF;

    [Test]
    public async Task EveryFileTheNodeWrites_IsOwnerOnly_InAnOwnerOnlyDirectory_EvenWhereTheDirectoryWasOpen()
    {
        var dataDir = Path.Combine(_root, "data");
        Directory.CreateDirectory(dataDir, (UnixFileMode)0x1ED); // 0755, as a user might have made it

        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.That(await Commands.RunAsync(["id", "--data-dir", dataDir], new CliContext(stdout, stderr, NodeConfiguration.DefaultDataDir)), Is.Zero, stderr.ToString());
        var owner = PrivateKey.LoadOrCreate(Path.Combine(dataDir, NodeConfiguration.IdentityFileName)).PeerId;
        using (var ledger = CreditLedger.Open(dataDir, owner, new CreditsOptions(), TimeProvider.System))
        {
            Assert.That(File.Exists(Path.Combine(dataDir, "ledger.db-wal")) && File.Exists(Path.Combine(dataDir, "ledger.db-shm")), Is.True,
                "the ledger runs in WAL mode: its WAL and SHM files exist while it is open");
            AssertOwnerOnly(dataDir);
        }
        using (var reputation = ReputationDatabase.Open(dataDir))
        {
            reputation.Save([]);
            AssertOwnerOnly(dataDir);
        }
        using (PeerDatabase.Open(dataDir))
        {
            AssertOwnerOnly(dataDir);
        }
        new ModuleStore(Path.Combine(dataDir, "modules")).Put(new byte[] { 0, 0x61, 0x73, 0x6d, 1, 0, 0, 0 });
        AssertOwnerOnly(dataDir);
        Assert.That(Directory.EnumerateFiles(dataDir, "*", SearchOption.AllDirectories).Count(), Is.EqualTo(5), "identity, ledger, reputation, peers, a module (the WAL and SHM files go when the last connection closes)");
    }

    [Test]
    public void ASharedStickyDirectory_IsUsedButNotNarrowed()
    {
        var shared = Path.Combine(_root, "shared");
        Directory.CreateDirectory(shared, (UnixFileMode)0x3FF); // 1777, like /tmp
        File.SetUnixFileMode(shared, (UnixFileMode)0x3FF);

        OwnerOnly.CreateDirectory(shared);

        Assert.That(File.GetUnixFileMode(shared), Is.EqualTo((UnixFileMode)0x3FF));
    }

    [Test]
    public async Task SwarmKeyGenerate_Out_WritesTheKeyOwnerOnly_AndNeverOverwrites()
    {
        var path = Path.Combine(_root, "swarm.key");
        var stdout = new StringWriter();
        var stderr = new StringWriter();

        var code = await Commands.RunAsync(["swarm-key", "generate", "--out", path], new CliContext(stdout, stderr, NodeConfiguration.DefaultDataDir));

        Assert.That(code, Is.Zero, stderr.ToString());
        Assert.That(stdout.ToString(), Is.Empty, "the key is not printed when written to a file");
        Assert.That(ModeOf(path), Is.EqualTo(OwnerOnly.FileMode));
        Assert.That(Potluck.Protocol.Pnet.SwarmKey.TryParse(File.ReadAllBytes(path), out _, out var error), Is.True, error);
        var first = File.ReadAllText(path);

        var again = await Commands.RunAsync(["swarm-key", "generate", "--out", path], new CliContext(stdout, stderr = new StringWriter(), NodeConfiguration.DefaultDataDir));
        Assert.That(again, Is.EqualTo(1));
        Assert.That(stderr.ToString(), Does.Contain("already exists").And.Not.Contain("   at "));
        Assert.That(File.ReadAllText(path), Is.EqualTo(first));
    }

    private static void AssertOwnerOnly(string dataDir)
    {
        Assert.That(ModeOf(dataDir), Is.EqualTo(OwnerOnly.DirectoryMode), dataDir);
        foreach (var dir in Directory.EnumerateDirectories(dataDir, "*", SearchOption.AllDirectories))
        {
            Assert.That(ModeOf(dir), Is.EqualTo(OwnerOnly.DirectoryMode), dir);
        }
        foreach (var file in Directory.EnumerateFiles(dataDir, "*", SearchOption.AllDirectories))
        {
            Assert.That(ModeOf(file), Is.EqualTo(OwnerOnly.FileMode), file);
        }
    }
}
