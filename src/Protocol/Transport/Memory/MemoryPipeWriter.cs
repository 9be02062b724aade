using System.IO.Pipelines;

namespace Potluck.Protocol.Transport.Memory;

/// <summary>
/// The application's end of a simulated connection's outbound pipe. It forwards to the pipe's writer, stamps
/// each flush for the <see cref="DelayLine"/> when the link has latency, and lets the connection be closed or
/// broken from another thread without racing the application: the inner writer is completed only while the
/// application holds no memory from it. After closing, writes go to a scratch buffer and flushes report
/// <c>IsCompleted</c> (disposal) or throw the <see cref="TransportException"/> (a break).
/// </summary>
internal sealed class MemoryPipeWriter : PipeWriter
{
    // Locks itself, as MemoryBuffer does (nothing else locks it): a lock object per instance was 40 B per connection end.
    private object Sync => this;

    private readonly PipeWriter _inner;
    private readonly DelayLine? _delay;
    private bool _memoryOut;
    private bool _closed;
    private bool _innerCompleted;
    private Exception? _broken;
    private long _written;
    private byte[]? _scratch;

    public MemoryPipeWriter(PipeWriter inner, DelayLine? delay)
    {
        _inner = inner;
        _delay = delay;
    }

    /// <summary>Disposal (<paramref name="broken"/> null: flushed bytes are still delivered, then the end) or a break.</summary>
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
            if (broken is not null)
            {
                _delay?.Abort(broken);
            }
            if (_innerCompleted)
            {
                return;
            }
            _inner.CancelPendingFlush();
            if (!_memoryOut)
            {
                CompleteInner(broken);
            }
        }
    }

    public override Memory<byte> GetMemory(int sizeHint = 0)
    {
        lock (Sync)
        {
            if (_closed)
            {
                CompleteInner(_broken);
                return Scratch(sizeHint);
            }
            var memory = _inner.GetMemory(sizeHint);
            _memoryOut = true;
            return memory;
        }
    }

    public override Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;

    private Memory<byte> Scratch(int sizeHint)
    {
        var size = Math.Max(sizeHint, 4096);
        if (_scratch is null || _scratch.Length < size)
        {
            _scratch = new byte[size];
        }
        return _scratch;
    }

    public override void Advance(int bytes)
    {
        lock (Sync)
        {
            _memoryOut = false;
            if (_closed)
            {
                CompleteInner(_broken); // bytes written after closing go nowhere
                return;
            }
            _inner.Advance(bytes);
            _written += bytes;
        }
    }

    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
    {
        ValueTask<FlushResult> pending;
        lock (Sync)
        {
            _memoryOut = false;
            if (_closed)
            {
                CompleteInner(_broken);
                return _broken is null ? new ValueTask<FlushResult>(ClosedResult) : ValueTask.FromException<FlushResult>(_broken);
            }
            pending = _inner.FlushAsync(cancellationToken); // commits the bytes, then they are stamped
            _delay?.OnFlush(_written);
        }
        return pending.IsCompletedSuccessfully ? new ValueTask<FlushResult>(Convert(pending.Result)) : AwaitFlush(pending);
    }

    private async ValueTask<FlushResult> AwaitFlush(ValueTask<FlushResult> pending) => Convert(await pending);

    private static FlushResult ClosedResult => new(isCanceled: false, isCompleted: true);

    private FlushResult Convert(FlushResult result)
    {
        if (!result.IsCanceled)
        {
            return result;
        }
        lock (Sync)
        {
            if (!_closed)
            {
                return result; // the application's own CancelPendingFlush
            }
            if (_broken is not null)
            {
                throw _broken;
            }
        }
        return ClosedResult;
    }

    public override void CancelPendingFlush()
    {
        lock (Sync)
        {
            if (!_innerCompleted)
            {
                _inner.CancelPendingFlush();
            }
        }
    }

    public override void Complete(Exception? exception = null)
    {
        lock (Sync)
        {
            _memoryOut = false;
            CompleteInner(_broken ?? exception);
        }
    }

    private void CompleteInner(Exception? exception)
    {
        if (_innerCompleted)
        {
            return;
        }
        _innerCompleted = true;
        if (_delay is null)
        {
            _inner.Complete(exception);
        }
        else
        {
            // The end (and any error) travels through the delay line, behind the bytes written before it.
            _inner.Complete();
            _delay.OnComplete(_written, exception);
        }
    }
}
