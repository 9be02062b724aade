using System.Buffers;
using System.IO.Pipelines;

namespace Potluck.Protocol.Transport.Memory;

/// <summary>
/// The application's end of a simulated connection's inbound pipe. It forwards to the pipe's reader and adds
/// what a socket gives for free: the connection can be closed or broken from another thread without racing the
/// application's read. A pending read wakes (disposal: <c>IsCompleted</c>; a break: the
/// <see cref="TransportException"/>), and the inner reader is completed once no read is in progress, so the
/// remote writer learns that nobody reads any more.
/// </summary>
internal sealed class MemoryPipeReader : PipeReader
{
    private readonly Lock _lock = new();
    private readonly PipeReader _inner;
    private bool _readActive;
    private bool _closed;
    private bool _innerCompleted;
    private Exception? _broken;

    public MemoryPipeReader(PipeReader inner) => _inner = inner;

    /// <summary>Disposal (<paramref name="broken"/> null) or a break: ends reading at the next opportunity.</summary>
    public void Close(Exception? broken)
    {
        lock (_lock)
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
        lock (_lock)
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
        return pending.IsCompletedSuccessfully ? new ValueTask<ReadResult>(Convert(pending.Result)) : AwaitRead(pending);
    }

    private async ValueTask<ReadResult> AwaitRead(ValueTask<ReadResult> pending)
    {
        ReadResult result;
        try
        {
            result = await pending;
        }
        catch
        {
            lock (_lock)
            {
                _readActive = false; // the inner read failed (the writer's error): no read is in progress
            }
            throw;
        }
        return Convert(result);
    }

    private static ReadResult ClosedResult => new(ReadOnlySequence<byte>.Empty, isCanceled: false, isCompleted: true);

    /// <summary>A read cancelled by <see cref="Close"/> becomes the end of the stream, or the break's exception.</summary>
    private ReadResult Convert(ReadResult result)
    {
        if (!result.IsCanceled)
        {
            return result;
        }
        lock (_lock)
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
        lock (_lock)
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
        lock (_lock)
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
        lock (_lock)
        {
            if (!_innerCompleted)
            {
                _inner.CancelPendingRead();
            }
        }
    }

    public override void Complete(Exception? exception = null)
    {
        lock (_lock)
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
