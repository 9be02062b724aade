using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Transport.Tcp;

/// <summary>
/// A connected socket and two pipes, in the spirit of Kestrel's SocketConnection: a receive loop reads straight
/// into <see cref="Input"/>'s writer memory, a send loop sends whatever the application flushed into
/// <see cref="Output"/> (one gathered send per read). The application owns <see cref="Input"/>'s reader and
/// <see cref="Output"/>'s writer; the loops own the other ends and are the only code that touches the socket.
/// </summary>
/// <remarks>
/// Completion: a remote FIN completes <see cref="Input"/> (its reads report <c>IsCompleted</c>); a reset
/// completes it with a <see cref="TransportException"/>. Completing <see cref="Output"/> sends a FIN after the
/// buffered bytes. Disposal sends what was already flushed (bounded by <see cref="TcpTransportOptions.CloseTimeout"/>),
/// closes the socket and completes the transport's ends of both pipes: pending and later reads of
/// <see cref="Input"/> report <c>IsCompleted</c>, later flushes of <see cref="Output"/> report <c>IsCompleted</c>.
/// The application still completes its own ends.
/// </remarks>
internal sealed class TcpConnection : IRawConnection
{
    /// <summary>Smallest buffer handed to one receive.</summary>
    private const int MinimumReceiveSize = 16 * 1024;

    private readonly Socket _socket;
    private readonly TcpTransportOptions _options;
    private readonly TimeProvider _time;
    private readonly Pipe _inputPipe;
    private readonly Pipe _outputPipe;
    private readonly SocketSender _sender = new();
    private readonly Task _receiveTask;
    private readonly Task _sendTask;
    private Task? _disposeTask;
    private Task? _disposeCore;
    private volatile bool _disposing;

    public TcpConnection(Socket socket, TcpTransportOptions options, NodeRuntime runtime)
    {
        _socket = socket;
        _options = options;
        _time = runtime.Time;
        Local = ToMultiaddr(socket.LocalEndPoint);
        Remote = ToMultiaddr(socket.RemoteEndPoint);

        // The send loop runs inline: a flush by the application sends at once, with no thread hop, and then
        // returns (it only sends what is there). Everything else resumes on the runtime's pipe scheduler (the thread
        // pool in a real node), so application code never runs inside the receive loop, nor the receive loop inside
        // the application's AdvanceTo.
        var pipes = runtime.PipeScheduler;
        _inputPipe = new Pipe(new PipeOptions(
            pool: null,
            readerScheduler: pipes,
            writerScheduler: pipes,
            pauseWriterThreshold: options.PauseWriterThreshold,
            resumeWriterThreshold: options.ResumeWriterThreshold,
            minimumSegmentSize: options.SegmentSize,
            useSynchronizationContext: false));
        _outputPipe = new Pipe(new PipeOptions(
            pool: null,
            readerScheduler: PipeScheduler.Inline,
            writerScheduler: pipes,
            pauseWriterThreshold: options.PauseWriterThreshold,
            resumeWriterThreshold: options.ResumeWriterThreshold,
            minimumSegmentSize: options.SegmentSize,
            useSynchronizationContext: false));

        _receiveTask = ReceiveLoopAsync();
        _sendTask = SendLoopAsync();
    }

    public Multiaddr Local { get; }

    public Multiaddr Remote { get; }

    public PipeReader Input => _inputPipe.Reader;

    public PipeWriter Output => _outputPipe.Writer;

    private static Multiaddr ToMultiaddr(EndPoint? endPoint) =>
        endPoint is IPEndPoint ip ? Multiaddr.FromTcpEndPoint(ip) : Multiaddr.Empty;

    private async Task ReceiveLoopAsync()
    {
        var writer = _inputPipe.Writer;
        Exception? error = null;
        var waitForData = _options.WaitForDataBeforeAllocatingBuffer;
        try
        {
            while (true)
            {
                if (waitForData)
                {
                    await _socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None);
                }
                var memory = writer.GetMemory(MinimumReceiveSize);
                var received = await _socket.ReceiveAsync(memory, SocketFlags.None);
                if (received == 0)
                {
                    break; // the remote sent FIN
                }
                writer.Advance(received);
                // A full buffer means more is probably waiting: skip the zero-byte wait next time.
                waitForData = _options.WaitForDataBeforeAllocatingBuffer && received < memory.Length;
                var flush = await writer.FlushAsync();
                if (flush.IsCompleted || flush.IsCanceled)
                {
                    break; // the application stopped reading, or we are disposing
                }
            }
        }
        catch (Exception e) when (_disposing && e is SocketException or ObjectDisposedException)
        {
            // Our own disposal aborted the receive: a clean end.
        }
        catch (SocketException e)
        {
            error = TransportException.FromSocket(Remote, "receive from", e);
        }
        catch (Exception e)
        {
            error = e;
        }
        await writer.CompleteAsync(error);
    }

    private async Task SendLoopAsync()
    {
        var reader = _outputPipe.Reader;
        Exception? error = null;
        var graceful = true;
        try
        {
            while (true)
            {
                ReadResult result;
                try
                {
                    result = await reader.ReadAsync();
                }
                catch (Exception) when (!_disposing)
                {
                    // The application completed Output with an error: abort instead of a graceful FIN.
                    graceful = false;
                    break;
                }
                var buffer = result.Buffer;
                if (!buffer.IsEmpty)
                {
                    await _sender.SendAsync(_socket, buffer);
                }
                reader.AdvanceTo(buffer.End);
                if (result.IsCompleted || result.IsCanceled)
                {
                    break;
                }
            }
            if (graceful)
            {
                _socket.Shutdown(SocketShutdown.Send);
            }
            else
            {
                _socket.Shutdown(SocketShutdown.Both);
            }
        }
        catch (Exception e) when (_disposing && e is SocketException or ObjectDisposedException)
        {
        }
        catch (SocketException e)
        {
            error = TransportException.FromSocket(Remote, "send to", e);
        }
        catch (Exception e)
        {
            error = e;
        }
        await reader.CompleteAsync(error);
    }

    public ValueTask DisposeAsync()
    {
        var task = _disposeTask;
        if (task is null)
        {
            var mine = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            task = Interlocked.CompareExchange(ref _disposeTask, mine.Task, null);
            if (task is null)
            {
                // Kept, not discarded: it completes `mine` whatever happens, and every caller awaits that.
                _disposeCore = DisposeCoreAsync(mine);
                task = mine.Task;
            }
        }
        return new ValueTask(task);
    }

    private async Task DisposeCoreAsync(TaskCompletionSource done)
    {
        try
        {
            await CloseAsync();
        }
        finally
        {
            _sender.Dispose();
            done.SetResult();
        }
    }

    private async Task CloseAsync()
    {
        _disposing = true;
        // Let the send loop hand what was already flushed to the kernel, then stop.
        _outputPipe.Reader.CancelPendingRead();
        if (!_sendTask.IsCompleted && _options.CloseTimeout != TimeSpan.Zero)
        {
            try
            {
                await _sendTask.WaitAsync(_options.CloseTimeout, _time);
            }
            catch (TimeoutException)
            {
                // The remote is not reading: close anyway.
            }
        }
        // Wake the receive loop if it waits for the application to read, then abort its pending receive.
        _inputPipe.Writer.CancelPendingFlush();
        _socket.Dispose();
        await _receiveTask;
        await _sendTask;
    }
}
