using System.IO.Pipelines;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport.Tcp;

namespace Potluck.Protocol.Tests.Muxing;

/// <summary>Two connected ends of a byte stream, as a transport (memory, TCP, ...) would give them.</summary>
public sealed class PipePair(IDuplexPipe client, IDuplexPipe server, Func<ValueTask>? dispose = null) : IAsyncDisposable
{
    public IDuplexPipe Client { get; } = client;

    public IDuplexPipe Server { get; } = server;

    public ValueTask DisposeAsync() => dispose?.Invoke() ?? ValueTask.CompletedTask;
}

/// <summary>The seam the muxer conformance suite runs over: memory pipes and loopback TCP.</summary>
public interface IPipePairFactory
{
    /// <summary>
    /// Upper bound on bytes the transport itself can hold in flight one way (pipe or socket buffers); the
    /// backpressure test adds it to the muxer's own bound.
    /// </summary>
    long TransportBufferBytes { get; }

    ValueTask<PipePair> CreateAsync();
}

/// <summary>Two cross-wired <see cref="Pipe"/>s (as Orleans' DuplexPipe.CreateConnectionPair).</summary>
public sealed class MemoryPipePairFactory : IPipePairFactory
{

    public long TransportBufferBytes => 2 * 64 * 1024;

    public ValueTask<PipePair> CreateAsync()
    {
        var (client, server) = CreatePair();
        return ValueTask.FromResult(new PipePair(client, server));
    }

    /// <param name="scheduler">Where continuations run: the thread pool, or under a driver its loop's pipe scheduler.</param>
    public static (IDuplexPipe Client, IDuplexPipe Server) CreatePair(PipeScheduler? scheduler = null)
    {
        var options = new PipeOptions(
            readerScheduler: scheduler ?? PipeScheduler.ThreadPool,
            writerScheduler: scheduler ?? PipeScheduler.ThreadPool,
            pauseWriterThreshold: 64 * 1024,
            resumeWriterThreshold: 32 * 1024,
            useSynchronizationContext: false);
        var toServer = new Pipe(options);
        var toClient = new Pipe(options);
        return (new DuplexPipe(toClient.Reader, toServer.Writer), new DuplexPipe(toServer.Reader, toClient.Writer));
    }

    public override string ToString() => "memory";
}

public sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
{
    public PipeReader Input { get; } = input;

    public PipeWriter Output { get; } = output;
}

/// <summary>
/// A connected pair of <see cref="TcpTransport"/> connections on loopback, on real time and the thread pool (real
/// sockets stay on real time). Smaller pipe thresholds than the defaults keep the backpressure test's bound tight.
/// </summary>
public sealed class TcpPipePairFactory : IPipePairFactory
{
    private static readonly TcpTransportOptions Options = new() { PauseWriterThreshold = 128 * 1024, ResumeWriterThreshold = 64 * 1024 };

    /// <summary>Both pipes' thresholds, plus what the kernel may buffer (send and receive, at their autotuning maximum).</summary>
    public long TransportBufferBytes => 2 * Options.PauseWriterThreshold + KernelMaximum("tcp_wmem") + KernelMaximum("tcp_rmem");

    public async ValueTask<PipePair> CreateAsync()
    {
        var transport = new TcpTransport(Options, NodeRuntime.System);
        var listener = await transport.ListenAsync(Multiaddr.Parse("/ip4/127.0.0.1/tcp/0"), CancellationToken.None);
        var accepted = listener.AcceptAsync(CancellationToken.None).AsTask();
        var client = await transport.DialAsync(listener.Address, CancellationToken.None);
        var server = await accepted;
        return new PipePair(client, server, async () =>
        {
            await client.DisposeAsync();
            await server.DisposeAsync();
            await listener.DisposeAsync();
        });
    }

    /// <summary>The largest buffer Linux autotunes a TCP socket to (the third field of the sysctl); 16 MiB elsewhere.</summary>
    private static long KernelMaximum(string sysctl)
    {
        try
        {
            var fields = File.ReadAllText($"/proc/sys/net/ipv4/{sysctl}").Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            return long.Parse(fields[2], System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return 16 << 20;
        }
    }

    public override string ToString() => "tcp";
}

/// <summary>The transports the conformance suite runs over: the same cases over memory and over TCP.</summary>
public static class PipePairFactories
{
    public static IEnumerable<IPipePairFactory> All()
    {
        yield return new MemoryPipePairFactory();
        yield return new TcpPipePairFactory();
    }
}
