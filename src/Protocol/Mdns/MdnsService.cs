using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Host;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Mdns;

/// <summary>
/// libp2p mDNS discovery per https://github.com/libp2p/specs/blob/master/discovery/mdns.md over UDP: joins
/// 224.0.0.251:5353 on every up, multicast-capable IPv4 interface, asks <c>_p2p._udp.local</c> at start and every
/// <see cref="MdnsOptions.QueryInterval"/>, answers others' queries with our IP listen addresses, and puts the
/// peers it hears into the peer store (<see cref="AddressSource.Discovery"/>), raising <see cref="PeerDiscovered"/>.
/// Deviations: IPv4 only; names are written uncompressed; no known-answer suppression; responses always multicast.
/// </summary>
public sealed partial class MdnsService : IAsyncDisposable
{
    private int _disposeOnce;
    private readonly IHost _host;
    private readonly MdnsOptions _options;
    private readonly NodeRuntime _runtime;
    private readonly TimeProvider _time;
    private readonly ILogger<MdnsService> _log;
    private readonly MdnsCore _core;
    private readonly object _gate = new();
    private readonly BackgroundWork _work;
    private readonly List<IPAddress> _interfaces = [];
    private Socket? _socket;

    public MdnsService(IHost host, MdnsOptions options, NodeRuntime runtime, ILoggerFactory loggers)
    {
        _host = host;
        _options = options;
        _runtime = runtime;
        _time = runtime.Time;
        _log = loggers.CreateLogger<MdnsService>();
        _work = runtime.CreateBackgroundWork("mdns", _log);
        _core = new MdnsCore(host.PeerId, options, runtime.SecureRandom);
    }

    /// <summary>Raised for every announcement heard from another peer (after the peer store is updated).</summary>
    public event Action<MdnsPeer>? PeerDiscovered;

    public string PeerName => _core.PeerName;

    /// <summary>Opens the socket, joins the group and starts the query and receive loops.</summary>
    public void Start()
    {
        if (_socket is not null)
        {
            return;
        }
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            socket.Bind(new IPEndPoint(IPAddress.Any, _options.Port));
            socket.SetSocketOption(SocketOptionLevel.IP, SocketOptionName.MulticastTimeToLive, 255);
            socket.SetSocketOption(SocketOptionLevel.IP, SocketOptionName.MulticastLoopback, true);
            _interfaces.AddRange(MulticastInterfaces());
            foreach (var address in _interfaces)
            {
                socket.SetSocketOption(SocketOptionLevel.IP, SocketOptionName.AddMembership, new MulticastOption(_options.MulticastAddress, address));
            }
            if (_interfaces.Count == 0)
            {
                socket.SetSocketOption(SocketOptionLevel.IP, SocketOptionName.AddMembership, new MulticastOption(_options.MulticastAddress, IPAddress.Any));
            }
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        _socket = socket;
        UpdateAddresses();
        _host.LocalInfoChanged += UpdateAddresses;
        _work.Run("mdns receive", ReceiveLoopAsync);
        _work.Run("mdns query", QueryLoopAsync);
    }

    private static IEnumerable<IPAddress> MulticastInterfaces()
    {
        NetworkInterface[] all;
        try
        {
            all = NetworkInterface.GetAllNetworkInterfaces();
        }
        catch (NetworkInformationException)
        {
            return [];
        }
        return all
            .Where(n => n.OperationalStatus is OperationalStatus.Up or OperationalStatus.Unknown && n.SupportsMulticast)
            .SelectMany(n => n.GetIPProperties().UnicastAddresses)
            .Select(u => u.Address)
            .Where(a => a.AddressFamily == AddressFamily.InterNetwork)
            .Distinct()
            .ToArray();
    }

    private void UpdateAddresses()
    {
        var addresses = _host.ListenAddresses
            .Where(a => a.Find(Multiaddr.Ip4) is not null || a.Find(Multiaddr.Ip6) is not null)
            .ToArray();
        lock (_gate)
        {
            _core.SetAddresses(addresses);
        }
    }

    private async Task QueryLoopAsync(CancellationToken stopping)
    {
        try
        {
            while (!stopping.IsCancellationRequested)
            {
                byte[]? query;
                DateTimeOffset next;
                lock (_gate)
                {
                    query = _core.OnTimer(_time.GetUtcNow());
                    next = _core.NextQueryAt;
                }
                if (query is not null)
                {
                    await SendAsync(query, stopping);
                }
                var wait = next - _time.GetUtcNow();
                await Task.Delay(wait > TimeSpan.Zero ? wait : TimeSpan.Zero, _time, stopping);
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
        }
    }

    private async Task ReceiveLoopAsync(CancellationToken stopping)
    {
        var buffer = new byte[DnsMessage.MaxPacketSize];
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                var received = await _socket!.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), stopping);
                MdnsStep step;
                lock (_gate)
                {
                    step = _core.OnPacket(buffer.AsSpan(0, received.ReceivedBytes), _time.GetUtcNow());
                }
                if (step.Response is not null)
                {
                    await SendAsync(step.Response, stopping);
                }
                foreach (var peer in step.Discovered)
                {
                    if (peer.Peer == _host.PeerId)
                    {
                        continue;
                    }
                    _host.Peers.AddAddresses(peer.Peer, peer.Addresses, AddressSource.Discovery);
                    LogDiscovered(peer.Peer, peer.Addresses.Count);
                    PeerDiscovered?.Invoke(peer);
                }
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e)
            {
                // Oversized datagrams and transient errors: drop the packet, keep listening.
                LogSocketError(e.SocketErrorCode);
            }
        }
    }

    private async Task SendAsync(byte[] packet, CancellationToken stopping)
    {
        var socket = _socket;
        if (socket is null)
        {
            return;
        }
        var group = new IPEndPoint(_options.MulticastAddress, _options.Port);
        var interfaces = _interfaces.Count > 0 ? _interfaces : [IPAddress.Any];
        foreach (var address in interfaces)
        {
            try
            {
                lock (_gate)
                {
                    socket.SetSocketOption(SocketOptionLevel.IP, SocketOptionName.MulticastInterface, address.GetAddressBytes());
                }
                await socket.SendToAsync(packet, SocketFlags.None, group, stopping);
            }
            catch (SocketException e)
            {
                LogSocketError(e.SocketErrorCode);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposeOnce, 1) != 0)
        {
            return;
        }
        _host.LocalInfoChanged -= UpdateAddresses;
        // Cancels both loops at once; closing the socket wakes a receive the token does not reach.
        var stopped = _work.StopAsync();
        _socket?.Dispose();
        await stopped;
        await _work.DisposeAsync();
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "mDNS: {Peer} announced {Count} addresses")]
    private partial void LogDiscovered(Identity.PeerId peer, int count);

    [LoggerMessage(Level = LogLevel.Debug, Message = "mDNS socket error {Error}")]
    private partial void LogSocketError(SocketError error);
}
