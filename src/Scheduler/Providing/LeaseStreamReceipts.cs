using System.Threading.Channels;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Providing;

/// <summary>
/// The receipts of one lease stream, answered one at a time in the order they arrived, off the stream's read loop (a
/// durable commit must not hold up the other leases on the stream). At most <c>capacity</c> wait; past that the read loop
/// waits for room (<see cref="EnqueueAsync"/>) and reads nothing more, so a requester that floods receipts is held back by
/// the stream's flow control, not answered by more tasks: a stream costs one piece of background work at a time, and only
/// while it has receipts waiting. Nothing is refused for the flood: every receipt read is answered, in order.
/// </summary>
internal sealed class LeaseStreamReceipts
{
    private readonly Channel<LeaseReceipt> _waiting;
    private readonly Action<LeaseReceipt> _answer;
    private readonly BackgroundWork _work;
    private readonly ReceiptLoad _load;
    private readonly int _capacity;
    private int _draining;

    /// <param name="capacity">Receipts that may wait at once (besides the one being answered).</param>
    /// <param name="answer">Records one receipt and queues its acknowledgement (synchronous: the ledger's commit).</param>
    /// <param name="load">The service's count of receipts waiting or being answered, over all its streams.</param>
    public LeaseStreamReceipts(int capacity, Action<LeaseReceipt> answer, BackgroundWork work, ReceiptLoad load)
    {
        _waiting = Channel.CreateBounded<LeaseReceipt>(new BoundedChannelOptions(capacity)
        {
            SingleReader = true,
            SingleWriter = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
        _capacity = capacity;
        _answer = answer;
        _work = work;
        _load = load;
    }

    /// <summary>
    /// Queues <paramref name="receipt"/> and, when <c>capacity</c> wait now, completes only once one of them is being answered:
    /// the caller reads nothing more meanwhile, so at most <c>capacity</c> wait and one is answered.
    /// </summary>
    public async ValueTask EnqueueAsync(LeaseReceipt receipt, CancellationToken ct)
    {
        _load.Enter();
        try
        {
            await _waiting.Writer.WriteAsync(receipt, ct); // room is there: the caller waited for it after the last one
        }
        catch
        {
            _load.Leave();
            throw;
        }
        if (Interlocked.CompareExchange(ref _draining, 1, 0) == 0)
        {
            _work.Run("receipts on lease stream", Drain);
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
                while (_waiting.Reader.TryRead(out var receipt))
                {
                    try
                    {
                        _answer(receipt);
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

/// <summary>Receipts from lease streams waiting or being answered, over all of a provider's streams, and the peak.</summary>
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
