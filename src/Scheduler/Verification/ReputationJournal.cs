using Microsoft.Extensions.Logging;
using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Verification;

/// <summary>
/// Keeps a <see cref="ReputationStore"/> in a <see cref="ReputationDatabase"/>: loads it on start, saves a refusal at
/// once (a restarted node must never trust a caught cheater again), and saves streak and failure counts every
/// <see cref="FlushInterval"/> and on dispose. A crash loses at most the counts of the last interval, which only makes
/// the requester verify a little more than it had to.
/// </summary>
public sealed partial class ReputationJournal : IAsyncDisposable
{
    private readonly ReputationStore _store;
    private readonly ReputationDatabase _database;
    private readonly TimeProvider _time;
    private readonly ILogger<ReputationJournal> _log;
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _saving = new();
    private Task _flusher = Task.CompletedTask;

    public ReputationJournal(ReputationStore store, ReputationDatabase database, TimeProvider time, ILogger<ReputationJournal> log,
        TimeSpan? flushInterval = null)
    {
        _store = store;
        _database = database;
        _time = time;
        _log = log;
        FlushInterval = flushInterval ?? TimeSpan.FromSeconds(30);
    }

    /// <summary>How often changed counts are written. Default 30 s.</summary>
    public TimeSpan FlushInterval { get; }

    /// <summary>Raised after each save by the interval timer (for tests and metrics).</summary>
    public event Action? Flushed;

    /// <summary>Loads what was saved into the store, then starts saving changes.</summary>
    public void Start()
    {
        _store.Restore(_database.Load(_store.MaxProviders));
        _store.Refused += OnRefused;
        _flusher = FlushLoopAsync(_stop.Token);
    }

    /// <summary>Writes every change not yet written.</summary>
    public void Flush()
    {
        lock (_saving)
        {
            _database.Save(_store.TakeChanges());
        }
    }

    private void OnRefused(PeerId provider, string reason)
    {
        try
        {
            Flush();
        }
        catch (Exception e)
        {
            LogSaveFailed(e);
        }
    }

    private async Task FlushLoopAsync(CancellationToken ct)
    {
        using var timer = new PeriodicTimer(FlushInterval, _time);
        try
        {
            while (await timer.WaitForNextTickAsync(ct))
            {
                try
                {
                    Flush();
                }
                catch (Exception e)
                {
                    LogSaveFailed(e);
                }
                Flushed?.Invoke();
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        _store.Refused -= OnRefused;
        _stop.Cancel();
        await _flusher;
        try
        {
            Flush();
        }
        catch (Exception e)
        {
            LogSaveFailed(e);
        }
        _stop.Dispose();
        _database.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Could not save provider reputation")]
    private partial void LogSaveFailed(Exception e);

    /// <summary>The database it keeps the store in.</summary>
    internal ReputationDatabase Database => _database;
}
