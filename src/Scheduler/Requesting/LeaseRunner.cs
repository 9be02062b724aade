using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Requesting;

/// <summary>
/// Drives one <see cref="RequesterLease"/> over the provider's <see cref="LeaseChannel"/> (one
/// <see cref="LeaseProtocol.Id"/> stream shared by all leases with that provider): writes what each step says,
/// feeds every message for this lease and every timer (on the injected clock) back in, one at a time. A broken
/// stream does not end the lease: the next message to send reopens one (the provider routes it by request id), and
/// if the provider stays silent the lease's own grace window expires it.
/// </summary>
internal sealed class LeaseRunner : IAsyncDisposable
{
    private readonly LeaseChannel _channel;
    private readonly RequesterLease _lease;
    private readonly TimeProvider _time;
    private readonly BackgroundWork _work;
    private readonly AsyncGate _gate = new();
    private readonly TaskCompletionSource<LeaseOutcome> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _stop = new();
    private readonly ITimer _timer;

    /// <param name="work">The requester's background work: timer steps and the cancel step run there.</param>
    public LeaseRunner(LeaseChannel channel, RequesterLease lease, TimeProvider time, BackgroundWork work)
    {
        _channel = channel;
        _lease = lease;
        _time = time;
        _work = work;
        _timer = time.CreateTimer(_ => _work.Run("lease timer", OnTimerAsync), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        channel.Attach(lease.RequestId, OnMessageAsync);
    }

    public RequesterLease Lease => _lease;

    /// <summary>Called with each debit note, in order, before the lease sees it (as a sign of life); null ignores them.</summary>
    public Action<LeaseDebitNote>? OnDebitNote { get; init; }

    /// <summary>Runs the lease to its end; cancelling sends a cancel to the provider and ends it.</summary>
    public async Task<LeaseOutcome> RunAsync(CancellationToken ct)
    {
        await using var registration = ct.Register(() => _work.Run("lease cancel", () => StepAsync(() => _lease.Cancel("requester gave up", _time.GetUtcNow()))));
        await StepAsync(() => _lease.Start(_time.GetUtcNow()));
        return await _done.Task;
    }

    private Task OnTimerAsync() => StepAsync(() => _lease.OnTimer(_time.GetUtcNow()));

    private Task OnMessageAsync(LeaseMessage message)
    {
        if (message is LeaseDebitNote note && !_done.Task.IsCompleted)
        {
            OnDebitNote?.Invoke(note);
        }
        return StepAsync(() => _lease.Handle(message, _time.GetUtcNow()));
    }

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
            await _channel.SendAsync(step.Send);
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

    public async ValueTask DisposeAsync()
    {
        _channel.Detach(_lease.RequestId);
        _timer.Dispose();
        _stop.Cancel();
        await ValueTask.CompletedTask;
    }
}
