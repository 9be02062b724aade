using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.ExceptionServices;
using System.Threading.Tasks.Sources;
using Potluck.Protocol.Metrics;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Noise;

/// <summary>
/// A Noise channel's input as the application reads it, decrypted on the application's own turn: a read that finds no
/// unread plaintext reads the connection, decrypts every whole frame there (up to a batch) into pooled segments
/// (<see cref="SegmentQueue"/>, as a yamux stream's buffers: an idle channel holds none) and hands them out. No pump, no
/// pipe: a reader that stops reading stops the decryption, and the connection's own input applies back-pressure to the
/// remote.
/// <para>
/// A read that has to wait is the connection's read itself, handed out as this reader's own
/// <see cref="IValueTaskSource{TResult}"/> (no async method per parked read): the connection read's completion
/// decrypts, reads again when only part of a frame came, and then runs the caller's continuation on that thread (on the
/// runtime's scheduler when it ended before the caller awaited it).
/// </para>
/// <para>
/// Failures: a frame that fails authentication, one shorter than its tag, or a connection that ends inside a frame
/// fails the read (the next one when whole frames before it came with the same connection read: they are handed out
/// first) and every later one with a <see cref="ProtocolViolationException"/> (decrypted bytes not yet read are dropped)
/// and closes the connection; so does a reader that holds <c>limit</c> decrypted bytes unread and asks for more.
/// A failed connection read fails reads with a <see cref="PeerGoneException"/>. After <see cref="Close"/> (the channel's
/// disposal) reads end (<c>IsCompleted</c>).
/// </para>
/// </summary>
internal sealed class NoiseInput : PipeReader, IValueTaskSource<ReadResult>
{
    private const int TagLength = NoiseCipherState.TagLength;
    // A read decrypts at most this much before it hands out what it has (the rest waits in the connection's input).
    private const int Batch = 256 * 1024;

    private readonly NoiseSecureChannel _channel;
    private readonly PipeReader _transport;
    private readonly NoiseCipherState _receive;
    private readonly ProtocolInstruments _instruments;
    private readonly int _limit;
    private readonly PipeScheduler _scheduler;
    private readonly Action _onTransportRead;

    private SegmentQueue _plain;
    private bool _examinedAll;
    private bool _ended;              // the connection ended cleanly between two frames
    private Exception? _failure;      // reads throw it
    private bool _closed;             // the channel was disposed: reads end
    private bool _completed;          // the application completed this reader
    private bool _cancelPending;
    private bool _transportDone;      // the connection's input was completed (by us, the one reader of it)
    private bool _inTransport;        // a read is using the connection's input (from its ReadAsync until its AdvanceTo)
    private TaskCompletionSource? _left; // Close waits for that read to leave

    // The one read waiting on the connection: its version, token, continuation and, once it ended, its outcome.
    private ValueTask<ReadResult> _pending;
    private short _version;
    private CancellationToken _token;
    private ParkedContinuation _parked;
    private bool _outcomeReady;
    private ReadResult _outcome;
    private Exception? _outcomeError;

    public NoiseInput(NoiseSecureChannel channel, PipeReader transport, NoiseCipherState receive, ProtocolInstruments instruments, int limit,
                      PipeScheduler scheduler)
    {
        _scheduler = scheduler;
        _channel = channel;
        _transport = transport;
        _receive = receive;
        _instruments = instruments;
        _limit = limit;
        _onTransportRead = OnTransportRead;
    }

    private object Sync => this;

    /// <summary>Decrypted bytes not yet consumed (tests).</summary>
    internal long Buffered
    {
        get
        {
            lock (Sync)
            {
                return _plain.Length;
            }
        }
    }

    /// <summary>Whether a pooled segment is held now (tests: an idle channel holds none).</summary>
    internal bool HoldsMemory
    {
        get
        {
            lock (Sync)
            {
                return _plain.HoldsMemory;
            }
        }
    }

    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        lock (Sync)
        {
            if (TakeReadyLocked(examinedOnly: true) is { } ready)
            {
                return new ValueTask<ReadResult>(ready);
            }
            if (cancellationToken.IsCancellationRequested)
            {
                return ValueTask.FromCanceled<ReadResult>(cancellationToken);
            }
            _inTransport = true;
        }
        _token = cancellationToken;
        return Pump(completeInline: true);
    }

    public override bool TryRead(out ReadResult result)
    {
        lock (Sync)
        {
            if (TakeReadyLocked(examinedOnly: false) is { } ready)
            {
                result = ready;
                return true;
            }
            _inTransport = true;
        }
        var step = Step.NeedMore;
        try
        {
            if (_transport.TryRead(out var read))
            {
                step = Process(read, out result);
                return step == Step.Ready;
            }
        }
        finally
        {
            if (step == Step.NeedMore)
            {
                LeaveTransport();
            }
        }
        result = default;
        return false;
    }

    /// <summary>
    /// What a read returns without touching the connection (under the lock), or null: a failure throws, the end or a
    /// cancellation returns at once, unread plaintext is returned (with <paramref name="examinedOnly"/>: only when the
    /// reader has not examined all of it yet).
    /// </summary>
    private ReadResult? TakeReadyLocked(bool examinedOnly)
    {
        if (_completed)
        {
            throw new InvalidOperationException("reading is not allowed after the reader was completed");
        }
        if (_inTransport)
        {
            throw new InvalidOperationException("a read is already pending on this channel");
        }
        if (_failure is not null)
        {
            ExceptionDispatchInfo.Throw(_failure);
        }
        if (_cancelPending)
        {
            _cancelPending = false;
            return new ReadResult(_plain.Committed, isCanceled: true, isCompleted: _closed || _ended);
        }
        if (_closed || _ended || (_plain.Length > 0 && !(examinedOnly && _examinedAll)))
        {
            return new ReadResult(_plain.Committed, isCanceled: false, isCompleted: _closed || _ended);
        }
        return null;
    }

    private enum Step
    {
        Ready,
        NeedMore,
    }

    /// <summary>
    /// Reads the connection until a result is ready: synchronously as long as its reads complete at once, else the read
    /// parks (this reader is its source) and <see cref="OnTransportRead"/> carries on when the connection's read completes.
    /// </summary>
    private ValueTask<ReadResult> Pump(bool completeInline)
    {
        while (true)
        {
            ValueTask<ReadResult> read;
            try
            {
                read = _transport.ReadAsync(_token);
            }
            catch (Exception e)
            {
                return completeInline ? ValueTask.FromException<ReadResult>(Fail(e)) : Finish(default, Fail(e));
            }
            if (!read.IsCompleted)
            {
                // The connection's read is watched from now on, whether or not the caller awaits ours yet: a disposal
                // that wakes it must not wait for the caller.
                _pending = read;
                short version = 0;
                if (completeInline)
                {
                    lock (Sync)
                    {
                        _outcomeReady = false;
                        version = ++_version;
                    }
                }
                read.GetAwaiter().UnsafeOnCompleted(_onTransportRead);
                return completeInline ? new ValueTask<ReadResult>(this, version) : default;
            }
            if (ProcessRead(read, out var result, out var error) == Step.NeedMore)
            {
                continue;
            }
            if (completeInline)
            {
                return error is null ? new ValueTask<ReadResult>(result) : ValueTask.FromException<ReadResult>(error);
            }
            return Finish(result, error);
        }
    }

    /// <summary>The connection's parked read completed: decrypt, read again if a frame is still partial, else wake the caller.</summary>
    private void OnTransportRead()
    {
        var read = _pending;
        _pending = default;
        if (ProcessRead(read, out var result, out var error) == Step.NeedMore)
        {
            _ = Pump(completeInline: false);
            return;
        }
        _ = Finish(result, error);
    }

    /// <summary>Records a parked read's outcome and runs the caller's continuation here (we are on the connection's scheduler).</summary>
    private ValueTask<ReadResult> Finish(ReadResult result, Exception? error)
    {
        ParkedContinuation.Scheduled run;
        lock (Sync)
        {
            _outcome = result;
            _outcomeError = error;
            _outcomeReady = true;
            run = _parked.Take();
        }
        run.Run(PipeScheduler.Inline);
        return default;
    }

    /// <summary>Takes the connection's completed read and decrypts it; a failure (a bad frame, the connection's own error) is
    /// returned as <paramref name="error"/> with the step <see cref="Step.Ready"/>, for the caller to hand to the reader.</summary>
    private Step ProcessRead(ValueTask<ReadResult> read, out ReadResult result, out Exception? error)
    {
        error = null;
        try
        {
            return Process(TakeTransportResult(read), out result);
        }
        catch (Exception e)
        {
            result = default;
            error = e;
            return Step.Ready;
        }
    }

    private ReadResult TakeTransportResult(ValueTask<ReadResult> read)
    {
        try
        {
            return read.Result;
        }
        catch (Exception e)
        {
            throw Fail(e);
        }
    }

    /// <summary>
    /// The connection's read failed (or was cancelled by the caller's token): the read leaves the connection; a token's
    /// cancellation is the caller's and passes through, anything else ends the channel's input with a <see cref="PeerGoneException"/>.
    /// </summary>
    private Exception Fail(Exception e)
    {
        if (e is OperationCanceledException && _token.IsCancellationRequested)
        {
            LeaveTransport();
            return e;
        }
        Exception failure;
        lock (Sync)
        {
            if (_closed)
            {
                failure = new PeerGoneException("the Noise channel was closed", e);
            }
            else
            {
                failure = e as PeerGoneException ?? new PeerGoneException("the connection below the Noise channel failed", e);
                _failure = failure;
                _plain.Clear();
            }
            LeaveTransportLocked(complete: true);
        }
        _channel.LogTransportError(e);
        return failure;
    }

    /// <summary>
    /// Decrypts the whole frames the connection's read brought (at most a batch, at most up to the limit) and advances the
    /// connection's input past them. Ready: the read returns <paramref name="result"/>; NeedMore: the connection must be
    /// read again (only part of a frame here). Leaves the connection except on NeedMore; a violation throws.
    /// </summary>
    private Step Process(ReadResult read, out ReadResult result)
    {
        var buffer = read.Buffer;
        lock (Sync)
        {
            if (_closed || _completed)
            {
                _transport.AdvanceTo(buffer.Start);
                result = new ReadResult(_plain.Committed, isCanceled: false, isCompleted: true);
                LeaveTransportLocked(complete: true);
                return Step.Ready;
            }
            if (read.IsCanceled && !_cancelPending)
            {
                // A cancellation meant for an earlier read (CancelPendingRead while none was waiting): read again.
                _transport.AdvanceTo(buffer.Start);
                result = default;
                return Step.NeedMore;
            }
        }
        var consumed = buffer.Start;
        var status = DecodeStatus.NeedMoreData;
        var decrypted = 0;
        (string Reason, ViolationCode Code)? violation = null;
        byte[]? scratch = null;
        lock (Sync)
        {
            try
            {
                while (decrypted < Batch)
                {
                    status = NoiseFrame.TryRead(buffer.Slice(consumed), TagLength, out var frame, out var end);
                    if (status == DecodeStatus.Invalid)
                    {
                        violation = ("transport message shorter than its tag", ViolationCode.Malformed);
                        break;
                    }
                    if (status != DecodeStatus.Done)
                    {
                        break;
                    }
                    var length = (int)frame.Length - TagLength;
                    if (_plain.Length + _plain.Uncommitted + length > _limit)
                    {
                        if (decrypted == 0)
                        {
                            // The reader examined all it holds and asks for more than the limit lets us buffer.
                            violation = ($"more than {_limit} decrypted bytes buffered unread", ViolationCode.TooLarge);
                        }
                        break; // the rest waits in the connection's input until the reader consumes
                    }
                    ReadOnlySpan<byte> ciphertext;
                    if (frame.IsSingleSegment)
                    {
                        ciphertext = frame.FirstSpan;
                    }
                    else
                    {
                        scratch ??= ArrayPool<byte>.Shared.Rent(NoiseFrame.MaxMessageLength);
                        frame.CopyTo(scratch);
                        ciphertext = scratch.AsSpan(0, (int)frame.Length);
                    }
                    // An empty frame takes no segment (an idle channel holds none).
                    var destination = length == 0 ? Span<byte>.Empty : _plain.GetMemory(length, StreamInput.MinimumSegmentSize).Span;
                    if (!_receive.TryDecrypt(default, ciphertext, destination))
                    {
                        violation = ("transport message failed authentication", ViolationCode.BadSignature);
                        break;
                    }
                    if (length > 0)
                    {
                        _plain.Advance(length);
                    }
                    decrypted += length;
                    consumed = end;
                }
                _plain.Commit();
                if (decrypted > 0)
                {
                    _examinedAll = false;
                }
            }
            finally
            {
                if (scratch is not null)
                {
                    ArrayPool<byte>.Shared.Return(scratch);
                }
            }
        }
        if (!consumed.Equals(buffer.Start))
        {
            _instruments.BytesReceived(buffer.Slice(buffer.Start, consumed).Length);
        }
        if (violation is null && read.IsCompleted && status == DecodeStatus.NeedMoreData && !buffer.Slice(consumed).IsEmpty)
        {
            violation = ("connection closed inside a transport message", ViolationCode.Malformed);
        }
        if (violation is { } bad)
        {
            _transport.AdvanceTo(consumed);
            var error = new ProtocolViolationException(NoiseSecurity.ProtocolId, bad.Reason, bad.Code, BlastRadius.Connection);
            var delivered = false;
            lock (Sync)
            {
                // The frames before the bad one are handed out with this read; the next read fails.
                _failure = error;
                delivered = decrypted > 0;
                if (!delivered)
                {
                    _plain.Clear();
                }
                LeaveTransportLocked(complete: true);
                result = new ReadResult(_plain.Committed, isCanceled: false, isCompleted: false);
            }
            _channel.OnViolation(bad.Reason);
            return delivered ? Step.Ready : throw error;
        }
        lock (Sync)
        {
            // Frames beyond the batch (or the limit) stay in the connection's input: it is not examined past them.
            _transport.AdvanceTo(consumed, status == DecodeStatus.NeedMoreData ? buffer.End : consumed);
            var canceled = read.IsCanceled && _cancelPending;
            if (canceled)
            {
                _cancelPending = false;
            }
            var ended = read.IsCompleted && status == DecodeStatus.NeedMoreData;
            if (ended)
            {
                _ended = true;
            }
            if (decrypted > 0 || canceled || ended || status == DecodeStatus.Done)
            {
                LeaveTransportLocked(complete: ended);
                result = new ReadResult(_plain.Committed, canceled, ended);
                return Step.Ready;
            }
        }
        result = default;
        return Step.NeedMore;
    }

    private void LeaveTransport(bool complete = false)
    {
        lock (Sync)
        {
            LeaveTransportLocked(complete);
        }
    }

    private void LeaveTransportLocked(bool complete)
    {
        _inTransport = false;
        if (complete || _closed || _completed)
        {
            CompleteTransportLocked();
        }
        _left?.TrySetResult();
    }

    private void CompleteTransportLocked()
    {
        if (!_transportDone)
        {
            _transportDone = true;
            _transport.Complete();
        }
    }

    ValueTaskSourceStatus IValueTaskSource<ReadResult>.GetStatus(short token)
    {
        lock (Sync)
        {
            CheckVersion(token);
            return !_outcomeReady ? ValueTaskSourceStatus.Pending
                : _outcomeError is null ? ValueTaskSourceStatus.Succeeded
                : _outcomeError is OperationCanceledException ? ValueTaskSourceStatus.Canceled
                : ValueTaskSourceStatus.Faulted;
        }
    }

    void IValueTaskSource<ReadResult>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
    {
        ParkedContinuation.Scheduled run;
        lock (Sync)
        {
            CheckVersion(token);
            _parked.Park(continuation, state, flags);
            if (!_outcomeReady)
            {
                return; // the connection read's completion runs it
            }
            run = _parked.Take();
        }
        run.Run(_scheduler); // the read ended before the caller awaited it
    }

    ReadResult IValueTaskSource<ReadResult>.GetResult(short token)
    {
        ReadResult result;
        Exception? error;
        lock (Sync)
        {
            CheckVersion(token);
            if (!_outcomeReady)
            {
                throw new InvalidOperationException("the read has not completed yet");
            }
            _version++; // the result is taken once
            _outcomeReady = false;
            result = _outcome;
            error = _outcomeError;
            _outcome = default;
            _outcomeError = null;
        }
        if (error is not null)
        {
            ExceptionDispatchInfo.Throw(error);
        }
        return result;
    }

    private void CheckVersion(short token)
    {
        if (token != _version)
        {
            throw new InvalidOperationException("this read's result was already taken");
        }
    }

    public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
    {
        lock (Sync)
        {
            if (_completed)
            {
                throw new InvalidOperationException("reading is not allowed after the reader was completed");
            }
            _plain.Consume(consumed, examined, keepTail: false, out var examinedAll);
            _examinedAll = examinedAll;
        }
    }

    public override void CancelPendingRead()
    {
        lock (Sync)
        {
            _cancelPending = true;
            if (_inTransport && !_transportDone)
            {
                _transport.CancelPendingRead();
            }
        }
    }

    public override void Complete(Exception? exception = null)
    {
        lock (Sync)
        {
            if (_completed)
            {
                return;
            }
            _completed = true;
            _plain.Clear();
            if (_inTransport)
            {
                _transport.CancelPendingRead(); // the read in progress completes the connection's input as it leaves
            }
            else
            {
                CompleteTransportLocked();
            }
        }
    }

    /// <summary>
    /// The channel's disposal: reads end from now on; a read waiting on the connection is woken. The task completes once
    /// no read uses the connection's input any more (it is then completed).
    /// </summary>
    public Task Close()
    {
        lock (Sync)
        {
            _closed = true;
            if (!_inTransport)
            {
                CompleteTransportLocked();
                return Task.CompletedTask;
            }
            _left ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            if (!_transportDone)
            {
                _transport.CancelPendingRead();
            }
            return _left.Task;
        }
    }
}
