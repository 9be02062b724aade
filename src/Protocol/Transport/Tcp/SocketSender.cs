using System.Buffers;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;

namespace Potluck.Protocol.Transport.Tcp;

/// <summary>
/// Sends a multi-segment <see cref="ReadOnlySequence{T}"/> with one gathered send (sendmsg with an iovec)
/// through a reused <see cref="SocketAsyncEventArgs"/>: no allocation per send. Single-segment buffers go
/// through <see cref="Socket.SendAsync(ReadOnlyMemory{byte}, SocketFlags, CancellationToken)"/>, which is
/// already allocation-free.
/// </summary>
internal sealed class SocketSender : SocketAsyncEventArgs, IValueTaskSource<int>
{
    /// <summary>Segments gathered into one send; stays well under IOV_MAX (1024).</summary>
    internal const int MaxSegmentsPerSend = 64;

    private readonly List<ArraySegment<byte>> _segments = new(MaxSegmentsPerSend);
    private ManualResetValueTaskSourceCore<int> _source;

    public SocketSender()
        : base(unsafeSuppressExecutionContextFlow: true)
    {
    }

    /// <summary>Sends all of <paramref name="buffer"/>.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask SendAsync(Socket socket, ReadOnlySequence<byte> buffer)
    {
        if (buffer.IsSingleSegment)
        {
            await SendAllAsync(socket, buffer.First);
            return;
        }
        while (!buffer.IsEmpty)
        {
            _segments.Clear();
            var total = 0L;
            ReadOnlyMemory<byte> notArray = default;
            foreach (var memory in buffer)
            {
                if (_segments.Count == MaxSegmentsPerSend)
                {
                    break;
                }
                if (memory.IsEmpty)
                {
                    continue;
                }
                if (!MemoryMarshal.TryGetArray(memory, out var segment))
                {
                    if (_segments.Count == 0)
                    {
                        notArray = memory;
                    }
                    break;
                }
                _segments.Add(segment);
                total += segment.Count;
            }
            if (_segments.Count == 0)
            {
                // A segment not backed by an array (a custom pool): send it on its own.
                await SendAllAsync(socket, notArray);
                buffer = buffer.Slice(notArray.Length);
                continue;
            }
            var sent = await SendListAsync(socket);
            if (sent != total)
            {
                throw new SocketException((int)SocketError.ConnectionReset);
            }
            buffer = buffer.Slice(total);
        }
    }

    private static async ValueTask SendAllAsync(Socket socket, ReadOnlyMemory<byte> memory)
    {
        while (!memory.IsEmpty)
        {
            var n = await socket.SendAsync(memory, SocketFlags.None);
            memory = memory[n..];
        }
    }

    private ValueTask<int> SendListAsync(Socket socket)
    {
        _source.Reset();
        BufferList = _segments;
        if (!socket.SendAsync(this))
        {
            Complete();
        }
        return new ValueTask<int>(this, _source.Version);
    }

    protected override void OnCompleted(SocketAsyncEventArgs e) => Complete();

    private void Complete()
    {
        if (SocketError == SocketError.Success)
        {
            _source.SetResult(BytesTransferred);
        }
        else
        {
            _source.SetException(new SocketException((int)SocketError));
        }
    }

    int IValueTaskSource<int>.GetResult(short token) => _source.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource<int>.GetStatus(short token) => _source.GetStatus(token);

    void IValueTaskSource<int>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _source.OnCompleted(continuation, state, token, flags);
}
