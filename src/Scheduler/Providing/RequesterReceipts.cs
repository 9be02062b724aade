using System.Threading.Channels;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Providing;

/// <summary>
/// The receipts one requester sends on its lease streams (all of them: one queue per requester, shared while any of its
/// streams is open), answered one at a time in the order they arrived, off the streams' read loops (a durable commit must
/// not hold up the other leases on a stream), each acknowledged on the stream it came on. At most <c>capacity</c> wait;
/// while that many do, a stream that has just queued one waits for room before it reads on (<see cref="EnqueueAsync"/>),
/// so a requester that floods receipts is held back by its streams' flow control, not answered by more tasks: a requester
/// costs one piece of background work at a time, and only while it has receipts waiting. Nothing is refused for the
/// flood: every receipt read is answered, in order.
/// </summary>
internal sealed class RequesterReceipts
{
    private readonly Channel<(LeaseReceipt Receipt, LeaseSession Session)> _waiting;
    private readonly Action<LeaseReceipt, LeaseSession> _answer;
    private readonly BackgroundWork _work;
    private readonly ReceiptLoad _load;
    private readonly int _capacity;
    private readonly Func<Task> _drain;
    private int _draining;

    /// <param name="capacity">Receipts that may wait at once (besides the one being answered).</param>
    /// <param name="answer">Records one receipt and queues its acknowledgement on its stream (synchronous: the ledger's commit).</param>
    /// <param name="load">The service's count of receipts read and not yet answered, over all requesters.</param>
    public RequesterReceipts(int capacity, Action<LeaseReceipt, LeaseSession> answer, BackgroundWork work, ReceiptLoad load)
    {
        _waiting = Channel.CreateBounded<(LeaseReceipt, LeaseSession)>(new BoundedChannelOptions(capacity)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
        _capacity = capacity;
        _answer = answer;
        _work = work;
        _load = load;
        _drain = Drain;
    }

    /// <summary>The requester's lease streams open now (the service's registry counts them under its lock).</summary>
    public int Streams { get; set; }

    /// <summary>
    /// Queues <paramref name="receipt"/> from the stream of <paramref name="session"/> and, when <c>capacity</c> wait now,
    /// completes only once one of them is being answered: the caller reads nothing more meanwhile. A requester with one stream
    /// has at most <c>capacity</c> waiting and one being answered; with more, each may also hold one it read, waiting for room.
    /// </summary>
    public async ValueTask EnqueueAsync(LeaseReceipt receipt, LeaseSession session, CancellationToken ct)
    {
        _load.Enter();
        try
        {
            await _waiting.Writer.WriteAsync((receipt, session), ct); // waits only while another stream filled the queue
        }
        catch
        {
            _load.Leave();
            throw;
        }
        if (Interlocked.CompareExchange(ref _draining, 1, 0) == 0)
        {
            _work.Run("receipts on lease streams", _drain);
        }
        if (_waiting.Reader.Count >= _capacity)
        {
            _load.HeldBack();
            await _waiting.Writer.WaitToWriteAsync(ct);
        }
    }

    /// <summary>Answers what waits, in order; stops when nothing does (the next receipt starts it again).</summary>
    private Task Drain()
    {
        while (true)
        {
            try
            {
                while (_waiting.Reader.TryRead(out var item))
                {
                    try
                    {
                        _answer(item.Receipt, item.Session);
                    }
                    finally
                    {
                        _load.Leave();
                    }
                }
            }
            finally
            {
                Volatile.Write(ref _draining, 0);
            }
            // A receipt queued after the last read and before the flag was cleared found the drain running: take it here.
            if (!_waiting.Reader.TryPeek(out _) || Interlocked.CompareExchange(ref _draining, 1, 0) != 0)
            {
                return Task.CompletedTask;
            }
        }
    }
}

/// <summary>Receipts from lease streams read and not yet answered, over all of a provider's requesters, and the peak.</summary>
internal sealed class ReceiptLoad
{
    private long _now;
    private long _peak;
    private long _heldBack;

    public long Now => Interlocked.Read(ref _now);

    public long Peak => Interlocked.Read(ref _peak);

    /// <summary>Times a stream's read loop waited, with its queue full, before reading on.</summary>
    public long HeldBackCount => Interlocked.Read(ref _heldBack);

    public void Enter()
    {
        var now = Interlocked.Increment(ref _now);
        var peak = Interlocked.Read(ref _peak);
        while (now > peak)
        {
            var seen = Interlocked.CompareExchange(ref _peak, now, peak);
            if (seen == peak)
            {
                return;
            }
            peak = seen;
        }
    }

    public void Leave() => Interlocked.Decrement(ref _now);

    public void HeldBack() => Interlocked.Increment(ref _heldBack);
}
