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
}
