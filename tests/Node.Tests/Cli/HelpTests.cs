using System.Text.RegularExpressions;
using Potluck.Node.Cli;

namespace Potluck.Node.Tests.Cli;

/// <summary>Every command explains itself with --help, and the README's "Using it" says the same.</summary>
public partial class HelpTests
{
    private static async Task<(int Code, string Out, string Err)> Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await Commands.RunAsync(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    /// <summary>The commands `potluck --help` lists, as typed ("swarm-key generate").</summary>
    private static async Task<List<string>> ListedCommandsAsync()
    {
        var (code, output, _) = await Run("--help");
        Assert.That(code, Is.EqualTo(0));
        var commands = SynopsisLine().Matches(output).Select(m => m.Groups["command"].Value).ToList();
        Assert.That(commands, Is.Not.Empty, output);
        return commands;
    }

    /// <summary>The options a command's --help lists, less --help itself.</summary>
    private static async Task<List<string>> ListedOptionsAsync(string command)
    {
        var (code, output, err) = await Run([.. command.Split(' '), "--help"]);
        Assert.That(code, Is.EqualTo(0), err);
        var options = output[output.IndexOf("Options:", StringComparison.Ordinal)..];
        return OptionRow().Matches(options).Select(m => m.Groups["option"].Value).Where(o => o != "--help").ToList();
    }

    [Test]
    public async Task Overview_ListsEveryCommand()
    {
        var commands = await ListedCommandsAsync();
        Assert.That(commands, Is.EquivalentTo(new[] { "run", "submit", "status", "ledger", "peers", "leases", "config list", "config get", "config set", "id", "ping", "perf", "holepunch", "sim", "swarm-key generate", "p2pd", "transport-interop", "help", "version" }));
    }

    [Test]
    public async Task EveryCommand_HasHelp_ThatDescribesEachOption()
    {
        foreach (var command in await ListedCommandsAsync())
        {
            var (code, output, _) = await Run([.. command.Split(' '), "--help"]);
            Assert.That(code, Is.EqualTo(0), command);
            Assert.That(output, Does.Contain($"potluck {command}").And.Contain("Options:").And.Contain("--help"), command);
            foreach (Match row in OptionRow().Matches(output[output.IndexOf("Options:", StringComparison.Ordinal)..]))
            {
                Assert.That(row.Groups["description"].Value.Trim(), Is.Not.Empty, $"potluck {command}: {row.Groups["option"].Value} has no description");
            }
        }
    }

    [Test]
    public async Task HelpCommand_IsTheSameAsTheHelpOption()
    {
        Assert.That(await Run("help"), Is.EqualTo(await Run("--help")));
        Assert.That(await Run("help", "submit"), Is.EqualTo(await Run("submit", "--help")));
        Assert.That(await Run("help", "swarm-key", "generate"), Is.EqualTo(await Run("swarm-key", "generate", "--help")));
        Assert.That(await Run(), Is.EqualTo(await Run("--help")));
        var (code, _, err) = await Run("help", "sumbit");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("unknown command 'sumbit'. Did you mean 'submit'?"));
    }

    [Test]
    public async Task Help_WinsOverTheRestOfTheLine()
    {
        var (code, output, err) = await Run("run", "--cores", "zero", "--lisen", "x", "--help");
        Assert.That((code, err), Is.EqualTo((0, "")));
        Assert.That(output, Does.Contain("--cores <n>"));
    }

    [Test]
    public async Task RunHelp_NamesTheSettingBehindEachFlag_AndWhereSettingsComeFrom()
    {
        var (_, output, _) = await Run("run", "--help");
        Assert.That(output, Does.Contain("compute:provider:cores").And.Contain("compute:provider:pricePerMegaFuel").And.Contain("discovery:mdns")
            .And.Contain("compute:provide").And.Contain("swarmKey"));
        Assert.That(output, Does.Contain("potluck.json").And.Contain("POTLUCK__COMPUTE__PROVIDER__CORES=2"));
    }

    [Test]
    public async Task Readme_UsingIt_ListsEveryCommandWithEveryOptionItsHelpLists()
    {
        var readme = await File.ReadAllTextAsync(Potluck.Tests.RepositoryRoot.Combine("README.md"));
        var start = readme.IndexOf("## Using it", StringComparison.Ordinal);
        Assert.That(start, Is.GreaterThanOrEqualTo(0), "README.md has a '## Using it' section");
        var end = readme.IndexOf("\n## ", start + 1, StringComparison.Ordinal);
        var section = end < 0 ? readme[start..] : readme[start..end];
        // The usage block: each entry starts with "potluck <command>", continued on indented lines.
        var block = section[(section.IndexOf("```sh", StringComparison.Ordinal) + 5)..];
        block = block[..block.IndexOf("```", StringComparison.Ordinal)];
        var entries = new Dictionary<string, string>();
        string? current = null;
        foreach (var line in block.Split('\n'))
        {
            if (line.StartsWith("potluck ", StringComparison.Ordinal))
            {
                current = line;
                entries[current] = line;
            }
            else if (current is not null && line.StartsWith(' '))
            {
                entries[current] += " " + line.Trim();
            }
        }

        var missing = new List<string>();
        foreach (var command in await ListedCommandsAsync())
        {
            var entry = entries.FirstOrDefault(e => e.Key == $"potluck {command}" || e.Key.StartsWith($"potluck {command} ", StringComparison.Ordinal)).Value;
            if (entry is null)
            {
                missing.Add($"'potluck {command}' has no line in the usage block");
                continue;
            }
            foreach (var option in await ListedOptionsAsync(command))
            {
                if (!Regex.IsMatch(entry, $@"(?<![\w-]){Regex.Escape(option)}(?![\w-])"))
                {
                    missing.Add($"'potluck {command}' lacks {option}");
                }
            }
        }
        Assert.That(missing, Is.Empty, "README.md's 'Using it' differs from --help (copy the Usage lines of `potluck --help`)");
        Assert.That(section, Does.Contain("potluck.json").And.Contain("POTLUCK__").And.Contain("compute:provider:cores"),
            "README.md's 'Using it' says where settings come from");
    }

    [GeneratedRegex(@"^  potluck (?<command>[a-z0-9-]+(?: [a-z0-9-]+)*?)(?= \[| <|$)", RegexOptions.Multiline)]
    private static partial Regex SynopsisLine();

    [GeneratedRegex(@"^  (?:-\w, )?(?<option>--[a-z][a-z0-9-]*)(?: <[^>]+>)?\s+(?<description>.*)$", RegexOptions.Multiline)]
    private static partial Regex OptionRow();
}
