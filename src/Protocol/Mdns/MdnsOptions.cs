using System.Net;

namespace Potluck.Protocol.Mdns;

/// <summary>Parameters and limits of mDNS discovery; remote-controlled counts have documented defaults.</summary>
public sealed record MdnsOptions
{
    /// <summary>How often we ask the link who is there (also once at start). Default 5 min (rust-libp2p's default).</summary>
    public TimeSpan QueryInterval { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>TTL put on our records. Default 120 s (RFC 6762 §10 for host-related records).</summary>
    public TimeSpan RecordTtl { get; init; } = TimeSpan.FromSeconds(120);

    /// <summary>Peers read from one packet. Default 16.</summary>
    public int MaxPeersPerPacket { get; init; } = 16;

    /// <summary>Addresses kept per discovered peer. Default 16.</summary>
    public int MaxAddressesPerPeer { get; init; } = 16;

    /// <summary>Responses sent per second at most (a flood of queries cannot make us flood the link). Default 10.</summary>
    public int MaxResponsesPerSecond { get; init; } = 10;

    /// <summary>Our peer-name label; null picks a random one of 32 characters (the spec asks for random, ≤ 63).</summary>
    public string? PeerName { get; init; }

    /// <summary>The mDNS group. Default 224.0.0.251 (IPv4 only).</summary>
    public IPAddress MulticastAddress { get; init; } = IPAddress.Parse("224.0.0.251");

    /// <summary>Default 5353.</summary>
    public int Port { get; init; } = 5353;
}
