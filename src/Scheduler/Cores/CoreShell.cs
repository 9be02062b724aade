using Potluck.Protocol.Runtime;

namespace Potluck.Scheduler.Cores;

/// <summary>What a step asks of the clock: keep the timer as it is, wake the core at a time, disarm, or the core has ended.</summary>
public enum CoreWakeKind
{
    /// <summary>Leave the timer as it is.</summary>
    Keep,
    /// <summary>Call the core's timer transition at <see cref="CoreWake.At"/> (replacing any earlier time).</summary>
    At,
    /// <summary>No timer until a later step asks for one.</summary>
    Disarm,
    /// <summary>The core has ended: no timer, and the shell takes no more events.</summary>
    Ended,
}

/// <summary>The clock part of a step (see <see cref="CoreWakeKind"/>).</summary>
public readonly record struct CoreWake(CoreWakeKind Kind, DateTimeOffset At)
{
    public static CoreWake Keep => default;

    public static CoreWake Disarm => new(CoreWakeKind.Disarm, default);

    public static CoreWake Ended => new(CoreWakeKind.Ended, default);

    public static CoreWake WakeAt(DateTimeOffset at) => new(CoreWakeKind.At, at);
}

/// <summary>
/// What one side supplies to a <see cref="CoreShell{TStep}"/> for one core instance: how to read a step's clock request, how
/// to carry out its effects (send, run, pay, publish; accept, run, note, settle), and the core's transitions for the two
/// events the shell itself raises (a timer came due, an effect threw).
/// </summary>
public interface ICoreEffects<TStep>
{
    /// <summary>The step's clock request.</summary>
    CoreWake WakeOf(TStep step);

    /// <summary>
    /// Carries out the step's effects; the next event is not taken before this completes. An exception (other than a
    /// cancellation of <paramref name="ct"/>) becomes an event: <see cref="OnEffectFailed"/>.
    /// </summary>
    /// <param name="ct">Cancelled when the shell is stopped.</param>
    ValueTask PerformAsync(TStep step, CancellationToken ct);

    /// <summary>The core's transition when the time it asked to be woken at has come.</summary>
    TStep OnTimer(DateTimeOffset now);

    /// <summary>The core's transition when carrying out <paramref name="step"/> threw <paramref name="error"/>.</summary>
    TStep OnEffectFailed(TStep step, Exception error, DateTimeOffset now);
}

/// <summary>How an event offered to a <see cref="CoreShell{TStep}"/> was taken.</summary>
public enum CorePost
{
    /// <summary>Queued; it is handled after every event queued before it.</summary>
    Accepted,
    /// <summary>Refused: <see cref="CoreShellOptions.Capacity"/> events are waiting already.</summary>
    QueueFull,
    /// <summary>Refused: the core has ended, the shell was stopped, or it faulted.</summary>
    Stopped,
}

/// <summary>An event refused because the shell's queue is full (<see cref="CoreShellOptions.Capacity"/>).</summary>
public sealed class CoreQueueFullException(string shell, int capacity)
    : InvalidOperationException($"{shell}: {capacity} events are waiting already; this one is refused")
{
    public int Capacity { get; } = capacity;
}

/// <summary>A shell's limits.</summary>
public sealed record CoreShellOptions
{
    /// <summary>Events that may wait at once (default 64); past it an event is refused (<see cref="CorePost.QueueFull"/>).</summary>
    public int Capacity { get; init; } = 64;

    private readonly string _name = "core";

    /// <summary>Names the shell in errors and in the background work it runs.</summary>
    public string Name
    {
        get => _name;
        init
        {
            _name = value;
            LoopName = value + " loop";
            TimerName = value + " timer";
        }
    }

    /// <summary>The background work of a shell's loop: named once per options, not once per shell.</summary>
    internal string LoopName { get; private init; } = "core loop";

    /// <summary>The background work of a shell's timer events.</summary>
    internal string TimerName { get; private init; } = "core timer";
}

/// <summary>
/// The one shell both sides run their pure cores in (the requester's <c>RequesterLease</c> through <c>LeaseRunner</c>, the
/// provider's <c>ProviderLease</c> through <c>ProviderService</c>): an event loop per core instance. Events (a transition
/// that takes <c>now</c> from the injected <see cref="TimeProvider"/>, or a step the caller's core already decided under its
/// own lock) are taken one at a time, in the order they were queued; each step's effects complete before the next event is
/// taken; the timer is armed on the same clock from each step's <see cref="CoreWake"/> and raises the core's timer
/// transition; an effect that throws becomes the core's <see cref="ICoreEffects{TStep}.OnEffectFailed"/> event (if that
/// step's effects throw too, the shell stops and <see cref="Completion"/> carries the error: never a loop of failures, never
/// an unobserved crash). The queue is bounded; <see cref="Stop"/> cancels effects in flight and refuses further events.
/// <para>
/// Whoever queues an event while no event is being handled runs the loop on its own thread (<see cref="Pump"/>) until the
/// queue is empty or an effect awaits; synchronous effects cost no thread switch and no allocation beyond the queue slot.
/// Callers that decide under a lock queue there (<see cref="TryEnqueue(TStep)"/>, keeping the core's order) and pump after
/// releasing it, so effects never run under the caller's lock.
/// </para>
/// </summary>
public sealed class CoreShell<TStep> : IAsyncDisposable
{
    private readonly ICoreEffects<TStep> _effects;
    private readonly TimeProvider _time;
    private readonly CoreShellOptions _options;
    private readonly BackgroundWork? _work;
    private readonly Queue<Item> _queue = new();
    private readonly Lock _sync = new();
    private readonly CancellationTokenSource _stop = new();
    // Continuations run where the core ends (no thread-pool item per core instance): keep them short.
    private readonly TaskCompletionSource _completion = new();
    private ITimer? _timer;
    private bool _draining;
    private bool _ended;
    private Task _drain = Task.CompletedTask;
    private long _effectFailures;

    /// <param name="work">Where timer events and effects that await run, so their owner's shutdown waits for them; null runs timer events on the timer's thread.</param>
    public CoreShell(ICoreEffects<TStep> effects, TimeProvider time, CoreShellOptions? options = null, BackgroundWork? work = null)
    {
        ArgumentNullException.ThrowIfNull(effects);
        ArgumentNullException.ThrowIfNull(time);
        _effects = effects;
        _time = time;
        _options = options ?? new CoreShellOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.Capacity, 1);
        _work = work;
    }

    /// <summary>
    /// Completes when the core has ended or the shell was stopped; faulted when a transition threw or a failure's own effects
    /// threw. Its continuations run synchronously where the shell ends.
    /// </summary>
    public Task Completion => _completion.Task;

    /// <summary>The core has ended, or the shell was stopped or faulted: no more events are taken.</summary>
    public bool IsEnded
    {
        get
        {
            lock (_sync)
            {
                return _ended;
            }
        }
    }

    /// <summary>Effects that threw so far (each became an event).</summary>
    public long EffectFailures => Interlocked.Read(ref _effectFailures);

    /// <summary>Events waiting now.</summary>
    public int Pending
    {
        get
        {
            lock (_sync)
            {
                return _queue.Count;
            }
        }
    }

    /// <summary>Queues an event whose transition runs on the loop with <c>now</c>; run it with <see cref="Pump"/>.</summary>
    public CorePost TryEnqueue(Func<DateTimeOffset, TStep> transition)
    {
        ArgumentNullException.ThrowIfNull(transition);
        return Enqueue(new Item(transition, default!, ItemKind.Transition));
    }

    /// <summary>Queues a step the core already decided (under the caller's lock, so in the core's order); run it with <see cref="Pump"/>.</summary>
    public CorePost TryEnqueue(TStep decided) => Enqueue(new Item(null, decided, ItemKind.Decided));

    /// <summary>Queues an event and runs the loop; throws <see cref="CoreQueueFullException"/> when the queue is full.</summary>
    /// <returns>The loop's run: complete when every event queued so far has been handled (on this thread, if it was idle); false when the shell has ended.</returns>
    public Task Post(Func<DateTimeOffset, TStep> transition, out bool accepted)
    {
        var post = TryEnqueue(transition);
        if (post == CorePost.QueueFull)
        {
            throw new CoreQueueFullException(_options.Name, _options.Capacity);
        }
        accepted = post == CorePost.Accepted;
        return accepted ? Pump() : Task.CompletedTask;
    }

    /// <summary>As <see cref="Post(Func{DateTimeOffset, TStep}, out bool)"/>.</summary>
    public Task Post(Func<DateTimeOffset, TStep> transition) => Post(transition, out _);

    /// <summary>
    /// Runs the loop on this thread if no event is being handled: until the queue is empty or an effect awaits (then the loop
    /// goes on where that effect completes). Returns the loop's run; awaiting it waits for every event queued so far.
    /// </summary>
    public Task Pump()
    {
        lock (_sync)
        {
            if (_draining)
            {
                return _drain;
            }
            if (_ended || _queue.Count == 0)
            {
                return Task.CompletedTask;
            }
            _draining = true;
        }
        var run = DrainAsync();
        if (!run.IsCompleted)
        {
            lock (_sync)
            {
                if (_draining)
                {
                    _drain = run;
                }
            }
            _work?.Track(_options.LoopName, run);
        }
        return run;
    }

    /// <summary>Ends the shell now: the timer is disarmed, effects in flight are cancelled, waiting and later events are refused.</summary>
    public void Stop()
    {
        lock (_sync)
        {
            if (_ended)
            {
                return;
            }
            EndLocked();
        }
        _stop.Cancel();
        _completion.TrySetResult();
    }

    public ValueTask DisposeAsync()
    {
        Stop();
        return ValueTask.CompletedTask;
    }

    private CorePost Enqueue(Item item)
    {
        lock (_sync)
        {
            if (_ended)
            {
                return CorePost.Stopped;
            }
            if (_queue.Count >= _options.Capacity)
            {
                return CorePost.QueueFull;
            }
            _queue.Enqueue(item);
            return CorePost.Accepted;
        }
    }

    private async Task DrainAsync()
    {
        while (true)
        {
            Item item;
            lock (_sync)
            {
                if (_ended || !_queue.TryDequeue(out item))
                {
                    _draining = false;
                    _drain = Task.CompletedTask;
                    return;
                }
            }
            TStep step;
            try
            {
                step = item.Kind switch
                {
                    ItemKind.Decided => item.Decided,
                    ItemKind.Timer => _effects.OnTimer(_time.GetUtcNow()),
                    _ => item.Transition!(_time.GetUtcNow()),
                };
            }
            catch (Exception e)
            {
                Fault(e);
                return;
            }
            // Carries out the step, turning a failed effect into the core's failure event once; then arms or ends.
            var failedOnce = false;
            while (true)
            {
                try
                {
                    var effects = _effects.PerformAsync(step, _stop.Token);
                    if (!effects.IsCompletedSuccessfully)
                    {
                        await effects;
                    }
                }
                catch (OperationCanceledException) when (_stop.IsCancellationRequested)
                {
                    break; // stopped: the loop ends at the top
                }
                catch (Exception e)
                {
                    Interlocked.Increment(ref _effectFailures);
                    if (failedOnce)
                    {
                        Fault(e); // the failure's own step failed: stop rather than loop
                        return;
                    }
                    failedOnce = true;
                    try
                    {
                        step = _effects.OnEffectFailed(step, e, _time.GetUtcNow());
                    }
                    catch (Exception inner)
                    {
                        Fault(inner);
                        return;
                    }
                    continue;
                }
                Arm(_effects.WakeOf(step));
                break;
            }
        }
    }

    private void Arm(CoreWake wake)
    {
        switch (wake.Kind)
        {
            case CoreWakeKind.Keep:
                return;
            case CoreWakeKind.Ended:
                lock (_sync)
                {
                    if (_ended)
                    {
                        return;
                    }
                    EndLocked();
                }
                _completion.TrySetResult();
                return;
            case CoreWakeKind.Disarm:
                lock (_sync)
                {
                    _timer?.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                }
                return;
            default:
                lock (_sync)
                {
                    if (_ended)
                    {
                        return;
                    }
                    var delay = wake.At - _time.GetUtcNow();
                    _timer ??= _time.CreateTimer(static state => ((CoreShell<TStep>)state!).OnTimerDue(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                    _timer.Change(delay < TimeSpan.Zero ? TimeSpan.Zero : delay, Timeout.InfiniteTimeSpan);
                }
                return;
        }
    }

    private void OnTimerDue()
    {
        if (_work is { } work)
        {
            work.Run(_options.TimerName, QueueTimer);
        }
        else
        {
            _ = QueueTimer();
        }
    }

    private Task QueueTimer()
    {
        // A timer event is never refused for a full queue: it is the core's own request (a later step re-arms it anyway).
        lock (_sync)
        {
            if (_ended)
            {
                return Task.CompletedTask;
            }
            _queue.Enqueue(new Item(null, default!, ItemKind.Timer));
        }
        return Pump();
    }

    private void Fault(Exception error)
    {
        lock (_sync)
        {
            if (!_ended)
            {
                EndLocked();
            }
            _draining = false;
            _drain = Task.CompletedTask;
        }
        _stop.Cancel();
        _completion.TrySetException(error);
    }

    /// <summary>Under <see cref="_sync"/>: no more events, no timer.</summary>
    private void EndLocked()
    {
        _ended = true;
        _queue.Clear();
        _timer?.Dispose();
        _timer = null;
    }

    private enum ItemKind : byte
    {
        Transition,
        Decided,
        Timer,
    }

    private readonly record struct Item(Func<DateTimeOffset, TStep>? Transition, TStep Decided, ItemKind Kind);
}
