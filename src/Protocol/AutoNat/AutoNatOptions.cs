namespace Potluck.Protocol.AutoNat;

/// <summary>
/// Settings of AutoNAT v2 (https://github.com/libp2p/specs/blob/master/autonat/autonat-v2.md): the server's bounds on
/// what a stranger can make it do (rates, addresses per request, the dial data it asks before dialling another IP),
/// and the client's rules for deciding an address's reachability (how many distinct servers must agree).
/// </summary>
public sealed record AutoNatOptions
{
    /// <summary>Answer other nodes' dial requests (within the limits below). Default true.</summary>
    public bool Server { get; init; } = true;

    /// <summary>Ask servers about our own addresses and track reachability per address. Default true.</summary>
    public bool Client { get; init; } = true;

    /// <summary>Dial requests served per minute from everyone together; over it, E_REQUEST_REJECTED. Default 60 (go-libp2p's).</summary>
    public int ServerRequestsPerMinute { get; init; } = 60;

    /// <summary>Dial requests served per minute from one peer. Default 12 (go-libp2p's).</summary>
    public int ServerRequestsPerPeerPerMinute { get; init; } = 12;

    /// <summary>Requests per minute that may dial an IP other than the requester's (each after its dial data). Default 12.</summary>
    public int ServerDialDataRequestsPerMinute { get; init; } = 12;

    /// <summary>Dial-backs in progress at once. Default 8.</summary>
    public int ServerMaxConcurrentDials { get; init; } = 8;

    /// <summary>Bytes a requester must send before we dial an IP other than its own (the spec: 30k–100k). Default 40,000.</summary>
    public int DialDataBytes { get; init; } = 40_000;

    /// <summary>Addresses read from one dial request; a longer list is a violation. Default 16.</summary>
    public int MaxAddressesPerRequest { get; init; } = 16;

    /// <summary>Largest message read on either AutoNAT stream. Default 8 KiB (a dial-data chunk is at most 4,096 bytes).</summary>
    public int MaxMessageSize { get; init; } = 8 * 1024;

    /// <summary>A whole dial request (dial data and the dial-back included) must finish within this. Default 60 s.</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>The dial-back (dial, handshake, nonce, answer) must finish within this. Default 15 s.</summary>
    public TimeSpan DialBackTimeout { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>
    /// Test and dial private, loopback and link-local addresses (RFC 1918 and the like). Off by default, as the spec
    /// asks; on for labs and tests on one machine.
    /// </summary>
    public bool AllowPrivateAddresses { get; init; }

    /// <summary>Distinct servers that must agree before an address is called public or private. Default 2.</summary>
    public int Confirmations { get; init; } = 2;

    /// <summary>Results kept per address (the latest from each server, the most recent servers only). Default 5.</summary>
    public int ResultsPerAddress { get; init; } = 5;

    /// <summary>Distinct peers that must report an observed address before we test it. Default 2.</summary>
    public int ObservedAddressThreshold { get; init; } = 2;

    /// <summary>Observed addresses remembered (each with the peers that reported it); the oldest go first. Default 16.</summary>
    public int MaxObservedAddresses { get; init; } = 16;

    /// <summary>How often the client looks for an address to test while any is undecided. Default 15 s.</summary>
    public TimeSpan ProbeInterval { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>A decided address is tested again after this. Default 30 min.</summary>
    public TimeSpan RecheckInterval { get; init; } = TimeSpan.FromMinutes(30);

    /// <summary>The most dial data the client agrees to send for one request (more is refused by resetting). Default 100,000.</summary>
    public int MaxDialDataToSend { get; init; } = 100_000;

    /// <summary>What is wrong with these settings, one line per key; empty when valid.</summary>
    public IReadOnlyList<string> Validate(string prefix = "autonat")
    {
        var problems = new List<string>();
        string Key(string name) => $"'{prefix}:{char.ToLowerInvariant(name[0])}{name[1..]}'";
        void AtLeast(string key, double value, double min)
        {
            if (value < min)
            {
                problems.Add($"{Key(key)} is {value}; it must be at least {min}");
            }
        }
        AtLeast(nameof(ServerRequestsPerMinute), ServerRequestsPerMinute, 1);
        AtLeast(nameof(ServerRequestsPerPeerPerMinute), ServerRequestsPerPeerPerMinute, 1);
        AtLeast(nameof(ServerDialDataRequestsPerMinute), ServerDialDataRequestsPerMinute, 0);
        AtLeast(nameof(ServerMaxConcurrentDials), ServerMaxConcurrentDials, 1);
        AtLeast(nameof(MaxAddressesPerRequest), MaxAddressesPerRequest, 1);
        AtLeast(nameof(Confirmations), Confirmations, 1);
        AtLeast(nameof(ResultsPerAddress), ResultsPerAddress, Math.Max(1, Confirmations));
        AtLeast(nameof(ObservedAddressThreshold), ObservedAddressThreshold, 1);
        AtLeast(nameof(MaxObservedAddresses), MaxObservedAddresses, 1);
        AtLeast(nameof(RequestTimeout), RequestTimeout.TotalSeconds, 1);
        AtLeast(nameof(DialBackTimeout), DialBackTimeout.TotalSeconds, 1);
        AtLeast(nameof(ProbeInterval), ProbeInterval.TotalSeconds, 1);
        AtLeast(nameof(RecheckInterval), RecheckInterval.TotalSeconds, 1);
        AtLeast(nameof(MaxDialDataToSend), MaxDialDataToSend, 0);
        if (DialDataBytes < 30_000 || DialDataBytes > 100_000)
        {
            problems.Add($"{Key(nameof(DialDataBytes))} is {DialDataBytes}; it must be between 30000 and 100000 (the spec's range)");
        }
        if (MaxMessageSize < 4200 || MaxMessageSize > 1 << 20)
        {
            problems.Add($"{Key(nameof(MaxMessageSize))} is {MaxMessageSize}; it must be between 4200 and 1048576 bytes");
        }
        return problems;
    }
}

/// <summary>What AutoNAT found about an address, or about the node as a whole.</summary>
public enum Reachability
{
    Unknown,
    Public,
    Private,
}

/// <summary>A dial response's status, numbered as the spec numbers it.</summary>
public enum AutoNatResponseStatus
{
    InternalError = 0,
    RequestRejected = 100,
    DialRefused = 101,
    Ok = 200,
}

/// <summary>A dial response's dial status, numbered as the spec numbers it.</summary>
public enum AutoNatDialStatus
{
    Unused = 0,
    DialError = 100,
    DialBackError = 101,
    Ok = 200,
}
