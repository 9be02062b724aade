using System.CommandLine;
using System.CommandLine.Help;
using System.Text;
using Potluck.Node.Hosting;

namespace Potluck.Node.Cli;

/// <summary>
/// `potluck --help`: one synopsis per command, written from the same options the parser uses (so it cannot drift
/// from them), each with what the command does; then where settings come from.
/// </summary>
internal static class Usage
{
    /// <summary>Synopses wrap before this column.</summary>
    public const int Width = 100;

    public static string Root(Command root)
    {
        var text = new StringBuilder();
        text.AppendLine($"potluck: {root.Description}");
        text.AppendLine();
        text.AppendLine("Usage:");
        foreach (var (command, lines) in Synopses(root))
        {
            foreach (var line in lines)
            {
                text.AppendLine("  " + line);
            }
            foreach (var line in Wrap(command.Description ?? "", Width - 6))
            {
                text.AppendLine("      " + line);
            }
        }
        text.AppendLine();
        text.AppendLine($"Run '{root.Name} <command> --help' for a command's options. Exit codes: 0 done, 1 failed, 2 bad usage.");
        text.AppendLine();
        foreach (var line in Wrap(Configuration, Width))
        {
            text.AppendLine(line);
        }
        return text.ToString();
    }

    /// <summary>Where the data directory and the settings of `potluck run` come from.</summary>
    public static string Configuration =>
        "Data directory: --data-dir, else $POTLUCK_DATA_DIR, else $XDG_DATA_HOME/potluck, else ~/.local/share/potluck. " +
        $"Settings of 'potluck run': {NodeConfiguration.FileName} in the data directory (or --config <file>), then " +
        "POTLUCK__SECTION__KEY environment variables, then flags; each overrides the last. Keys are camelCase paths: " +
        "compute:provider:cores is {\"compute\": {\"provider\": {\"cores\": 2}}} in the file and POTLUCK__COMPUTE__PROVIDER__CORES=2 " +
        "in the environment.";

    /// <summary>Each runnable command under <paramref name="root"/> with its synopsis lines ("potluck run [--listen &lt;multiaddr&gt;]... …").</summary>
    public static IEnumerable<(Command Command, IReadOnlyList<string> Lines)> Synopses(Command root)
    {
        foreach (var command in root.Subcommands.Where(c => !c.Hidden))
        {
            if (command.Action is null)
            {
                foreach (var child in Synopses(command))
                {
                    yield return child;
                }
                continue;
            }
            yield return (command, Synopsis(command));
        }
    }

    private static IReadOnlyList<string> Synopsis(Command command)
    {
        var head = CommandLine.PathOf(command);
        var parts = new List<string>();
        var trailing = new List<string>();
        foreach (var argument in command.Arguments.Where(a => !a.Hidden))
        {
            var name = $"<{argument.HelpName ?? argument.Name}>";
            if (argument.Arity.MaximumNumberOfValues > 1)
            {
                // Arguments that may start with '-' go after "--".
                trailing.Add(command.Options.Count > 0 ? $"[-- {name}...]" : $"[{name}...]");
            }
            else
            {
                parts.Add(argument.Arity.MinimumNumberOfValues == 0 ? $"[{name}]" : name);
            }
        }
        foreach (var option in command.Options.Where(o => !o.Hidden && o is not HelpOption))
        {
            var usage = option.Arity.MaximumNumberOfValues == 0 ? option.Name : $"{option.Name} <{option.HelpName}>";
            parts.Add(option.Arity.MaximumNumberOfValues > 1 ? $"[{usage}]..." : $"[{usage}]");
        }
        parts.AddRange(trailing);

        var lines = new List<string>();
        var indent = new string(' ', head.Length + 1);
        var current = new StringBuilder(head);
        foreach (var part in parts)
        {
            if (current.Length + 1 + part.Length > Width - 2 && current.Length > indent.Length)
            {
                lines.Add(current.ToString());
                current.Clear().Append(indent).Append(part);
            }
            else
            {
                current.Append(' ').Append(part);
            }
        }
        lines.Add(current.ToString());
        return lines;
    }

    private static IEnumerable<string> Wrap(string text, int width)
    {
        var line = new StringBuilder();
        foreach (var word in text.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            if (line.Length > 0 && line.Length + 1 + word.Length > width)
            {
                yield return line.ToString();
                line.Clear();
            }
            line.Append(line.Length == 0 ? "" : " ").Append(word);
        }
        if (line.Length > 0)
        {
            yield return line.ToString();
        }
    }
}
