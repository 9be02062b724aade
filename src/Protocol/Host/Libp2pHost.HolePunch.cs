using System.Net;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Transport;

namespace Potluck.Protocol.Host;

/// <summary>
/// What the host does for hole punching (DCUtR, <see cref="Dcutr.DcutrService"/>): a direct dial that leaves from the
/// listen port and does not reuse the peer's relayed connection, with the security role the punch assigns; and, on the
/// side that speaks first, inbound connections from the peer's address taken as its punch arriving first.
/// </summary>
public sealed partial class Libp2pHost
{
    private readonly Dictionary<PeerId, (HashSet<string> Hosts, HashSet<string> Addresses, DateTimeOffset Until)> _punches = [];

    /// <summary>Whether <paramref name="connection"/> runs through a circuit relay (its remote address has /p2p-circuit).</summary>
    public static bool IsRelayed(IConnection connection) => connection.RemoteAddress.Find(Multiaddr.P2pCircuit) is not null;

    /// <summary>Whether a transport of this host dials <paramref name="address"/> directly (not through a relay).</summary>
    public bool CanDialDirect(Multiaddr address) =>
        address.Find(Multiaddr.P2pCircuit) is null && _transports.Any(t => t.CanHandle(address));

    /// <summary>An open connection to <paramref name="peer"/> that is not relayed, if any.</summary>
    public IConnection? DirectConnectionTo(PeerId peer) =>
        _connections.Registered(peer).FirstOrDefault(c => !c.IsClosed && !IsRelayed(c));

    /// <summary>
    /// Dials <paramref name="address"/> of <paramref name="peer"/> for a hole punch: a new direct connection even when a
    /// relayed one exists, leaving from the listen port where the transport can, upgraded as
    /// <paramref name="initiator"/> says whatever TCP makes of the two simultaneous dials. With
    /// <paramref name="fromListenPort"/> false the dial leaves from a fresh local port (a new NAT mapping each: port
    /// prediction's dials from the side whose NAT changes ports).
    /// </summary>
    public async ValueTask<IConnection> DialForHolePunchAsync(Multiaddr address, PeerId peer, bool initiator, CancellationToken ct,
        bool fromListenPort = true)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (address.Find(Multiaddr.P2pCircuit) is not null)
        {
            throw new DialException(DialFailure.NoTransport, $"a hole punch dials direct addresses only, not {address}", address);
        }
        if (peer == PeerId)
        {
            throw new DialException(DialFailure.Self, "refusing to dial this node itself", address);
        }
        return await DialAndRegisterAsync(address.WithPeer(peer), peer, ct, holePunch: true, initiator: initiator, fromListenPort: fromListenPort);
    }

    /// <summary>
    /// Until <paramref name="until"/>, an inbound connection from one of <paramref name="addresses"/>' hosts (IP, or the
    /// whole /memory address) is upgraded with this node as the initiator and must prove to be <paramref name="peer"/>.
    /// </summary>
    public void ExpectHolePunch(PeerId peer, IEnumerable<Multiaddr> addresses, DateTimeOffset until)
    {
        var list = addresses.ToArray();
        var hosts = list.Select(HostKey).OfType<string>().ToHashSet(StringComparer.Ordinal);
        var exact = list.Select(a => a.WithoutPeer().ToString()).ToHashSet(StringComparer.Ordinal);
        lock (_gate)
        {
            foreach (var stale in _punches.Where(kv => kv.Value.Until <= _time.GetUtcNow()).Select(kv => kv.Key).ToArray())
            {
                _punches.Remove(stale);
            }
            _punches[peer] = (hosts, exact, until);
        }
    }

    /// <summary>Ends what <see cref="ExpectHolePunch"/> set up for <paramref name="peer"/>.</summary>
    public void EndHolePunch(PeerId peer)
    {
        lock (_gate)
        {
            _punches.Remove(peer);
        }
    }

    /// <summary>
    /// Whether an inbound connection from <paramref name="remote"/> is a hole punch in which this node speaks first, and
    /// the peer it must prove to be when that is certain. Many peers can share one public IP (a carrier-grade NAT, two
    /// punches at once): the IP and port of an address the peer sent name it; the IP alone names it only when no other
    /// punch in progress has that IP, and otherwise the handshake decides who it is.
    /// </summary>
    private (bool Punch, PeerId? Expected) HolePunchRoleFor(Multiaddr remote)
    {
        var key = HostKey(remote);
        if (key is null)
        {
            return (false, null);
        }
        var exact = remote.WithoutPeer().ToString();
        lock (_gate)
        {
            if (_punches.Count == 0)
            {
                return (false, null);
            }
            var now = _time.GetUtcNow();
            var byIp = new List<PeerId>();
            foreach (var (peer, (hosts, addresses, until)) in _punches)
            {
                if (until <= now || DirectConnectionTo(peer) is not null)
                {
                    continue;
                }
                if (addresses.Contains(exact))
                {
                    return (true, peer);
                }
                if (hosts.Contains(key))
                {
                    byIp.Add(peer);
                }
            }
            return byIp.Count switch
            {
                0 => (false, null),
                1 => (true, byIp[0]),
                _ => (true, null),
            };
        }
    }

    /// <summary>The host part of an address: its IP for TCP (a NAT may change the port), the address itself for /memory.</summary>
    private static string? HostKey(Multiaddr address)
    {
        if (address.ToTcpEndPoint() is { } endPoint)
        {
            var ip = endPoint.Address.IsIPv4MappedToIPv6 ? endPoint.Address.MapToIPv4() : endPoint.Address;
            return ip.ToString();
        }
        var first = address.Components.Count > 0 ? address.Components[0] : (MultiaddrComponent?)null;
        if (first is { } c && (c.Protocol == Multiaddr.Ip4 || c.Protocol == Multiaddr.Ip6))
        {
            return new IPAddress(c.Value.Span).ToString();
        }
        return first is { } m && m.Protocol == Multiaddr.Memory ? address.WithoutPeer().ToString() : null;
    }
}
