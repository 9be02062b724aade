using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Cores;
using Potluck.Scheduler.Leasing;

namespace Potluck.Scheduler.Requesting;

/// <summary>
/// Drives one <see cref="RequesterLease"/> over the provider's <see cref="LeaseChannel"/> (one
/// <see cref="LeaseProtocol.Id"/> stream shared by all leases with that provider) in the shell both sides share
/// (<see cref="CoreShell{TStep}"/>): every message for this lease, every timer (on the injected clock), the start and the
/// cancel are events taken one at a time; each step's messages are written before the next event is taken. A broken
/// stream does not end the lease: the next message to send reopens one (the provider routes it by request id), and if the
/// provider stays silent the lease's own grace window expires it.
/// </summary>
internal sealed class LeaseRunner : IAsyncDisposable, ICoreEffects<LeaseStep>
{
    private readonly LeaseChannel _channel;
    private readonly RequesterLease _lease;
    private readonly TimeProvider _time;
    private readonly BackgroundWork _work;
    private readonly TaskCompletionSource<LeaseOutcome> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CoreShell<LeaseStep> _shell;

    /// <param name="work">The requester's background work: timer steps and the cancel step run there.</param>
    public LeaseRunner(LeaseChannel channel, RequesterLease lease, TimeProvider time, BackgroundWork work)
    {
        _channel = channel;
        _lease = lease;
        _time = time;
        _work = work;
        _shell = new CoreShell<LeaseStep>(this, time, Shell, work);
        channel.Attach(lease.RequestId, OnMessageAsync, StreamLost);
    }

    /// <summary>A lease's events: its messages, timers, start and cancel (more waiting than this is a flood: refused).</summary>
    private static readonly CoreShellOptions Shell = new() { Name = "requester lease", Capacity = 256 };

    public RequesterLease Lease => _lease;

    /// <summary>Called with each debit note, in order, before the lease sees it (as a sign of life); null ignores them.</summary>
    public Action<LeaseDebitNote>? OnDebitNote { get; init; }

    /// <summary>Runs the lease to its end; cancelling sends a cancel to the provider and ends it.</summary>
    public async Task<LeaseOutcome> RunAsync(CancellationToken ct)
    {
        await using var registration = ct.Register(() => _work.Run("lease cancel", () => Offer(now => _lease.Cancel("requester gave up", now))));
        _ = _shell.Completion.ContinueWith(static (t, state) =>
        {
            // The shell stopped on an error of its own (a step that could not be carried out twice): the lease ends with it.
            if (t.Exception is { } error)
            {
                ((TaskCompletionSource<LeaseOutcome>)state!).TrySetException(error.InnerExceptions);
            }
        }, _done, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        await Offer(now => _lease.Start(now));
        return await _done.Task;
    }

    private Task OnMessageAsync(LeaseMessage message)
    {
        if (message is LeaseDebitNote note && !_done.Task.IsCompleted)
        {
            OnDebitNote?.Invoke(note);
        }
        return Offer(now => _lease.Handle(message, now));
    }

    /// <summary>Queues an event and runs it; an event the shell refuses (ended, or a flood) is dropped: the lease's timers decide.</summary>
    private Task Offer(Func<DateTimeOffset, LeaseStep> transition) =>
        _shell.TryEnqueue(transition) == CorePost.Accepted ? _shell.Pump() : Task.CompletedTask;

    CoreWake ICoreEffects<LeaseStep>.WakeOf(LeaseStep step) =>
        step.Outcome is not null ? CoreWake.Ended
        : step.NextTimer is { } due ? CoreWake.WakeAt(due)
        : CoreWake.Keep;

    ValueTask ICoreEffects<LeaseStep>.PerformAsync(LeaseStep step, CancellationToken ct)
    {
        if (step.Send.Count == 0)
        {
            End(step);
            return ValueTask.CompletedTask;
        }
        var sent = _channel.SendAsync(step.Send);
        if (sent.IsCompletedSuccessfully)
        {
            AfterSend(sent.Result, step);
            return ValueTask.CompletedTask;
        }
        return SendThenEndAsync(sent, step);
    }

    private async ValueTask SendThenEndAsync(Task<LeaseSend> sent, LeaseStep step) => AfterSend(await sent, step);

    private void AfterSend(LeaseSend sent, LeaseStep step)
    {
        End(step);
        if (sent == LeaseSend.Lost)
        {
            StreamLost();
        }
        else if (sent == LeaseSend.Unreachable && step.Outcome is null)
        {
            // The dial failed: a request still waiting for its offer ends as unreachable (the job moves on at once).
            _work.Run("lease unreachable", () => Offer(now => _lease.OnUnreachable(now)));
        }
    }

    /// <summary>The channel lost the stream (or could not open one on a connection): the lease hears of it as its own event, after this step.</summary>
    private void StreamLost() => _work.Run("lease stream lost", () => Offer(now => _lease.OnStreamLost(now)));

    private void End(LeaseStep step)
    {
        if (step.Outcome is { } outcome)
        {
            _done.TrySetResult(outcome);
        }
    }

    LeaseStep ICoreEffects<LeaseStep>.OnTimer(DateTimeOffset now) => _lease.OnTimer(now);

    /// <summary>A step that could not be carried out (a bug here, not the network: the channel reports a broken stream as unsent) cancels the lease.</summary>
    LeaseStep ICoreEffects<LeaseStep>.OnEffectFailed(LeaseStep step, Exception error, DateTimeOffset now) =>
        _lease.Cancel($"requester error: {error.Message}", now);

    public ValueTask DisposeAsync()
    {
        _channel.Detach(_lease.RequestId);
        _shell.Stop();
        return ValueTask.CompletedTask;
    }
}
