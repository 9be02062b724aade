using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.ExceptionServices;
using System.Threading.Tasks.Sources;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Muxing;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Yamux;

/// <summary>
/// One yamux session over a secured pipe: a read loop that parses headers and streams data payloads straight
/// into stream inputs (never buffering a whole frame), and a writer that batches control frames and
/// window-limited data from all streams into the pipe, flushing once per batch. All state lives in a
/// <see cref="YamuxSession"/> guarded by one lock. See <see cref="YamuxMuxer"/> for the spec and deviations.
/// <para>
/// An idle connection costs little: the writer is not a loop parked on a queue but runs only while there is something
/// to write (scheduled on the runtime's <see cref="System.IO.Pipelines.PipeScheduler"/> when work appears, gone again when
/// the work is written), the read loop is the connection's only pending task, the accept queue grows only as streams
/// arrive, and the ping table exists only while a ping is in flight.
/// </para>
/// <para>
/// Accepting is one parked wait, not a channel: inbound streams wait in a queue made when the first one arrives (at most
/// the accept backlog: the session refuses a SYN beyond it), and <see cref="AcceptStreamAsync"/> parks one continuation
/// (one accept at a time, as the host's accept loop does) that the read loop wakes.
/// </para>
/// </summary>
public sealed partial class YamuxConnection : IMuxedConnection, IValueTaskSource<IMuxedStream?>, IYamuxStreamFactory
{
    private readonly IDuplexPipe _transport;
    private readonly PipeReader _in;
    private readonly PipeWriter _out;
    private readonly YamuxOptions _options;
    private readonly ILogger<YamuxConnection> _logger;
    private readonly NodeRuntime _runtime;
    private readonly TimeProvider _time;
    private readonly YamuxSession _session;
    private readonly object _sync = new();
    // Under the lock. Inbound streams not yet accepted, bounded by the session's accept backlog (it refuses a SYN beyond
    // it); null until the first arrives. A channel here cost ~1 KiB per connection (its queue, reader, writer, their
    // reusable operations and the parked reader's registration) for what is one waiter and, mostly, nothing queued.
    private Queue<YamuxStream>? _backlog;
    private readonly int _backlogLimit;
    private ParkedWait _acceptWait;
    private Exception? _acceptClosed;
    // Under the lock; null while no ping is in flight or no opener waits (most of a connection's life).
    private Dictionary<uint, (TaskCompletionSource<long> Reply, long Sent)>? _pings;
    private List<TaskCompletionSource>? _ackWaiters;
    // The writer's flush is cut short once the close timeout has passed after closing began: the close arms _closeTimer,
    // under the lock, and its callback cancels the transport's pending flush (CancelPendingFlush), which is what a token
    // registered around each flush did. No CancellationTokenSource: one per connection, registered and unregistered
    // around every flush, kept its registration table and a free callback node for the connection's life (~190 B).
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Task _run;
    // The start-up RTT probe while it runs; null once it has ended (its finished task was 72 B per connection for life).
    private Task? _rtt;
    // The writer (see WriteAsync): _wakePending is set when there is something to write, _writer is 1 while a writer
    // runs (or is scheduled) and 2 once it has ended for good; _writerDone (under the lock, made by BeginClose) completes
    // when the last writer has ended. Until the read loop first waits (_writerStarted) work only queues: the read loop
    // then starts the first writer itself, where the parked write loop used to begin, so events keep their order.
    private int _wakePending;
    private int _writer = 1;
    private bool _writerStarted;
    private TaskCompletionSource? _writerDone;
    private uint _nextPing;
    private bool _closing;
    private Exception? _closeError;

    // Read-loop state: the payload still to come for the current data frame.
    private YamuxStream? _payloadTarget;
    private long _payloadRemaining;
    private bool _payloadDeliver;
    private bool _payloadFin;

    internal YamuxConnection(IDuplexPipe transport, bool initiator, YamuxOptions options, ILogger<YamuxConnection> logger, NodeRuntime runtime,
        IMemoryScope? budget = null)
    {
        _transport = transport;
        _in = transport.Input;
        _out = transport.Output;
        _options = options;
        _logger = logger;
        _runtime = runtime;
        _time = runtime.Time;
        IsInitiator = initiator;
        _backlogLimit = Math.Max(1, options.AcceptBacklog);
        _session = new YamuxSession(options, initiator, this, budget); // the connection makes its streams: no delegate per connection
        // Both end on their own when the session closes (neither throws); disposal waits for the session loop.
        // The session loop is the read loop, then the close-out once the last writer has ended.
        _run = runtime.StartLoop(ReadLoopAsync);
        _rtt = options.MeasureRttOnStart ? runtime.StartLoop(MeasureRttAsync) : null;
    }

    private YamuxStream NewStream(uint id, bool outbound) => new(this, id, outbound, _options, _runtime.PipeScheduler);

    YamuxStreamState IYamuxStreamFactory.Create(uint id, bool outbound) => NewStream(id, outbound);

    /// <summary>True on the side that dialled (odd stream ids).</summary>
    public bool IsInitiator { get; }

    /// <summary>The last measured round-trip time, or null before the first ping reply.</summary>
    public TimeSpan? RoundTripTime { get; private set; }

    /// <summary>Completes when the connection is closed; faults with the reason (e.g. a protocol violation).</summary>
    public Task Completion => _completion.Task;

    /// <summary>Bytes this connection has reserved: grown windows and buffered bytes beyond the free amount.</summary>
    public long ReservedMemory
    {
        get
        {
            lock (_sync)
            {
                return _session.ReservedMemory;
            }
        }
    }

    /// <summary>Whether the accept queue exists (tests: none until an inbound stream arrives).</summary>
    internal bool HoldsAcceptQueue
    {
        get
        {
            lock (_sync)
            {
                return _backlog is not null;
            }
        }
    }

    /// <summary>Whether the session's control or dirty-stream queue holds an array now (tests: none while idle).</summary>
    internal bool HoldsQueueArrays
    {
        get
        {
            lock (_sync)
            {
                return _session.HoldsQueueArrays;
            }
        }
    }

    /// <summary>Whether a writer runs or is scheduled now (false while idle: an idle connection holds no write loop).</summary>
    internal bool IsWriterRunning => Volatile.Read(ref _writer) == 1;

    public int StreamCount
    {
        get
        {
            lock (_sync)
            {
                return _session.StreamCount;
            }
        }
    }

    /// <summary>
    /// Opens a stream without waiting for the remote's ACK, except that while
    /// <see cref="YamuxOptions.MaxAckBacklog"/> of ours are unacknowledged it waits for one.
    /// </summary>
    public ValueTask<IMuxedStream> OpenStreamAsync(CancellationToken ct)
    {
        if (ct.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<IMuxedStream>(ct);
        }

        try
        {
            lock (_sync)
            {
                ThrowIfClosing();
                if (!_session.AckBacklogFull)
                {
                    var stream = (YamuxStream)_session.OpenOutbound();
                    Wake();
                    return ValueTask.FromResult<IMuxedStream>(stream);
                }
            }
        }
        catch (Exception ex)
        {
            return ValueTask.FromException<IMuxedStream>(ex);
        }

        return OpenWhenAcknowledgedAsync(ct);
    }

    private async ValueTask<IMuxedStream> OpenWhenAcknowledgedAsync(CancellationToken ct)
    {
        while (true)
        {
            TaskCompletionSource waiter;
            lock (_sync)
            {
                ThrowIfClosing();
                if (!_session.AckBacklogFull)
                {
                    var stream = (YamuxStream)_session.OpenOutbound();
                    Wake();
                    return stream;
                }

                waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                (_ackWaiters ??= []).Add(waiter);
            }

            await LoopSafeWait.WaitAsync(waiter.Task, ct);
        }
    }

    /// <summary>Under the lock: lets every opener waiting on the ACK backlog look again.</summary>
    private void ReleaseAckWaiters()
    {
        if (_ackWaiters is not { } waiters)
        {
            return;
        }

        _ackWaiters = null;
        foreach (var waiter in waiters)
        {
            waiter.TrySetResult();
        }
    }

    /// <summary>
    /// The next inbound stream (streams that arrived before the connection closed are still handed out, then
    /// <see cref="PeerGoneException"/>); one accept at a time (a second while one waits throws
    /// <see cref="InvalidOperationException"/>).
    /// </summary>
    public ValueTask<IMuxedStream> AcceptStreamAsync(CancellationToken ct)
    {
        var accept = TryAcceptStreamAsync(ct);
        if (!accept.IsCompletedSuccessfully)
        {
            return AcceptOrThrowAsync(accept);
        }

        return accept.Result is { } stream ? ValueTask.FromResult(stream) : ValueTask.FromException<IMuxedStream>(AcceptClosed());
    }

    private async ValueTask<IMuxedStream> AcceptOrThrowAsync(ValueTask<IMuxedStream?> accept) => await accept ?? throw AcceptClosed();

    /// <summary>
    /// The next inbound stream, or null once the connection is closed and the streams that arrived before are taken (its
    /// normal end: nothing thrown); one accept at a time, as <see cref="AcceptStreamAsync"/>.
    /// </summary>
    public ValueTask<IMuxedStream?> TryAcceptStreamAsync(CancellationToken ct)
    {
        if (ct.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<IMuxedStream?>(ct);
        }

        short version;
        lock (_sync)
        {
            if (_acceptWait.Waiting)
            {
                return ValueTask.FromException<IMuxedStream?>(new InvalidOperationException("an accept is already pending on this connection"));
            }

            if (_backlog is { Count: > 0 } || _acceptClosed is not null)
            {
                return TakeAcceptedLocked(out var wake) is { } ready ? Accepted(ready, wake) : ValueTask.FromResult<IMuxedStream?>(null);
            }

            version = _acceptWait.Begin(ct, static (s, _) => ((YamuxConnection)s!).OnAcceptCanceled(), this);
        }

        return new ValueTask<IMuxedStream?>(this, version);
    }

    private ValueTask<IMuxedStream?> Accepted(YamuxStream stream, bool wake)
    {
        if (wake)
        {
            Wake();
        }

        return ValueTask.FromResult<IMuxedStream?>(stream);
    }

    /// <summary>Under the lock: the next queued stream, acknowledged to the session (null once closed and drained).</summary>
    private YamuxStream? TakeAcceptedLocked(out bool wake)
    {
        wake = false;
        if (_backlog is not { Count: > 0 } backlog)
        {
            return null;
        }

        var stream = backlog.Dequeue();
        wake = _session.OnAccepted(stream);
        return stream;
    }

    private PeerGoneException AcceptClosed() => new("yamux: the connection is closed", _acceptClosed);

    /// <summary>Under the lock: queues an inbound stream for the accept (dropped once closed, as a completed channel did) and wakes it.</summary>
    private ParkedContinuation.Scheduled EnqueueAcceptedLocked(YamuxStream stream)
    {
        var backlog = _backlog ??= new Queue<YamuxStream>(1);
        if (_acceptClosed is not null || backlog.Count >= _backlogLimit)
        {
            return default;
        }

        backlog.Enqueue(stream);
        return _acceptWait.Signal();
    }

    private void OnAcceptCanceled()
    {
        ParkedContinuation.Scheduled wake;
        lock (_sync)
        {
            wake = _acceptWait.CancelByToken();
        }

        wake.Run(_runtime.PipeScheduler);
    }

    ValueTaskSourceStatus IValueTaskSource<IMuxedStream?>.GetStatus(short token)
    {
        lock (_sync)
        {
            return _acceptWait.Status(token);
        }
    }

    void IValueTaskSource<IMuxedStream?>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
    {
        ParkedContinuation.Scheduled run;
        lock (_sync)
        {
            run = _acceptWait.OnCompleted(continuation, state, token, flags);
        }

        run.Run(_runtime.PipeScheduler);
    }

    IMuxedStream? IValueTaskSource<IMuxedStream?>.GetResult(short token)
    {
        CancellationTokenRegistration registration;
        YamuxStream? stream = null;
        Exception? error;
        var wake = false;
        lock (_sync)
        {
            error = _acceptWait.End(token, "this accept's result was already taken", out registration);
            if (error is null)
            {
                stream = TakeAcceptedLocked(out wake); // null: closed and drained
            }
        }

        registration.Dispose();
        if (error is not null)
        {
            ExceptionDispatchInfo.Throw(error);
        }

        if (wake)
        {
            Wake();
        }

        return stream;
    }

    public ValueTask GoAwayAsync(CancellationToken ct)
    {
        lock (_sync)
        {
            if (_closing || _session.LocalGoAway)
            {
                return ValueTask.CompletedTask;
            }

            _session.GoAway(YamuxGoAwayCode.Normal);
        }

        Wake();
        return ValueTask.CompletedTask;
    }

    /// <summary>Sends a ping and returns the round-trip time measured on the injected <see cref="TimeProvider"/>.</summary>
    public async ValueTask<TimeSpan> PingAsync(CancellationToken ct) =>
        await TryPingAsync(ct) ?? throw new PeerGoneException("yamux: the connection is closed", _closeError);

    /// <summary>A ping's answer on a closed connection (no timestamp is this).</summary>
    private const long PingClosed = long.MinValue;

    /// <summary><see cref="PingAsync"/>, null when the connection closes before the answer (its expected end, not thrown).</summary>
    private async ValueTask<TimeSpan?> TryPingAsync(CancellationToken ct)
    {
        var reply = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        uint opaque;
        long sent;
        lock (_sync)
        {
            if (_closing)
            {
                return null;
            }
            opaque = ++_nextPing;
            sent = _time.GetTimestamp();
            (_pings ??= [])[opaque] = (reply, sent);
            _session.Ping(opaque);
        }

        Wake();
        long received;
        await using (ct.Register(() => CancelPing(opaque, ct)))
        {
            received = await reply.Task;
        }

        if (received == PingClosed)
        {
            return null;
        }

        var rtt = _time.GetElapsedTime(sent, received);
        RoundTripTime = rtt;
        lock (_sync)
        {
            _session.Rtt = received - sent;
        }

        return rtt;
    }

    /// <summary>Sends GoAway, flushes what is queued (bounded by <see cref="YamuxOptions.CloseTimeout"/>) and closes.</summary>
    public async ValueTask DisposeAsync()
    {
        BeginClose(null, YamuxGoAwayCode.Normal);
        // The reason is on Completion; disposal itself does not throw (neither the session loop nor the writer does).
        await _run;
        if (Volatile.Read(ref _rtt) is { } rtt)
        {
            await rtt;
        }
    }

    internal void OnConsumed(YamuxStream stream, long count)
    {
        bool wake;
        lock (_sync)
        {
            wake = _session.OnConsumed(stream, count, _time.GetTimestamp());
        }

        if (wake)
        {
            Wake();
        }
    }

    internal void OnInputCompleted(YamuxStream stream)
    {
        bool wake;
        lock (_sync)
        {
            wake = _session.OnLocalInputCompleted(stream, _time.GetTimestamp());
        }

        if (wake)
        {
            Wake();
        }
    }

    internal void OnOutputReady(YamuxStream stream)
    {
        bool wake;
        lock (_sync)
        {
            wake = _session.OnOutputReady(stream);
        }

        if (wake)
        {
            Wake();
        }
    }

    internal void ResetStream(YamuxStream stream)
    {
        lock (_sync)
        {
            if (!_session.ResetLocal(stream))
            {
                return;
            }

            ReleaseAckWaiters();
            CompleteInput(stream, new StreamResetException($"yamux stream {stream.Id} was reset locally"));
        }

        Wake();
    }

    private void ThrowIfClosing()
    {
        if (_closing)
        {
            throw new PeerGoneException("yamux: the connection is closed", _closeError);
        }
    }

    /// <summary>There is something to write: starts a writer unless one runs (it looks again before it ends) or all have ended.</summary>
    private void Wake()
    {
        if (Interlocked.Exchange(ref _wakePending, 1) == 0 && Interlocked.CompareExchange(ref _writer, 1, 0) == 0)
        {
            // One work item on the runtime's scheduler (the thread pool, or the simulation's loop), where the parked
            // write loop's continuation used to run: the same order of events, and nothing held while idle.
            var pipes = _runtime.PipeScheduler;
            if (pipes == PipeScheduler.ThreadPool)
            {
                // The same queue PipeScheduler.ThreadPool uses, without its per-call work item: a busy stream restarts writers often.
                ThreadPool.UnsafeQueueUserWorkItem(_writerItem ??= new WriterWorkItem(this), preferLocal: false);
            }
            else
            {
                pipes.Schedule(static state => ((YamuxConnection)state!).StartWriter(), this);
            }
        }
    }

    // WriteAsync never throws, and the session loop learns of the last writer's end through _writerDone, so its task is
    // not kept: while a writer waits for a flush its state is the flush's continuation; once all is written, nothing.
    private void StartWriter() => _ = WriteAsync();

    /// <summary>Made the first time a writer is queued on the thread pool, then reused.</summary>
    private WriterWorkItem? _writerItem;

    private sealed class WriterWorkItem(YamuxConnection connection) : IThreadPoolWorkItem
    {
        public void Execute() => connection.StartWriter();
    }

    // Continuations run inline: the close-out goes on in the last writer's turn, as it did when it awaited both loops.
    private static TaskCompletionSource NewWriterDone() => new(TaskCreationOptions.None);

    /// <summary>Read loop only, once: lets writers start, and runs the first one here if work is already queued.</summary>
    private void StartFirstWriter()
    {
        _writerStarted = true;
        Interlocked.Exchange(ref _writer, 0);
        if (Volatile.Read(ref _wakePending) == 1 && Interlocked.CompareExchange(ref _writer, 1, 0) == 0)
        {
            StartWriter();
        }
    }

    private void CancelPing(uint opaque, CancellationToken ct)
    {
        TaskCompletionSource<long>? reply = null;
        lock (_sync)
        {
            reply = TakePing(opaque);
        }

        reply?.TrySetCanceled(ct);
    }

    private async Task MeasureRttAsync()
    {
        try
        {
            // No token: the close-out fails every ping still in flight, so this one ends with the connection at the latest
            // (with the close token it left a registration node and table on that token for the connection's life), and a
            // ping cut off by the close ends with null, not an exception.
            await TryPingAsync(CancellationToken.None);
        }
        catch (Exception ex)
        {
            // The connection closed first (auto-tuning simply stays off), unless it is a bug.
            if (Failures.Classify(ex).Kind == FailureKind.Internal)
            {
                LogUnexpected(ex);
            }
        }
        finally
        {
            // Its last step: disposal has nothing left to wait for (the task that ends next holds no more state). When the
            // probe ends before the constructor stores its task (the thread pool), that finished task simply stays.
            Volatile.Write(ref _rtt, null);
        }
    }

    /// <summary>Under the lock: completes a stream's input once (null = clean FIN).</summary>
    private static void CompleteInput(YamuxStream stream, Exception? error)
    {
        stream.In.CompleteWriter(error);
    }

    /// <summary>After the read loop (which ends only once closing has begun): waits for the last writer, then closes what is below.</summary>
    private async Task CloseOutAsync()
    {
        Task writerDone;
        lock (_sync)
        {
            writerDone = _writerDone!.Task;
        }

        // Neither the read loop nor a writer throws; each ends the connection through BeginClose.
        await writerDone;

        // Output first: completing a stream-backed reader may dispose the stream under the writer.
        CompleteQuietly(_out);
        CompleteQuietly(_in);

        List<TaskCompletionSource<long>> pings;
        lock (_sync)
        {
            pings = _pings?.Values.Select(p => p.Reply).ToList() ?? [];
            _pings = null;
        }

        foreach (var ping in pings)
        {
            ping.TrySetResult(PingClosed); // PingAsync throws its PeerGoneException; the RTT probe just ends
        }

        if (_transport is IAsyncDisposable disposable)
        {
            try
            {
                await disposable.DisposeAsync();
            }
            catch (Exception ex)
            {
                DisposeFailed(ex);
            }
        }

        lock (_sync)
        {
            _closedOut = true;
            _closeTimer?.Dispose();
        }
        lock (_sync)
        {
            _session.ReleaseAllMemory();
        }

        if (_closeError is null)
        {
            _completion.TrySetResult();
        }
        else
        {
            _completion.TrySetException(_closeError);
        }
    }

    /// <summary>
    /// Starts closing once: fails every stream's input and the accept queue, queues GoAway, stops the
    /// read loop, and lets the write loop drain (bounded by the close timeout).
    /// </summary>
    private void BeginClose(Exception? error, YamuxGoAwayCode? goAway)
    {
        ParkedContinuation.Scheduled acceptWake;
        lock (_sync)
        {
            if (_closing)
            {
                return;
            }

            if (goAway is { } code && !_session.LocalGoAway)
            {
                _session.GoAway(code);
            }

            _closing = true;
            _closeError = error;
            _writerDone ??= NewWriterDone();
            var closed = new PeerGoneException("yamux: the connection is closed", error);
            foreach (var state in _session.Streams)
            {
                CompleteInput((YamuxStream)state, closed);
            }

            _acceptClosed = closed; // accepting ends without an exception once drained (TryAcceptStreamAsync: null)
            acceptWake = _acceptWait.Signal();
            ReleaseAckWaiters();
        }

        acceptWake.Run(_runtime.PipeScheduler);

        StartCloseTimer();

        _in.CancelPendingRead();
        Wake();
    }

    private async Task ReadLoopAsync()
    {
        Exception? error = null;
        YamuxGoAwayCode? goAway = null;
        try
        {
            while (true)
            {
                var reading = _in.ReadAsync();
                if (!_writerStarted && !reading.IsCompleted)
                {
                    StartFirstWriter();
                }

                var result = await reading;
                if (result.IsCanceled)
                {
                    break;
                }

                var buffer = result.Buffer;
                var consumed = Process(buffer);
                _in.AdvanceTo(consumed, buffer.End);
                if (result.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (Exception ex)
        {
            // The connection's one catch site for what it reads: whatever happened ends the connection, and says why.
            var failure = Failures.Classify(ex);
            switch (failure.Kind)
            {
                case FailureKind.ProtocolViolation:
                    LogViolation(failure.Reason);
                    error = ex;
                    goAway = YamuxGoAwayCode.ProtocolError;
                    break;
                case FailureKind.Internal:
                    LogUnexpected(ex);
                    error = ex;
                    goAway = YamuxGoAwayCode.InternalError;
                    break;
                default:
                    // The secured channel below ended (the peer went away, or we closed it): no GoAway can reach it.
                    LogTransportFailed(failure.Reason);
                    error = ex as PeerGoneException ?? new PeerGoneException("yamux: the underlying connection failed", ex);
                    break;
            }
        }
        finally
        {
            var target = _payloadTarget;
            if (target is not null)
            {
                lock (_sync)
                {
                    CompleteInput(target, new PeerGoneException("yamux: the connection closed inside a data frame"));
                }
            }
        }

        BeginClose(error, goAway);
        if (!_writerStarted)
        {
            StartFirstWriter();
        }

        await CloseOutAsync();
    }

    /// <summary>Parses as many frames as <paramref name="buffer"/> holds; returns the consumed position.</summary>
    private SequencePosition Process(in ReadOnlySequence<byte> buffer)
    {
        var reader = new SequenceReader<byte>(buffer);
        while (true)
        {
            if (_payloadRemaining > 0)
            {
                var count = Math.Min(_payloadRemaining, reader.Remaining);
                if (count == 0)
                {
                    break;
                }

                if (_payloadDeliver)
                {
                    Deliver(_payloadTarget!, reader.UnreadSequence.Slice(0, count));
                }

                reader.Advance(count);
                _payloadRemaining -= count;
                if (_payloadRemaining == 0)
                {
                    EndPayload();
                }

                continue;
            }

            var status = YamuxHeader.TryRead(ref reader, out var header, out var error);
            if (status == DecodeStatus.NeedMoreData)
            {
                break;
            }

            if (status == DecodeStatus.Invalid)
            {
                throw new ProtocolViolationException("yamux", error ?? "invalid header", ViolationCode.Malformed, BlastRadius.Connection);
            }

            OnHeader(header);
        }

        return reader.Position;
    }

    private void OnHeader(in YamuxHeader header)
    {
        InboundOutcome outcome;
        ParkedContinuation.Scheduled acceptWake = default;
        lock (_sync)
        {
            outcome = _session.OnHeader(header, _time.GetTimestamp());
            if (outcome.Violation is not null)
            {
                throw new ProtocolViolationException("yamux", outcome.Violation, outcome.ViolationCode, BlastRadius.Connection);
            }

            var stream = (YamuxStream?)outcome.Stream;
            if (outcome.Opened is not null)
            {
                acceptWake = EnqueueAcceptedLocked((YamuxStream)outcome.Opened);
            }
            else if ((header.Flags & YamuxFlags.Syn) != 0 && outcome.Stream is null && header.Type is YamuxFrameType.Data or YamuxFrameType.WindowUpdate)
            {
                LogRefused(header.StreamId);
            }

            if (outcome.AckBacklogFreed)
            {
                ReleaseAckWaiters();
            }

            if (outcome.RemoteReset && stream is not null)
            {
                CompleteInput(stream, new StreamResetException($"yamux stream {stream.Id} was reset by the remote"));
            }

            _payloadTarget = stream;
            _payloadRemaining = outcome.PayloadLength;
            _payloadDeliver = outcome.Deliver && stream is not null;
            _payloadFin = outcome.FinAfterPayload;
            if (outcome.PayloadLength == 0)
            {
                EndPayloadLocked();
            }
        }

        acceptWake.Run(_runtime.PipeScheduler);
        if (outcome.PingAcked)
        {
            CompletePing(outcome.PingOpaque);
        }

        if (outcome.GoAwayReceived)
        {
            LogGoAway(outcome.GoAwayCode);
        }

        if (outcome.WorkQueued)
        {
            Wake();
        }
    }

    private void Deliver(YamuxStream stream, in ReadOnlySequence<byte> payload)
    {
        lock (_sync)
        {
            if (stream.InputWriterDone || stream.LocalInputDone)
            {
                // The application stopped reading: hand the window back so the remote is not stalled.
                if (_session.OnDiscarded(stream, payload.Length, _time.GetTimestamp()))
                {
                    Wake();
                }

                return;
            }

            if (!_session.TryBuffer(stream, payload.Length))
            {
                // No memory for these bytes in this connection's or the host's scopes: this stream is reset (RST
                // queued by the session), the rest of the frame is dropped, and the connection and its other streams go on.
                _payloadDeliver = false;
                LogResetForMemory(stream.Id, payload.Length);
                ReleaseAckWaiters();
                CompleteInput(stream, new ResourceLimitException("yamux memory", _options.MaxConnectionMemory,
                    $"yamux: stream {stream.Id} was reset: no memory for {payload.Length} more buffered bytes (the application has not read what it holds)"));
                Wake();
                return;
            }

            // Into the stream's pooled segments (the window bounds them, so this never waits).
            stream.In.Write(payload);
        }
    }

    private void EndPayload()
    {
        lock (_sync)
        {
            EndPayloadLocked();
        }
    }

    private void EndPayloadLocked()
    {
        if (_payloadFin && _payloadTarget is not null)
        {
            CompleteInput(_payloadTarget, null);
        }

        _payloadTarget = null;
        _payloadFin = false;
        _payloadDeliver = false;
    }

    /// <summary>Under the lock: removes a ping in flight (and the table with the last one).</summary>
    private TaskCompletionSource<long>? TakePing(uint opaque)
    {
        if (_pings is null || !_pings.Remove(opaque, out var entry))
        {
            return null;
        }

        if (_pings.Count == 0)
        {
            _pings = null;
        }

        return entry.Reply;
    }

    private void CompletePing(uint opaque)
    {
        var now = _time.GetTimestamp();
        TaskCompletionSource<long>? reply = null;
        lock (_sync)
        {
            reply = TakePing(opaque);
        }

        reply?.TrySetResult(now);
    }

    /// <summary>
    /// A writer: drains what is queued, flushing per batch, and ends when nothing is left (a later <see cref="Wake"/> starts
    /// another), or, once closing has begun, after the last drain (bounded by the close timeout); the last one fails every
    /// stream's output and completes <see cref="_writerDone"/>. At most one runs at a time (<see cref="_writer"/>). Never throws.
    /// </summary>
    private async Task WriteAsync()
    {
        Exception? error = null;
        try
        {
            while (true)
            {
                Volatile.Write(ref _wakePending, 0);
                bool closing;
                lock (_sync)
                {
                    closing = _closing;
                }

                // The drain, inline (a nested async method would add a second state machine per flush that waits).
                long batched = 0;
                while (TryFrameBatch(ref batched))
                {
                    await FlushAsync();
                    batched = 0;
                }

                if (batched > 0)
                {
                    await FlushAsync();
                }

                if (closing)
                {
                    break;
                }

                // Written out: end, unless more work came meanwhile and no new writer has taken it.
                Interlocked.Exchange(ref _writer, 0);
                if (Volatile.Read(ref _wakePending) == 0 || Interlocked.CompareExchange(ref _writer, 1, 0) != 0)
                {
                    return;
                }
            }
        }
        catch (OperationCanceledException)
        {
            // The close timeout cut the final flush short.
        }
        catch (Exception ex)
        {
            error = ex;
        }

        // The last writer: nothing is written from now on.
        Volatile.Write(ref _writer, 2);
        try
        {
            AbortAllOutputs();
        }
        catch (Exception ex)
        {
            error ??= ex;
        }

        if (error is not null)
        {
            var failure = Failures.Classify(error);
            if (failure.Kind == FailureKind.Internal)
            {
                LogUnexpected(error);
                BeginClose(error, null);
            }
            else
            {
                LogTransportFailed(failure.Reason);
                BeginClose(error as PeerGoneException ?? new PeerGoneException("yamux: the underlying connection failed", error), null);
            }
        }

        TaskCompletionSource done;
        lock (_sync)
        {
            done = _writerDone ??= NewWriterDone();
        }

        done.TrySetResult();
    }

    /// <summary>Writer only: frames what is queued, flushing per <see cref="YamuxOptions.WriteBatchSize"/>; false when nothing is left to flush.</summary>
    private bool TryFrameBatch(ref long batched)
    {
        while (true)
        {
            YamuxStream stream;
            StreamWork work;
            lock (_sync)
            {
                while (_session.TryTakeControl(out var control))
                {
                    WriteHeader(control);
                    batched += YamuxHeader.Size;
                }

                if (!_session.TryTakeDirty(out var state, out work))
                {
                    return false;
                }

                stream = (YamuxStream)state;
            }

            batched += WriteStream(stream, work);
            if (batched >= _options.WriteBatchSize)
            {
                return true;
            }
        }
    }

    private async ValueTask FlushAsync()
    {
        if (Volatile.Read(ref _closeTimedOut))
        {
            _out.CancelPendingFlush(); // as a token already cancelled did when registered before each flush
        }

        var result = await _out.FlushAsync();
        if (result.IsCanceled)
        {
            // The close timeout (OnCloseTimeout) cut it short.
            throw new OperationCanceledException("yamux: the close timeout cut the final flush short");
        }

        if (result.IsCompleted)
        {
            throw new PeerGoneException("yamux: the remote stopped reading");
        }
    }

    /// <summary>Write loop only: frames one stream's pending control and up to one frame of data.</summary>
    private long WriteStream(YamuxStream stream, in StreamWork work)
    {
        if (work.Rst)
        {
            WriteHeader(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Rst, stream.Id, 0));
        }

        if (work.AbortOutput)
        {
            AbortOutput(stream, new StreamResetException($"yamux stream {stream.Id} was reset"));
            return work.Rst ? YamuxHeader.Size : 0;
        }

        long written = 0;
        if (work.ControlFlags != YamuxFlags.None || work.WindowDelta != 0)
        {
            WriteHeader(new YamuxHeader(YamuxFrameType.WindowUpdate, work.ControlFlags, stream.Id, work.WindowDelta));
            written += YamuxHeader.Size;
        }

        if (!stream.Out.TryPeek(out var buffer, out var completed))
        {
            return written;
        }

        var count = Math.Min(buffer.Length, Math.Min(work.SendWindow, _options.MaxFramePayload));
        var fin = completed && count == buffer.Length;
        if (count > 0)
        {
            WriteHeader(new YamuxHeader(YamuxFrameType.Data, YamuxFlags.None, stream.Id, (uint)count));
            foreach (var segment in buffer.Slice(0, count))
            {
                _out.Write(segment.Span);
            }

            written += YamuxHeader.Size + count;
        }

        if (fin)
        {
            // FIN travels in its own window update after the data, as go-yamux and js-yamux send it:
            // js-yamux applies a data frame's FIN before its payload and then refuses the payload.
            WriteHeader(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Fin, stream.Id, 0));
            written += YamuxHeader.Size;
        }

        stream.Out.Consume(count);
        if (fin)
        {
            stream.Out.CompleteReader(null);
        }

        lock (_sync)
        {
            _session.OnDataSent(stream, count, fin, buffer.Length > count);
        }

        return written;
    }

    private void CompleteQuietly(PipeReader reader)
    {
        try
        {
            reader.Complete();
        }
        catch (Exception ex)
        {
            DisposeFailed(ex);
        }
    }

    private void CompleteQuietly(PipeWriter writer)
    {
        try
        {
            writer.Complete();
        }
        catch (Exception ex)
        {
            DisposeFailed(ex);
        }
    }

    /// <summary>Closing what is below failed: expected when it is already gone (Debug), a bug otherwise (Error).</summary>
    private void DisposeFailed(Exception ex)
    {
        if (Failures.Classify(ex).Kind == FailureKind.Internal)
        {
            LogUnexpected(ex);
        }
        else
        {
            LogTransportDisposeFailed(ex);
        }
    }

    private void WriteHeader(in YamuxHeader header)
    {
        header.Write(_out.GetSpan(YamuxHeader.Size));
        _out.Advance(YamuxHeader.Size);
    }

    private static void AbortOutput(YamuxStream stream, Exception error)
    {
        stream.Out.CompleteReader(error);
    }

    /// <summary>Write loop only, at exit: every stream's application writer learns the connection is gone.</summary>
    private void AbortAllOutputs()
    {
        List<YamuxStream> streams;
        lock (_sync)
        {
            streams = _session.Streams.Concat(_session.DirtyStreams).Cast<YamuxStream>().Distinct().ToList();
        }

        var closed = new PeerGoneException("yamux: the connection is closed", _closeError);
        foreach (var stream in streams)
        {
            AbortOutput(stream, closed);
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "yamux connection closed: protocol violation: {Reason}")]
    private partial void LogViolation(string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "yamux connection closed: the underlying pipe failed: {Reason}")]
    private partial void LogTransportFailed(string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "yamux connection failed unexpectedly")]
    private partial void LogUnexpected(Exception exception);

    [LoggerMessage(Level = LogLevel.Debug, Message = "yamux: disposing the underlying connection failed")]
    private partial void LogTransportDisposeFailed(Exception exception);

    [LoggerMessage(Level = LogLevel.Debug, Message = "yamux: refused inbound stream {StreamId} (cap, backlog or GoAway)")]
    private partial void LogRefused(uint streamId);

    [LoggerMessage(Level = LogLevel.Debug, Message = "yamux: reset stream {StreamId}: no memory for {Bytes} more buffered bytes")]
    private partial void LogResetForMemory(uint streamId, long bytes);

    [LoggerMessage(Level = LogLevel.Debug, Message = "yamux: the remote sent GoAway ({Code})")]
    private partial void LogGoAway(YamuxGoAwayCode code);

    // Added after the others: the compiler-generated names of the methods above stay as they were (events_hash hashes them).
    /// <summary>
    /// Cuts the writer's flush short once the close timeout has passed (<see cref="OnCloseTimeout"/>); nothing once the
    /// connection has fully closed.
    /// </summary>
    private void StartCloseTimer()
    {
        lock (_sync)
        {
            if (_closedOut || _closeTimer is not null)
            {
                return;
            }
            var restore = !ExecutionContext.IsFlowSuppressed();
            var flow = restore ? ExecutionContext.SuppressFlow() : default;
            try
            {
                _closeTimer = _time.CreateTimer(static s => ((YamuxConnection)s!).OnCloseTimeout(), this, _options.CloseTimeout, Timeout.InfiniteTimeSpan);
            }
            finally
            {
                if (restore)
                {
                    flow.Undo();
                }
            }
        }
    }

    /// <summary>
    /// The close timeout has passed: the writer's flush in progress (or its next one: a pipe's cancellation waits for it)
    /// ends as cancelled, and the writer with it, as the cancelled token did; nothing once fully closed.
    /// </summary>
    private void OnCloseTimeout()
    {
        lock (_sync)
        {
            if (_closedOut || _closeTimedOut)
            {
                return;
            }
            _closeTimedOut = true;
        }
        try
        {
            _out.CancelPendingFlush();
        }
        catch (Exception ex) when (ex is ObjectDisposedException or InvalidOperationException)
        {
            // Completed meanwhile: nothing left to cut short.
        }
    }

    // Declared last, so the compiler-generated names of the members above (which events_hash hashes) stay as they were.
    private ITimer? _closeTimer;
    private bool _closedOut;
    private bool _closeTimedOut;
}
