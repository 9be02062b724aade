using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Multiformats;

namespace Potluck.Node.Cli;

/// <summary>
/// The kinds of value the commands take, each parsed when the line is parsed, with a message that names the option
/// and says what would be right (System.CommandLine's own conversion messages name CLR types). An option is given
/// once unless it is a list (<see cref="Addresses"/>, <see cref="Texts"/>): <c>--listen a --listen b</c>.
/// </summary>
internal static class CliOptions
{
    /// <summary>An option without a value: present or not.</summary>
    public static Option<bool> Flag(string name, string description) =>
        new(name) { Description = description, Arity = ArgumentArity.Zero };

    public static Option<string> Text(string name, string valueName, string description) =>
        new(name) { Description = description, HelpName = valueName };

    /// <summary>A repeatable option: each occurrence adds one value.</summary>
    public static Option<string[]> Texts(string name, string valueName, string description) =>
        new(name) { Description = description, HelpName = valueName, Arity = ArgumentArity.OneOrMore };

    /// <summary>A path, made absolute (relative to the working directory).</summary>
    public static Option<string> Path(string name, string valueName, string description) => new(name)
    {
        Description = description,
        HelpName = valueName,
        CustomParser = r => FullPath(r, name),
    };

    /// <summary>A file that must exist when the line is parsed.</summary>
    public static Option<string> ExistingFile(string name, string valueName, string description, Func<string, string> missing) => new(name)
    {
        Description = description,
        HelpName = valueName,
        CustomParser = r =>
        {
            var path = FullPath(r, name);
            if (path is not null && !File.Exists(path))
            {
                r.AddError(missing(r.Tokens[^1].Value));
                return null;
            }
            return path;
        },
    };

    public static Option<int?> Int(string name, string valueName, string description, int min, int max) => new(name)
    {
        Description = description,
        HelpName = valueName,
        CustomParser = r => Whole(r, name, min, max) is { } n ? (int)n : null,
    };

    public static Option<long?> Long(string name, string valueName, string description, long min, long max) => new(name)
    {
        Description = description,
        HelpName = valueName,
        CustomParser = r => Whole(r, name, min, max),
    };

    /// <summary>A decimal number in [<paramref name="min"/>, <paramref name="max"/>] (a share, a rate).</summary>
    public static Option<double?> Number(string name, string valueName, string description, double min, double max) => new(name)
    {
        Description = description,
        HelpName = valueName,
        CustomParser = r =>
        {
            var text = r.Tokens[^1].Value;
            if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var x) && x >= min && x <= max)
            {
                return x;
            }
            r.AddError(string.Create(CultureInfo.InvariantCulture, $"{name} '{text}' must be a number from {min} to {max}"));
            return null;
        },
    };

    /// <summary>A byte count as people type it: 1048576, 64KiB, 64MiB, 1GB (see <see cref="ByteSize"/>).</summary>
    public static Option<long?> Size(string name, string description) => new(name)
    {
        Description = description,
        HelpName = "bytes",
        CustomParser = r =>
        {
            var text = r.Tokens[^1].Value;
            if (ByteSize.TryParse(text, out var bytes))
            {
                return bytes;
            }
            r.AddError($"{name} '{text}' is not a size: use a byte count such as 1048576, 64MiB or 1GB");
            return null;
        },
    };

    /// <summary>Multiaddrs, repeatable; with <paramref name="needPeerId"/>, each must end in /p2p/&lt;peer id&gt;.</summary>
    public static Option<Multiaddr[]> Addresses(string name, string description, bool needPeerId) => new(name)
    {
        Description = description,
        HelpName = "multiaddr",
        Arity = ArgumentArity.OneOrMore,
        CustomParser = r =>
        {
            var addresses = new List<Multiaddr>();
            foreach (var token in r.Tokens)
            {
                if (ParseAddress(r, name, token.Value, needPeerId) is { } address)
                {
                    addresses.Add(address);
                }
            }
            return [.. addresses];
        },
    };

    /// <summary>A command's address argument (<c>potluck ping &lt;multiaddr&gt;</c>).</summary>
    public static Argument<Multiaddr> Address(string description) => new("multiaddr")
    {
        Description = description,
        CustomParser = r => ParseAddress(r, "address", r.Tokens[^1].Value, needPeerId: false),
    };

    public static Option<LogLevel?> LogLevel(LogLevel fallback) => new("--log-level")
    {
        Description = $"how much to log: trace, debug, information, warning, error, critical or none (default {fallback.ToString().ToLowerInvariant()})",
        HelpName = "level",
        CustomParser = r =>
        {
            var text = r.Tokens[^1].Value;
            if (Enum.GetNames<LogLevel>().FirstOrDefault(n => n.Equals(text, StringComparison.OrdinalIgnoreCase) || (text.Equals("info", StringComparison.OrdinalIgnoreCase) && n == "Information")) is { } known)
            {
                return Enum.Parse<LogLevel>(known);
            }
            r.AddError($"--log-level '{text}' is not a level: use trace, debug, information, warning, error, critical or none");
            return null;
        },
    };

    private static Multiaddr? ParseAddress(ArgumentResult r, string name, string text, bool needPeerId)
    {
        if (!Multiaddr.TryParse(text, out var address, out var error))
        {
            r.AddError($"{name} '{text}' is not a multiaddr: {error}");
            return null;
        }
        if (needPeerId && address.PeerId is null)
        {
            r.AddError($"{name} '{text}' needs the peer id at the end: it must end in /p2p/<peer id>, as in {text}/p2p/12D3KooW… " +
                "(copy a full address from the 'Listening on …' lines `potluck run` prints)");
            return null;
        }
        return address;
    }

    private static long? Whole(ArgumentResult r, string name, long min, long max)
    {
        var text = r.Tokens[^1].Value;
        if (long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n >= min && n <= max)
        {
            return n;
        }
        r.AddError(max == long.MaxValue
            ? $"{name} '{text}' must be a whole number, at least {min}"
            : $"{name} '{text}' must be a whole number from {min} to {max}");
        return null;
    }

    private static string? FullPath(ArgumentResult r, string name)
    {
        var text = r.Tokens[^1].Value;
        try
        {
            if (!string.IsNullOrWhiteSpace(text))
            {
                return System.IO.Path.GetFullPath(text);
            }
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
        }
        r.AddError($"{name} '{text}' is not a usable path");
        return null;
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
