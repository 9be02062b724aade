using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using Potluck.Protocol.Muxing;

namespace Potluck.Protocol.Yamux;

/// <summary>
/// One yamux stream as the application sees it. Input is a pipe the connection's read loop fills (bounded
/// by the receive window, so it never pauses); reading and advancing it credits the window back. Output is
/// a pipe the connection's write loop drains as send window allows; it pauses the application at
/// <see cref="YamuxOptions.StreamSendBuffer"/>.
/// </summary>
internal sealed class YamuxStream : YamuxStreamState, IMuxedStream
{
    /// <summary>Largest buffer one delivery asks the input pipe for (big payloads fill few, large pooled buffers).</summary>
    internal const int InputSegmentSize = 64 * 1024;

    /// <summary>Smallest input buffer: small messages do not hold a large buffer.</summary>
    private const int InputMinimumSegmentSize = 4 * 1024;

    private readonly YamuxConnection _connection;
    private readonly InputReader _input;
    private readonly OutputWriter _output;

    /// <param name="pipes">Where the application's pipe continuations run (the runtime's: the thread pool, or the loop).</param>
    public YamuxStream(YamuxConnection connection, uint id, bool outbound, YamuxOptions options, PipeScheduler pipes)
        : base(id, outbound)
    {
        _connection = connection;
        var shared = SharedPipeOptions.For(pipes);
        InPipe = new Pipe(shared.Input);
        OutPipe = new Pipe(shared.Output(options.StreamSendBuffer));
        _input = new InputReader(this);
        _output = new OutputWriter(this);
    }

    /// <summary>
    /// The pipes' options, one set per scheduler for every stream of every connection (PipeOptions are immutable): each
    /// stream used to make two of its own, 72 bytes each, about a tenth of a simulated node's per-connection objects.
    /// </summary>
    private sealed class SharedPipeOptions
    {
        private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<PipeScheduler, SharedPipeOptions> ByScheduler = new();
        private readonly PipeScheduler _pipes;
        private Sized? _output;

        private SharedPipeOptions(PipeScheduler pipes)
        {
            _pipes = pipes;
            Input = new PipeOptions(readerScheduler: pipes, writerScheduler: pipes, pauseWriterThreshold: 0, resumeWriterThreshold: 0,
                                    minimumSegmentSize: InputMinimumSegmentSize, useSynchronizationContext: false);
        }

        public static SharedPipeOptions For(PipeScheduler pipes) => ByScheduler.GetValue(pipes, p => new SharedPipeOptions(p));

        /// <summary>The input pipe's: never pauses the read loop (the receive window bounds what it holds).</summary>
        public PipeOptions Input { get; }

        /// <summary>The output pipe's for a send buffer of <paramref name="sendBuffer"/> bytes (the last size asked for is kept).</summary>
        public PipeOptions Output(long sendBuffer)
        {
            if (_output is { } kept && kept.SendBuffer == sendBuffer)
            {
                return kept.Options;
            }
            var made = new PipeOptions(
                readerScheduler: _pipes,
                writerScheduler: _pipes,
                pauseWriterThreshold: sendBuffer,
                resumeWriterThreshold: Math.Max(1, sendBuffer / 2),
                useSynchronizationContext: false);
            _output = new Sized(sendBuffer, made);
            return made;
        }

        private sealed record Sized(long SendBuffer, PipeOptions Options);
    }

    /// <summary>Filled by the read loop, under the connection lock.</summary>
    internal Pipe InPipe { get; }

    /// <summary>Drained by the write loop only.</summary>
    internal Pipe OutPipe { get; }

    /// <summary>Under the connection lock: the read side's writer has been completed.</summary>
    internal bool InputWriterDone { get; set; }

    /// <summary>Write loop only: the output pipe's reader has been completed.</summary>
    internal bool OutputReaderDone { get; set; }

    uint IMuxedStream.Id => Id;

    public PipeReader Input => _input;

    public PipeWriter Output => _output;

    public void Reset() => _connection.ResetStream(this);

    public ValueTask DisposeAsync()
    {
        _output.Complete();
        _input.Complete();
        return ValueTask.CompletedTask;
    }

    public override string ToString() => $"yamux stream {Id}";

    /// <summary>Counts what the application consumes so the window can be credited back.</summary>
    private sealed class InputReader(YamuxStream stream) : PipeReader
    {
        private readonly PipeReader _inner = stream.InPipe.Reader;
        private ReadOnlySequence<byte> _last;
        private bool _completed;

        public override bool TryRead(out ReadResult result)
        {
            if (_inner.TryRead(out result))
            {
                _last = result.Buffer;
                return true;
            }

            return false;
        }

        public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
        {
            var pending = _inner.ReadAsync(cancellationToken);
            if (pending.IsCompletedSuccessfully)
            {
                var result = pending.Result;
                _last = result.Buffer;
                return new ValueTask<ReadResult>(result);
            }

            return Awaited(pending);
        }

        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
        private async ValueTask<ReadResult> Awaited(ValueTask<ReadResult> pending)
        {
            var result = await pending;
            _last = result.Buffer;
            return result;
        }

        public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

        public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
        {
            var count = _last.Slice(_last.Start, consumed).Length;
            _inner.AdvanceTo(consumed, examined);
            _last = default;
            if (count > 0)
            {
                stream._connection.OnConsumed(stream, count);
            }
        }

        public override void CancelPendingRead() => _inner.CancelPendingRead();

        public override void Complete(Exception? exception = null)
        {
            if (_completed)
            {
                return;
            }

            _completed = true;
            _inner.Complete(exception);
            stream._connection.OnInputCompleted(stream);
        }
    }

    /// <summary>Tells the connection when data is committed or the output is completed (FIN).</summary>
    private sealed class OutputWriter(YamuxStream stream) : PipeWriter
    {
        private readonly PipeWriter _inner = stream.OutPipe.Writer;
        private bool _completed;

        public override void Advance(int bytes) => _inner.Advance(bytes);

        public override Memory<byte> GetMemory(int sizeHint = 0) => _inner.GetMemory(sizeHint);

        public override Span<byte> GetSpan(int sizeHint = 0) => _inner.GetSpan(sizeHint);

        public override void CancelPendingFlush() => _inner.CancelPendingFlush();

        public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
        {
            // The pipe commits the bytes synchronously, then may wait for room; signal in between.
            var pending = _inner.FlushAsync(cancellationToken);
            stream._connection.OnOutputReady(stream);
            return pending;
        }

        public override void Complete(Exception? exception = null)
        {
            if (_completed)
            {
                return;
            }

            _completed = true;
            _inner.Complete();
            if (exception is null)
            {
                stream._connection.OnOutputReady(stream);
            }
            else
            {
                stream.Reset();
            }
        }
    }
}
