using System.IO.Pipelines;

namespace Potluck.Protocol.Muxing;

/// <summary>A stream multiplexer negotiated by multistream-select (e.g. <c>/yamux/1.0.0</c>).</summary>
public interface IStreamMuxer
{
    string ProtocolId { get; }

    /// <summary>Starts a session over a secured channel. The session owns the pipe from now on.</summary>
    IMuxedConnection Create(IDuplexPipe secured, bool initiator);

    /// <summary>
    /// Starts a session whose buffers are reserved from <paramref name="memory"/> (the resource manager's scopes for the
    /// connection); a muxer that reserves nothing ignores it.
    /// </summary>
    IMuxedConnection Create(IDuplexPipe secured, bool initiator, Runtime.IMemoryScope? memory) => Create(secured, initiator);
}

/// <summary>A multiplexed connection: many independent, flow-controlled streams over one pipe.</summary>
public interface IMuxedConnection : IAsyncDisposable
{
    /// <summary>Opens an outbound stream; fails once the connection is closing or the stream cap is reached.</summary>
    ValueTask<IMuxedStream> OpenStreamAsync(CancellationToken ct);

    /// <summary>
    /// The next inbound stream; throws <see cref="OperationCanceledException"/> or <see cref="IOException"/> once closed.
    /// One accept at a time (yamux refuses a second while one waits).
    /// </summary>
    ValueTask<IMuxedStream> AcceptStreamAsync(CancellationToken ct);

    /// <summary>Completes when the connection is closed for any reason; faults carry the reason.</summary>
    Task Completion { get; }

    /// <summary>Tells the remote no new streams will be accepted, then lets existing streams finish.</summary>
    ValueTask GoAwayAsync(CancellationToken ct);

    /// <summary>Number of streams currently open.</summary>
    int StreamCount { get; }
}

/// <summary>
/// One stream. <see cref="IDuplexPipe.Output"/>.Complete() half-closes (FIN); the remote's FIN completes
/// <see cref="IDuplexPipe.Input"/>; <see cref="Reset"/> aborts both directions and reads then throw
/// <see cref="StreamResetException"/>.
/// </summary>
public interface IMuxedStream : IDuplexPipe, IAsyncDisposable
{
    uint Id { get; }

    void Reset();
}
