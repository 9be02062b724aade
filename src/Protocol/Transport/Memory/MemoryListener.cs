using System.Threading.Channels;
using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.Transport.Memory;

/// <summary>A listening simulated endpoint; dials to it queue here until accepted (up to the backlog).</summary>
internal sealed class MemoryListener : IListener
{
    private readonly SimulatedNetwork _network;
    private readonly Channel<MemoryConnection> _pending = Channel.CreateUnbounded<MemoryConnection>();
    private int _disposed;

    public MemoryListener(SimulatedNetwork network, MemoryTransport transport, ulong id, Multiaddr address)
    {
        _network = network;
        Transport = transport;
        Id = id;
        Address = address;
    }

    public Multiaddr Address { get; }

    internal ulong Id { get; }

    internal MemoryTransport Transport { get; }

    internal int PendingCount => _pending.Reader.Count;

    /// <summary>Called under the network's lock; false once the listener is closed.</summary>
    internal bool TryEnqueue(MemoryConnection connection) => _pending.Writer.TryWrite(connection);

    public async ValueTask<IRawConnection> AcceptAsync(CancellationToken ct)
    {
        try
        {
            return await _pending.Reader.ReadAsync(ct);
        }
        catch (ChannelClosedException e)
        {
            throw new OperationCanceledException($"the listener on {Address} was disposed", e);
        }
    }

    /// <summary>Called under the network's lock.</summary>
    internal void Close() => _pending.Writer.TryComplete();

    public ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _network.Unlisten(this);
            // Dials that were queued but never accepted: like a TCP backlog on close, they are reset.
            while (_pending.Reader.TryRead(out var connection))
            {
                connection.Pair.Break(new TransportException(connection.Remote, TransportError.ConnectionReset, $"{Address}: listener closed before accepting"));
                connection.Close();
            }
        }
        return ValueTask.CompletedTask;
    }
}
