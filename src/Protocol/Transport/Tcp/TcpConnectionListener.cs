using System.Net.Sockets;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Transport.Tcp;

/// <summary>A bound, listening socket. Disposal stops accepting; pending and later accepts throw <see cref="OperationCanceledException"/>.</summary>
internal sealed class TcpConnectionListener : IListener
{
    private readonly Socket _socket;
    private readonly TcpTransportOptions _options;
    private readonly NodeRuntime _runtime;
    private readonly Action<TcpConnectionListener>? _closed;
    private volatile bool _disposed;

    public TcpConnectionListener(Socket socket, Multiaddr address, TcpTransportOptions options, NodeRuntime runtime,
        System.Net.IPEndPoint endPoint, Action<TcpConnectionListener>? closed = null)
    {
        _socket = socket;
        EndPoint = endPoint;
        _closed = closed;
        Address = address;
        _options = options;
        _runtime = runtime;
    }

    public Multiaddr Address { get; }

    /// <summary>The bound endpoint (hole-punch dials bind to its port).</summary>
    public System.Net.IPEndPoint EndPoint { get; }

    public async ValueTask<IRawConnection> AcceptAsync(CancellationToken ct)
    {
        while (true)
        {
            if (_disposed)
            {
                throw new OperationCanceledException($"the listener on {Address} was disposed");
            }
            Socket socket;
            try
            {
                socket = await _socket.AcceptAsync(ct);
            }
            catch (Exception e) when (_disposed && e is SocketException or ObjectDisposedException)
            {
                throw new OperationCanceledException($"the listener on {Address} was disposed", e);
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionAborted or SocketError.ConnectionReset)
            {
                continue; // the client gave up before we accepted it
            }
            catch (SocketException e)
            {
                throw TransportException.FromSocket(Address, "accept on", e);
            }
            try
            {
                socket.NoDelay = _options.NoDelay;
                return new TcpConnection(socket, _options, _runtime);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                socket.Dispose(); // reset between accept and setup: wait for the next one
            }
        }
    }

    public ValueTask DisposeAsync()
    {
        _disposed = true;
        _closed?.Invoke(this);
        _socket.Dispose();
        return ValueTask.CompletedTask;
    }
}
