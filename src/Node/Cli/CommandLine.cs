using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Parsing;

namespace Potluck.Node.Cli;

/// <summary>Bad command-line input found while a command runs (a module that is not WebAssembly): exit 2, with a message that says what to fix.</summary>
public sealed class UsageException : Exception
{
    public UsageException(string message) : base(message) { }
}

/// <summary>What a command line runs against: where its output goes, and where the data directory is when no flag says (a seam for tests).</summary>
internal sealed record CliContext(TextWriter Out, TextWriter Error, Func<string> DefaultDataDir);

/// <summary>A `potluck` command: its options as properties, its work in <see cref="ExecuteAsync"/>.</summary>
internal abstract class PotluckCommand : Command
{
    protected PotluckCommand(string name, string description, CliContext context) : base(name, description)
    {
        Context = context;
        SetAction(ExecuteAsync);
    }

    protected CliContext Context { get; }

    protected TextWriter Out => Context.Out;

    protected TextWriter Error => Context.Error;

    /// <summary>
    /// True when the command stops on Ctrl-C and SIGTERM by itself (`run`, through the generic host's console lifetime);
    /// otherwise the token given to <see cref="ExecuteAsync"/> is cancelled by the first of them, and a second ends the process.
    /// </summary>
    public virtual bool HandlesTermination => false;

    /// <summary>Printed after the options by `potluck &lt;command&gt; --help`.</summary>
    public virtual string? HelpNotes => null;

    /// <summary>Runs the command; returns the exit code. Throws <see cref="UsageException"/> for bad input found late (exit 2).</summary>
    protected abstract Task<int> ExecuteAsync(ParseResult result, CancellationToken ct);
}

/// <summary>Turns what System.CommandLine found wrong with a line into messages that say what to fix.</summary>
internal static class CommandLine
{
    /// <summary>The command as typed: "potluck swarm-key generate".</summary>
    public static string PathOf(Command command)
    {
        var names = new List<string>();
        for (Command? c = command; c is not null; c = c.Parents.OfType<Command>().FirstOrDefault())
        {
            names.Add(c.Name);
        }
        names.Reverse();
        return string.Join(" ", names);
    }

    /// <summary>The line's problems, one message each (empty when it is fine).</summary>
    public static IReadOnlyList<string> Problems(ParseResult result, IReadOnlyList<string> args)
    {
        var command = result.CommandResult.Command;
        var path = PathOf(command);
        var problems = new List<string>();
        // --no-mdns=yes: the parser splits off "yes" as a stray argument; say what is actually wrong.
        foreach (var arg in args.TakeWhile(a => a != "--"))
        {
            var eq = arg.IndexOf('=', StringComparison.Ordinal);
            if (arg.StartsWith('-') && eq > 1 && FindOption(command, arg[..eq]) is { Arity.MaximumNumberOfValues: 0 })
            {
                problems.Add($"{arg[..eq]} takes no value");
            }
        }
        if (problems.Count == 0 && result.UnmatchedTokens.Count > 0)
        {
            problems.Add(Unmatched(command, path, result.UnmatchedTokens[0]));
        }
        foreach (var error in result.Errors)
        {
            if (result.UnmatchedTokens.Count > 0 && error.SymbolResult is CommandResult)
            {
                continue; // the parser's "Unrecognized command or argument", said above with a suggestion
            }
            problems.Add(Describe(error, path));
        }
        return problems.Distinct().ToList();
    }

    /// <summary>Where to look next, after a usage error.</summary>
    public static string HelpHint(Command command) => $"Run '{PathOf(command)} --help' for its usage.";

    private static string Unmatched(Command command, string path, string token)
    {
        if (token.StartsWith('-') && token.Length > 1)
        {
            var names = OptionsOf(command).Where(o => o is not HelpOption).SelectMany(o => o.Aliases.Prepend(o.Name));
            return $"unknown option '{token}' for '{path}'.{Suggest(token, names)}";
        }
        if (command.Subcommands.Count > 0)
        {
            var names = command.Subcommands.Where(c => !c.Hidden).Select(c => c.Name).ToList();
            var where = command.Parents.Any() ? $" for '{path}'" : "";
            return $"unknown command '{token}'{where}.{Suggest(token, names)} Commands: {string.Join(", ", names)}.";
        }
        var takes = command.Arguments.Count == 0
            ? "it takes no arguments"
            : "it takes " + string.Join(" and ", command.Arguments.Select(a => a.Description));
        return $"unexpected argument '{token}' for '{path}' ({takes})";
    }

    private static string Describe(ParseError error, string path)
    {
        switch (error.SymbolResult)
        {
            case OptionResult o when o.Tokens.Count == 0 && o.Option.Arity.MinimumNumberOfValues > 0:
                var name = o.IdentifierToken?.Value ?? o.Option.Name;
                return $"{name} needs a value: {name} <{o.Option.HelpName ?? "value"}>";
            case OptionResult o when o.Tokens.Count > o.Option.Arity.MaximumNumberOfValues:
                return $"{o.IdentifierToken?.Value ?? o.Option.Name} was given {o.Tokens.Count} times; give it once";
            case ArgumentResult a when a.Tokens.Count < a.Argument.Arity.MinimumNumberOfValues:
                return $"'{path}' needs {a.Argument.Description}";
            case CommandResult c when c.Command.Subcommands.Count > 0 && c.Command.Action is null:
                return $"'{path}' needs a command: {string.Join(", ", c.Command.Subcommands.Select(s => $"'{PathOf(s)}'"))}";
            default:
                return error.Message;
        }
    }

    /// <summary>The options a command accepts: its own and those its ancestors share with it (--help).</summary>
    private static IEnumerable<Option> OptionsOf(Command command)
    {
        foreach (var option in command.Options)
        {
            yield return option;
        }
        for (var parent = command.Parents.OfType<Command>().FirstOrDefault(); parent is not null; parent = parent.Parents.OfType<Command>().FirstOrDefault())
        {
            foreach (var option in parent.Options.Where(o => o.Recursive))
            {
                yield return option;
            }
        }
    }

    private static Option? FindOption(Command command, string name) =>
        OptionsOf(command).FirstOrDefault(o => o.Name == name || o.Aliases.Contains(name));

    /// <summary>" Did you mean '--listen'?" when one name is within two edits of what was typed, else "".</summary>
    internal static string Suggest(string typed, IEnumerable<string> names)
    {
        var bare = typed.TrimStart('-');
        var best = names.MinBy(n => Distance(n.TrimStart('-'), bare));
        return best is not null && Distance(best.TrimStart('-'), bare) <= 2 ? $" Did you mean '{best}'?" : "";
    }

    private static int Distance(string a, string b)
    {
        var d = new int[a.Length + 1, b.Length + 1];
        for (var i = 0; i <= a.Length; i++)
        {
            d[i, 0] = i;
        }
        for (var j = 0; j <= b.Length; j++)
        {
            d[0, j] = j;
        }
        for (var i = 1; i <= a.Length; i++)
        {
            for (var j = 1; j <= b.Length; j++)
            {
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            }
        }
        return d[a.Length, b.Length];
    }
}
