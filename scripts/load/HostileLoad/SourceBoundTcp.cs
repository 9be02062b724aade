using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Transport;

namespace Potluck.HostileLoad;

/// <summary>
/// A dial-only TCP transport whose sockets leave from one chosen loopback address (127.0.0.0/8 is all this machine), so
/// that one process can stand for peers on many IP addresses and /24s. Plain pipes over a NetworkStream: what the
/// attacking side costs is not measured.
/// </summary>
internal sealed class SourceBoundTcp(IPAddress source) : ITransport
{
    public bool CanHandle(Multiaddr address) => address.ToTcpEndPoint() is not null;

    public async ValueTask<IRawConnection> DialAsync(Multiaddr to, CancellationToken ct)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            socket.Bind(new IPEndPoint(source, 0));
            await socket.ConnectAsync(to.ToTcpEndPoint()!, ct);
            return new Connection(socket);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    public ValueTask<IListener> ListenAsync(Multiaddr at, CancellationToken ct) => throw new NotSupportedException("dial only");

    private sealed class Connection : IRawConnection
    {
        private readonly Socket _socket;
        private readonly NetworkStream _stream;

        public Connection(Socket socket)
        {
            _socket = socket;
            _stream = new NetworkStream(socket, ownsSocket: true);
            Input = PipeReader.Create(_stream, new StreamPipeReaderOptions(bufferSize: 4096, leaveOpen: true));
            Output = PipeWriter.Create(_stream, new StreamPipeWriterOptions(leaveOpen: true));
            Local = Address((IPEndPoint)socket.LocalEndPoint!);
            Remote = Address((IPEndPoint)socket.RemoteEndPoint!);
        }

        public PipeReader Input { get; }

        public PipeWriter Output { get; }

        public Multiaddr Local { get; }

        public Multiaddr Remote { get; }

        private static Multiaddr Address(IPEndPoint e) => Multiaddr.Parse($"/ip4/{e.Address}/tcp/{e.Port}");

        public async ValueTask DisposeAsync()
        {
            await Input.CompleteAsync();
            await Output.CompleteAsync();
            try
            {
                _socket.Shutdown(SocketShutdown.Both);
            }
            catch (SocketException)
            {
            }
            await _stream.DisposeAsync();
        }
    }
}
