using System.IO.Pipelines;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Transport.Memory;

/// <summary>
/// One end of a simulated connection. Without latency the two ends are two cross-wired buffers (as Orleans'
/// DuplexPipe.CreateConnectionPair, with a <see cref="MemoryBuffer"/> in place of each <c>Pipe</c>: no memory held
/// while empty): what one end writes, the other reads, with no copy and no task in between.
/// With latency each direction gets a <see cref="DelayLine"/>.
/// </summary>
/// <remarks>
/// Observable behaviour matches <c>TcpConnection</c>: the remote's disposal or completed output completes
/// <see cref="Input"/>; disposal completes reading here (pending reads report <c>IsCompleted</c>), delivers the
/// bytes already flushed and then the end, and later flushes report <c>IsCompleted</c>; a partition fails reads and
/// flushes on both ends with a <see cref="TransportException"/> (<see cref="TransportError.ConnectionReset"/>).
/// </remarks>
internal sealed class MemoryConnection : IRawConnection
{
    private readonly MemoryConnectionPair _pair;
    private readonly MemoryPipeReader _input;
    private readonly MemoryPipeWriter _output;
    private int _disposed;

    public MemoryConnection(MemoryConnectionPair pair, Multiaddr local, Multiaddr remote, MemoryPipeReader input, MemoryPipeWriter output)
    {
        _pair = pair;
        Local = local;
        Remote = remote;
        _input = input;
        _output = output;
    }

    public Multiaddr Local { get; }

    public Multiaddr Remote { get; }

    internal MemoryConnectionPair Pair => _pair;

    public PipeReader Input => _input;

    public PipeWriter Output => _output;

    internal void Break(Exception error)
    {
        _output.Close(error);
        _input.Close(error);
    }

    public ValueTask DisposeAsync()
    {
        Close();
        return ValueTask.CompletedTask;
    }

    /// <summary>What disposal does; synchronous (nothing here waits).</summary>
    internal void Close()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _output.Close(null);
            _input.Close(null);
            _pair.OnDisposed();
        }
    }
}

/// <summary>Both ends of a simulated connection, as the network tracks it to break it on a partition.</summary>
internal sealed class MemoryConnectionPair
{
    private readonly SimulatedNetwork _network;
    private int _open = 2;

    public MemoryConnectionPair(SimulatedNetwork network, LinkKey link, Multiaddr dialer, Multiaddr listener, LinkConditions conditions,
        SimulatedNetworkOptions options, long seed)
    {
        _network = network;
        Link = link;
        // Buffers in place of pipes: a connection end holds no memory while nothing is buffered.
        var toListener = new MemoryBuffer(network.PipeScheduler, options);
        var toDialer = new MemoryBuffer(network.PipeScheduler, options);
        MemoryPipeWriter dialerOutput, listenerOutput;
        if (!conditions.IsPerfect)
        {
            // Under an event loop a link's timer hands the due bytes straight to a reader that waits for them.
            if (EventLoop.Of(network.PipeScheduler) is { } loop && network.TimeProvider is VirtualClock clock)
            {
                toListener.WakeReaderInline(loop, clock);
                toDialer.WakeReaderInline(loop, clock);
            }
            var fromDialer = new MemoryBuffer(network.PipeScheduler, options);
            var fromListener = new MemoryBuffer(network.PipeScheduler, options);
            dialerOutput = new MemoryPipeWriter(fromDialer.Writer, new DelayLine(fromDialer.Reader, toListener.Writer, network.TimeProvider, conditions, seed));
            listenerOutput = new MemoryPipeWriter(fromListener.Writer, new DelayLine(fromListener.Reader, toDialer.Writer, network.TimeProvider, conditions, ~seed));
        }
        else
        {
            dialerOutput = new MemoryPipeWriter(toListener.Writer, null);
            listenerOutput = new MemoryPipeWriter(toDialer.Writer, null);
        }
        DialerSide = new MemoryConnection(this, dialer, listener, new MemoryPipeReader(toDialer), dialerOutput);
        ListenerSide = new MemoryConnection(this, listener, dialer, new MemoryPipeReader(toListener), listenerOutput);
    }

    public LinkKey Link { get; }

    public MemoryConnection DialerSide { get; }

    public MemoryConnection ListenerSide { get; }

    public void Break(Exception error)
    {
        DialerSide.Break(error);
        ListenerSide.Break(error);
    }

    public void OnDisposed()
    {
        if (Interlocked.Decrement(ref _open) == 0)
        {
            _network.Forget(this);
        }
    }
}
