using System.Globalization;

namespace Potluck.Node.Cli;

/// <summary>Bad command-line input: the message says what to fix.</summary>
public sealed class UsageException : Exception
{
    public UsageException(string message) : base(message) { }
}

/// <summary>An option a command accepts.</summary>
public sealed record OptionSpec(string Name, string? ValueName, string Help, bool Repeatable = false)
{
    public bool TakesValue => ValueName is not null;
}

/// <summary>A parsed command line: positional arguments and options by name.</summary>
public sealed class ParsedArgs
{
    private readonly Dictionary<string, List<string>> _values;

    public ParsedArgs(IReadOnlyList<string> positionals, Dictionary<string, List<string>> values, string command)
    {
        Positionals = positionals;
        _values = values;
        Command = command;
    }

    public string Command { get; }

    public IReadOnlyList<string> Positionals { get; }

    public bool Has(string name) => _values.ContainsKey(name);

    public string? Get(string name) => _values.TryGetValue(name, out var v) ? v[^1] : null;

    public IReadOnlyList<string> GetAll(string name) => _values.TryGetValue(name, out var v) ? v : [];

    public long GetSize(string name, long fallback)
    {
        var text = Get(name);
        if (text is null)
        {
            return fallback;
        }
        return ByteSize.TryParse(text, out var bytes)
            ? bytes
            : throw new UsageException($"--{name} '{text}' is not a size: use a byte count such as 1048576, 64MiB or 1GB");
    }

    public int GetInt(string name, int fallback, int min, int max)
    {
        var text = Get(name);
        if (text is null)
        {
            return fallback;
        }
        return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n >= min && n <= max
            ? n
            : throw new UsageException($"--{name} '{text}' must be a whole number from {min} to {max}");
    }
}

/// <summary>A small, strict parser: unknown options, missing values and stray arguments are errors.</summary>
public static class CommandLine
{
    public static ParsedArgs Parse(string command, IReadOnlyList<string> args, IReadOnlyList<OptionSpec> options, int minPositionals, int maxPositionals, string positionalHelp)
    {
        var positionals = new List<string>();
        var values = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        for (var i = 0; i < args.Count; i++)
        {
            var arg = args[i];
            if (arg == "--")
            {
                positionals.AddRange(args.Skip(i + 1));
                break;
            }
            if (arg.StartsWith("--", StringComparison.Ordinal) && arg.Length > 2)
            {
                var name = arg[2..];
                string? inline = null;
                var eq = name.IndexOf('=', StringComparison.Ordinal);
                if (eq >= 0)
                {
                    inline = name[(eq + 1)..];
                    name = name[..eq];
                }
                var spec = options.FirstOrDefault(o => o.Name == name)
                    ?? throw new UsageException($"unknown option '--{name}' for 'potluck {command}'. {Suggest(name, options)}Run 'potluck {command} --help' for the options.");
                string value;
                if (spec.TakesValue)
                {
                    if (inline is not null)
                    {
                        value = inline;
                    }
                    else if (i + 1 < args.Count && !(args[i + 1].StartsWith("--", StringComparison.Ordinal) && args[i + 1].Length > 2))
                    {
                        value = args[++i];
                    }
                    else
                    {
                        throw new UsageException($"--{name} needs a value: --{name} <{spec.ValueName}>");
                    }
                }
                else
                {
                    if (inline is not null)
                    {
                        throw new UsageException($"--{name} takes no value");
                    }
                    value = "true";
                }
                if (!values.TryGetValue(name, out var list))
                {
                    values[name] = list = [];
                }
                else if (!spec.Repeatable)
                {
                    throw new UsageException($"--{name} was given twice; give it once");
                }
                list.Add(value);
                continue;
            }
            positionals.Add(arg);
        }
        if (positionals.Count < minPositionals)
        {
            throw new UsageException($"'potluck {command}' needs {positionalHelp}");
        }
        if (positionals.Count > maxPositionals)
        {
            throw new UsageException($"unexpected argument '{positionals[maxPositionals]}' for 'potluck {command}'" + (maxPositionals == 0 ? " (it takes no arguments)" : $" (it takes {positionalHelp})"));
        }
        return new ParsedArgs(positionals, values, command);
    }

    private static string Suggest(string name, IReadOnlyList<OptionSpec> options)
    {
        var best = options.MinBy(o => Distance(o.Name, name));
        return best is not null && Distance(best.Name, name) <= 2 ? $"Did you mean '--{best.Name}'? " : "";
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

/// <summary>Byte sizes as people type them: 1048576, 64KiB, 64MiB, 1GiB, 10MB, 1GB.</summary>
public static class ByteSize
{
    public static bool TryParse(string text, out long bytes)
    {
        bytes = 0;
        var t = text.Trim();
        var i = 0;
        while (i < t.Length && char.IsAsciiDigit(t[i]))
        {
            i++;
        }
        if (i == 0 || !long.TryParse(t.AsSpan(0, i), NumberStyles.None, CultureInfo.InvariantCulture, out var n))
        {
            return false;
        }
        long multiplier = t[i..].Trim().ToUpperInvariant() switch
        {
            "" or "B" => 1,
            "KB" => 1000,
            "KIB" or "K" => 1024,
            "MB" => 1000_000,
            "MIB" or "M" => 1024 * 1024,
            "GB" => 1000_000_000,
            "GIB" or "G" => 1024L * 1024 * 1024,
            _ => -1,
        };
        if (multiplier < 0 || n > long.MaxValue / multiplier)
        {
            return false;
        }
        bytes = n * multiplier;
        return true;
    }

    public static string Format(double bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (1L << 30):0.##} GiB",
        >= 1 << 20 => $"{bytes / (1 << 20):0.##} MiB",
        >= 1 << 10 => $"{bytes / (1 << 10):0.##} KiB",
        _ => $"{bytes:0} B",
    };
}
