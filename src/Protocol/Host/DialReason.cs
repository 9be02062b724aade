namespace Potluck.Protocol.Host;

/// <summary>
/// Why this node dials: an ambient reason (an <see cref="AsyncLocal{T}"/>, so it flows into the host's dial without a
/// parameter on every <c>ConnectAsync</c>/<c>NewStreamAsync</c>) that the host counts in <c>potluck.dials{reason}</c>
/// when it starts a new dial (not when a caller joins a dial already under way or finds a connection open). The reasons
/// are a fixed set (<see cref="All"/>); a dial made with none set counts as <see cref="Other"/>.
/// <code>using (DialReason.Use(DialReason.Lease)) { await host.NewStreamAsync(provider, protocols, ct); }</code>
/// </summary>
public static class DialReason
{
    /// <summary>The DHT's join: the lookup for our own key when the node bootstraps.</summary>
    public const string DhtBootstrap = "dht-bootstrap";
    /// <summary>A lookup for a random key in a bucket (at bootstrap and by maintenance).</summary>
    public const string DhtRefresh = "dht-refresh";
    /// <summary>Any other DHT lookup (find peer, providers, values, closest peers).</summary>
    public const string DhtLookup = "dht-lookup";
    /// <summary>A liveness probe of a full bucket's oldest peer.</summary>
    public const string DhtProbe = "dht-probe";
    /// <summary>Storing at the closest peers (PUT_VALUE, ADD_PROVIDER) after a lookup found them.</summary>
    public const string DhtStore = "dht-store";
    /// <summary>The configured bootstrap list.</summary>
    public const string Bootstrap = "bootstrap";
    /// <summary>Peers remembered from an earlier run, or found by mDNS.</summary>
    public const string Discovery = "discovery";
    /// <summary>Gossipsub: peer exchange (PX) on a prune, and redials of a mesh peer whose connection broke.</summary>
    public const string Gossip = "gossip";
    /// <summary>A lease: the requester reaching a provider.</summary>
    public const string Lease = "lease";
    /// <summary>Receipts, payments and their chain (trust chain, history, recovery).</summary>
    public const string Payment = "payment";
    /// <summary>Relays: reservations and circuits.</summary>
    public const string Relay = "relay";
    /// <summary>AutoNAT's dial requests.</summary>
    public const string AutoNat = "autonat";
    /// <summary>No reason given (a command's own dial, ping, perf, p2pd, …).</summary>
    public const string Other = "other";

    /// <summary>Every reason, in a fixed order (the tag values of <c>potluck.dials</c>).</summary>
    public static IReadOnlyList<string> All { get; } =
        [DhtBootstrap, DhtRefresh, DhtLookup, DhtProbe, DhtStore, Bootstrap, Discovery, Gossip, Lease, Payment, Relay, AutoNat, Other];

    private static readonly AsyncLocal<string?> CurrentReason = new();

    /// <summary>The reason in effect here, or <see cref="Other"/>.</summary>
    public static string Current => CurrentReason.Value ?? Other;

    /// <summary>Index of <paramref name="reason"/> in <see cref="All"/> (<see cref="Other"/>'s for anything else).</summary>
    public static int IndexOf(string reason)
    {
        for (var i = 0; i < All.Count; i++)
        {
            if (ReferenceEquals(All[i], reason) || string.Equals(All[i], reason, StringComparison.Ordinal))
            {
                return i;
            }
        }
        return All.Count - 1;
    }

    /// <summary>Sets <paramref name="reason"/> (one of the constants) for what runs in this flow until the scope is disposed.</summary>
    public static Scope Use(string reason)
    {
        var previous = CurrentReason.Value;
        CurrentReason.Value = reason;
        return new Scope(previous);
    }

    /// <summary>Puts back the reason that was in effect before <see cref="Use"/>.</summary>
    public readonly struct Scope(string? previous) : IDisposable
    {
        public void Dispose() => CurrentReason.Value = previous;
    }
}
