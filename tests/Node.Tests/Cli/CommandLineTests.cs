using Potluck.Node.Cli;

namespace Potluck.Node.Tests.Cli;

public class CommandLineTests
{
    private static async Task<(int Code, string Out, string Err)> Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await Commands.RunAsync(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Test]
    public async Task NoArguments_PrintsUsage_ExitsZero()
    {
        var (code, output, _) = await Run();
        Assert.That(code, Is.EqualTo(0));
        Assert.That(output, Does.Contain("potluck run").And.Contain("potluck ping").And.Contain("potluck perf"));
    }

    [Test]
    public async Task UnknownCommand_SaysWhichCommandsExist()
    {
        var (code, _, err) = await Run("runn");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("unknown command 'runn'").And.Contain("run, id, ping, perf"));
    }

    [Test]
    public async Task MisspelledOption_SuggestsTheRightOne()
    {
        var (code, _, err) = await Run("run", "--lisen", "/ip4/127.0.0.1/tcp/0");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("unknown option '--lisen'").And.Contain("Did you mean '--listen'?"));
    }

    [Test]
    public async Task BadMultiaddr_SaysWhatIsWrongWithIt()
    {
        var (code, _, err) = await Run("run", "--listen", "/ip4/300.1.1.1/tcp/1");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("--listen '/ip4/300.1.1.1/tcp/1' is not a multiaddr").And.Contain("not an IPv4 address"));
    }

    [Test]
    public async Task OptionWithoutValue_ShowsTheExpectedForm()
    {
        var (code, _, err) = await Run("run", "--data-dir");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("--data-dir needs a value: --data-dir <path>"));
    }

    [Test]
    public async Task PingWithoutAddress_SaysWhatToGive()
    {
        var (code, _, err) = await Run("ping");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("needs the address to ping"));
    }

    [Test]
    public async Task PerfWithBadSize_ExplainsTheSizeFormat()
    {
        var (code, _, err) = await Run("perf", "/ip4/127.0.0.1/tcp/1", "--upload", "lots");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("--upload 'lots' is not a size").And.Contain("64MiB"));
    }

    [Test]
    public async Task MissingSwarmKeyFile_SaysHowToCreateOne()
    {
        var (code, _, err) = await Run("ping", "/ip4/127.0.0.1/tcp/1", "--swarm-key", "/nonexistent/swarm.key");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("potluck swarm-key generate"));
    }

    [Test]
    public async Task CommandHelp_ListsItsOptions()
    {
        var (code, output, _) = await Run("perf", "--help");
        Assert.That(code, Is.EqualTo(0));
        Assert.That(output, Does.Contain("--upload <bytes>").And.Contain("--download <bytes>"));
    }

    [Test]
    public async Task Id_CreatesIdentityOnce_AndPrintsTheSamePeerIdAfterwards()
    {
        var dir = Path.Combine(Path.GetTempPath(), "potluck-test-" + Guid.NewGuid().ToString("N"));
        try
        {
            var first = await Run("id", "--data-dir", dir);
            var second = await Run("id", "--data-dir", dir);
            Assert.That(first.Code, Is.EqualTo(0));
            Assert.That(first.Out.Trim(), Does.StartWith("12D3KooW"));
            Assert.That(second.Out, Is.EqualTo(first.Out));
            if (!OperatingSystem.IsWindows())
            {
                Assert.That(File.GetUnixFileMode(Path.Combine(dir, "identity.key")), Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite));
            }
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestCase("1048576", 1048576)]
    [TestCase("64MiB", 64L << 20)]
    [TestCase("1GB", 1_000_000_000)]
    [TestCase("2k", 2048)]
    public void ByteSize_ParsesCommonForms(string text, long expected)
    {
        Assert.That(ByteSize.TryParse(text, out var bytes), Is.True);
        Assert.That(bytes, Is.EqualTo(expected));
    }

    [TestCase("")]
    [TestCase("MiB")]
    [TestCase("-5")]
    [TestCase("5 parsecs")]
    [TestCase("99999999999999999999")]
    public void ByteSize_RejectsNonsense(string text) => Assert.That(ByteSize.TryParse(text, out _), Is.False);
}
