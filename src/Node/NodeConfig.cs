using System.Text.Json;
using Potluck.Protocol.Multiformats;

namespace Potluck.Node;

/// <summary>How a node is set up. Every field has an embedded default so `potluck run` needs no flags.</summary>
public sealed class NodeConfig
{
    /// <summary>The default TCP port: 4100 on all IPv4 interfaces.</summary>
    public const int DefaultPort = 4100;

    /// <summary>Where the identity key and node state live. Default: $POTLUCK_DATA_DIR or ~/.local/share/potluck.</summary>
    public string DataDir { get; set; } = DefaultDataDir();

    public List<Multiaddr> Listen { get; set; } = [Multiaddr.Parse($"/ip4/0.0.0.0/tcp/{DefaultPort}")];

    /// <summary>A swarm.key file: when set, the node joins that private network only (libp2p pnet).</summary>
    public string? SwarmKeyPath { get; set; }

    /// <summary>Peers to dial and bootstrap the DHT through (addresses ending in /p2p/…). Default none.</summary>
    public List<Multiaddr> Bootstrap { get; set; } = [];

    /// <summary>Find peers on the local link by mDNS. Default on.</summary>
    public bool Mdns { get; set; } = true;

    public static string DefaultDataDir()
    {
        var env = Environment.GetEnvironmentVariable("POTLUCK_DATA_DIR");
        if (!string.IsNullOrWhiteSpace(env))
        {
            return env;
        }
        var baseDir = Environment.GetEnvironmentVariable("XDG_DATA_HOME");
        if (string.IsNullOrWhiteSpace(baseDir))
        {
            baseDir = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".local", "share");
        }
        return Path.Combine(baseDir, "potluck");
    }

    public string IdentityKeyPath => Path.Combine(DataDir, "identity.key");

    /// <summary>The largest config file read.</summary>
    public const int MaxConfigFileSize = 64 * 1024;

    /// <summary>
    /// Applies an optional JSON config file, e.g. <c>{"listen": ["/ip4/0.0.0.0/tcp/4100"], "bootstrap": ["/ip4/…/p2p/…"],
    /// "mdns": false, "swarm_key": "swarm.key"}</c>. Every key is optional; unknown keys are errors (a typo must not pass silently).
    /// </summary>
    /// <exception cref="FormatException">The file is not such a config; the message says what is wrong.</exception>
    public void ApplyFile(string text, string source)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(text, new JsonDocumentOptions
            {
                CommentHandling = JsonCommentHandling.Skip,
                AllowTrailingCommas = true,
                MaxDepth = 8,
            });
        }
        catch (JsonException e)
        {
            throw new FormatException($"{source} is not valid JSON: {e.Message}");
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new FormatException($"{source} must hold a JSON object");
            }
            foreach (var property in document.RootElement.EnumerateObject())
            {
                switch (property.Name)
                {
                    case "listen":
                        Listen = Addresses(property.Value, source, "listen");
                        break;
                    case "bootstrap":
                        Bootstrap = Addresses(property.Value, source, "bootstrap");
                        break;
                    case "mdns":
                        Mdns = property.Value.ValueKind switch
                        {
                            JsonValueKind.True => true,
                            JsonValueKind.False => false,
                            _ => throw new FormatException($"{source}: \"mdns\" must be true or false"),
                        };
                        break;
                    case "swarm_key":
                        SwarmKeyPath = property.Value.ValueKind == JsonValueKind.String
                            ? property.Value.GetString()
                            : throw new FormatException($"{source}: \"swarm_key\" must be a file path");
                        break;
                    default:
                        throw new FormatException($"{source}: unknown key \"{property.Name}\" (known: listen, bootstrap, mdns, swarm_key)");
                }
            }
        }
    }

    private static List<Multiaddr> Addresses(JsonElement value, string source, string key)
    {
        if (value.ValueKind != JsonValueKind.Array)
        {
            throw new FormatException($"{source}: \"{key}\" must be a list of multiaddrs");
        }
        var list = new List<Multiaddr>();
        foreach (var item in value.EnumerateArray())
        {
            var text = item.ValueKind == JsonValueKind.String ? item.GetString() : null;
            if (!Multiaddr.TryParse(text, out var address, out var error))
            {
                throw new FormatException($"{source}: \"{key}\" entry {item} is not a multiaddr: {error}");
            }
            list.Add(address);
        }
        return list;
    }
}
