using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.ExceptionServices;
using System.Threading.Tasks.Sources;
using Potluck.Protocol.Muxing;

namespace Potluck.Protocol.Yamux;

/// <summary>One pooled buffer of a stream's queue: an <see cref="ArrayPool{T}"/> array, returned when its bytes are read.</summary>
internal sealed class PooledSegment : ReadOnlySequenceSegment<byte>
{
    public PooledSegment(int size, long runningIndex)
    {
        Array = ArrayPool<byte>.Shared.Rent(size);
        RunningIndex = runningIndex;
        Memory = ReadOnlyMemory<byte>.Empty;
    }

    public byte[] Array { get; private set; }

    /// <summary>Bytes written into <see cref="Array"/> (what <see cref="ReadOnlySequenceSegment{T}.Memory"/> covers).</summary>
    public int End { get; private set; }

    public int Free => Array.Length - End;

    public void Grow(int bytes)
    {
        End += bytes;
        Memory = Array.AsMemory(0, End);
    }

    public PooledSegment Append(int size)
    {
        var next = new PooledSegment(size, RunningIndex + End);
        Next = next;
        return next;
    }

    public void Return()
    {
        ArrayPool<byte>.Shared.Return(Array);
        Array = [];
        Memory = ReadOnlyMemory<byte>.Empty;
        End = 0;
    }
}

/// <summary>
/// A queue of pooled segments with a committed end: the producer appends at the tail (uncommitted until
/// <see cref="Commit"/>), the consumer sees head → committed end and consumes from the head, which returns whole
/// segments to the pool. Empty: no segment at all. Not thread-safe: the owner holds its lock around every call.
/// </summary>
internal struct SegmentQueue
{
    private PooledSegment? _head;
    private int _headIndex;
    private PooledSegment? _tail;
    // The tail's bytes written but not yet counted in its End (the producer's, until it commits or appends).
    private int _tailPending;
    private PooledSegment? _commitSegment;
    private int _commitIndex;

    /// <summary>Committed bytes not yet consumed.</summary>
    public long Length { get; private set; }

    /// <summary>Bytes written and not yet committed.</summary>
    public long Uncommitted { get; private set; }

    /// <summary>Whether a segment is held (false: the queue holds no memory).</summary>
    public readonly bool HoldsMemory => _head is not null;

    /// <summary>The size of the last segment's buffer (0 when none is held).</summary>
    public readonly int TailCapacity => _tail?.Array.Length ?? 0;

    /// <summary>The committed bytes not yet consumed.</summary>
    public readonly ReadOnlySequence<byte> Committed =>
        Length == 0 ? default : new ReadOnlySequence<byte>(_head!, _headIndex, _commitSegment!, _commitIndex);

    /// <summary>The absolute index of the committed end (for comparing positions).</summary>
    private readonly long CommittedEnd => _commitSegment is null ? 0 : _commitSegment.RunningIndex + _commitIndex;

    /// <summary>Room at the tail for at least <paramref name="sizeHint"/> bytes (a new segment of at least <paramref name="minimumSize"/> if needed).</summary>
    public Memory<byte> GetMemory(int sizeHint, int minimumSize)
    {
        var size = Math.Max(sizeHint, 1);
        if (_tail is null || _tail.Free - _tailPending < size)
        {
            var rent = Math.Max(size, minimumSize);
            if (_tail is null)
            {
                _head = _tail = new PooledSegment(rent, 0);
                _headIndex = 0;
            }
            else
            {
                // The old tail's written bytes become part of its End (the committed end still bounds what is read).
                if (_tailPending > 0)
                {
                    _tail.Grow(_tailPending);
                    _tailPending = 0;
                }

                _tail = _tail.Append(rent);
            }
        }

        return _tail.Array.AsMemory(_tail.End + _tailPending);
    }

    /// <summary>The producer wrote <paramref name="bytes"/> into the memory <see cref="GetMemory"/> returned.</summary>
    public void Advance(int bytes)
    {
        if (bytes < 0 || _tail is null || bytes > _tail.Free - _tailPending)
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), "advanced past the memory that was handed out");
        }

        _tailPending += bytes;
        Uncommitted += bytes;
    }

    /// <summary>Copies <paramref name="source"/> in, asking for room for up to <paramref name="largest"/> bytes at a time.</summary>
    public void Write(ReadOnlySpan<byte> source, int minimumSize, int largest)
    {
        while (!source.IsEmpty)
        {
            var span = GetMemory(Math.Min(source.Length, largest), minimumSize).Span;
            var n = Math.Min(span.Length, source.Length);
            source[..n].CopyTo(span);
            Advance(n);
            source = source[n..];
        }
    }

    /// <summary>Makes everything written visible to the consumer.</summary>
    public void Commit()
    {
        if (_tail is null)
        {
            return;
        }

        if (_tailPending > 0)
        {
            _tail.Grow(_tailPending);
            _tailPending = 0;
        }

        _commitSegment = _tail;
        _commitIndex = _tail.End;
        Length += Uncommitted;
        Uncommitted = 0;
    }

    /// <summary>
    /// Consumes up to <paramref name="consumed"/> (a position in <see cref="Committed"/>, or default for nothing) and
    /// returns the bytes consumed; <paramref name="examinedAll"/> says whether <paramref name="examined"/> reached the
    /// committed end. Whole segments read are returned to the pool, the tail too once everything is read unless
    /// <paramref name="keepTail"/> (the producer may be writing into it).
    /// </summary>
    public long Consume(SequencePosition consumed, SequencePosition examined, bool keepTail, out bool examinedAll)
    {
        var start = _head is null ? 0 : _head.RunningIndex + _headIndex;
        var end = CommittedEnd;
        var consumedAt = Absolute(consumed, start);
        var examinedAt = Absolute(examined, start);
        if (consumedAt < start || consumedAt > end || examinedAt < consumedAt || examinedAt > end || (Length == 0 && consumedAt != start))
        {
            throw new InvalidOperationException("AdvanceTo was given a position outside the buffer last read");
        }

        examinedAll = examinedAt >= end;
        var count = consumedAt - start;
        if (count > 0)
        {
            var segment = (PooledSegment)consumed.GetObject()!;
            var index = consumed.GetInteger();
            while (_head != segment)
            {
                var done = _head!;
                _head = (PooledSegment?)done.Next;
                done.Return();
            }

            _headIndex = index;
            Length -= count;
        }

        Trim(keepTail);
        return count;
    }

    /// <summary>Consumes <paramref name="count"/> committed bytes from the head.</summary>
    public void Consume(long count, bool keepTail)
    {
        if (count < 0 || count > Length)
        {
            throw new ArgumentOutOfRangeException(nameof(count));
        }

        if (count > 0)
        {
            var position = Committed.GetPosition(count);
            Consume(position, position, keepTail, out _);
        }
        else
        {
            Trim(keepTail);
        }
    }

    /// <summary>Returns every segment to the pool: nothing is buffered any more.</summary>
    public void Clear()
    {
        while (_head is not null)
        {
            var done = _head;
            _head = (PooledSegment?)done.Next;
            done.Return();
        }

        this = default;
    }

    /// <summary>Drops what is committed or written (the consumer is gone), keeping only the tail if the producer holds it.</summary>
    public void Discard(bool keepTail)
    {
        if (!keepTail || _tail is null)
        {
            Clear();
            return;
        }

        while (_head != _tail)
        {
            var done = _head!;
            _head = (PooledSegment?)done.Next;
            done.Return();
        }

        _tail.Grow(_tailPending);
        _tailPending = 0;
        _headIndex = _tail.End;
        _commitSegment = _tail;
        _commitIndex = _tail.End;
        Length = 0;
        Uncommitted = 0;
    }

    /// <summary>Drops a head segment read to its end while another follows it, and the last one once all is read (unless kept).</summary>
    private void Trim(bool keepTail)
    {
        while (_head is not null && _headIndex == _head.End && _head != _tail)
        {
            if (_head == _commitSegment)
            {
                // Read to the committed end, but uncommitted bytes follow in later segments: the next one starts at 0.
                _commitSegment = (PooledSegment)_head.Next!;
                _commitIndex = 0;
            }

            var done = _head;
            _head = (PooledSegment)done.Next!;
            _headIndex = 0;
            done.Return();
        }

        if (!keepTail && _head is not null && _head == _tail && _headIndex == _head.End && _tailPending == 0 && Length == 0 && Uncommitted == 0)
        {
            _head.Return();
            this = default;
        }
    }

    private readonly long Absolute(SequencePosition position, long start) =>
        position.GetObject() is PooledSegment segment ? segment.RunningIndex + position.GetInteger() : start;
}

/// <summary>
/// The one continuation a stream buffer's awaiting side parks (a read on the input, a flush on the output), run on the
/// runtime's <see cref="PipeScheduler"/> when signalled, exactly where a <see cref="Pipe"/> schedules its own: the same
/// order of events in the simulation.
/// </summary>
internal struct ParkedContinuation
{
    private Action<object?>? _continuation;
    private object? _state;
    private ExecutionContext? _context;

    public void Park(Action<object?> continuation, object? state, ValueTaskSourceOnCompletedFlags flags)
    {
        _continuation = continuation;
        _state = state;
        _context = (flags & ValueTaskSourceOnCompletedFlags.FlowExecutionContext) != 0 ? ExecutionContext.Capture() : null;
    }

    /// <summary>Takes what is parked (the caller schedules it outside its lock).</summary>
    public Scheduled Take()
    {
        var taken = new Scheduled(_continuation, _state, _context);
        this = default;
        return taken;
    }

    public readonly record struct Scheduled(Action<object?>? Continuation, object? State, ExecutionContext? Context)
    {
        public void Run(PipeScheduler scheduler)
        {
            if (Continuation is null)
            {
                return;
            }

            if (Context is null)
            {
                scheduler.Schedule(Continuation, State);
                return;
            }

            scheduler.Schedule(RunInContext, (Context, Continuation, State));
        }

        /// <summary>Runs it now, inside the event <paramref name="loop"/> is running (see <see cref="Runtime.EventLoop.RunInline"/>).</summary>
        public void RunInline(Runtime.EventLoop loop)
        {
            if (Continuation is null)
            {
                return;
            }

            if (Context is null)
            {
                loop.RunInline(Continuation, State);
                return;
            }

            loop.RunInline(RunInContext, (Context, Continuation, State));
        }

        private static readonly Action<object?> RunInContext = static s =>
        {
            var (context, continuation, state) = ((ExecutionContext, Action<object?>, object?))s!;
            ExecutionContext.Run(context, static c =>
            {
                var (run, st) = ((Action<object?>, object?))c!;
                run(st);
            }, (continuation, state));
        };
    }
}

/// <summary>
/// One awaiting side of a stream buffer (a parked read or a parked flush) as an <see cref="IValueTaskSource{TResult}"/>
/// needs it: whether a wait is pending, its version, whether it was signalled, its continuation and the token it waits
/// with. Every member runs under the owner's lock; a continuation a member returns is run by the caller outside it.
/// </summary>
internal struct ParkedWait
{
    private bool _signalled;
    private bool _canceledByToken;
    private short _version;
    // The token the wait was registered with is the registration's own (CancellationTokenRegistration.Token): no copy
    // of it here (8 B in every buffer, stream input and output, and accept queue).
    private CancellationTokenRegistration _registration;
    private ParkedContinuation _parked;

    /// <summary>A wait is pending (its result not yet taken).</summary>
    public bool Waiting { get; private set; }

    /// <summary>The version of the last wait begun.</summary>
    public readonly short Version => _version;

    /// <summary>
    /// Starts a wait and returns its version; <paramref name="onCanceled"/> is registered with the token under the
    /// owner's lock (re-entered if it fires at once), so a late callback cannot reach a later wait.
    /// </summary>
    public short Begin(CancellationToken token, Action<object?, CancellationToken> onCanceled, object owner)
    {
        Waiting = true;
        _signalled = false;
        _canceledByToken = false;
        var version = ++_version;
        if (token.CanBeCanceled)
        {
            _registration = token.UnsafeRegister(onCanceled, owner);
        }

        return version;
    }

    /// <summary>The token fired: a pending wait not yet signalled ends as cancelled.</summary>
    public ParkedContinuation.Scheduled CancelByToken()
    {
        if (!Waiting || _signalled)
        {
            return default;
        }

        _canceledByToken = true;
        return Signal();
    }

    /// <summary>Wakes a pending wait once; what it parked is returned to run.</summary>
    public ParkedContinuation.Scheduled Signal()
    {
        if (!Waiting || _signalled)
        {
            return default;
        }

        _signalled = true;
        return _parked.Take();
    }

    public readonly ValueTaskSourceStatus Status(short token) =>
        Waiting && token == _version && !_signalled ? ValueTaskSourceStatus.Pending : ValueTaskSourceStatus.Succeeded;

    /// <summary>Parks the awaiter's continuation; returned to run at once when that wait is over already.</summary>
    public ParkedContinuation.Scheduled OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
    {
        _parked.Park(continuation, state, flags);
        return !Waiting || token != _version || _signalled ? _parked.Take() : default;
    }

    /// <summary>
    /// Ends the wait whose result is being taken (<paramref name="taken"/> is the error when it was taken already):
    /// its registration, for the caller to dispose outside the lock, and the cancellation when its token ended it.
    /// </summary>
    public OperationCanceledException? End(short token, string taken, out CancellationTokenRegistration registration)
    {
        if (!Waiting || token != _version)
        {
            throw new InvalidOperationException(taken);
        }

        Waiting = false;
        _parked = default;
        registration = _registration;
        _registration = default;
        OperationCanceledException? canceled = null;
        if (_canceledByToken)
        {
            _canceledByToken = false;
            canceled = new OperationCanceledException(registration.Token);
        }

        return canceled;
    }
}

/// <summary>
/// A yamux stream's input as the application reads it: the bytes the read loop delivered, in pooled segments that go
/// back to the pool as they are read (an idle stream holds none), and one parked read. Reading and advancing credits
/// the window back through the connection. Semantics as a <see cref="Pipe"/>'s reader: a completed writer (FIN) ends
/// reading once the bytes are read, a failed one (reset, connection gone) throws at the next read.
/// </summary>
internal sealed class StreamInput(YamuxStream stream, PipeScheduler scheduler) : PipeReader, IValueTaskSource<ReadResult>, IFailureAsValueReader, IParkingReader
{
    /// <summary>Smallest segment once bytes are buffered: a burst of small deliveries fills few buffers.</summary>
    internal const int MinimumSegmentSize = 4 * 1024;

    /// <summary>
    /// Smallest first segment of an empty buffer: most deliveries are one small message (a gossip control RPC, a DHT
    /// reply) read at once, and every stream of a node may hold one at the same instant.
    /// </summary>
    internal const int FirstSegmentSize = 512;

    /// <summary>Largest segment one delivery asks for (big payloads fill few, large pooled buffers).</summary>
    internal const int LargestSegmentSize = 64 * 1024;

    private SegmentQueue _queue;
    private bool _examinedAll;
    private bool _writerDone;
    private Exception? _writerError;
    private bool _readerDone;
    private bool _cancelPending;
    private ParkedWait _wait;

    /// <summary>The read in progress came from <see cref="ReadOrFailureAsync"/>: it ends with the writer's error as a value.</summary>
    private bool _failureAsValue;

    private object Sync => this;

    /// <summary>Why the stream's input ended, if it failed (a reset, the connection closed); null while open or after a clean FIN.</summary>
    public Exception? Failure
    {
        get
        {
            lock (Sync)
            {
                return _writerError;
            }
        }
    }

    /// <summary>Under the connection lock: the read side's writer has been completed.</summary>
    internal bool WriterDone
    {
        get
        {
            lock (Sync)
            {
                return _writerDone;
            }
        }
    }

    /// <summary>Bytes buffered and not yet consumed (tests).</summary>
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

    /// <summary>Whether a pooled segment is held now (tests: an idle stream holds none).</summary>
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

    /// <summary>The size of the last pooled segment held (0: none; tests).</summary>
    internal int TailCapacity
    {
        get
        {
            lock (Sync)
            {
                return _queue.TailCapacity;
            }
        }
    }

    /// <summary>Read loop: appends delivered payload bytes; dropped once the application has completed its input.</summary>
    internal void Write(in ReadOnlySequence<byte> payload)
    {
        ParkedContinuation.Scheduled wake;
        lock (Sync)
        {
            if (_writerDone)
            {
                throw new InvalidOperationException("a yamux stream input was written after it was completed");
            }

            if (_readerDone)
            {
                return;
            }

            foreach (var segment in payload)
            {
                _queue.Write(segment.Span, _queue.HoldsMemory ? MinimumSegmentSize : FirstSegmentSize, LargestSegmentSize);
            }

            _queue.Commit();
            _examinedAll = false;
            wake = SignalLocked();
        }

        wake.Run(scheduler);
    }

    /// <summary>Read loop or closing: no more bytes (null: FIN; else reads throw it). Once only.</summary>
    internal void CompleteWriter(Exception? error)
    {
        ParkedContinuation.Scheduled wake;
        lock (Sync)
        {
            if (_writerDone)
            {
                return;
            }

            _writerDone = true;
            _writerError = error;
            wake = SignalLocked();
        }

        wake.Run(scheduler);
    }

    public override bool TryRead(out ReadResult result)
    {
        lock (Sync)
        {
            ThrowIfReaderDone();
            _failureAsValue = false;
            if (_wait.Waiting)
            {
                throw new InvalidOperationException("a read is already pending on this yamux stream");
            }

            if (_queue.Length > 0 || _writerDone || _cancelPending)
            {
                result = ResultLocked();
                return true;
            }

            result = default;
            return false;
        }
    }

    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default) => Read(cancellationToken, failureAsValue: false);

    /// <summary>
    /// <see cref="ReadAsync"/>, except that a stream that failed (reset, or its connection closed) ends the read as
    /// completed with what was buffered, and <see cref="Failure"/> says why, instead of throwing.
    /// </summary>
    public ValueTask<ReadResult> ReadOrFailureAsync(CancellationToken ct) => Read(ct, failureAsValue: true);

    private ValueTask<ReadResult> Read(CancellationToken cancellationToken, bool failureAsValue)
    {
        short version;
        lock (Sync)
        {
            ThrowIfReaderDone();
            if (_wait.Waiting)
            {
                throw new InvalidOperationException("a read is already pending on this yamux stream");
            }

            _failureAsValue = failureAsValue;

            if ((_queue.Length > 0 && !_examinedAll) || _writerDone || _cancelPending)
            {
                return new ValueTask<ReadResult>(ResultLocked());
            }

            if (cancellationToken.IsCancellationRequested)
            {
                return ValueTask.FromCanceled<ReadResult>(cancellationToken);
            }

            version = _wait.Begin(cancellationToken, static (s, _) => ((StreamInput)s!).OnTokenCanceled(), this);
        }

        return new ValueTask<ReadResult>(this, version);
    }

    /// <summary>
    /// <see cref="ReadOrFailureAsync"/> without a token and without a <see cref="ValueTask"/>: true with the result when
    /// one is ready; else the read is pending and <paramref name="continuation"/> is parked for it, as an awaiter's would be
    /// (run on the scheduler when signalled, in no execution context), and <see cref="TakeParked"/> takes its result.
    /// </summary>
    public bool ReadOrPark(out ReadResult result, Action<object?> continuation, object state)
    {
        short version;
        lock (Sync)
        {
            ThrowIfReaderDone();
            if (_wait.Waiting)
            {
                throw new InvalidOperationException("a read is already pending on this yamux stream");
            }

            _failureAsValue = true;
            if ((_queue.Length > 0 && !_examinedAll) || _writerDone || _cancelPending)
            {
                result = ResultLocked();
                return true;
            }

            version = _wait.Begin(CancellationToken.None, static (s, _) => ((StreamInput)s!).OnTokenCanceled(), this);
            _wait.OnCompleted(continuation, state, version, ValueTaskSourceOnCompletedFlags.None); // pending: nothing to run yet
        }

        result = default;
        return false;
    }

    /// <summary>The result of the read <see cref="ReadOrPark"/> left pending, once its continuation runs.</summary>
    public ReadResult TakeParked()
    {
        short version;
        lock (Sync)
        {
            version = _wait.Version;
        }

        return ((IValueTaskSource<ReadResult>)this).GetResult(version);
    }

    private void OnTokenCanceled()
    {
        ParkedContinuation.Scheduled wake = default;
        lock (Sync)
        {
            wake = _wait.CancelByToken();
        }

        wake.Run(scheduler);
    }

    public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
    {
        long count;
        lock (Sync)
        {
            ThrowIfReaderDone();
            count = _queue.Consume(consumed, examined, keepTail: false, out var examinedAll);
            _examinedAll = examinedAll;
        }

        if (count > 0)
        {
            stream.OnConsumed(count);
        }
    }

    public override void CancelPendingRead()
    {
        ParkedContinuation.Scheduled wake;
        lock (Sync)
        {
            _cancelPending = true;
            wake = SignalLocked();
        }

        wake.Run(scheduler);
    }

    public override void Complete(Exception? exception = null)
    {
        lock (Sync)
        {
            if (_readerDone)
            {
                return;
            }

            _readerDone = true;
            _queue.Clear();
        }

        stream.OnInputCompleted();
    }

    ValueTaskSourceStatus IValueTaskSource<ReadResult>.GetStatus(short token)
    {
        lock (Sync)
        {
            return _wait.Status(token);
        }
    }

    void IValueTaskSource<ReadResult>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
    {
        ParkedContinuation.Scheduled run = default;
        lock (Sync)
        {
            run = _wait.OnCompleted(continuation, state, token, flags);
        }

        run.Run(scheduler);
    }

    ReadResult IValueTaskSource<ReadResult>.GetResult(short token)
    {
        CancellationTokenRegistration registration;
        ReadResult result = default;
        Exception? error = null;
        lock (Sync)
        {
            if (_wait.End(token, "this read's result was already taken", out registration) is { } tokenCanceled)
            {
                error = tokenCanceled;
            }
            else if (_readerDone)
            {
                error = new InvalidOperationException("reading is not allowed after the reader was completed");
            }
            else if (_writerError is not null && !_failureAsValue)
            {
                error = _writerError; // thrown once, below (not in ResultLocked and again here)
            }
            else
            {
                result = ResultLocked();
            }
        }

        registration.Dispose();
        if (error is not null)
        {
            ExceptionDispatchInfo.Throw(error);
        }

        return result;
    }

    private ReadResult ResultLocked()
    {
        if (_writerError is not null && !_failureAsValue)
        {
            ExceptionDispatchInfo.Throw(_writerError);
        }

        var canceled = _cancelPending;
        _cancelPending = false;
        return new ReadResult(_queue.Committed, canceled, _writerDone);
    }

    private ParkedContinuation.Scheduled SignalLocked() => _wait.Signal();

    private void ThrowIfReaderDone()
    {
        if (_readerDone)
        {
            throw new InvalidOperationException("reading is not allowed after the reader was completed");
        }
    }
}

/// <summary>
/// A yamux stream's output as the application writes it: bytes written go into pooled segments (none while nothing is
/// buffered), a flush commits them and wakes the connection's writer, which frames them as the send window allows and
/// consumes them. A flush waits once <see cref="YamuxOptions.StreamSendBuffer"/> bytes are buffered, until the writer
/// has sent half of them. Semantics as a <see cref="Pipe"/>'s writer: a completed reader (reset, connection gone)
/// makes flushes throw its error; Complete commits what is written and sends FIN after it.
/// </summary>
internal sealed class StreamOutput(YamuxStream stream, PipeScheduler scheduler, long sendBuffer) : PipeWriter, IValueTaskSource<FlushResult>
{
    /// <summary>Smallest segment a write asks for once bytes are buffered (as a pipe's default).</summary>
    internal const int MinimumSegmentSize = 4 * 1024;

    /// <summary>
    /// Smallest first segment of an empty buffer: most writes are one small message flushed at once (a gossip control RPC,
    /// a DHT request), and a node that tells all its peers something at once holds one per stream until its connections'
    /// writers take them (a subscription announced to every peer held 4 KiB per peer).
    /// </summary>
    internal const int FirstSegmentSize = 512;

    private readonly long _pause = sendBuffer;
    private readonly long _resume = Math.Max(1, sendBuffer / 2);
    private SegmentQueue _queue;
    // The application holds memory from GetMemory it has not advanced yet: the tail stays.
    private bool _writing;
    private bool _paused;
    private bool _writerDone;
    private bool _readerDone;
    private Exception? _readerError;
    private bool _cancelPending;
    private ParkedWait _wait;

    private object Sync => this;

    /// <summary>Whether a pooled segment is held now (tests: an idle stream holds none).</summary>
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

    /// <summary>The size of the last pooled segment held (0: none; tests).</summary>
    internal int TailCapacity
    {
        get
        {
            lock (Sync)
            {
                return _queue.TailCapacity;
            }
        }
    }

    /// <summary>Writer only: the writer has stopped reading this output (FIN sent, or aborted).</summary>
    internal bool ReaderDone
    {
        get
        {
            lock (Sync)
            {
                return _readerDone;
            }
        }
    }

    public override Memory<byte> GetMemory(int sizeHint = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(sizeHint);
        lock (Sync)
        {
            ThrowIfWriterDone();
            _writing = true;
            return _queue.GetMemory(sizeHint, _queue.HoldsMemory ? MinimumSegmentSize : FirstSegmentSize);
        }
    }

    public override Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;

    public override void Advance(int bytes)
    {
        lock (Sync)
        {
            ThrowIfWriterDone();
            _writing = false;
            if (_readerDone)
            {
                // Nobody reads any more (as a pipe: advancing is a no-op once its reader completed).
                _queue.Discard(keepTail: false);
                return;
            }

            _queue.Advance(bytes);
        }
    }

    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
    {
        var result = FlushCore(cancellationToken, out var version, out var wait);
        // The bytes are committed; the connection's writer learns of them before the application may wait for room.
        stream.OnOutputReady();
        if (wait)
        {
            return new ValueTask<FlushResult>(this, version);
        }

        return result is { } done ? new ValueTask<FlushResult>(done) : ValueTask.FromCanceled<FlushResult>(cancellationToken);
    }

    /// <summary>Commits; returns the result now, or null when the token is already canceled, or sets <paramref name="wait"/>.</summary>
    private FlushResult? FlushCore(CancellationToken cancellationToken, out short version, out bool wait)
    {
        version = 0;
        wait = false;
        lock (Sync)
        {
            ThrowIfWriterDone();
            if (_wait.Waiting)
            {
                throw new InvalidOperationException("a flush is already pending on this yamux stream");
            }

            if (!_readerDone)
            {
                var before = _queue.Length;
                _queue.Commit();
                if (_pause > 0 && before < _pause && _queue.Length >= _pause)
                {
                    _paused = true;
                }
            }

            if (_readerDone || !_paused || _cancelPending)
            {
                return ResultLocked();
            }

            if (cancellationToken.IsCancellationRequested)
            {
                return null;
            }

            version = _wait.Begin(cancellationToken, static (s, _) => ((StreamOutput)s!).OnTokenCanceled(), this);
            wait = true;

            return default(FlushResult);
        }
    }

    private void OnTokenCanceled()
    {
        ParkedContinuation.Scheduled wake = default;
        lock (Sync)
        {
            wake = _wait.CancelByToken();
        }

        wake.Run(scheduler);
    }

    public override void CancelPendingFlush()
    {
        ParkedContinuation.Scheduled wake;
        lock (Sync)
        {
            _cancelPending = true;
            wake = SignalLocked();
        }

        wake.Run(scheduler);
    }

    public override void Complete(Exception? exception = null)
    {
        lock (Sync)
        {
            if (_writerDone)
            {
                return;
            }

            _writerDone = true;
            _writing = false;
            if (_readerDone)
            {
                _queue.Clear();
            }
            else
            {
                _queue.Commit();
            }
        }

        if (exception is null)
        {
            stream.OnOutputReady();
        }
        else
        {
            stream.Reset();
        }
    }

    /// <summary>Writer only: what is committed and whether the application completed (FIN after it); false once the writer stopped reading.</summary>
    internal bool TryPeek(out ReadOnlySequence<byte> buffer, out bool completed)
    {
        lock (Sync)
        {
            if (_readerDone)
            {
                buffer = default;
                completed = false;
                return false;
            }

            buffer = _queue.Committed;
            completed = _writerDone;
            return buffer.Length > 0 || completed;
        }
    }

    /// <summary>Writer only: <paramref name="count"/> bytes were framed; the application may go on once half the buffer is sent.</summary>
    internal void Consume(long count)
    {
        ParkedContinuation.Scheduled wake = default;
        lock (Sync)
        {
            if (_readerDone)
            {
                return;
            }

            _queue.Consume(count, keepTail: _writing);
            if (_writerDone && _queue.Length == 0)
            {
                _queue.Clear();
            }

            if (_paused && _queue.Length < _resume)
            {
                _paused = false;
                wake = SignalLocked();
            }
        }

        wake.Run(scheduler);
    }

    /// <summary>Writer only: stops reading (null after FIN; else the reset or closed connection flushes now throw).</summary>
    internal void CompleteReader(Exception? error)
    {
        ParkedContinuation.Scheduled wake;
        lock (Sync)
        {
            if (_readerDone)
            {
                return;
            }

            _readerDone = true;
            _readerError = error;
            _paused = false;
            if (_writerDone)
            {
                _queue.Clear();
            }
            else
            {
                _queue.Discard(keepTail: _writing);
            }

            wake = SignalLocked();
        }

        wake.Run(scheduler);
    }

    ValueTaskSourceStatus IValueTaskSource<FlushResult>.GetStatus(short token)
    {
        lock (Sync)
        {
            return _wait.Status(token);
        }
    }

    void IValueTaskSource<FlushResult>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
    {
        ParkedContinuation.Scheduled run = default;
        lock (Sync)
        {
            run = _wait.OnCompleted(continuation, state, token, flags);
        }

        run.Run(scheduler);
    }

    FlushResult IValueTaskSource<FlushResult>.GetResult(short token)
    {
        CancellationTokenRegistration registration;
        FlushResult result = default;
        Exception? error = null;
        lock (Sync)
        {
            if (_wait.End(token, "this flush's result was already taken", out registration) is { } tokenCanceled)
            {
                error = tokenCanceled;
            }
            else if (_readerError is not null)
            {
                error = _readerError; // thrown once, below
            }
            else
            {
                result = ResultLocked();
            }
        }

        registration.Dispose();
        if (error is not null)
        {
            ExceptionDispatchInfo.Throw(error);
        }

        return result;
    }

    private FlushResult ResultLocked()
    {
        if (_readerError is not null)
        {
            ExceptionDispatchInfo.Throw(_readerError);
        }

        var canceled = _cancelPending;
        _cancelPending = false;
        return new FlushResult(canceled, _readerDone);
    }

    private ParkedContinuation.Scheduled SignalLocked() => _wait.Signal();

    private void ThrowIfWriterDone()
    {
        if (_writerDone)
        {
            throw new InvalidOperationException("writing is not allowed after the writer was completed");
        }
    }
}
