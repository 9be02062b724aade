using System.Net;
using System.Net.Sockets;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.AutoNat;

/// <summary>What is known of one address: its verdict and the results behind it.</summary>
public sealed record AddressReachability(Multiaddr Address, Reachability Status, int Reachable, int Unreachable,
    DateTimeOffset? LastChecked, bool Observed);

/// <summary>
/// The address manager's state, as a pure core (no I/O, time passed in): observed addresses from identify with the
/// distinct peers that reported each, and AutoNAT results per address (the latest from each server, the most recent
/// servers only). An address is public once <see cref="AutoNatOptions.Confirmations"/> distinct servers dialled it
/// back (with our nonce) and more said yes than no; private once as many failed to dial it and more said no.
/// </summary>
public sealed class ReachabilityTracker(AutoNatOptions options)
{
    private readonly Dictionary<Multiaddr, List<Result>> _results = [];
    private readonly Dictionary<Multiaddr, Observation> _observed = [];

    private sealed record Result(PeerId Server, bool Reachable, DateTimeOffset At);

    private sealed class Observation
    {
        public HashSet<PeerId> Observers { get; } = [];

        public DateTimeOffset LastSeen { get; set; }
    }

    /// <summary>A peer told us (identify's observed address) that it sees us at <paramref name="observed"/>.</summary>
    public void AddObserved(PeerId observer, Multiaddr observed, DateTimeOffset now)
    {
        var address = observed.WithoutPeer();
        if (!IsTestable(address, allowPrivate: true))
        {
            return;
        }
        if (!_observed.TryGetValue(address, out var o))
        {
            if (_observed.Count >= options.MaxObservedAddresses)
            {
                var oldest = _observed.MinBy(kv => kv.Value.LastSeen).Key;
                _observed.Remove(oldest);
            }
            _observed[address] = o = new Observation();
        }
        if (o.Observers.Count < Math.Max(16, options.ObservedAddressThreshold))
        {
            o.Observers.Add(observer);
        }
        o.LastSeen = now;
    }

    /// <summary>Observed addresses reported by at least <see cref="AutoNatOptions.ObservedAddressThreshold"/> distinct peers.</summary>
    public IReadOnlyList<Multiaddr> ActivatedObserved =>
        _observed.Where(kv => kv.Value.Observers.Count >= options.ObservedAddressThreshold).Select(kv => kv.Key).ToArray();

    /// <summary>Records a server's verdict on <paramref name="address"/>; true when the address's status changed.</summary>
    public bool Record(Multiaddr address, PeerId server, bool reachable, DateTimeOffset now)
    {
        address = address.WithoutPeer();
        var before = StatusOf(address);
        if (!_results.TryGetValue(address, out var list))
        {
            if (_results.Count >= 4 * options.MaxObservedAddresses)
            {
                _results.Remove(_results.MinBy(kv => kv.Value.Max(r => r.At)).Key);
            }
            _results[address] = list = [];
        }
        list.RemoveAll(r => r.Server == server);
        list.Add(new Result(server, reachable, now));
        while (list.Count > options.ResultsPerAddress)
        {
            list.RemoveAt(0);
        }
        return StatusOf(address) != before;
    }

    public Reachability StatusOf(Multiaddr address)
    {
        if (!_results.TryGetValue(address.WithoutPeer(), out var list))
        {
            return Reachability.Unknown;
        }
        var yes = list.Count(r => r.Reachable);
        var no = list.Count - yes;
        return yes >= options.Confirmations && yes > no ? Reachability.Public
            : no >= options.Confirmations && no > yes ? Reachability.Private
            : Reachability.Unknown;
    }

    /// <summary>Whether <paramref name="server"/> gave a verdict on the address within the recheck interval.</summary>
    public bool HasRecentResult(Multiaddr address, PeerId server, DateTimeOffset now) =>
        _results.TryGetValue(address.WithoutPeer(), out var list)
        && list.Any(r => r.Server == server && now - r.At < options.RecheckInterval);

    /// <summary>The first address to test: an undecided one, else one whose newest verdict is older than the recheck interval.</summary>
    public IEnumerable<Multiaddr> DueForProbe(IEnumerable<Multiaddr> candidates, DateTimeOffset now)
    {
        var list = candidates.Select(a => a.WithoutPeer()).Distinct().ToArray();
        foreach (var a in list.Where(a => StatusOf(a) == Reachability.Unknown))
        {
            yield return a;
        }
        foreach (var a in list.Where(a => StatusOf(a) != Reachability.Unknown
            && now - _results[a].Max(r => r.At) >= options.RecheckInterval))
        {
            yield return a;
        }
    }

    /// <summary>The node as a whole: public when any address is, private when some are and none is public or undecided.</summary>
    public Reachability Overall(IEnumerable<Multiaddr> candidates)
    {
        var statuses = candidates.Select(StatusOf).ToArray();
        return statuses.Contains(Reachability.Public) ? Reachability.Public
            : statuses.Length > 0 && statuses.All(s => s == Reachability.Private) ? Reachability.Private
            : Reachability.Unknown;
    }

    public IReadOnlyList<AddressReachability> Snapshot(IEnumerable<Multiaddr> candidates) =>
        candidates.Select(a => a.WithoutPeer()).Distinct().Select(a =>
        {
            var list = _results.GetValueOrDefault(a) ?? [];
            return new AddressReachability(a, StatusOf(a), list.Count(r => r.Reachable), list.Count(r => !r.Reachable),
                list.Count > 0 ? list.Max(r => r.At) : null, _observed.ContainsKey(a));
        }).ToArray();

    /// <summary>
    /// Whether AutoNAT should test (client) or dial (server) this address: a TCP address on a public IP, or with
    /// <paramref name="allowPrivate"/> also a private one or an in-memory address of the simulated network; never a relayed one.
    /// </summary>
    public static bool IsTestable(Multiaddr address, bool allowPrivate)
    {
        var c = address.Components;
        if (c.Count == 0 || address.Find(Multiaddr.P2pCircuit) is not null)
        {
            return false;
        }
        if (c[0].Protocol == Multiaddr.Memory)
        {
            // The simulated network is a private one: its addresses are tested only where private ones are.
            return allowPrivate && (c.Count == 1 || (c.Count == 2 && c[1].Protocol == Multiaddr.P2p));
        }
        if (address.ToTcpEndPoint() is not { } endpoint || endpoint.Port == 0)
        {
            return false;
        }
        return allowPrivate ? !IsUnspecified(endpoint.Address) : IsPublic(endpoint.Address);
    }

    private static bool IsUnspecified(IPAddress ip) => ip.Equals(IPAddress.Any) || ip.Equals(IPAddress.IPv6Any);

    /// <summary>Not private (RFC 1918, RFC 4193), loopback, link-local, shared (RFC 6598), multicast or unspecified.</summary>
    public static bool IsPublic(IPAddress ip)
    {
        if (ip.IsIPv4MappedToIPv6)
        {
            ip = ip.MapToIPv4();
        }
        if (IPAddress.IsLoopback(ip) || IsUnspecified(ip))
        {
            return false;
        }
        if (ip.AddressFamily == AddressFamily.InterNetwork)
        {
            var b = ip.GetAddressBytes();
            return !(b[0] == 10 || b[0] == 0 || b[0] >= 224
                || (b[0] == 172 && b[1] >= 16 && b[1] <= 31)
                || (b[0] == 192 && b[1] == 168)
                || (b[0] == 169 && b[1] == 254)
                || (b[0] == 100 && b[1] >= 64 && b[1] <= 127));
        }
        var v6 = ip.GetAddressBytes();
        return !(ip.IsIPv6LinkLocal || ip.IsIPv6SiteLocal || ip.IsIPv6Multicast || (v6[0] & 0xfe) == 0xfc);
    }

    /// <summary>The host part of an address (the IP, or the in-memory endpoint), to compare with a requester's.</summary>
    public static string? HostPart(Multiaddr address)
    {
        var c = address.Components;
        if (c.Count == 0)
        {
            return null;
        }
        if (c[0].Protocol == Multiaddr.Memory)
        {
            return c[0].ToString();
        }
        if (c[0].Protocol == Multiaddr.Ip4 || c[0].Protocol == Multiaddr.Ip6)
        {
            var ip = new IPAddress(c[0].Value.Span);
            return (ip.IsIPv4MappedToIPv6 ? ip.MapToIPv4() : ip).ToString();
        }
        return c[0].ToString();
    }
}
