using Potluck.Node.Cli;
using Potluck.Node.Hosting;

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
        Assert.That(err, Does.Contain("unknown command 'runn'").And.Contain("run, submit, status, ledger, peers, leases, config, id, ping, perf"));
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

    /// <summary>`potluck run` with these flags, parsed (and checked to parse).</summary>
    private static System.CommandLine.ParseResult RunArgs(params string[] args)
    {
        var result = Commands.Parse(["run", .. args]);
        Assert.That(result.Errors.Select(e => e.Message), Is.Empty);
        return result;
    }

    /// <summary>A fresh data directory for one test, removed afterwards.</summary>
    private sealed class DataDir : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("potluck-cli-").FullName;

        public void WriteConfig(string json) => File.WriteAllText(System.IO.Path.Combine(Path, NodeConfiguration.FileName), json);

        public void Dispose() => Directory.Delete(Path, true);
    }

    [Test]
    public void Run_Defaults_ListenOn4100_MdnsOn_ComputeOnAndProviding_NoBootstrap()
    {
        using var dir = new DataDir();
        var options = RunCommand.ResolveRunOptions(RunArgs("--data-dir", dir.Path));

        Assert.That(options.Discovery.Mdns, Is.True);
        Assert.That(options.Bootstrap, Is.Empty);
        Assert.That(options.Listen.Select(a => a.ToString()), Is.EqualTo(new[] { "/ip4/0.0.0.0/tcp/4100" }));
        Assert.That(options.Compute.Enabled && options.Compute.Provide, Is.True);
        Assert.That(options.DataDir, Is.EqualTo(dir.Path));
    }

    [Test]
    public void Run_BootstrapIsRepeatable_AndNoMdnsTurnsMdnsOff()
    {
        using var dir = new DataDir();
        const string a = "/ip4/127.0.0.1/tcp/4100/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp";
        const string b = "/ip4/127.0.0.1/tcp/4101/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp";
        var options = RunCommand.ResolveRunOptions(RunArgs("--data-dir", dir.Path, "--bootstrap", a, "--bootstrap", b, "--no-mdns"));
        Assert.That(options.Bootstrap.Select(x => x.ToString()), Is.EqualTo(new[] { a, b }));
        Assert.That(options.Discovery.Mdns, Is.False);
    }

    [Test]
    public async Task Run_BootstrapWithoutPeerId_SaysToAddIt()
    {
        var (code, _, err) = await Run("run", "--bootstrap", "/ip4/127.0.0.1/tcp/4100");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("--bootstrap '/ip4/127.0.0.1/tcp/4100' needs the peer id").And.Contain("/p2p/"));
    }

    [Test]
    public async Task Run_NoMdnsTakesNoValue()
    {
        var (code, _, err) = await Run("run", "--no-mdns=yes");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("--no-mdns takes no value"));
    }

    [Test]
    public void Settings_FileThenEnvironmentThenFlags_EachOverridesTheLast()
    {
        using var dir = new DataDir();
        dir.WriteConfig("""
            // comments are allowed
            {
              "listen": ["/ip4/127.0.0.1/tcp/0"],
              "bootstrap": ["/ip4/10.0.0.1/tcp/4100/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp"],
              "discovery": { "mdns": false },
              "compute": { "provider": { "cores": 1, "pricePerMegaFuel": 7, "memoryBytes": 123456789 } },
            }
            """);
        var fromFile = RunCommand.ResolveRunOptions(RunArgs("--data-dir", dir.Path));
        Assert.That(fromFile.Listen.Select(a => a.ToString()), Is.EqualTo(new[] { "/ip4/127.0.0.1/tcp/0" }));
        Assert.That(fromFile.Bootstrap, Has.Count.EqualTo(1));
        Assert.That(fromFile.Discovery.Mdns, Is.False);
        Assert.That(fromFile.Compute.Provider.Cores, Is.EqualTo(1), "cores can be set in the file");
        Assert.That(fromFile.Compute.Provider.PricePerMegaFuel, Is.EqualTo(7));

        Environment.SetEnvironmentVariable("POTLUCK__COMPUTE__PROVIDER__PRICEPERMEGAFUEL", "8");
        Environment.SetEnvironmentVariable("POTLUCK__COMPUTE__PROVIDER__MEMORYBYTES", "987654321");
        try
        {
            var fromEnvironment = RunCommand.ResolveRunOptions(RunArgs("--data-dir", dir.Path));
            Assert.That(fromEnvironment.Compute.Provider.PricePerMegaFuel, Is.EqualTo(8), "the environment overrides the file");
            Assert.That(fromEnvironment.Compute.Provider.MemoryBytes, Is.EqualTo(987654321));

            var withFlags = RunCommand.ResolveRunOptions(RunArgs("--data-dir", dir.Path, "--price", "9", "--listen", "/ip4/127.0.0.1/tcp/5000",
                "--bootstrap", "/ip4/10.0.0.2/tcp/4100/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp"));
            Assert.That(withFlags.Compute.Provider.PricePerMegaFuel, Is.EqualTo(9), "flags override the environment");
            Assert.That(withFlags.Compute.Provider.MemoryBytes, Is.EqualTo(987654321), "what no flag sets stays");
            Assert.That(withFlags.Listen.Select(a => a.ToString()), Is.EqualTo(new[] { "/ip4/127.0.0.1/tcp/5000" }));
            Assert.That(withFlags.Bootstrap.Select(a => a.ToString()), Is.EqualTo(new[] { "/ip4/10.0.0.2/tcp/4100/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp" }),
                "a list given by flags replaces the file's");
        }
        finally
        {
            Environment.SetEnvironmentVariable("POTLUCK__COMPUTE__PROVIDER__PRICEPERMEGAFUEL", null);
            Environment.SetEnvironmentVariable("POTLUCK__COMPUTE__PROVIDER__MEMORYBYTES", null);
        }
    }

    [TestCase("{\"discovery\": {\"mdsn\": true}}", "'discovery:mdsn' is not a setting: did you mean 'discovery:mdns'?")]
    [TestCase("{\"cors\": 2}", "'cors' is not a setting")]
    [TestCase("{\"listen\": [\"/ip4/1.2.3/tcp/1\"]}", "'listen:0' is '/ip4/1.2.3/tcp/1', which is not a multiaddr")]
    [TestCase("{\"compute\": {\"provider\": {\"cores\": \"two\"}}}", "'compute:provider:cores' is 'two', which is not a whole number")]
    [TestCase("{\"compute\": {\"provider\": {\"cores\": 0}}}", "'compute:provider:cores' is 0; it must be at least 1")]
    [TestCase("{\"bootstrap\": [\"/ip4/1.2.3.4/tcp/1\"]}", "'bootstrap:0' is /ip4/1.2.3.4/tcp/1; it needs the peer id at the end")]
    [TestCase("{\"host\": {\"dialTimeout\": \"-00:00:01\"}}", "'host:dialTimeout' is -00:00:01; it must be a positive duration")]
    [TestCase("{\"host\": {\"resources\": {\"maxMuxerMemoryPerAddress\": 1000}}}", "'host:resources:maxMuxerMemoryPerAddress' is 1000; it must be at least 262144")]
    [TestCase("{\"yamux\": {\"freeReceiveBuffer\": -1}}", "'yamux:freeReceiveBuffer' is -1; it must be 0 to 'yamux:maxConnectionMemory' (33554432)")]
    [TestCase("{\"gossip\": {\"protocols\": [\"/meshsub/9.9.9\"]}}", "'gossip:protocols' must list one or more of /meshsub/1.2.0, /meshsub/1.1.0, /meshsub/1.0.0 and /floodsub/1.0.0")]
    public void BadSettings_AreRefusedAtStart_WithTheKeyAndWhatWouldBeRight(string json, string expected)
    {
        using var dir = new DataDir();
        dir.WriteConfig(json);

        var e = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() => RunCommand.ResolveRunOptions(RunArgs("--data-dir", dir.Path)))!;

        Assert.That(e.Failures, Has.Some.Contains(expected));
    }

    [TestCase("[1", "is not a valid configuration file")]
    [TestCase("{", "is not a valid configuration file")]
    public void BrokenConfigFile_SaysWhichFileAndWhy(string text, string expected)
    {
        using var dir = new DataDir();
        dir.WriteConfig(text);
        var e = Assert.Throws<NodeStartException>(() => RunCommand.ResolveRunOptions(RunArgs("--data-dir", dir.Path)))!;
        Assert.That(e.Message, Does.Contain(NodeConfiguration.FileName).And.Contain(expected));
    }

    [Test]
    public async Task Run_WithABadSetting_ExitsWithTheMessage_NoStackTrace()
    {
        using var dir = new DataDir();
        dir.WriteConfig("{\"compute\": {\"provider\": {\"cores\": 0}}}");
        var (code, _, err) = await Run("run", "--data-dir", dir.Path, "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.Contain("'compute:provider:cores' is 0; it must be at least 1"));
        Assert.That(err, Does.Not.Contain("   at "), "no stack trace");
    }

    [Test]
    public async Task Run_MoreCoresThanTheMachine_IsRefused()
    {
        using var dir = new DataDir();
        var (code, _, err) = await Run("run", "--data-dir", dir.Path, "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns",
            "--cores", (Environment.ProcessorCount + 1).ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.Contain($"this machine lets the node use {Environment.ProcessorCount}"));
    }

    [Test]
    public async Task Usage_MentionsPeersAndTheDiscoveryFlags()
    {
        var (_, output, _) = await Run();
        Assert.That(output, Does.Contain("potluck peers").And.Contain("--bootstrap").And.Contain("--no-mdns"));
        var (code, help, _) = await Run("run", "--help");
        Assert.That(code, Is.EqualTo(0));
        Assert.That(help, Does.Contain("--bootstrap <multiaddr>").And.Contain("--no-mdns").And.Contain("--config <file>"));
    }

    [Test]
    public async Task Peers_TakesNoArguments()
    {
        var (code, _, err) = await Run("peers", "extra");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("unexpected argument 'extra'"));
    }

    [Test]
    public void PeersTable_WithNoPeers_SaysSo() =>
        Assert.That(Commands.FormatPeers(new Potluck.Node.Control.PeersResult([])), Does.Contain("No connected peers."));

    [Test]
    public void PeersTable_CleansControlCharactersFromRemoteStrings()
    {
        var table = Commands.FormatPeers(new Potluck.Node.Control.PeersResult(
            [new Potluck.Node.Control.PeerRow("12D3KooWx", "inbound", "/ip4/1.2.3.4/tcp/1", null, "evil\u001b[2Jagent", ["/a", "/b"])]));
        Assert.That(table, Does.Not.Contain("\u001b"));
        Assert.That(table, Does.Contain("evil?[2Jagent").And.Contain("inbound").And.Contain(" - "));
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

    [Test]
    public async Task Submit_MissingModule_SaysWhatToGive()
    {
        var (code, _, err) = await Run("submit", "/nonexistent/task.wasm");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("no module at '/nonexistent/task.wasm'"));
    }

    [Test]
    public async Task Submit_NotAWasmFile_SaysHowToBuildOne()
    {
        var file = Path.GetTempFileName();
        try
        {
            await File.WriteAllTextAsync(file, "#!/bin/sh\necho hi\n");
            var (code, _, err) = await Run("submit", file);
            Assert.That(code, Is.EqualTo(2));
            Assert.That(err, Does.Contain("is not a WebAssembly binary").And.Contain("wasm32-wasi"));
        }
        finally
        {
            File.Delete(file);
        }
    }

    [TestCase("--verify-rate", "0", "never 0")]
    [TestCase("--verify-rate", "1.5", "at most 1")]
    [TestCase("--replicas", "0", "from 1 to 16")]
    [TestCase("--fuel", "-3", "whole number")]
    [TestCase("--bootstrap", "/ip4/127.0.0.1/tcp/1", "must end in /p2p/")]
    public async Task Submit_BadOption_SaysWhatToFix(string option, string value, string expected)
    {
        var module = Path.GetTempFileName();
        try
        {
            await File.WriteAllBytesAsync(module, [0, (byte)'a', (byte)'s', (byte)'m', 1, 0, 0, 0]);
            var (code, _, err) = await Run("submit", module, option, value);
            Assert.That(code, Is.EqualTo(2));
            Assert.That(err, Does.Contain(expected));
        }
        finally
        {
            File.Delete(module);
        }
    }

    [Test]
    public async Task Ledger_WithNoLedgerYet_SaysHowOneIsCreated()
    {
        var (code, _, err) = await Run("ledger", "--data-dir", Path.Combine(Path.GetTempPath(), "potluck-none-" + Guid.NewGuid().ToString("N")));
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.Contain("no ledger in").And.Contain("potluck run"));
    }

    [Test]
    public async Task UnknownCommand_SuggestsTheNearestOne()
    {
        var (code, _, err) = await Run("peer");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("unknown command 'peer'. Did you mean 'peers'?"));
    }

    [Test]
    public async Task OptionGivenTwice_SaysToGiveItOnce()
    {
        var (code, _, err) = await Run("id", "--data-dir", "/tmp/a", "--data-dir", "/tmp/b");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("--data-dir was given 2 times; give it once"));
    }

    [Test]
    public async Task UsageError_EndsWithWhereToLook_AndNoStackTrace()
    {
        var (code, output, err) = await Run("ledger", "--count", "many");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(output, Is.Empty);
        Assert.That(err, Does.Contain("--count 'many' must be a whole number from 1 to 10000").And.Contain("Run 'potluck ledger --help'"));
        Assert.That(err, Does.Not.Contain("   at "));
    }

    [Test]
    public async Task EveryBadValue_IsReported_NotJustTheFirst()
    {
        var (code, _, err) = await Run("run", "--cores", "0", "--price", "cheap", "--log-level", "loud");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("--cores '0' must be a whole number from 1 to 4096")
            .And.Contain("--price 'cheap' must be a whole number")
            .And.Contain("--log-level 'loud' is not a level"));
    }

    [Test]
    public void Run_ListenIsRepeatable()
    {
        using var dir = new DataDir();
        var options = RunCommand.ResolveRunOptions(RunArgs("--data-dir", dir.Path, "--listen", "/ip4/127.0.0.1/tcp/0", "--listen", "/ip6/::1/tcp/0"));
        Assert.That(options.Listen.Select(a => a.ToString()), Is.EqualTo(new[] { "/ip4/127.0.0.1/tcp/0", "/ip6/::1/tcp/0" }));
    }

    [Test]
    public async Task Run_ListenTakesOneAddressEach()
    {
        var (code, _, err) = await Run("run", "--listen", "/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/tcp/1");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("unexpected argument '/ip4/127.0.0.1/tcp/1' for 'potluck run'"));
    }

    [Test]
    public void Run_EveryFlag_SetsTheSameSettingsAsTheFileDoes()
    {
        using var keyDir = new DataDir();
        var swarmKey = System.IO.Path.Combine(keyDir.Path, "swarm.key");
        File.WriteAllText(swarmKey, Potluck.Protocol.Pnet.SwarmKey.Generate().ToFileText());
        const string peer = "/ip4/10.0.0.2/tcp/4100/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp";

        using var byFlags = new DataDir();
        var fromFlags = RunCommand.ResolveRunOptions(RunArgs("--data-dir", byFlags.Path, "--listen", "/ip4/127.0.0.1/tcp/5000", "--bootstrap", peer,
            "--no-mdns", "--no-provide", "--cores", "1", "--price", "7", "--swarm-key", swarmKey));

        using var byFile = new DataDir();
        byFile.WriteConfig($$"""
            {
              "listen": ["/ip4/127.0.0.1/tcp/5000"],
              "bootstrap": ["{{peer}}"],
              "discovery": { "mdns": false },
              "compute": { "provide": false, "provider": { "cores": 1, "pricePerMegaFuel": 7 } },
              "swarmKey": "{{swarmKey}}"
            }
            """);
        var fromFile = RunCommand.ResolveRunOptions(RunArgs("--data-dir", byFile.Path));

        Assert.That(fromFlags.Listen.Select(a => a.ToString()), Is.EqualTo(fromFile.Listen.Select(a => a.ToString())));
        Assert.That(fromFlags.Bootstrap.Select(a => a.ToString()), Is.EqualTo(fromFile.Bootstrap.Select(a => a.ToString())));
        Assert.That(fromFlags.Discovery, Is.EqualTo(fromFile.Discovery));
        Assert.That((fromFlags.Compute.Provide, fromFlags.Compute.Provider), Is.EqualTo((fromFile.Compute.Provide, fromFile.Compute.Provider)));
        Assert.That(fromFlags.SwarmKey, Is.EqualTo(fromFile.SwarmKey));
        Assert.That(fromFlags.Discovery.Mdns || fromFlags.Compute.Provide, Is.False, "the flags did take effect");
    }

    [Test]
    public void Run_ConfigFlag_ReadsThatFileInsteadOfTheDataDirs()
    {
        using var dir = new DataDir();
        dir.WriteConfig("{\"compute\": {\"provider\": {\"pricePerMegaFuel\": 3}}}");
        using var elsewhere = new DataDir();
        var file = System.IO.Path.Combine(elsewhere.Path, "other.json");
        File.WriteAllText(file, "{\"compute\": {\"provider\": {\"pricePerMegaFuel\": 4}}}");

        Assert.That(RunCommand.ResolveRunOptions(RunArgs("--data-dir", dir.Path, "--config", file)).Compute.Provider.PricePerMegaFuel, Is.EqualTo(4));
    }

    [Test]
    public void Submit_ArgumentsAfterDoubleDash_GoToTheTask_EvenWhenTheyLookLikeOptions()
    {
        var result = Commands.Parse("submit", "task.wasm", "--arg", "first", "--fuel", "5", "--", "--fuel", "-n", "3");
        Assert.That(result.Errors.Select(e => e.Message), Is.Empty);
        var submit = (ComputeCommands.SubmitCommand)result.CommandResult.Command;
        Assert.That(result.GetValue(submit.Module), Is.EqualTo("task.wasm"));
        Assert.That(result.GetValue(submit.Arg), Is.EqualTo(new[] { "first" }));
        Assert.That(result.GetValue(submit.TaskArgs), Is.EqualTo(new[] { "--fuel", "-n", "3" }));
        Assert.That(result.GetValue(submit.Fuel), Is.EqualTo(5));
    }

    [Test]
    public async Task Submit_AnAtSign_IsAFileName_NotAResponseFile()
    {
        var (code, _, err) = await Run("submit", "@task.wasm");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("no module at '@task.wasm'"));
    }

    [TestCase("--upload", "0", "--download", "0", "nothing to measure")]
    [TestCase("--upload", "1PiB", "--download", "1", "--upload '1PiB' is not a size")]
    public async Task Perf_BadSizes_SayWhatIsWrong(string o1, string v1, string o2, string v2, string expected)
    {
        var (code, _, err) = await Run("perf", "/ip4/127.0.0.1/tcp/1", o1, v1, o2, v2);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain(expected));
    }

    [Test]
    public async Task SwarmKey_UnknownAction_ListsTheActions()
    {
        var (code, _, err) = await Run("swarm-key", "make");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("unknown command 'make' for 'potluck swarm-key'").And.Contain("generate"));
        (code, _, err) = await Run("swarm-key");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("'potluck swarm-key' needs a command: 'potluck swarm-key generate'"));
    }

    [Test]
    public async Task SwarmKeyGenerate_PrintsAKeyThatParses()
    {
        var (code, output, _) = await Run("swarm-key", "generate");
        Assert.That(code, Is.EqualTo(0));
        Assert.That(Potluck.Protocol.Pnet.SwarmKey.TryParse(output, out _, out var error), Is.True, error);
    }

    [Test]
    public async Task Version_IsTheAgentVersion_ByFlagAndByCommand()
    {
        var expected = new Potluck.Protocol.Identify.IdentifyOptions().AgentVersion + Environment.NewLine;
        Assert.That(await Run("--version"), Is.EqualTo((0, expected, "")));
        Assert.That(await Run("version"), Is.EqualTo((0, expected, "")));
    }
}
