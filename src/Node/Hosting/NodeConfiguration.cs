using Microsoft.Extensions.Configuration;
using Potluck.Scheduler.Advertising;

namespace Potluck.Node.Hosting;

/// <summary>
/// Where a node's configuration comes from, lowest precedence first: the embedded defaults of a home node, then
/// <c>potluck.json</c> in the data directory, then environment variables (<c>POTLUCK__</c> followed by the key path
/// with <c>__</c> between sections, e.g. <c>POTLUCK__COMPUTE__PROVIDER__CORES=2</c>), then command-line flags. Each
/// overrides the last. The data directory itself comes from a flag, <c>POTLUCK_DATA_DIR</c>, or the XDG default,
/// since <c>potluck.json</c> lives in it.
/// </summary>
public static class NodeConfiguration
{
    /// <summary>The configuration file in the data directory.</summary>
    public const string FileName = "potluck.json";

    /// <summary>The node's Ed25519 key in the data directory.</summary>
    public const string IdentityFileName = "identity.key";

    /// <summary>Environment variables with this prefix are settings (the prefix is removed; <c>__</c> separates sections).</summary>
    public const string EnvironmentPrefix = "POTLUCK__";

    /// <summary>The default TCP port: 4100 on all IPv4 interfaces.</summary>
    public const int DefaultPort = 4100;

    /// <summary>The largest <c>potluck.json</c> read.</summary>
    public const int MaxFileBytes = 64 * 1024;

    /// <summary>The data directory: $POTLUCK_DATA_DIR, else $XDG_DATA_HOME/potluck, else ~/.local/share/potluck.</summary>
    /// <exception cref="NodeStartException">No home directory can be found to put it in.</exception>
    public static string DefaultDataDir()
    {
        var env = Environment.GetEnvironmentVariable("POTLUCK_DATA_DIR");
        if (!string.IsNullOrWhiteSpace(env))
        {
            return Path.GetFullPath(env);
        }
        var baseDir = Environment.GetEnvironmentVariable("XDG_DATA_HOME");
        if (string.IsNullOrWhiteSpace(baseDir))
        {
            var home = Environment.GetEnvironmentVariable("HOME");
            if (string.IsNullOrWhiteSpace(home))
            {
                home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
            }
            if (string.IsNullOrWhiteSpace(home) || !Path.IsPathRooted(home))
            {
                throw new NodeStartException("no home directory ($HOME is not set): give the data directory with --data-dir <path> or POTLUCK_DATA_DIR");
            }
            baseDir = Path.Combine(home, ".local", "share");
        }
        return Path.Combine(baseDir, "potluck");
    }

    /// <summary>What `potluck run` does with no configuration at all: listen on 4100, mDNS on, compute on and providing, in the ads topic.</summary>
    public static IReadOnlyDictionary<string, string?> HomeNodeDefaults { get; } = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase)
    {
        ["listen:0"] = $"/ip4/0.0.0.0/tcp/{DefaultPort}",
        ["discovery:mdns"] = "true",
        ["compute:enabled"] = "true",
        ["compute:provide"] = "true",
        ["topics:0"] = AdvertisementProtocol.Topic,
        ["preferences:onlyWhenIdle"] = "true",
        ["preferences:notOnBattery"] = "true",
    };

    /// <summary>
    /// The configuration of a node on <paramref name="dataDir"/>: <paramref name="defaults"/>, then its
    /// <c>potluck.json</c> (when present; or <paramref name="file"/> instead, which must exist), then <c>POTLUCK__…</c>
    /// environment variables, then <paramref name="flags"/>.
    /// </summary>
    /// <exception cref="NodeStartException">The file is missing (when given), unreadable, too large or not JSON.</exception>
    public static ConfigurationManager Create(string dataDir, IReadOnlyDictionary<string, string?> defaults, IEnumerable<KeyValuePair<string, string?>> flags,
        string? file = null)
    {
        var configuration = new ConfigurationManager();
        configuration.AddInMemoryCollection(defaults);
        if (file is not null)
        {
            file = Path.GetFullPath(file);
            if (!File.Exists(file))
            {
                throw new NodeStartException($"--config: no file at '{file}'");
            }
        }
        file ??= Path.Combine(dataDir, FileName);
        if (File.Exists(file))
        {
            long length;
            try
            {
                length = new FileInfo(file).Length;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new NodeStartException($"cannot read {file}: {e.Message}", e);
            }
            if (length > MaxFileBytes)
            {
                throw new NodeStartException($"{file} is {length} bytes; a configuration file is at most {MaxFileBytes} bytes");
            }
            try
            {
                configuration.AddJsonFile(file, optional: true, reloadOnChange: false);
            }
            catch (Exception e) when (e is InvalidDataException or FormatException or IOException or UnauthorizedAccessException
                                          or System.Text.Json.JsonException)
            {
                var reason = e.InnerException?.Message ?? e.Message;
                throw new NodeStartException($"{file} is not a valid configuration file: {reason}", e);
            }
        }
        configuration.AddEnvironmentVariables(EnvironmentPrefix);
        configuration.AddInMemoryCollection(flags);
        configuration["dataDir"] = dataDir;
        return configuration;
    }

    /// <summary>
    /// A home node's cores when no source sets <c>compute:provider:cores</c>: its <c>preferences:cpuSharePercent</c>
    /// (default 50) of the machine's cores (cgroup quota included), at least one.
    /// </summary>
    public static void ApplyDefaultCores(IConfiguration configuration)
    {
        if (configuration["compute:provider:cores"] is not null)
        {
            return;
        }
        var share = double.TryParse(configuration["preferences:cpuSharePercent"], System.Globalization.NumberStyles.Float,
            System.Globalization.CultureInfo.InvariantCulture, out var s) && s is > 0 and <= 100 ? s : new Home.PreferencesOptions().CpuSharePercent;
        configuration["compute:provider:cores"] = PotluckOptionsValidator.DefaultCores(share).ToString(System.Globalization.CultureInfo.InvariantCulture);
    }
}
