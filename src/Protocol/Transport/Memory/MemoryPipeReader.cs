using System.Buffers;
using System.IO.Pipelines;
using System.Threading.Tasks.Sources;

namespace Potluck.Protocol.Transport.Memory;

/// <summary>
/// The application's end of a simulated connection's inbound pipe. It forwards to the pipe's reader and adds
/// what a socket gives for free: the connection can be closed or broken from another thread without racing the
/// application's read. A pending read wakes (disposal: <c>IsCompleted</c>; a break: the
/// <see cref="TransportException"/>), and the inner reader is completed once no read is in progress, so the
/// remote writer learns that nobody reads any more.
/// <para>
/// A read that has to wait is the inner read itself, handed out as this reader's own <see cref="IValueTaskSource{TResult}"/>
/// (no async method per parked read, ~320 bytes per connection end): the inner read's completion runs the caller's
/// continuation, and its result is converted when the caller takes it.
/// </para>
/// </summary>
internal sealed class MemoryPipeReader : PipeReader, IValueTaskSource<ReadResult>
{
    // Locks itself, as MemoryBuffer does (nothing else locks it): a lock object per instance was 40 B per connection end.
    private object Sync => this;

    private readonly PipeReader _inner;
    private bool _readActive;
    private bool _closed;
    private bool _innerCompleted;
    private Exception? _broken;

    // The one read waiting on the inner reader (a reader has at most one read in progress), its version, and the
    // caller's continuation, run by the inner read's completion through the one delegate made with the reader.
    private ValueTask<ReadResult> _pending;
    private short _version;
    private Action<object?>? _continuation;
    private object? _continuationState;
    private readonly Action _onInnerCompleted;

    public MemoryPipeReader(PipeReader inner)
    {
        _inner = inner;
        _onInnerCompleted = OnInnerCompleted;
    }

    /// <summary>Disposal (<paramref name="broken"/> null) or a break: ends reading at the next opportunity.</summary>
    public void Close(Exception? broken)
    {
        lock (Sync)
        {
            if (_closed)
            {
                return;
            }
            _closed = true;
            _broken = broken;
            if (_innerCompleted)
            {
                return;
            }
            if (_readActive)
            {
                _inner.CancelPendingRead();
            }
            else
            {
                CompleteInner(null);
            }
        }
    }

    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        ValueTask<ReadResult> pending;
        lock (Sync)
        {
            if (_closed && !_readActive)
            {
                CompleteInner(null);
                return _broken is null ? new ValueTask<ReadResult>(ClosedResult) : ValueTask.FromException<ReadResult>(_broken);
            }
            _readActive = true;
            try
            {
                pending = _inner.ReadAsync(cancellationToken);
            }
            catch
            {
                _readActive = false;
                throw;
            }
        }
        if (pending.IsCompletedSuccessfully)
        {
            return new ValueTask<ReadResult>(Convert(pending.Result));
        }
        if (pending.IsCompleted)
        {
            return ValueTask.FromResult(TakeResult(pending));
        }
        _pending = pending;
        return new ValueTask<ReadResult>(this, ++_version);
    }

    /// <summary>The inner read's result, converted; a failed inner read (the writer's error) leaves no read in progress.</summary>
    private ReadResult TakeResult(ValueTask<ReadResult> pending)
    {
        ReadResult result;
        try
        {
            result = pending.Result;
        }
        catch
        {
            lock (Sync)
            {
                _readActive = false; // the inner read failed (the writer's error): no read is in progress
            }
            throw;
        }
        return Convert(result);
    }

    private void OnInnerCompleted()
    {
        var continuation = _continuation!;
        var state = _continuationState;
        _continuation = null;
        _continuationState = null;
        continuation(state);
    }

    ValueTaskSourceStatus IValueTaskSource<ReadResult>.GetStatus(short token)
    {
        CheckVersion(token);
        var pending = _pending;
        return !pending.IsCompleted ? ValueTaskSourceStatus.Pending
            : pending.IsCompletedSuccessfully ? ValueTaskSourceStatus.Succeeded
            : pending.IsCanceled ? ValueTaskSourceStatus.Canceled
            : ValueTaskSourceStatus.Faulted;
    }

    void IValueTaskSource<ReadResult>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
    {
        CheckVersion(token);
        _continuation = continuation;
        _continuationState = state;
        var awaiter = _pending.GetAwaiter();
        if ((flags & ValueTaskSourceOnCompletedFlags.FlowExecutionContext) != 0)
        {
            awaiter.OnCompleted(_onInnerCompleted);
        }
        else
        {
            awaiter.UnsafeOnCompleted(_onInnerCompleted);
        }
    }

    ReadResult IValueTaskSource<ReadResult>.GetResult(short token)
    {
        CheckVersion(token);
        var pending = _pending;
        _pending = default;
        _version++; // the result is taken once
        return TakeResult(pending);
    }

    private void CheckVersion(short token)
    {
        if (token != _version)
        {
            throw new InvalidOperationException("this read's result was already taken");
        }
    }

    private static ReadResult ClosedResult => new(ReadOnlySequence<byte>.Empty, isCanceled: false, isCompleted: true);

    /// <summary>A read cancelled by <see cref="Close"/> becomes the end of the stream, or the break's exception.</summary>
    private ReadResult Convert(ReadResult result)
    {
        if (!result.IsCanceled)
        {
            return result;
        }
        lock (Sync)
        {
            if (!_closed)
            {
                return result; // the application's own CancelPendingRead
            }
            if (_broken is not null)
            {
                // The application will not advance past a read that threw: end the read here.
                _inner.AdvanceTo(result.Buffer.Start);
                _readActive = false;
                CompleteInner(null);
                throw _broken;
            }
        }
        return new ReadResult(result.Buffer, isCanceled: false, isCompleted: true);
    }

    public override bool TryRead(out ReadResult result)
    {
        lock (Sync)
        {
            if (_closed && !_readActive)
            {
                CompleteInner(null);
                if (_broken is not null)
                {
                    throw _broken;
                }
                result = ClosedResult;
                return true;
            }
            if (!_inner.TryRead(out result))
            {
                return false;
            }
            _readActive = true;
        }
        result = Convert(result);
        return true;
    }

    public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
    {
        lock (Sync)
        {
            _readActive = false;
            if (_innerCompleted)
            {
                return;
            }
            _inner.AdvanceTo(consumed, examined);
            if (_closed)
            {
                CompleteInner(null);
            }
        }
    }

    public override void CancelPendingRead()
    {
        lock (Sync)
        {
            if (!_innerCompleted)
            {
                _inner.CancelPendingRead();
            }
        }
    }

    public override void Complete(Exception? exception = null)
    {
        lock (Sync)
        {
            _readActive = false;
            CompleteInner(exception);
        }
    }

    private void CompleteInner(Exception? exception)
    {
        if (!_innerCompleted)
        {
            _innerCompleted = true;
            _inner.Complete(exception);
        }
    }
}
