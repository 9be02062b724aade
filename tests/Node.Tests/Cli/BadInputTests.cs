using Potluck.Node.Cli;
using Potluck.Node.Hosting;

namespace Potluck.Node.Tests.Cli;

/// <summary>Broken files and missing places end with a message on stderr and a non-zero exit, never an unhandled exception.</summary>
public class BadInputTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("potluck-bad-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, true);

    private static async Task<(int Code, string Out, string Err)> Run(params string[] args) =>
        await Run(NodeConfiguration.DefaultDataDir, args);

    private static async Task<(int Code, string Out, string Err)> Run(Func<string> defaultDataDir, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await Commands.RunAsync(args, new CliContext(stdout, stderr, defaultDataDir));
        return (code, stdout.ToString(), stderr.ToString());
    }

    private static void AssertFailed((int Code, string Out, string Err) run, int code, string expected)
    {
        Assert.That(run.Code, Is.EqualTo(code), run.Err);
        Assert.That(run.Err, Does.Contain(expected));
        Assert.That(run.Err, Does.Not.Contain("   at ").And.Not.Contain("unexpected error"), "a message, not a stack trace");
    }

    private string Write(string name, byte[] bytes)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static string NoHome() =>
        throw new NodeStartException("no home directory ($HOME is not set): give the data directory with --data-dir <path> or POTLUCK_DATA_DIR");

    [TestCase("id")]
    [TestCase("ledger")]
    [TestCase("peers")]
    [TestCase("run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns")]
    public async Task NoHomeDirectory_SaysToGiveTheDataDirectory(params string[] args) =>
        AssertFailed(await Run(NoHome, args), 1, $"potluck {args[0]}: no home directory ($HOME is not set): give the data directory with --data-dir");

    [Test]
    public async Task Submit_NoHomeDirectory_SaysToGiveTheDataDirectory()
    {
        var module = Write("task.wasm", [0, (byte)'a', (byte)'s', (byte)'m', 1, 0, 0, 0]);
        AssertFailed(await Run(NoHome, "submit", module, "--no-mdns"), 1, "potluck submit: no home directory");
    }

    [Test]
    public async Task Id_CorruptIdentityKey_SaysToMoveItAway()
    {
        Write(NodeConfiguration.IdentityFileName, "not a key"u8.ToArray());
        AssertFailed(await Run("id", "--data-dir", _dir), 1, "is not a libp2p private key");
    }

    [Test]
    public async Task Id_DataDirIsAFile_SaysSo()
    {
        var file = Write("plain-file", [1, 2, 3]);
        AssertFailed(await Run("id", "--data-dir", file), 1, "potluck id: ");
    }

    [Test]
    public async Task Ledger_CorruptIdentityKey_SaysToMoveItAway()
    {
        Write(NodeConfiguration.IdentityFileName, "not a key"u8.ToArray());
        Write(Scheduler.Credits.CreditLedger.FileName, "not a ledger"u8.ToArray());
        AssertFailed(await Run("ledger", "--data-dir", _dir), 1, "is not a libp2p private key");
    }

    [Test]
    public async Task Ledger_CorruptLedger_SaysTheLedgerCannotBeOpened()
    {
        Assert.That((await Run("id", "--data-dir", _dir)).Code, Is.EqualTo(0));
        Write(Scheduler.Credits.CreditLedger.FileName, new byte[4096]);
        AssertFailed(await Run("ledger", "--data-dir", _dir), 1, "potluck ledger: the ledger cannot be opened");
    }

    [Test]
    public async Task Ledger_DataDirIsAFile_SaysThereIsNoLedger()
    {
        var file = Write("plain-file", [1, 2, 3]);
        AssertFailed(await Run("ledger", "--data-dir", file), 1, "no ledger in");
    }

    [Test]
    public async Task Run_CorruptIdentityKey_SaysToMoveItAway()
    {
        Write(NodeConfiguration.IdentityFileName, "not a key"u8.ToArray());
        AssertFailed(await Run("run", "--data-dir", _dir, "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"), 1, "is not a libp2p private key");
    }

    [Test]
    public async Task Run_MissingConfigFile_SaysWhichFile()
    {
        var missing = Path.Combine(_dir, "nowhere.json");
        AssertFailed(await Run("run", "--data-dir", _dir, "--config", missing), 1, $"--config: no file at '{missing}'");
    }

    [Test]
    public async Task Run_BrokenConfigFile_SaysWhichFileAndWhy()
    {
        Write(NodeConfiguration.FileName, "{ \"listen\": "u8.ToArray());
        AssertFailed(await Run("run", "--data-dir", _dir), 1, $"{NodeConfiguration.FileName} is not a valid configuration file");
    }

    [Test]
    public async Task Peers_DataDirIsAFile_SaysNoNodeIsRunning()
    {
        var file = Write("plain-file", [1, 2, 3]);
        AssertFailed(await Run("peers", "--data-dir", file), 1, "potluck peers: ");
    }

    [Test]
    public async Task Ping_NotASwarmKey_SaysWhatIsWrongWithTheFile()
    {
        var key = Write("swarm.key", "hello"u8.ToArray());
        AssertFailed(await Run("ping", "/ip4/127.0.0.1/tcp/1", "--swarm-key", key), 2, $"--swarm-key: '{key}' is not a swarm key");
    }

    [Test]
    public async Task Submit_ModuleIsADirectory_SaysToGiveAFile()
    {
        AssertFailed(await Run("submit", _dir), 2, $"'{_dir}' is a directory: give the path of a .wasm file");
    }

    [Test]
    public async Task Submit_MissingInputFile_SaysToUseDashForStdin()
    {
        var module = Write("task.wasm", [0, (byte)'a', (byte)'s', (byte)'m', 1, 0, 0, 0]);
        AssertFailed(await Run("submit", module, "--input", Path.Combine(_dir, "nothing")), 2, "--input: no file at");
    }

    [Test]
    public async Task EmptyPath_IsRefusedWhenParsed()
    {
        AssertFailed(await Run("id", "--data-dir", ""), 2, "--data-dir '' is not a usable path");
    }
}
