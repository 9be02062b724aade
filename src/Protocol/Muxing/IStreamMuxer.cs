using System.IO.Pipelines;
using Potluck.Protocol.Runtime;

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

    /// <summary>The next inbound stream, or null once the connection is closed (its expected end, without an exception).</summary>
    async ValueTask<IMuxedStream?> TryAcceptStreamAsync(CancellationToken ct)
    {
        try
        {
            return await AcceptStreamAsync(ct);
        }
        catch (PeerGoneException)
        {
            return null;
        }
    }

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

/// <summary>
/// A stream's input that can end a read with the stream's failure (a reset, a closed connection) as a value:
/// <see cref="ReadOrFailureAsync"/> returns what was buffered with <see cref="ReadResult.IsCompleted"/> set, and
/// <see cref="Failure"/> says why it ended (null after the remote's clean FIN). For readers that meet such ends all the
/// time (a long-lived gossip stream ends when its connection is trimmed), where an exception per end is waste.
/// </summary>
public interface IFailureAsValueReader
{
    /// <summary>The failure that ended the stream's input; null while open or after a clean end.</summary>
    Exception? Failure { get; }

    /// <summary>As <see cref="PipeReader.ReadAsync"/>, but a failed stream completes the read instead of throwing.</summary>
    ValueTask<ReadResult> ReadOrFailureAsync(CancellationToken ct);
}

/// <summary>
/// A stream's input that a long-lived reader can park on without a <see cref="ValueTask"/> or a delegate of its own
/// (<see cref="Framing.ParkedFrameReader"/>): the read as <see cref="IFailureAsValueReader.ReadOrFailureAsync"/> with no token.
/// </summary>
internal interface IParkingReader
{
    /// <summary>True with the result when one is ready; else <paramref name="continuation"/> runs once it is, and <see cref="TakeParked"/> takes it.</summary>
    bool ReadOrPark(out ReadResult result, Action<object?> continuation, object state);

    /// <summary>The result of the read left pending by <see cref="ReadOrPark"/>.</summary>
    ReadResult TakeParked();
}
