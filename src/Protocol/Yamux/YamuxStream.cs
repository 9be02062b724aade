using System.IO.Pipelines;
using Potluck.Protocol.Muxing;

namespace Potluck.Protocol.Yamux;

/// <summary>
/// One yamux stream as the application sees it. Input holds what the connection's read loop delivered (bounded by the
/// receive window, so delivery never waits); reading and advancing it credits the window back. Output holds what the
/// application wrote until the connection's writer frames it as the send window allows; a flush waits at
/// <see cref="YamuxOptions.StreamSendBuffer"/>. Both are queues of pooled segments that exist only while they hold
/// bytes (<see cref="StreamInput"/>, <see cref="StreamOutput"/>): an idle stream is three small objects, where it was
/// two <see cref="Pipe"/>s (about half a KiB each, empty).
/// </summary>
internal sealed class YamuxStream : YamuxStreamState, IMuxedStream
{
    private readonly YamuxConnection _connection;

    /// <param name="pipes">Where the application's continuations run (the runtime's: the thread pool, or the loop).</param>
    public YamuxStream(YamuxConnection connection, uint id, bool outbound, YamuxOptions options, PipeScheduler pipes)
        : base(id, outbound)
    {
        _connection = connection;
        In = new StreamInput(this, pipes);
        Out = new StreamOutput(this, pipes, options.StreamSendBuffer);
    }

    /// <summary>Filled by the read loop, under the connection lock.</summary>
    internal StreamInput In { get; }

    /// <summary>Drained by the writer only.</summary>
    internal StreamOutput Out { get; }

    /// <summary>Under the connection lock: the read side's writer has been completed.</summary>
    internal bool InputWriterDone => In.WriterDone;

    uint IMuxedStream.Id => Id;

    public PipeReader Input => In;

    public PipeWriter Output => Out;

    public void Reset() => _connection.ResetStream(this);

    public ValueTask DisposeAsync()
    {
        Out.Complete();
        In.Complete();
        return ValueTask.CompletedTask;
    }

    public override string ToString() => $"yamux stream {Id}";

    internal void OnConsumed(long count) => _connection.OnConsumed(this, count);

    internal void OnInputCompleted() => _connection.OnInputCompleted(this);

    internal void OnOutputReady() => _connection.OnOutputReady(this);
}
