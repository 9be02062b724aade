using Potluck.Scheduler.Cores;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Metrics;

namespace Potluck.Scheduler.Providing;

/// <summary>
/// Each lease runs in the shell both sides share (<see cref="CoreShell{TStep}"/>): the registry and the lease decide under
/// the service's lock (capacity and the lease index are shared by all leases), the step is queued there in that order, and
/// the lease's shell carries it out after the lock is released (messages onto the stream, the run's start reported, the end
/// reported and advertised) and arms the lease's timer on the injected clock; a timer that comes due is the lease's next event.
/// </summary>
public sealed partial class ProviderService
{
    /// <summary>Events a lease's shell holds at once; past it the lease is cancelled (a flood, never an unbounded queue).</summary>
    private static readonly CoreShellOptions LeaseShell = new() { Name = "provider lease", Capacity = 256 };

    /// <summary>Queues <paramref name="step"/> (already booked under the lock) in the lease's shell; returns the pump to run after the lock.</summary>
    private Action? Queue(ProviderLease lease, Slot slot, LeaseStep step, DateTimeOffset now)
    {
        switch (slot.Shell.TryEnqueue(step))
        {
            case CorePost.Accepted:
                return slot.PumpAction;
            case CorePost.Stopped:
                // The lease's shell has ended (a late answer for a lease already over): the messages go out as they are.
                slot.Session?.Enqueue(step.Send);
                return null;
            default:
                // A lease flooded with events: it ends here, and its end is carried out without the shell.
                _instruments.LeaseRefused("flooded");
                var cancel = lease.Cancel($"more than {LeaseShell.Capacity} events waiting", now);
                Bookkeep(lease, slot, cancel);
                slot.Shell.Stop();
                slot.Session?.Enqueue(step.Send);
                slot.Session?.Enqueue(cancel.Send);
                return cancel.Outcome is { } outcome ? () => slot.Ended(outcome) : null;
        }
    }

    /// <summary>One lease's place here: its stream, its run, and its shell, whose effects it carries out.</summary>
    private sealed class Slot : ICoreEffects<LeaseStep>
    {
        private readonly ProviderService _service;
        private readonly ProviderLease _lease;
        private int _ended;

        public Slot(ProviderService service, ProviderLease lease)
        {
            _service = service;
            _lease = lease;
            Shell = new CoreShell<LeaseStep>(this, service._time, LeaseShell, service._work);
            PumpAction = () => Shell.Pump();
        }

        public LeaseSession? Session { get; set; }

        public CancellationTokenSource? Run { get; set; }

        public CoreShell<LeaseStep> Shell { get; }

        /// <summary>Runs the shell's loop (one delegate per lease, not one per step).</summary>
        public Action PumpAction { get; }

        public CoreWake WakeOf(LeaseStep step) =>
            step.Outcome is not null ? CoreWake.Ended
            : step.NextTimer is { } due ? CoreWake.WakeAt(due)
            : CoreWake.Keep;

        public ValueTask PerformAsync(LeaseStep step, CancellationToken ct)
        {
            Session?.Enqueue(step.Send);
            if (step.Execute is not null)
            {
                _service.ExecutionStarted?.Invoke(_lease.Requester, _lease.RequestId);
            }
            if (step.Outcome is { } outcome)
            {
                Ended(outcome);
            }
            return ValueTask.CompletedTask;
        }

        /// <summary>The lease's timer: the lease decides under the service's lock, unless it has left already.</summary>
        public LeaseStep OnTimer(DateTimeOffset now)
        {
            lock (_service._gate)
            {
                if (!_service._slots.TryGetValue(_lease, out var slot) || slot != this)
                {
                    return LeaseStep.Nothing;
                }
                var step = _lease.OnTimer(now);
                _service.Bookkeep(_lease, this, step);
                return step;
            }
        }

        /// <summary>
        /// An effect threw (a handler of <see cref="LeaseEnded"/> or <see cref="ExecutionStarted"/>: a bug here, logged): the
        /// lease is cancelled, or, when it has ended already, the shell ends with it.
        /// </summary>
        public LeaseStep OnEffectFailed(LeaseStep step, Exception error, DateTimeOffset now)
        {
            LogEffectFailed(_service._log, _lease.RequestId, error);
            lock (_service._gate)
            {
                var cancel = _lease.Cancel("provider error", now);
                _service.Bookkeep(_lease, this, cancel);
                return cancel.Outcome is not null ? cancel : new LeaseStep { Outcome = _lease.Outcome ?? step.Outcome };
            }
        }

        /// <summary>Reports the end once: metrics, log, <see cref="LeaseEnded"/>, and a new advertisement (a core is free).</summary>
        public void Ended(LeaseOutcome outcome)
        {
            if (Interlocked.Exchange(ref _ended, 1) != 0)
            {
                return;
            }
            _service._instruments.LeaseEnded(LeaseRole.Provider, outcome.Kind);
            LogLeaseEnded(_service._log, _lease.RequestId, _lease.Requester, outcome.Kind, outcome.Detail);
            _service.LeaseEnded?.Invoke(_lease.Requester, _lease.RequestId, outcome);
            _service.PublishSoonAfterLease();
        }
    }

    [Microsoft.Extensions.Logging.LoggerMessage(Level = Microsoft.Extensions.Logging.LogLevel.Error, Message = "A step of lease {RequestId} could not be carried out")]
    private static partial void LogEffectFailed(Microsoft.Extensions.Logging.ILogger logger, ulong requestId, Exception error);
}
