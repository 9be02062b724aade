using System.Buffers;
using System.IO.Pipelines;
using System.Threading.Channels;

namespace Potluck.Protocol.Transport.Memory;

/// <summary>
/// One direction of a link with latency: bytes the application flushed into <c>source</c> are copied to
/// <c>destination</c> once their delivery time (flush time + latency, on the injected <see cref="TimeProvider"/>)
/// has come. An async loop and one timer, not a thread: idle, it costs a pending channel read.
/// </summary>
/// <remarks>
/// Every timing decision is taken where the clock is consistent, so delivery is exact under a fake clock: a flush
/// is stamped, and arms the timer, synchronously inside <see cref="MemoryPipeWriter.FlushAsync"/>; the timer
/// callback decides what is due and re-arms itself; the copy loop only moves bytes already declared due.
/// Bytes in flight stay unconsumed in <c>source</c>, so its pause threshold is the link's window. Loss and
/// bandwidth, when modelled, change the delivery time computed in <see cref="OnFlush"/>.
/// </remarks>
internal sealed class DelayLine
{
    private readonly record struct Entry(long Offset, long Due, bool End);

    private readonly Lock _lock = new();
    private readonly PipeReader _source;
    private readonly PipeWriter _destination;
    private readonly TimeProvider _time;
    private readonly TimeSpan _latency;
    private readonly long _latencyTimestamp;
    private readonly Queue<Entry> _inFlight = new();
    private readonly ITimer _timer;
    private readonly Channel<bool> _wake = Channel.CreateBounded<bool>(new BoundedChannelOptions(1)
    {
        FullMode = BoundedChannelFullMode.DropWrite,
        SingleReader = true,
    });
    private readonly CancellationTokenSource _abort = new();
    private bool _timerArmed;
    private long _due;            // bytes whose delivery time has come
    private bool _endDue;         // the writer's completion is due
    private Exception? _endError;
    private Exception? _abortError;
    private bool _stopped;

    public DelayLine(PipeReader source, PipeWriter destination, TimeProvider time, TimeSpan latency)
    {
        _source = source;
        _destination = destination;
        _time = time;
        _latency = latency;
        _latencyTimestamp = (long)Math.Ceiling(latency.Ticks * (time.TimestampFrequency / (double)TimeSpan.TicksPerSecond));
        _timer = time.CreateTimer(static s => ((DelayLine)s!).OnTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        Completion = RunAsync();
    }

    /// <summary>Ends when the line has delivered its end, or was aborted; never faults.</summary>
    public Task Completion { get; }

    /// <summary>Bytes up to <paramref name="offset"/> (counted from the start of the connection) were flushed now.</summary>
    public void OnFlush(long offset)
    {
        lock (_lock)
        {
            Enqueue(offset, end: false);
        }
    }

    /// <summary>The writer completed after <paramref name="offset"/> bytes: deliver the end (and error) after them.</summary>
    public void OnComplete(long offset, Exception? error)
    {
        lock (_lock)
        {
            _endError = error;
            Enqueue(offset, end: true);
        }
    }

    private void Enqueue(long offset, bool end)
    {
        if (_stopped)
        {
            return;
        }
        var due = _time.GetTimestamp() + _latencyTimestamp;
        if (_inFlight.Count > 0 && _inFlight.Peek().Due == due)
        {
            // Dues never decrease, so all entries are due in this same instant (usual under a fake clock): one entry.
            _inFlight.Clear();
        }
        _inFlight.Enqueue(new Entry(offset, due, end));
        if (!_timerArmed)
        {
            _timerArmed = true;
            _timer.Change(_latency, Timeout.InfiniteTimeSpan);
        }
    }

    private void OnTimer()
    {
        lock (_lock)
        {
            if (_stopped)
            {
                return;
            }
            var now = _time.GetTimestamp();
            while (_inFlight.Count > 0 && _inFlight.Peek().Due <= now)
            {
                var entry = _inFlight.Dequeue();
                _due = entry.Offset;
                _endDue |= entry.End;
            }
            if (_inFlight.Count > 0)
            {
                _timer.Change(_time.GetElapsedTime(now, _inFlight.Peek().Due), Timeout.InfiniteTimeSpan);
            }
            else
            {
                _timerArmed = false;
            }
        }
        _wake.Writer.TryWrite(true);
    }

    /// <summary>Stops at once: <paramref name="error"/> completes the destination, bytes in flight are lost.</summary>
    public void Abort(Exception error)
    {
        lock (_lock)
        {
            _abortError ??= error;
        }
        try
        {
            _abort.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // already finished
        }
    }

    private async Task RunAsync()
    {
        await Task.Yield(); // never run the loop on the constructor's thread
        var token = _abort.Token;
        long delivered = 0;
        Exception? error = null;
        try
        {
            while (true)
            {
                await _wake.Reader.ReadAsync(token);
                long target;
                bool end;
                lock (_lock)
                {
                    target = _due;
                    end = _endDue;
                }
                while (delivered < target)
                {
                    var result = await _source.ReadAsync(token);
                    var buffer = result.Buffer;
                    var take = Math.Min(buffer.Length, target - delivered);
                    foreach (var segment in buffer.Slice(0, take))
                    {
                        _destination.Write(segment.Span);
                    }
                    delivered += take;
                    _source.AdvanceTo(buffer.GetPosition(take));
                    if (take == 0 && result.IsCompleted)
                    {
                        break; // cannot happen (the bytes were flushed first), but never spin
                    }
                }
                if (end)
                {
                    lock (_lock)
                    {
                        error = _endError;
                    }
                    break;
                }
                var flush = await _destination.FlushAsync(token);
                if (flush.IsCompleted)
                {
                    break; // the other side stopped reading
                }
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            error = e;
        }
        lock (_lock)
        {
            error = _abortError ?? error;
            _stopped = true;
            _timer.Dispose();
        }
        await _source.CompleteAsync();
        await _destination.CompleteAsync(error);
        _abort.Dispose();
    }
}
