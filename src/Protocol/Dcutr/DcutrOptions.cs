namespace Potluck.Protocol.Dcutr;

/// <summary>
/// Settings of DCUtR (<see cref="DcutrService"/>). Defaults follow go-libp2p's hole puncher and js-libp2p's
/// <c>@libp2p/dcutr</c> (3 attempts, 5 s to a unilateral upgrade, 4 KiB messages) where they have one.
/// </summary>
public sealed record DcutrOptions
{
    /// <summary>Synchronised connect attempts over one DCUtR stream before the upgrade counts as failed. Default 3 (the spec).</summary>
    public int Attempts { get; init; } = 3;

    /// <summary>One attempt (CONNECT, CONNECT, SYNC, the dials) must finish within this. Default 10 s.</summary>
    public TimeSpan AttemptTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>A direct dial to a peer's public listen address before any hole punch. Default 5 s.</summary>
    public TimeSpan UnilateralTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Largest HolePunch message read (the spec: implementations SHOULD refuse more than 4 KiB). Default 4096.</summary>
    public int MaxMessageSize { get; init; } = 4096;

    /// <summary>Addresses taken from a peer's CONNECT (the rest are ignored) and dialed at once. Default 8.</summary>
    public int MaxAddresses { get; init; } = 8;

    /// <summary>DCUtR streams a peer may open to us per <see cref="RateWindow"/>; over it they are reset unread. Default 6.</summary>
    public int MaxStreamsPerPeer { get; init; } = 6;

    /// <summary>The window of <see cref="MaxStreamsPerPeer"/>. Default 1 min.</summary>
    public TimeSpan RateWindow { get; init; } = TimeSpan.FromMinutes(1);

    /// <summary>
    /// Protocols (by prefix) whose open streams do not keep a relayed connection once a direct one exists: long-lived
    /// streams that are opened again on the direct connection (gossip, identify push, DCUtR itself). Streams of any other
    /// protocol (a lease's) finish on the relayed connection first. Default /meshsub/, /floodsub/, /ipfs/id/, /libp2p/dcutr.
    /// </summary>
    public IReadOnlyList<string> LongLivedProtocols { get; init; } = ["/meshsub/", "/floodsub/", "/ipfs/id/", "/libp2p/dcutr"];

    /// <summary>After a direct connection is made, the relayed one is closed once it carries no stream but long-lived ones, or after this at most. Default 2 min.</summary>
    public TimeSpan RelayedCloseGrace { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>
    /// Port prediction (<see cref="PortPrediction"/>) when one side's NAT keeps ports and the other's changes them: per
    /// round, SYNs the keeping side sends to random ports of the peer's IP, and fresh-port dials the changing side makes.
    /// 0 turns it off. Default 256 (about 64 % per round against a random-port NAT).
    /// </summary>
    public int PortPredictionSockets { get; init; } = 256;

    /// <summary>
    /// Port-prediction sockets the node opens per <see cref="RateWindow"/>, all peers together (a stranger claiming a
    /// changing mapping cannot make it SYN-flood an address beyond this). Default 4096.
    /// </summary>
    public int PortPredictionBudget { get; init; } = 4096;

    /// <summary>
    /// How long after a round's plain dials the port-prediction ones start, unless a direct connection exists by then
    /// (a full-cone peer lets the plain dial in at once, and would let every fresh-port dial in too). Default 1 s.
    /// </summary>
    public TimeSpan PortPredictionDelay { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>What is wrong with these settings, one line per key; empty when valid.</summary>
    public IReadOnlyList<string> Validate(string prefix = "dcutr")
    {
        var problems = new List<string>();
        string Key(string name) => $"'{prefix}:{char.ToLowerInvariant(name[0])}{name[1..]}'";
        void Range(string key, double value, double min, double max, string unit = "")
        {
            if (!(value >= min && value <= max))
            {
                problems.Add($"{Key(key)} is {value}{unit}; it must be between {min} and {max}{unit}");
            }
        }
        Range(nameof(Attempts), Attempts, 1, 10);
        Range(nameof(AttemptTimeout), AttemptTimeout.TotalSeconds, 0.1, 300, " s");
        Range(nameof(UnilateralTimeout), UnilateralTimeout.TotalSeconds, 0.1, 300, " s");
        Range(nameof(MaxMessageSize), MaxMessageSize, 256, 65536);
        Range(nameof(MaxAddresses), MaxAddresses, 1, 64);
        Range(nameof(MaxStreamsPerPeer), MaxStreamsPerPeer, 1, 1000);
        Range(nameof(RateWindow), RateWindow.TotalSeconds, 1, 86400, " s");
        Range(nameof(PortPredictionSockets), PortPredictionSockets, 0, 4096);
        Range(nameof(PortPredictionBudget), PortPredictionBudget, 0, 1_000_000);
        Range(nameof(PortPredictionDelay), PortPredictionDelay.TotalSeconds, 0, 60, " s");
        Range(nameof(RelayedCloseGrace), RelayedCloseGrace.TotalSeconds, 0, 86400, " s");
        return problems;
    }
}

/// <summary>How one hole punch ended, as the peer that drove it (the inbound side of the relayed connection) saw it.</summary>
/// <param name="Success">A direct connection to the peer exists.</param>
/// <param name="Attempts">Synchronised attempts made (0: the unilateral dial succeeded, or none could start).</param>
/// <param name="Elapsed">From the start of the upgrade to the direct connection (or to giving up).</param>
/// <param name="Rtt">The relayed round trip measured on the last attempt.</param>
/// <param name="Failure">Why it failed; null on success.</param>
public sealed record HolePunchResult(bool Success, int Attempts, TimeSpan Elapsed, TimeSpan? Rtt, string? Failure, bool Unilateral = false);
