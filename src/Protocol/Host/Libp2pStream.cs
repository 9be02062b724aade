using System.IO.Pipelines;
using Potluck.Protocol.Muxing;

namespace Potluck.Protocol.Host;

/// <summary>A muxed stream with the protocol it speaks and the connection it runs on.</summary>
internal sealed class Libp2pStream : IStream
{
    private readonly IMuxedStream _inner;
    private readonly Connection _connection;
    private int _disposed;

    public Libp2pStream(IMuxedStream inner, string protocol, Connection connection, Direction direction)
    {
        _inner = inner;
        _connection = connection;
        Protocol = protocol;
        Direction = direction;
        connection.Touch();
        connection.CountStream(protocol, +1);
    }

    public string Protocol { get; }

    public IConnection Connection => _connection;

    public Direction Direction { get; }

    public PipeReader Input => _inner.Input;

    public PipeWriter Output => _inner.Output;

    public void Reset() => _inner.Reset();

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _connection.Touch();
            _connection.CountStream(Protocol, -1);
            await _inner.DisposeAsync();
        }
    }

    public override string ToString() => $"{Protocol} #{_inner.Id} on {_connection}";
}
