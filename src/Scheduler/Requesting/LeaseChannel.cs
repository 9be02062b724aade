using System.Collections.Concurrent;
using Potluck.Protocol;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Requesting;

/// <summary>What became of <see cref="LeaseChannel.SendAsync"/>.</summary>
internal enum LeaseSend
{
    /// <summary>Written on the stream.</summary>
    Sent,

    /// <summary>
    /// Not sent: the stream broke, or none could be opened on a connection that went away meanwhile (closed or trimmed as
    /// the lease went out). A new one may work at once: the lease repeats soon (<see cref="LeaseOptions.LostStreamRetry"/>).
    /// </summary>
    Lost,

    /// <summary>
    /// Not sent: the provider could not be reached at all (the dial failed: partitioned, refused, no address). Repeating at
    /// once would fail the same way and spend the lease's attempts: the retry interval applies.
    /// </summary>
    Unreachable,
}

/// <summary>
/// The requester's one <see cref="LeaseProtocol.Id"/> stream to one provider, shared by every lease with it: the
/// protocol already names the lease in each message (request id), and the provider routes each message by
/// (requester, request id) whichever stream it came on, so a stream need not be opened (and negotiated) per lease.
/// Writes are serialised; one read loop hands each message to the lease it names, in order (a message for no lease
/// here, such as a late answer to a lease already over, is dropped). A broken stream ends nothing: it is dropped,
/// and the next message any lease sends opens a new one. When the provider speaks
/// <see cref="LeaseProtocol.IdWithReceipts"/>, receipts travel on the same stream (<see cref="ExchangeReceiptAsync"/>).
/// </summary>
internal sealed class LeaseChannel : IAsyncDisposable
{
    private readonly IHost _host;
    private readonly LeaseOptions _options;
    private readonly TimeProvider _time;
    private readonly BackgroundWork _work;
    private static readonly string[] Protocols = [LeaseProtocol.IdWithReceipts, LeaseProtocol.Id];
    private readonly ConcurrentDictionary<ulong, (Func<LeaseMessage, Task> Handle, Action? Lost)> _leases = new();
    private readonly ConcurrentDictionary<ulong, TaskCompletionSource<byte[]?>> _receipts = new();
    private readonly AsyncGate _write = new();
    private readonly CancellationTokenSource _stop = new();
    private IStream? _stream;
    private long _opened;

    /// <summary>
    /// The advertisement whose addresses <see cref="ComputeClient"/> last put into the peer store for this provider, and
    /// when (under the client's lock).
    /// </summary>
    internal object? AddressesFrom { get; set; }

    internal DateTimeOffset AddressesAt { get; set; }

    /// <param name="work">The requester's background work: the channel's read loops run there.</param>
    public LeaseChannel(IHost host, PeerId provider, LeaseOptions options, TimeProvider time, BackgroundWork work)
    {
        _host = host;
        Provider = provider;
        _options = options;
        _time = time;
        _work = work;
    }

    public PeerId Provider { get; }

    /// <summary>No lease and no receipt is using the channel: it can be closed without losing anything.</summary>
    public bool IsIdle => _leases.IsEmpty && _receipts.IsEmpty;

    /// <summary>Streams opened so far (tests check that leases share one).</summary>
    public long StreamsOpened => Interlocked.Read(ref _opened);

    /// <summary>
    /// Routes messages naming <paramref name="requestId"/> to <paramref name="handle"/> until <see cref="Detach"/>;
    /// <paramref name="lost"/> is called each time a stream that was open breaks or ends (what was sent on it may never be
    /// answered).
    /// </summary>
    public void Attach(ulong requestId, Func<LeaseMessage, Task> handle, Action? lost = null)
    {
        if (!_leases.TryAdd(requestId, (handle, lost)))
        {
            throw new InvalidOperationException($"lease {requestId} is already running on this channel");
        }
    }

    public void Detach(ulong requestId) => _leases.TryRemove(requestId, out _);

    /// <summary>
    /// Writes <paramref name="messages"/> in order on the current stream (opening one if there is none); on a broken
    /// stream, once more on a new one. When they could not be sent, says why: the lease's own retries take it from there.
    /// </summary>
    public Task<LeaseSend> SendAsync(IReadOnlyList<LeaseMessage> messages) => SendAsync(messages, receipts: false);

    /// <summary>
    /// Sends a settled receipt for lease <paramref name="requestId"/> on the lease stream and returns the provider's
    /// encoded acknowledgement; null when the provider does not take receipts here (it speaks only
    /// <see cref="LeaseProtocol.Id"/>), the stream broke, or <paramref name="ct"/> ended the wait: the caller then
    /// uses <c>/potluck/receipt/1.0.0</c>, which is always safe to repeat.
    /// </summary>
    public async Task<byte[]?> ExchangeReceiptAsync(ulong requestId, byte[] envelope, CancellationToken ct)
    {
        var answer = new TaskCompletionSource<byte[]?>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_receipts.TryAdd(requestId, answer))
        {
            return null;
        }
        try
        {
            if (await SendAsync([new LeaseReceipt { RequestId = requestId, Envelope = envelope }], receipts: true) != LeaseSend.Sent)
            {
                return null;
            }
            return await LoopSafeWait.WaitAsync(answer.Task, ct);
        }
        catch (OperationCanceledException)
        {
            return null;
        }
        finally
        {
            _receipts.TryRemove(requestId, out _);
        }
    }

    private async Task<LeaseSend> SendAsync(IReadOnlyList<LeaseMessage> messages, bool receipts)
    {
        try
        {
            await _write.WaitAsync(_stop.Token);
        }
        catch (OperationCanceledException)
        {
            return LeaseSend.Lost;
        }
        try
        {
            for (var tries = 0; tries < 2; tries++)
            {
                var (stream, unreachable) = _stream is { } open ? (open, false) : await TryOpenAsync();
                if (stream is null)
                {
                    return unreachable ? LeaseSend.Unreachable : LeaseSend.Lost;
                }
                if (receipts && stream.Protocol != LeaseProtocol.IdWithReceipts)
                {
                    return LeaseSend.Lost;
                }
                try
                {
                    foreach (var m in messages)
                    {
                        LeaseCodec.WriteFrame(stream.Output, m);
                    }
                    var flush = await stream.Output.FlushAsync(_stop.Token);
                    if (!flush.IsCompleted && !flush.IsCanceled)
                    {
                        if (Metrics.LeaseTimeline.Enabled)
                        {
                            foreach (var m in messages)
                            {
                                Metrics.LeaseTimeline.Message(m, sent: true, provider: false);
                            }
                        }
                        return LeaseSend.Sent;
                    }
                }
                catch (Exception e) when (Failures.IsExpected(e, _stop.Token))
                {
                }
                Drop(stream);
            }
            return LeaseSend.Lost;
        }
        finally
        {
            _write.Release();
        }
    }

    /// <summary>
    /// Opens a stream and starts its read loop; called holding the write lock. Null when none could be opened, with
    /// whether the provider could not be reached at all (its dial failed) rather than the stream failing on a connection.
    /// </summary>
    private async Task<(IStream? Stream, bool Unreachable)> TryOpenAsync()
    {
        try
        {
            using var timeout = new CancellationTokenSource(_options.RetryInterval, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, _stop.Token);
            using var dialReason = DialReason.Use(DialReason.Lease);
            var stream = await _host.NewStreamAsync(Provider, Protocols, linked.Token);
            Interlocked.Increment(ref _opened);
            _stream = stream;
            _work.Run($"lease stream to {Provider}", () => ReadLoopAsync(stream));
            return (stream, false);
        }
        catch (Exception e) when (Failures.IsExpected(e, _stop.Token))
        {
            return (null, e is DialException);
        }
    }

    private async Task ReadLoopAsync(IStream stream)
    {
        try
        {
            while (true)
            {
                var body = await FrameReader.ReadAsync(stream.Input, _options.MaxFrameBytes, LeaseProtocol.Id, _stop.Token);
                if (body is null)
                {
                    break;
                }
                if (LeaseCodec.TryDeserialize(body, _options, out var message) != DecodeStatus.Done)
                {
                    throw new ProtocolViolationException(LeaseProtocol.Id, "malformed lease message");
                }
                Metrics.LeaseTimeline.Message(message!, sent: false, provider: false);
                if (message is LeaseReceiptAck ack)
                {
                    if (_receipts.TryGetValue(ack.RequestId, out var waiter))
                    {
                        waiter.TrySetResult(ack.Ack);
                    }
                }
                else if (_leases.TryGetValue(message!.RequestId, out var lease))
                {
                    await lease.Handle(message);
                }
            }
        }
        catch (Exception e) when (Failures.Classify(e, _stop.Token) is { Kind: FailureKind.ProtocolViolation })
        {
            stream.Reset();
        }
        catch (Exception e) when (Failures.IsExpected(e, _stop.Token))
        {
        }
        // A receipt sent on this stream gets no answer now: its sender falls back to the receipt protocol.
        foreach (var waiter in _receipts.Values)
        {
            waiter.TrySetResult(null);
        }
        // Under the write lock, so a writer never picks up a stream being dropped.
        try
        {
            await _write.WaitAsync(_stop.Token);
        }
        catch (OperationCanceledException)
        {
            return;
        }
        try
        {
            Drop(stream);
        }
        finally
        {
            _write.Release();
        }
        foreach (var lease in _leases.Values)
        {
            lease.Lost?.Invoke();
        }
    }

    private void Drop(IStream stream)
    {
        if (_stream == stream)
        {
            _stream = null;
        }
        _work.Track("lease stream dispose", stream.DisposeAsync());
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        if (Interlocked.Exchange(ref _stream, null) is { } s)
        {
            await s.DisposeAsync();
        }
    }
}
