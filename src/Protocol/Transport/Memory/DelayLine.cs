using System.Buffers;
using System.IO.Pipelines;

namespace Potluck.Protocol.Transport.Memory;

/// <summary>
/// One direction of a link with latency: bytes the application flushed into <c>source</c> are copied to
/// <c>destination</c> once their delivery time (flush time + latency, on the injected <see cref="TimeProvider"/>)
/// has come. One timer per direction and no task while idle: thousands of delayed links cost no threads.
/// </summary>
/// <remarks>
/// Deterministic under a fake clock: a flush is stamped and arms the timer synchronously inside
/// <see cref="MemoryPipeWriter.FlushAsync"/>, and the timer callback itself copies the due bytes into the
/// destination and flushes it, so once <c>FakeTimeProvider.Advance</c> returns, exactly the bytes due by then are
/// readable. Only when the destination is paused (its reader is behind) does delivery continue asynchronously.
/// Bytes in flight stay unconsumed in <c>source</c>, so its pause threshold is the link's window. Loss and
/// bandwidth change the delivery time computed in <see cref="Enqueue"/> (see <see cref="LinkConditions"/>).
/// </remarks>
internal sealed class DelayLine
{
    private readonly record struct Entry(long Offset, long Due, bool End);

    // Locks itself (nothing else locks it): a lock object per instance was 40 B per connection end.
    private object Sync => this;

    private readonly PipeReader _source;
    private readonly PipeWriter _destination;
    private readonly TimeProvider _time;
    private readonly long _latencyTimestamp;
    private readonly double _timestampsPerByte;   // 0: unlimited bandwidth
    private readonly double _loss;
    private readonly long _retransmitTimestamp;
    private readonly Random? _lossRandom;
    private long _flushedOffset;    // bytes stamped so far
    private long _linkFreeAt;       // when the link has sent everything stamped so far (bandwidth)
    private long _lastDue;
    private InFlight _inFlight;      // flushes stamped and not yet due, in order
    private readonly ITimer _timer;
    private bool _timerArmed;
    private long _due;              // bytes whose delivery time has come
    private bool _endDue;           // the writer's completion is due
    private Exception? _endError;
    private Exception? _abortError;
    private bool _delivering;       // one caller owns the source reader and destination writer
    private bool _finished;
    private long _delivered;        // touched only by the owner

    public DelayLine(PipeReader source, PipeWriter destination, TimeProvider time, TimeSpan latency)
        : this(source, destination, time, new LinkConditions { Latency = latency }, 0)
    {
    }

    public DelayLine(PipeReader source, PipeWriter destination, TimeProvider time, LinkConditions conditions, long seed)
    {
        _source = source;
        _destination = destination;
        _time = time;
        var perTick = time.TimestampFrequency / (double)TimeSpan.TicksPerSecond;
        _latencyTimestamp = (long)Math.Ceiling(conditions.Latency.Ticks * perTick);
        _timestampsPerByte = conditions.BandwidthBytesPerSecond > 0 ? time.TimestampFrequency / (double)conditions.BandwidthBytesPerSecond : 0;
        _loss = conditions.Loss;
        _retransmitTimestamp = (long)Math.Ceiling(conditions.RetransmitTimeout.Ticks * perTick);
        _lossRandom = _loss > 0 ? new Random(unchecked((int)(seed ^ (seed >> 32)))) : null;
        _timer = time.CreateTimer(static s => ((DelayLine)s!).OnTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>Bytes up to <paramref name="offset"/> (from the start of the connection) were committed to the source now.</summary>
    public void OnFlush(long offset)
    {
        lock (Sync)
        {
            Enqueue(offset, end: false);
        }
    }

    /// <summary>The writer completed after <paramref name="offset"/> committed bytes: deliver the end (and error) after them.</summary>
    public void OnComplete(long offset, Exception? error)
    {
        lock (Sync)
        {
            _endError = error;
            Enqueue(offset, end: true);
        }
    }

    private void Enqueue(long offset, bool end)
    {
        if (_finished)
        {
            return;
        }
        var now = _time.GetTimestamp();
        var sent = now;
        if (_timestampsPerByte > 0)
        {
            // The link sends one flush after another: this one starts when the link is free and takes size / bandwidth.
            var size = Math.Max(0, offset - _flushedOffset);
            sent = Math.Max(now, _linkFreeAt) + (long)Math.Ceiling(size * _timestampsPerByte);
            _linkFreeAt = sent;
        }
        _flushedOffset = offset;
        var due = sent + _latencyTimestamp;
        if (_lossRandom is not null && !end && _lossRandom.NextDouble() < _loss)
        {
            due += _retransmitTimestamp; // lost once, retransmitted after a timeout
        }
        // A reliable stream delivers in order: nothing overtakes a flush that is late.
        due = Math.Max(due, _lastDue);
        _lastDue = due;
        if (_inFlight.Any && _inFlight.Peek().Due == due)
        {
            // Dues never decrease, so all entries are due in this same instant (usual under a fake clock): one entry.
            _inFlight.Clear();
        }
        _inFlight.Enqueue(new Entry(offset, due, end));
        if (!_timerArmed)
        {
            _timerArmed = true;
            _timer.Change(_time.GetElapsedTime(now, due), Timeout.InfiniteTimeSpan);
        }
    }

    private void OnTimer()
    {
        lock (Sync)
        {
            if (_finished)
            {
                return;
            }
            var now = _time.GetTimestamp();
            while (_inFlight.Any && _inFlight.Peek().Due <= now)
            {
                var entry = _inFlight.Dequeue();
                _due = entry.Offset;
                _endDue |= entry.End;
            }
            if (_inFlight.Any)
            {
                _timer.Change(_time.GetElapsedTime(now, _inFlight.Peek().Due), Timeout.InfiniteTimeSpan);
            }
            else
            {
                _timerArmed = false;
            }
            if (_delivering)
            {
                return; // the owner re-checks the due count before letting go
            }
            _delivering = true;
        }
        Deliver();
    }

    /// <summary>Stops at once: <paramref name="error"/> completes the destination, bytes in flight are lost.</summary>
    public void Abort(Exception error)
    {
        lock (Sync)
        {
            if (_finished)
            {
                return;
            }
            _abortError ??= error;
            if (_delivering)
            {
                _destination.CancelPendingFlush(); // wake an owner waiting on the destination
                return;
            }
            _delivering = true;
        }
        Finish(null);
    }

    /// <summary>Runs with ownership (<see cref="_delivering"/>) and gives it up, or finishes, before returning.</summary>
    private void Deliver()
    {
        try
        {
            while (true)
            {
                long target;
                bool end;
                lock (Sync)
                {
                    if (_abortError is not null)
                    {
                        break;
                    }
                    target = _due;
                    end = _endDue;
                    if (_delivered >= target && !end)
                    {
                        _delivering = false;
                        return;
                    }
                }
                while (_delivered < target && _source.TryRead(out var result))
                {
                    var buffer = result.Buffer;
                    var take = Math.Min(buffer.Length, target - _delivered);
                    foreach (var segment in buffer.Slice(0, take))
                    {
                        _destination.Write(segment.Span);
                    }
                    _delivered += take;
                    _source.AdvanceTo(buffer.GetPosition(take));
                    if (take == 0)
                    {
                        break;
                    }
                }
                if (_delivered < target)
                {
                    throw new InvalidOperationException("delay line: bytes stamped as flushed are missing from the source");
                }
                if (end)
                {
                    Finish(_endError);
                    return;
                }
                var flush = _destination.FlushAsync();
                if (!flush.IsCompletedSuccessfully)
                {
                    // The destination is paused: carry on when its reader makes room. The continuation is the pipe's
                    // (on its writer scheduler, the network's), so no task is left running while the link waits.
                    ResumeAfter(flush);
                    return;
                }
                if (flush.Result.IsCompleted)
                {
                    Finish(null); // the other side stopped reading
                    return;
                }
            }
        }
        catch (Exception e)
        {
            Finish(e);
            return;
        }
        Finish(null);
    }

    private void ResumeAfter(ValueTask<FlushResult> flush)
    {
        var awaiter = flush.ConfigureAwait(true).GetAwaiter();
        awaiter.UnsafeOnCompleted(() =>
        {
            try
            {
                if (awaiter.GetResult().IsCompleted)
                {
                    Finish(null);
                    return;
                }
            }
            catch (Exception e)
            {
                // Whatever completed the destination ends this direction of the link with it.
                Finish(e);
                return;
            }
            Deliver();
        });
    }

    /// <summary>Called by the owner only: completes both pipes once.</summary>
    private void Finish(Exception? error)
    {
        lock (Sync)
        {
            if (_finished)
            {
                return;
            }
            _finished = true;
            _inFlight.Clear();
            _timer.Dispose();
            error = _abortError ?? error;
        }
        _source.Complete();
        _destination.Complete(error);
    }

    /// <summary>
    /// The in-flight flushes, oldest first: the first inline and a queue only while two or more are in flight (flushes
    /// due in the same instant are one entry, so most links never make the queue; an idle link holds none).
    /// </summary>
    private struct InFlight
    {
        private Entry _head;
        private Queue<Entry>? _rest;

        public bool Any { get; private set; }

        public readonly Entry Peek() => Any ? _head : throw new InvalidOperationException("nothing in flight");

        public void Enqueue(Entry entry)
        {
            if (!Any)
            {
                _head = entry;
                Any = true;
                return;
            }
            (_rest ??= new Queue<Entry>()).Enqueue(entry);
        }

        public Entry Dequeue()
        {
            var head = Peek();
            if (_rest is { } rest)
            {
                _head = rest.Dequeue();
                if (rest.Count == 0)
                {
                    _rest = null;
                }
            }
            else
            {
                Any = false;
            }
            return head;
        }

        public void Clear() => this = default;
    }
}
