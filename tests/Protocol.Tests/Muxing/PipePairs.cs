using System.IO.Pipelines;

namespace Potluck.Protocol.Tests.Muxing;

/// <summary>Two connected ends of a byte stream, as a transport (memory, TCP, ...) would give them.</summary>
public sealed class PipePair(IDuplexPipe client, IDuplexPipe server, Func<ValueTask>? dispose = null) : IAsyncDisposable
{
    public IDuplexPipe Client { get; } = client;

    public IDuplexPipe Server { get; } = server;

    public ValueTask DisposeAsync() => dispose?.Invoke() ?? ValueTask.CompletedTask;
}

/// <summary>The seam the muxer conformance suite runs over: memory pipes now, loopback TCP later.</summary>
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
    private static readonly PipeOptions Options = new(
        pauseWriterThreshold: 64 * 1024,
        resumeWriterThreshold: 32 * 1024,
        useSynchronizationContext: false);

    public long TransportBufferBytes => 2 * 64 * 1024;

    public ValueTask<PipePair> CreateAsync()
    {
        var (client, server) = CreatePair();
        return ValueTask.FromResult(new PipePair(client, server));
    }

    public static (IDuplexPipe Client, IDuplexPipe Server) CreatePair()
    {
        var toServer = new Pipe(Options);
        var toClient = new Pipe(Options);
        return (new DuplexPipe(toClient.Reader, toServer.Writer), new DuplexPipe(toServer.Reader, toClient.Writer));
    }

    public override string ToString() => "memory";
}

public sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
{
    public PipeReader Input { get; } = input;

    public PipeWriter Output { get; } = output;
}

/// <summary>The transports the conformance suite runs over (a TCP factory joins this list later).</summary>
public static class PipePairFactories
{
    public static IEnumerable<IPipePairFactory> All()
    {
        yield return new MemoryPipePairFactory();
    }
}
