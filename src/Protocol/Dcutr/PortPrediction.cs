using System.Net;
using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.Dcutr;

/// <summary>How this node's NAT maps the source port of a new outbound TCP connection, as observers report it.</summary>
public enum PortMapping
{
    /// <summary>Not known: no TCP observation yet, or as many say one thing as the other (and every peer that does not send it).</summary>
    Unknown = 0,

    /// <summary>The public port is the local port (no NAT, or a port-preserving NAT: MASQUERADE, most home routers).</summary>
    Preserving = 1,

    /// <summary>Each new connection gets another public port (an endpoint-dependent, "symmetric" NAT: MASQUERADE --random-fully).</summary>
    Changing = 2,
}

/// <summary>
/// The pure parts of port prediction (a "birthday" hole punch) for TCP. When one side's NAT keeps ports
/// (<see cref="PortMapping.Preserving"/>) and the other's gives every connection a new random port
/// (<see cref="PortMapping.Changing"/>), neither knows the port the changing side's next dial will come from, so the
/// synchronised dials of plain DCUtR never meet. Instead the preserving side sends SYNs from its listen port to
/// <c>k</c> random ports of the changing side's IP (each opens a hole in its own NAT for that port), and the changing
/// side dials the preserving side's listen port from <c>m</c> fresh local ports (each gets a random public port): when
/// one of the m ports is among the k, the SYNs meet (TCP simultaneous open, or the listener accepts) — probability
/// about 1 − e^(−k·m / 64,512) per round (k = m = 256: 64 %). Two changing sides cannot meet this way (both ports
/// unknown), so nothing is sprayed then, nor when either side's mapping is unknown.
/// </summary>
public static class PortPrediction
{
    /// <summary>The ports Linux NAT draws from for a source port of 1024 or more (MASQUERADE --random-fully).</summary>
    public const int FirstPort = 1024;

    /// <summary>The last port of that range.</summary>
    public const int LastPort = 65535;

    /// <summary>Observations of the mapping kept (the most recent ones).</summary>
    public const int Window = 8;

    /// <summary>
    /// What one observation says: an identify <paramref name="observed"/> address against the <paramref name="local"/>
    /// address of the same connection. Null when it says nothing (not TCP, relayed, loopback).
    /// </summary>
    public static bool? PortPreserved(Multiaddr? observed, Multiaddr? local)
    {
        if (observed?.ToTcpEndPoint() is not { } seen || local?.ToTcpEndPoint() is not { } mine
            || observed.Find(Multiaddr.P2pCircuit) is not null || local.Find(Multiaddr.P2pCircuit) is not null
            || IPAddress.IsLoopback(seen.Address) || IPAddress.IsLoopback(mine.Address) || seen.Port == 0 || mine.Port == 0)
        {
            return null;
        }
        return seen.Port == mine.Port;
    }

    /// <summary>The mapping the recent observations (true: port kept) point to: the majority, unknown on a tie or none.</summary>
    public static PortMapping Classify(IEnumerable<bool> recent)
    {
        var kept = 0;
        var changed = 0;
        foreach (var preserved in recent)
        {
            if (preserved)
            {
                kept++;
            }
            else
            {
                changed++;
            }
        }
        return kept > changed ? PortMapping.Preserving : changed > kept ? PortMapping.Changing : PortMapping.Unknown;
    }

    /// <summary>A peer's mapping from the wire: anything but the two known values is unknown.</summary>
    public static PortMapping FromWire(bool present, uint value) => present && value is 1 or 2 ? (PortMapping)value : PortMapping.Unknown;

    /// <summary>What this side does in a round: spray SYNs to random ports (preserving side), dial from fresh ports (changing side), or neither.</summary>
    public static PredictionRole RoleFor(PortMapping self, PortMapping peer) => (self, peer) switch
    {
        (PortMapping.Preserving, PortMapping.Changing) => PredictionRole.Spray,
        (PortMapping.Changing, PortMapping.Preserving) => PredictionRole.FreshPorts,
        _ => PredictionRole.None,
    };

    /// <summary>
    /// <paramref name="count"/> distinct ports of the NAT range, none in <paramref name="exclude"/>, drawn from
    /// <paramref name="random"/>; fewer only when the range runs out.
    /// </summary>
    public static int[] PickPorts(Random random, int count, IReadOnlySet<int> exclude)
    {
        var size = LastPort - FirstPort + 1;
        count = Math.Clamp(count, 0, size - exclude.Count(p => p >= FirstPort && p <= LastPort));
        var picked = new HashSet<int>();
        var result = new int[count];
        var n = 0;
        while (n < count)
        {
            var port = FirstPort + random.Next(size);
            if (!exclude.Contains(port) && picked.Add(port))
            {
                result[n++] = port;
            }
        }
        return result;
    }
}

/// <summary>This side's part in a port-prediction round.</summary>
public enum PredictionRole
{
    /// <summary>Plain DCUtR dials only.</summary>
    None,

    /// <summary>SYNs from the listen port to random ports of the peer's IP.</summary>
    Spray,

    /// <summary>Dials of the peer's first address from fresh local ports.</summary>
    FreshPorts,
}

/// <summary>
/// A budget of port-prediction sockets per window, for the whole node: a stranger (or a thousand) that claims a
/// changing mapping cannot make this node send more than <c>limit</c> SYNs per window to addresses it names.
/// Not thread-safe; the caller locks.
/// </summary>
public sealed class SocketBudget(int limit, TimeSpan window)
{
    private DateTimeOffset _windowStart = DateTimeOffset.MinValue;
    private int _used;

    /// <summary>Takes up to <paramref name="wanted"/> sockets at <paramref name="now"/>; returns how many were granted (0 when spent).</summary>
    public int Take(int wanted, DateTimeOffset now)
    {
        if (now - _windowStart >= window)
        {
            _windowStart = now;
            _used = 0;
        }
        var granted = Math.Clamp(limit - _used, 0, Math.Max(0, wanted));
        _used += granted;
        return granted;
    }
}
