using System.IO.Pipelines;
using System.Threading.Tasks.Sources;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Gossipsub;

/// <summary>
/// One peer's queue of encoded RPCs, bounded, read by the one loop that writes them to the peer's stream. It holds no
/// buffer while empty: the queue is made by the first RPC and dropped when the reader takes the last, so an idle peer
/// costs this object alone (a bounded <c>Channel</c> kept its deque and four async operations for the peer's life). The
/// reader's wait is one parked continuation with no token (<see cref="Complete"/> ends it), run on the runtime's
/// scheduler when an RPC arrives, as the channel ran its waiter: the same order of events in the simulation.
/// </summary>
internal sealed class OutboundQueue(int capacity, PipeScheduler scheduler) : IValueTaskSource<bool>
{
    // Locks itself (internal; the ValueTasks that carry it never lock it): a lock object would cost a peer as much as an empty queue.
    private Queue<byte[]>? _items;
    private bool _completed;
    private ParkedWait _wait;

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

    /// <summary>Queues an RPC and wakes the reader; false when the queue is full (<c>capacity</c> RPCs) or completed.</summary>
    public bool TryWrite(byte[] rpc)
    {
        ParkedContinuation.Scheduled wake;
        lock (this)
        {
            if (_completed || (_items?.Count ?? 0) >= capacity)
            {
                return false;
            }

            (_items ??= new Queue<byte[]>()).Enqueue(rpc);
            wake = _wait.Signal();
        }

        wake.Run(scheduler);
        return true;
    }

    /// <summary>Takes the oldest RPC; the queue's buffer goes with the last one.</summary>
    public bool TryRead(out byte[] rpc)
    {
        lock (this)
        {
            if (_items is not { } items)
            {
                rpc = [];
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

    /// <summary>True once an RPC waits, false once completed (one reader, one wait at a time).</summary>
    public ValueTask<bool> WaitToReadAsync()
    {
        lock (this)
        {
            if (_items is not null)
            {
                return new ValueTask<bool>(true);
            }

            if (_completed)
            {
                return new ValueTask<bool>(false);
            }

            if (_wait.Waiting)
            {
                throw new InvalidOperationException("the outbound queue has one reader");
            }

            return new ValueTask<bool>(this, _wait.Begin(CancellationToken.None, static (_, _) => { }, this));
        }
    }

    /// <summary>No more RPCs: what is queued is dropped (the session is closed and its stream reset) and the reader's wait ends with false.</summary>
    public void Complete()
    {
        ParkedContinuation.Scheduled wake;
        lock (this)
        {
            _completed = true;
            _items = null;
            wake = _wait.Signal();
        }

        wake.Run(scheduler);
    }

    ValueTaskSourceStatus IValueTaskSource<bool>.GetStatus(short token)
    {
        lock (this)
        {
            return _wait.Status(token);
        }
    }

    void IValueTaskSource<bool>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
    {
        ParkedContinuation.Scheduled run;
        lock (this)
        {
            run = _wait.OnCompleted(continuation, state, token, flags);
        }

        run.Run(scheduler);
    }

    bool IValueTaskSource<bool>.GetResult(short token)
    {
        lock (this)
        {
            _ = _wait.End(token, "this wait's result was already taken", out _); // no token, so no registration and never cancelled
            return _items is not null;
        }
    }
}
