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

    private readonly MemoryBuffer _inner;
    private bool _readActive;
    private bool _closed;
    private bool _innerCompleted;
    private Exception? _broken;

    // The one read waiting on the inner buffer (a reader has at most one read in progress): this reader's version of it
    // and the buffer's. The caller's continuation is parked on the buffer itself, which runs it when the read completes
    // (no delegate of this reader's own in between: ~90 B less per connection end).
    private short _version;
    private short _innerVersion;

    public MemoryPipeReader(MemoryBuffer inner)
    {
        _inner = inner;
    }

    private IValueTaskSource<ReadResult> InnerSource => _inner;

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
        _innerVersion = _inner.PendingReadVersion;
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

    ValueTaskSourceStatus IValueTaskSource<ReadResult>.GetStatus(short token)
    {
        CheckVersion(token);
        return InnerSource.GetStatus(_innerVersion);
    }

    // The caller's continuation goes to the buffer's parked read as it is: the buffer runs it where it ran the awaiter's
    // wrapper before (on its scheduler, with the execution context when the flags ask for it), so the events are the same.
    void IValueTaskSource<ReadResult>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
    {
        CheckVersion(token);
        InnerSource.OnCompleted(continuation, state, _innerVersion, flags);
    }

    ReadResult IValueTaskSource<ReadResult>.GetResult(short token)
    {
        CheckVersion(token);
        _version++; // the result is taken once
        ReadResult result;
        try
        {
            result = InnerSource.GetResult(_innerVersion);
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
