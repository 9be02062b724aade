using Potluck.Protocol;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Host;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Requesting;

/// <summary>
/// Drives one <see cref="RequesterLease"/> over <see cref="LeaseProtocol.Id"/> streams: opens a stream, writes what
/// each step says, feeds every message read and every timer (on the injected clock) back in, one at a time. A
/// broken stream does not end the lease: the next message to send reopens one (the provider routes it by request
/// id), and if the provider stays silent the lease's own grace window expires it.
/// </summary>
internal sealed class LeaseRunner : IAsyncDisposable
{
    private readonly IHost _host;
    private readonly RequesterLease _lease;
    private readonly LeaseOptions _options;
    private readonly TimeProvider _time;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly TaskCompletionSource<LeaseOutcome> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _stop = new();
    private readonly ITimer _timer;
    private IStream? _stream;

    public LeaseRunner(IHost host, RequesterLease lease, LeaseOptions options, TimeProvider time)
    {
        _host = host;
        _lease = lease;
        _options = options;
        _time = time;
        _timer = time.CreateTimer(_ => _ = Task.Run(OnTimerAsync), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    public RequesterLease Lease => _lease;

    /// <summary>Runs the lease to its end; cancelling sends a cancel to the provider and ends it.</summary>
    public async Task<LeaseOutcome> RunAsync(CancellationToken ct)
    {
        await using var registration = ct.Register(() => _ = Task.Run(() => StepAsync(() => _lease.Cancel("requester gave up", _time.GetUtcNow()))));
        await StepAsync(() => _lease.Start(_time.GetUtcNow()));
        return await _done.Task;
    }

    private Task OnTimerAsync() => StepAsync(() => _lease.OnTimer(_time.GetUtcNow()));

    private async Task StepAsync(Func<LeaseStep> produce)
    {
        try
        {
            await _gate.WaitAsync(_stop.Token);
        }
        catch (OperationCanceledException)
        {
            return;
        }
        try
        {
            if (_done.Task.IsCompleted)
            {
                return;
            }
            await ApplyAsync(produce());
        }
        finally
        {
            _gate.Release();
        }
    }

    private async Task ApplyAsync(LeaseStep step)
    {
        if (step.Send.Count > 0)
        {
            await SendAsync(step.Send);
        }
        if (step.Outcome is { } outcome)
        {
            _timer.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            _done.TrySetResult(outcome);
            return;
        }
        if (step.NextTimer is { } due)
        {
            var delay = due - _time.GetUtcNow();
            _timer.Change(delay < TimeSpan.Zero ? TimeSpan.Zero : delay, Timeout.InfiniteTimeSpan);
        }
    }

    private async Task SendAsync(IReadOnlyList<LeaseMessage> messages)
    {
        for (var tries = 0; tries < 2; tries++)
        {
            var stream = _stream ?? await TryOpenAsync();
            if (stream is null)
            {
                return;
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
                    return;
                }
            }
            catch (Exception e) when (e is IOException or InvalidOperationException or ObjectDisposedException or OperationCanceledException)
            {
            }
            Drop(stream);
        }
    }

    private async Task<IStream?> TryOpenAsync()
    {
        try
        {
            using var timeout = new CancellationTokenSource(_options.RetryInterval, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, _stop.Token);
            var stream = await _host.NewStreamAsync(_lease.Provider, [LeaseProtocol.Id], linked.Token);
            _stream = stream;
            _ = Task.Run(() => ReadLoopAsync(stream));
            return stream;
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or InvalidOperationException or ProtocolViolationException
                                      or ProtocolNotSupportedException or ObjectDisposedException)
        {
            return null;
        }
    }

    private async Task ReadLoopAsync(IStream stream)
    {
        try
        {
            while (!_done.Task.IsCompleted)
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
                await StepAsync(() => _lease.Handle(message!, _time.GetUtcNow()));
            }
        }
        catch (ProtocolViolationException)
        {
            stream.Reset();
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or InvalidOperationException or ObjectDisposedException)
        {
        }
        await _gate.WaitAsync();
        try
        {
            if (_stream == stream)
            {
                Drop(stream);
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    private void Drop(IStream stream)
    {
        if (_stream == stream)
        {
            _stream = null;
        }
        _ = stream.DisposeAsync().AsTask();
    }

    public async ValueTask DisposeAsync()
    {
        _timer.Dispose();
        await _stop.CancelAsync();
        if (_stream is { } s)
        {
            _stream = null;
            await s.DisposeAsync();
        }
    }
}
