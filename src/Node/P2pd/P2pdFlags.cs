using System.Globalization;
using Potluck.Protocol.Multiformats;

namespace Potluck.Node.P2pd;

/// <summary>Which pubsub router a daemon runs (go-libp2p-daemon's <c>-pubsubRouter</c>).</summary>
internal enum PubsubRouter
{
    Gossipsub,
    Floodsub,
}

/// <summary>What a <c>potluck p2pd</c> command line asked for, after <see cref="P2pdFlags.Parse"/> accepted it.</summary>
internal sealed record P2pdSettings
{
    /// <summary>The control socket (<c>-listen</c>). go's default is a unix socket; ours is TCP on loopback with a free port.</summary>
    public Multiaddr Control { get; init; } = Multiaddr.Parse("/ip4/127.0.0.1/tcp/0");

    /// <summary>Listen addresses of the libp2p host (<c>-hostAddrs</c>); empty with <c>-noListenAddrs</c>.</summary>
    public IReadOnlyList<Multiaddr> HostAddrs { get; init; } = [Multiaddr.Parse("/ip4/0.0.0.0/tcp/0")];

    /// <summary>The identity key file (<c>-id</c>): a libp2p <c>PrivateKey</c> protobuf of any type. Null: a fresh Ed25519 key.</summary>
    public string? IdentityFile { get; init; }

    /// <summary><c>-dht</c>, <c>-dhtServer</c> or <c>-dhtClient</c>: the Kademlia DHT on <c>/ipfs/kad/1.0.0</c>.</summary>
    public bool Dht { get; init; }

    /// <summary><c>-pubsub</c>.</summary>
    public bool Pubsub { get; init; }

    public PubsubRouter Router { get; init; } = PubsubRouter.Gossipsub;

    public TimeSpan? GossipsubHeartbeatInterval { get; init; }

    public TimeSpan? GossipsubHeartbeatInitialDelay { get; init; }

    /// <summary><c>-echo</c> (default true, as go's): <c>/echo/1.0.0</c> answered by the daemon itself.</summary>
    public bool Echo { get; init; } = true;

    /// <summary><c>-relay</c>: circuit relay v2 (hop only with <see cref="RelayHop"/>).</summary>
    public bool Relay { get; init; }

    /// <summary><c>-relayHop</c>: serve hop for others.</summary>
    public bool RelayHop { get; init; }

    /// <summary><c>-q</c>: print nothing but the control socket line.</summary>
    public bool Quiet { get; init; }
}

/// <summary>
/// go-libp2p-daemon's command line (p2pd/main.go), parsed as Go's <c>flag</c> package does: <c>-name</c> or
/// <c>--name</c>, <c>-name=value</c>, <c>-name value</c> for non-boolean flags, booleans as 1/t/true/0/f/false in any
/// of Go's spellings, durations as Go writes them (<c>1s</c>, <c>500ms</c>). Every flag p2pd has is known: those whose
/// feature Potluck has are honoured, the others are accepted at the value that leaves the feature off and refused,
/// with a message that says so, at any other, so a harness never gets a daemon that silently differs from what it
/// asked for. Unknown flags and stray arguments are refused too.
/// </summary>
internal static class P2pdFlags
{
    private enum Kind { Bool, Text, Int, Duration }

    private sealed record Flag(string Name, Kind Kind, string Help, Func<P2pdSettings, string, (P2pdSettings? Settings, string? Error)> Apply);

    private static (P2pdSettings?, string?) Ok(P2pdSettings s) => (s, null);

    private static (P2pdSettings?, string?) No(string error) => (null, error);

    /// <summary>A flag of a feature Potluck does not have: fine while it leaves that feature off.</summary>
    private static Flag Off(string name, Kind kind, string help, string why) => new(name, kind, help, (s, v) =>
        kind switch
        {
            Kind.Bool when !ParseBool(v) => Ok(s),
            Kind.Text when v.Length == 0 => Ok(s),
            _ => No($"-{name}={v}: {why}"),
        });

    /// <summary>A number or duration that only tunes a feature Potluck does not have: checked for form, then ignored.</summary>
    private static Flag Ignored(string name, Kind kind, string help) => new(name, kind, help, (s, _) => Ok(s));

    private static readonly Flag[] All =
    [
        new("listen", Kind.Text, "control socket multiaddr (TCP: /ip4/127.0.0.1/tcp/0; unix sockets are not supported)", (s, v) =>
        {
            if (!Multiaddr.TryParse(v, out var addr, out var error))
            {
                return No($"-listen={v}: not a multiaddr ({error}); give a TCP address such as /ip4/127.0.0.1/tcp/0");
            }
            return addr.ToTcpEndPoint() is null || addr.Components.Count != 2
                ? No($"-listen={v}: the control socket must be TCP, such as /ip4/127.0.0.1/tcp/0")
                : Ok(s with { Control = addr });
        }),
        new("q", Kind.Bool, "be quiet", (s, v) => Ok(s with { Quiet = ParseBool(v) })),
        new("id", Kind.Text, "identity key file: a libp2p PrivateKey protobuf (Ed25519, RSA or secp256k1)", (s, v) =>
            v.Length == 0 ? Ok(s with { IdentityFile = null }) : File.Exists(v) ? Ok(s with { IdentityFile = v }) : No($"-id={v}: no such file")),
        Off("b", Kind.Bool, "bootstrap (refused: a p2pd daemon starts with no peers)", "bootstrapping to public peers is not available; connect peers with CONNECT"),
        Off("bootstrapPeers", Kind.Text, "bootstrap peers (refused)", "bootstrapping is not available; connect peers with CONNECT"),
        new("dht", Kind.Bool, "the Kademlia DHT (/ipfs/kad/1.0.0)", (s, v) => Ok(s with { Dht = s.Dht || ParseBool(v) })),
        new("dhtClient", Kind.Bool, "the Kademlia DHT; client or server follows whether the host listens", (s, v) => Ok(s with { Dht = s.Dht || ParseBool(v) })),
        new("dhtServer", Kind.Bool, "the Kademlia DHT in server mode", (s, v) => Ok(s with { Dht = s.Dht || ParseBool(v) })),
        Off("connManager", Kind.Bool, "connection manager (refused)", "the connection manager's watermarks are not configurable here"),
        Ignored("connLo", Kind.Int, "connection manager low water mark (ignored)"),
        Ignored("connHi", Kind.Int, "connection manager high water mark (ignored)"),
        Ignored("connGrace", Kind.Duration, "connection manager grace period (ignored)"),
        Off("natPortMap", Kind.Bool, "NAT port mapping (refused)", "NAT port mapping is not available"),
        new("pubsub", Kind.Bool, "pubsub", (s, v) => Ok(s with { Pubsub = ParseBool(v) })),
        new("pubsubRouter", Kind.Text, "gossipsub (default) or floodsub", (s, v) => v switch
        {
            "gossipsub" => Ok(s with { Router = PubsubRouter.Gossipsub }),
            "floodsub" => Ok(s with { Router = PubsubRouter.Floodsub }),
            _ => No($"-pubsubRouter={v}: the routers are gossipsub and floodsub"),
        }),
        new("pubsubSign", Kind.Bool, "sign pubsub messages (always on)", (s, v) =>
            ParseBool(v) ? Ok(s) : No($"-pubsubSign={v}: Potluck always signs pubsub messages (StrictSign)")),
        new("pubsubSignStrict", Kind.Bool, "require signed pubsub messages (always on)", (s, v) =>
            ParseBool(v) ? Ok(s) : No($"-pubsubSignStrict={v}: Potluck always requires signed pubsub messages (StrictSign)")),
        new("gossipsubHeartbeatInterval", Kind.Duration, "gossipsub heartbeat interval (0: the default, 1s)", (s, v) =>
            ParseDuration(v) is not { } d || d < TimeSpan.Zero ? No($"-gossipsubHeartbeatInterval={v}: must not be negative")
            : Ok(d == TimeSpan.Zero ? s : s with { GossipsubHeartbeatInterval = d })),
        new("gossipsubHeartbeatInitialDelay", Kind.Duration, "gossipsub initial heartbeat delay (0: the default, 100ms)", (s, v) =>
            ParseDuration(v) is { } d && d >= TimeSpan.Zero ? Ok(d == TimeSpan.Zero ? s : s with { GossipsubHeartbeatInitialDelay = d }) : No($"-gossipsubHeartbeatInitialDelay={v}: must not be negative")),
        new("relay", Kind.Bool, "circuit relay v2: dial and accept relayed connections (always on), and with -relayHop serve hop", (s, v) => Ok(s with { Relay = ParseBool(v) })),
        Off("relayActive", Kind.Bool, "circuit relay active mode (refused)", "circuit relay v1's active mode does not exist in v2"),
        new("relayHop", Kind.Bool, "circuit relay v2: serve hop (as the relay)", (s, v) => Ok(s with { RelayHop = ParseBool(v) })),
        Ignored("relayHopLimit", Kind.Int, "circuit relay hop limit (ignored)"),
        Off("relayDiscovery", Kind.Bool, "circuit relay discovery (refused)", "circuit relay is not available yet"),
        Off("autoRelay", Kind.Bool, "autorelay (refused)", "circuit relay is not available yet"),
        Off("autonat", Kind.Bool, "AutoNAT service (refused)", "AutoNAT is not available"),
        new("hostAddrs", Kind.Text, "comma-separated multiaddrs the host listens on (TCP)", (s, v) =>
        {
            var addrs = new List<Multiaddr>();
            foreach (var part in v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                if (!Multiaddr.TryParse(part, out var addr, out var error))
                {
                    return No($"-hostAddrs: '{part}' is not a multiaddr ({error})");
                }
                if (addr.ToTcpEndPoint() is null)
                {
                    return No($"-hostAddrs: '{part}' is not a TCP address; Potluck listens on TCP only");
                }
                addrs.Add(addr);
            }
            return Ok(s with { HostAddrs = addrs });
        }),
        Off("announceAddrs", Kind.Text, "addresses to announce (refused)", "announcing other addresses than the listen addresses is not available"),
        new("noListenAddrs", Kind.Bool, "listen on no address", (s, v) => ParseBool(v) ? Ok(s with { HostAddrs = [] }) : Ok(s)),
        Off("metricsAddr", Kind.Text, "metrics address (refused)", "a metrics endpoint is not available"),
        Off("f", Kind.Text, "JSON configuration file (refused)", "JSON configuration is not read; use the flags"),
        Off("i", Kind.Bool, "JSON configuration on stdin (refused)", "JSON configuration is not read; use the flags"),
        Off("pprof", Kind.Bool, "pprof handler (refused)", "pprof is Go's"),
        Ignored("pprofPort", Kind.Int, "pprof port (ignored)"),
        new("noise", Kind.Bool, "Noise security (always on)", (s, v) =>
            ParseBool(v) ? Ok(s) : No($"-noise={v}: Noise is the security protocol Potluck has; it cannot be turned off")),
        Off("tls", Kind.Bool, "TLS 1.3 security (refused: not available yet)", "TLS 1.3 is not available yet; this daemon secures connections with Noise"),
        Off("plaintext", Kind.Bool, "plaintext security (refused)", "plaintext connections are not offered; this daemon secures connections with Noise"),
        Off("forceReachabilityPublic", Kind.Bool, "AutoNAT reachability (refused)", "AutoNAT is not available"),
        Off("forceReachabilityPrivate", Kind.Bool, "AutoNAT reachability (refused)", "AutoNAT is not available"),
        new("muxer", Kind.Text, "stream muxer: yamux", (s, v) =>
            v == "yamux" ? Ok(s) : No($"-muxer={v}: Potluck multiplexes with yamux only (mplex is not available)")),
        new("echo", Kind.Bool, "answer /echo/1.0.0 (default true)", (s, v) => Ok(s with { Echo = ParseBool(v) })),
    ];

    /// <summary>One line per flag, for <c>potluck p2pd --help</c>.</summary>
    public static IEnumerable<string> Describe() =>
        All.Select(f => $"-{f.Name}{f.Kind switch { Kind.Bool => "", Kind.Int => "=<n>", Kind.Duration => "=<duration>", _ => "=<value>" }}: {f.Help}");

    /// <summary>The settings of a p2pd command line, or the reason it is refused.</summary>
    public static (P2pdSettings? Settings, string? Error) Parse(IReadOnlyList<string> args)
    {
        var settings = new P2pdSettings();
        for (var i = 0; i < args.Count; i++)
        {
            var arg = args[i];
            if (arg == "--")
            {
                return i + 1 < args.Count ? (null, $"unexpected argument '{args[i + 1]}': p2pd takes flags only") : (settings, null);
            }
            if (arg.Length < 2 || arg[0] != '-' || arg == "-")
            {
                return (null, $"unexpected argument '{arg}': p2pd takes flags only, such as -listen=/ip4/127.0.0.1/tcp/0");
            }
            var body = arg.StartsWith("--", StringComparison.Ordinal) ? arg[2..] : arg[1..];
            var eq = body.IndexOf('=', StringComparison.Ordinal);
            var name = eq < 0 ? body : body[..eq];
            var flag = All.FirstOrDefault(f => f.Name == name);
            if (flag is null)
            {
                var suggestion = Cli.CommandLine.Suggest(name, All.Select(f => "-" + f.Name));
                return (null, $"unknown flag -{name}.{suggestion}");
            }
            string value;
            if (eq >= 0)
            {
                value = body[(eq + 1)..];
            }
            else if (flag.Kind == Kind.Bool)
            {
                value = "true";
            }
            else if (i + 1 < args.Count)
            {
                value = args[++i];
            }
            else
            {
                return (null, $"-{name} needs a value");
            }
            var formError = flag.Kind switch
            {
                Kind.Bool when !TryParseBool(value, out _) => $"-{name}={value}: not a boolean (true or false)",
                Kind.Int when !int.TryParse(value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out _) => $"-{name}={value}: not a whole number",
                Kind.Duration when ParseDuration(value) is null => $"-{name}={value}: not a duration (such as 1s or 500ms)",
                _ => null,
            };
            if (formError is not null)
            {
                return (null, formError);
            }
            var (next, error) = flag.Apply(settings, value);
            if (next is null)
            {
                return (null, error);
            }
            settings = next;
        }
        return (settings, null);
    }

    private static bool ParseBool(string value) => TryParseBool(value, out var b) && b;

    /// <summary>Go's strconv.ParseBool.</summary>
    private static bool TryParseBool(string value, out bool result)
    {
        switch (value)
        {
            case "1" or "t" or "T" or "true" or "TRUE" or "True":
                result = true;
                return true;
            case "0" or "f" or "F" or "false" or "FALSE" or "False":
                result = false;
                return true;
            default:
                result = false;
                return false;
        }
    }

    /// <summary>Go's time.ParseDuration for what a command line holds: a sequence of decimal numbers with units ns, us, µs, ms, s, m, h; "0" alone.</summary>
    internal static TimeSpan? ParseDuration(string value)
    {
        if (value == "0")
        {
            return TimeSpan.Zero;
        }
        var s = value.AsSpan();
        var negative = false;
        if (s.Length > 0 && s[0] is '-' or '+')
        {
            negative = s[0] == '-';
            s = s[1..];
        }
        if (s.Length == 0 || s.Length > 64)
        {
            return null;
        }
        double totalMs = 0;
        while (s.Length > 0)
        {
            var n = 0;
            while (n < s.Length && (char.IsAsciiDigit(s[n]) || s[n] == '.'))
            {
                n++;
            }
            if (n == 0 || !double.TryParse(s[..n], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var number))
            {
                return null;
            }
            s = s[n..];
            var u = 0;
            while (u < s.Length && !char.IsAsciiDigit(s[u]) && s[u] != '.')
            {
                u++;
            }
            double? unitMs = s[..u] switch
            {
                "ns" => 1e-6,
                "us" or "µs" => 1e-3,
                "ms" => 1,
                "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => null,
            };
            if (unitMs is null)
            {
                return null;
            }
            totalMs += number * unitMs.Value;
            s = s[u..];
        }
        if (totalMs > TimeSpan.FromDays(365).TotalMilliseconds)
        {
            return null;
        }
        return TimeSpan.FromMilliseconds(negative ? -totalMs : totalMs);
    }
}
