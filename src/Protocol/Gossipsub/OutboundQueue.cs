using System.IO.Pipelines;

namespace Potluck.Protocol.Gossipsub;

/// <summary>
/// One peer's queue of RPCs (the writer encodes each into the stream), bounded, and who writes them to the peer's
/// stream: a reader that runs only while there is something to do. It holds no buffer while empty (the queue is made by the first RPC and dropped when the
/// reader takes the last) and no parked reader: once the reader has written everything and <see cref="Next"/> finds the
/// queue empty, the reader returns; the next RPC (or <see cref="Complete"/>) schedules it again on the runtime's
/// scheduler, where a parked reader's continuation ran before, so the simulation sees the same order of events. An idle
/// peer costs this object alone (a reader loop parked per peer kept its state machine, delegates and closure, ~0.6 KiB).
/// </summary>
internal sealed class OutboundQueue<T>(int capacity, PipeScheduler scheduler, Action<object?> reader, object? readerState)
{
    // Locks itself (internal; nothing outside locks it): a lock object would cost a peer as much as an empty queue.
    private Queue<T>? _items;
    private bool _completed;
    private ReaderState _reader;

    private enum ReaderState : byte
    {
        /// <summary>No reader yet (the stream is opening): RPCs wait for <see cref="Attach"/>.</summary>
        Detached,

        /// <summary>A reader runs (it will call <see cref="Next"/> before it returns).</summary>
        Running,

        /// <summary>No reader runs: the next RPC or the completion schedules one.</summary>
        Idle,
    }

    /// <summary>What the reader does next.</summary>
    public enum Step : byte
    {
        /// <summary>RPCs wait: take them (<see cref="TryRead"/>), write and flush them, then ask again.</summary>
        Write,

        /// <summary>Nothing to write: return; the queue schedules the reader when there is.</summary>
        Parked,

        /// <summary>The queue was completed (the session closed): close the stream.</summary>
        Completed,
    }

    /// <summary>Whether a buffer is held now (for tests: none while empty).</summary>
    internal bool HoldsBuffer
    {
        get
        {
            lock (this)
            {
                return _items is not null;
            }
        }
    }

    /// <summary>Whether a reader runs or is scheduled now (for tests: none while idle).</summary>
    internal bool ReaderRunning
    {
        get
        {
            lock (this)
            {
                return _reader == ReaderState.Running;
            }
        }
    }

    /// <summary>Queues an RPC and schedules the reader when none runs; false when the queue is full (<c>capacity</c> RPCs) or completed.</summary>
    public bool TryWrite(T rpc)
    {
        bool wake;
        lock (this)
        {
            if (_completed || (_items?.Count ?? 0) >= capacity)
            {
                return false;
            }

            (_items ??= new Queue<T>()).Enqueue(rpc);
            wake = _reader == ReaderState.Idle;
            if (wake)
            {
                _reader = ReaderState.Running;
            }
        }

        if (wake)
        {
            scheduler.Schedule(reader, readerState);
        }

        return true;
    }

    /// <summary>Takes the oldest RPC; the queue's buffer goes with the last one.</summary>
    public bool TryRead(out T rpc)
    {
        lock (this)
        {
            if (_items is not { } items)
            {
                rpc = default!;
                return false;
            }

            rpc = items.Dequeue();
            if (items.Count == 0)
            {
                _items = null;
            }

            return true;
        }
    }

    /// <summary>The stream is open: the caller is the reader now and calls <see cref="Next"/> at once (once per queue).</summary>
    public void Attach()
    {
        lock (this)
        {
            if (_reader != ReaderState.Detached)
            {
                throw new InvalidOperationException("the outbound queue has one reader");
            }

            _reader = ReaderState.Running;
        }
    }

    /// <summary>
    /// The reader asks what to do: <see cref="Step.Write"/> while RPCs wait, <see cref="Step.Completed"/> once completed,
    /// else <see cref="Step.Parked"/>, after which it must return (it is scheduled again, from the start, when needed).
    /// </summary>
    public Step Next()
    {
        lock (this)
        {
            if (_reader != ReaderState.Running)
            {
                throw new InvalidOperationException("only the running reader asks for its next step");
            }

            if (_items is not null)
            {
                return Step.Write;
            }

            if (_completed)
            {
                return Step.Completed;
            }

            _reader = ReaderState.Idle;
            return Step.Parked;
        }
    }

    /// <summary>No more RPCs: what is queued is dropped (the session is closed and its stream reset) and an idle reader is scheduled to see it.</summary>
    public void Complete()
    {
        bool wake;
        lock (this)
        {
            if (_completed)
            {
                return;
            }

            _completed = true;
            _items = null;
            wake = _reader == ReaderState.Idle;
            if (wake)
            {
                _reader = ReaderState.Running;
            }
        }

        if (wake)
        {
            scheduler.Schedule(reader, readerState);
        }
    }
}
