using Potluck.Protocol.Runtime;

namespace Potluck.Scheduler.Execution;

/// <summary>
/// Where a sandboxed run waits for a debit note to be paid (<see cref="Leasing.LeaseExecution.DebitNoteDue"/>), on the run's
/// own thread. It holds the run's external-work mark (<see cref="NodeRuntime.BeginExternalWork"/>) and lets it go while the
/// run waits, taking it again on the thread that completes the payment, before anything else runs there: under virtual
/// time the clock moves while a run waits for a payment, and never while it computes.
/// </summary>
internal sealed class DebitNoteGate : IDisposable
{
    private readonly NodeRuntime _runtime;
    private readonly Func<int, Task<bool>> _due;
    private readonly Lock _lock = new();
    private IDisposable? _held;
    private bool _disposed;

    public DebitNoteGate(NodeRuntime runtime, Func<int, Task<bool>> due)
    {
        _runtime = runtime;
        _due = due;
        _held = runtime.BeginExternalWork();
    }

    /// <summary>Asks for slice <paramref name="index"/> to be paid and waits: true to run on, false to stop.</summary>
    public bool Pass(int index, CancellationToken ct)
    {
        Task<bool> due;
        try
        {
            due = _due(index);
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
        {
            return false;
        }
        if (!due.IsCompleted)
        {
            var resumed = due.ContinueWith(static (_, s) => ((DebitNoteGate)s!).Hold(), this, CancellationToken.None,
                TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            Release();
            try
            {
                resumed.Wait(ct);
            }
            catch (OperationCanceledException)
            {
                Hold();
                return false;
            }
        }
        return due.IsCompletedSuccessfully && due.Result;
    }

    private void Hold()
    {
        lock (_lock)
        {
            if (!_disposed && _held is null)
            {
                _held = _runtime.BeginExternalWork();
            }
        }
    }

    private void Release()
    {
        IDisposable? held;
        lock (_lock)
        {
            held = _held;
            _held = null;
        }
        held?.Dispose();
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
        }
        Release();
    }
}
