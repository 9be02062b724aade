using System.IO.Pipelines;
using System.Runtime.ExceptionServices;
using System.Threading.Tasks.Sources;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Transport.Memory;

/// <summary>
/// One direction of a simulated connection (or one half of a delayed one) in place of a <see cref="Pipe"/>: a queue of
/// pooled segments (<see cref="SegmentQueue"/>, as a yamux stream's buffers) that holds memory only while it holds
/// bytes, one parked read and one parked flush. Semantics as a pipe's with the same options: bytes in order, a flush
/// commits and wakes the reader, a flush waits once <c>pauseWriterThreshold</c> bytes are unconsumed and resumes below
/// <c>resumeWriterThreshold</c>; a completed writer ends reading after its bytes (a failed one: reads throw its error);
/// a completed reader makes flushes report <c>IsCompleted</c> (or throw its error); cancellation by token or by
/// <c>CancelPendingRead</c>/<c>CancelPendingFlush</c>. Continuations run on the given <see cref="PipeScheduler"/>,
/// scheduled exactly where a pipe schedules its own, so the simulation's order of events is kept.
/// </summary>
internal sealed class MemoryBuffer : PipeReader, IValueTaskSource<ReadResult>
{
    private readonly PipeScheduler _scheduler;
    private readonly long _pauseThreshold;   // 0: never pauses
    private readonly long _resumeThreshold;
    private readonly int _segmentSize;

    /// <summary>
    /// The least an empty buffer's first segment holds (more when the write asks for more; less when
    /// <see cref="SimulatedNetworkOptions.SegmentSize"/> is smaller). Each segment after it is at least twice the one before,
    /// up to <see cref="SimulatedNetworkOptions.SegmentSize"/>.
    /// </summary>
    internal const int FirstSegmentSize = 512;
    private readonly BufferWriter _writer;
    private SegmentQueue _queue;
    private bool _examinedAll;
    private bool _memoryOut;

    private bool _readerDone;
    private Exception? _readerError;
    private bool _readCancelPending;
    private ParkedWait _readWait;

    private bool _writerDone;
    private Exception? _writerError;
    private EventLoop? _inlineReaderLoop;
    private bool _flushCancelPending;
    private ParkedWait _flushWait;

    public MemoryBuffer(PipeScheduler scheduler, long pauseWriterThreshold, long resumeWriterThreshold, int segmentSize)
    {
        _scheduler = scheduler;
        _pauseThreshold = pauseWriterThreshold;
        _resumeThreshold = resumeWriterThreshold;
        _segmentSize = segmentSize;
        _writer = new BufferWriter(this);
    }

    public MemoryBuffer(PipeScheduler scheduler, SimulatedNetworkOptions options)
        : this(scheduler, options.PauseWriterThreshold, options.ResumeWriterThreshold, options.SegmentSize)
    {
    }

    public PipeReader Reader => this;

    /// <summary>
    /// A flush made while <paramref name="loop"/> runs on the calling thread wakes a waiting reader inline, within the
    /// flushing event, not as an item of its own, when that changes no order: nothing is queued on the loop and no other
    /// timer of <paramref name="clock"/> is due at this instant, so the wake-up would have been the very next item. For the
    /// far end of a <see cref="DelayLine"/>, whose flushes come only from the link's timer (or its resumption after a
    /// pause): the delivery and the read it wakes become one event. Otherwise (timers sharing an instant) it is posted, as
    /// before.
    /// </summary>
    internal void WakeReaderInline(EventLoop loop, VirtualClock clock)
    {
        _inlineReaderLoop = loop;
        _inlineReaderClock = clock;
    }

    private VirtualClock? _inlineReaderClock;

    private bool CanWakeReaderInline() =>
        _inlineReaderLoop is { IsRunningOnThisThread: true } loop && loop.Queued == 0 && _inlineReaderClock?.HasTimerDueNow == false;

    public PipeWriter Writer => _writer;

    /// <summary>The version of the read <see cref="ReadAsync"/> left pending (its <see cref="IValueTaskSource{TResult}"/> token).</summary>
    internal short PendingReadVersion
    {
        get
        {
            lock (Sync)
            {
                return _readWait.Version;
            }
        }
    }

    private object Sync => this;

    /// <summary>Committed bytes not yet consumed (tests).</summary>
    internal long Buffered
    {
        get
        {
            lock (Sync)
            {
                return _queue.Length;
            }
        }
    }

    /// <summary>Whether a pooled segment is held now (tests: an idle buffer holds none).</summary>
    internal bool HoldsMemory
    {
        get
        {
            lock (Sync)
            {
                return _queue.HoldsMemory;
            }
        }
    }

    // ---- reader ----

    public override bool TryRead(out ReadResult result)
    {
        lock (Sync)
        {
            ThrowIfReaderDone();
            if (_readWait.Waiting)
            {
                throw new InvalidOperationException("a read is already pending on this buffer");
            }
            if (_queue.Length > 0 || _writerDone || _readCancelPending)
            {
                result = ReadResultLocked();
                return true;
            }
            result = default;
            return false;
        }
    }

    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        short version;
        lock (Sync)
        {
            ThrowIfReaderDone();
            if (_readWait.Waiting)
            {
                throw new InvalidOperationException("a read is already pending on this buffer");
            }
            if ((_queue.Length > 0 && !_examinedAll) || _writerDone || _readCancelPending)
            {
                return new ValueTask<ReadResult>(ReadResultLocked());
            }
            if (cancellationToken.IsCancellationRequested)
            {
                return ValueTask.FromCanceled<ReadResult>(cancellationToken);
            }
            version = _readWait.Begin(cancellationToken, static (s, _) => ((MemoryBuffer)s!).OnReadTokenCanceled(), this);
        }
        return new ValueTask<ReadResult>(this, version);
    }

    private void OnReadTokenCanceled()
    {
        ParkedContinuation.Scheduled wake = default;
        lock (Sync)
        {
            wake = _readWait.CancelByToken();
        }
        wake.Run(_scheduler);
    }

    public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
    {
        ParkedContinuation.Scheduled wake = default;
        lock (Sync)
        {
            ThrowIfReaderDone();
            _queue.Consume(consumed, examined, keepTail: _memoryOut, out var examinedAll);
            _examinedAll = examinedAll;
            if (_queue.Length < _resumeThreshold)
            {
                wake = SignalFlushLocked();
            }
        }
        wake.Run(_scheduler);
    }

    public override void CancelPendingRead()
    {
        ParkedContinuation.Scheduled wake;
        lock (Sync)
        {
            _readCancelPending = true;
            wake = SignalReadLocked();
        }
        wake.Run(_scheduler);
    }

    public override void Complete(Exception? exception = null)
    {
        ParkedContinuation.Scheduled wake;
        lock (Sync)
        {
            if (_readerDone)
            {
                return;
            }
            _readerDone = true;
            _readerError = exception;
            _queue.Discard(keepTail: _memoryOut);
            wake = SignalFlushLocked();
        }
        wake.Run(_scheduler);
    }

    ValueTaskSourceStatus IValueTaskSource<ReadResult>.GetStatus(short token)
    {
        lock (Sync)
        {
            return _readWait.Status(token);
        }
    }

    void IValueTaskSource<ReadResult>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
    {
        ParkedContinuation.Scheduled run = default;
        lock (Sync)
        {
            run = _readWait.OnCompleted(continuation, state, token, flags);
        }
        run.Run(_scheduler);
    }

    ReadResult IValueTaskSource<ReadResult>.GetResult(short token)
    {
        CancellationTokenRegistration registration;
        ReadResult result = default;
        Exception? error = null;
        lock (Sync)
        {
            if (_readWait.End(token, "this read's result was already taken", out registration) is { } tokenCanceled)
            {
                error = tokenCanceled;
            }
            else if (_readerDone)
            {
                error = new InvalidOperationException("reading is not allowed after the reader was completed");
            }
            else
            {
                try
                {
                    result = ReadResultLocked();
                }
                catch (Exception e)
                {
                    error = e;
                }
            }
        }
        registration.Dispose();
        if (error is not null)
        {
            ExceptionDispatchInfo.Throw(error);
        }
        return result;
    }

    private ReadResult ReadResultLocked()
    {
        if (_writerError is not null)
        {
            ExceptionDispatchInfo.Throw(_writerError);
        }
        var canceled = _readCancelPending;
        _readCancelPending = false;
        return new ReadResult(_queue.Committed, canceled, _writerDone);
    }

    private ParkedContinuation.Scheduled SignalReadLocked() => _readWait.Signal();

    private void ThrowIfReaderDone()
    {
        if (_readerDone)
        {
            throw new InvalidOperationException("reading is not allowed after the reader was completed");
        }
    }

    // ---- writer ----

    private Memory<byte> GetMemory(int sizeHint)
    {
        if (sizeHint < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(sizeHint));
        }
        lock (Sync)
        {
            ThrowIfWriterDone();
            // An empty buffer's first segment is small: most flushes are one small frame (a gossip control message, an
            // acknowledgement), and every connection of a mesh may hold one in flight at the same instant (a node that
            // announces a subscription to all its peers); a longer burst goes on in segments that double up to full size.
            var minimum = _queue.HoldsMemory ? Math.Max(FirstSegmentSize, 2L * _queue.TailCapacity) : FirstSegmentSize;
            var memory = _queue.GetMemory(sizeHint, (int)Math.Min(_segmentSize, minimum));
            _memoryOut = true;
            return memory;
        }
    }

    private void Advance(int bytes)
    {
        lock (Sync)
        {
            ThrowIfWriterDone();
            _memoryOut = false;
            _queue.Advance(bytes);
        }
    }

    private ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken)
    {
        ParkedContinuation.Scheduled wake = default;
        ValueTask<FlushResult> result;
        lock (Sync)
        {
            ThrowIfWriterDone();
            _memoryOut = false;
            if (_readerDone)
            {
                _queue.Discard(keepTail: false);
                if (_readerError is not null)
                {
                    return ValueTask.FromException<FlushResult>(_readerError);
                }
                var canceled = _flushCancelPending;
                _flushCancelPending = false;
                return new ValueTask<FlushResult>(new FlushResult(canceled, isCompleted: true));
            }
            if (_queue.Uncommitted > 0)
            {
                _queue.Commit();
                _examinedAll = false;
                wake = SignalReadLocked();
            }
            if (_flushCancelPending)
            {
                _flushCancelPending = false;
                result = new ValueTask<FlushResult>(new FlushResult(isCanceled: true, isCompleted: false));
            }
            else if (_pauseThreshold <= 0 || _queue.Length < _pauseThreshold)
            {
                result = new ValueTask<FlushResult>(new FlushResult(isCanceled: false, isCompleted: false));
            }
            else if (cancellationToken.IsCancellationRequested)
            {
                result = ValueTask.FromCanceled<FlushResult>(cancellationToken);
            }
            else
            {
                var version = _flushWait.Begin(cancellationToken, static (s, _) => ((MemoryBuffer)s!).OnFlushTokenCanceled(), this);
                result = new ValueTask<FlushResult>(_writer, version);
            }
        }
        if (wake.Continuation is not null && CanWakeReaderInline())
        {
            wake.RunInline(_inlineReaderLoop!);
        }
        else
        {
            wake.Run(_scheduler);
        }
        return result;
    }

    private void OnFlushTokenCanceled()
    {
        ParkedContinuation.Scheduled wake = default;
        lock (Sync)
        {
            wake = _flushWait.CancelByToken();
        }
        wake.Run(_scheduler);
    }

    private void CancelPendingFlush()
    {
        ParkedContinuation.Scheduled wake;
        lock (Sync)
        {
            _flushCancelPending = true;
            wake = SignalFlushLocked();
        }
        wake.Run(_scheduler);
    }

    private void CompleteWriter(Exception? exception)
    {
        ParkedContinuation.Scheduled wake;
        lock (Sync)
        {
            if (_writerDone)
            {
                return;
            }
            _writerDone = true;
            _writerError = exception;
            _memoryOut = false;
            if (_readerDone)
            {
                _queue.Clear();
            }
            else
            {
                _queue.Commit(); // what was written is delivered before the end, as a pipe's Complete does
                _queue.Consume(0, keepTail: false); // an empty tail is returned now
            }
            wake = SignalReadLocked();
        }
        wake.Run(_scheduler);
    }

    private ValueTaskSourceStatus GetFlushStatus(short token)
    {
        lock (Sync)
        {
            return _flushWait.Status(token);
        }
    }

    private void OnFlushCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
    {
        ParkedContinuation.Scheduled run = default;
        lock (Sync)
        {
            run = _flushWait.OnCompleted(continuation, state, token, flags);
        }
        run.Run(_scheduler);
    }

    private FlushResult GetFlushResult(short token)
    {
        CancellationTokenRegistration registration;
        FlushResult result = default;
        Exception? error = null;
        lock (Sync)
        {
            if (_flushWait.End(token, "this flush's result was already taken", out registration) is { } tokenCanceled)
            {
                error = tokenCanceled;
            }
            else if (_readerDone && _readerError is not null)
            {
                error = _readerError;
            }
            else
            {
                var canceled = _flushCancelPending;
                _flushCancelPending = false;
                result = new FlushResult(canceled, _readerDone);
            }
        }
        registration.Dispose();
        if (error is not null)
        {
            ExceptionDispatchInfo.Throw(error);
        }
        return result;
    }

    private ParkedContinuation.Scheduled SignalFlushLocked() => _flushWait.Signal();

    private void ThrowIfWriterDone()
    {
        if (_writerDone)
        {
            throw new InvalidOperationException("writing is not allowed after the writer was completed");
        }
    }

    /// <summary>The writing end; all its state is the buffer's, under the buffer's lock.</summary>
    private sealed class BufferWriter(MemoryBuffer buffer) : PipeWriter, IValueTaskSource<FlushResult>
    {
        public override Memory<byte> GetMemory(int sizeHint = 0) => buffer.GetMemory(sizeHint);

        public override Span<byte> GetSpan(int sizeHint = 0) => buffer.GetMemory(sizeHint).Span;

        public override void Advance(int bytes) => buffer.Advance(bytes);

        public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default) => buffer.FlushAsync(cancellationToken);

        public override void CancelPendingFlush() => buffer.CancelPendingFlush();

        public override void Complete(Exception? exception = null) => buffer.CompleteWriter(exception);

        ValueTaskSourceStatus IValueTaskSource<FlushResult>.GetStatus(short token) => buffer.GetFlushStatus(token);

        void IValueTaskSource<FlushResult>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            buffer.OnFlushCompleted(continuation, state, token, flags);

        FlushResult IValueTaskSource<FlushResult>.GetResult(short token) => buffer.GetFlushResult(token);
    }
}
