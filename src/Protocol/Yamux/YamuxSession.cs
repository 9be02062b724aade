namespace Potluck.Protocol.Yamux;

/// <summary>
/// Per-stream bookkeeping owned by <see cref="YamuxSession"/>: windows, pending control flags and the
/// half-close / reset state. The async shell derives its stream type from this. Not thread-safe: the
/// shell calls the session under one lock.
/// </summary>
internal class YamuxStreamState(uint id, bool outbound)
{
    public uint Id { get; } = id;

    public bool Outbound { get; } = outbound;

    // Send side: credit the remote granted us.
    internal long SendWindow = YamuxOptions.InitialStreamWindow;

    // Receive side: RecvAvailable + Buffered + PendingCredit == RecvWindow.
    internal long RecvWindow = YamuxOptions.InitialStreamWindow;
    internal long RecvAvailable = YamuxOptions.InitialStreamWindow;
    internal long Buffered;
    internal long PendingCredit;

    // Memory: the window reserved for this stream: its whole window once it has grown beyond the initial one (reserved
    // before the larger window was granted), else 0; 0 again once the stream is removed (nothing more may arrive).
    // Buffered bytes beyond it are the session's unbacked bytes (see YamuxSession).
    internal long Backed;
    internal long EpochStart;

    // Control frames waiting for the writer.
    internal bool SynPending;
    internal bool AckPending;
    internal bool RstPending;
    internal bool AbortOutputPending;
    internal uint PendingDelta;
    internal bool InDirtyQueue;
    internal int TableSlot;   // the entry a dictionary of the open streams would keep it in (YamuxStreamTable)
    internal bool AwaitingAck;

    // Lifecycle.
    internal bool FinSent;
    internal bool RemoteFin;
    internal bool IsReset;
    internal bool LocalInputDone;
    internal bool Removed;
}

/// <summary>What the writer must do for one stream, taken atomically from the session.</summary>
internal readonly record struct StreamWork(YamuxFlags ControlFlags, uint WindowDelta, bool Rst, bool AbortOutput, long SendWindow);

/// <summary>What the shell must do after one inbound header.</summary>
internal struct InboundOutcome
{
    /// <summary>Set when the header broke the protocol: close the connection with a protocol error.</summary>
    public string? Violation;

    /// <summary>Which rule <see cref="Violation"/> broke.</summary>
    public Runtime.ViolationCode ViolationCode;

    /// <summary>The stream the frame concerns (null for session frames and unknown streams).</summary>
    public YamuxStreamState? Stream;

    /// <summary>Payload bytes that follow the header (data frames only).</summary>
    public uint PayloadLength;

    /// <summary>True when the payload goes to <see cref="Stream"/>'s input; false: read and discard it.</summary>
    public bool Deliver;

    /// <summary>Complete <see cref="Stream"/>'s input once the payload has been delivered (remote FIN).</summary>
    public bool FinAfterPayload;

    /// <summary>A new inbound stream to put in the accept backlog.</summary>
    public YamuxStreamState? Opened;

    /// <summary>The remote reset <see cref="Stream"/>: fail its input now.</summary>
    public bool RemoteReset;

    /// <summary>An outbound stream left the ACK backlog: waiting openers may retry.</summary>
    public bool AckBacklogFreed;

    /// <summary>A reply to one of our pings arrived.</summary>
    public bool PingAcked;

    public uint PingOpaque;

    public bool GoAwayReceived;

    public YamuxGoAwayCode GoAwayCode;

    /// <summary>Frames were queued for the writer.</summary>
    public bool WorkQueued;
}

/// <summary>
/// The yamux state machine without I/O: headers and the time in, decisions and queued frames out. It owns
/// stream ids, the stream table, flow-control accounting (including go-yamux style receive-window
/// auto-tuning), the caps, and the queues the writer drains. Time is a <see cref="TimeProvider"/> timestamp
/// passed in by the caller; the RTT is in the same units.
/// <para>
/// Memory is reserved (from the connection's <see cref="YamuxOptions.MaxConnectionMemory"/> and the host's scopes) for
/// what the remote can actually make us hold, not for windows at open: an idle stream reserves nothing. Two things are
/// reserved: (1) a stream's whole window when auto-tuning grows it beyond the initial 256 KiB, before the larger window
/// is granted (refused: the window stays as it is, which is backpressure, never a reset; as in go-yamux's
/// <c>sendWindowUpdate</c>), so a bulk stream's buffered bytes are always reserved; (2) bytes delivered into the input
/// of a stream whose window has not grown, not yet read, once this connection holds more than
/// <see cref="YamuxOptions.FreeReceiveBuffer"/> of them (refused: that stream, whose remote sent bytes we have no memory
/// for, is reset; the connection and its other streams go on). So what one connection buffers is at
/// most what it has reserved plus <see cref="YamuxOptions.FreeReceiveBuffer"/>, and what a remote can make the node
/// buffer is bounded by the scopes it reserves in plus that free amount per connection.
/// </para>
/// </summary>
/// <summary>Makes a session's stream states (the connection itself: no delegate object per connection).</summary>
internal interface IYamuxStreamFactory
{
    YamuxStreamState Create(uint id, bool outbound);
}

internal sealed class YamuxSession
{
    private readonly YamuxOptions _options;
    private readonly bool _initiator;
    private readonly IYamuxStreamFactory _createStream;
    private YamuxStreamTable _streams;   // a mutable struct: never readonly, never copied
    // Inline queues whose arrays are pooled while they hold something: an idle session holds neither a queue object nor
    // an array (two Queue objects and their arrays were ~0.2 KiB per connection).
    private PooledQueue<YamuxStreamState> _dirty;
    private PooledQueue<YamuxHeader> _control;
    private uint _nextOutboundId;
    private int _inbound;
    private int _outbound;
    private int _backlog;
    private int _unacked;

    // Memory (see the class summary): _reservedMemory == _growth + max(0, _unbacked - FreeReceiveBuffer) until released;
    // _growth is the sum of the streams' Backed, _unbacked the sum of their max(0, Buffered - Backed).
    private readonly Runtime.IMemoryScope? _budget;
    private long _growth;
    private long _unbacked;
    private long _buffered;
    private long _reservedMemory;
    private bool _memoryReleased;
    private long _refusedForMemory;
    private long _resetForMemory;

    public YamuxSession(YamuxOptions options, bool initiator, Func<uint, bool, YamuxStreamState> createStream, Runtime.IMemoryScope? budget = null)
        : this(options, initiator, new DelegateFactory(createStream), budget)
    {
    }

    private sealed class DelegateFactory(Func<uint, bool, YamuxStreamState> create) : IYamuxStreamFactory
    {
        public YamuxStreamState Create(uint id, bool outbound) => create(id, outbound);
    }

    public YamuxSession(YamuxOptions options, bool initiator, IYamuxStreamFactory createStream, Runtime.IMemoryScope? budget = null)
    {
        _budget = budget;
        _options = options;
        _initiator = initiator;
        _createStream = createStream;
        _nextOutboundId = initiator ? 1u : 2u;
    }

    /// <summary>We sent GoAway: inbound streams are refused from now on.</summary>
    public bool LocalGoAway { get; private set; }

    /// <summary>The remote sent GoAway: we may not open streams.</summary>
    public bool RemoteGoAway { get; private set; }

    /// <summary>Smoothed round-trip time in timestamp ticks; 0 while unknown (auto-tuning stays off).</summary>
    public long Rtt { get; set; }

    public int StreamCount => _streams.Count;

    /// <summary>Bytes reserved now: windows grown beyond the initial one, and other buffered bytes beyond the free amount.</summary>
    public long ReservedMemory => _reservedMemory;

    /// <summary>Reservations refused (windows not grown, deliveries refused) because a memory limit would have been passed.</summary>
    public long RefusedForMemory => _refusedForMemory;

    /// <summary>Streams reset because bytes their remote sent (within the window) could not be reserved.</summary>
    public long ResetForMemory => _resetForMemory;

    /// <summary>Bytes delivered to stream inputs and not yet read or discarded, over all streams (closed ones too).</summary>
    public long BufferedBytes => _buffered;

    /// <summary>Returns everything still reserved to the shared budget; the session reserves nothing after this.</summary>
    public void ReleaseAllMemory()
    {
        if (_memoryReleased)
        {
            return;
        }

        _memoryReleased = true;
        _budget?.Release(_reservedMemory);
        _reservedMemory = 0;
    }

    /// <summary>
    /// Moves <paramref name="stream"/> to <paramref name="buffered"/> bytes held and <paramref name="backed"/> bytes of
    /// window reserved, reserving or releasing the difference. Refused (nothing changes) when more must be reserved and a
    /// limit would be passed; a change that needs less never fails.
    /// </summary>
    private bool TrySetMemory(YamuxStreamState stream, long buffered, long backed)
    {
        var growth = _growth - stream.Backed + backed;
        var unbacked = _unbacked - Math.Max(0, stream.Buffered - stream.Backed) + Math.Max(0, buffered - backed);
        var target = growth + Math.Max(0, unbacked - _options.FreeReceiveBuffer);
        if (_memoryReleased)
        {
            // Closed: everything went back to the budget; a change that would need more is refused.
            if (target > _growth + Math.Max(0, _unbacked - _options.FreeReceiveBuffer))
            {
                _refusedForMemory++;
                return false;
            }
        }
        else
        {
            var more = target - _reservedMemory;
            if (more > 0 && target > _options.MaxConnectionMemory)
            {
                _refusedForMemory++;
                _budget?.CountConnectionRefusal();
                return false;
            }

            if (more > 0 && _budget is not null && !_budget.TryReserve(more))
            {
                _refusedForMemory++;
                return false;
            }

            if (more < 0)
            {
                _budget?.Release(-more);
            }

            _reservedMemory = target;
        }

        _buffered += buffered - stream.Buffered;
        _growth = growth;
        _unbacked = unbacked;
        stream.Buffered = buffered;
        stream.Backed = backed;
        return true;
    }

    public int InboundCount => _inbound;

    public int OutboundCount => _outbound;

    public int BacklogCount => _backlog;

    /// <summary>Our streams the remote has not yet acknowledged (libp2p: at most 256).</summary>
    public int UnackedOutbound => _unacked;

    /// <summary>True while opening another stream must wait for an ACK (or RST) from the remote.</summary>
    public bool AckBacklogFull => _unacked >= _options.MaxAckBacklog;

    public bool HasWork => _control.Count > 0 || _dirty.Count > 0;

    public IEnumerable<YamuxStreamState> Streams => _streams.Values;

    public IEnumerable<YamuxStreamState> DirtyStreams => _dirty.ToList();

    /// <summary>Whether the control or dirty queue holds an array now (tests: an idle session holds none).</summary>
    internal bool HoldsQueueArrays => _control.HoldsArray || _dirty.HoldsArray;

    /// <summary>Opens an outbound stream and queues its SYN. Throws when the caps or a GoAway forbid it.</summary>
    public YamuxStreamState OpenOutbound()
    {
        if (RemoteGoAway)
        {
            throw new Runtime.PeerGoneException("yamux: the remote sent GoAway and accepts no new streams");
        }

        if (_outbound >= _options.MaxOutboundStreams)
        {
            throw new YamuxStreamLimitException(_options.MaxOutboundStreams);
        }

        if (_nextOutboundId > uint.MaxValue - 2)
        {
            throw new Runtime.ResourceLimitException("yamux stream ids per connection", uint.MaxValue / 2, "yamux: stream ids are exhausted on this connection");
        }

        // Nothing is reserved for the initial window: memory is reserved as bytes arrive (see the class summary).
        var id = _nextOutboundId;
        _nextOutboundId += 2;
        var stream = _createStream.Create(id, true);
        _streams.Add(id, stream);
        _outbound++;
        stream.SynPending = true;
        stream.AwaitingAck = true;
        _unacked++;
        MarkDirty(stream);
        return stream;
    }

    /// <summary>The application took a stream from the accept backlog: acknowledge it now (as go-yamux does).</summary>
    public bool OnAccepted(YamuxStreamState stream)
    {
        _backlog = Math.Max(0, _backlog - 1);
        if (stream.IsReset || stream.Removed)
        {
            return false;
        }

        stream.AckPending = true;
        MarkDirty(stream);
        return true;
    }

    /// <summary>Queues our GoAway; inbound streams are refused from now on.</summary>
    public void GoAway(YamuxGoAwayCode code)
    {
        LocalGoAway = true;
        _control.Enqueue(new YamuxHeader(YamuxFrameType.GoAway, YamuxFlags.None, 0, (uint)code));
    }

    /// <summary>Queues a ping of ours (not subject to the control-frame cap).</summary>
    public void Ping(uint opaque) =>
        _control.Enqueue(new YamuxHeader(YamuxFrameType.Ping, YamuxFlags.Syn, 0, opaque));

    /// <summary>Handles one inbound header.</summary>
    public InboundOutcome OnHeader(in YamuxHeader header, long now)
    {
        var outcome = default(InboundOutcome);
        switch (header.Type)
        {
            case YamuxFrameType.Ping:
                if ((header.Flags & YamuxFlags.Syn) != 0)
                {
                    outcome.WorkQueued = TryQueueControl(new YamuxHeader(YamuxFrameType.Ping, YamuxFlags.Ack, 0, header.Length));
                }
                else if ((header.Flags & YamuxFlags.Ack) != 0)
                {
                    outcome.PingAcked = true;
                    outcome.PingOpaque = header.Length;
                }

                return outcome;

            case YamuxFrameType.GoAway:
                RemoteGoAway = true;
                outcome.GoAwayReceived = true;
                outcome.GoAwayCode = (YamuxGoAwayCode)header.Length;
                return outcome;
        }

        var isData = header.Type == YamuxFrameType.Data;
        if (header.StreamId == 0)
        {
            outcome.Violation = $"{header.Type} frame on stream 0";
            outcome.ViolationCode = Runtime.ViolationCode.UnexpectedMessage;
            return outcome;
        }

        if (isData && header.Length > _options.MaxStreamWindow)
        {
            outcome.Violation = $"data frame of {header.Length} bytes exceeds any window we grant";
            outcome.ViolationCode = Runtime.ViolationCode.TooLarge;
            return outcome;
        }

        _streams.TryGetValue(header.StreamId, out var stream);
        if ((header.Flags & YamuxFlags.Syn) != 0)
        {
            if (stream is not null)
            {
                outcome.Violation = $"SYN for stream {header.StreamId}, which is already open";
                outcome.ViolationCode = Runtime.ViolationCode.UnexpectedMessage;
                return outcome;
            }

            // The initiator (client) opens odd ids, the responder even ones.
            var remoteParity = _initiator ? 0u : 1u;
            if ((header.StreamId & 1) != remoteParity)
            {
                outcome.Violation = $"SYN for stream {header.StreamId}, an id of our own parity";
                outcome.ViolationCode = Runtime.ViolationCode.InvalidValue;
                return outcome;
            }

            if (isData && header.Length > YamuxOptions.InitialStreamWindow)
            {
                outcome.Violation = $"data frame of {header.Length} bytes exceeds the initial window";
                outcome.ViolationCode = Runtime.ViolationCode.TooLarge;
                return outcome;
            }

            // An idle stream reserves no memory: its data is reserved as it arrives (see the class summary).
            if (LocalGoAway || _inbound >= _options.MaxInboundStreams || _backlog >= _options.AcceptBacklog)
            {
                outcome.WorkQueued = TryQueueControl(new YamuxHeader(YamuxFrameType.WindowUpdate, YamuxFlags.Rst, header.StreamId, 0));
                outcome.PayloadLength = isData ? header.Length : 0;
                return outcome;
            }

            stream = _createStream.Create(header.StreamId, false);
            _streams.Add(header.StreamId, stream);
            _inbound++;
            _backlog++;
            stream.EpochStart = now;
            outcome.Opened = stream;
        }
        else if (stream is null)
        {
            // A stream we reset or closed; frames in flight may still arrive. Drain data, ignore the rest.
            outcome.PayloadLength = isData ? header.Length : 0;
            return outcome;
        }

        outcome.Stream = stream;
        if ((header.Flags & YamuxFlags.Ack) != 0 && stream.AwaitingAck)
        {
            stream.AwaitingAck = false;
            _unacked--;
            outcome.AckBacklogFreed = true;
        }

        if (header.Type == YamuxFrameType.WindowUpdate && header.Length > 0)
        {
            stream.SendWindow += header.Length;
            if (stream.SendWindow > uint.MaxValue)
            {
                outcome.Violation = $"window update overflows the send window of stream {stream.Id}";
                outcome.ViolationCode = Runtime.ViolationCode.InvalidValue;
                return outcome;
            }

            MarkDirty(stream);
            outcome.WorkQueued = true;
        }

        if (isData)
        {
            if (header.Length > stream.RecvAvailable)
            {
                outcome.Violation = $"data frame of {header.Length} bytes exceeds the receive window of {stream.RecvAvailable} on stream {stream.Id}";
                outcome.ViolationCode = Runtime.ViolationCode.TooLarge;
                return outcome;
            }

            stream.RecvAvailable -= header.Length;
            outcome.PayloadLength = header.Length;
            outcome.Deliver = !stream.LocalInputDone && !stream.RemoteFin;
            if (!outcome.Deliver && header.Length > 0)
            {
                outcome.WorkQueued |= Credit(stream, header.Length, now);
            }
        }

        if ((header.Flags & YamuxFlags.Rst) != 0)
        {
            outcome.Deliver = false;
            outcome.RemoteReset = !stream.IsReset;
            if (!stream.IsReset)
            {
                stream.IsReset = true;
                stream.AbortOutputPending = true;
                stream.SynPending = stream.AckPending = false;
                stream.PendingDelta = 0;
                MarkDirty(stream);
                outcome.WorkQueued = true;
                outcome.AckBacklogFreed |= stream.AwaitingAck;
                Remove(stream);
            }

            return outcome;
        }

        if ((header.Flags & YamuxFlags.Fin) != 0 && !stream.RemoteFin)
        {
            stream.RemoteFin = true;
            outcome.FinAfterPayload = true;
            TryRemoveClosed(stream);
        }

        return outcome;
    }

    /// <summary>
    /// Reserves <paramref name="count"/> payload bytes about to be put in the stream's input (call before delivering
    /// them). False when they do not fit the connection's or the host's memory: the stream is then reset (RST queued;
    /// the caller fails its input and drops the payload), and the connection and its other streams go on.
    /// </summary>
    public bool TryBuffer(YamuxStreamState stream, long count)
    {
        if (TrySetMemory(stream, stream.Buffered + count, stream.Backed))
        {
            return true;
        }

        if (ResetLocal(stream))
        {
            _resetForMemory++;
        }

        return false;
    }

    /// <summary>The application consumed <paramref name="count"/> bytes; may queue a window update.</summary>
    public bool OnConsumed(YamuxStreamState stream, long count, long now)
    {
        TrySetMemory(stream, Math.Max(0, stream.Buffered - count), stream.Backed); // less: never refused
        return Credit(stream, count, now);
    }

    /// <summary>Payload bytes for a stream whose input is closed were dropped; their window is credited back.</summary>
    public bool OnDiscarded(YamuxStreamState stream, long count, long now) => Credit(stream, count, now);

    /// <summary>The application completed the stream's input: what it did not read is credited back.</summary>
    public bool OnLocalInputCompleted(YamuxStreamState stream, long now)
    {
        if (stream.LocalInputDone)
        {
            return false;
        }

        stream.LocalInputDone = true;
        var unread = stream.Buffered;
        TrySetMemory(stream, 0, stream.Backed); // less: never refused
        return Credit(stream, unread, now);
    }

    /// <summary>Resets a stream locally; returns false when it was already reset or fully closed.</summary>
    public bool ResetLocal(YamuxStreamState stream)
    {
        if (stream.IsReset || stream.Removed)
        {
            return false;
        }

        stream.IsReset = true;
        stream.RstPending = true;
        stream.AbortOutputPending = true;
        stream.SynPending = stream.AckPending = false;
        stream.PendingDelta = 0;
        MarkDirty(stream);
        Remove(stream);
        return true;
    }

    /// <summary>The application's output has new data or was completed.</summary>
    public bool OnOutputReady(YamuxStreamState stream)
    {
        if (stream.IsReset || stream.FinSent)
        {
            return false;
        }

        return MarkDirty(stream);
    }

    /// <summary>Takes the next session-level frame (ping, pong, GoAway, refusal) for the writer.</summary>
    public bool TryTakeControl(out YamuxHeader header) => _control.TryDequeue(out header);

    /// <summary>Takes the next stream with work, clearing its pending control flags.</summary>
    public bool TryTakeDirty(out YamuxStreamState stream, out StreamWork work)
    {
        if (!_dirty.TryDequeue(out stream!))
        {
            work = default;
            return false;
        }

        stream.InDirtyQueue = false;
        var flags = YamuxFlags.None;
        if (stream.SynPending)
        {
            flags |= YamuxFlags.Syn;
        }

        if (stream.AckPending)
        {
            flags |= YamuxFlags.Ack;
        }

        work = new StreamWork(flags, stream.PendingDelta, stream.RstPending, stream.AbortOutputPending, stream.SendWindow);
        stream.SynPending = stream.AckPending = stream.RstPending = stream.AbortOutputPending = false;
        stream.PendingDelta = 0;
        return true;
    }

    /// <summary>The writer framed <paramref name="sent"/> bytes (and FIN when <paramref name="fin"/>).</summary>
    public void OnDataSent(YamuxStreamState stream, long sent, bool fin, bool moreBuffered)
    {
        stream.SendWindow -= sent;
        if (fin)
        {
            stream.FinSent = true;
            TryRemoveClosed(stream);
        }
        else if (moreBuffered && stream.SendWindow > 0 && !stream.IsReset)
        {
            MarkDirty(stream);
        }
    }

    private bool Credit(YamuxStreamState stream, long count, long now)
    {
        if (count <= 0 || stream.IsReset || stream.RemoteFin)
        {
            return false;
        }

        stream.PendingCredit += count;
        if (stream.PendingCredit < stream.RecvWindow / 2)
        {
            return false;
        }

        // Auto-tune as go-yamux does: a window consumed within a few RTTs limits throughput, so double it.
        var delta = stream.PendingCredit;
        if (Rtt > 0 && now - stream.EpochStart < Rtt * 4 && stream.RecvWindow < _options.MaxStreamWindow)
        {
            // Only as far as the connection's and the host's memory allow; otherwise the window stays as it is
            // (backpressure: the stream goes on at its current window, as go-yamux's sendWindowUpdate does).
            var grown = Math.Min(stream.RecvWindow * 2, _options.MaxStreamWindow);
            if (TrySetMemory(stream, stream.Buffered, grown))
            {
                delta += grown - stream.RecvWindow;
                stream.RecvWindow = grown;
            }
        }

        stream.EpochStart = now;
        stream.PendingCredit = 0;
        stream.RecvAvailable += delta;
        stream.PendingDelta = checked((uint)(stream.PendingDelta + delta));
        MarkDirty(stream);
        return true;
    }

    private bool TryQueueControl(in YamuxHeader header)
    {
        if (_control.Count >= _options.MaxPendingControlFrames)
        {
            return false;
        }

        _control.Enqueue(header);
        return true;
    }

    private bool MarkDirty(YamuxStreamState stream)
    {
        if (stream.InDirtyQueue)
        {
            return false;
        }

        stream.InDirtyQueue = true;
        _dirty.Enqueue(stream);
        return true;
    }

    private void TryRemoveClosed(YamuxStreamState stream)
    {
        if (stream.FinSent && stream.RemoteFin)
        {
            Remove(stream);
        }
    }

    private void Remove(YamuxStreamState stream)
    {
        if (stream.Removed)
        {
            return;
        }

        stream.Removed = true;
        _streams.Remove(stream.Id);
        // Nothing more may arrive, so the reserved window is returned; bytes still buffered stay reserved until the
        // application reads them or completes its input (this never needs more: they were backed or reserved).
        TrySetMemory(stream, stream.Buffered, 0);
        if (stream.AwaitingAck)
        {
            stream.AwaitingAck = false;
            _unacked--;
        }

        if (stream.Outbound)
        {
            _outbound--;
        }
        else
        {
            _inbound--;
        }
    }
}

/// <summary>Opening a stream would exceed <see cref="YamuxOptions.MaxOutboundStreams"/>.</summary>
public sealed class YamuxStreamLimitException : Runtime.ResourceLimitException
{
    public YamuxStreamLimitException(int limit)
        : base("yamux outbound streams per connection", limit, $"yamux: the limit of {limit} concurrently open outbound streams is reached")
    {
    }
}
