using System.Threading.Channels;
using Potluck.Protocol.Host;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Providing;

/// <summary>
/// One lease stream's writer: messages are queued in the order the state machines produced them (callers enqueue
/// under their lock) and written by a single loop. A queue past its bound resets the stream rather than grow.
/// Writes to a closed session are dropped: the lease's timers, not the stream, decide when it ends.
/// </summary>
internal sealed class LeaseSession
{
    private readonly Channel<LeaseMessage> _queue;
    private readonly IStream _stream;

    public LeaseSession(IStream stream, int capacity, BackgroundWork work)
    {
        _stream = stream;
        _queue = Channel.CreateBounded<LeaseMessage>(new BoundedChannelOptions(capacity) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
        Writer = work.Start("lease stream writer", _ => WriteLoopAsync());
    }

    public Task Writer { get; }

    public void Enqueue(IReadOnlyList<LeaseMessage> messages)
    {
        foreach (var m in messages)
        {
            if (!_queue.Writer.TryWrite(m))
            {
                if (_queue.Writer.TryComplete())
                {
                    _stream.Reset();
                }
                return;
            }
        }
    }

    /// <summary>No more messages: the writer finishes what is queued and stops.</summary>
    public void Close() => _queue.Writer.TryComplete();

    private async Task WriteLoopAsync()
    {
        try
        {
            while (await _queue.Reader.WaitToReadAsync())
            {
                // Everything queued goes out under one flush: leases sharing the stream do not each pay for one.
                while (_queue.Reader.TryRead(out var message))
                {
                    LeaseCodec.WriteFrame(_stream.Output, message);
                    Metrics.LeaseTimeline.Message(message, sent: true, provider: true);
                }
                var flush = await _stream.Output.FlushAsync();
                if (flush.IsCompleted || flush.IsCanceled)
                {
                    break;
                }
            }
        }
        catch (Exception e) when (Failures.IsRemote(e) || Failures.Classify(e).Kind == FailureKind.Cancelled)
        {
            // The stream went away; the lease's timers take it from here.
        }
        _queue.Writer.TryComplete();
        while (_queue.Reader.TryRead(out _))
        {
        }
    }
}
