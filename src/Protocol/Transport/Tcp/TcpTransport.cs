using System.Net;
using System.Net.Sockets;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Transport.Tcp;

/// <summary>
/// The libp2p TCP transport (https://github.com/libp2p/specs/blob/master/addressing/README.md): dials and
/// listens on <c>/ip4|ip6/&lt;addr&gt;/tcp/&lt;port&gt;</c>, dials <c>/dns|dns4|dns6/&lt;name&gt;/tcp/&lt;port&gt;</c>
/// by resolving the name and trying each address in turn. A trailing <c>/p2p/&lt;peer&gt;</c> is accepted and
/// ignored: checking the peer is the security handshake's job. Each connection is a socket plus two pipes
/// (see <see cref="TcpConnection"/>); sockets use TCP_NODELAY.
/// </summary>
/// <remarks>
/// Deviations: ordinary dials leave from an ephemeral port (go-libp2p reuses the listen port for every dial), so the
/// remote address of an inbound connection is the dialer's ephemeral port. Only a hole punch
/// (<see cref="DialFromListenPortAsync"/>) leaves from the listen port: listeners bind with SO_REUSEADDR and SO_REUSEPORT
/// for that, after a probe bind without SO_REUSEPORT has made sure no other socket listens on the port (so a second
/// listener on a port is still refused with <see cref="TransportError.AddressInUse"/>). IPv6 listeners are IPv6-only.
/// DNS names are resolved for dialing, not for listening.
/// </remarks>
public sealed class TcpTransport : ITransport, IHolePunchTransport
{
    private readonly TcpTransportOptions _options;
    private readonly NodeRuntime _runtime;
    private readonly TimeProvider _time;
    private readonly Lock _gate = new();
    private readonly List<TcpConnectionListener> _listeners = [];

    /// <param name="options">Tuning.</param>
    /// <param name="runtime">The clock for connect and close timeouts, and where pipe continuations run.</param>
    public TcpTransport(TcpTransportOptions options, NodeRuntime runtime)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(runtime);
        options.Validate();
        _options = options;
        _runtime = runtime;
        _time = runtime.Time;
    }

    public bool CanHandle(Multiaddr address) => TryParse(address, allowDns: true, out _, out _, out _, out _);

    public ValueTask<IRawConnection> DialAsync(Multiaddr to, CancellationToken ct) => DialCoreAsync(to, fromListenPort: false, ct);

    /// <summary>
    /// A dial for a hole punch (DCUtR): the socket binds to the port of a listener of the same family before it connects,
    /// so it leaves through the NAT mapping peers observed for that port, and a SYN the peer sends at the same moment
    /// meets it (TCP simultaneous open: one connection, which both ends see as their own dial). Without a suitable
    /// listener, or when the kernel refuses the bind, it is an ordinary dial.
    /// </summary>
    public ValueTask<IRawConnection> DialFromListenPortAsync(Multiaddr to, CancellationToken ct) => DialCoreAsync(to, fromListenPort: true, ct);

    private async ValueTask<IRawConnection> DialCoreAsync(Multiaddr to, bool fromListenPort, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(to);
        if (!TryParse(to, allowDns: true, out var ip, out var host, out var family, out var port))
        {
            throw new TransportException(to, TransportError.UnsupportedAddress,
                $"dial {to}: not a TCP address (expected /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>)");
        }
        ct.ThrowIfCancellationRequested();
        using var timeout = new CancellationTokenSource(_options.ConnectTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, timeout.Token);
        try
        {
            IPAddress[] candidates = ip is not null ? [ip] : await ResolveAsync(to, host!, family, linked.Token);
            SocketException? last = null;
            foreach (var candidate in candidates)
            {
                var socket = new Socket(candidate.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                try
                {
                    socket.NoDelay = _options.NoDelay;
                    if (fromListenPort)
                    {
                        BindToListenPort(socket, candidate);
                    }
                    await socket.ConnectAsync(new IPEndPoint(candidate, port), linked.Token);
                    return new TcpConnection(socket, _options, _runtime);
                }
                catch (SocketException e)
                {
                    socket.Dispose();
                    last = e;
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            }
            throw TransportException.FromSocket(to, "dial", last!);
        }
        catch (OperationCanceledException e) when (timeout.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            throw new TransportException(to, TransportError.TimedOut,
                $"dial {to}: timed out after {_options.ConnectTimeout.TotalSeconds:0.###} s", e);
        }
    }

    /// <summary>Binds a dial socket to the port of a live listener of the target's family (SO_REUSEPORT on both); leaves it unbound when none fits.</summary>
    private void BindToListenPort(Socket socket, IPAddress target)
    {
        IPEndPoint? local = null;
        lock (_gate)
        {
            foreach (var listener in _listeners)
            {
                var bound = listener.EndPoint;
                if (bound.AddressFamily != target.AddressFamily)
                {
                    continue;
                }
                var unspecified = bound.Address.Equals(IPAddress.Any) || bound.Address.Equals(IPAddress.IPv6Any);
                // A loopback listener cannot reach another host, and a dial to loopback must not leave from a public address.
                if (unspecified || IPAddress.IsLoopback(bound.Address) == IPAddress.IsLoopback(target))
                {
                    local = bound;
                    if (unspecified)
                    {
                        break;
                    }
                }
            }
        }
        if (local is null || !SetReusePort(socket))
        {
            return;
        }
        try
        {
            SetReuseAddress(socket);
            socket.Bind(local);
        }
        catch (SocketException)
        {
            // The port cannot be shared now: the dial leaves from an ephemeral port, as an ordinary one does.
        }
    }

    private static async ValueTask<IPAddress[]> ResolveAsync(Multiaddr to, string host, AddressFamily family, CancellationToken ct)
    {
        IPAddress[] addresses;
        try
        {
            addresses = await Dns.GetHostAddressesAsync(host, family, ct);
        }
        catch (SocketException e)
        {
            throw new TransportException(to, TransportError.ResolutionFailed, $"dial {to}: '{host}' did not resolve ({e.SocketErrorCode})", e);
        }
        if (family != AddressFamily.Unspecified)
        {
            addresses = Array.FindAll(addresses, a => a.AddressFamily == family);
        }
        if (addresses.Length == 0)
        {
            throw new TransportException(to, TransportError.ResolutionFailed, $"dial {to}: '{host}' has no usable address");
        }
        return addresses;
    }

    public ValueTask<IListener> ListenAsync(Multiaddr at, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(at);
        if (!TryParse(at, allowDns: false, out var ip, out _, out _, out var port))
        {
            throw new TransportException(at, TransportError.UnsupportedAddress,
                $"listen on {at}: not a TCP address (expected /ip4|ip6/<addr>/tcp/<port>)");
        }
        ct.ThrowIfCancellationRequested();
        var socket = new Socket(ip!.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (ip.AddressFamily == AddressFamily.InterNetworkV6)
            {
                socket.DualMode = false;
            }
            SetReuseAddress(socket);
            if (port != 0 && OperatingSystem.IsLinux())
            {
                ProbeFree(ip, port);
            }
            SetReusePort(socket);
            socket.Bind(new IPEndPoint(ip, port));
            socket.Listen(_options.ListenBacklog);
            var endPoint = (IPEndPoint)socket.LocalEndPoint!;
            var listener = new TcpConnectionListener(socket, Multiaddr.FromTcpEndPoint(endPoint), _options, _runtime, endPoint, Forget);
            lock (_gate)
            {
                _listeners.Add(listener);
            }
            return ValueTask.FromResult<IListener>(listener);
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw TransportException.FromSocket(at, "listen on", e);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private void Forget(TcpConnectionListener listener)
    {
        lock (_gate)
        {
            _listeners.Remove(listener);
        }
    }

    /// <summary>
    /// Throws AddressAlreadyInUse when another socket listens on the port: a bind without SO_REUSEPORT conflicts with
    /// any listener there, while the real listener (which has SO_REUSEPORT, for hole-punch dials) would share it silently.
    /// </summary>
    private static void ProbeFree(IPAddress ip, int port)
    {
        using var probe = new Socket(ip.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        if (ip.AddressFamily == AddressFamily.InterNetworkV6)
        {
            probe.DualMode = false;
        }
        SetReuseAddress(probe);
        probe.Bind(new IPEndPoint(ip, port));
    }

    /// <summary>SO_REUSEPORT on Linux (raw option: .NET's ReuseAddress would set both); false where it is not set.</summary>
    private static bool SetReusePort(Socket socket)
    {
        if (!OperatingSystem.IsLinux())
        {
            return false;
        }
        socket.SetRawSocketOption(1 /* SOL_SOCKET */, 15 /* SO_REUSEPORT */, BitConverter.GetBytes(1));
        return true;
    }

    /// <summary>
    /// SO_REUSEADDR alone, so a restarted node can rebind a port with connections in TIME_WAIT. .NET's
    /// <see cref="SocketOptionName.ReuseAddress"/> also sets SO_REUSEPORT on Unix, which would let a second
    /// listener share the port silently, so the raw option is set where its numbers are known.
    /// </summary>
    private static void SetReuseAddress(Socket socket)
    {
        if (OperatingSystem.IsLinux())
        {
            socket.SetRawSocketOption(1 /* SOL_SOCKET */, 2 /* SO_REUSEADDR */, BitConverter.GetBytes(1));
        }
        else if (OperatingSystem.IsMacOS() || OperatingSystem.IsFreeBSD())
        {
            socket.SetRawSocketOption(0xffff /* SOL_SOCKET */, 0x4 /* SO_REUSEADDR */, BitConverter.GetBytes(1));
        }
        // Windows: SO_REUSEADDR there allows port theft; its default already rebinds over TIME_WAIT.
    }

    /// <summary>
    /// Accepts <c>/ip4|ip6/…/tcp/…</c>, and with <paramref name="allowDns"/> <c>/dns|dns4|dns6/…/tcp/…</c>,
    /// optionally followed by one <c>/p2p/…</c>.
    /// </summary>
    private static bool TryParse(Multiaddr address, bool allowDns, out IPAddress? ip, out string? host, out AddressFamily family, out int port)
    {
        ip = null;
        host = null;
        family = AddressFamily.Unspecified;
        port = 0;
        var c = address.Components;
        if (c.Count < 2 || c.Count > 3 || c[1].Protocol != Multiaddr.Tcp || (c.Count == 3 && c[2].Protocol != Multiaddr.P2p))
        {
            return false;
        }
        port = (c[1].Value.Span[0] << 8) | c[1].Value.Span[1];
        var first = c[0].Protocol;
        if (first == Multiaddr.Ip4 || first == Multiaddr.Ip6)
        {
            ip = new IPAddress(c[0].Value.Span);
            family = ip.AddressFamily;
            return true;
        }
        if (!allowDns)
        {
            return false;
        }
        if (first == Multiaddr.Dns || first == Multiaddr.Dns4 || first == Multiaddr.Dns6)
        {
            host = c[0].ValueText;
            family = first == Multiaddr.Dns4 ? AddressFamily.InterNetwork
                : first == Multiaddr.Dns6 ? AddressFamily.InterNetworkV6
                : AddressFamily.Unspecified;
            return true;
        }
        return false;
    }
}
