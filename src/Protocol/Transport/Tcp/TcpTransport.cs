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
/// Deviations: listeners bind with SO_REUSEADDR only (not SO_REUSEPORT, and dials do not reuse the listen port
/// as go-libp2p can), so the remote address of an inbound connection is the dialer's ephemeral port. IPv6
/// listeners are IPv6-only. DNS names are resolved for dialing, not for listening.
/// </remarks>
public sealed class TcpTransport : ITransport
{
    private readonly TcpTransportOptions _options;
    private readonly NodeRuntime _runtime;
    private readonly TimeProvider _time;

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

    public async ValueTask<IRawConnection> DialAsync(Multiaddr to, CancellationToken ct)
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
            socket.Bind(new IPEndPoint(ip, port));
            socket.Listen(_options.ListenBacklog);
            var bound = Multiaddr.FromTcpEndPoint((IPEndPoint)socket.LocalEndPoint!);
            return ValueTask.FromResult<IListener>(new TcpConnectionListener(socket, bound, _options, _runtime));
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
